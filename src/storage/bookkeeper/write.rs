//! A ledger this core writes: each entry goes to its write set, completes at the ack quorum,
//! and is reported durable only once every earlier entry is (the LAC advances contiguously).
//! Each add carries the current LAC and the ledger's cumulative length, as BookKeeper's do.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::bookie::{Bookie, BookieError};
use super::digest::Digester;
use super::metadata::{LedgerMetadata, LedgerState, ledger_path};
use super::protocol::{self, OP_ADD, rc};
use super::{Ctx, oneshot, write_set};
use crate::storage::{EntryId, LedgerId, SplitBytes, StorageError};
use crate::zookeeper::ZkError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriterState {
    Open,
    /// Closing: no new appends; waiting for outstanding ones before the metadata CAS.
    Closing,
    Closed,
    Fenced,
    Failed(String),
}

/// The reason a writer stops when its ledger is deleted (not a failure).
pub(crate) const DELETED: &str = "deleted";

pub(crate) struct PendingAdd {
    pub entry: i64,
    pub head: Bytes,
    pub payload: SplitBytes,
    pub length: i64,
    /// Ensemble positions that acknowledged (bit i = position i).
    pub acks: u64,
    pub sent: bool,
    done: Option<oneshot::Sender<Result<EntryId, StorageError>>>,
}

pub(crate) struct WriteLedger {
    pub id: LedgerId,
    pub ctx: Rc<Ctx>,
    pub meta: RefCell<LedgerMetadata>,
    pub version: Cell<i32>,
    digester: Digester,
    pub ensemble: RefCell<Vec<Rc<Bookie>>>,
    next_entry: Cell<i64>,
    length: Cell<i64>,
    pub lac: Cell<i64>,
    pub lac_length: Cell<i64>,
    pub pending: RefCell<VecDeque<PendingAdd>>,
    pub state: RefCell<WriterState>,
    /// Ensemble positions whose bookie failed and awaits replacement.
    pub failed: RefCell<BTreeSet<usize>>,
    pub changing: Cell<bool>,
    drained: event_listener::Event,
}

fn state_error(id: LedgerId, s: &WriterState) -> StorageError {
    match s {
        WriterState::Fenced => StorageError::Fenced(id),
        WriterState::Failed(why) => StorageError::Unavailable(format!("ledger {id}: {why}")),
        _ => StorageError::Unavailable(format!("ledger {id} is closed to appends")),
    }
}

impl WriteLedger {
    pub fn new(ctx: Rc<Ctx>, id: LedgerId, meta: LedgerMetadata, version: i32) -> Rc<WriteLedger> {
        let ensemble = meta.ensemble_for(0).iter().map(|b| ctx.bookie(b)).collect();
        let digester = Digester::new(meta.digest, &meta.password);
        Rc::new(WriteLedger {
            id,
            ctx,
            meta: RefCell::new(meta),
            version: Cell::new(version),
            digester,
            ensemble: RefCell::new(ensemble),
            next_entry: Cell::new(0),
            length: Cell::new(0),
            lac: Cell::new(-1),
            lac_length: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            state: RefCell::new(WriterState::Open),
            failed: RefCell::new(BTreeSet::new()),
            changing: Cell::new(false),
            drained: event_listener::Event::new(),
        })
    }

    pub fn path(&self) -> String {
        ledger_path(&self.ctx.root, self.id)
    }

    pub fn pending_count(&self) -> u64 {
        self.pending.borrow().len() as u64
    }

    /// Hands one entry to the bookies now; the receiver resolves once it is durable.
    pub fn append(
        self: &Rc<Self>,
        payload: SplitBytes,
    ) -> Result<oneshot::Receiver<Result<EntryId, StorageError>>, StorageError> {
        {
            let s = self.state.borrow();
            if *s != WriterState::Open {
                return Err(state_error(self.id, &s));
            }
        }
        let entry = self.next_entry.get();
        let length = self.length.get() + payload.len() as i64;
        let prefix = self.digester.entry_prefix(
            self.id as i64,
            entry,
            self.lac.get(),
            length,
            &payload.pieces().map(|p| &p[..]).collect::<Vec<_>>(),
        );
        let frame_len = protocol::ADD_PREFIX_LEN + prefix.len() + payload.len();
        if frame_len > protocol::MAX_FRAME {
            return Err(StorageError::Unavailable(format!(
                "entry of {} bytes exceeds the 5 MB frame limit",
                payload.len()
            )));
        }
        let mut head = BytesMut::with_capacity(protocol::ADD_PREFIX_LEN + prefix.len());
        head.extend_from_slice(&protocol::add_prefix(0, &self.ctx.master_key, prefix.len() + payload.len()));
        head.extend_from_slice(&prefix);
        self.next_entry.set(entry + 1);
        self.length.set(length);
        self.ctx.inflight.set(self.ctx.inflight.get() + payload.len());
        let (tx, rx) = oneshot::channel();
        let sendable = !self.changing.get();
        self.pending.borrow_mut().push_back(PendingAdd {
            entry,
            head: head.freeze(),
            payload,
            length,
            acks: 0,
            sent: sendable,
            done: Some(tx),
        });
        if sendable {
            let ensemble_size = self.ensemble.borrow().len();
            let wq = self.meta.borrow().write_quorum;
            for idx in write_set(entry, ensemble_size, wq) {
                self.send_add(entry, idx);
            }
        }
        Ok(rx)
    }

