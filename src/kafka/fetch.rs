//! Fetch: a non-durable cursor per requested partition reads stored batches forward from the
//! fetch offset (tail cache first, else the ledger store) and returns their bytes unchanged.
//! When fewer than `min_bytes` are available the request waits, woken by appends, at most
//! `max_wait_ms`.
//!
//! Fetch sessions (KIP-227) are declined: every response carries session id 0, which clients
//! take as "no session" and keep sending full fetch requests.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, LeaderIdAndEpoch, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::partition;
use super::splice::Splices;
use crate::broker::Broker;
use crate::log::managed_ledger::ManagedLedger;
use crate::meta::catalog::TopicEntry;
use crate::runtime;

/// Batch reads of one partition in flight at once.
const READS_IN_FLIGHT: usize = 16;

/// One requested partition, resolved once per request.
struct Target {
    topic_index: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    log: Result<Rc<ManagedLedger>, ResponseError>,
    leader: Option<(i32, i32)>,
}

/// A read position in a partition's log that lives only as long as the request.
struct NonDurableCursor<'a> {
    log: &'a ManagedLedger,
    next_offset: i64,
}

impl NonDurableCursor<'_> {
    /// Reads whole batches until `budget` bytes would be exceeded; the first batch is returned
    /// even when larger (`allow_oversize`), so a consumer can always make progress. The batches
    /// are picked from the offset index first (it knows their sizes), then read up to
    /// `READS_IN_FLIGHT` at a time: reads that miss the tail cache go to the disk concurrently.
    async fn read(
        &mut self,
        budget: usize,
        allow_oversize: bool,
        out: &mut Vec<Bytes>,
    ) -> Result<(usize, u64), ResponseError> {
        let entries = self.log.entries_from(self.next_offset, budget, allow_oversize);
        let (mut total, mut records) = (0, 0);
        for chunk in entries.chunks(READS_IN_FLIGHT) {
            let reads = futures_util::future::join_all(chunk.iter().map(|e| self.log.read_batch(e))).await;
            for (e, r) in chunk.iter().zip(reads) {
                let batch = r.map_err(|err| partition::log_error_code(&err))?;
                total += batch.len();
                records += (e.last_offset - e.base_offset + 1).max(0) as u64;
                // A batch kept in two pieces goes out as two slices, back to back.
                out.extend(batch.pieces().cloned());
                self.next_offset = e.last_offset + 1;
            }
        }
        Ok((total, records))
    }
}

async fn resolve(
    broker: &Broker,
    topic: &Arc<TopicEntry>,
    partition: i32,
    client_epoch: i32,
) -> (Result<Rc<ManagedLedger>, ResponseError>, Option<(i32, i32)>) {
    let leader = topic.partitions.get(partition as usize).and_then(|o| broker.leader_hint(o));
    if let Err(e) =
        partition::owned(broker, topic, partition).and_then(|o| partition::check_leader_epoch(&o, client_epoch))
    {
        return (Err(e), leader);
    }
    (broker.logs.get(topic, partition).await.map_err(|e| partition::log_error_code(&e)), leader)
}

