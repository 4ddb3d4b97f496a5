//! Committed offsets mirrored into durable cursors (Pulsar subscriptions): positions that follow
//! the commits, survive kill -9, disappear with the group's offsets, show in the admin API's
//! views, and (when asked) hold retention back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Conn, Kopd, batch, free_ports, leaders, list_offset, name, produce, temp_dir};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::{FindCoordinatorRequest, GroupId, OffsetCommitRequest, OffsetDeleteRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use serde_json::Value;

const LOAD_IN_PROGRESS: i16 = 14;

fn st(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// kopd with its admin API on a free port, mirroring every `mirror_ms`.
fn start(dir: &std::path::Path, port: Option<u16>, admin: u16, mirror_ms: u64, extra: &[&str]) -> Kopd {
    let mut args = vec![
        "--set".to_string(),
        format!("admin.listen=127.0.0.1:{admin}"),
        "--set".to_string(),
        format!("group.cursor.mirror.interval.ms={mirror_ms}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match port {
        Some(p) => Kopd::start_on(dir, 2, p, &args),
        None => Kopd::start(dir, 2, &args),
    }
}

fn http_get(admin: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| serde_json::from_str(body).ok())?
}

/// Waits until the cursor view satisfies `ok`; returns its rows.
fn cursors_until(admin: u16, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(Value::Array(rows)) = http_get(admin, "/kopd/cursors")
            && ok(&rows)
        {
            return rows;
        }
        assert!(Instant::now() < deadline, "cursor view never showed {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row<'a>(rows: &'a [Value], group: &str, topic: &str, partition: i64) -> Option<&'a Value> {
    rows.iter().find(|r| r["group"] == group && r["topic"] == topic && r["partition"] == partition)
}

fn create(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    common::create_topic(conn, topic, partitions, configs);
}

/// A connection to the partition's owner core.
fn owner(kopd: &Kopd, topic: &str, partition: i32) -> Conn {
    let core = leaders(&mut Conn::connect(kopd.addr(0)), topic)[partition as usize];
    Conn::connect(kopd.addr(core as u16))
}

fn coordinator(kopd: &Kopd, group: &str) -> Conn {
    let mut c = Conn::connect(kopd.addr(0));
    let r = c.send(3, &FindCoordinatorRequest::default().with_key(st(group))).unwrap();
    assert_eq!(r.error_code, 0);
    Conn::connect(kopd.addr(r.node_id.0 as u16))
}

/// A simple (memberless) commit, as kafka-consumer-groups --reset-offsets does.
fn commit(kopd: &Kopd, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(st(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(*o)
                    })
                    .collect(),
            ),
        ]);
    // Right after start the coordinator may still be loading its partitions (retriable).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = coordinator(kopd, group).send(8, &req).unwrap();
        let errors: Vec<i16> = r.topics[0].partitions.iter().map(|p| p.error_code).collect();
        if errors.iter().all(|e| *e == 0) {
            return;
        }
        assert!(
            errors.iter().all(|e| *e == LOAD_IN_PROGRESS) && Instant::now() < deadline,
            "commit failed: {errors:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `batches` batches of 10 records to a partition (offsets 10*i .. 10*i+9).
fn fill(kopd: &Kopd, topic: &str, partition: i32, batches: usize) {
    let mut c = owner(kopd, topic, partition);
    for _ in 0..batches {
        assert_eq!(produce(&mut c, topic, partition, batch(10, Compression::None)).0, 0);
    }
}

/// "ledger:entry" -> (ledger, entry)
fn position(v: &Value) -> (i64, i64) {
    let s = v.as_str().unwrap_or_default();
    let (l, e) = s.split_once(':').unwrap_or_else(|| panic!("bad position {v}"));
    (l.parse().unwrap(), e.parse().unwrap())
}

#[test]
fn committed_offsets_become_durable_cursors() {
    let dir = temp_dir("cursors-mirror");
    let admin = free_ports(1);
    let mut kopd = start(&dir, None, admin, 100, &[]);
    let port = kopd.port;
    create(&mut Conn::connect(kopd.addr(0)), "orders", 2, &[]);
    fill(&kopd, "orders", 0, 3); // entries 0..2 of one ledger: offsets 0-9, 10-19, 20-29
    fill(&kopd, "orders", 1, 1);
    commit(&kopd, "billing", "orders", &[(0, 15), (1, 10)]);
    commit(&kopd, "audit", "orders", &[(0, 30)]);

    let rows = cursors_until(admin, "three cursors", |r| r.len() == 3);
    let b0 = row(&rows, "billing", "orders", 0).expect("billing on partition 0");
    // Offset 15 is inside the second entry: only the first is consumed entirely.
    let (ledger, entry) = position(&b0["markDeletePosition"]);
    assert_eq!(entry, 0, "{b0}");
    assert_eq!(position(&b0["readPosition"]), (ledger, 1));
    assert_eq!(
        (b0["committedOffset"].as_i64(), b0["logEndOffset"].as_i64(), b0["backlog"].as_i64()),
        (Some(15), Some(30), Some(15))
    );
    let a0 = row(&rows, "audit", "orders", 0).expect("audit on partition 0");
    assert_eq!(position(&a0["markDeletePosition"]), (ledger, 2), "everything consumed");
    assert_eq!(a0["backlog"].as_i64(), Some(0));
    let b1 = row(&rows, "billing", "orders", 1).expect("billing on partition 1");
    assert_eq!(position(&b1["markDeletePosition"]).1, 0);

    // Pulsar's internal-stats view of the partition's managed ledger lists the same cursors.
    let stats = http_get(admin, "/admin/v2/persistent/public/default/orders-partition-0/internalStats").unwrap();
    assert_eq!(stats["cursors"]["billing"]["markDeletePosition"], b0["markDeletePosition"]);
    assert_eq!(stats["cursors"]["audit"]["properties"]["kafka.committed.offset"].as_i64(), Some(30));
    assert_eq!(stats["numberOfEntries"].as_i64(), Some(3));
    let all = http_get(admin, "/admin/v2/persistent/public/default/orders/partitioned-internalStats").unwrap();
    assert_eq!(all["metadata"]["partitions"].as_i64(), Some(2));

    // A new commit moves the cursor; an offset deleted from the group removes it.
    commit(&kopd, "billing", "orders", &[(0, 20)]);
    let del = OffsetDeleteRequest::default().with_group_id(GroupId(st("audit"))).with_topics(vec![
        OffsetDeleteRequestTopic::default()
            .with_name(name("orders"))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
    ]);
    assert_eq!(coordinator(&kopd, "audit").send(0, &del).unwrap().error_code, 0);
    let rows = cursors_until(admin, "the moved and the removed cursor", |r| {
        r.len() == 2 && row(r, "billing", "orders", 0).is_some_and(|c| c["committedOffset"] == 20)
    });
    let moved = row(&rows, "billing", "orders", 0).unwrap();
    assert_eq!(position(&moved["markDeletePosition"]), (ledger, 1));
    let expected = rows.clone();

    // kill -9, then restart without mirroring: the view shows the cursors as persisted.
    kopd.kill9();
    let _kopd = start(&dir, Some(port), admin, 3_600_000, &[]);
    let rows = cursors_until(admin, "the persisted cursors", |r| r.len() == 2);
    let strip = |rows: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| {
                (format!("{}/{}/{}", r["group"], r["topic"], r["partition"]), format!("{}", r["markDeletePosition"]))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&rows), strip(&expected));
    assert!(rows.iter().all(|r| r["committedOffset"] == row(&expected, r["group"].as_str().unwrap(), "orders", r["partition"].as_i64().unwrap()).unwrap()["committedOffset"]));
}

