//! Store tests: the write path (round trips, group commit, rollover, flush policies,
//! backpressure). Recovery is tested in `tests_recovery.rs`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::*;

/// A scratch directory, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn temp_dir(name: &str) -> TempDir {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let pid = std::process::id();
    let d = std::env::temp_dir().join(format!("kopd-local-{name}-{pid}-{nanos}"));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

pub(super) fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

pub(super) fn cfg(dir: &Path) -> LocalStoreConfig {
    LocalStoreConfig { dir: dir.to_path_buf(), ..Default::default() }
}

pub(super) type Visited = Vec<(LedgerId, EntryId, Bytes)>;

/// Recovers `dir`, returning what was visited, and the whole store split to one core.
pub(super) fn recover_one(dir: &Path) -> (Visited, RecoveredLedgers) {
    let mut seen = Vec::new();
    let mut rec = recover(dir, &mut |l, e, b: &Bytes| seen.push((l, e, b.clone()))).unwrap();
    let ids = rec.ledger_ids();
    let part = rec.split_for_core(ids);
    assert!(rec.ledger_ids().is_empty());
    (seen, part)
}

pub(super) fn payload(l: u64, e: u64, len: usize) -> Bytes {
    let mut v = format!("ledger {l} entry {e};").into_bytes();
    v.resize(len.max(v.len()), (l * 31 + e) as u8);
    Bytes::from(v)
}

pub(super) fn segment_files(dir: &Path, core: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join(format!("core-{core}"))).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn round_trip_across_many_ledgers() {
    let dir = temp_dir("roundtrip");
    let (_, part) = recover_one(&dir);
    let c = cfg(&dir);
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let ledgers: Vec<LedgerId> = (0..20).map(|_| s.new_ledger()).collect();
        assert!(ledgers.iter().all(|l| l >> 48 == 0));
        let mut pending = Vec::new();
        for e in 0..10u64 {
            for &l in &ledgers {
                pending.push((l, e, s.append(l, payload(l, e, 100 + e as usize).into())));
            }
        }
        for (l, e, f) in pending {
            assert_eq!(f.await.unwrap(), e, "ledger {l}");
        }
        for &l in &ledgers {
            assert_eq!(s.last_entry(l), Some(9));
            for e in 0..10 {
                assert_eq!(s.read(l, e).await.unwrap(), payload(l, e, 100 + e as usize));
            }
            assert!(matches!(s.read(l, 10).await, Err(StorageError::NoSuchEntry { .. })));
        }
        assert!(matches!(s.read(12345, 0).await, Err(StorageError::NoSuchLedger(_))));
        assert!(matches!(s.append(12345, Bytes::new().into()).await, Err(StorageError::NoSuchLedger(_))));
        assert_eq!(s.last_entry(12345), None);
        let empty = s.new_ledger();
        assert_eq!(s.last_entry(empty), None);
        // An empty payload is a valid entry.
        assert_eq!(s.append(empty, Bytes::new().into()).await.unwrap(), 0);
        assert_eq!(s.read(empty, 0).await.unwrap(), Bytes::new());
    });
}

#[test]
fn group_commit_syncs_once_per_window() {
    let dir = temp_dir("group");
    let (_, part) = recover_one(&dir);
    let c = cfg(&dir);
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        let before = s.fdatasync_count();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let s = s.clone();
                glommio::spawn_local(async move { s.append(l, payload(l, i, 64).into()).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        let syncs = s.fdatasync_count() - before;
        assert!((1..=10).contains(&syncs), "{syncs} fdatasyncs for 100 appends");
        assert_eq!(s.last_entry(l), Some(99));
    });
}

#[test]
fn entries_bigger_than_the_registered_buffers() {
    let dir = temp_dir("big");
    let (_, part) = recover_one(&dir);
    let c = cfg(&dir);
    let sizes = [3 << 20, 700 << 10, 1, 5000];
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        let fs: Vec<_> = sizes.iter().enumerate().map(|(e, n)| s.append(l, payload(l, e as u64, *n).into())).collect();
        for f in fs {
            f.await.unwrap();
        }
        for (e, n) in sizes.iter().enumerate() {
            assert_eq!(s.read(l, e as u64).await.unwrap(), payload(l, e as u64, *n));
        }
        s.close().await;
    });
    let (seen, _) = recover_one(&dir);
    assert_eq!(seen.len(), sizes.len());
    for (e, (_, id, b)) in seen.iter().enumerate() {
        assert_eq!((*id, b.len()), (e as u64, payload(0, e as u64, sizes[e]).len()));
    }
}

