//! InitProducerId for idempotent producers: a fresh producer id (from blocks the controller
//! reserves durably), or the same id with a bumped epoch when the producer asks for one
//! (KIP-360). Transactional ids are refused: kopd has no transaction coordinator yet.

use std::cell::Cell;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

/// Producer ids a core takes from the controller at once.
const BLOCK: i64 = 1000;

/// A core's current block of producer ids: next to hand out, end (exclusive).
#[derive(Default)]
pub struct ProducerIdBlock {
    next: Cell<i64>,
    end: Cell<i64>,
}

impl ProducerIdBlock {
    async fn take(&self, broker: &Broker) -> Result<i64, ResponseError> {
        if self.next.get() >= self.end.get() {
            let first =
                broker.controller.producer_ids(BLOCK).await.map_err(|_| ResponseError::CoordinatorNotAvailable)?;
            self.next.set(first);
            self.end.set(first + BLOCK);
        }
        let id = self.next.get();
        self.next.set(id + 1);
        Ok(id)
    }
}

pub async fn handle(broker: &Broker, req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let fail = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match req.transactional_id.as_deref().map(|t| t.is_empty()) {
        // Kafka refuses an empty transactional id as a malformed request.
        Some(true) => return fail(ResponseError::InvalidRequest),
        // kopd has no transaction coordinator yet; this error fails transactional clients at once.
        Some(false) => return fail(ResponseError::TransactionalIdAuthorizationFailed),
        None => {}
    }
    // A producer that already has an id asks for the next epoch (after a fatal sequence error).
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match broker.producer_ids.take(broker).await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => fail(e),
    }
}
