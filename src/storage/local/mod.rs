//! The embedded ledger store: a BookKeeper-bookie-like entry log, one per core.
//!
//! Each core appends every ledger's entries to its own directory, `<dir>/core-<N>/`, as a
//! series of segment files (format in `format.rs`), and keeps an in-memory index
//! `ledger -> [(segment, offset, len)]`. Appends are group-committed by one committer task per
//! core (`commit.rs`); reads are DMA reads at the indexed location, checksum verified.
//! Recovery (`recover.rs`) runs on the main thread before the cores start and hands each core
//! the indexes of the ledgers it will own, wherever their entries live: a ledger written by
//! another core in an earlier run is read from that core's directory.
//!
//! Durability: under `FlushPolicy::Always` an append resolves only after an fdatasync that
//! covers it. After a failed write or sync the store refuses appends (and fails everything
//! queued) until a probe write succeeds; it then discards what the failed window wrote and
//! continues in a fresh segment (`resume.rs`).

mod checkpoint;
mod commit;
mod format;
mod recover;
mod resume;
mod segments;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_checkpoint;
#[cfg(test)]
mod tests_recovery;
mod writer;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use self::commit::{Done, Notify, Window, Writer};
use self::format::{DELETE, Loc, MAX_PAYLOAD, REC_HEADER_LEN, RESERVE, RecHeader, SEQ_BITS, ledger_id, seg_path};
pub use self::format::{core_dir, disk_space};
pub use self::recover::{RecoveredLedgers, RecoveredStore, Scanned, recover, scan};
use self::segments::{SegInfo, removable};
use self::writer::SegmentFile;
use super::{EntryId, KnownCrc, LedgerId, LedgerStore, SplitBytes, StorageError};

/// Ledger seqs are made durable (reserved) this many at a time, so ids are never reused
/// after a restart even for ledgers that never got an entry.
const RESERVE_STEP: u64 = 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge an append only after an fdatasync covering it.
    #[default]
    Always,
    /// Acknowledge once written into the page cache (it survives the process, not a power
    /// loss), as Kafka does by default; fdatasync at this interval.
    Interval(Duration),
}

impl FlushPolicy {
    /// Whether segments are written through the page cache rather than with O_DIRECT.
    pub(super) fn buffered(self) -> bool {
        matches!(self, FlushPolicy::Interval(_))
    }
}

