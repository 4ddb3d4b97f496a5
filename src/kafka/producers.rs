//! DescribeProducers (`kafka-transactions.sh describe-producers`): the idempotent producers a
//! partition remembers, with the last batch each wrote. kopd has no transactions yet, so no
//! producer has a coordinator epoch or an open transaction.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;

use super::partition;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let catalog = broker.catalog();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = partition::topic(broker, &catalog, Some(t.name.as_str()), uuid::Uuid::nil());
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let result = async {
                let topic = topic.as_ref().map_err(|e| *e)?;
                partition::owned(broker, topic, index)?;
                let log = broker.logs.get(topic, index).await.map_err(|e| partition::log_error_code(&e))?;
                Ok::<_, ResponseError>(log.active_producers())
            }
            .await;
            let base = PartitionResponse::default().with_partition_index(index);
            partitions.push(match result {
                Ok(producers) => base.with_active_producers(
                    producers
                        .into_iter()
                        .map(|(pid, epoch, last)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(pid))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last.last_seq)
                                .with_last_timestamp(last.max_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect(),
                ),
                // Kafka explains a topic it does not know, not a partition it lacks.
                Err(e) if topic.is_err() => base.with_error_code(e.code()).with_error_message(Some(
                    StrBytes::from_static_str("This server does not host this topic-partition."),
                )),
                Err(e) => base.with_error_code(e.code()),
            });
        }
        topics.push(TopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    DescribeProducersResponse::default().with_topics(topics)
}
