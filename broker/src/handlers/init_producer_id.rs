//! InitProducerId: a fresh producer id at epoch 0 for an idempotent producer (as Kafka does
//! without a transactional id); for a transactional id, the coordinator binds a producer id and
//! bumps its epoch, fencing older producers.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::transactions;

/// Allocates or re-initializes a producer id.
pub async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let outcome = match &request.transactional_id {
        Some(transactional_id) => {
            let expected = (request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            transactions::init_producer_id(
                &transactions::TxnContext::of(broker),
                transactional_id.as_str(),
                request.transaction_timeout_ms,
                expected,
            )
            .await
        }
        None => broker
            .producer_ids
            .next(broker.topics.catalog())
            .map(|id| (id, 0))
            .map_err(|error| {
                tracing::error!(%error, "cannot allocate a producer id");
                ResponseError::CoordinatorNotAvailable
            }),
    };
    match outcome {
        Ok((id, epoch)) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(error) => response.with_error_code(error.code()),
    }
}
