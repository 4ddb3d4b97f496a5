//! The write path: one committer task per core drains the current commit window, writes it
//! (`writer.rs`: O_DIRECT, or the page cache under `FlushPolicy::Interval`) and (under
//! `FlushPolicy::Always`) fdatasyncs once for the whole window. Under `FlushPolicy::Interval`
//! the periodic fdatasync runs beside the committer ([`sync_behind`]): a sync can take tens of
//! milliseconds, and windows written meanwhile are acknowledged at once instead of waiting.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::io::DmaFile;

use super::format::{DELETE, Loc, REC_HEADER_LEN, RESERVE, SEG_HEADER_LEN, encode_record_header};
use super::segments::SegInfo;
use super::writer::SegmentFile;
pub(super) use super::writer::Writer;
use super::{FlushPolicy, Shared};
use crate::storage::{EntryId, KnownCrc, LedgerId, SplitBytes, StorageError};

/// Records waiting for the committer. Appends join the open window; the committer takes it
/// whole, so everything arriving while it writes or syncs forms the next window.
///
/// A record is kept as its encoded header plus the entry's pieces the caller handed in (the
/// allocations the tail cache holds; a large batch's records still in its request's buffer),
/// so the only copy on the way to the disk is the one into the DMA buffer.
pub(super) struct Window {
    pub recs: Vec<Pending>,
    /// Bytes of entry records (what `max_pending_bytes` bounds).
    pub entry_bytes: usize,
    /// Sync even under `FlushPolicy::Interval` (deletion markers must be durable before any
    /// file is unlinked).
    pub force_sync: bool,
    pub done: Rc<Done>,
    /// When its first record arrived (metrics: how long the window waited for the committer).
    pub opened: Option<Instant>,
}

pub(super) struct Pending {
    pub ledger: LedgerId,
    pub entry: EntryId,
    pub header: [u8; REC_HEADER_LEN],
    pub payload: SplitBytes,
}

impl Pending {
    pub fn len(&self) -> u32 {
        self.payload.len() as u32
    }
}

