//! Resuming after a failed write or sync (a full disk, typically).
//!
//! While failed, the committer probes every `probe_interval` whether a write plus fdatasync
//! succeeds again (a scratch file of `PROBE_BYTES`, so a few freed blocks do not flap the store
//! between failed and resumed). Once one does, it restores a state in which everything on disk
//! is either durable and published, or gone:
//!
//! - the segment holding the last finished window is truncated to that window's end, and a
//!   segment started by a rollover inside the failed window is cut back to its header, so
//!   nothing of the failed window survives a restart (there is one exception, below);
//! - appends continue in a fresh segment, as BookKeeper continues in a new entry log, so
//!   nothing is ever written after a possibly torn record;
//! - every ledger that had entries in the failed window is sealed at its durable length: its
//!   next entry id would otherwise skip the lost ones. The managed ledger above writes its next
//!   entries to a new ledger, recording the old one's entry count when it closes it.
//!
//! The exception: a window that rolled the segment wrote (and synced) its first records into
//! the sealed segment. They are valid records that were never acknowledged; the managed
//! ledger's closing entry count keeps recovery from taking them.

use std::io;
use std::path::Path;
use std::rc::Rc;

use super::Shared;
use super::commit::{Good, Writer, stop};
use super::format::{SEG_HEADER_LEN, core_dir, seg_path};
use super::segments::SegInfo;

/// Bytes a probe must write and sync before the store resumes.
pub(super) const PROBE_BYTES: usize = 1 << 20;

/// Waits until the store can resume (or is closed). Returns the writer to continue with, or
/// `None` after stopping the committer because the store was closed.
pub(super) async fn after_failure(shared: &Rc<Shared>, w: Writer, good: Good) -> Option<Writer> {
    let mut attempts = 0u64;
    loop {
        if shared.st.borrow().closed {
            stop(shared, Some(w)).await;
            return None;
        }
        futures_lite::future::or(shared.wake.wait(), glommio::timer::sleep(shared.cfg.probe_interval)).await;
        if shared.st.borrow().closed {
            stop(shared, Some(w)).await;
            return None;
        }
        attempts += 1;
        match try_resume(shared, &w, good).await {
            Ok(next) => {
                if let Err(e) = w.close().await {
                    tracing::warn!(error = %e, "closing the failed ledger segment");
                }
                tracing::info!(core = shared.core, attempts, "ledger store resumed");
                return Some(next);
            }
            Err(e) => tracing::debug!(core = shared.core, attempts, error = %e, "ledger store still failing"),
        }
    }
}

async fn try_resume(shared: &Shared, w: &Writer, good: Good) -> io::Result<Writer> {
    let dir = core_dir(&shared.root, shared.core);
    probe(&dir).await?;
    cut(&seg_path(&shared.root, shared.core, good.seq), good.len)?;
    if w.seq != good.seq {
        cut(&seg_path(&shared.root, shared.core, w.seq), SEG_HEADER_LEN)?;
    }
    let seq = w.seq + 1;
    let path = seg_path(&shared.root, shared.core, seq);
    // Left by an earlier probe or by the rollover that failed; it holds nothing durable.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (seg, floor) = {
        let st = shared.st.borrow();
        let seg = st.segs.iter().position(|s| s.core == shared.core && s.seq == seq).unwrap_or(st.segs.len());
        // Ids handed out while failed were not reserved (nothing could be written).
        (seg as u32, st.reserved.max(st.next_seq + super::RESERVE_STEP))
    };
    // The segment header carries the ledger-id floor, so reservations lost with the failed
    // window are durable again before any new ledger id is used.
    let next = match Writer::create(&shared.root, shared.core, seq, seg, floor, shared.cfg.flush.buffered()).await {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let mut guard = shared.st.borrow_mut();
    let st = &mut *guard;
    let mut info = SegInfo::new(shared.core, seq);
    info.durable = next.synced;
    match st.segs.get_mut(seg as usize) {
        Some(s) => *s = info,
        None => st.segs.push(info),
    }
    st.active = seg;
    st.reserved = st.reserved.max(floor);
    for ix in st.ledgers.values_mut() {
        let durable = ix.locs.len() as u64;
        if ix.next_entry > durable {
            ix.next_entry = durable;
            ix.sealed = true;
        }
    }
    st.pending_bytes = 0;
    st.failed = None;
    Ok(next)
}

/// Writes and syncs a scratch file: proof that the disk takes data again.
async fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(".write-probe");
    let res = async {
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&path)
            .await
            .map_err(io::Error::from)?;
        let mut buf = file.alloc_dma_buffer(PROBE_BYTES);
        buf.as_bytes_mut().fill(0x5a);
        let written = file.write_at(buf, 0).await.map_err(io::Error::from);
        let synced = match written {
            Ok(n) if n == PROBE_BYTES => file.fdatasync().await.map_err(io::Error::from),
            Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short probe write")),
            Err(e) => Err(e),
        };
        let _ = file.close().await;
        synced
    }
    .await;
    let _ = std::fs::remove_file(&path);
    res
}

/// Truncates a segment file to `len` (never grows it) and makes that durable.
fn cut(path: &Path, len: u64) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() > len {
        f.set_len(len)?;
    }
    f.sync_all()
}