/// The response and, when `splice` is on, the batches its records placeholders stand for
/// (encode it through [`super::splice::SplicingBuf`]); with `splice` off records are joined.
pub async fn handle(broker: &Broker, mut req: FetchRequest, version: i16, splice: bool) -> (FetchResponse, Splices) {
    if req.session_id != 0 {
        let resp = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return (resp, Splices::default());
    }
    let catalog = broker.catalog();
    // A partition named twice is fetched once, as its last entry asks.
    partition::keep_last_of_each(
        &mut req.topics,
        |t| &mut t.partitions,
        |t, p| (t.topic.clone(), t.topic_id, p.partition),
    );
    let mut targets = Vec::new();
    let mut topic_meta = Vec::new();
    for (ti, ft) in req.topics.iter().enumerate() {
        let topic = partition::topic(broker, &catalog, (version < 13).then(|| ft.topic.as_str()), ft.topic_id);
        topic_meta.push((ft.topic.clone(), ft.topic_id));
        for fp in &ft.partitions {
            let (log, leader) = match &topic {
                Ok(t) => resolve(broker, t, fp.partition, fp.current_leader_epoch).await,
                Err(e) => (Err(*e), None),
            };
            targets.push(Target {
                topic_index: ti,
                partition: fp.partition,
                fetch_offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes.max(0) as usize,
                log,
                leader,
            });
        }
    }

    // Kafka caps a response at the broker's fetch.max.bytes whatever the client asks; kopd also
    // answers with less while its core holds many unsent responses (at least one batch is
    // always returned, so consumers still make progress).
    let max_bytes =
        (req.max_bytes.max(0) as usize).min(broker.config.fetch_max_bytes).min(broker.responses.available());
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let read_committed = req.isolation_level == 1;
    let waiting = Instant::now();
    let (mut datas, splices, counts) = loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let listeners: Vec<_> = targets.iter().filter_map(|t| t.log.as_ref().ok()).map(|l| l.listen()).collect();
        let (datas, total, splices, counts) = read_all(&targets, max_bytes, splice).await;
        let now = Instant::now();
        let errors = datas.iter().any(|d| d.error_code != 0);
        if total >= min_bytes || errors || now >= deadline || listeners.is_empty() || broker.shutdown.is_triggered() {
            break (datas, splices, counts);
        }
        let any = futures_util::future::select_all(listeners.into_iter().map(Box::pin));
        runtime::timeout(
            deadline - now,
            futures_lite::future::or(
                async {
                    any.await;
                },
                broker.shutdown.wait(),
            ),
        )
        .await;
    };

    crate::metrics::with(|m| {
        if req.max_wait_ms > 0 && min_bytes > 0 {
            m.fetch_wait.record_duration(waiting.elapsed());
        }
        datas.iter().for_each(|d| m.error(kafka_protocol::messages::ApiKey::Fetch as i16, d.error_code));
    });
    for (t, (bytes, records)) in targets.iter().zip(counts) {
        if let Ok(log) = &t.log {
            log.traffic.fetched(bytes, records);
        }
    }
    let mut responses: Vec<FetchableTopicResponse> = topic_meta
        .into_iter()
        .map(|(name, id)| FetchableTopicResponse::default().with_topic(name).with_topic_id(id))
        .collect();
    for (t, d) in targets.iter().zip(datas.drain(..)) {
        let mut d = d;
        // Kafka sends null under read_uncommitted and a (here always empty) list under read_committed.
        d = d.with_aborted_transactions(read_committed.then(Vec::new));
        // current_leader (KIP-951) exists from v12.
        if version >= 12
            && d.error_code == ResponseError::NotLeaderOrFollower.code()
            && let Some((leader, epoch)) = t.leader
        {
            {
                d = d.with_current_leader(
                    LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                );
            }
        }
        responses[t.topic_index].partitions.push(d);
    }
    (FetchResponse::default().with_session_id(0).with_responses(responses), splices)
}

/// One read pass over every target, within the request's byte budget.
/// Also each target's (bytes, records) read.
async fn read_all(
    targets: &[Target],
    max_bytes: usize,
    splice: bool,
) -> (Vec<PartitionData>, usize, Splices, Vec<(usize, u64)>) {
    let mut splices = Splices::new(splice);
    let mut counts = vec![(0, 0); targets.len()];
    let mut budget = max_bytes;
    let mut total = 0;
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let base = PartitionData::default()
            .with_partition_index(t.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1));
        let log = match &t.log {
            Ok(l) => l,
            Err(e) => {
                out.push(base.with_error_code(e.code()).with_records(Some(Bytes::new())));
                continue;
            }
        };
        let (hwm, start) = (log.high_watermark(), log.log_start_offset());
        if t.fetch_offset < start || t.fetch_offset > hwm {
            // Kafka answers an out-of-range fetch without the partition's offsets.
            out.push(base.with_error_code(ResponseError::OffsetOutOfRange.code()).with_records(Some(Bytes::new())));
            continue;
        }
        let base = base.with_high_watermark(hwm).with_last_stable_offset(hwm).with_log_start_offset(start);
        let mut batches = Vec::new();
        let mut cursor = NonDurableCursor { log, next_offset: t.fetch_offset };
        let limit = t.max_bytes.min(budget);
        match cursor.read(limit, total == 0, &mut batches).await {
            Ok((n, records)) => {
                counts[i] = (n, records);
                total += n;
                budget = budget.saturating_sub(n);
                out.push(base.with_records(Some(splices.records(batches, n))));
            }
            Err(e) => out.push(base.with_error_code(e.code()).with_records(Some(Bytes::new()))),
        }
    }
    (out, total, splices, counts)
}
