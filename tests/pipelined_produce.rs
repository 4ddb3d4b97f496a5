//! Produce requests pipelined on one connection (`connection.max.pipelined.produce`): a
//! connection takes its next produce while earlier ones await durability. Offsets follow
//! request order, answers keep request order (other requests in between included), a
//! duplicate is recognised, acks=0 gets no answer, a client that stops sending still gets its
//! answers, and what was acknowledged survives kill -9.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{Conn, Kopd, RECORDS, idempotent_batch, init_producer, leaders, name, read_all, temp_dir};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;

const PRODUCE_VERSION: i16 = 9;

fn produce_frame(correlation: i32, topic: &str, partition: i32, acks: i16, records: Bytes) -> Vec<u8> {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(20_000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ]);
    Conn::frame(correlation, PRODUCE_VERSION, &req)
}

/// What one answer frame says: its correlation id, and for a produce (error, base offset).
fn read_answer(c: &mut Conn, produce: bool) -> (i32, Option<(i16, i64)>) {
    let mut frame = c.read_frame().expect("an answer");
    let api = if produce { ApiKey::Produce } else { ApiKey::Metadata };
    let version = if produce { PRODUCE_VERSION } else { 1 };
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("header");
    if !produce {
        return (header.correlation_id, None);
    }
    let resp = ProduceResponse::decode(&mut frame, version).expect("produce response");
    let p = &resp.responses[0].partition_responses[0];
    (header.correlation_id, Some((p.error_code, p.base_offset)))
}

/// A node with `flush = always` (every answer waits for an fsync, so pipelined produces are
/// really in flight together), a topic of two partitions, and partition 0's owner core.
fn setup(dir: &std::path::Path, topic: &str) -> (Kopd, u16) {
    let kopd = Kopd::start(dir, 2, &["--set", "flush=always"]);
    let mut c = Conn::connect(kopd.addr(0));
    common::create_topic(&mut c, topic, 2, &[]);
    let owner = leaders(&mut c, topic)[0] as u16;
    (kopd, owner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A produce of idempotent batch number `b`, answered with its offsets.
    Batch(usize),
    Metadata,
    /// A produce for another core's partition.
    Refused,
}

#[test]
fn pipelined_produces_keep_request_order_in_offsets_and_answers() {
    let dir = temp_dir("pipelined-order");
    let topic = "pipelined";
    let (kopd, owner) = setup(&dir, topic);
    let other_partition = {
        let mut c = Conn::connect(kopd.addr(0));
        leaders(&mut c, topic).iter().position(|o| *o as u16 != owner).map(|p| p as i32)
    };
    let mut c = Conn::connect(kopd.addr(owner));
    let (pid, epoch) = init_producer(&mut c);
    // Expected answers, in request order.
    let mut expected: Vec<(i32, Expect)> = Vec::new();
    let mut wire = Vec::new();
    let mut corr = 100;
    for b in 0..40 {
        wire.extend(produce_frame(corr, topic, 0, -1, idempotent_batch(pid, epoch, 0, b)));
        expected.push((corr, Expect::Batch(b)));
        corr += 1;
        if b % 9 == 4 {
            // Another request between produces is answered in its place.
            wire.extend(Conn::frame(corr, 1, &MetadataRequest::default().with_topics(None)));
            expected.push((corr, Expect::Metadata));
            corr += 1;
        }
        if b == 20 {
            // A batch sent again (a producer's retry) is a duplicate: its first offsets.
            wire.extend(produce_frame(corr, topic, 0, -1, idempotent_batch(pid, epoch, 0, b)));
            expected.push((corr, Expect::Batch(b)));
            corr += 1;
        }
    }
    // acks=0 is never answered; a produce to a partition this core does not own is refused.
    wire.extend(produce_frame(corr, topic, 0, 0, idempotent_batch(pid, epoch, 0, 40)));
    corr += 1;
    if let Some(p) = other_partition {
        wire.extend(produce_frame(corr, topic, p, -1, common::batch(1, kafka_protocol::records::Compression::None)));
        expected.push((corr, Expect::Refused));
        corr += 1;
    }
    wire.extend(produce_frame(corr, topic, 0, -1, idempotent_batch(pid, epoch, 0, 41)));
    expected.push((corr, Expect::Batch(41)));
    c.stream.write_all(&wire).expect("send every request at once");
    for (i, (want_corr, expect)) in expected.iter().enumerate() {
        let (got_corr, answer) = read_answer(&mut c, *expect != Expect::Metadata);
        assert_eq!(got_corr, *want_corr, "answer {i} out of request order");
        match (expect, answer) {
            (Expect::Batch(b), Some((err, offset))) => {
                assert_eq!((err, offset), (0, (b * RECORDS) as i64), "batch {b}: offsets follow request order");
            }
            (Expect::Refused, Some((err, _))) => assert_eq!(err, 6, "NOT_LEADER_OR_FOLLOWER elsewhere"),
            (Expect::Metadata, None) => {}
            (e, a) => panic!("answer {i}: expected {e:?}, got {a:?}"),
        }
    }
    let (records, hwm) = read_all(&mut Conn::connect(kopd.addr(owner)), topic, 0);
    assert_eq!(hwm, (42 * RECORDS) as i64, "every batch once, the acks=0 one included");
    for (b, chunk) in records.chunks(RECORDS).enumerate() {
        for (i, (offset, value)) in chunk.iter().enumerate() {
            assert_eq!(*offset, (b * RECORDS + i) as i64);
            assert_eq!(*value, common::batch_value(b, i), "batch {b} record {i}");
        }
    }
}

#[test]
fn a_client_that_stops_sending_gets_its_answers_and_acks_survive_kill_9() {
    let dir = temp_dir("pipelined-kill9");
    let topic = "pipelined-kill";
    let (mut kopd, owner) = setup(&dir, topic);
    let port = kopd.port;
    let mut c = Conn::connect(kopd.addr(owner));
    let (pid, epoch) = init_producer(&mut c);
    const BATCHES: usize = 60;
    let wire: Vec<u8> = (0..BATCHES)
        .flat_map(|b| produce_frame(1000 + b as i32, topic, 0, -1, idempotent_batch(pid, epoch, 0, b)))
        .collect();
    c.stream.write_all(&wire).expect("send");
    // Nothing more will come: the answers still do.
    c.stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    for b in 0..BATCHES {
        let (corr, answer) = read_answer(&mut c, true);
        assert_eq!(corr, 1000 + b as i32);
        assert_eq!(answer, Some((0, (b * RECORDS) as i64)), "batch {b}");
    }
    assert!(c.closed_by_server(), "the connection ends after the last answer");
    kopd.kill9();
    let kopd = Kopd::start_on(&dir, 2, port, &["--set", "flush=always"]);
    let (records, hwm) = read_all(&mut Conn::connect(kopd.addr(owner)), topic, 0);
    assert_eq!(hwm, (BATCHES * RECORDS) as i64, "every acknowledged batch after kill -9");
    assert_eq!(records.len(), BATCHES * RECORDS);
}
