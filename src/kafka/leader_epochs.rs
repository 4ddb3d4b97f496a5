//! OffsetForLeaderEpoch: where a leader epoch ended in a partition's log. Consumers ask after a
//! leader change (KIP-320) to learn whether the log they were reading was truncated under them;
//! kopd never truncates acknowledged data (a new owner continues the same managed ledger), so
//! the answer only ever confirms what the consumer read.

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::partition;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let catalog = broker.catalog();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = partition::topic(broker, &catalog, Some(t.topic.as_str()), uuid::Uuid::nil());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let result = async {
                let topic = topic.as_ref().map_err(|e| *e)?;
                let owner = partition::owned(broker, topic, p.partition)?;
                partition::check_leader_epoch(&owner, p.current_leader_epoch)?;
                let log = broker.logs.get(topic, p.partition).await.map_err(|e| partition::log_error_code(&e))?;
                log.end_offset_for_epoch(p.leader_epoch, owner.epoch).await.map_err(|e| partition::log_error_code(&e))
            }
            .await;
            // Kafka's defaults: no epoch, no offset (also for an epoch it does not know).
            let base = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
            partitions.push(match result {
                Ok(Some((epoch, end))) => base.with_leader_epoch(epoch).with_end_offset(end),
                Ok(None) => base,
                Err(e) => base.with_error_code(e.code()),
            });
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions));
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
