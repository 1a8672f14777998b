//! DescribeClientQuotas and AlterClientQuotas (KIP-546): Kafka's admin tools
//! (`kafka-configs.sh --entity-type users/clients`, AdminClient) manage the quotas of a running
//! broker. Each entry of an alteration is judged alone and answered with its own error; the
//! valid ones are written together, durably, before the answer (unless `validate_only`).

use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlterEntity, EntryData as AlterResult,
};
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::ResponseError;

use super::{changing_topics, str_bytes};
use crate::broker::Broker;
use crate::quota::{Entity, Filter, Match, QuotaKey, CLIENT_ID, USER};

/// Match types of a DescribeClientQuotas component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// The filter a DescribeClientQuotas request names.
fn filter_of(request: &DescribeClientQuotasRequest) -> Result<Filter, String> {
    let mut filter = Filter {
        user: None,
        client_id: None,
        strict: request.strict,
    };
    for component in &request.components {
        let matching = match (component.match_type, &component._match) {
            (MATCH_EXACT, Some(name)) => Match::Exact(name.to_string()),
            (MATCH_EXACT, None) => return Err("an exact match needs a name".into()),
            (MATCH_DEFAULT, _) => Match::Default,
            (MATCH_SPECIFIED, _) => Match::Specified,
            (other, _) => return Err(format!("unknown match type {other}")),
        };
        let slot = match component.entity_type.as_str() {
            USER => &mut filter.user,
            CLIENT_ID => &mut filter.client_id,
            other => return Err(format!("unknown entity type {other:?}")),
        };
        if slot.is_some() {
            return Err(format!(
                "entity type {} named twice",
                component.entity_type.as_str()
            ));
        }
        *slot = Some(matching);
    }
    Ok(filter)
}

