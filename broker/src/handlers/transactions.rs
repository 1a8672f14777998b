//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions and
//! ListTransactions: protocol glue around the transaction coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;

use super::{code, str_bytes, topic_name};
use crate::broker::Broker;
use crate::transactions::{self, PendingOffset, TxnContext, TxnState};

/// AddPartitionsToTxn v0-3: one transaction per request. Unknown partitions fail the request
/// and the others are answered OPERATION_NOT_ATTEMPTED, as Kafka does.
pub async fn add_partitions(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let topics = &request.v3_and_below_topics;
    let unknown = |topic: &str, partition: i32| {
        broker
            .topics
            .get(topic)
            .and_then(|t| t.partition(partition))
            .is_none()
    };
    let any_unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| unknown(t.name.as_str(), *p)));
    let outcome = if any_unknown {
        Err(ResponseError::OperationNotAttempted)
    } else {
        let partitions: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.as_str().to_string(), *p))
            })
            .collect();
        transactions::add_partitions(
            &TxnContext::of(broker),
            request.v3_and_below_transactional_id.as_str(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &partitions,
        )
        .await
    };
    let results = topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if unknown(t.name.as_str(), *p) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        code(outcome)
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(error)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
pub async fn add_offsets(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let outcome = transactions::add_offsets(
        &TxnContext::of(broker),
        request.transactional_id.as_str(),
        request.producer_id.0,
        request.producer_epoch,
        request.group_id.as_str(),
    )
    .await;
    AddOffsetsToTxnResponse::default().with_error_code(code(outcome))
}

/// TxnOffsetCommit: stages offsets until the transaction ends.
pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.as_str().to_string();
    let offsets: Vec<PendingOffset> = request
        .topics
        .iter()
        .flat_map(|t| {
            let group = group.clone();
            t.partitions.iter().map(move |p| PendingOffset {
                group: group.clone(),
                topic: t.name.as_str().to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str().to_string()),
            })
        })
        .collect();
    let outcome = transactions::stage_offsets(
        &TxnContext::of(broker),
        request.transactional_id.as_str(),
        request.producer_id.0,
        request.producer_epoch,
        offsets,
    )
    .await;
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code(outcome))
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn: commit or abort.
pub async fn end(broker: &Arc<Broker>, request: EndTxnRequest) -> EndTxnResponse {
    let outcome = transactions::end(
        &TxnContext::of(broker),
        request.transactional_id.as_str(),
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
    )
    .await;
    EndTxnResponse::default()
        .with_error_code(code(outcome))
        .with_producer_id(request.producer_id)
        .with_producer_epoch(request.producer_epoch)
}

/// DescribeTransactions: state, producer and partitions of each transactional id.
pub fn describe(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| match broker.transactions.get(id.as_str()) {
            Some(record) => {
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &record.partitions {
                    topics.entry(topic).or_default().push(*partition);
                }
                TransactionState::default()
                    .with_transactional_id(id)
                    .with_transaction_state(str_bytes(record.state.kafka_name()))
                    .with_transaction_timeout_ms(record.timeout_ms)
                    .with_transaction_start_time_ms(record.started_ms)
                    .with_producer_id(ProducerId(record.producer_id))
                    .with_producer_epoch(record.epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                TopicData::default()
                                    .with_topic(topic_name(topic))
                                    .with_partitions(partitions)
                            })
                            .collect(),
                    )
            }
            None => TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(ResponseError::TransactionalIdNotFound.code()),
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions, filtered by state and producer id.
pub fn list(broker: &Broker, request: ListTransactionsRequest) -> ListTransactionsResponse {
    const KNOWN: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];
    let wanted: Vec<&str> = request.state_filters.iter().map(|s| s.as_str()).collect();
    let unknown_filters = request
        .state_filters
        .iter()
        .filter(|f| !KNOWN.iter().any(|k| k.kafka_name() == f.as_str()))
        .cloned()
        .collect();
    let states = broker
        .transactions
        .all()
        .into_iter()
        .filter(|(_, r)| wanted.is_empty() || wanted.contains(&r.state.kafka_name()))
        .filter(|(_, r)| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == r.producer_id)
        })
        .map(|(id, r)| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(str_bytes(id)))
                .with_producer_id(ProducerId(r.producer_id))
                .with_transaction_state(str_bytes(r.state.kafka_name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown_filters)
        .with_transaction_states(states)
}