impl Window {
    pub fn new() -> Self {
        Window { recs: Vec::new(), entry_bytes: 0, force_sync: false, done: Rc::new(Done::default()), opened: None }
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// The caller has checked `payload.len() <= MAX_PAYLOAD`.
    pub fn push(&mut self, ledger: LedgerId, entry: EntryId, payload: SplitBytes) {
        self.push_known(ledger, entry, payload, None);
    }

    /// [`Self::push`], with the checksum of the payload's tail when the caller has it.
    pub fn push_known(&mut self, ledger: LedgerId, entry: EntryId, payload: SplitBytes, known: Option<KnownCrc>) {
        let header = encode_record_header(ledger, entry, &payload, known);
        self.opened.get_or_insert_with(Instant::now);
        self.recs.push(Pending { ledger, entry, header, payload });
    }
}

/// Completion of one window, shared by all its waiters.
#[derive(Default)]
pub(super) struct Done {
    result: RefCell<Option<Result<(), String>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Done {
    pub fn complete(&self, r: Result<(), String>) {
        *self.result.borrow_mut() = Some(r);
        for w in self.wakers.take() {
            w.wake();
        }
    }

    pub async fn wait(&self) -> Result<(), StorageError> {
        poll_fn(|cx| match &*self.result.borrow() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(m)) => Poll::Ready(Err(StorageError::Unavailable(m.clone()))),
            None => {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Wakes the committer; a notification before it waits is not lost.
#[derive(Default)]
pub(super) struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// glommio decides per device and thread whether to use io_uring polling by reading from the
/// first DMA file opened there. If that file is empty the read trivially succeeds, polling is
/// wrongly turned on, and every later read fails with EOPNOTSUPP (glommio issue #605). So the
/// first DMA file a core opens is a one-block file with data in it.
pub(super) async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(".dma-probe");
    std::fs::write(&path, [0x5a; 4096])?;
    let opened = DmaFile::open(&path).await;
    let removed = std::fs::remove_file(&path);
    opened?.close().await?;
    removed
}

pub(super) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = glommio::io::Directory::open(dir).await?;
    d.sync().await?;
    Ok(d.close().await?)
}

// `shared` carries the tests' fault hooks.
#[cfg_attr(not(test), allow(unused_variables))]
async fn fdatasync(shared: &Shared, file: &SegmentFile) -> io::Result<()> {
    #[cfg(test)]
    if shared.fail_next_sync.replace(false) {
        return Err(io::Error::other("injected fdatasync failure"));
    }
    #[cfg(test)]
    if !shared.sync_delay.get().is_zero() {
        glommio::timer::sleep(shared.sync_delay.get()).await;
    }
    let started = std::time::Instant::now();
    let r = file.fdatasync().await;
    crate::metrics::with(|m| m.fsync.record_duration(started.elapsed()));
    r
}

async fn sync(shared: &Shared, w: &mut Writer) -> io::Result<()> {
    fdatasync(shared, &w.file).await?;
    w.dirty = false;
    w.synced = w.len;
    if let Some(s) = shared.st.borrow_mut().segs.get_mut(w.seg as usize) {
        s.durable = s.durable.max(w.synced);
    }
    shared.syncs.set(shared.syncs.get() + 1);
    Ok(())
}

/// The interval sync in flight beside the committer, if any.
#[derive(Default)]
pub(super) struct IntervalSync {
    pub running: Cell<bool>,
    /// A failed sync, for the committer to fail the store with.
    failed: RefCell<Option<String>>,
}

/// Makes segment `seg` durable up to `upto` (where its completed writes ended when this was
/// started) while the committer goes on writing; wakes the committer when done.
async fn sync_behind(shared: Rc<Shared>, file: Rc<SegmentFile>, seg: u32, upto: u64) {
    let res = fdatasync(&shared, &file).await;
    // The last holder closes the file if the committer has moved past it.
    drop(file);
    match res {
        Ok(()) => {
            if let Some(s) = shared.st.borrow_mut().segs.get_mut(seg as usize) {
                s.durable = s.durable.max(upto);
            }
            shared.syncs.set(shared.syncs.get() + 1);
        }
        Err(e) => *shared.interval_sync.failed.borrow_mut() = Some(e.to_string()),
    }
    shared.interval_sync.running.set(false);
    shared.wake.notify();
}

/// The committer: runs until the store is closed (or has failed).
pub(super) async fn run(shared: Rc<Shared>, mut w: Writer) {
    let interval = match shared.cfg.flush {
        FlushPolicy::Always => None,
        FlushPolicy::Interval(d) => Some(d),
    };
    let mut last_sync = Instant::now();
    // End of what finished windows wrote: a failure discards everything after it.
    let mut good = Good { seq: w.seq, len: w.len };
    loop {
        let failed_behind = shared.interval_sync.failed.borrow_mut().take();
        if let Some(msg) = failed_behind {
            fail(&shared, &msg);
            match super::resume::after_failure(&shared, w, good).await {
                Some(next) => w = next,
                None => return,
            }
            good = Good { seq: w.seq, len: w.len };
            continue;
        }
        let (window, closed) = {
            let mut st = shared.st.borrow_mut();
            let w = (!st.queue.is_empty()).then(|| std::mem::replace(&mut st.queue, Window::new()));
            (w, st.closed)
        };
        let busy = window.is_some();
        if let Some(win) = window {
            let sync_now = interval.is_none() || win.force_sync;
            crate::metrics::with(|m| {
                m.commit_window_bytes.record(win.entry_bytes as u64);
                if let Some(opened) = win.opened {
                    m.produce_queue.record_duration(opened.elapsed());
                }
            });
            let res = commit(&shared, &mut w, &win, sync_now).await;
            if sync_now {
                last_sync = Instant::now();
            }
            if !finish(&shared, win, res) {
                match super::resume::after_failure(&shared, w, good).await {
                    Some(next) => w = next,
                    // Closed while failed; the committer has stopped.
                    None => return,
                }
            }
            good = Good { seq: w.seq, len: w.len };
        }
        let due = interval.is_some_and(|d| last_sync.elapsed() >= d);
        if w.dirty && due && !closed && !shared.interval_sync.running.get() {
            // No write is in flight here: everything up to `w.len` is what the sync covers.
            shared.interval_sync.running.set(true);
            w.dirty = false;
            last_sync = Instant::now();
            crate::runtime::spawn(sync_behind(shared.clone(), w.file.clone(), w.seg, w.len));
        }
        if closed && !busy && shared.interval_sync.running.get() {
            // The last sync must end (and any failure be seen) before the store reports stopped.
            shared.wake.wait().await;
            continue;
        }
        if w.dirty && closed && !busy {
            if let Err(e) = sync(&shared, &mut w).await {
                fail(&shared, &e.to_string());
                match super::resume::after_failure(&shared, w, good).await {
                    Some(next) => w = next,
                    // Closed while failed; the committer has stopped.
                    None => return,
                }
                good = Good { seq: w.seq, len: w.len };
                continue;
            }
            last_sync = Instant::now();
        }
        if busy {
            continue;
        }
        if closed {
            break;
        }
        match interval {
            // A sync in flight wakes the committer when it ends.
            Some(d) if w.dirty && !shared.interval_sync.running.get() => {
                let left = d.saturating_sub(last_sync.elapsed());
                futures_lite::future::or(shared.wake.wait(), glommio::timer::sleep(left)).await
            }
            _ => shared.wake.wait().await,
        }
    }
    stop(&shared, Some(w)).await;
}

/// Fails what is still queued, closes the writer and reports the committer stopped.
pub(super) async fn stop(shared: &Shared, w: Option<Writer>) {
    let rest = std::mem::replace(&mut shared.st.borrow_mut().queue, Window::new());
    rest.done.complete(Err("ledger store closed".into()));
    if let Some(w) = w
        && let Err(e) = w.close().await
    {
        tracing::warn!(error = %e, "closing ledger segment");
    }
    shared.stopped.complete(Ok(()));
}

/// Where the data of the last successfully finished window ends.
#[derive(Clone, Copy, Debug)]
pub(super) struct Good {
    pub seq: u64,
    pub len: u64,
}

/// Writes one window, rolling segments as needed; returns each record's (segment, offset).
async fn commit(shared: &Shared, w: &mut Writer, win: &Window, sync_now: bool) -> io::Result<Vec<(u32, u64)>> {
    let seg_bytes = shared.cfg.segment_bytes.max(SEG_HEADER_LEN + 1);
    let mut placed = Vec::with_capacity(win.recs.len());
    let mut i = 0;
    while i < win.recs.len() {
        let mut j = i;
        let mut pos = w.len;
        {
            let mut st = shared.st.borrow_mut();
            let st = &mut *st;
            while let Some(r) = win.recs.get(j) {
                let size = REC_HEADER_LEN as u64 + r.len() as u64;
                // A record bigger than a segment still goes, alone, into a fresh one.
                if pos + size > seg_bytes && pos > SEG_HEADER_LEN {
                    break;
                }
                // Noted before any await, so an unlink decision never misses what is on its
                // way into a segment.
                if let Some(info) = st.segs.get_mut(w.seg as usize) {
                    match r.entry {
                        DELETE => info.markers.push(r.ledger),
                        RESERVE => {}
                        _ => {
                            info.present.insert(r.ledger);
                        }
                    }
                }
                placed.push((w.seg, pos));
                pos += size;
                j += 1;
            }
        }
        if j == i {
            roll(shared, w).await?;
            continue;
        }
        let parts: Vec<&[u8]> = win.recs[i..j]
            .iter()
            .flat_map(|r| std::iter::once(&r.header[..]).chain(r.payload.pieces().map(|p| &p[..])))
            .collect();
        w.write_parts(&parts).await?;
        i = j;
    }
    if sync_now && w.dirty {
        sync(shared, w).await?;
    }
    Ok(placed)
}

/// Seals the active segment (durably) and starts the next one.
async fn roll(shared: &Shared, w: &mut Writer) -> io::Result<()> {
    // A sealed segment is durable before the next one starts (recovery trusts that), even
    // while an interval sync of it has not returned yet.
    if w.dirty || shared.interval_sync.running.get() {
        sync(shared, w).await?;
    }
    let seq = w.seq + 1;
    let (seg, floor) = {
        let mut st = shared.st.borrow_mut();
        let seg = st.segs.len() as u32;
        st.segs.push(SegInfo::new(shared.core, seq));
        // Active from now on, so it is never taken for an empty, dead segment.
        st.active = seg;
        (seg, st.reserved)
    };
    let next = Writer::create(&shared.root, shared.core, seq, seg, floor, shared.cfg.flush.buffered()).await?;
    if let Some(s) = shared.st.borrow_mut().segs.get_mut(seg as usize) {
        s.durable = next.synced;
    }
    let old = std::mem::replace(w, next);
    if let Err(e) = old.close().await {
        tracing::warn!(error = %e, "closing sealed ledger segment");
    }
    Ok(())
}

/// Publishes a written window (its entries become readable) and wakes its waiters. False if
/// the write failed, which fails the store.
fn finish(shared: &Shared, win: Window, res: io::Result<Vec<(u32, u64)>>) -> bool {
    let placed = match res {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("ledger write failed: {e}");
            fail(shared, &msg);
            win.done.complete(Err(msg));
            return false;
        }
    };
    {
        let mut st = shared.st.borrow_mut();
        st.pending_bytes = st.pending_bytes.saturating_sub(win.entry_bytes);
        for (r, (seg, offset)) in win.recs.iter().zip(placed) {
            if r.entry >= RESERVE {
                continue;
            }
            // Absent once deleted; ids were assigned in order, so this is the next one.
            if let Some(ix) = st.ledgers.get_mut(&r.ledger)
                && ix.locs.len() as u64 == r.entry
            {
                ix.locs.push(Loc { offset, seg, len: r.len() });
            }
        }
    }
    win.done.complete(Ok(()));
    true
}

/// After a failed write or sync nothing queued can be acknowledged: its durability (and that
/// of anything after it) is unknown. Appends are refused until `resume` has put the store
/// back on a clean, durable footing.
fn fail(shared: &Shared, msg: &str) {
    tracing::error!(core = shared.core, error = msg, "ledger store failed; writes refused until a probe succeeds");
    let queued = {
        let mut st = shared.st.borrow_mut();
        if st.failed.is_none() {
            st.failures += 1;
        }
        st.failed.get_or_insert_with(|| msg.to_string());
        st.pending_bytes = 0;
        std::mem::replace(&mut st.queue, Window::new())
    };
    queued.done.complete(Err(msg.to_string()));
}
