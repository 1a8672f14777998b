//! `causeway group list|describe|delete|reset-offsets`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use bytes::{Buf, Bytes};
use clap::Subcommand;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;
use serde_json::{json, Value};

use super::admin::AdminConnection;
use super::http_json::HttpClient;
use super::table::url_segment;
use super::topic::{latest_offsets, offsets, partition_indexes, text, EARLIEST};

/// OffsetFetch version asked for: the last one with the single-group layout.
const OFFSET_FETCH_SINGLE_GROUP_MAX: i16 = 7;

/// Consumer group administration.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups with their state.
    List {
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show a group's members, assignments, committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
        /// Print one JSON document instead of the tables.
        #[arg(long)]
        json: bool,
        /// The broker's HTTP listener: also show, for a region with peers, the latest commit
        /// any region made (region, offset there, frontier) and where the group resumes here.
        #[arg(long, value_name = "HOST:PORT")]
        http: Option<String>,
    },
    /// Delete groups and their committed offsets (only groups without active members).
    Delete {
        /// Group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets of one topic, as `kafka-consumer-groups
    /// --reset-offsets` does: only while the group has no active members. Prints the plan;
    /// commits it with `--execute`.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Partitions to move, comma-separated [default: every partition of the topic].
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<i32>,
        /// Where to move them.
        #[command(flatten)]
        to: ResetTarget,
        /// Commit the new offsets; without it the plan is only printed.
        #[arg(long)]
        execute: bool,
        /// Print the plan as one JSON document (with `"executed"`) instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Where `reset-offsets` moves a group's positions: exactly one of these.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// To each partition's log start.
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's log end.
    #[arg(long)]
    to_latest: bool,
    /// To this offset, held within each partition's log start and end (as Kafka does).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To each partition's first record at or after this time (milliseconds since the Unix
    /// epoch), or its log end if there is none.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
}

/// Runs one group command against the broker `target` names.
pub fn run(
    target: &super::Target,
    http_access: &super::HttpAccess,
    command: GroupCommand,
) -> anyhow::Result<()> {
    let mut broker = AdminConnection::connect(target)?;
    match command {
        GroupCommand::List { json } => {
            let groups = list(&mut broker)?;
            match json {
                true => println!("{}", list_json(&groups)),
                false => print!("{}", list_table(&groups)),
            }
            Ok(())
        }
        GroupCommand::Describe { group, json, http } => {
            let description = describe(&mut broker, &group)?;
            let positions = http
                .map(|http| {
                    let path = format!("/v1/groups/{}/positions", url_segment(&group));
                    HttpClient::new(http_access)?.get_json(&http, &path)
                })
                .transpose()?;
            match json {
                true => {
                    let mut out = describe_json(&description);
                    if let Some(positions) = positions {
                        out["positions"] = positions["partitions"].clone();
                    }
                    println!("{out}");
                }
                false => {
                    print!("{}", describe_table(&description));
                    if let Some(positions) = positions {
                        print!("{}", positions_table(&positions));
                    }
                }
            }
            Ok(())
        }
        GroupCommand::Delete { groups } => delete(&mut broker, &groups),
        GroupCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to,
            execute,
            json,
        } => {
            let plan = reset_plan(&mut broker, &group, &topic, partitions, to)?;
            if json {
                if execute {
                    commit_plan(&mut broker, &plan)?;
                }
                println!("{}", plan_json(&plan, execute));
                return Ok(());
            }
            print!("{}", plan_table(&plan));
            if !execute {
                println!("dry run: nothing committed (add --execute to commit these offsets)");
                return Ok(());
            }
            commit_plan(&mut broker, &plan)?;
            println!("committed {} offsets of group {group}", plan.moves.len());
            Ok(())
        }
    }
}

fn check(code: i16, what: &str) -> anyhow::Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => bail!("{what}: {error:?}"),
    }
}

