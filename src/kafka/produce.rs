//! Produce: validate every batch of a partition, then append them to its managed ledger and
//! answer once they are durable. Partitions of one request are appended concurrently so they
//! share commit windows. Handling is in two halves ([`begin`], then [`InFlight::finish`]): the
//! first assigns offsets and queues the entries, the second awaits durability, so a connection
//! can begin its next produce while this one's entries are being made durable.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::partition::{self, log_error_code};
use crate::broker::Broker;
use crate::log::managed_ledger::{Appending, IncomingBatch, ManagedLedger};
use crate::log::record_batch::{self, ValidationLimits};

/// One partition of a produce once its first half is done.
enum Started {
    Answered(PartitionProduceResponse),
    /// Offsets assigned, entry queued: `resp` is completed once it is durable.
    Appending {
        resp: PartitionProduceResponse,
        log: std::rc::Rc<ManagedLedger>,
        appending: Appending,
        /// The batch's bytes and records, counted in once stored.
        size: (usize, u64),
    },
}

impl Started {
    async fn finish(self) -> PartitionProduceResponse {
        match self {
            Started::Answered(r) => r,
            Started::Appending { resp, log, appending, size } => match appending.await {
                Ok(r) => {
                    log.traffic.appended(size.0, size.1);
                    resp.with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time)
                        .with_log_start_offset(r.log_start_offset)
                }
                Err(e) => with_log_start(refused(&resp, log_error_code(&e), Some(e.to_string())), &log),
            },
        }
    }
}

fn refused(resp: &PartitionProduceResponse, e: ResponseError, msg: Option<String>) -> PartitionProduceResponse {
    resp.clone().with_error_code(e.code()).with_error_message(msg.map(StrBytes::from_string))
}

/// Past the point a partition's log is involved, Kafka reports its log start offset with most
/// errors; not with corruption, size or storage errors (its append path answers those without).
fn with_log_start(r: PartitionProduceResponse, log: &ManagedLedger) -> PartitionProduceResponse {
    let bare = [ResponseError::CorruptMessage, ResponseError::MessageTooLarge, ResponseError::KafkaStorageError]
        .iter()
        .any(|e| e.code() == r.error_code);
    if bare { r } else { r.with_log_start_offset(log.log_start_offset()) }
}

/// What every partition of one produce request shares.
#[derive(Clone, Copy)]
struct RequestContext {
    version: i16,
    /// How long to wait for a partition this core is about to own.
    lease_wait: std::time::Duration,
    /// Size of the buffer the request's bytes are slices of.
    allocation: usize,
}

