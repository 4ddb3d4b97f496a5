//! A data disk that really fills up: produce gets KAFKA_STORAGE_ERROR while reads go on, and
//! once space is freed writes resume without a restart, with every acknowledged record
//! readable exactly once and nothing unacknowledged visible, before and after a kill -9.
//!
//! The disk is a 16 MiB tmpfs mounted for the test (needs root, as CI runs; tmpfs takes
//! O_DIRECT since Linux 6.6). Without root or mount the test fails and says why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Conn, Kopd, RECORDS, batch_value as value, idempotent_batch, init_producer, name, produce, read_all};
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;

const TOPIC: &str = "full";
const KAFKA_STORAGE_ERROR: i16 = 56;

/// A tmpfs mounted for the test; unmounted (lazily, in case a dead process still pins it)
/// when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("disk_full needs `mount` (root, tmpfs): cannot run it: {e}"));
        assert!(
            out.status.success(),
            "disk_full needs root and permission to mount a tmpfs (as in CI): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system up completely, then frees `leave` bytes.
fn fill(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x77u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
}

/// The records of batches `0..n`, at offsets from 0.
fn expected(n: usize) -> Vec<(i64, Bytes)> {
    (0..n).flat_map(|b| (0..RECORDS).map(move |i| (((b * RECORDS) + i) as i64, value(b, i)))).collect()
}

fn check(c: &mut Conn, acked: usize, when: &str) {
    let (got, hwm) = read_all(c, TOPIC, 0);
    assert_eq!(hwm, (acked * RECORDS) as i64, "{when}: high watermark = acknowledged records");
    assert!(got == expected(acked), "{when}: exactly the {acked} acknowledged batches, in order, once each");
}

#[test]
fn full_disk_refuses_writes_then_resumes_without_restart() {
    let mnt = Mount::tmpfs(&std::env::temp_dir().join(format!("kopd-full-{}", std::process::id())), "16m");
    let data = mnt.0.join("data");
    let args = ["--set", "ledger.failure.probe.interval.ms=200", "--set", "offsets.topic.num.partitions=1"];
    let mut kopd = Kopd::start(&data, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default().with_name(name(TOPIC)).with_num_partitions(1).with_replication_factor(1),
    ]);
    assert_eq!(c.send(7, &req).unwrap().topics[0].error_code, 0);
    let (pid, epoch) = init_producer(&mut c);

    let mut acked = 0;
    for _ in 0..10 {
        assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)), (0, (acked * RECORDS) as i64));
        acked += 1;
    }
    // Leave about 2 MiB: the log fills that within ~130 batches.
    let filler = mnt.0.join("filler");
    fill(&filler, 2 << 20);
    let mut refusals = 0;
    while refusals == 0 {
        assert!(acked < 1000, "the disk never filled up");
        match produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)) {
            (0, base) => {
                assert_eq!(base, (acked * RECORDS) as i64);
                acked += 1;
            }
            (KAFKA_STORAGE_ERROR, _) => refusals += 1,
            (e, _) => panic!("produce on a full disk: error {e}, want KAFKA_STORAGE_ERROR"),
        }
    }
    // Still full: refused at once, every time; reads go on and see only what was acknowledged.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)).0, KAFKA_STORAGE_ERROR);
        assert!(t.elapsed() < Duration::from_secs(5), "a failed store answers without waiting");
        std::thread::sleep(Duration::from_millis(100));
    }
    check(&mut c, acked, "while the disk is full");
    assert!(kopd.is_running());

    // Free the space: the retried batch (same producer sequence) is taken, exactly once.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)) {
            (0, base) => {
                assert_eq!(base, (acked * RECORDS) as i64, "no gap where the refused batches were");
                acked += 1;
                break;
            }
            (KAFKA_STORAGE_ERROR, _) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            (e, _) => panic!("writes did not resume after space was freed: error {e}"),
        }
    }
    for _ in 0..20 {
        assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)), (0, (acked * RECORDS) as i64));
        acked += 1;
    }
    // A retry of an acknowledged batch is a duplicate: its original offset, nothing stored.
    let last = acked - 1;
    assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, last)), (0, (last * RECORDS) as i64));
    check(&mut c, acked, "after resuming");

    // kill -9 and restart: the same records, nothing else; the producer continues.
    drop(c);
    kopd.kill9();
    let kopd = Kopd::start(&data, 1, &args);
    let mut c = Conn::connect(kopd.addr(0));
    check(&mut c, acked, "after kill -9 and restart");
    assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, last)), (0, (last * RECORDS) as i64));
    assert_eq!(produce(&mut c, TOPIC, 0, idempotent_batch(pid, epoch, 0, acked)), (0, (acked * RECORDS) as i64));
    check(&mut c, acked + 1, "after restart and one more batch");
    drop(kopd);
}