#[test]
fn segments_roll_over_and_reads_span_them() {
    let dir = temp_dir("roll");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(&dir) };
    let c2 = c.clone();
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let (a, b) = (s.new_ledger(), s.new_ledger());
        for e in 0..60 {
            let fa = s.append(a, payload(a, e, 1000).into());
            let fb = s.append(b, payload(b, e, 300).into());
            assert_eq!((fa.await.unwrap(), fb.await.unwrap()), (e, e));
        }
        // A record bigger than a whole segment goes alone into a fresh one.
        assert_eq!(s.append(a, payload(a, 60, 20_000).into()).await.unwrap(), 60);
        for e in 0..60 {
            assert_eq!(s.read(a, e).await.unwrap(), payload(a, e, 1000));
            assert_eq!(s.read(b, e).await.unwrap(), payload(b, e, 300));
        }
        assert_eq!(s.read(a, 60).await.unwrap(), payload(a, 60, 20_000));
        s.close().await;
    });
    let files = segment_files(&dir, 0);
    assert!(files.len() >= 10, "{} segments", files.len());
    for f in &files[..files.len() - 2] {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 12 << 10, "{} is {len} bytes", f.display());
    }
    let (seen, part) = recover_one(&dir);
    assert_eq!(seen.len(), 121);
    // Reopen: appends continue in the (not full) last segment or a new one.
    run(move || async move {
        let s = LocalLedgerStore::open(0, c2, part).await.unwrap();
        let ids = RecoveredIds::of(&s);
        assert_eq!(s.last_entry(ids.0), Some(60));
        assert_eq!(s.append(ids.1, payload(ids.1, 60, 10).into()).await.unwrap(), 60);
        assert_eq!(s.read(ids.0, 60).await.unwrap().len(), 20_000);
        assert_eq!(s.read(ids.1, 59).await.unwrap(), payload(ids.1, 59, 300));
    });
}

/// The two ledgers of the rollover test, found again after a restart.
struct RecoveredIds(LedgerId, LedgerId);

impl RecoveredIds {
    fn of(s: &LocalLedgerStore) -> Self {
        let mut ids: Vec<LedgerId> = s.shared.st.borrow().ledgers.keys().copied().collect();
        ids.sort();
        RecoveredIds(ids[0], ids[1])
    }
}

#[test]
fn interval_policy_acks_before_syncing() {
    let dir = temp_dir("interval");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { flush: FlushPolicy::Interval(Duration::from_millis(50)), ..cfg(&dir) };
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        for e in 0..50 {
            assert_eq!(s.append(l, payload(l, e, 200).into()).await.unwrap(), e);
        }
        // Acknowledged, readable, and far fewer syncs than appends.
        assert_eq!(s.last_entry(l), Some(49));
        assert_eq!(s.read(l, 49).await.unwrap(), payload(l, 49, 200));
        assert!(s.fdatasync_count() < 10, "{}", s.fdatasync_count());
        let before = s.fdatasync_count();
        glommio::timer::sleep(Duration::from_millis(200)).await;
        assert!(s.fdatasync_count() > before, "the interval sync ran");
        // Idle and clean: no more syncs.
        let settled = s.fdatasync_count();
        glommio::timer::sleep(Duration::from_millis(120)).await;
        assert_eq!(s.fdatasync_count(), settled);
        s.close().await;
    });
    let (seen, _) = recover_one(&dir);
    assert_eq!(seen.len(), 50);
}

#[test]
fn interval_sync_runs_beside_appends() {
    let dir = temp_dir("interval-beside");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { flush: FlushPolicy::Interval(Duration::from_millis(10)), ..cfg(&dir) };
    let l = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        s.shared.sync_delay.set(Duration::from_millis(400));
        let l = s.new_ledger();
        assert_eq!(s.append(l, payload(l, 0, 200).into()).await.unwrap(), 0);
        for _ in 0..100 {
            if s.shared.interval_sync.running.get() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(s.shared.interval_sync.running.get(), "no interval sync started");
        let before = s.fdatasync_count();
        // Acknowledged while the slow sync is still in flight: appends do not wait for it.
        for e in 1..30 {
            assert_eq!(s.append(l, payload(l, e, 200).into()).await.unwrap(), e);
        }
        assert!(s.shared.interval_sync.running.get(), "the sync ended before the appends did");
        assert_eq!(s.fdatasync_count(), before);
        s.shared.sync_delay.set(Duration::ZERO);
        for _ in 0..200 {
            if s.fdatasync_count() > before + 1 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(s.fdatasync_count() > before + 1, "the slow sync and the next one ended");
        s.close().await;
        l
    });
    let (seen, _) = recover_one(&dir);
    let got: Vec<EntryId> = seen.iter().filter(|(id, _, _)| *id == l).map(|(_, e, _)| *e).collect();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
}