async fn start_partition(
    broker: &Broker,
    ctx: RequestContext,
    topic: Option<std::sync::Arc<crate::meta::catalog::TopicEntry>>,
    index: i32,
    records: Option<bytes::Bytes>,
    topic_err: Option<ResponseError>,
) -> Started {
    let RequestContext { version, lease_wait, allocation } = ctx;
    let resp = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    let fail = |e: ResponseError, msg: Option<String>| Started::Answered(refused(&resp, e, msg));
    let topic = match (topic, topic_err) {
        (Some(t), None) => t,
        (_, e) => return fail(e.unwrap_or(ResponseError::UnknownTopicOrPartition), None),
    };
    let owner = match partition::owned_soon(broker, &topic, index, lease_wait).await {
        Ok(o) => o,
        Err(e) => {
            let leader =
                topic.partitions.get(index as usize).and_then(|o| broker.leader_hint(o)).map(|(id, epoch)| {
                    LeaderIdAndEpoch::default().with_leader_id(BrokerId(id)).with_leader_epoch(epoch)
                });
            let mut r = refused(&resp, e, None);
            // current_leader (KIP-951) exists from v10.
            if let Some(l) = leader.filter(|_| version >= 10) {
                r = r.with_current_leader(l);
            }
            return Started::Answered(r);
        }
    };
    // Kafka leaves such a request unanswered; a clear refusal serves the client better.
    let Some(records) = records else {
        return fail(ResponseError::InvalidRecord, Some("no records".into()));
    };
    let max_message_bytes = topic
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| broker.logs.default_max_message_bytes()) as usize;
    let limits = ValidationLimits { max_message_bytes, ..ValidationLimits::default() };
    let batch_error = |e: record_batch::BatchError| {
        let code = ResponseError::try_from_code(e.kafka_code()).unwrap_or(ResponseError::CorruptMessage);
        refused(&resp, code, Some(e.to_string()))
    };
    // Checks Kafka makes before the log is involved: answered without the log start offset.
    let mut batches = match record_batch::split_batches(records) {
        Ok(b) => b,
        Err(e) => return Started::Answered(batch_error(e)),
    };
    if batches.iter().any(|b| record_batch::is_transactional(b)) {
        // kopd has no transaction coordinator yet: no producer can hold a transactional id.
        return fail(
            ResponseError::TransactionalIdAuthorizationFailed,
            Some("kopd does not support transactions yet".into()),
        );
    }
    // Produce v3+ carries exactly one batch per partition, as Kafka requires.
    let (Some(batch), true) = (batches.pop(), batches.is_empty()) else {
        let what = if batches.is_empty() { "at least" } else { "exactly" };
        return fail(
            ResponseError::InvalidRecord,
            Some(format!("Produce requests with version {version} must have {what} one record batch per partition")),
        );
    };
    // The magic byte sits at offset 16 in every message format.
    if batch.get(16).is_some_and(|m| *m != 2) {
        return fail(
            ResponseError::InvalidRecord,
            Some(format!(
                "Produce requests with version {version} are only allowed to contain record batches with magic version 2"
            )),
        );
    }
    let log = match broker.logs.get(&topic, index).await {
        Ok(l) => l,
        Err(e) => return fail(log_error_code(&e), Some(e.to_string())),
    };
    let validated = match record_batch::validate(&batch, &limits) {
        Ok(v) => v,
        Err(e) => return Started::Answered(with_log_start(batch_error(e), &log)),
    };
    // A batch large enough next to the buffer it arrived in keeps its records there (no copy):
    // what the tail cache then keeps alive is at most MAX_PIN_RATIO times what it counts.
    let incoming = if batch.len().saturating_mul(MAX_PIN_RATIO) >= allocation {
        IncomingBatch::Share(&batch)
    } else {
        IncomingBatch::Copy(&batch)
    };
    match log.begin_append(incoming, &validated, owner.epoch).await {
        Ok(appending) => {
            let size = (batch.len(), validated.header.records_count.max(0) as u64);
            Started::Appending { resp, log, appending, size }
        }
        Err(e) => Started::Answered(with_log_start(refused(&resp, log_error_code(&e), Some(e.to_string())), &log)),
    }
}

pub async fn handle(broker: &Broker, req: ProduceRequest, version: i16) -> ProduceResponse {
    // Not a slice of a known buffer: every batch is copied.
    begin(broker, req, version, usize::MAX).await.finish(broker).await
}

/// A batch is stored without copying its records when the buffer its request arrived in is at
/// most this many times its size: the entry (until stored) and the tail cache (until evicted)
/// then keep that buffer alive, and the tail cache's budget counts only the batch. Frames are
/// read into buffers of 64 KiB and more, so only batches of 16 KiB and more qualify.
const MAX_PIN_RATIO: usize = 4;

/// A produce whose entries are queued, awaiting durability.
pub struct InFlight {
    /// Per topic of the request: name, id, partition count (in `started`'s order).
    topics: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, usize)>,
    started: Vec<Started>,
    version: i16,
    /// When every partition's entry was queued (the persist stage starts).
    queued: std::time::Instant,
}

