//! Restart from log snapshots: offsets, records and idempotent-producer state come back the
//! same after kill -9 and after a clean stop, a corrupt snapshot falls back to a full rebuild,
//! and the checkpointed prefix is really trusted (not re-read) while reads still verify it.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{Conn, Kopd, RECORDS, batch_value, idempotent_batch, init_producer, name, produce, read_all, temp_dir};
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const KAFKA_STORAGE_ERROR: i16 = 56;

fn create(c: &mut Conn, topic: &str) {
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default().with_name(name(topic)).with_num_partitions(1).with_replication_factor(1),
    ]);
    assert_eq!(c.send(7, &req).unwrap().topics[0].error_code, 0);
}

fn expected(n: usize) -> Vec<(i64, Bytes)> {
    (0..n).flat_map(|b| (0..RECORDS).map(move |i| ((b * RECORDS + i) as i64, batch_value(b, i)))).collect()
}

fn check(c: &mut Conn, topic: &str, batches: usize, when: &str) {
    let (got, hwm) = read_all(c, topic, 0);
    assert_eq!(hwm, (batches * RECORDS) as i64, "{when}: high watermark");
    assert!(got == expected(batches), "{when}: the same {batches} batches at the same offsets");
}

fn snapshot_file(dir: &Path) -> std::path::PathBuf {
    dir.join("ledgers").join("core-0").join("log.snapshot")
}

#[test]
fn restart_from_snapshot_keeps_offsets_records_and_producer_state() {
    let dir = temp_dir("snapshot-restart");
    let args = ["--set", "log.snapshot.interval.ms=200"];
    let mut kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    create(&mut c, "snap");
    let (pid, epoch) = init_producer(&mut c);
    let send = |c: &mut Conn, b: usize| produce(c, "snap", 0, idempotent_batch(pid, epoch, 0, b));
    for b in 0..40 {
        assert_eq!(send(&mut c, b), (0, (b * RECORDS) as i64));
    }
    // Snapshots are taken meanwhile; what follows is the tail a restart must read.
    std::thread::sleep(Duration::from_millis(800));
    assert!(snapshot_file(&dir).exists(), "a periodic snapshot was written");
    for b in 40..45 {
        assert_eq!(send(&mut c, b), (0, (b * RECORDS) as i64));
    }
    drop(c);
    kopd.kill9();

    let mut kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, "snap", 45, "after kill -9");
    // The producer's state is back: a retry is a duplicate (its original offset), a gap is
    // refused, the next batch continues the offsets.
    assert_eq!(send(&mut c, 44), (0, 44 * RECORDS as i64));
    assert_eq!(send(&mut c, 47).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(send(&mut c, 45), (0, 45 * RECORDS as i64));
    drop(c);
    assert!(kopd.stop().success());

    // A clean stop snapshots everything: the restart reads no entry, with the same result.
    let mut kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, "snap", 46, "after a clean stop");
    assert_eq!(send(&mut c, 45), (0, 45 * RECORDS as i64));
    drop(c);
    kopd.kill9();

    // A corrupt snapshot is ignored whole: a full rebuild, the same state.
    let path = snapshot_file(&dir);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    std::fs::write(&path, &data).unwrap();
    let kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, "snap", 46, "after restarting with a corrupt snapshot");
    assert_eq!(send(&mut c, 45), (0, 45 * RECORDS as i64));
    assert_eq!(send(&mut c, 47).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(send(&mut c, 46), (0, 46 * RECORDS as i64));
    check(&mut c, "snap", 47, "after producing on");
}

#[test]
fn checkpointed_data_is_not_rescanned_but_reads_still_verify_it() {
    let dir = temp_dir("snapshot-trust");
    let mut kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    create(&mut c, "trust");
    let (pid, epoch) = init_producer(&mut c);
    for b in 0..20 {
        assert_eq!(produce(&mut c, "trust", 0, idempotent_batch(pid, epoch, 0, b)).0, 0);
    }
    drop(c);
    assert!(kopd.stop().success());

    // Flip a byte inside batch 3's record in the entry log.
    let seg = std::fs::read_dir(dir.join("ledgers").join("core-0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "log")
                && std::fs::read(p).unwrap().windows(17).any(|w| w == b"batch 3 record 0;")
        })
        .expect("segment holding batch 3");
    let mut data = std::fs::read(&seg).unwrap();
    let at = data.windows(17).position(|w| w == b"batch 3 record 0;").unwrap();
    data[at + 100] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();

    // From the snapshot and checkpoint: nothing is rescanned, every offset is still there,
    // and the damaged batch fails its checksum when read (KAFKA_STORAGE_ERROR), alone.
    let mut kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    assert_eq!(common::list_offset(&mut c, "trust", 0, -1), (0, 20 * RECORDS as i64));
    let fetch = |c: &mut Conn, offset: i64| {
        use kafka_protocol::messages::FetchRequest;
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let part = FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(1);
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1)
            .with_topics(vec![FetchTopic::default().with_topic(name("trust")).with_partitions(vec![part])]);
        c.send(12, &req).unwrap().responses[0].partitions[0].error_code
    };
    assert_eq!(fetch(&mut c, 2 * RECORDS as i64), 0);
    assert_eq!(fetch(&mut c, 3 * RECORDS as i64), KAFKA_STORAGE_ERROR);
    assert_eq!(fetch(&mut c, 4 * RECORDS as i64), 0);
    drop(c);
    kopd.kill9();

    // Without the snapshot the full scan finds the bad record and (it being in the newest
    // segment) truncates there: the snapshot above was really what recovery used.
    std::fs::remove_file(snapshot_file(&dir)).unwrap();
    let kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, "trust", 3, "after a full scan of the damaged log");
    drop(kopd);
}

#[test]
fn flush_interval_acks_survive_kill9_before_any_sync() {
    // Under `flush = interval` segments are written through the page cache: acknowledged
    // records must survive the process dying before the interval's sync. Small segments so
    // several roll; no tail cache, so reads before the kill go to the store (O_DIRECT reads
    // of pages still dirty in the page cache).
    let dir = temp_dir("interval-kill9");
    let args = [
        "--set",
        "flush=interval",
        "--set",
        "flush.interval.ms=3600000",
        "--set",
        "ledger.file.bytes=1048576",
        "--set",
        "log.tail.cache.bytes=0",
    ];
    let mut kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    create(&mut c, "interval");
    let (pid, epoch) = init_producer(&mut c);
    for b in 0..300 {
        assert_eq!(produce(&mut c, "interval", 0, idempotent_batch(pid, epoch, 0, b)), (0, (b * RECORDS) as i64));
    }
    check(&mut c, "interval", 300, "before the kill");
    let segments = std::fs::read_dir(dir.join("ledgers").join("core-0")).unwrap().count();
    assert!(segments > 2, "segments rolled: {segments} files");
    drop(c);
    kopd.kill9();

    let kopd = Kopd::start(&dir, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, "interval", 300, "after kill -9");
}