fn delete(broker: &mut AdminConnection, groups: &[String]) -> anyhow::Result<()> {
    let response = broker.send(
        &DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(text(g))).collect()),
    )?;
    let mut failed = Vec::new();
    for result in &response.results {
        let group = result.group_id.as_str();
        match check(result.error_code, &format!("deleting {group}")) {
            Ok(()) => println!("deleted group {group}"),
            Err(error) => failed.push(format!("{error:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// DescribeGroups of one group, its error code checked.
fn describe_group(broker: &mut AdminConnection, group: &str) -> anyhow::Result<DescribedGroup> {
    let described =
        broker.send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]))?;
    let info = described
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no description of {group}"))?;
    check(info.error_code, group)?;
    Ok(info)
}

/// States in which a group's offsets may be moved from outside: no member owns a position.
const RESETTABLE_STATES: [&str; 2] = ["Empty", "Dead"];

/// What `reset-offsets` would do: per partition of `topic`, the group's committed offset (-1
/// for none) and the new one.
#[derive(Debug, Clone, PartialEq)]
struct ResetPlan {
    group: String,
    topic: String,
    /// (partition, current, new).
    moves: Vec<(i32, i64, i64)>,
}

fn reset_plan(
    broker: &mut AdminConnection,
    group: &str,
    topic: &str,
    partitions: Vec<i32>,
    to: ResetTarget,
) -> anyhow::Result<ResetPlan> {
    let info = describe_group(broker, group)?;
    let state = info.group_state.as_str();
    if !RESETTABLE_STATES.contains(&state) {
        bail!(
            "group {group} is {state} with {} members: stop its consumers first (an active group's members own its positions)",
            info.members.len()
        );
    }
    let partitions = if partitions.is_empty() {
        partition_indexes(broker, topic)?.1
    } else {
        partitions
    };
    let committed = committed_offsets(broker, group)?;
    let earliest = offsets(broker, topic, &partitions, EARLIEST)?;
    let latest = latest_offsets(broker, topic, &partitions)?;
    let at_time = match to.to_timestamp {
        Some(ms) => offsets(broker, topic, &partitions, ms)?,
        None => BTreeMap::new(),
    };
    let mut plan = Vec::new();
    for partition in partitions {
        let (start, end) = match (earliest.get(&partition), latest.get(&partition)) {
            (Some(&start), Some(&end)) if start >= 0 && end >= start => (start, end),
            _ => bail!("{topic} has no partition {partition}"),
        };
        let new = if to.to_earliest {
            start
        } else if to.to_latest {
            end
        } else if let Some(offset) = to.to_offset {
            offset.clamp(start, end)
        } else {
            at_time
                .get(&partition)
                .copied()
                .filter(|&offset| offset >= 0)
                .unwrap_or(end)
        };
        let current = committed
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(-1);
        plan.push((partition, current, new));
    }
    Ok(ResetPlan {
        group: group.to_string(),
        topic: topic.to_string(),
        moves: plan,
    })
}

fn plan_table(plan: &ResetPlan) -> String {
    let mut out = format!(
        "{:<40} {:>9} {:>14} {:>14}\n",
        "TOPIC", "PARTITION", "CURRENT", "NEW"
    );
    for (partition, current, new) in &plan.moves {
        out.push_str(&format!(
            "{:<40} {partition:>9} {current:>14} {new:>14}\n",
            plan.topic
        ));
    }
    out
}

/// The plan as one JSON document; a partition without a committed offset has `current: null`.
fn plan_json(plan: &ResetPlan, executed: bool) -> Value {
    json!({
        "group": plan.group,
        "topic": plan.topic,
        "executed": executed,
        "partitions": plan
            .moves
            .iter()
            .map(|&(partition, current, new)| {
                json!({
                    "partition": partition,
                    "current_offset": (current >= 0).then_some(current),
                    "new_offset": new,
                })
            })
            .collect::<Vec<_>>(),
    })
}

/// Commits the plan's new offsets for its group (no generation: the group has no members).
fn commit_plan(broker: &mut AdminConnection, plan: &ResetPlan) -> anyhow::Result<()> {
    let (group, topic) = (plan.group.as_str(), plan.topic.as_str());
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(
                plan.moves
                    .iter()
                    .map(|&(partition, _, new)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(new)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(text("")))
                    })
                    .collect(),
            )]);
    let response = broker.send(&request)?;
    for topic in &response.topics {
        for partition in &topic.partitions {
            check(
                partition.error_code,
                &format!(
                    "committing {}-{}",
                    topic.name.as_str(),
                    partition.partition_index
                ),
            )?;
        }
    }
    Ok(())
}

/// A group's committed offsets, by topic and partition.
fn committed_offsets(
    broker: &mut AdminConnection,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let version = broker
        .version_for::<OffsetFetchRequest>()?
        .min(OFFSET_FETCH_SINGLE_GROUP_MAX);
    let offsets = broker.send_at(
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(None),
        version,
    )?;
    check(offsets.error_code, "fetching offsets")?;
    Ok(offsets
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.name.as_str().to_string(), p.partition_index),
                    p.committed_offset,
                )
            })
        })
        .collect())
}