#[derive(Clone, Debug)]
pub struct LocalStoreConfig {
    /// Holds the `core-<N>` directories.
    pub dir: PathBuf,
    /// A segment is sealed and the next one started once it would grow past this.
    pub segment_bytes: u64,
    pub flush: FlushPolicy,
    /// Entry bytes queued but not yet written beyond which appends fail with `Backpressure`.
    pub max_pending_bytes: usize,
    /// While failed, how often to probe whether writes succeed again.
    pub probe_interval: Duration,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        LocalStoreConfig {
            dir: PathBuf::from("data/ledgers"),
            segment_bytes: 256 << 20,
            flush: FlushPolicy::Always,
            max_pending_bytes: 64 << 20,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// One core's ledger store (core-local, `!Send`).
pub struct LocalLedgerStore {
    shared: Rc<Shared>,
}

/// State shared between the store handle and its committer task.
pub(super) struct Shared {
    core: usize,
    root: PathBuf,
    cfg: LocalStoreConfig,
    st: RefCell<State>,
    wake: Notify,
    interval_sync: commit::IntervalSync,
    syncs: Cell<u64>,
    /// Tests: make the next fdatasync fail.
    #[cfg(test)]
    fail_next_sync: Cell<bool>,
    /// Tests: how long each fdatasync takes at least (a slow disk).
    #[cfg(test)]
    sync_delay: Cell<Duration>,
    /// Completed when the committer exits.
    stopped: Rc<Done>,
}

pub(super) struct State {
    ledgers: HashMap<LedgerId, LedgerIndex>,
    segs: Vec<SegInfo>,
    /// Ledgers known deleted (at recovery or by this core since).
    deleted: HashSet<LedgerId>,
    /// The segment being appended to; never unlinked.
    active: u32,
    next_seq: u64,
    /// Ledger seqs below this are durably reserved (or will be, with the queued window).
    reserved: u64,
    queue: Window,
    pending_bytes: usize,
    failed: Option<String>,
    /// Times the store has failed (a resumed store does not reset it).
    failures: u64,
    closed: bool,
    /// Read-only handles, opened on first read of a segment.
    readers: HashMap<u32, Rc<SegmentFile>>,
}

struct LedgerIndex {
    /// Durable entries; entry id = position.
    locs: Vec<Loc>,
    /// Next id to assign (ids are assigned when an append is queued).
    next_entry: EntryId,
    /// Lost entries at recovery: appending would reuse ids, so it is read-only.
    sealed: bool,
}

impl LocalLedgerStore {
    /// Opens core `core`'s store with the ledgers recovery assigned to it, and starts its
    /// committer task. Must run on that core's executor.
    pub async fn open(
        core: usize,
        cfg: LocalStoreConfig,
        recovered: RecoveredLedgers,
    ) -> Result<Rc<LocalLedgerStore>, StorageError> {
        let RecoveredLedgers { common, ledgers } = recovered;
        if common.root != cfg.dir {
            return Err(invalid(format!("recovered {} but opening {}", common.root.display(), cfg.dir.display())));
        }
        if (core as u64) >= 1 << (64 - SEQ_BITS) {
            return Err(invalid(format!("core {core} does not fit in a ledger id")));
        }
        let root = cfg.dir.clone();
        let dir = core_dir(&root, core);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            commit::sync_dir(&root).await?;
        }
        commit::prime_iopoll_probe(&dir).await?;
        let next_seq = common.next_seq.get(&core).copied().unwrap_or(0).max(1);
        let mut segs = common.segs.clone();
        let dir_state = common.dirs.get(&core).copied();
        let writer = match dir_state.and_then(|d| d.last) {
            Some(last) if last.len < cfg.segment_bytes => {
                let seq = segs.get(last.seg as usize).map_or(0, |s| s.seq);
                Writer::reopen(&seg_path(&root, core, seq), last.seg, seq, last.len, cfg.flush.buffered()).await?
            }
            _ => {
                let seq = dir_state.map_or(0, |d| d.next_seq);
                let seg = segs.len() as u32;
                segs.push(SegInfo::new(core, seq));
                let w = Writer::create(&root, core, seq, seg, next_seq, cfg.flush.buffered()).await?;
                if let Some(s) = segs.get_mut(seg as usize) {
                    s.durable = w.synced;
                }
                w
            }
        };
        let ledgers = ledgers
            .into_iter()
            .map(|(id, locs)| {
                let ix = LedgerIndex { next_entry: locs.len() as u64, locs, sealed: common.sealed.contains(&id) };
                (id, ix)
            })
            .collect();
        let shared = Rc::new(Shared {
            core,
            root,
            cfg,
            st: RefCell::new(State {
                ledgers,
                segs,
                deleted: common.deleted.clone(),
                active: writer.seg,
                next_seq,
                reserved: next_seq,
                queue: Window::new(),
                pending_bytes: 0,
                failed: None,
                failures: 0,
                closed: false,
                readers: HashMap::new(),
            }),
            wake: Notify::default(),
            interval_sync: Default::default(),
            syncs: Cell::new(0),
            #[cfg(test)]
            fail_next_sync: Cell::new(false),
            #[cfg(test)]
            sync_delay: Cell::new(Duration::ZERO),
            stopped: Rc::new(Done::default()),
        });
        glommio::spawn_local(commit::run(shared.clone(), writer)).detach();
        Ok(Rc::new(LocalLedgerStore { shared }))
    }

    /// fdatasyncs issued for committed windows (and sealed segments) so far.
    pub fn fdatasync_count(&self) -> u64 {
        self.shared.syncs.get()
    }

    /// Times the store has failed so far. A managed ledger that sees it change re-checks what
    /// of its own appends is durable before appending again.
    pub fn failures(&self) -> u64 {
        self.shared.st.borrow().failures
    }

    /// The reason appends are refused right now, if the store is failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.st.borrow().failed.clone()
    }

    /// Whether an entry of about `bytes` would be queued now rather than refused with
    /// `Backpressure`; checked before offsets are assigned, so a refusal leaves no trace.
    pub fn has_room(&self, bytes: usize) -> bool {
        let st = self.shared.st.borrow();
        st.pending_bytes == 0 || st.pending_bytes + REC_HEADER_LEN + bytes <= self.shared.cfg.max_pending_bytes
    }

    /// Appends to `ledger` that are queued but not yet durable (or failed and not yet sealed).
    pub fn pending_entries(&self, ledger: LedgerId) -> u64 {
        let st = self.shared.st.borrow();
        st.ledgers.get(&ledger).map_or(0, |ix| ix.next_entry.saturating_sub(ix.locs.len() as u64))
    }