    /// Sends the pending add `entry` to the bookie at ensemble position `idx`.
    pub fn send_add(self: &Rc<Self>, entry: i64, idx: usize) {
        let (head, payload) = {
            let pending = self.pending.borrow();
            let Some(p) = self.find(&pending, entry) else { return };
            (p.head.clone(), p.payload.clone())
        };
        let Some(bookie) = self.ensemble.borrow().get(idx).cloned() else { return };
        let me: Weak<WriteLedger> = Rc::downgrade(self);
        let b = Rc::downgrade(&bookie);
        bookie.send(
            (OP_ADD, self.id as i64, entry),
            head,
            payload,
            self.ctx.config.add_timeout,
            Box::new(move |res| {
                if let Some(me) = me.upgrade() {
                    me.on_add_response(entry, idx, b, res);
                }
            }),
        );
    }

    fn find<'a>(&self, pending: &'a VecDeque<PendingAdd>, entry: i64) -> Option<&'a PendingAdd> {
        let first = pending.front()?.entry;
        pending.get(usize::try_from(entry - first).ok()?)
    }

    fn on_add_response(
        self: &Rc<Self>,
        entry: i64,
        idx: usize,
        bookie: Weak<Bookie>,
        res: Result<protocol::Response, BookieError>,
    ) {
        if !matches!(*self.state.borrow(), WriterState::Open | WriterState::Closing) {
            return;
        }
        // An answer from a bookie that has since been replaced at this position is stale.
        let current = self.ensemble.borrow().get(idx).map(Rc::downgrade);
        if !current.is_some_and(|c| c.ptr_eq(&bookie)) {
            return;
        }
        match res {
            Ok(r) if r.rc == rc::EOK => self.ack(entry, idx),
            Ok(r) if r.rc == rc::EFENCED => {
                warn!(ledger = self.id, "bookie refused an add: ledger fenced by another writer");
                self.stop(WriterState::Fenced);
            }
            Ok(r) => {
                debug!(ledger = self.id, entry, rc = rc::name(r.rc), "add failed on a bookie");
                self.bookie_failed(idx);
            }
            Err(e) => {
                debug!(ledger = self.id, entry, error = %e, "add failed on a bookie");
                self.bookie_failed(idx);
            }
        }
    }

    fn ack(&self, entry: i64, idx: usize) {
        {
            let mut pending = self.pending.borrow_mut();
            let Some(first) = pending.front().map(|p| p.entry) else { return };
            let Some(p) = usize::try_from(entry - first).ok().and_then(|i| pending.get_mut(i)) else { return };
            p.acks |= 1 << idx;
        }
        self.complete_ready();
    }

    /// Completes, in order, every leading entry that reached its ack quorum.
    pub fn complete_ready(&self) {
        let qa = self.meta.borrow().ack_quorum as u32;
        loop {
            let done = {
                let mut pending = self.pending.borrow_mut();
                match pending.front() {
                    Some(p) if p.acks.count_ones() >= qa => pending.pop_front(),
                    _ => None,
                }
            };
            let Some(mut p) = done else { break };
            self.lac.set(p.entry);
            self.lac_length.set(p.length);
            self.ctx.inflight.set(self.ctx.inflight.get().saturating_sub(p.payload.len()));
            if let Some(tx) = p.done.take() {
                tx.send(Ok(p.entry as EntryId));
            }
        }
        if self.pending.borrow().is_empty() {
            self.drained.notify(usize::MAX);
        }
    }

    fn bookie_failed(self: &Rc<Self>, idx: usize) {
        if self.failed.borrow_mut().insert(idx) && !self.changing.get() {
            self.changing.set(true);
            let me = self.clone();
            crate::runtime::spawn(async move { super::ensemble::replace_failed(me).await });
        }
    }

    /// Stops the writer: every pending append fails (and is never acknowledged). A stop
    /// other than a deletion begins a failure episode.
    pub fn stop(&self, state: WriterState) {
        let episode = !matches!(&state, WriterState::Failed(why) if why == DELETED);
        self.stop_as(state, episode);
    }

    /// This core will not write the ledger again (its partition moved, or is being recovered
    /// here): pending appends fail as fenced. Not a store failure, so no failure episode.
    pub fn abandon(&self) {
        self.stop_as(WriterState::Fenced, false);
    }

    fn stop_as(&self, state: WriterState, episode: bool) {
        {
            let mut s = self.state.borrow_mut();
            if matches!(*s, WriterState::Closed | WriterState::Fenced | WriterState::Failed(_)) {
                return;
            }
            *s = state.clone();
        }
        if episode {
            self.ctx.note_failure();
        }
        let failed: Vec<PendingAdd> = self.pending.borrow_mut().drain(..).collect();
        if !failed.is_empty() {
            warn!(ledger = self.id, lost = failed.len(), state = ?state, "ledger writer stopped; pending appends fail");
        }
        for mut p in failed {
            self.ctx.inflight.set(self.ctx.inflight.get().saturating_sub(p.payload.len()));
            if let Some(tx) = p.done.take() {
                tx.send(Err(state_error(self.id, &state)));
            }
        }
        self.drained.notify(usize::MAX);
    }

    /// Closes the ledger: waits for outstanding appends, then CAS CLOSED with the LAC and length.
    pub async fn close(self: &Rc<Self>) -> Result<(), StorageError> {
        {
            let mut s = self.state.borrow_mut();
            match &*s {
                WriterState::Open => *s = WriterState::Closing,
                WriterState::Closing | WriterState::Closed => {}
                other => return Err(state_error(self.id, other)),
            }
        }
        let wait = self.ctx.config.add_timeout * 3;
        let deadline = std::time::Instant::now() + wait;
        while !self.pending.borrow().is_empty() {
            let listener = self.drained.listen();
            if self.pending.borrow().is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if crate::runtime::timeout(left, listener).await.is_none() {
                self.stop(WriterState::Failed("appends still outstanding at close".into()));
                break;
            }
        }
        match &*self.state.borrow() {
            WriterState::Closing | WriterState::Closed => {}
            other => return Err(state_error(self.id, other)),
        }
        let path = self.path();
        loop {
            let mut meta = self.meta.borrow().clone();
            meta.state = LedgerState::Closed;
            meta.last_entry = self.lac.get();
            meta.length = self.lac_length.get();
            match self.ctx.zk.set(&path, meta.encode(), Some(self.version.get())).await {
                Ok(stat) => {
                    self.version.set(stat.version);
                    *self.meta.borrow_mut() = meta;
                    *self.state.borrow_mut() = WriterState::Closed;
                    info!(ledger = self.id, last_entry = self.lac.get(), "ledger closed");
                    return Ok(());
                }
                Err(ZkError::BadVersion) => {
                    let Some((data, stat)) = self.ctx.zk.get(&path).await.map_err(zk_error)? else {
                        return Err(StorageError::NoSuchLedger(self.id));
                    };
                    let theirs = LedgerMetadata::decode(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                    match theirs.state {
                        LedgerState::Closed if theirs.last_entry == self.lac.get() => {
                            *self.meta.borrow_mut() = theirs;
                            *self.state.borrow_mut() = WriterState::Closed;
                            return Ok(());
                        }
                        LedgerState::Open => {
                            // Someone else changed the ensemble (e.g. re-replication): keep theirs.
                            self.version.set(stat.version);
                            *self.meta.borrow_mut() = theirs;
                        }
                        _ => {
                            self.stop(WriterState::Fenced);
                            return Err(StorageError::Fenced(self.id));
                        }
                    }
                }
                Err(e) => return Err(zk_error(e)),
            }
        }
    }

    /// Waits a little for a condition to change (used by the ensemble change's retries).
    pub async fn pause(d: Duration) {
        crate::runtime::sleep(d).await;
    }
}

pub(crate) fn zk_error(e: ZkError) -> StorageError {
    StorageError::Unavailable(format!("ZooKeeper: {e}"))
}
