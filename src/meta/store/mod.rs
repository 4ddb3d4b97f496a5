//! Metadata stores: a small key-value space with ZooKeeper-like paths, written in atomic
//! batches. The embedded [`LocalMetadataStore`] is the default; [`ZooKeeperMetadataStore`]
//! keeps the same paths in ZooKeeper, where Pulsar's tools read them.
//!
//! Stores do blocking I/O, so at run time a store lives on its own thread
//! ([`MetadataStoreThread`]) and the cores talk to it through a bounded channel.

mod local;
mod zookeeper;

use std::collections::BTreeMap;
use std::thread;

use thiserror::Error;

pub use local::LocalMetadataStore;
pub use zookeeper::ZooKeeperMetadataStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    Put { path: String, value: Vec<u8> },
    Delete { path: String },
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("metadata store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata store thread has stopped")]
    Stopped,
    /// The store cannot be reached now (no ZooKeeper session); retrying later may succeed.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store can never apply this commit (a path it does not keep, a value too large).
    #[error("metadata store refused the write: {0}")]
    Rejected(String),
}

pub trait MetadataStore: Send + 'static {
    fn get(&self, path: &str) -> Option<&[u8]>;
    /// Every entry whose path starts with `prefix`, in path order.
    fn scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)>;
    /// Applies all `ops` or none, durably, before returning.
    fn commit(&mut self, ops: Vec<StoreOp>) -> Result<(), StoreError>;
}

/// Applies ops to an in-memory map (shared by store implementations and tests).
pub(crate) fn apply(map: &mut BTreeMap<String, Vec<u8>>, ops: &[StoreOp]) {
    for op in ops {
        match op {
            StoreOp::Put { path, value } => {
                map.insert(path.clone(), value.clone());
            }
            StoreOp::Delete { path } => {
                map.remove(path);
            }
        }
    }
}

struct CommitRequest {
    ops: Vec<StoreOp>,
    reply: async_channel::Sender<Result<(), StoreError>>,
}

/// A store moved onto a thread of its own; cloneable handle for async callers.
#[derive(Clone)]
pub struct MetadataStoreThread {
    requests: async_channel::Sender<CommitRequest>,
}

impl MetadataStoreThread {
    pub fn spawn(mut store: Box<dyn MetadataStore>, queue_capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = async_channel::bounded::<CommitRequest>(queue_capacity);
        thread::Builder::new().name("kopd-meta-store".into()).spawn(move || {
            while let Ok(req) = rx.recv_blocking() {
                let result = store.commit(req.ops);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "metadata commit failed");
                }
                // The requester may have given up (shutdown); nothing to do then.
                let _ = req.reply.send_blocking(result);
            }
        })?;
        Ok(Self { requests: tx })
    }

    pub async fn commit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.requests.send(CommitRequest { ops, reply }).await.map_err(|_| StoreError::Stopped)?;
        answer.recv().await.map_err(|_| StoreError::Stopped)?
    }
}
