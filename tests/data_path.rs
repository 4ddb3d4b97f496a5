//! Produce, fetch and list offsets over the raw protocol: routing to the owning core, batch
//! validation errors that store nothing, and data surviving a restart.

mod common;

use bytes::{Bytes, BytesMut};
use common::{Conn, Kopd, batch, create_topic, encode, fetch, leaders, list_offset, name, produce, record, temp_dir};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

fn create(conn: &mut Conn, topic: &str, partitions: i32) {
    create_topic(conn, topic, partitions, &[]);
}

#[test]
fn partitions_are_served_only_by_their_owner_core() {
    let dir = temp_dir("owner");
    let kopd = Kopd::start(&dir, 2, &[]);
    let mut conns = [Conn::connect(kopd.addr(0)), Conn::connect(kopd.addr(1))];
    create(&mut conns[0], "routed", 4);
    let owners = leaders(&mut conns[0], "routed");
    assert!(owners.contains(&0) && owners.contains(&1), "leaders cover both cores: {owners:?}");
    for (p, owner) in owners.iter().enumerate() {
        let p = p as i32;
        let other = 1 - *owner as usize;
        assert_eq!(produce(&mut conns[other], "routed", p, batch(3, Compression::None)).0, 6, "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(fetch(&mut conns[other], "routed", p, 0).0, 6);
        assert_eq!(list_offset(&mut conns[other], "routed", p, -1).0, 6);
        let own = &mut conns[*owner as usize];
        assert_eq!(produce(own, "routed", p, batch(3, Compression::None)), (0, 0));
        assert_eq!(produce(own, "routed", p, batch(2, Compression::Lz4)), (0, 3));
        let (err, hwm, records) = fetch(own, "routed", p, 0);
        assert_eq!((err, hwm), (0, 5));
        let mut buf = records;
        let mut got = Vec::new();
        while !buf.is_empty() {
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            got.extend(set.records);
        }
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        assert_eq!(got[4].value.as_deref(), Some(&b"value-1"[..]));
        assert_eq!(list_offset(own, "routed", p, -2), (0, 0));
        assert_eq!(list_offset(own, "routed", p, -1), (0, 5));
        assert_eq!(list_offset(own, "routed", p, 1_700_000_000_001), (0, 1));
        assert_eq!(fetch(own, "routed", p, 6).0, 1, "OFFSET_OUT_OF_RANGE past the end");
    }
}

#[test]
fn bad_batches_get_kafka_errors_and_store_nothing() {
    let dir = temp_dir("badbatch");
    let kopd = Kopd::start(&dir, 1, &["--set", "message.max.bytes=2000"]);
    let mut c = Conn::connect(kopd.addr(0));
    create(&mut c, "strict", 1);
    let good = batch(3, Compression::None);

    let mut bad_crc = BytesMut::from(&good[..]);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(produce(&mut c, "strict", 0, bad_crc.freeze()).0, 2, "CORRUPT_MESSAGE");

    let mut bad_len = BytesMut::from(&good[..]);
    bad_len[8..12].copy_from_slice(&10_000i32.to_be_bytes());
    assert_ne!(produce(&mut c, "strict", 0, bad_len.freeze()).0, 0, "a lying batch length is refused");

    // Records count says 4 but 3 are present; recompute the CRC so only the count lies.
    let mut lying = BytesMut::from(&good[..]);
    lying[57..61].copy_from_slice(&4i32.to_be_bytes());
    lying[23..27].copy_from_slice(&3i32.to_be_bytes());
    let crc = crc32c::crc32c(&lying[21..]);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(produce(&mut c, "strict", 0, lying.freeze()).0, 87, "INVALID_RECORD");

    let big = encode(&[record(0, None, Bytes::from(vec![7u8; 5000]))], Compression::None);
    assert_eq!(produce(&mut c, "strict", 0, big).0, 10, "MESSAGE_TOO_LARGE");

    assert_eq!(list_offset(&mut c, "strict", 0, -1), (0, 0), "nothing of the bad batches was stored");
    assert_eq!(produce(&mut c, "strict", 0, good), (0, 0));
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let dir = temp_dir("kill9");
    let mut kopd = Kopd::start(&dir, 2, &[]);
    let port = kopd.port;
    let mut c = Conn::connect(kopd.addr(0));
    create(&mut c, "durable", 2);
    let owners = leaders(&mut c, "durable");
    let mut expected = Vec::new();
    for (p, owner) in owners.iter().enumerate() {
        let mut own = Conn::connect(kopd.addr(*owner as u16));
        for i in 0..20 {
            assert_eq!(produce(&mut own, "durable", p as i32, batch(5, Compression::None)), (0, i * 5));
        }
        expected.push(100i64);
    }
    // SIGKILL: no shutdown path runs.
    kopd.kill9();
    let kopd = Kopd::start_on(&dir, 2, port, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    let after = leaders(&mut c, "durable");
    assert_eq!(after, owners);
    for (p, owner) in owners.iter().enumerate() {
        let mut own = Conn::connect(kopd.addr(*owner as u16));
        assert_eq!(list_offset(&mut own, "durable", p as i32, -1), (0, expected[p]));
        let (err, hwm, records) = fetch(&mut own, "durable", p as i32, 95);
        assert_eq!((err, hwm), (0, 100));
        assert!(!records.is_empty());
        assert_eq!(produce(&mut own, "durable", p as i32, batch(1, Compression::None)), (0, 100));
    }
}

#[test]
fn internal_offsets_topic_cannot_be_deleted_or_grown() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{CreatePartitionsRequest, DeleteTopicsRequest};

    let dir = temp_dir("internal");
    let kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    let del = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_name(Some(name("__consumer_offsets")))]);
    assert_eq!(c.send(6, &del).unwrap().responses[0].error_code, 42, "INVALID_REQUEST");
    let grow = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default().with_name(name("__consumer_offsets")).with_count(60)]);
    assert_eq!(c.send(3, &grow).unwrap().results[0].error_code, 42);
    assert_eq!(leaders(&mut c, "__consumer_offsets").len(), 50, "still there with its 50 partitions");
}

