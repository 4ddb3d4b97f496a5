//! Recovery tests: restarts, torn tails, corruption, deletion, ledgers in other cores' dirs.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{Loc, REC_HEADER_LEN};
use super::tests::{cfg, payload, recover_one, run, segment_files, temp_dir};
use super::*;

/// Writes `n` entries of `len` bytes to a new ledger on core 0; returns the ledger, the last
/// entry's location and its segment file.
fn write_entries(dir: &Path, n: u64, len: usize) -> (LedgerId, Loc, PathBuf) {
    let (_, part) = recover_one(dir);
    let c = cfg(dir);
    let (l, loc, seq) = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let l = s.new_ledger();
        for e in 0..n {
            assert_eq!(s.append(l, payload(l, e, len).into()).await.unwrap(), e);
        }
        let st = s.shared.st.borrow();
        let loc = *st.ledgers[&l].locs.last().unwrap();
        let seq = st.segs[loc.seg as usize].seq;
        (l, loc, seq)
    });
    (l, loc, format::seg_path(dir, 0, seq))
}

fn end_of(loc: Loc) -> u64 {
    loc.offset + REC_HEADER_LEN as u64 + loc.len as u64
}

/// After recovery kept `kept` entries of `l`: appends continue at id `kept`, and everything
/// survives another restart.
fn appends_continue(dir: &Path, l: LedgerId, kept: u64) {
    let (seen, part) = recover_one(dir);
    let ids: Vec<_> = seen.iter().map(|v| (v.0, v.1)).collect();
    assert_eq!(ids, (0..kept).map(|e| (l, e)).collect::<Vec<_>>());
    let c = cfg(dir);
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        assert_eq!(s.last_entry(l), kept.checked_sub(1));
        assert_eq!(s.append(l, payload(l, kept, 77).into()).await.unwrap(), kept);
        let fresh = s.new_ledger();
        assert!(fresh > l, "ledger ids are not reused");
        s.close().await;
    });
    let (seen, _) = recover_one(dir);
    assert_eq!(seen.len() as u64, kept + 1);
    for (l2, e, b) in seen {
        assert_eq!(l2, l);
        assert_eq!(b, payload(l, e, if e == kept { 77 } else { 100 }));
    }
}

#[test]
fn reopen_visits_every_acked_entry_in_order() {
    let dir = temp_dir("reopen");
    let (_, part) = recover_one(&dir);
    let c = cfg(&dir);
    let written = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let ls: Vec<LedgerId> = (0..3).map(|_| s.new_ledger()).collect();
        let mut order = Vec::new();
        let mut fs = Vec::new();
        let mut next = std::collections::HashMap::new();
        for e in 0..20u64 {
            let l = ls[(e % 3) as usize];
            let id = *next.entry(l).and_modify(|x| *x += 1).or_insert(0u64);
            order.push((l, id, payload(l, id, 50 + e as usize)));
            fs.push((id, s.append(l, payload(l, id, 50 + e as usize).into())));
        }
        for (id, f) in fs {
            assert_eq!(f.await.unwrap(), id);
        }
        order
        // Dropped without close: the queue was empty, everything acked is durable.
    });
    let (seen, _) = recover_one(&dir);
    assert_eq!(seen, written);
}

#[test]
fn torn_tail_garbage_is_truncated() {
    let dir = temp_dir("torn-garbage");
    let (l, last, path) = write_entries(&dir, 10, 100);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(end_of(last))).unwrap();
    f.write_all(&[0xAB; 300]).unwrap();
    drop(f);
    let (seen, _) = recover_one(&dir);
    assert_eq!(seen.len(), 10);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end_of(last));
    appends_continue(&dir, l, 10);
}

#[test]
fn torn_tail_mid_record_is_truncated() {
    let dir = temp_dir("torn-short");
    let (l, last, path) = write_entries(&dir, 10, 100);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(last.offset + 30).unwrap();
    drop(f);
    appends_continue(&dir, l, 9);
    assert!(std::fs::metadata(&path).unwrap().len() >= last.offset);
}

#[test]
fn flipped_byte_drops_the_last_record() {
    let dir = temp_dir("flip");
    let (l, last, path) = write_entries(&dir, 10, 100);
    flip(&path, last.offset + REC_HEADER_LEN as u64 + 50);
    appends_continue(&dir, l, 9);
}

