//! Storage: the entry codec shared by every backend, and the ledger stores.
//!
//! A ledger is an append-only sequence of entries with contiguous ids from 0; a store keeps
//! many ledgers. The managed ledger (src/log) strings ledgers together into a partition's log.

pub mod bookkeeper;
pub mod codec;
pub mod crc;
pub mod entry;
pub mod local;
pub mod split_bytes;

pub use split_bytes::SplitBytes;

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::Either;
use thiserror::Error;

pub type LedgerId = u64;
pub type EntryId = u64;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("ledger store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no ledger {0}")]
    NoSuchLedger(LedgerId),
    #[error("no entry {entry} in ledger {ledger}")]
    NoSuchEntry { ledger: LedgerId, entry: EntryId },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("ledger store is failed or closed: {0}")]
    Unavailable(String),
    #[error("too much data waiting to be written; retry later")]
    Backpressure,
    /// Another writer fenced (recovered or is recovering) the ledger; this writer must stop.
    #[error("ledger {0} was fenced by another writer")]
    Fenced(LedgerId),
}

/// What every ledger store backend offers one core. Implementations are core-local (`!Send`).
///
/// The managed ledger (src/log) is written against this trait only; [`Backend`] picks the
/// implementation once, when a core starts.
pub trait LedgerStore {
    /// A new, empty ledger for the managed ledger `name` (its Pulsar name, which a backend may
    /// record with the ledger); ids are unique across cores and restarts.
    fn create_ledger(&self, name: &str) -> impl Future<Output = Result<LedgerId, StorageError>>;
    /// Appends one entry to a ledger this core created. The entry is taken in call order,
    /// before the returned future is first polled; it resolves with the entry's id once the
    /// entry is durable.
    /// The future borrows nothing of the store (`use<Self>`), so a caller may keep it beyond
    /// the call that queued the entry (a produce answered after the next one was taken).
    fn append(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<Self>;
    /// [`Self::append`] of an entry part of whose checksum the caller already has: a store
    /// that checksums entries may derive its checksum from `known` instead of reading those
    /// bytes again.
    fn append_known(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
        known: KnownCrc,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<Self> {
        let _ = known;
        self.append(ledger, entry)
    }
    /// Reads one durable entry.
    fn read(&self, ledger: LedgerId, entry: EntryId) -> impl Future<Output = Result<Bytes, StorageError>>;
    /// Seals a ledger this core wrote (rollover): nothing more is appended to it. Called once
    /// its appends have settled.
    fn close_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>>;
    /// Opens a ledger written by an earlier run (or another writer) for reading: fences the
    /// writer off, recovers and seals it. Resolves with its last entry, `None` if it is empty.
    fn recover_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<Option<EntryId>, StorageError>>;
    /// The last durable entry of a ledger this core writes or has recovered, `None` if it is
    /// empty or unknown.
    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId>;
    /// Forgets a ledger this core was writing and will not write again (its partition moved
    /// to another owner) without sealing it: appends not yet durable fail as fenced; the next
    /// opener recovers it.
    fn abandon_ledger(&self, ledger: LedgerId);
    /// Deletes a whole ledger (retention).
    fn delete_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>>;
    /// The reason appends are refused right now, if the store is failed.
    fn failure(&self) -> Option<String>;
    /// Failure episodes so far. A managed ledger that sees it change re-checks what of its own
    /// appends is durable before appending again.
    fn failures(&self) -> u64;
    /// Whether an entry of about `bytes` would be taken now rather than refused with
    /// `Backpressure`; checked before offsets are assigned, so a refusal leaves no trace.
    fn has_room(&self, bytes: usize) -> bool;
    /// Appends to `ledger` taken but not yet settled (durable, or failed and accounted for).
    fn pending_entries(&self, ledger: LedgerId) -> u64;
}

/// A core's ledger store, whichever backend the configuration chose.
pub enum Backend {
    Local(Rc<local::LocalLedgerStore>),
    BookKeeper(Rc<bookkeeper::BookKeeperStore>),
}

/// Calls a method on whichever store `$b` holds; `either` joins the two future types (so
/// the call itself, and what it takes in call order, happens now, not at the first poll).
macro_rules! dispatch {
    ($b:expr, $s:ident => $call:expr) => {
        match $b {
            Backend::Local($s) => $call,
            Backend::BookKeeper($s) => $call,
        }
    };
    (either $b:expr, $s:ident => $call:expr) => {
        match $b {
            Backend::Local($s) => Either::Left($call),
            Backend::BookKeeper($s) => Either::Right($call),
        }
    };
}

impl Backend {
    /// Stops taking appends, makes everything taken durable, and stops the store.
    pub async fn close(&self) {
        match self {
            Backend::Local(s) => s.close().await,
            // Acknowledged adds are on the bookies already; unacknowledged ones fail with the
            // connections when the core stops.
            Backend::BookKeeper(_) => {}
        }
    }

    /// The store's checkpoint for a core snapshot, and the directory the snapshot goes to;
    /// `None` for a backend whose partitions are rebuilt from the ledgers themselves.
    pub fn snapshot_target(&self) -> Option<(Option<Vec<u8>>, PathBuf)> {
        match self {
            Backend::Local(s) => Some((s.checkpoint(), s.core_dir())),
            Backend::BookKeeper(_) => None,
        }
    }
}

/// The crc32c of an entry's bytes from `from` to its end, computed (not merely claimed) by
/// the caller: a Kafka batch's CRC field once the batch was validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownCrc {
    pub from: usize,
    pub crc: u32,
}

impl LedgerStore for Backend {
    fn create_ledger(&self, name: &str) -> impl Future<Output = Result<LedgerId, StorageError>> {
        dispatch!(either self, s => s.create_ledger(name))
    }

    fn append(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        dispatch!(either self, s => s.append(ledger, entry))
    }

    fn append_known(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
        known: KnownCrc,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        dispatch!(either self, s => s.append_known(ledger, entry, known))
    }

    fn read(&self, ledger: LedgerId, entry: EntryId) -> impl Future<Output = Result<Bytes, StorageError>> {
        dispatch!(either self, s => s.read(ledger, entry))
    }

    fn close_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>> {
        dispatch!(either self, s => s.close_ledger(ledger))
    }

    fn recover_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<Option<EntryId>, StorageError>> {
        dispatch!(either self, s => s.recover_ledger(ledger))
    }

    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId> {
        dispatch!(self, s => s.last_entry(ledger))
    }

    fn abandon_ledger(&self, ledger: LedgerId) {
        dispatch!(self, s => s.abandon_ledger(ledger))
    }

    fn delete_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>> {
        dispatch!(either self, s => s.delete_ledger(ledger))
    }

    fn failure(&self) -> Option<String> {
        dispatch!(self, s => LedgerStore::failure(&**s))
    }

    fn failures(&self) -> u64 {
        dispatch!(self, s => LedgerStore::failures(&**s))
    }

    fn has_room(&self, bytes: usize) -> bool {
        dispatch!(self, s => LedgerStore::has_room(&**s, bytes))
    }

    fn pending_entries(&self, ledger: LedgerId) -> u64 {
        dispatch!(self, s => LedgerStore::pending_entries(&**s, ledger))
    }
}
