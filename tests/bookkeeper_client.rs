//! kopd's BookKeeper client against a real cluster (ZooKeeper + bookies started by
//! scripts/bookkeeper-cluster.sh): writes and reads at several quorums, ledgers that
//! BookKeeper's own shell reads, recovery with fencing, an ensemble change when a bookie dies
//! mid-write, reads that fall back when a bookie is down.

mod common;

use std::future::Future;
use std::process::Output;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bookkeeper::BookKeeperCluster;
use futures_util::future::join_all;
use kopd::runtime::{CoreSpec, start_core};
use kopd::storage::bookkeeper::metadata::{LedgerMetadata, ledger_path};
use kopd::storage::bookkeeper::{BookKeeperConfig, BookKeeperStore, DigestType};
use kopd::storage::{LedgerStore, StorageError};
use kopd::zookeeper::ZooKeeper;

/// Runs `f` on a fresh executor core (the client is core-local) and returns its output.
fn on_core<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let spec = CoreSpec { index: 0, cpu: None, io_memory: 1 << 20, spin_before_park: Duration::ZERO };
    start_core(spec, f).expect("start core").join().expect("core finished")
}

fn zk(c: &BookKeeperCluster) -> ZooKeeper {
    ZooKeeper::connect(&c.zk_connect(), Duration::from_secs(10), 1024).expect("ZooKeeper session")
}

fn config(c: &BookKeeperCluster, e: usize, w: usize, a: usize) -> BookKeeperConfig {
    with_digest(c, e, w, a, DigestType::Crc32c)
}

