//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3) and by timestamp, from the
//! offset and time index; the exact record is found by reading the one batch the index names.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::partition;
use crate::broker::Broker;
use crate::log::managed_ledger::ManagedLedger;
use crate::log::offset_index::IndexEntry;
use crate::log::record_batch;

/// Bound on a stored batch's decompressed size when searching it (as validation bounds it).
const MAX_UNCOMPRESSED: usize = 64 << 20;
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) of the first record in `e`'s batch matching `pick`.
async fn find_record(
    log: &ManagedLedger,
    e: &IndexEntry,
    pick: impl Fn(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, ResponseError> {
    let batch = log.read_batch(e).await.map_err(|err| partition::log_error_code(&err))?.contiguous();
    let header = record_batch::parse_header(&batch).map_err(|_| ResponseError::KafkaStorageError)?;
    let log_append_time = header.attributes & 0x08 != 0;
    let records = record_batch::records(&batch, MAX_UNCOMPRESSED).map_err(|_| ResponseError::KafkaStorageError)?;
    Ok(records.iter().find_map(|r| {
        let ts = if log_append_time { header.max_timestamp } else { r.timestamp };
        pick(r.offset, ts).then_some((r.offset, ts))
    }))
}

async fn lookup(log: &ManagedLedger, timestamp: i64) -> Result<(i64, i64), ResponseError> {
    match timestamp {
        LATEST => Ok((log.high_watermark(), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((log.log_start_offset(), -1)),
        LATEST_TIERED => Ok((-1, -1)),
        MAX_TIMESTAMP => match log.entry_with_max_timestamp() {
            None => Ok((-1, -1)),
            Some(e) => {
                let start = log.log_start_offset();
                let found = find_record(log, &e, |offset, ts| offset >= start && ts == e.max_timestamp).await?;
                Ok(found.unwrap_or((-1, -1)))
            }
        },
        ts if ts >= 0 => {
            // Records below the log start offset are deleted, whatever the index still holds.
            let start = log.log_start_offset();
            let Some(mut e) = log.entry_for_timestamp(ts) else { return Ok((-1, -1)) };
            if e.last_offset < start {
                match log.entry_from(start) {
                    Some(next) => e = next,
                    None => return Ok((-1, -1)),
                }
            }
            // The index names the first batch whose running maximum reaches `ts`; its records
            // may still all be older (timestamps need not grow), so keep walking forward.
            loop {
                if let Some(found) = find_record(log, &e, |offset, t| offset >= start && t >= ts).await? {
                    return Ok(found);
                }
                match log.entry_from(e.last_offset + 1) {
                    Some(next) => e = next,
                    None => return Ok((-1, -1)),
                }
            }
        }
        _ => Err(ResponseError::UnsupportedVersion),
    }
}

/// Whether a special (negative) timestamp exists at this request version, as Kafka has them:
/// -1 and -2 always, -3 (max timestamp) from v7, -4 (earliest local) from v8, -5 (latest
/// tiered) from v9. Any other negative timestamp is UNSUPPORTED_VERSION.
fn special_supported(timestamp: i64, version: i16) -> bool {
    match timestamp {
        LATEST | EARLIEST => true,
        MAX_TIMESTAMP => version >= 7,
        EARLIEST_LOCAL => version >= 8,
        LATEST_TIERED => version >= 9,
        _ => false,
    }
}

pub async fn handle(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let catalog = broker.catalog();
    let mut topics = Vec::with_capacity(req.topics.len());
    // A partition asked for twice is answered once, with INVALID_REQUEST (Kafka's rule).
    let mut count = std::collections::HashMap::new();
    for t in &req.topics {
        for p in &t.partitions {
            *count.entry((t.name.clone(), p.partition_index)).or_insert(0) += 1;
        }
    }
    for t in req.topics {
        let topic = partition::topic(broker, &catalog, Some(t.name.as_str()), uuid::Uuid::nil());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            // Taken out when answered: a later entry for the same partition finds nothing.
            let Some(named) = count.remove(&(t.name.clone(), p.partition_index)) else {
                continue;
            };
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(-1)
                .with_timestamp(-1);
            if named > 1 {
                partitions.push(base.with_error_code(ResponseError::InvalidRequest.code()));
                continue;
            }
            let result = async {
                if p.timestamp < 0 && !special_supported(p.timestamp, version) {
                    return Err(ResponseError::UnsupportedVersion);
                }
                let topic = topic.as_ref().map_err(|e| *e)?;
                let owner = partition::owned(broker, topic, p.partition_index)?;
                partition::check_leader_epoch(&owner, p.current_leader_epoch)?;
                let log = broker.logs.get(topic, p.partition_index).await.map_err(|e| partition::log_error_code(&e))?;
                let (offset, ts) = lookup(&log, p.timestamp).await?;
                Ok::<_, ResponseError>((offset, ts, owner.epoch))
            }
            .await;
            partitions.push(match result {
                // The leader epoch field exists from v4.
                Ok((offset, ts, epoch)) => {
                    // No offset found (latest tiered, without tiered storage): no epoch either.
                    let epoch = if version >= 4 && offset >= 0 { epoch } else { -1 };
                    base.with_offset(offset).with_timestamp(ts).with_leader_epoch(epoch)
                }
                Err(e) => base.with_error_code(e.code()),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
