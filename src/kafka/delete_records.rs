//! DeleteRecords: moves a partition's log start offset; whole ledgers below it are deleted.

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::partition;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let catalog = broker.catalog();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = partition::topic(broker, &catalog, Some(t.name.as_str()), uuid::Uuid::nil());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let result = async {
                let topic = topic.as_ref().map_err(|e| *e)?;
                partition::owned(broker, topic, p.partition_index)?;
                let log = broker.logs.get(topic, p.partition_index).await.map_err(|e| partition::log_error_code(&e))?;
                log.delete_records_before(p.offset).await.map_err(|e| partition::log_error_code(&e))
            }
            .await;
            let base = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(match result {
                Ok(low) => base.with_low_watermark(low),
                Err(e) => base.with_low_watermark(-1).with_error_code(e.code()),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