/// One IncrementalAlterConfigs SET of a topic config; the resource's error code.
fn set_topic_config(conn: &mut Conn, topic: &str, key: &str, value: &str) -> i16 {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::protocol::StrBytes;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(value.to_string()))),
            ]),
    ]);
    let resp = conn.send(1, &req).unwrap();
    resp.responses[0].error_code
}

#[test]
fn altered_topic_configs_apply_to_the_open_partition() {
    let dir = temp_dir("alter-configs");
    let kopd = Kopd::start(&dir, 1, &["--set", "log.retention.check.interval.ms=200"]);
    let mut c = Conn::connect(kopd.addr(0));
    // Small ledgers; retention by time off (the test records carry 2023 timestamps).
    create_topic(&mut c, "altered", 1, &[("segment.bytes", "1024"), ("retention.ms", "-1")]);
    for i in 0..8 {
        assert_eq!(produce(&mut c, "altered", 0, batch(20, Compression::None)), (0, i * 20));
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(list_offset(&mut c, "altered", 0, -2), (0, 0), "nothing deleted while retention is off");
    // A week's retention: every closed ledger (2023's records) is past it, and goes.
    assert_eq!(set_topic_config(&mut c, "altered", "retention.ms", "604800000"), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (err, start) = list_offset(&mut c, "altered", 0, -2);
        assert_eq!(err, 0);
        if start > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention.ms changed at run time deleted nothing");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // max.message.bytes lowered below a batch's size: refused at once, stored nothing.
    assert_eq!(set_topic_config(&mut c, "altered", "max.message.bytes", "100"), 0);
    let before = list_offset(&mut c, "altered", 0, -1);
    assert_eq!(produce(&mut c, "altered", 0, batch(20, Compression::None)).0, 10, "MESSAGE_TOO_LARGE");
    assert_eq!(list_offset(&mut c, "altered", 0, -1), before);
    // Refusals as Kafka's: an invalid value (INVALID_CONFIG), an unknown topic.
    assert_eq!(set_topic_config(&mut c, "altered", "retention.ms", "-7"), 40);
    assert_eq!(set_topic_config(&mut c, "no-such-topic", "retention.ms", "1"), 3);
}
