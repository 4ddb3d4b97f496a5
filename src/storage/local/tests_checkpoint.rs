//! Recovery from a directory checkpoint: the same result as a full scan, partial visits, and
//! fallbacks for checkpoints that do not fit.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

use super::tests::{cfg, payload, recover_one, run, temp_dir};
use super::*;

type Seen = Vec<(LedgerId, EntryId, Bytes)>;

/// Ledger `a` gets 30 entries, `dead` 5 (then deleted), a checkpoint is taken, then `a` gets
/// 10 more and `b` 5. Returns (a, b, checkpoint).
fn build(dir: &Path) -> (LedgerId, LedgerId, Vec<u8>) {
    let (_, part) = recover_one(dir);
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(dir) };
    run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        let (a, dead) = (s.new_ledger(), s.new_ledger());
        for e in 0..30 {
            s.append(a, payload(a, e, 700).into()).await.unwrap();
        }
        for e in 0..5 {
            s.append(dead, payload(dead, e, 700).into()).await.unwrap();
        }
        s.delete_ledger(dead).await.unwrap();
        let ckpt = s.checkpoint().unwrap();
        for e in 30..40 {
            s.append(a, payload(a, e, 700).into()).await.unwrap();
        }
        let b = s.new_ledger();
        for e in 0..5 {
            s.append(b, payload(b, e, 300).into()).await.unwrap();
        }
        s.close().await;
        (a, b, ckpt)
    })
}

fn recover_with(dir: &Path, ckpt: Option<Vec<u8>>, from: &dyn Fn(LedgerId) -> EntryId) -> (Seen, RecoveredStore) {
    let ckpts: HashMap<usize, Vec<u8>> = ckpt.into_iter().map(|c| (0, c)).collect();
    let mut seen = Vec::new();
    let rec = scan(dir, &ckpts).unwrap().finish(from, &mut |l, e, b: &Bytes| seen.push((l, e, b.clone()))).unwrap();
    (seen, rec)
}

#[test]
fn checkpointed_recovery_equals_a_full_scan() {
    let dir = temp_dir("ckpt-equal");
    let (a, b, ckpt) = build(&dir);
    let (full, full_rec) = recover_with(&dir, None, &|_| 0);
    let (fast, fast_rec) = recover_with(&dir, Some(ckpt.clone()), &|_| 0);
    assert_eq!(full.len(), 45);
    assert_eq!(full, fast);
    assert_eq!(full_rec.ledger_ids(), vec![a, b]);
    assert_eq!(fast_rec.ledger_ids(), vec![a, b]);
    // Only what the caller asks for is read.
    let (tail, _) = recover_with(&dir, Some(ckpt), &|l| if l == a { 30 } else { 0 });
    let ids: Vec<(LedgerId, EntryId)> = tail.iter().map(|v| (v.0, v.1)).collect();
    let want: Vec<(LedgerId, EntryId)> = (30..40).map(|e| (a, e)).chain((0..5).map(|e| (b, e))).collect();
    assert_eq!(ids, want);
    assert_eq!(tail[0].2, payload(a, 30, 700));
}

#[test]
fn a_store_opened_from_a_checkpoint_keeps_going() {
    let dir = temp_dir("ckpt-open");
    let (a, b, ckpt) = build(&dir);
    let (_, mut rec) = recover_with(&dir, Some(ckpt), &|_| 0);
    let part = rec.split_for_core(rec.ledger_ids());
    let c = LocalStoreConfig { segment_bytes: 8 << 10, ..cfg(&dir) };
    let c2 = run(move || async move {
        let s = LocalLedgerStore::open(0, c, part).await.unwrap();
        assert_eq!(s.last_entry(a), Some(39));
        assert_eq!(s.read(a, 3).await.unwrap(), payload(a, 3, 700));
        let fresh = s.new_ledger();
        assert!(fresh > b, "ledger ids are not reused");
        s.append(fresh, payload(fresh, 0, 10).into()).await.unwrap();
        s.close().await;
        s.checkpoint().unwrap()
    });
    let (full, _) = recover_with(&dir, None, &|_| 0);
    let (fast, _) = recover_with(&dir, Some(c2), &|_| 0);
    assert_eq!(full.len(), 46);
    assert_eq!(full, fast);
}

#[test]
fn checkpoints_that_do_not_fit_fall_back_to_a_full_scan() {
    let dir = temp_dir("ckpt-stale");
    let (_, _, ckpt) = build(&dir);
    let (full, _) = recover_with(&dir, None, &|_| 0);
    let mut corrupt = ckpt.clone();
    corrupt[20] ^= 1;
    assert_eq!(recover_with(&dir, Some(corrupt), &|_| 0).0, full);
    assert_eq!(recover_with(&dir, Some(ckpt[..ckpt.len() / 2].to_vec()), &|_| 0).0, full);
    // The newest segment cut below the checkpointed length (a torn tail the checkpoint did not
    // see): the directory is scanned and only what is really there comes back.
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("core-0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let first = &segs[0];
    let f = std::fs::OpenOptions::new().write(true).open(first).unwrap();
    f.set_len(2000).unwrap();
    let (full, _) = recover_with(&dir, None, &|_| 0);
    assert_eq!(recover_with(&dir, Some(ckpt), &|_| 0).0, full);
}
