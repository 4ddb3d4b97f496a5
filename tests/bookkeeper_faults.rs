//! kopd on its BookKeeper backend under faults, against real ZooKeeper and bookies
//! (scripts/bookkeeper-cluster.sh through tests/common/bookkeeper.rs): a bookie killed
//! mid-production, kopd SIGKILLed and restarted under load, ZooKeeper paused past kopd's
//! session timeout, a bookie restarted under a reader, and BookKeeper's own shell reading
//! what kopd wrote. Every test checks that each acknowledged record is stored exactly once,
//! in order, at the offset its acknowledgement named (client.rs).
//!
//! The tests run one at a time (`serial`): the machine has two cores and each cluster is
//! several JVMs, and the ZooKeeper pause would stall any other test of the shared cluster.
//! All but the first share one 3-bookie cluster (each kopd under its own ZooKeeper chroot),
//! which saves a cluster start per test; the first needs four bookies.

mod common;

#[path = "bookkeeper_faults/client.rs"]
mod client;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Producer, try_read_all, verify};
use common::bookkeeper::BookKeeperCluster;
use common::{Conn, Kopd, create_topic, free_ports, temp_dir};
use futures_lite::future::block_on;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use kopd::log::ml_metadata::ManagedLedgerInfo;
use kopd::storage::bookkeeper::metadata::{LedgerMetadata, LedgerState, ledger_path};
use kopd::zookeeper::ZooKeeper;

const TOPIC: &str = "faults";

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three bookies, every one writable when a test starts (a test that stops one restarts it).
fn shared_cluster() -> &'static BookKeeperCluster {
    static CLUSTER: OnceLock<BookKeeperCluster> = OnceLock::new();
    let c = CLUSTER.get_or_init(|| BookKeeperCluster::start(3));
    assert!(c.wait_writable(&c.bookie_addrs(), Duration::from_secs(30)), "a bookie of the shared cluster is down");
    c
}

