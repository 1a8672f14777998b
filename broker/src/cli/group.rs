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

use super::admin::AdminConnection;
use super::topic::{latest_offsets, offsets, partition_indexes, text, EARLIEST};

/// OffsetFetch version asked for: the last one with the single-group layout.
const OFFSET_FETCH_SINGLE_GROUP_MAX: i16 = 7;

/// Consumer group administration.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups with their state.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
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

/// Runs one group command against the broker at `bootstrap`.
pub fn run(bootstrap: &str, command: GroupCommand) -> anyhow::Result<()> {
    let mut broker = AdminConnection::connect(bootstrap)?;
    match command {
        GroupCommand::List => list(&mut broker),
        GroupCommand::Describe { group } => describe(&mut broker, &group),
        GroupCommand::Delete { groups } => delete(&mut broker, &groups),
        GroupCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to,
            execute,
        } => reset_offsets(&mut broker, &group, &topic, partitions, to, execute),
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

fn reset_offsets(
    broker: &mut AdminConnection,
    group: &str,
    topic: &str,
    partitions: Vec<i32>,
    to: ResetTarget,
    execute: bool,
) -> anyhow::Result<()> {
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
    println!(
        "{:<40} {:>9} {:>14} {:>14}",
        "TOPIC", "PARTITION", "CURRENT", "NEW"
    );
    for (partition, current, new) in &plan {
        println!("{topic:<40} {partition:>9} {current:>14} {new:>14}");
    }
    if !execute {
        println!("dry run: nothing committed (add --execute to commit these offsets)");
        return Ok(());
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(
                plan.iter()
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
    println!("committed {} offsets of group {group}", plan.len());
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

fn list(broker: &mut AdminConnection) -> anyhow::Result<()> {
    let response = broker.send(&ListGroupsRequest::default())?;
    check(response.error_code, "listing groups")?;
    let mut groups: Vec<_> = response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.as_str().to_string(),
                g.group_state.as_str().to_string(),
            )
        })
        .collect();
    groups.sort();
    println!("{:<40} STATE", "GROUP");
    for (group, state) in groups {
        println!("{group:<40} {state}");
    }
    Ok(())
}

fn describe(broker: &mut AdminConnection, group: &str) -> anyhow::Result<()> {
    let info = describe_group(broker, group)?;
    if info.group_state.as_str() == "Dead" {
        // What Kafka answers for a group it does not know.
        bail!("group {group} does not exist");
    }
    println!("group    {group}");
    println!("state    {}", info.group_state.as_str());
    println!("protocol {}", info.protocol_data.as_str());
    println!();
    println!(
        "{:<50} {:<20} {:<16} ASSIGNMENT",
        "MEMBER", "CLIENT-ID", "HOST"
    );
    for member in &info.members {
        println!(
            "{:<50} {:<20} {:<16} {}",
            member.member_id.as_str(),
            member.client_id.as_str(),
            member.client_host.as_str(),
            assignment_text(&member.member_assignment)
        );
    }
    let mut committed: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for ((topic, partition), offset) in committed_offsets(broker, group)? {
        committed
            .entry(topic)
            .or_default()
            .push((partition, offset));
    }
    println!();
    println!(
        "{:<40} {:>9} {:>14} {:>14} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for (topic, partitions) in committed {
        let indexes: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
        let ends = latest_offsets(broker, &topic, &indexes)?;
        for (partition, offset) in partitions {
            let end = ends.get(&partition).copied().unwrap_or(-1);
            let lag = if offset >= 0 && end >= 0 {
                end - offset
            } else {
                -1
            };
            println!("{topic:<40} {partition:>9} {offset:>14} {end:>14} {lag:>10}");
        }
    }
    Ok(())
}

/// `topic:p,p topic:p` from a consumer-protocol assignment, or the byte count if it is not one.
fn assignment_text(bytes: &Bytes) -> String {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return String::new();
    }
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => assignment
            .assigned_partitions
            .iter()
            .map(|t| {
                let partitions: Vec<String> = t.partitions.iter().map(|p| p.to_string()).collect();
                format!("{}:{}", t.topic.as_str(), partitions.join(","))
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => format!("({} bytes)", bytes.len()),
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
        assert_eq!(assignment_text(&bytes.freeze()), "orders:0,2");
    }

    #[test]
    fn garbage_assignments_do_not_fail_the_command() {
        assert_eq!(
            assignment_text(&Bytes::from_static(&[0, 1, 9])),
            "(3 bytes)"
        );
    }
}
