//! Metadata: this region's one broker leads every partition. Unknown topics are created when
//! auto-creation is on and the client allows it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::leader_epoch::LEADER_EPOCH_NONE;
use super::{str_bytes, topic_error_code, topic_name};
use crate::broker::{Broker, NODE_ID};
use crate::topics::{PartitionAllowance, Topic};

/// Whether answering `request` may create topics: auto-creation is on, the client allows it,
/// and it names a topic this region does not host. Such a request is answered in the metadata
/// lane, off the runtime workers.
pub fn may_create(broker: &Broker, request: &MetadataRequest, version: i16) -> bool {
    allows_creation(broker, request, version)
        && request.topics.iter().flatten().any(|wanted| {
            wanted
                .name
                .as_ref()
                .is_some_and(|name| broker.topics.get(name.as_str()).is_none())
        })
}

fn allows_creation(broker: &Broker, request: &MetadataRequest, version: i16) -> bool {
    broker.options.auto_create_topics && (version < 4 || request.allow_auto_topic_creation)
}

/// Describes the requested topics (all of them when the list is null, or empty before v1).
pub fn handle(
    broker: &Broker,
    request: MetadataRequest,
    version: i16,
    advertised: &(String, i32),
) -> MetadataResponse {
    let (host, port) = advertised.clone();
    let allow_create = allows_creation(broker, &request, version);
    let topics = match request.topics {
        None => broker
            .topics
            .all()
            .iter()
            .map(|t| describe(t, version))
            .collect(),
        Some(requested) if requested.is_empty() && version == 0 => broker
            .topics
            .all()
            .iter()
            .map(|t| describe(t, version))
            .collect(),
        Some(requested) => {
            let allowance = allow_create.then(|| broker.topics.allowance());
            requested
                .into_iter()
                .map(|wanted| match wanted.name {
                    Some(name) => {
                        lookup_by_name(broker, name.as_str(), allowance.as_ref(), version)
                    }
                    None => lookup_by_id(broker, wanted.topic_id, version),
                })
                .collect()
        }
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(host))
            .with_port(port)])
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// Describes `name`, creating it first when `allowance` (auto-creation allowed) has room.
fn lookup_by_name(
    broker: &Broker,
    name: &str,
    allowance: Option<&PartitionAllowance>,
    version: i16,
) -> MetadataResponseTopic {
    let found = match (broker.topics.get(name), allowance) {
        (Some(topic), _) => Ok(topic),
        (None, Some(allowance)) => broker
            .topics
            .create_within(name, broker.default_partitions(), allowance)
            .map_err(|e| topic_error_code(&e)),
        (None, None) => Err(ResponseError::UnknownTopicOrPartition.code()),
    };
    match found {
        Ok(topic) => describe(&topic, version),
        Err(code) => MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code),
    }
}

fn lookup_by_id(broker: &Broker, id: Uuid, version: i16) -> MetadataResponseTopic {
    match broker.topics.get_by_id(id) {
        Some(topic) => describe(&topic, version),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

/// First Metadata version whose partitions carry a leader epoch.
const VERSION_LEADER_EPOCH: i16 = 7;

fn describe(topic: &Arc<Topic>, version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index())
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(match version >= VERSION_LEADER_EPOCH {
                    true => p.log().leader_epoch(),
                    false => LEADER_EPOCH_NONE,
                })
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    let described = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_is_internal(crate::positions::is_internal(&topic.name))
        .with_partitions(partitions);
    if version >= 10 {
        described.with_topic_id(topic.id)
    } else {
        described
    }
}