/// kopd's settings for `c` at quorums `e/w/a`, its metadata under `chroot`.
/// `__consumer_offsets` gets one partition: on BookKeeper every partition costs a ledger
/// recovery and a new ledger at each start, and these tests use no group.
fn kopd_args(c: &BookKeeperCluster, chroot: &str, (e, w, a): (usize, usize, usize), extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for kv in [
        "storage=bookkeeper".to_string(),
        format!("metadata.service.uri={}", c.metadata_service_uri()),
        format!("metadata.store=zk://{}{chroot}", c.zk_connect()),
        format!("bookkeeper.ensemble.size={e}"),
        format!("bookkeeper.write.quorum={w}"),
        format!("bookkeeper.ack.quorum={a}"),
        "offsets.topic.num.partitions=1".to_string(),
    ] {
        args.push("--set".to_string());
        args.push(kv);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// One kopd (one core) of a test: its data dir, port and settings, for restarts.
struct Server {
    dir: PathBuf,
    port: u16,
    args: Vec<String>,
    kopd: Kopd,
}

impl Server {
    fn start(name: &str, args: Vec<String>) -> Server {
        let dir = temp_dir(name);
        let port = free_ports(1);
        let kopd = Kopd::start_exact(&dir, 1, port, &args);
        Server { dir, port, args, kopd }
    }

    /// SIGKILL, then the same kopd again on the same data dir and port.
    fn kill_and_restart(&mut self) {
        self.kopd.kill9();
        self.kopd = Kopd::start_exact(&self.dir, 1, self.port, &self.args);
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.kopd.addr(0))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn zk(c: &BookKeeperCluster) -> ZooKeeper {
    ZooKeeper::connect(&c.zk_connect(), Duration::from_secs(10), 64).expect("ZooKeeper session")
}

/// The ledgers of `topic`'s partition 0, oldest first, as kopd's managed ledger lists them.
fn ledgers(zk: &ZooKeeper, chroot: &str, topic: &str) -> Vec<u64> {
    let path = format!("{chroot}/managed-ledgers/public/default/persistent/{topic}-partition-0");
    let (data, _) = block_on(zk.get(&path)).expect("get the ledger list").expect("the managed ledger exists");
    let info = ManagedLedgerInfo::from_bytes(&data).expect("decode ManagedLedgerInfo");
    info.ledger_info.iter().map(|l| l.ledger_id as u64).collect()
}

fn ledger_meta(zk: &ZooKeeper, ledger: u64) -> LedgerMetadata {
    let (data, _) =
        block_on(zk.get(&ledger_path("/ledgers", ledger))).expect("get ledger metadata").expect("the ledger exists");
    LedgerMetadata::decode(&data).expect("decode ledger metadata")
}

/// Waits (bounded) until kopd's start has recovered and closed `ledger`.
fn wait_closed(zk: &ZooKeeper, ledger: u64) -> LedgerMetadata {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = ledger_meta(zk, ledger);
        if m.state == LedgerState::Closed {
            return m;
        }
        assert!(Instant::now() < deadline, "ledger {ledger} still {:?} 30 s after kopd started", m.state);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bookie_index(c: &BookKeeperCluster, addr: &str) -> usize {
    c.bookie_addrs().iter().position(|b| b == addr).unwrap_or_else(|| panic!("{addr} is not a bookie of the cluster"))
}

/// A small xorshift generator for the kill schedule; `KOPD_FAULTS_SEED` replays one.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("KOPD_FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("kill schedule seed {seed} (KOPD_FAULTS_SEED replays it)");
        Rng(seed | 1)
    }

    fn millis(&mut self, below: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % below)
    }
}

#[test]
fn bookie_killed_mid_production_changes_the_ensemble_and_loses_nothing() {
    let _serial = serial();
    let c = BookKeeperCluster::start(4);
    let chroot = "/faults-ensemble";
    let mut s = Server::start("bkf-ensemble", kopd_args(&c, chroot, (3, 2, 2), &[]));
    create_topic(&mut s.conn(), TOPIC, 1, &[]);
    let p = Producer::start(s.kopd.addr(0), TOPIC);
    assert!(p.wait_acks(50, Duration::from_secs(60)), "50 batches not acknowledged within 60 s");

    // A bookie of the ensemble now taking the partition's entries: with E=3 of 4 bookies
    // its death forces an ensemble change (the fourth bookie replaces it).
    let zk = zk(&c);
    let ledger = *ledgers(&zk, chroot, TOPIC).last().expect("a current ledger");
    let before = ledger_meta(&zk, ledger);
    let victim_addr = before.segments.last().expect("a segment").ensemble[0].0.clone();
    let victim = bookie_index(&c, &victim_addr);
    let acked_at_kill = p.acked();
    let killing = Instant::now();
    c.kill_bookie(victim);
    let killed = Instant::now();
    assert!(
        p.wait_acks(acked_at_kill + 200, Duration::from_secs(60)),
        "production stalled after bookie {victim_addr} was killed: {} acks since",
        p.acked() - acked_at_kill
    );
    let first_ack_after =
        p.with(|pr| pr.acks.iter().find(|a| a.at > killed).map(|a| a.at - killed)).expect("an ack after the kill");
    // The longest wait for an ack from the moment the kill began: the ensemble change.
    let longest_gap = p.with(|pr| {
        let times: Vec<Instant> = pr.acks.iter().map(|a| a.at).filter(|t| *t > killing).collect();
        times.windows(2).map(|w| w[1] - w[0]).chain(times.first().map(|t| *t - killing)).max()
    });
    let progress = p.finish();

    let after = ledger_meta(&zk, ledger);
    assert!(after.segments.len() > before.segments.len(), "no ensemble change in ledger {ledger}: {after:?}");
    let ensemble = &after.segments.last().expect("a segment").ensemble;
    assert!(!ensemble.iter().any(|b| b.0 == victim_addr), "{victim_addr} is still in the ensemble: {after:?}");
    assert_eq!(ledgers(&zk, chroot, TOPIC).last(), Some(&ledger), "the partition went on in the same ledger");
    let stored = verify(&mut s.conn(), TOPIC, &progress.acks);

    // A fresh kopd (empty tail cache) reads it all from the bookies, the dead one included in
    // the first segment's ensemble: those reads fall back to the other replica.
    s.kill_and_restart();
    assert_eq!(verify(&mut s.conn(), TOPIC, &progress.acks), stored);
    eprintln!(
        "ensemble change: {} batches acked ({acked_at_kill} before the kill of {victim_addr}), {stored} stored; \
         first ack {first_ack_after:?} after the bookie was dead, longest wait for an ack {longest_gap:?}; \
         segments {}",
        progress.acks.len(),
        after.segments.len()
    );
}

#[test]
fn kopd_sigkilled_and_restarted_ten_times_keeps_every_acknowledged_record() {
    let _serial = serial();
    let c = shared_cluster();
    let mut s = Server::start("bkf-restarts", kopd_args(c, "/faults-restarts", (2, 2, 2), &[]));
    create_topic(&mut s.conn(), TOPIC, 1, &[]);
    let p = Producer::start(s.kopd.addr(0), TOPIC);
    let mut rng = Rng::new();
    let mut resumed = Vec::new();
    for cycle in 0..10 {
        // Produce resumes after each restart (and the first time, after the start).
        let floor = p.acked();
        let since = Instant::now();
        assert!(
            p.wait_acks(floor + 10, Duration::from_secs(60)),
            "cycle {cycle}: produce did not resume within 60 s of the restart"
        );
        resumed.push(since.elapsed());
        std::thread::sleep(rng.millis(600));
        s.kill_and_restart();
    }
    let floor = p.acked();
    assert!(p.wait_acks(floor + 10, Duration::from_secs(60)), "produce did not resume after the last restart");
    let progress = p.finish();
    let stored = verify(&mut s.conn(), TOPIC, &progress.acks);
    let attempts = progress.answers.len();
    let refused = progress.answers.iter().filter(|a| a.code != Some(0)).count();
    eprintln!(
        "10 SIGKILLs: {} batches acked, {stored} stored, {attempts} requests ({refused} unanswered or refused); \
         time to 10 acks after each start: {resumed:?}",
        progress.acks.len()
    );
}

#[test]
fn zookeeper_session_loss_stops_acknowledgements_until_it_is_back() {
    let _serial = serial();
    let c = shared_cluster();
    const SESSION: Duration = Duration::from_secs(4);
    let args = kopd_args(c, "/faults-zk", (2, 2, 2), &["--set", "zookeeper.session.timeout.ms=4000"]);
    let s = Server::start("bkf-zk", args);
    create_topic(&mut s.conn(), TOPIC, 1, &[]);
    let p = Producer::start(s.kopd.addr(0), TOPIC);
    assert!(p.wait_acks(30, Duration::from_secs(60)), "30 batches not acknowledged within 60 s");

    // Appends to the open ledger need no ZooKeeper, so acks may go on for a while; once the
    // session is given up (a session timeout, plus the health check's period) there must be
    // none: kopd has no writer without a session.
    let paused = Instant::now();
    c.pause_zk();
    std::thread::sleep(Duration::from_secs(12));
    let acked_in_pause = p.acked();
    let resumed = Instant::now();
    c.resume_zk();
    assert!(
        p.wait_acks(acked_in_pause + 20, Duration::from_secs(60)),
        "produce did not recover within 60 s of ZooKeeper's return"
    );
    let progress = p.finish();

    // The session timeout, plus the store's once-a-second health check and a margin.
    let lost_by = paused + SESSION + Duration::from_secs(2);
    let late: Vec<Duration> =
        progress.acks.iter().filter(|a| a.at > lost_by && a.at < resumed).map(|a| a.at - paused).collect();
    assert!(late.is_empty(), "acks {late:?} after the pause began, past the session timeout");
    // Refused at once with KAFKA_STORAGE_ERROR (56), which Kafka clients retry.
    let in_loss: Vec<Option<i16>> =
        progress.answers.iter().filter(|a| a.sent > lost_by && a.at < resumed).map(|a| a.code).collect();
    let refused = in_loss.iter().filter(|c| **c == Some(56)).count();
    assert!(refused > 0, "no produce request was refused while the session was lost: {in_loss:?}");
    assert_eq!(refused, in_loss.len(), "answers while the session was lost: {in_loss:?}");
    let last_ack = progress.acks.iter().filter(|a| a.at < resumed).map(|a| a.at).max();
    let first_back = progress.acks.iter().find(|a| a.at > resumed).map(|a| a.at - resumed);
    let stored = verify(&mut s.conn(), TOPIC, &progress.acks);
    eprintln!(
        "ZooKeeper paused 12 s: last ack {:?} after the pause began, {refused} requests refused while the session \
         was lost, first ack {first_back:?} after the resume; {} acked, {stored} stored",
        last_ack.map(|t| t.saturating_duration_since(paused)),
        progress.acks.len()
    );
    // The bookies' sessions expired in the pause too; the next test needs them registered.
    assert!(c.wait_writable(&c.bookie_addrs(), Duration::from_secs(30)), "bookies did not register again");
}

/// One reader pass over the whole partition: whether it read exactly what was written.
struct Pass {
    done: Instant,
    took: Duration,
    error: Option<String>,
}

#[test]
fn reads_fall_back_to_the_other_replica_while_a_bookie_restarts() {
    let _serial = serial();
    let c = shared_cluster();
    let chroot = "/faults-reads";
    let mut s = Server::start("bkf-reads", kopd_args(c, chroot, (2, 2, 2), &[]));
    create_topic(&mut s.conn(), TOPIC, 1, &[]);
    let p = Producer::start(s.kopd.addr(0), TOPIC);
    assert!(p.wait_acks(150, Duration::from_secs(60)), "150 batches not acknowledged within 60 s");
    let progress = p.finish();
    verify(&mut s.conn(), TOPIC, &progress.acks);
    let expected = Arc::new(try_read_all(&mut s.conn(), TOPIC).expect("read back"));

    // A fresh kopd: its tail cache is empty, so every read goes to the bookies.
    s.kill_and_restart();
    let zk = zk(c);
    let data_ledger = ledgers(&zk, chroot, TOPIC)[0];
    let meta = wait_closed(&zk, data_ledger);
    let victim_addr = meta.segments[0].ensemble[0].0.clone();
    let victim = bookie_index(c, &victim_addr);

    let passes: Arc<Mutex<Vec<Pass>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (passes, stop, addr, expected) = (passes.clone(), stop.clone(), s.kopd.addr(0), expected.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let limit = Instant::now() + Duration::from_secs(180);
            while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                let t = Instant::now();
                let error = match try_read_all(&mut conn, TOPIC) {
                    Ok(got) if got == *expected => None,
                    Ok(got) => Some(format!("read {} records, not the {} written", got.len(), expected.len())),
                    Err(e) => {
                        conn = Conn::connect(addr);
                        Some(e)
                    }
                };
                passes.lock().unwrap().push(Pass { done: Instant::now(), took: t.elapsed(), error });
            }
        })
    };
    let passes_since = |t: Instant| passes.lock().unwrap().iter().filter(|p| p.done > t).count();
    let wait_passes = |t: Instant, n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while passes_since(t) < n {
            assert!(Instant::now() < deadline, "fewer than {n} reader passes within 60 s {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_passes(Instant::now() - Duration::from_secs(3600), 1, "after the restart");
    let killed = Instant::now();
    c.kill_bookie(victim);
    wait_passes(killed, 3, "with a bookie down");
    c.start_bookie(victim);
    let back = Instant::now();
    wait_passes(back, 3, "after the bookie came back");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");

    let passes = passes.lock().unwrap();
    let failed: Vec<&String> = passes.iter().filter_map(|p| p.error.as_ref()).collect();
    assert!(failed.is_empty(), "reader passes failed: {failed:?}");
    let during = passes.iter().filter(|p| p.done > killed && p.done < back).count();
    let slowest = passes.iter().map(|p| p.took).max().unwrap_or_default();
    eprintln!(
        "{} passes over {} records ({during} while {victim_addr} was down or restarting), slowest {slowest:?}",
        passes.len(),
        expected.len()
    );
}

/// Standard base64 with padding: BookKeeper's shell prints custom metadata values as
/// `base64:<value>`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The entries of `bkshell -entryformat hex readledger -msg` output, in order. Each entry's
/// body is a hex dump (commons-io `HexDump`): an 8-digit offset, then 16 byte columns of
/// "XX " each, then the characters; lines whose offset restarts at 0 begin a new entry.
fn hex_entries(out: &str) -> Vec<Bytes> {
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for line in out.lines() {
        let Some(offset) = line.get(..8).and_then(|o| u64::from_str_radix(o, 16).ok()) else { continue };
        if line.as_bytes().get(8) != Some(&b' ') {
            continue;
        }
        if offset == 0 {
            entries.push(Vec::new());
        }
        let Some(entry) = entries.last_mut() else { continue };
        assert_eq!(entry.len() as u64, offset, "hex dump line out of sequence: {line}");
        for col in 0..16 {
            let at = 9 + 3 * col;
            match line.get(at..at + 2).map(|h| u8::from_str_radix(h, 16)) {
                Some(Ok(b)) => entry.push(b),
                _ => break,
            }
        }
    }
    entries.into_iter().map(Bytes::from).collect()
}

#[test]
fn bookkeeper_shell_reads_kopds_ledgers() {
    let _serial = serial();
    let c = shared_cluster();
    let chroot = "/faults-shell";
    let topic = "shell";
    let mut s = Server::start("bkf-shell", kopd_args(c, chroot, (2, 2, 2), &[]));
    let mut conn = s.conn();
    create_topic(&mut conn, topic, 1, &[]);
    let value = |b: usize, i: usize| Bytes::from(format!("shell value {b}.{i}"));
    for b in 0..4 {
        let records: Vec<_> =
            (0..3).map(|i| common::record(i, Some(Bytes::from(format!("key {b}.{i}"))), value(b, i))).collect();
        assert_eq!(
            common::produce(&mut conn, topic, 0, common::encode(&records, Compression::None)),
            (0, 3 * b as i64)
        );
    }
    drop(conn);
    // The restart recovers and closes the ledger, so the shell reads it to its end.
    s.kill_and_restart();
    let zk = zk(c);
    let ledger = ledgers(&zk, chroot, topic)[0];
    let meta = wait_closed(&zk, ledger);
    assert_eq!(meta.last_entry, 3, "one entry per produced batch");

    let text = |o: &std::process::Output| {
        format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let out = c.bkshell(&["listledgers", "-m"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "listledgers -m: {}", text(&out));
    let ours = listed
        .split("ledgerID: ")
        .find(|block| block.lines().next().map(str::trim) == Some(ledger.to_string().as_str()))
        .unwrap_or_else(|| panic!("ledger {ledger} is not listed: {}", text(&out)));
    for (k, v) in [
        ("application", "pulsar".to_string()),
        ("component", "managed-ledger".to_string()),
        ("pulsar/managed-ledger", format!("public/default/persistent/{topic}-partition-0")),
    ] {
        let want = format!("{k}=base64:{}", base64(v.as_bytes()));
        assert!(ours.contains(&want), "listledgers -m lacks {want} ({k}={v}) for ledger {ledger}: {ours}");
    }

    let out = c.bkshell(&["ledgermetadata", "-ledgerid", &ledger.to_string()]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("CLOSED") && t.contains("lastEntryId=3"), "ledgermetadata: {t}");

    let out = c.bkshell(&[
        "-entryformat",
        "hex",
        "readledger",
        "-ledgerid",
        &ledger.to_string(),
        "-firstentryid",
        "0",
        "-lastentryid",
        "3",
        "-msg",
    ]);
    assert!(out.status.success(), "readledger: {}", text(&out));
    let entries = hex_entries(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(entries.len(), 4, "readledger printed {} entries: {}", entries.len(), text(&out));
    for (b, raw) in entries.iter().enumerate() {
        let e = kopd::storage::entry::decode_entry(raw).unwrap_or_else(|err| panic!("entry {b}: {err}"));
        assert_eq!((e.num_messages, e.index), (3, 3 * b as i64 + 2), "entry {b}'s count and index");
        let mut payload = e.payload.clone();
        let set = RecordBatchDecoder::decode(&mut payload).unwrap_or_else(|err| panic!("entry {b}'s batch: {err}"));
        let values: Vec<Bytes> = set.records.iter().map(|r| r.value.clone().unwrap_or_default()).collect();
        assert_eq!(values, (0..3).map(|i| value(b, i)).collect::<Vec<_>>(), "entry {b}'s records");
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (3 * b as i64..3 * b as i64 + 3).collect::<Vec<_>>(), "entry {b}'s offsets");
    }
}

#[test]
fn graceful_stop_seals_the_current_ledger() {
    let _serial = serial();
    let c = shared_cluster();
    let chroot = "/faults-seal";
    let topic = "sealed";
    let mut s = Server::start("bkf-seal", kopd_args(c, chroot, (2, 2, 2), &[]));
    let mut conn = s.conn();
    create_topic(&mut conn, topic, 1, &[]);
    for b in 0..3 {
        assert_eq!(common::produce(&mut conn, topic, 0, common::batch(5, Compression::None)), (0, 5 * b));
    }
    drop(conn);
    let zk = zk(c);
    let open = ledgers(&zk, chroot, topic);
    let current = *open.last().expect("a ledger");
    assert_eq!(ledger_meta(&zk, current).state, LedgerState::Open, "the ledger taking appends is open");
    assert!(s.kopd.stop().success(), "kopd exits cleanly on SIGTERM");
    // Sealed by the stop itself (kopd is gone): closed at the last entry it acknowledged.
    let meta = ledger_meta(&zk, current);
    assert_eq!((meta.state, meta.last_entry), (LedgerState::Closed, 2), "ledger {current} after a graceful stop");
    // The next start reads the sealed ledger and goes on after it.
    s.kopd = Kopd::start_exact(&s.dir, 1, s.port, &s.args);
    let mut conn = s.conn();
    assert_eq!(common::produce(&mut conn, topic, 0, common::batch(5, Compression::None)), (0, 15));
    let (records, _) = common::read_all(&mut conn, topic, 0);
    assert_eq!(records.len(), 20, "every record once after the restart");
}

#[test]
fn restart_with_a_dead_bookie_recovers_through_an_ensemble_change() {
    let _serial = serial();
    let c = shared_cluster();
    let chroot = "/faults-recovery-change";
    let mut s = Server::start("bkf-recovery-change", kopd_args(c, chroot, (2, 2, 2), &[]));
    create_topic(&mut s.conn(), TOPIC, 1, &[]);
    let p = Producer::start(s.kopd.addr(0), TOPIC);
    assert!(p.wait_acks(50, Duration::from_secs(60)), "50 batches not acknowledged within 60 s");
    // kopd dies with its ledger open, then a bookie of that ledger dies too: the restart must
    // recover the ledger with one of its two bookies gone (2/2/2 of 3), re-adding the entries
    // past the LAC to a replacement.
    s.kopd.kill9();
    let zk = zk(c);
    let ledger = *ledgers(&zk, chroot, TOPIC).last().expect("a current ledger");
    let before = ledger_meta(&zk, ledger);
    assert_eq!(before.state, LedgerState::Open);
    let victim_addr = before.segments.last().expect("a segment").ensemble[1].0.clone();
    let victim = bookie_index(c, &victim_addr);
    c.kill_bookie(victim);
    let restarting = Instant::now();
    s.kopd = Kopd::start_exact(&s.dir, 1, s.port, &s.args);
    let floor = p.acked();
    let resumed = p.wait_acks(floor + 20, Duration::from_secs(60));
    let progress = p.finish();
    let after = wait_closed(&zk, ledger);
    let stored = verify(&mut s.conn(), TOPIC, &progress.acks);
    c.start_bookie(victim);
    assert!(c.wait_writable(&c.bookie_addrs(), Duration::from_secs(60)), "bookie {victim_addr} did not come back");
    assert!(resumed, "produce did not resume within 60 s of a restart with bookie {victim_addr} dead");
    assert!(after.segments.len() > before.segments.len(), "recovery made no ensemble change: {after:?}");
    assert!(
        !after.segments.last().expect("a segment").ensemble.iter().any(|b| b.0 == victim_addr),
        "{victim_addr} is still in the recovered ledger's last ensemble: {after:?}"
    );
    eprintln!(
        "recovery with a dead bookie: {} batches acked, {stored} stored, ledger {ledger} closed at entry {} \
         with {} segments; produce resumed {:?} after the restart",
        progress.acks.len(),
        after.last_entry,
        after.segments.len(),
        restarting.elapsed()
    );
}

/// Whether ledger `id`'s metadata node is still in ZooKeeper.
fn ledger_exists(zk: &ZooKeeper, ledger: u64) -> bool {
    block_on(zk.get(&ledger_path("/ledgers", ledger))).expect("get ledger metadata").is_some()
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retention_and_topic_deletion_delete_the_ledgers() {
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteTopicsRequest};

    let _serial = serial();
    let c = shared_cluster();
    let chroot = "/faults-retention";
    let topic = "retained";
    let s = Server::start(
        "bkf-retention",
        kopd_args(c, chroot, (2, 2, 2), &["--set", "log.retention.check.interval.ms=200"]),
    );
    let mut conn = s.conn();
    // A ledger per batch or so: each batch is larger than segment.bytes.
    // (The records' timestamps are from 2023: retention by time is off.)
    create_topic(&mut conn, topic, 1, &[("segment.bytes", "1024"), ("retention.ms", "-1")]);
    let big =
        |b: usize| -> Vec<_> { (0..10).map(|i| common::record(i, None, Bytes::from(vec![b as u8; 200]))).collect() };
    for b in 0..6 {
        assert_eq!(
            common::produce(&mut conn, topic, 0, common::encode(&big(b), Compression::None)),
            (0, 10 * b as i64)
        );
    }
    let zk = zk(c);
    let all = ledgers(&zk, chroot, topic);
    assert!(all.len() >= 4, "ledgers rolled over by size: {all:?}");
    assert!(all.iter().all(|l| ledger_exists(&zk, *l)));

    // Everything before the last two batches goes: the ledgers holding only those records are
    // deleted, from the managed ledger's list and from BookKeeper's metadata.
    let req = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(common::name(topic))
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(40)]),
    ]);
    let resp = conn.send(2, &req).expect("DeleteRecords");
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 40));
    eventually("the ledgers before offset 40 deleted", || ledgers(&zk, chroot, topic).len() < all.len());
    let kept = ledgers(&zk, chroot, topic);
    let gone: Vec<u64> = all.iter().copied().filter(|l| !kept.contains(l)).collect();
    eventually("their BookKeeper metadata removed", || gone.iter().all(|l| !ledger_exists(&zk, *l)));
    assert_eq!(common::list_offset(&mut conn, topic, 0, -2), (0, 40), "the log starts where records were deleted");
    assert_eq!(common::list_offset(&mut conn, topic, 0, -1), (0, 60));
    let (code, _, records) = common::fetch(&mut conn, topic, 0, 40);
    assert!(code == 0 && !records.is_empty(), "fetch at the new log start: error {code}");
    assert_eq!(common::fetch(&mut conn, topic, 0, 0).0, 1, "below it: OFFSET_OUT_OF_RANGE");

    // Deleting the topic deletes the rest.
    let del = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteTopicState::default().with_name(Some(common::name(topic)))]);
    assert_eq!(conn.send(6, &del).expect("DeleteTopics").responses[0].error_code, 0);
    eventually("every ledger of the deleted topic removed", || all.iter().all(|l| !ledger_exists(&zk, *l)));
    eprintln!("retention: {} ledgers, {} deleted by DeleteRecords, the rest with the topic", all.len(), gone.len());
}
