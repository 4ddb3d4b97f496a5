//! Ensemble change: a bookie of a ledger this core writes failed, so it is replaced by a
//! writable bookie outside the ensemble, the metadata gets a new segment from LAC+1 (by CAS on
//! the node's version), and the pending adds of that position go to the new bookie.
//! Metadata found CLOSED or IN_RECOVERY means another writer fenced the ledger: stop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::metadata::{BookieId, LedgerMetadata, LedgerState, Segment};
use super::write::{WriteLedger, WriterState};
use super::{Ctx, write_set};
use crate::zookeeper::ZkError;

const RETRY: Duration = Duration::from_millis(500);

pub(crate) async fn replace_failed(w: Rc<WriteLedger>) {
    let deadline = Instant::now() + w.ctx.config.add_timeout;
    loop {
        if !matches!(*w.state.borrow(), WriterState::Open | WriterState::Closing) {
            w.changing.set(false);
            return;
        }
        let failed: Vec<usize> = w.failed.borrow().iter().copied().collect();
        if failed.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let why = format!("no replacement for failed bookies at ensemble positions {failed:?}");
            w.changing.set(false);
            w.stop(WriterState::Failed(why));
            return;
        }
        match change_once(&w, &failed).await {
            Ok(true) => {}
            Ok(false) => WriteLedger::pause(RETRY).await,
            Err(Fenced) => {
                w.changing.set(false);
                w.stop(WriterState::Fenced);
                return;
            }
        }
    }
    w.changing.set(false);
    // Adds appended while the ensemble was changing go out now, to the new ensemble.
    let unsent: Vec<i64> = w
        .pending
        .borrow_mut()
        .iter_mut()
        .filter(|p| !p.sent)
        .map(|p| {
            p.sent = true;
            p.entry
        })
        .collect();
    let (size, wq) = (w.ensemble.borrow().len(), w.meta.borrow().write_quorum);
    for e in unsent {
        for idx in write_set(e, size, wq) {
            w.send_add(e, idx);
        }
    }
}

struct Fenced;

/// One attempt; `Ok(false)` to retry later (no replacement bookie, ZooKeeper trouble, a race).
async fn change_once(w: &Rc<WriteLedger>, failed: &[usize]) -> Result<bool, Fenced> {
    let current: Vec<BookieId> = w.ensemble.borrow().iter().map(|b| b.id.clone()).collect();
    let Some(replacements) = pick_replacements(&w.ctx, &current, failed.len()).await else {
        warn!(ledger = w.id, ?failed, "no writable bookie outside the ensemble to replace a failed one");
        return Ok(false);
    };
    let first = w.lac.get() + 1;
    let meta = with_segment(&w.meta.borrow(), first, &current, failed, &replacements);
    let path = w.path();
    match w.ctx.zk.set(&path, meta.encode(), Some(w.version.get())).await {
        Ok(stat) => {
            w.version.set(stat.version);
            *w.meta.borrow_mut() = meta;
        }
        Err(ZkError::BadVersion) => {
            return match w.ctx.zk.get(&path).await {
                Ok(Some((data, stat))) => match LedgerMetadata::decode(&data) {
                    Ok(theirs) if theirs.state == LedgerState::Open => {
                        // Possibly our own update, applied although its answer was lost: take
                        // the replacements it made for the failed positions, if any.
                        let last = theirs.segments.last().map(|s| s.ensemble.clone()).unwrap_or_default();
                        let replaced: Vec<(usize, BookieId)> = failed
                            .iter()
                            .filter_map(|&i| last.get(i).filter(|b| **b != current[i]).map(|b| (i, b.clone())))
                            .collect();
                        w.version.set(stat.version);
                        *w.meta.borrow_mut() = theirs;
                        if replaced.is_empty() {
                            return Ok(false);
                        }
                        apply(w, &replaced);
                        Ok(true)
                    }
                    _ => Err(Fenced),
                },
                Ok(None) => Err(Fenced),
                Err(_) => Ok(false),
            };
        }
        Err(e) => {
            warn!(ledger = w.id, error = %e, "ensemble change: metadata update failed; retrying");
            return Ok(false);
        }
    }
    info!(ledger = w.id, from_entry = first, ?failed, new = ?replacements, "ensemble changed");
    let replaced: Vec<(usize, BookieId)> = failed.iter().copied().zip(replacements).collect();
    apply(w, &replaced);
    Ok(true)
}

/// Puts the new bookies in place and sends them the replaced positions' pending adds.
fn apply(w: &Rc<WriteLedger>, replaced: &[(usize, BookieId)]) {
    {
        let mut ens = w.ensemble.borrow_mut();
        for (idx, b) in replaced {
            ens[*idx] = w.ctx.bookie(b);
        }
    }
    {
        let mut f = w.failed.borrow_mut();
        for (idx, _) in replaced {
            f.remove(idx);
        }
    }
    // The replaced positions' copies of pending entries go to the new bookies; an ack from the
    // old bookie no longer counts.
    let (size, wq) = (w.ensemble.borrow().len(), w.meta.borrow().write_quorum);
    let mut resend = Vec::new();
    for p in w.pending.borrow_mut().iter_mut().filter(|p| p.sent) {
        for idx in write_set(p.entry, size, wq).filter(|i| replaced.iter().any(|(r, _)| r == i)) {
            p.acks &= !(1u64 << idx);
            resend.push((p.entry, idx));
        }
    }
    for (e, idx) in resend {
        w.send_add(e, idx);
    }
}

/// `n` writable bookies outside `current`, not known to be down, picked at random (the list
/// re-read from ZooKeeper first); `None` if there are too few.
pub(crate) async fn pick_replacements(ctx: &Ctx, current: &[BookieId], n: usize) -> Option<Vec<BookieId>> {
    let available = ctx.refresh_bookies().await.unwrap_or_else(|_| ctx.available.borrow().clone());
    let candidates: Vec<BookieId> =
        available.into_iter().filter(|b| !current.contains(b) && !ctx.bookie(b).is_down()).collect();
    ctx.pick(candidates, n)
}

/// `meta` with the bookies at `positions` of `current` replaced from entry `first` on: a new
/// segment, or the last one rewritten if it starts there (nothing acknowledged in it yet).
pub(crate) fn with_segment(
    meta: &LedgerMetadata,
    first: i64,
    current: &[BookieId],
    positions: &[usize],
    replacements: &[BookieId],
) -> LedgerMetadata {
    let mut ensemble = current.to_vec();
    for (&i, b) in positions.iter().zip(replacements) {
        ensemble[i] = b.clone();
    }
    let mut meta = meta.clone();
    match meta.segments.last_mut() {
        Some(last) if last.first_entry == first => last.ensemble = ensemble,
        _ => meta.segments.push(Segment { first_entry: first, ensemble }),
    }
    meta
}
