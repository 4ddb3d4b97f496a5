//! Produce: good and bad batches, acks, idempotent sequences.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProduceRequest, ProduceResponse};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use crate::common::{Conn, batch, name, record};
use crate::norm::{e, reply};
use crate::peers::Side;
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("produce.good_batches", good),
    ("produce.unknown_topic_and_partition", unknown),
    ("produce.corrupt_crc", corrupt_crc),
    ("produce.empty_records", empty_records),
    ("produce.null_records", null_records),
    ("produce.control_batch_from_client", control_batch),
    ("produce.transactional_bit_without_producer_id", transactional_no_pid),
    ("produce.magic_v1_batch", magic_v1),
    ("produce.same_partition_twice", same_partition_twice),
    ("produce.acks", acks),
    ("produce.idempotent_sequences", idempotent),
];

/// Records with producer state: `n` records, first sequence `seq`.
pub fn batch_with(n: usize, pid: i64, epoch: i16, seq: i32, transactional: bool, control: bool, version: i8) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = record(i, Some(Bytes::from(format!("k{i}"))), Bytes::from(format!("value-{i}")));
            r.producer_id = pid;
            r.producer_epoch = epoch;
            r.sequence = if pid >= 0 { seq + i as i32 } else { -1 };
            r.transactional = transactional;
            r.control = control;
            r
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version, compression: Compression::None })
        .expect("encode batch");
    buf.freeze()
}

pub fn produce_req(acks: i16, parts: &[(&str, i32, Option<Bytes>)]) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (t, p, recs) in parts {
        let pd = PartitionProduceData::default().with_index(*p).with_records(recs.clone());
        match topics.iter_mut().find(|x| x.name.as_str() == *t) {
            Some(x) => x.partition_data.push(pd),
            None => topics.push(TopicProduceData::default().with_name(name(t)).with_partition_data(vec![pd])),
        }
    }
    ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(topics)
}

pub fn fmt_produce(r: &ProduceResponse) -> String {
    let mut items: Vec<String> = Vec::new();
    for t in &r.responses {
        for p in &t.partition_responses {
            let errs: Vec<i32> = p.record_errors.iter().map(|x| x.batch_index).collect();
            items.push(format!(
                "{}/{}: {} base={} log_start={} append_time={} record_errors={errs:?}",
                t.name.as_str(),
                p.index,
                e(p.error_code),
                p.base_offset,
                p.log_start_offset,
                if p.log_append_time_ms == -1 { "-1" } else { "set" },
            ));
        }
    }
    // Partition order in the response is not part of the contract (Kafka answers from a map).
    items.sort();
    format!("[{}]", items.join(", "))
}

/// Produce at `version` (0 = the highest name-based version both serve) and record the answer.
pub fn produce_at(s: &mut Side, t: &mut T, label: &str, version: i16, acks: i16, parts: &[(&str, i32, Option<Bytes>)]) {
    let v = if version == 0 { s.ver(ApiKey::Produce, 12) } else { version };
    if !s.both_serve(ApiKey::Produce, v) {
        t.step(format!("Produce v{v} {label}"), "version not served by both");
        return;
    }
    let r = s.call(v, &produce_req(acks, parts));
    t.step(format!("Produce v{v} acks={acks} {label}"), reply(&r, fmt_produce));
}

pub fn produce(s: &mut Side, t: &mut T, label: &str, parts: &[(&str, i32, Option<Bytes>)]) {
    produce_at(s, t, label, 0, -1, parts);
}

fn good(s: &mut Side, t: &mut T) {
    ensure(s, "pr-good", 2);
    produce(s, t, "pr-good/0 3 records", &[("pr-good", 0, Some(batch(3, Compression::None)))]);
    produce(s, t, "pr-good/0 2 records lz4", &[("pr-good", 0, Some(batch(2, Compression::Lz4)))]);
    produce(
        s,
        t,
        "pr-good/1 4 records gzip + pr-good/0 1 record",
        &[("pr-good", 1, Some(batch(4, Compression::Gzip))), ("pr-good", 0, Some(batch(1, Compression::None)))],
    );
    crate::fetch::list_offsets(s, t, "pr-good", 0, -1, 0);
}