/// The first half of a produce: every partition's batch validated, given its offsets and
/// queued in its log (or answered already). `allocation` is the size of the buffer the
/// request's bytes are slices of (`usize::MAX` if unknown): it decides which batches are
/// stored without a copy of their records (see [`MAX_PIN_RATIO`]).
pub async fn begin(broker: &Broker, mut req: ProduceRequest, version: i16, allocation: usize) -> InFlight {
    let began = std::time::Instant::now();
    let catalog = broker.catalog();
    // A partition named twice is produced to once, with the last data given.
    partition::keep_last_of_each(
        &mut req.topic_data,
        |t| &mut t.partition_data,
        |t, p| (t.name.clone(), t.topic_id, p.index),
    );
    let valid_acks = matches!(req.acks, -1..=1);
    let lease_wait = broker.config.cluster.as_ref().map_or(std::time::Duration::ZERO, |c| {
        c.lease_wait.min(std::time::Duration::from_millis(req.timeout_ms.max(0) as u64))
    });
    let resolve = |catalog: &crate::meta::catalog::Catalog,
                   td: &kafka_protocol::messages::produce_request::TopicProduceData| {
        partition::topic(broker, catalog, (version < 13).then(|| td.name.as_str()), td.topic_id)
    };
    let mut resolved: Vec<_> = req.topic_data.iter().map(|td| resolve(&catalog, td)).collect();
    // A topic this node's catalog replica does not know may only be new (created through
    // another node a moment ago, and a producer told of it there): in a cluster the replica is
    // compared with the store once before the request is refused.
    let unknown = |r: &Result<_, ResponseError>| {
        matches!(r, Err(ResponseError::UnknownTopicOrPartition | ResponseError::UnknownTopicId))
    };
    if !lease_wait.is_zero() && resolved.iter().any(unknown) {
        crate::runtime::timeout(lease_wait, broker.controller.catch_up()).await;
        let catalog = broker.catalog();
        for (r, td) in resolved.iter_mut().zip(&req.topic_data) {
            if unknown(r) {
                *r = resolve(&catalog, td);
            }
        }
    }
    let ctx = RequestContext { version, lease_wait, allocation };
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut futures = Vec::new();
    for (td, resolved) in req.topic_data.into_iter().zip(resolved) {
        let (topic, err) = match resolved {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        };
        let err = if valid_acks { err } else { Some(ResponseError::InvalidRequiredAcks) };
        // Copied: the request's bytes are a slice of the connection's read buffer, which an
        // answer awaiting durability should not keep from being reused.
        let name = kafka_protocol::messages::TopicName(StrBytes::from_string(td.name.as_str().to_string()));
        topics.push((name, td.topic_id, td.partition_data.len()));
        for pd in td.partition_data {
            futures.push(start_partition(broker, ctx, topic.clone(), pd.index, pd.records, err));
        }
    }
    let started = futures_util::future::join_all(futures).await;
    let queued = std::time::Instant::now();
    crate::metrics::with(|m| m.produce_validate.record_duration(queued - began));
    InFlight { topics, started, version, queued }
}

impl InFlight {
    /// The second half: the answer once every queued entry is durable (or failed).
    pub async fn finish(self, broker: &Broker) -> ProduceResponse {
        let InFlight { topics, started, version, queued } = self;
        let results = futures_util::future::join_all(started.into_iter().map(Started::finish)).await;
        crate::metrics::with(|m| {
            m.produce_persist.record_duration(queued.elapsed());
            results.iter().for_each(|r| m.error(ApiKey::Produce as i16, r.error_code));
        });
        respond(broker, topics, results, version)
    }
}

fn respond(
    broker: &Broker,
    topics: Vec<(kafka_protocol::messages::TopicName, uuid::Uuid, usize)>,
    results: Vec<PartitionProduceResponse>,
    version: i16,
) -> ProduceResponse {
    let mut results = results.into_iter();
    let mut not_leader = false;
    let responses = topics
        .into_iter()
        .map(|(name, id, n)| {
            let partition_responses: Vec<_> = results.by_ref().take(n).collect();
            not_leader |= partition_responses.iter().any(|p| p.error_code == ResponseError::NotLeaderOrFollower.code());
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    let mut resp = ProduceResponse::default().with_responses(responses);
    // KIP-951: point a misdirected producer straight at the leaders.
    if not_leader && version >= 10 {
        resp = resp.with_node_endpoints(
            super::metadata::brokers(broker)
                .into_iter()
                .map(|(id, host, port)| {
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        );
    }
    resp
}
