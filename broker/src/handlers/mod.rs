//! Request handlers, one module per Kafka API. Each takes the decoded request and its version
//! and returns the response body; partition- and topic-level failures are Kafka error codes in
//! the body, never a closed connection.

use std::sync::Arc;

use causeway_protocol::request::Request;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::topics::TopicError;

mod acls;
mod api_versions;
mod authorize;
mod authorized_operations;
mod cluster;
mod configs;
mod consumer_groups;
mod delete_records;
mod fetch;
mod groups;
mod init_producer_id;
mod leader_epoch;
mod list_offsets;
mod log_dirs;
mod metadata;
mod offsets;
mod placement;
mod produce;
mod producers;
pub mod quotas;
mod recompress;
mod record_checks;
pub(crate) mod records;
pub mod sasl;
mod topics;
mod transactions;
mod users;

/// Runs a handler that may create, delete or change topics in the metadata lane: a topic change
/// writes the catalog to RocksDB and fsyncs sidecars and new partition directories, which must
/// not hold a runtime worker (`docs/design.md`, "Threads"). A task that failed (it panicked, or
/// shutdown cancelled it) answers an empty response, which names no topic, so the client
/// retries.
pub(crate) async fn changing_topics<T: Default + Send + 'static>(
    broker: &Arc<Broker>,
    handler: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let broker = broker.clone();
    match crate::blocking::METADATA
        .run(move || handler(&broker))
        .await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "a topic change task failed");
            T::default()
        }
    }
}

/// A request that was decoded but cannot be served; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} has no handler")]
pub struct Unhandled(ApiKey);

/// What handlers may need to know about the connection a request came on.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    /// The peer's address as Kafka reports it (`/127.0.0.1`), for DescribeGroups.
    pub host: String,
    /// Who the client is, as ACLs name it (`User:alice`, or `User:ANONYMOUS` on a plaintext
    /// listener).
    pub principal: String,
    /// The address the client's listener advertises (Metadata, FindCoordinator,
    /// DescribeCluster), so a client stays on the listener, and security protocol, it chose.
    pub advertised: Arc<(String, i32)>,
    /// The common name of the client certificate verified in the TLS handshake, if any: what
    /// names a peer region on the replication API keys.
    pub certificate_name: Option<String>,
}

impl ClientContext {
    /// The peer's IP address as ACL bindings name hosts (`127.0.0.1`).
    fn address(&self) -> &str {
        self.host.trim_start_matches('/')
    }
}

/// Handles one request, authorized first when ACLs are on; `Ok(None)` means no response is
/// sent (Produce with acks=0).
pub async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    client: &ClientContext,
) -> Result<Option<ResponseKind>, Unhandled> {
    if !broker.acls.enabled() {
        return serve(broker, request, client).await;
    }
    let caller = authorize::Caller {
        acls: &broker.acls,
        principal: &client.principal,
        host: client.address(),
    };
    let Request {
        api_key,
        version,
        header,
        body,
    } = request;
    let (body, denied) = match authorize::gate(&caller, broker, body) {
        authorize::Gate::Serve(body, denied) => (body, denied),
        authorize::Gate::Answer(response) => return Ok(response),
    };
    let request = Request {
        api_key,
        version,
        header,
        body,
    };
    let mut response = serve(broker, request, client).await?;
    if let Some(response) = response.as_mut() {
        authorize::complete(&caller, denied, response);
    }
    Ok(response)
}

/// Runs the handler of one (authorized) request.
async fn serve(
    broker: &Arc<Broker>,
    request: Request,
    client: &ClientContext,
) -> Result<Option<ResponseKind>, Unhandled> {
    let version = request.version;
    let asked = authorized_operations::asked(&request.body);
    let mut response = match request.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::Metadata(r) if metadata::may_create(broker, &r, version) => {
            ResponseKind::Metadata({
                let advertised = client.advertised.clone();
                changing_topics(broker, move |b| {
                    metadata::handle(b, r, version, &advertised)
                })
                .await
            })
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, r, version, &client.advertised))
        }
        RequestKind::Produce(r) => return Ok(produce::handle(broker, r).await),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, version).await)
        }
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(
            changing_topics(broker, move |b| topics::create(b, r, version)).await,
        ),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(
            changing_topics(broker, move |b| topics::delete(b, r, version)).await,
        ),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            changing_topics(broker, move |b| topics::create_partitions(b, r)).await,
        ),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(broker, r, version))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(changing_topics(broker, move |b| configs::alter(b, r)).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            changing_topics(broker, move |b| configs::incremental_alter(b, r)).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, r))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(leader_epoch::handle(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions(broker, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets(broker, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(broker, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(transactions::end(broker, r).await),
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(users::alter(broker, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(users::describe(broker, r))
        }
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(acls::create(broker, r).await),
        RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(acls::describe(broker, r)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(acls::delete(broker, r).await),
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(quotas::describe(broker, r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(quotas::alter(broker, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(transactions::describe(broker, r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(transactions::list(broker, r))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(log_dirs::describe(broker, r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(producers::describe(broker, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe(broker, r, &client.advertised))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(&client.advertised, r, version))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join(broker, &request.header, client, r, version).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync(broker, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, r)),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ResponseKind::ConsumerGroupHeartbeat(consumer_groups::heartbeat(
                broker,
                r,
                request.header.client_id.as_ref().map(|id| id.as_str()),
                client,
            ))
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_groups::describe(broker, r))
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave(broker, r, version)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list(broker, r, version)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe(broker, r, version))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(groups::delete(broker, r).await),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(broker, r, version).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(broker, r, version).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offsets::delete(broker, r).await)
        }
        _ => return Err(Unhandled(request.api_key)),
    };
    authorized_operations::fill(&broker.acls, client, asked, &mut response);
    Ok(Some(response))
}

/// Kafka error code of a topic operation's failure.
fn topic_error_code(error: &TopicError) -> i16 {
    match error {
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        TopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
        TopicError::RequestQuota(_) => ResponseError::ThrottlingQuotaExceeded,
        TopicError::Storage(_) | TopicError::Replica(_) => ResponseError::KafkaStorageError,
    }
    .code()
}

/// The Kafka error code of an outcome (0 for success).
fn code(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}

/// A string for a response field.
fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// A topic name for a response field.
fn topic_name(value: &str) -> TopicName {
    TopicName(str_bytes(value))
}