#[test]
fn failed_interval_sync_fails_the_store() {
    let dir = temp_dir("interval-failed");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig {
        flush: FlushPolicy::Interval(Duration::from_millis(10)),
        probe_interval: Duration::from_millis(20),
        ..cfg(&dir)
    };
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        s.shared.fail_next_sync.set(true);
        assert_eq!(s.append(l, payload(l, 0, 10).into()).await.unwrap(), 0);
        for _ in 0..200 {
            if s.failures() > 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(s.failures(), 1, "the failed interval sync failed the store");
        // The probe succeeds (the disk is fine): the store resumes without a restart.
        for _ in 0..500 {
            if s.failure().is_none() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.failure(), None);
        let l2 = s.new_ledger();
        assert_eq!(s.append(l2, payload(l2, 0, 10).into()).await.unwrap(), 0);
        s.close().await;
    });
}

#[test]
fn backpressure_beyond_max_pending_bytes() {
    let dir = temp_dir("backpressure");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { max_pending_bytes: 10_000, ..cfg(&dir) };
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        // Queued synchronously, so none is written before the last call.
        let fs: Vec<_> = (0..30).map(|e| s.append(l, payload(l, e, 1000).into())).collect();
        let (mut ok, mut busy) = (Vec::new(), 0);
        for f in fs {
            match f.await {
                Ok(id) => ok.push(id),
                Err(StorageError::Backpressure) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, (0..9).collect::<Vec<_>>(), "ids stay contiguous");
        assert_eq!(busy, 21);
        // Drained: appends are accepted again, and one entry over the bound still goes.
        assert_eq!(s.append(l, payload(l, 9, 1000).into()).await.unwrap(), 9);
        assert_eq!(s.append(l, payload(l, 10, 50_000).into()).await.unwrap(), 10);
        assert_eq!(s.read(l, 10).await.unwrap(), payload(l, 10, 50_000));
    });
}

#[test]
fn closed_store_refuses_appends() {
    let dir = temp_dir("closed");
    let (_, part) = recover_one(&dir);
    let c = cfg(&dir);
    run(move || async move {
        let s: Rc<LocalLedgerStore> = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        let f = s.append(l, payload(l, 0, 10).into());
        s.close().await;
        // Queued before close: written. After: refused.
        assert_eq!(f.await.unwrap(), 0);
        assert!(matches!(s.append(l, Bytes::new().into()).await, Err(StorageError::Unavailable(_))));
        assert_eq!(s.read(l, 0).await.unwrap(), payload(l, 0, 10));
    });
}

#[test]
fn failed_sync_refuses_appends_until_the_store_resumes() {
    let dir = temp_dir("failed");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { probe_interval: Duration::from_millis(20), ..cfg(&dir) };
    let (l, l2) = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        assert_eq!(s.append(l, payload(l, 0, 10).into()).await.unwrap(), 0);
        s.shared.fail_next_sync.set(true);
        let (a, b) = (s.append(l, payload(l, 1, 10).into()), s.append(l, payload(l, 2, 10).into()));
        assert!(matches!(a.await, Err(StorageError::Unavailable(_))));
        assert!(matches!(b.await, Err(StorageError::Unavailable(_))));
        assert_eq!(s.failures(), 1);
        // Nothing is acknowledged while failed; what was durable stays readable.
        if s.failure().is_some() {
            assert!(matches!(s.append(l, Bytes::new().into()).await, Err(StorageError::Unavailable(_))));
        }
        assert_eq!(s.last_entry(l), Some(0));
        assert_eq!(s.read(l, 0).await.unwrap(), payload(l, 0, 10));
        // The probe succeeds (the disk is fine): the store resumes without a restart.
        for _ in 0..500 {
            if s.failure().is_none() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.failure(), None);
        // The ledger that lost entries is sealed at its durable length; new ledgers work.
        assert_eq!(s.pending_entries(l), 0);
        assert!(s.append(l, payload(l, 1, 10).into()).await.is_err());
        let l2 = s.new_ledger();
        assert_eq!(s.append(l2, payload(l2, 0, 10).into()).await.unwrap(), 0);
        assert_eq!(s.read(l, 0).await.unwrap(), payload(l, 0, 10));
        s.close().await;
        (l, l2)
    });
    // The failed window's records reached the disk (only the sync "failed"), but the
    // resume cut them off: a restart finds exactly the acknowledged entries.
    let (seen, _) = recover_one(&dir);
    let got: Vec<(LedgerId, EntryId)> = seen.iter().map(|(l, e, _)| (*l, *e)).collect();
    assert_eq!(got, vec![(l, 0), (l2, 0)]);
}

#[test]
fn recovered_parts_are_send() {
    fn send<T: Send>() {}
    send::<RecoveredStore>();
    send::<RecoveredLedgers>();
}
