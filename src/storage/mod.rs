//! Storage: the entry codec shared by every backend, and the ledger stores.
//!
//! A ledger is an append-only sequence of entries with contiguous ids from 0; a store keeps
//! many ledgers. The managed ledger (src/log) strings ledgers together into a partition's log.

pub mod codec;
pub mod entry;
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