/// Answers the quotas of the entities the filter matches.
pub fn describe(
    broker: &Broker,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let filter = match filter_of(&request) {
        Ok(filter) => filter,
        Err(why) => {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(why)))
        }
    };
    let entries = broker
        .quotas
        .describe(&filter)
        .into_iter()
        .map(|(entity, values)| {
            EntryData::default()
                .with_entity(
                    entity
                        .components()
                        .into_iter()
                        .map(|(t, name)| {
                            EntityData::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(name.map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .into_iter()
                        .map(|(key, value)| {
                            ValueData::default()
                                .with_key(str_bytes(key.name()))
                                .with_value(value)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// One entry's changes, or why it is refused.
type Judged = Result<Vec<(Entity, QuotaKey, Option<f64>)>, String>;

fn judge(entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData) -> Judged {
    let entity = Entity::from_components(entry.entity.iter().map(|e| {
        (
            e.entity_type.as_str(),
            e.entity_name.as_ref().map(|n| n.as_str()),
        )
    }))?;
    let mut changes = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let key = QuotaKey::from_name(op.key.as_str())
            .ok_or_else(|| format!("unknown quota key {:?}", op.key.as_str()))?;
        if changes.iter().any(|(_, k, _)| *k == key) {
            return Err(format!("{} given twice", key.name()));
        }
        if op.remove {
            changes.push((entity.clone(), key, None));
        } else {
            key.validate(op.value)?;
            changes.push((entity.clone(), key, Some(op.value)));
        }
    }
    Ok(changes)
}

/// Sets and removes quotas; each entry is answered alone.
pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let judged: Vec<Judged> = request.entries.iter().map(judge).collect();
    let valid: Vec<_> = judged
        .iter()
        .filter_map(|j| j.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let written: Result<(), String> = if request.validate_only || valid.is_empty() {
        Ok(())
    } else {
        changing_topics(broker, move |b| {
            Some(b.quotas.alter(&b.security, b.topics.catalog(), &valid))
        })
        .await
        .unwrap_or_else(|| Err("the quota change did not run".into()))
    };
    if let (Err(why), false) = (&written, request.validate_only) {
        tracing::error!(%why, "writing client quotas failed");
    } else if !request.validate_only {
        tracing::info!(entries = request.entries.len(), "client quotas altered");
    }
    let entries = request
        .entries
        .iter()
        .zip(judged)
        .map(|(entry, judged)| {
            let (code, message) = match (judged, &written) {
                (Err(why), _) => (ResponseError::InvalidRequest.code(), Some(why)),
                (Ok(_), Err(why)) => (ResponseError::KafkaStorageError.code(), Some(why.clone())),
                (Ok(_), Ok(())) => (0, None),
            };
            AlterResult::default()
                .with_error_code(code)
                .with_error_message(message.map(str_bytes))
                .with_entity(
                    entry
                        .entity
                        .iter()
                        .map(|e| {
                            AlterEntity::default()
                                .with_entity_type(e.entity_type.clone())
                                .with_entity_name(e.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}

/// Adds `ms` to the `throttle_time_ms` of a response that has one (a version without the
/// field encodes without it), keeping the larger of the two.
pub fn set_throttle_time(response: &mut kafka_protocol::messages::ResponseKind, ms: i32) {
    use kafka_protocol::messages::ResponseKind as K;
    macro_rules! throttle {
        ($($variant:ident),* $(,)?) => {
            match response {
                $(K::$variant(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    throttle!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetFetch,
        FindCoordinator,
        JoinGroup,
        Heartbeat,
        LeaveGroup,
        SyncGroup,
        DescribeGroups,
        ListGroups,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        DeleteGroups,
        IncrementalAlterConfigs,
        OffsetDelete,
        DescribeClientQuotas,
        AlterClientQuotas,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeCluster,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
    );
}

/// Bytes of records in a Produce request (what `producer_byte_rate` measures); 0 otherwise.
pub fn produced_bytes(request: &kafka_protocol::messages::RequestKind) -> u64 {
    match request {
        kafka_protocol::messages::RequestKind::Produce(r) => r
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
            .sum(),
        _ => 0,
    }
}

/// Bytes of records in a Fetch response (what `consumer_byte_rate` measures); 0 otherwise.
fn fetched_bytes(response: Option<&kafka_protocol::messages::ResponseKind>) -> u64 {
    match response {
        Some(kafka_protocol::messages::ResponseKind::Fetch(r)) => r
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
            .sum(),
        _ => 0,
    }
}

/// Measures a handled request against its client's quotas: the throttle time (ms, 0 within
/// every quota) is set in the response and returned, for the connection to stay muted that
/// long after answering (KIP-219). ApiVersions and SASL do not count against
/// `request_percentage`, as in Kafka.
pub fn enforce(
    broker: &Broker,
    principal: &str,
    client_id: &str,
    api_key: kafka_protocol::messages::ApiKey,
    produced: u64,
    response: Option<&mut kafka_protocol::messages::ResponseKind>,
    busy: std::time::Duration,
) -> u64 {
    use kafka_protocol::messages::ApiKey;
    if !broker.quotas.any() {
        return 0;
    }
    let exempt = matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    );
    let usage = crate::quota::Usage {
        produced_bytes: produced,
        fetched_bytes: fetched_bytes(response.as_deref()),
        handling_ns: (!exempt).then(|| u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX)),
    };
    let throttles = broker.quotas.record(
        principal,
        client_id,
        usage,
        u64::try_from(crate::wall_clock::now_ms()).unwrap_or(0),
    );
    let mut longest = 0;
    for (key, ms) in throttles {
        crate::metrics::quota_throttled(key.kind(), ms);
        tracing::debug!(
            principal,
            client_id,
            quota = key.name(),
            throttle_ms = ms,
            "client over its quota: throttled"
        );
        longest = longest.max(ms);
    }
    if longest > 0 {
        if let Some(response) = response {
            set_throttle_time(response, i32::try_from(longest).unwrap_or(i32::MAX));
        }
    }
    longest
}
