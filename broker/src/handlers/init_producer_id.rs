//! InitProducerId for idempotent producers: a fresh producer id at epoch 0 for every call, as
//! Kafka does without a transactional id. Transactional ids are refused until transactions
//! exist.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Broker;

/// Allocates a producer id.
pub fn handle(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(transactional_id) = &request.transactional_id {
        tracing::warn!(transactional_id = %transactional_id.as_str(), "transactions are not supported yet");
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    match broker.producer_ids.next(broker.topics.catalog()) {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
