//! Metadata stores: a small key-value space with ZooKeeper-like paths, written in atomic
//! batches. The embedded [`LocalMetadataStore`] is the default; [`ZooKeeperMetadataStore`]
//! keeps the same paths in ZooKeeper, where Pulsar's tools read them.
//!
//! Stores do blocking I/O, so at run time a store lives on its own thread
//! ([`MetadataStoreThread`]) and the cores talk to it through a bounded channel.

mod local;
mod pins;
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
    /// Another writer changed what the commit was planned on (nothing was applied; the store
    /// has re-read it). Decide again on what is there now.
    #[error("metadata changed by another writer: {0}")]
    Conflict(String),
}

pub trait MetadataStore: Send + 'static {
    fn get(&self, path: &str) -> Option<&[u8]>;
    /// Every entry whose path starts with `prefix`, in path order.
    fn scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)>;
    /// Applies all `ops` or none, durably, before returning.
    fn commit(&mut self, ops: Vec<StoreOp>) -> Result<(), StoreError>;
    /// Re-reads `path` and everything below it from where other writers may have changed it
    /// (a no-op for a store only this process writes).
    fn refresh(&mut self, _path: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Makes `path` one writer's (a managed ledger taking its partition over): from now on a
    /// put to it applies only over the version it has now in this store's view and then over
    /// the versions this store's own puts give it, never over one a re-read brought in. A
    /// writer whose node another writer changed meanwhile gets [`StoreError::Conflict`] on
    /// every later put. A no-op for a store only this process writes.
    fn pin(&mut self, _path: &str) {}
    /// The writer of a pinned path let go (its partition moved away): later puts conflict
    /// until the path is pinned again.
    fn release_pin(&mut self, _path: &str) {}
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

/// A closure run on the store's thread.
type StoreJob = Box<dyn FnOnce(&mut dyn MetadataStore) + Send>;

/// Work for the store's thread.
enum Request {
    Commit {
        ops: Vec<StoreOp>,
        reply: async_channel::Sender<Result<(), StoreError>>,
    },
    /// Runs a closure against the store (reads, refreshes) on the store's thread.
    Run(StoreJob),
}

/// A store moved onto a thread of its own; cloneable handle for async callers.
#[derive(Clone)]
pub struct MetadataStoreThread {
    requests: async_channel::Sender<Request>,
}

impl MetadataStoreThread {
    pub fn spawn(mut store: Box<dyn MetadataStore>, queue_capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = async_channel::bounded::<Request>(queue_capacity);
        thread::Builder::new().name("kopd-meta-store".into()).spawn(move || {
            while let Ok(req) = rx.recv_blocking() {
                match req {
                    Request::Commit { ops, reply } => {
                        let result = store.commit(ops);
                        match &result {
                            Err(e @ StoreError::Conflict(_)) => tracing::info!(error = %e, "metadata commit refused"),
                            Err(e) => tracing::error!(error = %e, "metadata commit failed"),
                            Ok(()) => {}
                        }
                        // The requester may have given up (shutdown); nothing to do then.
                        let _ = reply.send_blocking(result);
                    }
                    Request::Run(f) => f(store.as_mut()),
                }
            }
        })?;
        Ok(Self { requests: tx })
    }

    pub async fn commit(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.requests.send(Request::Commit { ops, reply }).await.map_err(|_| StoreError::Stopped)?;
        answer.recv().await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `f` on the store's thread, between commits, and returns what it returns.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn MetadataStore) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        let job = Box::new(move |s: &mut dyn MetadataStore| {
            let _ = reply.send_blocking(f(s));
        });
        self.requests.send(Request::Run(job)).await.map_err(|_| StoreError::Stopped)?;
        answer.recv().await.map_err(|_| StoreError::Stopped)
    }
}