/// Every group's id, state and protocol type, sorted by id.
fn list(broker: &mut AdminConnection) -> anyhow::Result<Vec<(String, String, String)>> {
    let response = broker.send(&ListGroupsRequest::default())?;
    check(response.error_code, "listing groups")?;
    let mut groups: Vec<_> = response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.as_str().to_string(),
                g.group_state.as_str().to_string(),
                g.protocol_type.as_str().to_string(),
            )
        })
        .collect();
    groups.sort();
    Ok(groups)
}

fn list_table(groups: &[(String, String, String)]) -> String {
    let mut out = format!("{:<40} STATE\n", "GROUP");
    for (group, state, _) in groups {
        out.push_str(&format!("{group:<40} {state}\n"));
    }
    out
}

/// `{"groups": [{"group": ..., "state": ..., "protocol_type": ...}, ...]}`.
fn list_json(groups: &[(String, String, String)]) -> Value {
    json!({
        "groups": groups
            .iter()
            .map(|(group, state, protocol_type)| {
                json!({"group": group, "state": state, "protocol_type": protocol_type})
            })
            .collect::<Vec<_>>(),
    })
}

/// What `group describe` shows.
#[derive(Debug, Clone, PartialEq)]
struct GroupDescription {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
    /// Per committed partition in (topic, partition) order: (topic, partition, committed offset,
    /// log end); -1 where unknown.
    offsets: Vec<(String, i32, i64, i64)>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    /// The decoded consumer-protocol assignment, or its length in bytes if it is not one.
    assignment: Result<Vec<(String, Vec<i32>)>, usize>,
}

fn describe(broker: &mut AdminConnection, group: &str) -> anyhow::Result<GroupDescription> {
    let info = describe_group(broker, group)?;
    let positions = committed_offsets(broker, group)?;
    if info.group_state.as_str() == "Dead" && positions.is_empty() {
        // What Kafka answers for a group it does not know; a group with no members here may
        // still have positions committed here or in another region.
        bail!("group {group} does not exist");
    }
    let members = info
        .members
        .iter()
        .map(|member| Member {
            member_id: member.member_id.as_str().to_string(),
            group_instance_id: member
                .group_instance_id
                .as_ref()
                .map(|id| id.as_str().to_string()),
            client_id: member.client_id.as_str().to_string(),
            client_host: member.client_host.as_str().to_string(),
            assignment: decode_assignment(&member.member_assignment),
        })
        .collect();
    let mut committed: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for ((topic, partition), offset) in positions {
        committed
            .entry(topic)
            .or_default()
            .push((partition, offset));
    }
    let mut offsets = Vec::new();
    for (topic, partitions) in committed {
        let indexes: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
        let ends = latest_offsets(broker, &topic, &indexes)?;
        for (partition, offset) in partitions {
            let end = ends.get(&partition).copied().unwrap_or(-1);
            offsets.push((topic.clone(), partition, offset, end));
        }
    }
    Ok(GroupDescription {
        group: group.to_string(),
        state: info.group_state.as_str().to_string(),
        protocol_type: info.protocol_type.as_str().to_string(),
        protocol: info.protocol_data.as_str().to_string(),
        members,
        offsets,
    })
}

/// Records between a committed offset and the log end, or `None` when either is unknown.
fn lag(committed: i64, end: i64) -> Option<i64> {
    (committed >= 0 && end >= 0).then_some(end - committed)
}

fn describe_table(group: &GroupDescription) -> String {
    let mut out = String::new();
    out.push_str(&format!("group    {}\n", group.group));
    out.push_str(&format!("state    {}\n", group.state));
    out.push_str(&format!("protocol {}\n\n", group.protocol));
    out.push_str(&format!(
        "{:<50} {:<20} {:<16} ASSIGNMENT\n",
        "MEMBER", "CLIENT-ID", "HOST"
    ));
    for member in &group.members {
        out.push_str(&format!(
            "{:<50} {:<20} {:<16} {}\n",
            member.member_id,
            member.client_id,
            member.client_host,
            assignment_text(&member.assignment)
        ));
    }
    out.push_str(&format!(
        "\n{:<40} {:>9} {:>14} {:>14} {:>10}\n",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    ));
    for (topic, partition, offset, end) in &group.offsets {
        let lag = lag(*offset, *end).unwrap_or(-1);
        out.push_str(&format!(
            "{topic:<40} {partition:>9} {offset:>14} {end:>14} {lag:>10}\n"
        ));
    }
    out
}

