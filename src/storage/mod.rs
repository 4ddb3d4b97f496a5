//! Storage: the entry codec shared by every backend, and the ledger stores.
//!
//! A ledger is an append-only sequence of entries with contiguous ids from 0; a store keeps
//! many ledgers. The managed ledger (src/log) strings ledgers together into a partition's log.

pub mod codec;
pub mod entry;
pub mod bookkeeper;
pub mod local;

use std::future::Future;

use bytes::Bytes;
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
pub trait LedgerStore {
    /// A new, empty ledger; ids are unique across cores and restarts.
    fn create_ledger(&self) -> LedgerId;
    /// Appends one entry; resolves with its id once durable under the flush policy.
    fn append(&self, ledger: LedgerId, entry: Bytes) -> impl Future<Output = Result<EntryId, StorageError>>;
    /// Reads one durable entry.
    fn read(&self, ledger: LedgerId, entry: EntryId) -> impl Future<Output = Result<Bytes, StorageError>>;
    /// The last durable entry of a ledger, `None` if it is empty or unknown.
    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId>;
    /// Deletes a whole ledger (retention).
    fn delete_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>>;
}

/// The lead's new `LedgerStore` (issue 10), verbatim; named apart until the merge moves the
/// local store over to it.
pub trait LedgerStoreNext {
    /// A new ledger for managed ledger `name` (on BookKeeper: id from ZooKeeper's id generator, metadata with
    /// Pulsar's custom metadata application=pulsar, component=managed-ledger, pulsar/managed-ledger=<name>).
    fn create_ledger(&self, name: &str) -> impl Future<Output = Result<LedgerId, StorageError>>;
    /// Appends one entry to a ledger this core created. Takes the entry in call order (before the
    /// returned future is first polled); resolves with the entry id once durable (ack quorum, LAC contiguous).
    fn append(&self, ledger: LedgerId, entry: Bytes) -> impl Future<Output = Result<EntryId, StorageError>>;
    /// Reads one entry (of a ledger this core wrote, recovered, or any closed ledger).
    fn read(&self, ledger: LedgerId, entry: EntryId) -> impl Future<Output = Result<Bytes, StorageError>>;
    /// Seals a ledger this core wrote (rollover): close in metadata by CAS (CLOSED, lastEntryId = LAC, length).
    fn close_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>>;
    /// Opens a ledger written by an earlier run or another writer: if not closed, fence and recover it
    /// (IN_RECOVERY, read-LAC with fencing on the ensemble, recovery-add forward, close). Returns its last entry id.
    fn recover_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<Option<EntryId>, StorageError>>;
    /// Deletes a ledger (metadata removed; bookies garbage-collect).
    fn delete_ledger(&self, ledger: LedgerId) -> impl Future<Output = Result<(), StorageError>>;
    /// Some(reason) while appends cannot succeed (no ZooKeeper session, fewer writable bookies than the ensemble).
    fn failure(&self) -> Option<String>;
    /// How many failure episodes have begun so far (the managed ledger compares it to notice one).
    fn failures(&self) -> u64;
    /// Backpressure: false when `bytes` more would exceed the per-core in-flight add bound.
    fn has_room(&self, bytes: usize) -> bool;
    /// Appends handed to the store and not yet settled (acked or failed) for a ledger.
    fn pending_entries(&self, ledger: LedgerId) -> u64;
    /// The last durable entry (LAC for a ledger this core writes; last entry of a recovered/closed one).
    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId>;
}