    /// Stops accepting appends, writes and syncs what is queued, and stops the committer.
    pub async fn close(&self) {
        self.shared.st.borrow_mut().closed = true;
        self.shared.wake.notify();
        let _ = self.shared.stopped.wait().await;
    }

    /// Queues one record; returns the window to wait on and the assigned entry id.
    /// Queued now, not at first poll: ids and log order follow call order.
    fn queue_append(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
        known: Option<KnownCrc>,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        let queued = self.enqueue(ledger, entry, known);
        async move {
            let (done, id) = queued?;
            done.wait().await?;
            Ok(id)
        }
    }

    fn enqueue(
        &self,
        ledger: LedgerId,
        payload: SplitBytes,
        known: Option<KnownCrc>,
    ) -> Result<(Rc<Done>, EntryId), StorageError> {
        let mut guard = self.shared.st.borrow_mut();
        let st = &mut *guard;
        check_open(st)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(invalid(format!("entry of {} bytes is too large", payload.len())));
        }
        let ix = st.ledgers.get_mut(&ledger).ok_or(StorageError::NoSuchLedger(ledger))?;
        if ix.sealed {
            return Err(StorageError::Corrupt(format!("ledger {ledger} lost entries at recovery and is read-only")));
        }
        let size = REC_HEADER_LEN + payload.len();
        // One entry alone always fits, so an entry larger than the bound cannot wedge a ledger.
        if st.pending_bytes > 0 && st.pending_bytes + size > self.shared.cfg.max_pending_bytes {
            return Err(StorageError::Backpressure);
        }
        let id = ix.next_entry;
        ix.next_entry += 1;
        st.queue.push_known(ledger, id, payload, known);
        st.queue.entry_bytes += size;
        st.pending_bytes += size;
        let done = st.queue.done.clone();
        drop(guard);
        self.shared.wake.notify();
        Ok((done, id))
    }

    /// Unlinks this core's segments that hold only deleted ledgers.
    async fn unlink_dead(&self) {
        let core = self.shared.core;
        let paths: Vec<PathBuf> = {
            let mut guard = self.shared.st.borrow_mut();
            let st = &mut *guard;
            let active = st.active;
            let doomed = removable(&st.segs, &st.deleted, |i, s| s.core == core && i as u32 != active);
            doomed
                .into_iter()
                .map(|i| {
                    st.readers.remove(&(i as u32));
                    let s = &mut st.segs[i];
                    s.gone = true;
                    seg_path(&self.shared.root, s.core, s.seq)
                })
                .collect()
        };
        for p in paths {
            if let Err(e) = glommio::io::remove(&p).await {
                // Recovery removes it next time.
                tracing::warn!(path = %p.display(), error = %e, "cannot remove dead ledger segment");
            }
        }
    }

    async fn reader(&self, seg: u32) -> Result<Rc<SegmentFile>, StorageError> {
        let path = {
            let st = self.shared.st.borrow();
            if let Some(f) = st.readers.get(&seg) {
                return Ok(f.clone());
            }
            let s = st.segs.get(seg as usize).ok_or_else(|| StorageError::Corrupt(format!("no segment {seg}")))?;
            seg_path(&self.shared.root, s.core, s.seq)
        };
        let f = Rc::new(SegmentFile::open_for_reads(&path, self.shared.cfg.flush.buffered()).await?);
        let mut st = self.shared.st.borrow_mut();
        if st.segs.get(seg as usize).is_some_and(|s| !s.gone) {
            Ok(st.readers.entry(seg).or_insert(f).clone())
        } else {
            Ok(f)
        }
    }
}

impl Drop for LocalLedgerStore {
    fn drop(&mut self) {
        // The committer drains what is queued, syncs and exits.
        self.shared.st.borrow_mut().closed = true;
        self.shared.wake.notify();
    }
}

fn check_open(st: &State) -> Result<(), StorageError> {
    if let Some(f) = &st.failed {
        return Err(StorageError::Unavailable(f.clone()));
    }
    if st.closed {
        return Err(StorageError::Unavailable("ledger store closed".into()));
    }
    Ok(())
}

fn invalid(msg: String) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