/// The positions section of `describe --http`: per partition, the latest commit of any region
/// and what this region answers.
fn positions_table(positions: &Value) -> String {
    let mut out = format!(
        "\npositions across regions (answered by {})\n{:<40} {:>9} {:<12} {:>12} {:<10} {:>12} {:>8} FRONTIER\n",
        positions["region"].as_str().unwrap_or("?"),
        "TOPIC",
        "PARTITION",
        "COMMITTED-IN",
        "OFFSET-THERE",
        "ANSWER",
        "RESUMES-HERE",
        "REPEATS"
    );
    let text = |value: &Value| match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for partition in positions["partitions"].as_array().into_iter().flatten() {
        let (latest, here) = (&partition["latest_commit"], &partition["here"]);
        out.push_str(&format!(
            "{:<40} {:>9} {:<12} {:>12} {:<10} {:>12} {:>8} {}\n",
            text(&partition["topic"]),
            text(&partition["partition"]),
            text(&latest["region"]),
            text(&latest["offset"]),
            text(&here["answer"]),
            text(&here["offset"]),
            text(&here["repeat_records"]),
            text(&latest["frontier"]),
        ));
    }
    out
}

/// The description as one JSON document. A member's `assignment` is a list of
/// `{"topic", "partitions"}`, or `null` with `assignment_bytes` when it is not a consumer-protocol
/// assignment; offsets and lag the broker could not give are `null`.
fn describe_json(group: &GroupDescription) -> Value {
    let known = |offset: i64| (offset >= 0).then_some(offset);
    json!({
        "group": group.group,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "protocol": group.protocol,
        "members": group
            .members
            .iter()
            .map(|member| {
                let (assignment, bytes) = match &member.assignment {
                    Ok(topics) => (
                        Some(
                            topics
                                .iter()
                                .map(|(topic, partitions)| {
                                    json!({"topic": topic, "partitions": partitions})
                                })
                                .collect::<Vec<_>>(),
                        ),
                        None,
                    ),
                    Err(bytes) => (None, Some(*bytes)),
                };
                let mut value = json!({
                    "member_id": member.member_id,
                    "group_instance_id": member.group_instance_id,
                    "client_id": member.client_id,
                    "client_host": member.client_host,
                    "assignment": assignment,
                });
                if let Some(bytes) = bytes {
                    value["assignment_bytes"] = json!(bytes);
                }
                value
            })
            .collect::<Vec<_>>(),
        "offsets": group
            .offsets
            .iter()
            .map(|(topic, partition, offset, end)| {
                json!({
                    "topic": topic,
                    "partition": partition,
                    "committed_offset": known(*offset),
                    "log_end_offset": known(*end),
                    "lag": lag(*offset, *end),
                })
            })
            .collect::<Vec<_>>(),
    })
}

/// A consumer-protocol assignment as (topic, partitions) pairs, or its length in bytes if it is
/// not one. An empty assignment (a member not yet assigned) is an empty list.
fn decode_assignment(bytes: &Bytes) -> Result<Vec<(String, Vec<i32>)>, usize> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Ok(Vec::new());
    }
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => Ok(assignment
            .assigned_partitions
            .iter()
            .map(|t| (t.topic.as_str().to_string(), t.partitions.clone()))
            .collect()),
        Err(_) => Err(bytes.len()),
    }
}

