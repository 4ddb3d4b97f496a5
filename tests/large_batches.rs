//! Large batches: kopd stores a batch of 16 KiB and more without copying its records out of
//! the request buffer (the entry is its metadata and edited header, then the records where
//! they arrived). Whatever the path, the stored batch must be the batch Kafka would store:
//! base offset and leader epoch set, the true maximum timestamp (or the append time) with a
//! CRC that matches, the records byte for byte; from the tail cache and, after kill -9, from
//! the disk.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{Conn, Kopd, create_topic, encode, name, record, temp_dir};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

const HEADER: usize = 61;

/// A batch of `n` records of `size`-byte values; with `lie`, its header claims a maximum
/// timestamp below its last record's (its CRC made to match the lie, as a buggy client would).
fn batch(n: usize, size: usize, seed: u8, lie: bool) -> Bytes {
    let records: Vec<_> =
        (0..n).map(|i| record(i, None, Bytes::from(vec![seed.wrapping_add(i as u8); size]))).collect();
    let mut b = encode(&records, Compression::None).to_vec();
    if lie {
        b[35..43].copy_from_slice(&1_700_000_000_000i64.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Bytes::from(b)
}

fn produce_frame(correlation: i32, topic: &str, records: Bytes) -> Vec<u8> {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(20_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(records))]),
    ]);
    Conn::frame(correlation, 9, &req)
}

/// Every stored batch of partition 0, raw, as fetched.
fn fetch_batches(c: &mut Conn, topic: &str) -> Vec<Bytes> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let (mut out, mut next) = (Vec::new(), 0i64);
    for _ in 0..100 {
        let part =
            FetchPartition::default().with_partition(0).with_fetch_offset(next).with_partition_max_bytes(8 << 20);
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![part])]);
        let resp = c.send(12, &req).unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let mut buf = p.records.clone().unwrap_or_default();
        if buf.is_empty() {
            return out;
        }
        while buf.len() >= 12 {
            let len = 12 + i32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
            let b = buf.split_to(len);
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
            next = i64::from_be_bytes(b[..8].try_into().unwrap()) + last_delta + 1;
            out.push(b);
        }
    }
    panic!("{topic}: fetching never reached the end");
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Checks one stored batch against the one sent: Kafka's edits, and nothing else.
fn check(stored: &Bytes, sent: &Bytes, base: i64, append_time: bool, what: &str) {
    assert_eq!(stored.len(), sent.len(), "{what}: length");
    assert_eq!(be_i64(stored, 0), base, "{what}: base offset");
    assert_eq!(&stored[HEADER..], &sent[HEADER..], "{what}: records byte for byte");
    // Producer id to record count, and the first timestamp, are the producer's.
    assert_eq!(&stored[43..HEADER], &sent[43..HEADER], "{what}: producer fields");
    assert_eq!(&stored[23..35], &sent[23..35], "{what}: offset delta and first timestamp");
    let crc = u32::from_be_bytes(stored[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&stored[21..]), "{what}: CRC");
    let decoded = RecordBatchDecoder::decode(&mut stored.clone()).expect("a client decodes it");
    let last = decoded.records.last().unwrap();
    let timestamp_type = i16::from_be_bytes(stored[21..23].try_into().unwrap()) & 0x08 != 0;
    assert_eq!(timestamp_type, append_time, "{what}: timestamp type");
    if append_time {
        assert!(be_i64(stored, 35) > 1_700_000_000_000 + 1_000_000, "{what}: an append time");
    } else {
        // The true maximum, whatever the header claimed.
        assert_eq!(be_i64(stored, 35), last.timestamp, "{what}: max timestamp");
    }
}

#[test]
fn large_batches_are_stored_as_kafka_stores_them() {
    let dir = temp_dir("large-batches");
    let mut kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    create_topic(&mut c, "create-time", 1, &[]);
    create_topic(&mut c, "append-time", 1, &[("message.timestamp.type", "LogAppendTime")]);
    // Large (shared), medium (shared or copied by the buffer it lands in) and small (copied),
    // one of each large size lying about its maximum timestamp.
    let sent: Vec<Bytes> = vec![
        batch(100, 2000, 1, false),
        batch(100, 2000, 2, true),
        batch(1, 10, 3, false),
        batch(10, 2000, 4, true),
        batch(300, 1000, 5, false),
        batch(3, 100, 6, true),
        batch(40, 2000, 7, false),
    ];
    let mut bases = Vec::new();
    let mut next = 0i64;
    for b in &sent {
        bases.push(next);
        next += i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64 + 1;
    }
    for topic in ["create-time", "append-time"] {
        // All at once: frames share read buffers, as a pipelining client's do.
        let mut wire = Vec::new();
        for (i, b) in sent.iter().enumerate() {
            wire.extend(produce_frame(1000 + i as i32, topic, b.clone()));
        }
        c.stream.write_all(&wire).unwrap();
        for (i, base) in bases.iter().enumerate() {
            let mut frame = c.read_frame().unwrap();
            let header = ResponseHeader::decode(&mut frame, ApiKey::Produce.response_header_version(9)).unwrap();
            assert_eq!(header.correlation_id, 1000 + i as i32);
            let resp = ProduceResponse::decode(&mut frame, 9).unwrap();
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, *base), "{topic}: batch {i}");
        }
    }
    let mut cached = Vec::new();
    for (topic, append_time) in [("create-time", false), ("append-time", true)] {
        let stored = fetch_batches(&mut c, topic);
        assert_eq!(stored.len(), sent.len(), "{topic}");
        for (i, s) in stored.iter().enumerate() {
            check(s, &sent[i], bases[i], append_time, &format!("{topic} batch {i} (tail cache)"));
        }
        cached.push(stored);
    }

    kopd.kill9();
    let kopd = Kopd::start_on(&dir, 1, kopd.port, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    for (k, topic) in ["create-time", "append-time"].into_iter().enumerate() {
        let stored = fetch_batches(&mut c, topic);
        assert_eq!(stored, cached[k], "{topic}: the disk holds what the tail cache served");
    }
}