impl LocalLedgerStore {
    /// A new, empty ledger of this core (the synchronous half of `create_ledger`).
    pub fn new_ledger(&self) -> LedgerId {
        let core = self.shared.core;
        let mut guard = self.shared.st.borrow_mut();
        let st = &mut *guard;
        let seq = st.next_seq;
        st.next_seq += 1;
        let id = ledger_id(core, seq);
        let ix = LedgerIndex { locs: Vec::new(), next_entry: 0, sealed: false };
        st.ledgers.insert(id, ix);
        if st.next_seq > st.reserved && check_open(st).is_ok() {
            // Queued before any append to the new ledger can be, so durable no later.
            st.reserved = st.next_seq + RESERVE_STEP;
            st.queue.push(ledger_id(core, st.reserved), RESERVE, SplitBytes::default());
            drop(guard);
            self.shared.wake.notify();
        }
        id
    }
}

impl LedgerStore for LocalLedgerStore {
    fn create_ledger(&self, _name: &str) -> impl Future<Output = Result<LedgerId, StorageError>> {
        let id = self.new_ledger();
        async move { Ok(id) }
    }

    /// The managed ledger's closed entry count is what seals a local ledger (recovery
    /// honours it), so there is nothing to write here.
    async fn close_ledger(&self, _ledger: LedgerId) -> Result<(), StorageError> {
        Ok(())
    }

    /// Startup recovery scanned every ledger of the core already.
    fn recover_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<Option<EntryId>, StorageError>> {
        let last = self.last_entry(ledger);
        async move { Ok(last) }
    }

    fn failure(&self) -> Option<String> {
        LocalLedgerStore::failure(self)
    }

    fn failures(&self) -> u64 {
        LocalLedgerStore::failures(self)
    }

    fn has_room(&self, bytes: usize) -> bool {
        LocalLedgerStore::has_room(self, bytes)
    }

    fn pending_entries(&self, ledger: LedgerId) -> u64 {
        LocalLedgerStore::pending_entries(self, ledger)
    }

    fn append(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        self.queue_append(ledger, entry, None)
    }

    fn append_known(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
        known: KnownCrc,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        self.queue_append(ledger, entry, Some(known))
    }

    async fn read(&self, ledger: LedgerId, entry: EntryId) -> Result<Bytes, StorageError> {
        let loc = {
            let st = self.shared.st.borrow();
            let ix = st.ledgers.get(&ledger).ok_or(StorageError::NoSuchLedger(ledger))?;
            usize::try_from(entry)
                .ok()
                .and_then(|e| ix.locs.get(e).copied())
                .ok_or(StorageError::NoSuchEntry { ledger, entry })?
        };
        let file = self.reader(loc.seg).await?;
        let want = REC_HEADER_LEN + loc.len as usize;
        let got = file.read_at(loc.offset, want).await?;
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!(
                "ledger {ledger} entry {entry} (segment {} offset {}): {what}",
                loc.seg, loc.offset
            ))
        };
        if got.len() < want {
            return Err(corrupt("short read"));
        }
        let mut hb = [0u8; REC_HEADER_LEN];
        hb.copy_from_slice(&got[..REC_HEADER_LEN]);
        let h = RecHeader::parse(&hb);
        if h.ledger != ledger || h.entry != entry || h.len != loc.len {
            return Err(corrupt("record header does not match the index"));
        }
        if !h.crc_ok(&got[REC_HEADER_LEN..want]) {
            return Err(corrupt("checksum mismatch"));
        }
        // The read's own buffer, not a copy: a fetch sends these bytes straight from it.
        Ok(crate::runtime::core_bytes(got).slice(REC_HEADER_LEN..want))
    }

    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId> {
        let st = self.shared.st.borrow();
        let n = st.ledgers.get(&ledger)?.locs.len();
        n.checked_sub(1).map(|n| n as EntryId)
    }

    fn abandon_ledger(&self, _ledger: LedgerId) {
        // One node's own files: no other owner ever takes a ledger over.
    }

    fn delete_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>> {
        let queued = {
            let mut st = self.shared.st.borrow_mut();
            if st.deleted.contains(&ledger) {
                Ok(None)
            } else {
                // Unknown ids get a marker too: deleting is idempotent, and the ledger may
                // have entries this core was not given (the marker hides them for good).
                check_open(&st).map(|()| {
                    st.queue.push(ledger, DELETE, SplitBytes::default());
                    st.queue.force_sync = true;
                    Some(st.queue.done.clone())
                })
            }
        };
        self.shared.wake.notify();
        async move {
            let Some(done) = queued? else {
                return Ok(());
            };
            done.wait().await?;
            {
                let mut st = self.shared.st.borrow_mut();
                st.ledgers.remove(&ledger);
                st.deleted.insert(ledger);
            }
            self.unlink_dead().await;
            Ok(())
        }
    }
}
