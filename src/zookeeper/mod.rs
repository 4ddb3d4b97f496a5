//! A ZooKeeper session for the parts of kopd that keep metadata in ZooKeeper (the ZooKeeper
//! metadata store, the BookKeeper client's ledger metadata).
//!
//! The `zookeeper-client` crate needs an async runtime of its own (tokio here), and kopd's
//! cores run glommio, so the session lives on a dedicated OS thread with a current-thread
//! tokio runtime ([`session`]). [`ZooKeeper`] is a cheap, cloneable handle: a bounded channel
//! into that thread plus a one-shot reply channel per request, so it can be awaited from a
//! glommio core or driven with `futures_lite::future::block_on` from a plain thread, and the
//! session thread never blocks a core.
//!
//! After the session expires the thread opens a new one (ephemeral nodes of the old session
//! are gone) and reports `Expired`, then `Connected`. While there is no session, requests fail
//! at once with [`ZkError::ConnectionLoss`]; while the session is alive but disconnected,
//! they wait for the reconnection, at most a session timeout.

mod session;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZkError {
    #[error("ZooKeeper: no node")]
    NoNode,
    #[error("ZooKeeper: node exists")]
    NodeExists,
    #[error("ZooKeeper: version mismatch")]
    BadVersion,
    #[error("ZooKeeper: node has children")]
    NotEmpty,
    /// No session right now, or the connection broke with the request in flight (its outcome
    /// is then unknown). May be retried.
    #[error("ZooKeeper: connection loss")]
    ConnectionLoss,
    /// The session the request ran on expired; a new one is being established.
    #[error("ZooKeeper: session expired")]
    SessionExpired,
    /// The session thread has ended (every handle dropped, or it could not start).
    #[error("ZooKeeper: session thread stopped")]
    Stopped,
    #[error("ZooKeeper: {0}")]
    Other(String),
}

impl ZkError {
    /// Whether a write that failed with this error may nevertheless have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ZkError::ConnectionLoss | ZkError::SessionExpired | ZkError::Other(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub version: i32,
    pub ctime: i64,
    pub mtime: i64,
    pub ephemeral_owner: i64,
}

/// One operation of a [`ZooKeeper::multi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create { path: String, data: Vec<u8>, mode: CreateMode },
    SetData { path: String, data: Vec<u8>, version: Option<i32> },
    Delete { path: String, version: Option<i32> },
    Check { path: String, version: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Connected,
    Disconnected,
    Expired,
}

impl SessionState {
    fn to_u8(self) -> u8 {
        match self {
            SessionState::Connected => 0,
            SessionState::Disconnected => 1,
            SessionState::Expired => 2,
        }
    }

    fn from_u8(v: u8) -> SessionState {
        match v {
            0 => SessionState::Connected,
            1 => SessionState::Disconnected,
            _ => SessionState::Expired,
        }
    }
}

/// Session-state changes a subscriber has not read yet; past this a slow subscriber misses
/// changes (it can always read the current state with [`ZooKeeper::session_state`]).
const STATE_SUBSCRIBER_CAPACITY: usize = 16;

/// The session state shared by the session thread and every handle.
struct SharedState {
    state: AtomicU8,
    subscribers: Mutex<Vec<async_channel::Sender<SessionState>>>,
}

impl SharedState {
    fn new() -> Self {
        Self { state: AtomicU8::new(SessionState::Disconnected.to_u8()), subscribers: Mutex::new(Vec::new()) }
    }

    fn get(&self) -> SessionState {
        SessionState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Records a new state and tells every live subscriber (without ever blocking).
    fn set(&self, s: SessionState) {
        if self.state.swap(s.to_u8(), Ordering::AcqRel) == s.to_u8() {
            return;
        }
        tracing::info!(state = ?s, "ZooKeeper session state");
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.retain(|tx| !tx.is_closed());
            for tx in subs.iter() {
                let _ = tx.try_send(s);
            }
        }
    }

    fn subscribe(&self) -> async_channel::Receiver<SessionState> {
        let (tx, rx) = async_channel::bounded(STATE_SUBSCRIBER_CAPACITY);
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }
}

type Reply<T> = async_channel::Sender<Result<T, ZkError>>;

/// What a handle asks of the session thread.
enum Request {
    Get { path: String, reply: Reply<Option<(Vec<u8>, Stat)>> },
    Children { path: String, reply: Reply<Option<Vec<String>>> },
    Create { path: String, data: Vec<u8>, mode: CreateMode, parents: bool, reply: Reply<String> },
    Set { path: String, data: Vec<u8>, version: Option<i32>, reply: Reply<Stat> },
    Delete { path: String, version: Option<i32>, reply: Reply<()> },
    Multi { ops: Vec<Op>, reply: Reply<()> },
    Watch { path: String, notify: async_channel::Sender<()>, reply: Reply<()> },
}

