//! Authorization of every request, in front of the handlers, as Kafka's `KafkaApis` does it:
//! the parts of a request the caller may not touch are taken out before the handler runs and
//! answered with TOPIC/GROUP/CLUSTER/TRANSACTIONAL_ID_AUTHORIZATION_FAILED beside what it
//! returns, and a request about one resource the caller may not touch is answered without being
//! served. Handlers therefore never see a resource the caller may not use, and know nothing of
//! ACLs. Which operation each API needs is Kafka's table (`docs/security.md`, Authorization).

use kafka_protocol::messages::{
    add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    },
    consumer_group_describe_response,
    create_partitions_response::CreatePartitionsTopicResult,
    create_topics_response::CreatableTopicResult,
    delete_acls_response::DeleteAclsFilterResult,
    delete_groups_response::DeletableGroupResult,
    delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
    delete_topics_response::DeletableTopicResult,
    describe_configs_response::DescribeConfigsResult,
    describe_groups_response, describe_producers_response, describe_transactions_response,
    fetch_response::{FetchableTopicResponse, PartitionData},
    find_coordinator_response::Coordinator,
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    metadata_response::MetadataResponseTopic,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic},
    offset_fetch_response,
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
    txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic},
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, AlterUserScramCredentialsResponse,
    ConsumerGroupHeartbeatResponse, CreateAclsResponse, DeleteAclsResponse, DescribeAclsResponse,
    DescribeClusterResponse, DescribeLogDirsResponse, DescribeUserScramCredentialsResponse,
    EndTxnResponse, FindCoordinatorResponse, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupResponse, LeaveGroupResponse, OffsetCommitResponse, OffsetDeleteResponse,
    OffsetFetchResponse, ProduceResponse, RequestKind, ResponseKind, SyncGroupResponse,
    TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::acl::store::Acls;
use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;
const TXN_DENIED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

/// Who asks: the principal and the address its connection comes from.
pub(super) struct Caller<'a> {
    pub(super) acls: &'a Acls,
    pub(super) principal: &'a str,
    pub(super) host: &'a str,
}

