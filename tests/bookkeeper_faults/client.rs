//! The fault tests' Kafka clients, over the raw protocol: an idempotent acks=all producer
//! that rides out server restarts and refusals, a reader, and the check that what a
//! partition holds is every acknowledged batch exactly once, in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, InitProducerIdRequest, ProduceRequest};
use kafka_protocol::records::RecordBatchDecoder;

use crate::common::{Conn, RECORDS, batch_value, idempotent_batch, name};

/// A produce request not answered within this counts as lost; the connection is dropped
/// and the batch resent (the producer id and sequence make the resend harmless).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The producer gives up when no batch has been acknowledged for this long.
const STALL_LIMIT: Duration = Duration::from_secs(90);
/// Kafka errors that a correct broker never sends this producer: it numbers its batches
/// correctly and keeps one producer id. Anything else is retried.
const FATAL: [(i16, &str); 6] = [
    (2, "CORRUPT_MESSAGE"),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER"),
    (46, "DUPLICATE_SEQUENCE_NUMBER"),
    (47, "INVALID_PRODUCER_EPOCH"),
    (59, "UNKNOWN_PRODUCER_ID"),
    (87, "INVALID_RECORD"),
];

/// A batch the server acknowledged: its number and the base offset it was given.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub batch: usize,
    pub base: i64,
    pub at: Instant,
}

/// One produce request's fate: the Kafka error code, or `None` when no answer came (the
/// connection broke or timed out).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub sent: Instant,
    pub at: Instant,
    pub code: Option<i16>,
}

#[derive(Default)]
pub struct Progress {
    pub acks: Vec<Ack>,
    pub answers: Vec<Answer>,
    pub fatal: Option<String>,
}

struct Shared {
    progress: Mutex<Progress>,
    stop: AtomicBool,
}

/// An idempotent producer (producer id from InitProducerId, sequence numbers) sending batch
/// after batch of [`idempotent_batch`] with acks=all, one request at a time. A batch is
/// resent until it is acknowledged, so batches are stored in order and a resend of a stored
/// batch is answered as a duplicate rather than stored twice.
pub struct Producer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    pub fn start(addr: SocketAddr, topic: &str) -> Producer {
        let shared = Arc::new(Shared { progress: Mutex::default(), stop: AtomicBool::new(false) });
        let (s, topic) = (shared.clone(), topic.to_string());
        let thread = std::thread::Builder::new()
            .name("faults-producer".into())
            .spawn(move || run(addr, &topic, &s))
            .expect("spawn the producer");
        Producer { shared, thread: Some(thread) }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Progress) -> T) -> T {
        f(&self.shared.progress.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn acked(&self) -> usize {
        self.with(|p| p.acks.len())
    }

    /// Waits (at most `limit`) until `n` batches are acknowledged; false if they were not
    /// or the producer gave up.
    pub fn wait_acks(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let (acked, fatal) = self.with(|p| (p.acks.len(), p.fatal.clone()));
            if let Some(f) = fatal {
                panic!("the producer gave up: {f}");
            }
            if acked >= n {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops after the request in flight and returns everything that happened.
    pub fn finish(mut self) -> Progress {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("producer thread");
        }
        let p = std::mem::take(&mut *self.shared.progress.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(f) = &p.fatal {
            panic!("the producer gave up: {f}");
        }
        p
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn run(addr: SocketAddr, topic: &str, shared: &Shared) {
    let fail = |why: String| shared.progress.lock().unwrap_or_else(|e| e.into_inner()).fatal = Some(why);
    let mut conn: Option<Conn> = None;
    let mut producer: Option<(i64, i16)> = None;
    let mut batch = 0usize;
    let mut last_ack = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if last_ack.elapsed() > STALL_LIMIT {
            return fail(format!("batch {batch} not acknowledged within {STALL_LIMIT:?}"));
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::try_connect(addr, REQUEST_TIMEOUT) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let Some((pid, epoch)) = producer else {
            let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
            match c.send(4, &req) {
                Ok(r) if r.error_code == 0 => producer = Some((r.producer_id.0, r.producer_epoch)),
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => conn = None,
            }
            continue;
        };
        let sent = Instant::now();
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(idempotent_batch(pid, epoch, 0, batch))),
            ]),
        ]);
        let outcome = c.send(9, &req).map(|r| {
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        });
        let at = Instant::now();
        let code = outcome.as_ref().ok().map(|o| o.0);
        let mut progress = shared.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.answers.push(Answer { sent, at, code });
        match outcome {
            Ok((0, base)) => {
                progress.acks.push(Ack { batch, base, at });
                batch += 1;
                last_ack = at;
            }
            Ok((code, _)) => {
                if let Some((_, what)) = FATAL.iter().find(|f| f.0 == code) {
                    progress.fatal = Some(format!("batch {batch}: {what} ({code})"));
                    return;
                }
                drop(progress);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                drop(progress);
                conn = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Every record of partition 0 from offset 0 to the high watermark, as (offset, value); an
/// error for any failed fetch.
pub fn try_read_all(c: &mut Conn, topic: &str) -> Result<Vec<(i64, Bytes)>, String> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let part =
            FetchPartition::default().with_partition(0).with_fetch_offset(next).with_partition_max_bytes(1 << 20);
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![part])]);
        let resp = c.send(12, &req).map_err(|e| format!("fetch at {next}: {e}"))?;
        let p = &resp.responses[0].partitions[0];
        if p.error_code != 0 {
            return Err(format!("fetch at {next}: error {}", p.error_code));
        }
        let mut buf = p.records.clone().unwrap_or_default();
        if buf.is_empty() {
            if next < p.high_watermark {
                return Err(format!("fetch at {next} returned nothing below the high watermark {}", p.high_watermark));
            }
            return Ok(out);
        }
        while !buf.is_empty() {
            let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| format!("batch after {next}: {e}"))?;
            for r in set.records {
                out.push((r.offset, r.value.clone().unwrap_or_default()));
                next = r.offset + 1;
            }
        }
    }
}