fn with_digest(c: &BookKeeperCluster, e: usize, w: usize, a: usize, digest: DigestType) -> BookKeeperConfig {
    BookKeeperConfig {
        digest,
        metadata_service_uri: c.metadata_service_uri(),
        ensemble: e,
        write_quorum: w,
        ack_quorum: a,
        add_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn payload(i: usize) -> Bytes {
    let mut v = format!("entry-{i:06}-").into_bytes();
    v.resize(100 + i % 900, b'a' + (i % 26) as u8);
    Bytes::from(v)
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Appends `range` in order, checking that each completes only once all earlier ones are
/// durable (the LAC is contiguous), and returns the ids.
async fn append_all(
    store: &Rc<BookKeeperStore>,
    ledger: u64,
    range: std::ops::Range<usize>,
) -> Result<Vec<u64>, StorageError> {
    let futs: Vec<_> = range.clone().map(|i| store.append(ledger, payload(i).into())).collect();
    let checks = futs.into_iter().map(|f| {
        let store = store.clone();
        async move {
            let id = f.await?;
            let lac = store.last_entry(ledger);
            assert!(lac >= Some(id), "entry {id} completed before the LAC ({lac:?}) reached it");
            Ok::<u64, StorageError>(id)
        }
    });
    join_all(checks).await.into_iter().collect()
}

async fn read_back(store: &BookKeeperStore, ledger: u64, count: usize) {
    for i in 0..count {
        let got = store.read(ledger, i as u64).await.unwrap_or_else(|e| panic!("read {ledger}/{i}: {e}"));
        assert_eq!(got, payload(i), "entry {i} of ledger {ledger}");
    }
}

fn metadata(zk: &ZooKeeper, ledger: u64) -> LedgerMetadata {
    let (data, _) = futures_lite::future::block_on(zk.get(&ledger_path("/ledgers", ledger)))
        .expect("get metadata")
        .expect("metadata node exists");
    LedgerMetadata::decode(&data).expect("decode metadata")
}

#[test]
fn bk_write_read_close_recover_and_fallback_on_three_bookies() {
    let c = BookKeeperCluster::start(3);
    let zk = zk(&c);

    // Write, read, close at 1/1/1 and 3/2/2 (Pulsar's CRC32C digest), and 2/2/1 with CRC32.
    let mut closed = Vec::new();
    for (e, w, a, d) in [(1, 1, 1, DigestType::Crc32c), (3, 2, 2, DigestType::Crc32c), (2, 2, 1, DigestType::Crc32)] {
        let (cfg, zkh) = (with_digest(&c, e, w, a, d), zk.clone());
        let ledger = on_core(move || async move {
            let store = BookKeeperStore::open(0, cfg, zkh).expect("open store");
            let ledger = store.create_ledger("public/default/persistent/t-partition-0").await.expect("create");
            let ids = append_all(&store, ledger, 0..300).await.expect("appends");
            assert_eq!(ids, (0..300).collect::<Vec<u64>>());
            assert_eq!(store.last_entry(ledger), Some(299));
            assert_eq!(store.pending_entries(ledger), 0);
            read_back(&store, ledger, 300).await;
            assert!(matches!(store.read(ledger, 300).await, Err(StorageError::NoSuchEntry { .. })));
            store.close_ledger(ledger).await.expect("close");
            assert!(store.append(ledger, payload(0).into()).await.is_err(), "append after close");
            read_back(&store, ledger, 300).await;
            ledger
        });
        let m = metadata(&zk, ledger);
        assert_eq!((m.ensemble_size, m.write_quorum, m.ack_quorum, m.digest), (e, w, a, d));
        assert_eq!(m.last_entry, 299);
        assert_eq!(m.length, (0..300).map(|i| payload(i).len() as i64).sum::<i64>());
        assert_eq!(m.custom.get("application").map(Vec::as_slice), Some(&b"pulsar"[..]));
        closed.push(ledger);
    }

    // BookKeeper's own shell reads kopd's metadata and entries (digests checked by its client).
    for &ledger in &closed {
        let out = c.bkshell(&["ledgermetadata", "-ledgerid", &ledger.to_string()]);
        let t = text(&out);
        assert!(out.status.success(), "ledgermetadata: {t}");
        assert!(t.contains("CLOSED") && t.contains("lastEntryId=299"), "ledgermetadata: {t}");
        let out = c.bkshell(&[
            "readledger",
            "-ledgerid",
            &ledger.to_string(),
            "-msg",
            "-firstentryid",
            "298",
            "-lastentryid",
            "299",
        ]);
        let t = text(&out);
        assert!(out.status.success(), "readledger: {t}");
        assert!(t.contains("entry-000298-") && t.contains("entry-000299-"), "readledger: {t}");
    }

    // Recovery: a writer that never closes; a second store fences and recovers the ledger.
    let (cfg, zkh) = (config(&c, 3, 2, 2), zk.clone());
    let recovered = on_core(move || async move {
        let old = BookKeeperStore::open(0, cfg.clone(), zkh.clone()).expect("open old");
        let ledger = old.create_ledger("public/default/persistent/r").await.expect("create");
        append_all(&old, ledger, 0..120).await.expect("appends");
        let new = BookKeeperStore::open(0, cfg, zkh).expect("open new");
        assert!(
            matches!(new.read(ledger, 0).await, Err(StorageError::Unavailable(_))),
            "open ledger readable before recovery"
        );
        let last = new.recover_ledger(ledger).await.expect("recover");
        assert_eq!(last, Some(119), "every acknowledged entry is in the recovered ledger");
        assert_eq!(new.last_entry(ledger), Some(119));
        read_back(&new, ledger, 120).await;
        // The old writer is fenced: its next add fails, and is never acknowledged.
        let r = old.append(ledger, payload(120).into()).await;
        assert!(matches!(r, Err(StorageError::Fenced(l)) if l == ledger), "old writer after recovery: {r:?}");
        assert!(old.failures() >= 1);
        assert!(old.close_ledger(ledger).await.is_err());
        // Recovering a closed ledger changes nothing.
        assert_eq!(new.recover_ledger(ledger).await.expect("again"), Some(119));

        // Recovered while its writer has adds in flight, then taken back by that writer's
        // store (a partition that moved away and came back): the store reads what recovery
        // sealed, not its stale writer's view (whose LAC can lag entries the bookies took).
        let raced = old.create_ledger("public/default/persistent/raced").await.expect("create");
        append_all(&old, raced, 0..50).await.expect("appends");
        let adds: Vec<_> = (50..1050).map(|i| old.append(raced, payload(i).into())).collect();
        let sealed = new.recover_ledger(raced).await.expect("recover mid-write").expect("not empty");
        let acked: Vec<u64> = join_all(adds).await.into_iter().filter_map(Result::ok).collect();
        assert!(acked.iter().all(|id| *id <= sealed), "acknowledged past the recovered end {sealed}: {acked:?}");
        assert_eq!(old.recover_ledger(raced).await.expect("taken back"), Some(sealed));
        assert_eq!(old.last_entry(raced), Some(sealed));
        read_back(&old, raced, sealed as usize + 1).await;
        eprintln!("raced recovery: {} of 1000 in-flight adds acknowledged, ledger sealed at {sealed}", acked.len());
        ledger
    });
    let m = metadata(&zk, recovered);
    assert_eq!(m.state, kopd::storage::bookkeeper::metadata::LedgerState::Closed);
    assert_eq!(m.last_entry, 119);
    let out = c.bkshell(&[
        "readledger",
        "-ledgerid",
        &recovered.to_string(),
        "-msg",
        "-firstentryid",
        "119",
        "-lastentryid",
        "119",
    ]);
    assert!(out.status.success() && text(&out).contains("entry-000119-"), "readledger recovered: {}", text(&out));

    // Read fallback: the bookie first in the write set of most entries is down.
    let ledger = closed[1];
    let down = metadata(&zk, ledger).segments[0].ensemble[0].0.clone();
    let idx = c.bookie_addrs().iter().position(|b| *b == down).expect("ensemble bookie is ours");
    c.kill_bookie(idx);
    let (cfg, zkh) = (config(&c, 3, 2, 2), zk.clone());
    let took = on_core(move || async move {
        let store = BookKeeperStore::open(0, cfg, zkh).expect("open");
        let t = Instant::now();
        read_back(&store, ledger, 300).await;
        let took = t.elapsed();
        assert_eq!(store.recover_ledger(ledger).await.expect("closed"), Some(299));
        // Once ZooKeeper drops the dead bookie, 2 writable bookies are fewer than E = 3.
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.failure().is_none() {
            assert!(Instant::now() < deadline, "store never reported too few bookies");
            kopd::runtime::sleep(Duration::from_millis(200)).await;
        }
        assert!(store.failure().is_some_and(|why| why.contains("fewer than the ensemble")), "{:?}", store.failure());
        assert!(store.failures() >= 1);
        assert!(matches!(store.create_ledger("x").await, Err(StorageError::Unavailable(_))));
        took
    });
    eprintln!("300 reads with a write-set bookie down: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(30), "fallback reads took {took:?}");

    let (cfg, zkh) = (config(&c, 1, 1, 1), zk.clone());
    let first = closed[0];
    on_core(move || async move {
        let store = BookKeeperStore::open(0, cfg, zkh).expect("open");
        store.delete_ledger(first).await.expect("delete");
        assert!(matches!(store.read(first, 0).await, Err(StorageError::NoSuchLedger(_))));
        store.delete_ledger(first).await.expect("delete is idempotent");
    });
}

#[test]
fn bk_a_bookie_killed_mid_write_is_replaced_and_no_acked_entry_is_lost() {
    let c = BookKeeperCluster::start(4);
    let zk = zk(&c);
    let (cfg, zkh) = (config(&c, 3, 2, 2), zk.clone());
    let (to_test, from_core) = (async_channel::bounded::<u64>(1), async_channel::bounded::<()>(1));
    let (ledger_tx, ledger_rx) = (to_test.0, to_test.1);
    let (killed_tx, killed_rx) = (from_core.0, from_core.1);
    let core = std::thread::spawn(move || {
        on_core(move || async move {
            let store = BookKeeperStore::open(0, cfg, zkh).expect("open");
            let ledger = store.create_ledger("public/default/persistent/e").await.expect("create");
            append_all(&store, ledger, 0..200).await.expect("before the kill");
            // Keep appending while the bookie dies, and for a while after.
            ledger_tx.send(ledger).await.expect("tell the test");
            let mut next = 200;
            loop {
                append_all(&store, ledger, next..next + 20).await.expect("appends across the kill");
                next += 20;
                if killed_rx.try_recv().is_ok() {
                    break;
                }
                assert!(next < 1_000_000, "the test never said the bookie was killed");
            }
            append_all(&store, ledger, next..next + 200).await.expect("after the ensemble change");
            next += 200;
            read_back(&store, ledger, next).await;
            store.close_ledger(ledger).await.expect("close");
            (ledger, next)
        })
    });
    let ledger = ledger_rx.recv_blocking().expect("ledger id");
    let before = metadata(&zk, ledger);
    let victim = before.segments[0].ensemble[1].0.clone();
    let victim_idx = c.bookie_addrs().iter().position(|b| *b == victim).expect("ensemble bookie is ours");
    c.kill_bookie(victim_idx);
    killed_tx.send_blocking(()).expect("tell the core");
    let (ledger, written) = core.join().expect("core thread");
    eprintln!("{written} entries written across the kill of {victim}");

    let m = metadata(&zk, ledger);
    assert!(m.segments.len() >= 2, "an ensemble change added a segment: {m:?}");
    let last_ensemble = &m.segments[m.segments.len() - 1].ensemble;
    assert!(!last_ensemble.iter().any(|b| b.0 == victim), "the dead bookie left the ensemble: {m:?}");
    assert_eq!(m.last_entry, written as i64 - 1);
    let last = (written - 1).to_string();
    let out = c.bkshell(&[
        "readledger",
        "-ledgerid",
        &ledger.to_string(),
        "-msg",
        "-firstentryid",
        "0",
        "-lastentryid",
        &last,
    ]);
    let t = text(&out);
    assert!(out.status.success(), "readledger: {t}");
    for i in [0, 199, written / 2, written - 1] {
        assert!(t.contains(&format!("entry-{i:06}-")), "readledger lacks entry {i}: {t}");
    }

    // Speculative reads: a bookie of the last ensemble hangs (SIGSTOP); reads whose first
    // bookie it is are answered by the next one after the speculative timeout, not the read timeout.
    let slow = last_ensemble[0].0.clone();
    let idx = c.bookie_addrs().iter().position(|b| *b == slow).expect("ensemble bookie is ours");
    let pid = std::fs::read_to_string(c.dir().join(format!("bookie-{idx}.pid"))).expect("bookie pid");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, pid.trim()]).status().expect("kill").success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let mut cfg = config(&c, 3, 2, 2);
    cfg.speculative_read_timeout = Duration::from_millis(300);
    cfg.read_timeout = Duration::from_secs(20);
    let zkh = zk.clone();
    let took = on_core(move || async move {
        let store = BookKeeperStore::open(0, cfg, zkh).expect("open");
        let t = Instant::now();
        for i in written - 30..written {
            let got = store.read(ledger, i as u64).await.unwrap_or_else(|e| panic!("read {i}: {e}"));
            assert_eq!(got, payload(i));
        }
        t.elapsed()
    });
    signal("-CONT");
    eprintln!("30 reads with a hung bookie: {} ms", took.as_millis());
    // About 10 of the 30 start at the hung bookie: each waits the speculative timeout once.
    assert!(took >= Duration::from_millis(300), "no read waited for the hung bookie: {took:?}");
    assert!(took < Duration::from_secs(15), "speculative reads did not kick in: {took:?}");

    // A bookie that hangs mid-write: its adds time out and it is replaced like a dead one.
    c.start_bookie(victim_idx);
    // Registered (and writable) before the client starts: it is the only replacement there is.
    assert!(c.wait_writable(&c.bookie_addrs(), Duration::from_secs(60)), "bookie {victim_idx} did not come back");
    let mut cfg = config(&c, 3, 2, 2);
    cfg.add_timeout = Duration::from_secs(2);
    let zkh = zk.clone();
    let (to_test, from_core) = (async_channel::bounded::<u64>(1), async_channel::bounded::<()>(1));
    let core = std::thread::spawn(move || {
        on_core(move || async move {
            let store = BookKeeperStore::open(0, cfg, zkh).expect("open");
            let ledger = store.create_ledger("public/default/persistent/h").await.expect("create");
            append_all(&store, ledger, 0..100).await.expect("before the hang");
            to_test.0.send(ledger).await.expect("tell the test");
            from_core.1.recv().await.expect("bookie hung");
            let t = Instant::now();
            append_all(&store, ledger, 100..3100).await.expect("across the hang");
            let took = t.elapsed();
            read_back(&store, ledger, 3100).await;
            store.close_ledger(ledger).await.expect("close");
            (ledger, took)
        })
    });
    let ledger = to_test.1.recv_blocking().expect("ledger id");
    let hung = metadata(&zk, ledger).segments[0].ensemble[0].0.clone();
    let hidx = c.bookie_addrs().iter().position(|b| *b == hung).expect("ensemble bookie is ours");
    let hpid = std::fs::read_to_string(c.dir().join(format!("bookie-{hidx}.pid"))).expect("bookie pid");
    let hsignal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, hpid.trim()]).status().expect("kill").success();
        assert!(ok, "kill {sig} {hpid}");
    };
    hsignal("-STOP");
    from_core.0.send_blocking(()).expect("tell the core");
    let joined = core.join();
    hsignal("-CONT");
    let (ledger, took) = joined.expect("core thread");
    eprintln!("3000 appends across a hung bookie: {} ms", took.as_millis());
    let m = metadata(&zk, ledger);
    assert!(!m.segments[m.segments.len() - 1].ensemble.iter().any(|b| b.0 == hung), "hung bookie replaced: {m:?}");
    assert_eq!(m.last_entry, 3099);
}
