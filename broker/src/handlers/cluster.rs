//! DescribeCluster: this region is a one-broker cluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::broker::{Broker, NODE_ID};

/// The cluster id, controller and the single broker.
pub fn describe(
    broker: &Broker,
    request: DescribeClusterRequest,
    advertised: &(String, i32),
) -> DescribeClusterResponse {
    let (host, port) = advertised.clone();
    DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(NODE_ID))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(str_bytes(host))
            .with_port(port)])
}