/// What a partition holds, checked: offsets contiguous from 0, each record a value of
/// [`batch_value`], the producer's batches whole, each once and in order.
pub struct Stored {
    /// Base offset of each stored batch, by batch number (0, 1, 2, ...).
    pub bases: Vec<i64>,
}

pub fn check_stored(records: &[(i64, Bytes)]) -> Result<Stored, String> {
    let mut bases = Vec::new();
    for (n, (offset, value)) in records.iter().enumerate() {
        if *offset != n as i64 {
            return Err(format!("offset {offset} at position {n}: offsets are not contiguous from 0"));
        }
        let (b, i) = parse_value(value).ok_or_else(|| format!("offset {offset}: not a value of the producer"))?;
        if *value != batch_value(b, i) {
            return Err(format!("offset {offset}: batch {b} record {i} has the wrong bytes"));
        }
        // Batch after batch, each whole: record i of batch b is the i-th after its base.
        let expected = if n % RECORDS == 0 { (bases.len(), 0) } else { (bases.len().saturating_sub(1), n % RECORDS) };
        if (b, i) != expected {
            return Err(format!(
                "offset {offset} holds batch {b} record {i}, expected batch {} record {}: a duplicate, a gap or a reordering",
                expected.0, expected.1
            ));
        }
        if i == 0 {
            bases.push(*offset);
        }
    }
    if !records.len().is_multiple_of(RECORDS) {
        return Err(format!("{} records: the last batch is not whole", records.len()));
    }
    Ok(Stored { bases })
}

/// Reads the partition back and checks it holds every acknowledged batch exactly once, in
/// order, at the offset its acknowledgement named; beyond them at most the one batch that
/// was in flight when the producer stopped. Returns the number of stored batches.
pub fn verify(c: &mut Conn, topic: &str, acks: &[Ack]) -> usize {
    let records = try_read_all(c, topic).unwrap_or_else(|e| panic!("reading {topic} back: {e}"));
    let stored = check_stored(&records).unwrap_or_else(|e| panic!("{topic}: {e}"));
    let acked: HashMap<usize, i64> = acks.iter().map(|a| (a.batch, a.base)).collect();
    for a in acks {
        let got = stored.bases.get(a.batch);
        assert_eq!(
            got,
            Some(&a.base),
            "{topic}: acknowledged batch {} (base offset {}) is stored at {got:?}",
            a.batch,
            a.base
        );
    }
    assert!(
        stored.bases.len() <= acked.len() + 1,
        "{topic}: {} batches stored, {} acknowledged: only the last may be unacknowledged",
        stored.bases.len(),
        acked.len()
    );
    stored.bases.len()
}

/// `(batch, record)` from a value's text prefix `batch B record I;`.
fn parse_value(v: &[u8]) -> Option<(usize, usize)> {
    let end = v.iter().position(|&b| b == b';')?;
    let text = std::str::from_utf8(&v[..end]).ok()?;
    let mut words = text.split(' ');
    match (words.next(), words.next(), words.next(), words.next(), words.next()) {
        (Some("batch"), Some(b), Some("record"), Some(i), None) => Some((b.parse().ok()?, i.parse().ok()?)),
        _ => None,
    }
}