fn flip(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

#[test]
fn corrupt_sealed_segment_keeps_later_segments() {
    let dir = temp_dir("corrupt-mid");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(&dir) };
    let c2 = c.clone();
    let (a, b, bad) = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let (a, b) = (s.new_ledger(), s.new_ledger());
        for e in 0..30 {
            s.append(a, payload(a, e, 1000).into()).await.unwrap();
        }
        for e in 0..5 {
            s.append(b, payload(b, e, 100).into()).await.unwrap();
        }
        let st = s.shared.st.borrow();
        let loc = st.ledgers[&a].locs[3];
        (a, b, (st.segs[loc.seg as usize].seq, loc))
    });
    let files_before = segment_files(&dir, 0);
    let first = format::seg_path(&dir, 0, bad.0);
    assert_ne!(Some(&first), files_before.last(), "entry 3 is in a sealed segment");
    flip(&first, bad.1.offset + 30);
    let (seen, part) = recover_one(&dir);
    let got: Vec<_> = seen.iter().map(|v| (v.0, v.1)).collect();
    let mut want: Vec<_> = (0..3).map(|e| (a, e)).collect();
    want.extend((0..5).map(|e| (b, e)));
    assert_eq!(got, want);
    assert_eq!(segment_files(&dir, 0), files_before, "no segment removed");
    run(move || async move {
        let s = LocalLedgerStore::open(0, c2, part).await.unwrap();
        assert_eq!(s.last_entry(a), Some(2));
        assert!(matches!(s.append(a, Bytes::new().into()).await, Err(StorageError::Corrupt(_))));
        assert_eq!(s.append(b, payload(b, 5, 100).into()).await.unwrap(), 5);
    });
}

#[test]
fn delete_removes_segments_and_survives_recovery() {
    let dir = temp_dir("delete");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(&dir) };
    let (c2, c3) = (c.clone(), c.clone());
    let (a, b) = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let (a, b) = (s.new_ledger(), s.new_ledger());
        for e in 0..5 {
            s.append(b, payload(b, e, 100).into()).await.unwrap();
        }
        for e in 0..40 {
            s.append(a, payload(a, e, 1000).into()).await.unwrap();
        }
        (a, b)
    });
    let before = segment_files(&dir, 0).len();
    assert!(before >= 5, "{before} segments");
    let (seen, part) = recover_one(&dir);
    assert_eq!(seen.len(), 45);
    run(move || async move {
        let s = LocalLedgerStore::open(0, c2, part).await.unwrap();
        s.delete_ledger(a).await.unwrap();
        assert!(matches!(s.read(a, 0).await, Err(StorageError::NoSuchLedger(_))));
        assert_eq!(s.last_entry(a), None);
        assert_eq!(s.read(b, 4).await.unwrap(), payload(b, 4, 100));
        // Idempotent, also for ids never seen.
        s.delete_ledger(a).await.unwrap();
        s.delete_ledger(987_654).await.unwrap();
    });
    // Left: the first segment (it holds b) and the active one (it holds the marker).
    assert_eq!(segment_files(&dir, 0).len(), 2);
    let (seen, part) = recover_one(&dir);
    let got: Vec<_> = seen.iter().map(|v| (v.0, v.1)).collect();
    assert_eq!(got, (0..5).map(|e| (b, e)).collect::<Vec<_>>());
    run(move || async move {
        let s = LocalLedgerStore::open(0, c3, part).await.unwrap();
        assert_eq!(s.last_entry(a), None);
        s.delete_ledger(b).await.unwrap();
    });
    assert_eq!(segment_files(&dir, 0).len(), 1);
    let (seen, part) = recover_one(&dir);
    assert!(seen.is_empty());
    assert!(part.ledger_ids().is_empty());
}

#[test]
fn ledgers_of_other_core_dirs_stay_readable() {
    let dir = temp_dir("foreign");
    let (_, part) = recover_one(&dir);
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(&dir) };
    let (c1, c0) = (c.clone(), c.clone());
    let (x, unused) = run(move || async move {
        let s = LocalLedgerStore::open(1, c, part).await.unwrap();
        let x = s.new_ledger();
        assert_eq!(x >> 48, 1);
        for e in 0..30 {
            s.append(x, payload(x, e, 1000).into()).await.unwrap();
        }
        // Ledgers that never get an entry still use up their ids.
        let unused = (0..3).map(|_| s.new_ledger()).max().unwrap();
        s.close().await;
        (x, unused)
    });
    let core1_files = segment_files(&dir, 1).len();
    assert!(core1_files >= 4);
    let mut rec = recover(&dir, &mut |_, _, _| {}).unwrap();
    let part0 = rec.split_for_core([x]);
    let part1 = rec.split_for_core([]);
    run(move || async move {
        let s1 = LocalLedgerStore::open(1, c1, part1).await.unwrap();
        assert!(s1.new_ledger() > unused, "ids are not reused after a restart");
        let s0 = LocalLedgerStore::open(0, c0, part0).await.unwrap();
        assert_eq!(s0.last_entry(x), Some(29));
        for e in 0..30 {
            assert_eq!(s0.read(x, e).await.unwrap(), payload(x, e, 1000));
        }
        // Core 0 cannot unlink core 1's files; the marker in core 0's dir hides them.
        s0.delete_ledger(x).await.unwrap();
        s0.close().await;
        s1.close().await;
    });
    assert_eq!(segment_files(&dir, 1).len(), core1_files);
    let (seen, _) = recover_one(&dir);
    assert!(seen.is_empty());
    // Recovery removed core 1's dead segments except its newest.
    assert_eq!(segment_files(&dir, 1).len(), 1);
}