impl Caller<'_> {
    fn may(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.acls
            .authorize(self.principal, self.host, operation, resource_type, name)
    }

    fn may_topic(&self, operation: Operation, name: &str) -> bool {
        self.may(operation, ResourceType::Topic, name)
    }

    fn may_group(&self, operation: Operation, name: &str) -> bool {
        self.may(operation, ResourceType::Group, name)
    }

    fn may_cluster(&self, operation: Operation) -> bool {
        self.may(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    fn may_transaction(&self, operation: Operation, id: &str) -> bool {
        self.may(operation, ResourceType::TransactionalId, id)
    }

    /// CreateTopics and auto-creation: Create on the cluster or on the topic.
    fn may_create_topic(&self, name: &str) -> bool {
        self.may_cluster(Operation::Create) || self.may_topic(Operation::Create, name)
    }
}

/// What the gate decided for one request.
pub(super) enum Gate {
    /// Serve this request (perhaps with parts taken out), then [`complete`] the response.
    Serve(RequestKind, Denied),
    /// Answer this, without serving (`None`: Produce with acks=0 sends nothing).
    Answer(Option<ResponseKind>),
}

/// What was taken out of a request, to be answered beside the handler's response.
#[derive(Default)]
pub(super) struct Denied {
    /// Topics and their partitions, refused.
    topics: Vec<TopicPartitions>,
    /// Per group (OffsetFetch from v8), topics and their partitions, refused.
    group_topics: Vec<(String, Vec<TopicPartitions>)>,
    /// Topic names refused, with the code to answer (topic-level results).
    named: Vec<(String, ResponseError)>,
    /// Config resources refused: (resource type, name, code).
    resources: Vec<(i8, String, ResponseError)>,
    /// Response entries the caller may not see are dropped (listings of everything).
    hide: bool,
}

impl Denied {
    fn nothing() -> Denied {
        Denied::default()
    }

    fn hiding() -> Denied {
        Denied {
            hide: true,
            ..Denied::default()
        }
    }
}

/// A topic's name and some of its partitions.
type TopicPartitions = (String, Vec<i32>);

/// Takes `name`'s entries the caller may not touch out of `items`.
fn take_denied<T>(items: &mut Vec<T>, allowed: impl Fn(&T) -> bool) -> Vec<T> {
    let (kept, denied) = std::mem::take(items).into_iter().partition(allowed);
    *items = kept;
    denied
}

/// Decides what of `request` the caller may have served.
pub(super) fn gate(caller: &Caller, broker: &Broker, request: RequestKind) -> Gate {
    use RequestKind as R;
    let serve = |request, denied| Gate::Serve(request, denied);
    let answer = |response| Gate::Answer(Some(response));
    match request {
        R::Produce(mut r) => {
            if let Some(id) = &r.transactional_id {
                if !caller.may_transaction(Operation::Write, id) {
                    let response = ProduceResponse::default().with_responses(
                        r.topic_data
                            .iter()
                            .map(|t| {
                                let parts = t.partition_data.iter().map(|p| p.index).collect();
                                produce_topic(t.name.as_str(), parts, TXN_DENIED)
                            })
                            .collect(),
                    );
                    return Gate::Answer((r.acks != 0).then_some(ResponseKind::Produce(response)));
                }
            }
            let denied = take_denied(&mut r.topic_data, |t| {
                caller.may_topic(Operation::Write, &t.name)
            });
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partition_data.iter().map(|p| p.index).collect()))
                .collect();
            serve(R::Produce(r), Denied { topics, ..Denied::nothing() })
        }
        R::Fetch(mut r) => {
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Read, &t.topic));
            let topics = denied
                .iter()
                .map(|t| (t.topic.to_string(), t.partitions.iter().map(|p| p.partition).collect()))
                .collect();
            serve(R::Fetch(r), Denied { topics, ..Denied::nothing() })
        }
        R::ListOffsets(mut r) => {
            let denied =
                take_denied(&mut r.topics, |t| caller.may_topic(Operation::Describe, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
                .collect();
            serve(R::ListOffsets(r), Denied { topics, ..Denied::nothing() })
        }
        R::OffsetForLeaderEpoch(mut r) => {
            let denied =
                take_denied(&mut r.topics, |t| caller.may_topic(Operation::Describe, &t.topic));
            let topics = denied
                .iter()
                .map(|t| (t.topic.to_string(), t.partitions.iter().map(|p| p.partition).collect()))
                .collect();
            serve(R::OffsetForLeaderEpoch(r), Denied { topics, ..Denied::nothing() })
        }
        R::DeleteRecords(mut r) => {
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Delete, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
                .collect();
            serve(R::DeleteRecords(r), Denied { topics, ..Denied::nothing() })
        }
        R::DescribeProducers(mut r) => {
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Read, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect();
            serve(R::DescribeProducers(r), Denied { topics, ..Denied::nothing() })
        }
        R::Metadata(mut r) => {
            let Some(asked) = r.topics.as_mut() else {
                return serve(R::Metadata(r), Denied::hiding());
            };
            let mut named = Vec::new();
            asked.retain(|t| {
                let Some(name) = &t.name else { return true };
                let refusal = if !caller.may_topic(Operation::Describe, name) {
                    Some(TOPIC_DENIED)
                } else if r.allow_auto_topic_creation
                    && broker.topics.get(name).is_none()
                    && !caller.may_create_topic(name)
                {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else {
                    None
                };
                if let Some(code) = refusal {
                    named.push((name.to_string(), code));
                }
                refusal.is_none()
            });
            serve(R::Metadata(r), Denied { named, hide: true, ..Denied::nothing() })
        }
        R::CreateTopics(mut r) => {
            let denied = take_denied(&mut r.topics, |t| caller.may_create_topic(&t.name));
            let named = denied.iter().map(|t| (t.name.to_string(), TOPIC_DENIED)).collect();
            serve(R::CreateTopics(r), Denied { named, ..Denied::nothing() })
        }
        R::DeleteTopics(mut r) => {
            let may_delete = |name: &str| caller.may_topic(Operation::Delete, name);
            let mut named: Vec<(String, ResponseError)> = Vec::new();
            r.topic_names.retain(|name| {
                let allowed = may_delete(name);
                if !allowed {
                    named.push((name.to_string(), TOPIC_DENIED));
                }
                allowed
            });
            r.topics.retain(|t| {
                let name = t.name.as_ref().map(|n| n.to_string()).or_else(|| {
                    broker.topics.get_by_id(t.topic_id).map(|topic| topic.name.clone())
                });
                match name {
                    Some(name) if !may_delete(&name) => {
                        named.push((name, TOPIC_DENIED));
                        false
                    }
                    _ => true,
                }
            });
            serve(R::DeleteTopics(r), Denied { named, ..Denied::nothing() })
        }
        R::CreatePartitions(mut r) => {
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Alter, &t.name));
            let named = denied.iter().map(|t| (t.name.to_string(), TOPIC_DENIED)).collect();
            serve(R::CreatePartitions(r), Denied { named, ..Denied::nothing() })
        }
        R::DescribeConfigs(mut r) => {
            let judge = |t: i8, n: &str| config_refusal(caller, Operation::DescribeConfigs, t, n);
            let denied = take_denied(&mut r.resources, |c| judge(c.resource_type, &c.resource_name).is_none());
            let resources = refused_resources(denied.iter().map(|c| (c.resource_type, c.resource_name.as_str())), judge);
            serve(R::DescribeConfigs(r), Denied { resources, ..Denied::nothing() })
        }
        R::AlterConfigs(mut r) => {
            let judge = |t: i8, n: &str| config_refusal(caller, Operation::AlterConfigs, t, n);
            let denied = take_denied(&mut r.resources, |c| judge(c.resource_type, &c.resource_name).is_none());
            let resources = refused_resources(denied.iter().map(|c| (c.resource_type, c.resource_name.as_str())), judge);
            serve(R::AlterConfigs(r), Denied { resources, ..Denied::nothing() })
        }
        R::IncrementalAlterConfigs(mut r) => {
            let judge = |t: i8, n: &str| config_refusal(caller, Operation::AlterConfigs, t, n);
            let denied = take_denied(&mut r.resources, |c| judge(c.resource_type, &c.resource_name).is_none());
            let resources = refused_resources(denied.iter().map(|c| (c.resource_type, c.resource_name.as_str())), judge);
            serve(R::IncrementalAlterConfigs(r), Denied { resources, ..Denied::nothing() })
        }
        R::InitProducerId(r) => {
            let refusal = match &r.transactional_id {
                Some(id) => (!caller.may_transaction(Operation::Write, id)).then_some(TXN_DENIED),
                None => (!caller.may_cluster(Operation::IdempotentWrite)
                    && !caller.acls.authorize_any(
                        caller.principal,
                        caller.host,
                        Operation::Write,
                        ResourceType::Topic,
                    ))
                .then_some(CLUSTER_DENIED),
            };
            match refusal {
                Some(code) => answer(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(code.code())
                        .with_producer_id((-1).into())
                        .with_producer_epoch(-1),
                )),
                None => serve(R::InitProducerId(r), Denied::nothing()),
            }
        }
        R::AddPartitionsToTxn(r) => {
            let txn_allowed = caller.may_transaction(Operation::Write, &r.v3_and_below_transactional_id);
            let topic_allowed = |name: &str| caller.may_topic(Operation::Write, name);
            if txn_allowed && r.v3_and_below_topics.iter().all(|t| topic_allowed(&t.name)) {
                return serve(R::AddPartitionsToTxn(r), Denied::nothing());
            }
            // Nothing is added when any part is refused; the rest is "not attempted".
            let results = r
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    let code = if !txn_allowed {
                        TXN_DENIED
                    } else if !topic_allowed(&t.name) {
                        TOPIC_DENIED
                    } else {
                        ResponseError::OperationNotAttempted
                    };
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(*p)
                                        .with_partition_error_code(code.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            answer(ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
            ))
        }
        R::AddOffsetsToTxn(r) => {
            let refusal = if !caller.may_transaction(Operation::Write, &r.transactional_id) {
                Some(TXN_DENIED)
            } else if !caller.may_group(Operation::Read, &r.group_id) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            match refusal {
                Some(code) => answer(ResponseKind::AddOffsetsToTxn(
                    AddOffsetsToTxnResponse::default().with_error_code(code.code()),
                )),
                None => serve(R::AddOffsetsToTxn(r), Denied::nothing()),
            }
        }
        R::TxnOffsetCommit(mut r) => {
            let refusal = if !caller.may_transaction(Operation::Write, &r.transactional_id) {
                Some(TXN_DENIED)
            } else if !caller.may_group(Operation::Read, &r.group_id) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            if let Some(code) = refusal {
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                        txn_commit_topic(t.name.as_str(), parts, code)
                    })
                    .collect();
                return answer(ResponseKind::TxnOffsetCommit(
                    TxnOffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Read, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
                .collect();
            serve(R::TxnOffsetCommit(r), Denied { topics, ..Denied::nothing() })
        }
        R::EndTxn(r) => {
            if caller.may_transaction(Operation::Write, &r.transactional_id) {
                serve(R::EndTxn(r), Denied::nothing())
            } else {
                answer(ResponseKind::EndTxn(
                    EndTxnResponse::default()
                        .with_error_code(TXN_DENIED.code())
                        .with_producer_id((-1).into())
                        .with_producer_epoch(-1),
                ))
            }
        }
        R::DescribeTransactions(mut r) => {
            let denied = take_denied(&mut r.transactional_ids, |id| {
                caller.may_transaction(Operation::Describe, id)
            });
            let named = denied.iter().map(|id| (id.to_string(), TXN_DENIED)).collect();
            serve(R::DescribeTransactions(r), Denied { named, ..Denied::nothing() })
        }
        R::ListTransactions(r) => serve(R::ListTransactions(r), Denied::hiding()),
        R::FindCoordinator(mut r) => {
            let transactional = r.key_type == 1;
            let may = |key: &str| {
                if transactional {
                    caller.may_transaction(Operation::Describe, key)
                } else {
                    caller.may_group(Operation::Describe, key)
                }
            };
            let code = if transactional { TXN_DENIED } else { GROUP_DENIED };
            if r.coordinator_keys.is_empty() {
                return if may(&r.key) {
                    serve(R::FindCoordinator(r), Denied::nothing())
                } else {
                    answer(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(code.code())
                            .with_node_id((-1).into())
                            .with_port(-1),
                    ))
                };
            }
            let denied = take_denied(&mut r.coordinator_keys, |key| may(key));
            let named = denied.iter().map(|key| (key.to_string(), code)).collect();
            serve(R::FindCoordinator(r), Denied { named, ..Denied::nothing() })
        }
        R::JoinGroup(r) if !caller.may_group(Operation::Read, &r.group_id) => {
            answer(ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_error_code(GROUP_DENIED.code())
                    .with_generation_id(-1),
            ))
        }
        R::SyncGroup(r) if !caller.may_group(Operation::Read, &r.group_id) => answer(
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(GROUP_DENIED.code())),
        ),
        R::Heartbeat(r) if !caller.may_group(Operation::Read, &r.group_id) => answer(
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(GROUP_DENIED.code())),
        ),
        R::LeaveGroup(r) if !caller.may_group(Operation::Read, &r.group_id) => answer(
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(GROUP_DENIED.code())),
        ),
        R::ConsumerGroupHeartbeat(r) => {
            let refusal = if !caller.may_group(Operation::Read, &r.group_id) {
                Some(GROUP_DENIED)
            } else if r
                .subscribed_topic_names
                .iter()
                .flatten()
                .any(|name| !caller.may_topic(Operation::Describe, name))
            {
                Some(TOPIC_DENIED)
            } else {
                None
            };
            match refusal {
                Some(code) => answer(ResponseKind::ConsumerGroupHeartbeat(
                    ConsumerGroupHeartbeatResponse::default().with_error_code(code.code()),
                )),
                None => serve(R::ConsumerGroupHeartbeat(r), Denied::nothing()),
            }
        }
        R::ConsumerGroupDescribe(mut r) => {
            let denied = take_denied(&mut r.group_ids, |g| caller.may_group(Operation::Describe, g));
            let named = denied.iter().map(|g| (g.to_string(), GROUP_DENIED)).collect();
            serve(R::ConsumerGroupDescribe(r), Denied { named, ..Denied::nothing() })
        }
        R::DescribeGroups(mut r) => {
            let denied = take_denied(&mut r.groups, |g| caller.may_group(Operation::Describe, g));
            let named = denied.iter().map(|g| (g.to_string(), GROUP_DENIED)).collect();
            serve(R::DescribeGroups(r), Denied { named, ..Denied::nothing() })
        }
        R::DeleteGroups(mut r) => {
            let denied = take_denied(&mut r.groups_names, |g| caller.may_group(Operation::Delete, g));
            let named = denied.iter().map(|g| (g.to_string(), GROUP_DENIED)).collect();
            serve(R::DeleteGroups(r), Denied { named, ..Denied::nothing() })
        }
        R::ListGroups(r) => {
            let denied = if caller.may_cluster(Operation::Describe) {
                Denied::nothing()
            } else {
                Denied::hiding()
            };
            serve(R::ListGroups(r), denied)
        }
        R::OffsetCommit(mut r) => {
            if !caller.may_group(Operation::Read, &r.group_id) {
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                        commit_topic(t.name.as_str(), parts, GROUP_DENIED)
                    })
                    .collect();
                return answer(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Read, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
                .collect();
            serve(R::OffsetCommit(r), Denied { topics, ..Denied::nothing() })
        }
        // Topics named and not describable are refused per partition; from a fetch of every
        // committed position they are left out (`hide`), as Kafka does.
        R::OffsetFetch(mut r) => {
            let visible = |name: &str| caller.may_topic(Operation::Describe, name);
            if r.groups.is_empty() {
                if !caller.may_group(Operation::Describe, &r.group_id) {
                    return answer(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(GROUP_DENIED.code()),
                    ));
                }
                let topics = r.topics.as_mut().map_or_else(Vec::new, |named| {
                    let denied = take_denied(named, |t| visible(&t.name));
                    denied.into_iter().map(|t| (t.name.to_string(), t.partition_indexes)).collect()
                });
                return serve(R::OffsetFetch(r), Denied { topics, hide: true, ..Denied::nothing() });
            }
            let denied = take_denied(&mut r.groups, |g| caller.may_group(Operation::Describe, &g.group_id));
            let named = denied.iter().map(|g| (g.group_id.to_string(), GROUP_DENIED)).collect();
            let group_topics = r
                .groups
                .iter_mut()
                .filter_map(|g| {
                    let denied = take_denied(g.topics.as_mut()?, |t| visible(&t.name));
                    let topics = denied.into_iter().map(|t| (t.name.to_string(), t.partition_indexes));
                    Some((g.group_id.to_string(), topics.collect()))
                })
                .collect();
            serve(R::OffsetFetch(r), Denied { named, group_topics, hide: true, ..Denied::nothing() })
        }
        R::OffsetDelete(mut r) => {
            if !caller.may_group(Operation::Delete, &r.group_id) {
                return answer(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_DENIED.code()),
                ));
            }
            let denied = take_denied(&mut r.topics, |t| caller.may_topic(Operation::Read, &t.name));
            let topics = denied
                .iter()
                .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
                .collect();
            serve(R::OffsetDelete(r), Denied { topics, ..Denied::nothing() })
        }
        R::DescribeAcls(_) if !caller.may_cluster(Operation::Describe) => answer(
            ResponseKind::DescribeAcls(
                DescribeAclsResponse::default()
                    .with_error_code(CLUSTER_DENIED.code())
                    .with_error_message(Some(str_bytes("Describe on the cluster is needed"))),
            ),
        ),
        R::CreateAcls(r) if !caller.may_cluster(Operation::Alter) => {
            answer(ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(
                r.creations
                    .iter()
                    .map(|_| {
                        kafka_protocol::messages::create_acls_response::AclCreationResult::default()
                            .with_error_code(CLUSTER_DENIED.code())
                    })
                    .collect(),
            )))
        }
        R::DeleteAcls(r) if !caller.may_cluster(Operation::Alter) => {
            answer(ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(
                r.filters
                    .iter()
                    .map(|_| DeleteAclsFilterResult::default().with_error_code(CLUSTER_DENIED.code()))
                    .collect(),
            )))
        }
        R::AlterUserScramCredentials(r) if !caller.may_cluster(Operation::Alter) => {
            let mut users: Vec<&str> = r
                .deletions
                .iter()
                .map(|d| d.name.as_str())
                .chain(r.upsertions.iter().map(|u| u.name.as_str()))
                .collect();
            users.sort_unstable();
            users.dedup();
            answer(ResponseKind::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse::default().with_results(
                    users
                        .into_iter()
                        .map(|user| {
                            kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                                .with_user(str_bytes(user))
                                .with_error_code(CLUSTER_DENIED.code())
                        })
                        .collect(),
                ),
            ))
        }
        R::DescribeUserScramCredentials(_) if !caller.may_cluster(Operation::Describe) => answer(
            ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default().with_error_code(CLUSTER_DENIED.code()),
            ),
        ),
        R::DescribeClientQuotas(_) if !caller.may_cluster(Operation::DescribeConfigs) => answer(
            ResponseKind::DescribeClientQuotas(
                kafka_protocol::messages::DescribeClientQuotasResponse::default()
                    .with_error_code(CLUSTER_DENIED.code())
                    .with_error_message(Some(str_bytes("DescribeConfigs on the cluster is needed"))),
            ),
        ),
        R::AlterClientQuotas(r) if !caller.may_cluster(Operation::AlterConfigs) => answer(
            ResponseKind::AlterClientQuotas(
                kafka_protocol::messages::AlterClientQuotasResponse::default().with_entries(
                    r.entries
                        .iter()
                        .map(|entry| {
                            use kafka_protocol::messages::alter_client_quotas_response as a;
                            a::EntryData::default()
                                .with_error_code(CLUSTER_DENIED.code())
                                .with_entity(
                                    entry
                                        .entity
                                        .iter()
                                        .map(|e| {
                                            a::EntityData::default()
                                                .with_entity_type(e.entity_type.clone())
                                                .with_entity_name(e.entity_name.clone())
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            ),
        ),
        R::DescribeLogDirs(_) if !caller.may_cluster(Operation::Describe) => answer(
            ResponseKind::DescribeLogDirs(
                DescribeLogDirsResponse::default().with_error_code(CLUSTER_DENIED.code()),
            ),
        ),
        R::DescribeCluster(_) if !caller.may_cluster(Operation::Describe) => answer(
            ResponseKind::DescribeCluster(
                DescribeClusterResponse::default()
                    .with_error_code(CLUSTER_DENIED.code())
                    .with_error_message(Some(str_bytes("Describe on the cluster is needed"))),
            ),
        ),
        other => serve(other, Denied::nothing()),
    }
}

/// The refusal of a config resource: topics by their name, anything else is the cluster's.
fn config_refusal(
    caller: &Caller,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Option<ResponseError> {
    const TOPIC_RESOURCE: i8 = 2;
    const GROUP_RESOURCE: i8 = 32;
    match resource_type {
        TOPIC_RESOURCE => (!caller.may_topic(operation, name)).then_some(TOPIC_DENIED),
        GROUP_RESOURCE => (!caller.may_group(operation, name)).then_some(GROUP_DENIED),
        _ => (!caller.may_cluster(operation)).then_some(CLUSTER_DENIED),
    }
}

fn refused_resources<'a>(
    denied: impl Iterator<Item = (i8, &'a str)>,
    judge: impl Fn(i8, &str) -> Option<ResponseError>,
) -> Vec<(i8, String, ResponseError)> {
    denied
        .map(|(t, n)| (t, n.to_string(), judge(t, n).unwrap_or(CLUSTER_DENIED)))
        .collect()
}

fn produce_topic(name: &str, partitions: Vec<i32>, code: ResponseError) -> TopicProduceResponse {
    TopicProduceResponse::default()
        .with_name(topic_name(name))
        .with_partition_responses(
            partitions
                .into_iter()
                .map(|index| {
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(code.code())
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1)
                })
                .collect(),
        )
}

fn commit_topic(
    name: &str,
    partitions: Vec<i32>,
    code: ResponseError,
) -> OffsetCommitResponseTopic {
    OffsetCommitResponseTopic::default()
        .with_name(topic_name(name))
        .with_partitions(
            partitions
                .into_iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code.code())
                })
                .collect(),
        )
}

fn txn_commit_topic(
    name: &str,
    partitions: Vec<i32>,
    code: ResponseError,
) -> TxnOffsetCommitResponseTopic {
    TxnOffsetCommitResponseTopic::default()
        .with_name(topic_name(name))
        .with_partitions(
            partitions
                .into_iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code.code())
                })
                .collect(),
        )
}

