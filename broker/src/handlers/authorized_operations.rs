//! KIP-430: Metadata, DescribeCluster, DescribeGroups and ConsumerGroupDescribe report, when the
//! client asks, which operations the caller may do to each topic, group or the cluster (admin
//! clients' `include_authorized_operations`). Filled in after the handler, from the request's
//! flags, so the handlers stay unaware of who asks.

use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::ClientContext;
use crate::acl::store::Acls;
use crate::acl::{ResourceType, CLUSTER_NAME};

/// Which authorized operations a request asked for.
#[derive(Clone, Copy, Default)]
pub(super) struct Asked {
    topics: bool,
    cluster: bool,
    groups: bool,
}

/// What `request` asks to be told of the caller's operations.
pub(super) fn asked(request: &RequestKind) -> Asked {
    match request {
        RequestKind::Metadata(r) => Asked {
            topics: r.include_topic_authorized_operations,
            cluster: r.include_cluster_authorized_operations,
            groups: false,
        },
        RequestKind::DescribeCluster(r) => Asked {
            cluster: r.include_cluster_authorized_operations,
            ..Asked::default()
        },
        RequestKind::DescribeGroups(r) => Asked {
            groups: r.include_authorized_operations,
            ..Asked::default()
        },
        RequestKind::ConsumerGroupDescribe(r) => Asked {
            groups: r.include_authorized_operations,
            ..Asked::default()
        },
        _ => Asked::default(),
    }
}

/// Writes the caller's authorized operations into `response` where `asked` wants them; the rest
/// keep Kafka's "not asked" value (`INT32_MIN`). A group or topic answered with an error gets
/// none, as in Kafka.
pub(super) fn fill(acls: &Acls, client: &ClientContext, asked: Asked, response: &mut ResponseKind) {
    let allowed = |resource_type, name: &str| {
        acls.authorized_operations(&client.principal, client.address(), resource_type, name)
    };
    match response {
        ResponseKind::Metadata(r) => {
            if asked.topics {
                for topic in r.topics.iter_mut().filter(|t| t.error_code == 0) {
                    if let Some(name) = &topic.name {
                        topic.topic_authorized_operations = allowed(ResourceType::Topic, name);
                    }
                }
            }
            if asked.cluster {
                r.cluster_authorized_operations = allowed(ResourceType::Cluster, CLUSTER_NAME);
            }
        }
        ResponseKind::DescribeCluster(r) if asked.cluster => {
            r.cluster_authorized_operations = allowed(ResourceType::Cluster, CLUSTER_NAME);
        }
        ResponseKind::DescribeGroups(r) if asked.groups => {
            for group in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                group.authorized_operations = allowed(ResourceType::Group, &group.group_id);
            }
        }
        ResponseKind::ConsumerGroupDescribe(r) if asked.groups => {
            for group in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                group.authorized_operations = allowed(ResourceType::Group, &group.group_id);
            }
        }
        _ => {}
    }
}