fn unknown(s: &mut Side, t: &mut T) {
    ensure(s, "pr-oor", 1);
    produce(s, t, "never created topic pr-unknown/0", &[("pr-unknown", 0, Some(batch(1, Compression::None)))]);
    produce(s, t, "pr-oor/5 (topic has 1 partition)", &[("pr-oor", 5, Some(batch(1, Compression::None)))]);
    produce(s, t, "pr-oor/-1", &[("pr-oor", -1, Some(batch(1, Compression::None)))]);
    crate::topics::metadata(s, t, &["pr-unknown"], false);
}

fn corrupt_crc(s: &mut Side, t: &mut T) {
    ensure(s, "pr-crc", 1);
    let mut bad = BytesMut::from(&batch(3, Compression::None)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    produce(s, t, "pr-crc/0 batch with a flipped value byte", &[("pr-crc", 0, Some(bad.freeze()))]);
    crate::fetch::list_offsets(s, t, "pr-crc", 0, -1, 0);
}

fn empty_records(s: &mut Side, t: &mut T) {
    ensure(s, "pr-empty", 1);
    produce(s, t, "pr-empty/0 empty records", &[("pr-empty", 0, Some(Bytes::new()))]);
    produce(s, t, "pr-empty/0 7 garbage bytes", &[("pr-empty", 0, Some(Bytes::from_static(b"garbage")))]);
    crate::fetch::list_offsets(s, t, "pr-empty", 0, -1, 0);
}

fn null_records(s: &mut Side, t: &mut T) {
    ensure(s, "pr-null", 1);
    produce(s, t, "pr-null/0 null records", &[("pr-null", 0, None)]);
    s.reconnect();
    crate::fetch::list_offsets(s, t, "pr-null", 0, -1, 0);
}

fn control_batch(s: &mut Side, t: &mut T) {
    ensure(s, "pr-control", 1);
    let b = batch_with(1, -1, -1, -1, false, true, 2);
    produce(s, t, "pr-control/0 control batch, no producer id", &[("pr-control", 0, Some(b))]);
    let b = batch_with(1, 5, 0, 0, true, true, 2);
    produce(s, t, "pr-control/0 transactional control batch, pid 5", &[("pr-control", 0, Some(b))]);
}

fn transactional_no_pid(s: &mut Side, t: &mut T) {
    ensure(s, "pr-txn", 1);
    let b = batch_with(2, -1, -1, -1, true, false, 2);
    produce(s, t, "pr-txn/0 transactional batch with producer id -1", &[("pr-txn", 0, Some(b))]);
    crate::fetch::list_offsets(s, t, "pr-txn", 0, -1, 0);
}

/// A magic v1 (pre-0.11) message set of `n` uncompressed messages, written by hand (the codec
/// only writes v2 batches): offset, size, crc32 of the rest, magic 1, attributes, timestamp,
/// key, value.
fn message_set_v1(n: usize) -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..n {
        let mut m = Vec::new();
        m.push(1u8); // magic
        m.push(0u8); // attributes: no compression, CreateTime
        m.extend_from_slice(&(1_700_000_000_000i64 + i as i64).to_be_bytes());
        for part in [format!("k{i}"), format!("value-{i}")] {
            m.extend_from_slice(&(part.len() as i32).to_be_bytes());
            m.extend_from_slice(part.as_bytes());
        }
        let crc = crc32fast::hash(&m);
        out.extend_from_slice(&(i as i64).to_be_bytes());
        out.extend_from_slice(&((m.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(&m);
    }
    out.freeze()
}

fn magic_v1(s: &mut Side, t: &mut T) {
    ensure(s, "pr-magic1", 1);
    let b = message_set_v1(2);
    produce_at(s, t, "pr-magic1/0 magic v1 message set", 7, -1, &[("pr-magic1", 0, Some(b.clone()))]);
    produce_at(s, t, "pr-magic1/0 magic v1 message set", 3, -1, &[("pr-magic1", 0, Some(b))]);
    crate::fetch::list_offsets(s, t, "pr-magic1", 0, -1, 0);
}

fn same_partition_twice(s: &mut Side, t: &mut T) {
    ensure(s, "pr-twice", 1);
    let b = batch(1, Compression::None);
    produce(s, t, "pr-twice/0 and pr-twice/0 again", &[("pr-twice", 0, Some(b.clone())), ("pr-twice", 0, Some(b))]);
    crate::fetch::list_offsets(s, t, "pr-twice", 0, -1, 0);
}

fn acks(s: &mut Side, t: &mut T) {
    ensure(s, "pr-acks", 1);
    let v = s.ver(ApiKey::Produce, 12);
    // First an acknowledged produce: a new Kafka topic may briefly have no leader, and an
    // acks=0 produce that fails makes Kafka close the connection.
    produce_at(s, t, "pr-acks/0", 0, 1, &[("pr-acks", 0, Some(batch(1, Compression::None)))]);
    // acks=0: no response at all; the next request's response is the next frame.
    s.send_only(&Conn::frame(5, v, &produce_req(0, &[("pr-acks", 0, Some(batch(2, Compression::None)))])));
    crate::fetch::list_offsets(s, t, "pr-acks", 0, -1, 0);
    produce_at(s, t, "pr-acks/0", 0, -1, &[("pr-acks", 0, Some(batch(1, Compression::None)))]);
    produce_at(s, t, "pr-acks/0", 0, 2, &[("pr-acks", 0, Some(batch(1, Compression::None)))]);
    crate::fetch::list_offsets(s, t, "pr-acks", 0, -1, 0);
}

pub fn init_pid(s: &mut Side, t: &mut T) -> (i64, i16) {
    let v = s.ver(ApiKey::InitProducerId, 4);
    // The codec's default transactional id is "" (not null): an empty transactional id.
    let r = s.call(v, &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000));
    t.step(
        format!("InitProducerId v{v} transactional_id=\"\""),
        reply(&r, |r| {
            format!("{} pid={} epoch={}", e(r.error_code), crate::norm::pid(r.producer_id.0), r.producer_epoch)
        }),
    );
    let req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
    // Kafka answers COORDINATOR_LOAD_IN_PROGRESS until its producer-id manager has a block:
    // retried (bounded), the last answer is recorded.
    let mut r = s.call(v, &req);
    for _ in 0..100 {
        if !matches!(&r, Ok(x) if x.error_code == 14) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = s.call(v, &req);
    }
    t.step(
        format!("InitProducerId v{v} (no transactional id)"),
        reply(&r, |r| {
            format!("{} pid={} epoch={}", e(r.error_code), crate::norm::pid(r.producer_id.0), r.producer_epoch)
        }),
    );
    r.map(|r| (r.producer_id.0, r.producer_epoch)).unwrap_or((-1, -1))
}

fn idempotent(s: &mut Side, t: &mut T) {
    ensure(s, "pr-idem", 1);
    let (pid, epoch) = init_pid(s, t);
    let p = |b: Bytes| vec![("pr-idem", 0, Some(b))];
    produce(s, t, "seq 0..2", &p(batch_with(3, pid, epoch, 0, false, false, 2)));
    produce(s, t, "seq 0..2 again (duplicate)", &p(batch_with(3, pid, epoch, 0, false, false, 2)));
    produce(s, t, "seq 3..4", &p(batch_with(2, pid, epoch, 3, false, false, 2)));
    produce(s, t, "seq 10 (gap: out of order)", &p(batch_with(1, pid, epoch, 10, false, false, 2)));
    produce(s, t, "seq 1..2 (old, not the last batch)", &p(batch_with(2, pid, epoch, 1, false, false, 2)));
    produce(s, t, "epoch+1 seq 0 (epoch bump)", &p(batch_with(1, pid, epoch + 1, 0, false, false, 2)));
    produce(s, t, "old epoch seq 5 (fenced)", &p(batch_with(1, pid, epoch, 5, false, false, 2)));
    produce(s, t, "epoch+3 seq 7 (new epoch, not seq 0)", &p(batch_with(1, pid, epoch + 3, 7, false, false, 2)));
    produce(s, t, "unknown pid 987654321 seq 5", &p(batch_with(1, 987_654_321, 0, 5, false, false, 2)));
    produce(s, t, "unknown pid 987654322 seq 0", &p(batch_with(1, 987_654_322, 0, 0, false, false, 2)));
    crate::fetch::list_offsets(s, t, "pr-idem", 0, -1, 0);
}