impl Request {
    /// Answers the request without running it (no session).
    fn fail(self, e: ZkError) {
        match self {
            Request::Get { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Children { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Create { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Set { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Delete { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Multi { reply, .. } => drop(reply.try_send(Err(e))),
            Request::Watch { reply, .. } => drop(reply.try_send(Err(e))),
        }
    }
}

/// A handle on the ZooKeeper session thread. Cloning is cheap; the thread ends (closing the
/// session) when the last handle is dropped.
#[derive(Clone)]
pub struct ZooKeeper {
    requests: async_channel::Sender<Request>,
    shared: Arc<SharedState>,
    session_timeout: Duration,
}

impl ZooKeeper {
    /// `connect` is "host:port[,host:port...][/chroot]" (a missing chroot node is created);
    /// waits up to the session timeout for a session. `queue_capacity` bounds the requests
    /// waiting for the session thread and those it has in flight.
    pub fn connect(connect: &str, session_timeout: Duration, queue_capacity: usize) -> Result<ZooKeeper, ZkError> {
        let target = session::Target::parse(connect)?;
        let (tx, rx) = async_channel::bounded(queue_capacity.max(1));
        let shared = Arc::new(SharedState::new());
        session::start(target, session_timeout, queue_capacity.max(1), rx, shared.clone())?;
        Ok(ZooKeeper { requests: tx, shared, session_timeout })
    }

    /// The session timeout asked of the server.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ZkError> {
        let (tx, rx) = async_channel::bounded(1);
        self.requests.send(make(tx)).await.map_err(|_| ZkError::Stopped)?;
        rx.recv().await.map_err(|_| ZkError::Stopped)?
    }

    /// The node's data and stat; `None` when there is no such node.
    pub async fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, ZkError> {
        self.call(|reply| Request::Get { path: path.to_string(), reply }).await
    }

    /// The node's children (names, not paths); `None` when there is no such node.
    pub async fn children(&self, path: &str) -> Result<Option<Vec<String>>, ZkError> {
        self.call(|reply| Request::Children { path: path.to_string(), reply }).await
    }

    /// Creates `path`; with `parents`, missing ancestors are created first (Persistent, empty
    /// data; an ancestor that exists already is fine). Returns the created path (with its
    /// sequence suffix if sequential).
    pub async fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode, parents: bool) -> Result<String, ZkError> {
        self.call(|reply| Request::Create { path: path.to_string(), data, mode, parents, reply }).await
    }

    /// Replaces the node's data if its version is `version` (`None`: any); returns the new stat.
    pub async fn set(&self, path: &str, data: Vec<u8>, version: Option<i32>) -> Result<Stat, ZkError> {
        self.call(|reply| Request::Set { path: path.to_string(), data, version, reply }).await
    }

    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), ZkError> {
        self.call(|reply| Request::Delete { path: path.to_string(), version, reply }).await
    }

    /// All or nothing (ZooKeeper's multi). Fails with the error of the first failing op.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<(), ZkError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.call(|reply| Request::Multi { ops, reply }).await
    }

    /// A persistent watch on `path` for the rest of this session: any change of the node (its
    /// data, its children, its creation or deletion) sends `()` on `notify` if it has room
    /// (a bounded(1) channel coalesces bursts). Events are hints to re-read, nothing more: a
    /// new session has no watches, and ZooKeeper may drop events while disconnected.
    pub async fn watch(&self, path: &str, notify: async_channel::Sender<()>) -> Result<(), ZkError> {
        self.call(|reply| Request::Watch { path: path.to_string(), notify, reply }).await
    }

    pub fn session_state(&self) -> SessionState {
        self.shared.get()
    }

    /// Every later session-state change (at most 16 unread; see [`Self::session_state`]).
    pub fn session_changes(&self) -> async_channel::Receiver<SessionState> {
        self.shared.subscribe()
    }
}

/// The ancestors of an absolute path, outermost first ("/a/b/c" -> "/a", "/a/b").
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').filter(|(i, _)| *i > 0).map(move |(i, _)| &path[..i])
}

/// Whether `path` is an absolute ZooKeeper path kopd may use: "/" alone, or "/"-separated
/// non-empty components other than "." and "..", no trailing "/", no NUL.
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    match path.strip_prefix('/') {
        Some(rest) => rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0')),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_outermost_first() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/a", "/a/b"]);
        assert_eq!(ancestors("/a").count(), 0);
    }

    #[test]
    fn paths_are_validated() {
        for ok in ["/", "/a", "/a/b-c/d.e", "/managed-ledgers/public/default/persistent/t%2Fx"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\0"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn state_subscribers_see_changes_and_never_block() {
        let s = SharedState::new();
        let rx = s.subscribe();
        s.set(SessionState::Connected);
        s.set(SessionState::Connected); // not a change
        s.set(SessionState::Expired);
        assert_eq!(rx.try_recv(), Ok(SessionState::Connected));
        assert_eq!(rx.try_recv(), Ok(SessionState::Expired));
        assert!(rx.try_recv().is_err());
        // A subscriber that never reads does not stall the setter.
        for i in 0..100 {
            s.set(if i % 2 == 0 { SessionState::Disconnected } else { SessionState::Connected });
        }
        assert_eq!(rx.len(), STATE_SUBSCRIBER_CAPACITY);
        assert_eq!(s.get(), SessionState::Connected);
        drop(rx);
        s.set(SessionState::Expired);
        assert!(s.subscribers.lock().map(|v| v.is_empty()).unwrap_or(false));
    }

    #[test]
    fn only_unclear_failures_are_outcome_unknown() {
        assert!(ZkError::ConnectionLoss.outcome_unknown());
        assert!(ZkError::SessionExpired.outcome_unknown());
        assert!(!ZkError::NodeExists.outcome_unknown());
        assert!(!ZkError::BadVersion.outcome_unknown());
    }
}