/// `topic:p,p topic:p` from a decoded assignment, or the byte count if it was not one.
fn assignment_text(assignment: &Result<Vec<(String, Vec<i32>)>, usize>) -> String {
    match assignment {
        Ok(topics) => topics
            .iter()
            .map(|(topic, partitions)| {
                let partitions: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
                format!("{topic}:{}", partitions.join(","))
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(bytes) => format!("({bytes} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn assignments_print_as_topic_and_partitions() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut bytes = bytes::BytesMut::new();
        bytes.put_i16(1);
        assignment.encode(&mut bytes, 1).expect("encodes");
        assert_eq!(
            assignment_text(&decode_assignment(&bytes.freeze())),
            "orders:0,2"
        );
    }

    #[test]
    fn garbage_assignments_do_not_fail_the_command() {
        assert_eq!(
            assignment_text(&decode_assignment(&Bytes::from_static(&[0, 1, 9]))),
            "(3 bytes)"
        );
    }

    fn described() -> GroupDescription {
        GroupDescription {
            group: "billing".to_string(),
            state: "Stable".to_string(),
            protocol_type: "consumer".to_string(),
            protocol: "range".to_string(),
            members: vec![
                Member {
                    member_id: "rdkafka-1".to_string(),
                    group_instance_id: None,
                    client_id: "rdkafka".to_string(),
                    client_host: "/127.0.0.1".to_string(),
                    assignment: Ok(vec![("orders".to_string(), vec![0, 2])]),
                },
                Member {
                    member_id: "other-1".to_string(),
                    group_instance_id: Some("static-1".to_string()),
                    client_id: "custom".to_string(),
                    client_host: "/10.0.0.2".to_string(),
                    assignment: Err(3),
                },
            ],
            offsets: vec![
                ("orders".to_string(), 0, 4, 10),
                ("orders".to_string(), 2, -1, 7),
            ],
        }
    }

    #[test]
    fn describe_json_has_members_assignments_offsets_and_lag() {
        let json = describe_json(&described());
        assert_eq!(json["group"], "billing");
        assert_eq!(json["state"], "Stable");
        assert_eq!(json["protocol"], "range");
        assert_eq!(json["protocol_type"], "consumer");
        assert_eq!(
            json["members"][0],
            json!({
                "member_id": "rdkafka-1",
                "group_instance_id": null,
                "client_id": "rdkafka",
                "client_host": "/127.0.0.1",
                "assignment": [{"topic": "orders", "partitions": [0, 2]}],
            })
        );
        assert_eq!(json["members"][1]["group_instance_id"], "static-1");
        assert_eq!(json["members"][1]["assignment"], Value::Null);
        assert_eq!(json["members"][1]["assignment_bytes"], 3);
        assert_eq!(
            json["offsets"],
            json!([
                {"topic": "orders", "partition": 0, "committed_offset": 4, "log_end_offset": 10, "lag": 6},
                {"topic": "orders", "partition": 2, "committed_offset": null, "log_end_offset": 7, "lag": null},
            ])
        );
        let printed = json.to_string();
        assert!(!printed.contains('\n'));
    }

    #[test]
    fn positions_table_shows_where_a_travelled_position_resumes() {
        let positions = json!({
            "group": "billing",
            "region": "us",
            "partitions": [
                {"topic": "orders", "partition": 0,
                 "latest_commit": {"region": "eu", "offset": 48211, "commit_ms": 1,
                                   "frontier": {"ap": 16012, "eu": 16290, "us": 15890},
                                   "inside_batch": null},
                 "here": {"answer": "travelled", "offset": 48177, "repeat_records": 12,
                          "missing_batches": 0, "lag": 3}},
                {"topic": "orders", "partition": 1, "latest_commit": null,
                 "here": {"answer": "deleted"}},
            ],
        });
        let table = positions_table(&positions);
        assert!(table.contains("(answered by us)"), "{table}");
        let rows: Vec<Vec<&str>> = table
            .lines()
            .filter(|l| l.starts_with("orders"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec![
                    "orders",
                    "0",
                    "eu",
                    "48211",
                    "travelled",
                    "48177",
                    "12",
                    r#"{"ap":16012,"eu":16290,"us":15890}"#
                ],
                vec!["orders", "1", "-", "-", "deleted", "-", "-", "-"],
            ]
        );
    }

    #[test]
    fn describe_table_shows_the_same_facts() {
        let table = describe_table(&described());
        assert!(table.contains("state    Stable\n"), "{table}");
        assert!(table.contains("protocol range\n"), "{table}");
        let member: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("rdkafka-1"))
            .expect("member row")
            .split_whitespace()
            .collect();
        assert_eq!(member, ["rdkafka-1", "rdkafka", "/127.0.0.1", "orders:0,2"]);
        assert!(table.contains("(3 bytes)"), "{table}");
        assert!(table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "0", "4", "10", "6"]));
        assert!(table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "2", "-1", "7", "-1"]));
    }

    #[test]
    fn list_and_plan_json() {
        let groups = vec![("a".to_string(), "Empty".to_string(), "consumer".to_string())];
        assert_eq!(
            list_json(&groups),
            json!({"groups": [{"group": "a", "state": "Empty", "protocol_type": "consumer"}]})
        );
        assert_eq!(
            list_table(&groups)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["a", "Empty"])
        );
        let plan = ResetPlan {
            group: "g".to_string(),
            topic: "orders".to_string(),
            moves: vec![(0, 5, 0), (1, -1, 0)],
        };
        assert_eq!(
            plan_json(&plan, false),
            json!({
                "group": "g",
                "topic": "orders",
                "executed": false,
                "partitions": [
                    {"partition": 0, "current_offset": 5, "new_offset": 0},
                    {"partition": 1, "current_offset": null, "new_offset": 0},
                ],
            })
        );
        assert_eq!(plan_json(&plan, true)["executed"], true);
    }
}