#[test]
fn retention_can_keep_what_a_cursor_has_not_consumed() {
    let dir = temp_dir("cursors-retention");
    let admin = free_ports(1);
    let kopd = start(&dir, None, admin, 100, &["--set", "log.retention.check.interval.ms=100"]);
    let mut c = Conn::connect(kopd.addr(0));
    // Every entry closes its ledger (segment.bytes is tiny) and is long expired (2023 timestamps).
    let common = [("retention.ms", "1000"), ("segment.bytes", "14")];
    create(&mut c, "plain", 1, &common);
    create(&mut c, "kept", 1, &[common[0], common[1], ("kopd.retention.keep.unconsumed", "true")]);
    // The subscription exists before the data (as in Pulsar, retention only waits for cursors
    // that exist).
    commit(&kopd, "slow", "plain", &[(0, 0)]);
    commit(&kopd, "slow", "kept", &[(0, 0)]);
    cursors_until(admin, "both cursors", |r| r.len() == 2);
    fill(&kopd, "plain", 0, 5);
    fill(&kopd, "kept", 0, 5);
    commit(&kopd, "slow", "plain", &[(0, 25)]);
    commit(&kopd, "slow", "kept", &[(0, 25)]);

    let earliest = |topic: &str, want: i64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = owner(&kopd, topic, 0);
        loop {
            let (err, offset) = list_offset(&mut conn, topic, 0, -2);
            assert_eq!(err, 0);
            if offset == want {
                return;
            }
            assert!(Instant::now() < deadline, "{topic}: log start {offset}, expected {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Kafka's rule: expired data goes whether or not anyone read it.
    earliest("plain", 50);
    // With the option, the ledger holding offsets 20-29 stays for the group at 25.
    earliest("kept", 20);
    std::thread::sleep(Duration::from_millis(500));
    earliest("kept", 20);
    commit(&kopd, "slow", "kept", &[(0, 50)]);
    earliest("kept", 50);
}