/// Answers what [`gate`] took out of the request beside the handler's response, and drops
/// entries of a listing the caller may not see.
pub(super) fn complete(caller: &Caller, denied: Denied, response: &mut ResponseKind) {
    use ResponseKind as P;
    let Denied {
        topics,
        group_topics,
        named,
        resources,
        hide,
    } = denied;
    let code = TOPIC_DENIED.code();
    match response {
        P::Produce(r) => r.responses.extend(
            topics.into_iter().map(|(name, parts)| produce_topic(&name, parts, TOPIC_DENIED)),
        ),
        P::Fetch(r) => r.responses.extend(topics.into_iter().map(|(name, parts)| {
            FetchableTopicResponse::default().with_topic(topic_name(&name)).with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                    })
                    .collect(),
            )
        })),
        P::ListOffsets(r) => r.topics.extend(topics.into_iter().map(|(name, parts)| {
            ListOffsetsTopicResponse::default().with_name(topic_name(&name)).with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1)
                    })
                    .collect(),
            )
        })),
        P::OffsetForLeaderEpoch(r) => r.topics.extend(topics.into_iter().map(|(name, parts)| {
            OffsetForLeaderTopicResult::default().with_topic(topic_name(&name)).with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        EpochEndOffset::default()
                            .with_partition(p)
                            .with_error_code(code)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1)
                    })
                    .collect(),
            )
        })),
        P::DeleteRecords(r) => r.topics.extend(topics.into_iter().map(|(name, parts)| {
            DeleteRecordsTopicResult::default().with_name(topic_name(&name)).with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                            .with_low_watermark(-1)
                    })
                    .collect(),
            )
        })),
        P::DescribeProducers(r) => r.topics.extend(topics.into_iter().map(|(name, parts)| {
            describe_producers_response::TopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|p| {
                            describe_producers_response::PartitionResponse::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })),
        P::TxnOffsetCommit(r) => r.topics.extend(
            topics.into_iter().map(|(name, parts)| txn_commit_topic(&name, parts, TOPIC_DENIED)),
        ),
        P::OffsetCommit(r) => r.topics.extend(
            topics.into_iter().map(|(name, parts)| commit_topic(&name, parts, TOPIC_DENIED)),
        ),
        P::OffsetDelete(r) => r.topics.extend(topics.into_iter().map(|(name, parts)| {
            OffsetDeleteResponseTopic::default().with_name(topic_name(&name)).with_partitions(
                parts
                    .into_iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    })
                    .collect(),
            )
        })),
        P::Metadata(r) => {
            if hide {
                r.topics.retain(|t| {
                    t.name
                        .as_ref()
                        .is_none_or(|name| caller.may_topic(Operation::Describe, name))
                });
            }
            r.topics.extend(named.into_iter().map(|(name, refusal)| {
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(refusal.code())
            }));
        }
        P::CreateTopics(r) => r.topics.extend(named.into_iter().map(|(name, refusal)| {
            CreatableTopicResult::default()
                .with_name(topic_name(&name))
                .with_error_code(refusal.code())
                .with_error_message(Some(str_bytes("Create on the topic or the cluster is needed")))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        })),
        P::DeleteTopics(r) => r.responses.extend(named.into_iter().map(|(name, refusal)| {
            DeletableTopicResult::default()
                .with_name(Some(topic_name(&name)))
                .with_error_code(refusal.code())
        })),
        P::CreatePartitions(r) => r.results.extend(named.into_iter().map(|(name, refusal)| {
            CreatePartitionsTopicResult::default()
                .with_name(topic_name(&name))
                .with_error_code(refusal.code())
        })),
        P::DescribeConfigs(r) => r.results.extend(resources.into_iter().map(|(t, name, refusal)| {
            DescribeConfigsResult::default()
                .with_resource_type(t)
                .with_resource_name(str_bytes(name))
                .with_error_code(refusal.code())
        })),
        P::AlterConfigs(r) => r.responses.extend(resources.into_iter().map(|(t, name, refusal)| {
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(t)
                .with_resource_name(str_bytes(name))
                .with_error_code(refusal.code())
        })),
        P::IncrementalAlterConfigs(r) => r.responses.extend(resources.into_iter().map(|(t, name, refusal)| {
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(t)
                .with_resource_name(str_bytes(name))
                .with_error_code(refusal.code())
        })),
        P::DescribeTransactions(r) => r.transaction_states.extend(named.into_iter().map(|(id, refusal)| {
            describe_transactions_response::TransactionState::default()
                .with_transactional_id(str_bytes(id).into())
                .with_error_code(refusal.code())
                .with_producer_id((-1).into())
                .with_producer_epoch(-1)
        })),
        P::ListTransactions(r) if hide => r
            .transaction_states
            .retain(|t| caller.may_transaction(Operation::Describe, &t.transactional_id)),
        P::FindCoordinator(r) => r.coordinators.extend(named.into_iter().map(|(key, refusal)| {
            Coordinator::default()
                .with_key(str_bytes(key))
                .with_node_id((-1).into())
                .with_port(-1)
                .with_error_code(refusal.code())
        })),
        P::ConsumerGroupDescribe(r) => r.groups.extend(named.into_iter().map(|(group, refusal)| {
            consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(str_bytes(group).into())
                .with_error_code(refusal.code())
        })),
        P::DescribeGroups(r) => r.groups.extend(named.into_iter().map(|(group, refusal)| {
            describe_groups_response::DescribedGroup::default()
                .with_group_id(str_bytes(group).into())
                .with_error_code(refusal.code())
        })),
        P::DeleteGroups(r) => r.results.extend(named.into_iter().map(|(group, refusal)| {
            DeletableGroupResult::default()
                .with_group_id(str_bytes(group).into())
                .with_error_code(refusal.code())
        })),
        P::ListGroups(r) if hide => r
            .groups
            .retain(|g| caller.may_group(Operation::Describe, &g.group_id)),
        P::OffsetFetch(r) if hide => {
            let visible = |name: &str| caller.may_topic(Operation::Describe, name);
            r.topics.retain(|t| visible(&t.name));
            r.topics.extend(topics.into_iter().map(|(name, parts)| {
                offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&name))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                offset_fetch_response::OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            }));
            for group in &mut r.groups {
                group.topics.retain(|t| visible(&t.name));
            }
            for (id, refused) in group_topics {
                let Some(group) = r.groups.iter_mut().find(|g| g.group_id.as_str() == id) else {
                    continue;
                };
                group.topics.extend(refused.into_iter().map(|(name, parts)| {
                    offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(topic_name(&name))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    offset_fetch_response::OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                }));
            }
            r.groups.extend(named.into_iter().map(|(group, refusal)| {
                offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(str_bytes(group).into())
                    .with_error_code(refusal.code())
            }));
        }
        _ => {}
    }
}
