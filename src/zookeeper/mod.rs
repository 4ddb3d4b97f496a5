//! STAND-IN for the "zookeeper" engineer's module (same public signatures), so the BookKeeper
//! client can be built and tested before that branch lands. Deleted at the merge.
//!
//! One OS thread runs a tokio current-thread runtime with the `zookeeper-client` session;
//! callers send requests over a bounded channel and await the reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use zookeeper_client as zk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ZkError {
    #[error("no node")]
    NoNode,
    #[error("node exists")]
    NodeExists,
    #[error("bad version")]
    BadVersion,
    #[error("not empty")]
    NotEmpty,
    #[error("connection loss")]
    ConnectionLoss,
    #[error("session expired")]
    SessionExpired,
    #[error("zookeeper client stopped")]
    Stopped,
    #[error("zookeeper: {0}")]
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub version: i32,
    pub ctime: i64,
    pub mtime: i64,
    pub ephemeral_owner: i64,
}

#[derive(Debug, Clone)]
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

type Reply<T> = async_channel::Sender<Result<T, ZkError>>;

enum Request {
    Get(String, Reply<Option<(Vec<u8>, Stat)>>),
    Children(String, Reply<Option<Vec<String>>>),
    Create(String, Vec<u8>, CreateMode, bool, Reply<String>),
    Set(String, Vec<u8>, Option<i32>, Reply<Stat>),
    Delete(String, Option<i32>, Reply<()>),
}

#[derive(Clone)]
pub struct ZooKeeper {
    tx: async_channel::Sender<Request>,
    state: Arc<AtomicU8>,
    changes: async_channel::Receiver<SessionState>,
}

fn map_err(e: zk::Error) -> ZkError {
    match e {
        zk::Error::NoNode => ZkError::NoNode,
        zk::Error::NodeExists => ZkError::NodeExists,
        zk::Error::BadVersion => ZkError::BadVersion,
        zk::Error::NotEmpty => ZkError::NotEmpty,
        zk::Error::SessionExpired => ZkError::SessionExpired,
        zk::Error::ConnectionLoss => ZkError::ConnectionLoss,
        e => ZkError::Other(e.to_string()),
    }
}

fn stat(s: &zk::Stat) -> Stat {
    Stat { version: s.version, ctime: s.ctime, mtime: s.mtime, ephemeral_owner: s.ephemeral_owner }
}

impl ZooKeeper {
    pub fn connect(connect: &str, session_timeout: Duration, queue_capacity: usize) -> Result<ZooKeeper, ZkError> {
        let (tx, rx) = async_channel::bounded::<Request>(queue_capacity.max(1));
        let state = Arc::new(AtomicU8::new(1));
        let (ctx, crx) = async_channel::bounded(16);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cluster = connect.to_string();
        let st = state.clone();
        std::thread::Builder::new()
            .name("kopd-zookeeper".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ZkError::Other(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client =
                        match zk::Client::connector().with_session_timeout(session_timeout).connect(&cluster).await {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = ready_tx.send(Err(map_err(e)));
                                return;
                            }
                        };
                    st.store(0, Ordering::Release);
                    let _ = ready_tx.send(Ok(()));
                    let mut watcher = client.state_watcher();
                    let st2 = st.clone();
                    tokio::spawn(async move {
                        loop {
                            let s = watcher.changed().await;
                            let mine = match s {
                                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                                    SessionState::Connected
                                }
                                zk::SessionState::Disconnected => SessionState::Disconnected,
                                _ => SessionState::Expired,
                            };
                            st2.store(mine as u8, Ordering::Release);
                            let _ = ctx.try_send(mine);
                            if s.is_terminated() {
                                break;
                            }
                        }
                    });
                    while let Ok(req) = rx.recv().await {
                        let c = client.clone();
                        tokio::spawn(serve(c, req));
                    }
                });
            })
            .map_err(|e| ZkError::Other(e.to_string()))?;
        match ready_rx.recv_timeout(session_timeout + Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(ZooKeeper { tx, state, changes: crx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ZkError::ConnectionLoss),
        }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ZkError> {
        let (tx, rx) = async_channel::bounded(1);
        self.tx.send(make(tx)).await.map_err(|_| ZkError::Stopped)?;
        rx.recv().await.map_err(|_| ZkError::Stopped)?
    }

    pub async fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, ZkError> {
        self.call(|r| Request::Get(path.to_string(), r)).await
    }

    pub async fn children(&self, path: &str) -> Result<Option<Vec<String>>, ZkError> {
        self.call(|r| Request::Children(path.to_string(), r)).await
    }

    pub async fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode, parents: bool) -> Result<String, ZkError> {
        self.call(|r| Request::Create(path.to_string(), data, mode, parents, r)).await
    }

    pub async fn set(&self, path: &str, data: Vec<u8>, version: Option<i32>) -> Result<Stat, ZkError> {
        self.call(|r| Request::Set(path.to_string(), data, version, r)).await
    }

    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), ZkError> {
        self.call(|r| Request::Delete(path.to_string(), version, r)).await
    }

    pub async fn multi(&self, _ops: Vec<Op>) -> Result<(), ZkError> {
        Err(ZkError::Other("multi is not in the stand-in".into()))
    }

    pub fn session_state(&self) -> SessionState {
        match self.state.load(Ordering::Acquire) {
            0 => SessionState::Connected,
            1 => SessionState::Disconnected,
            _ => SessionState::Expired,
        }
    }

    pub fn session_changes(&self) -> async_channel::Receiver<SessionState> {
        self.changes.clone()
    }
}

async fn serve(c: zk::Client, req: Request) {
    match req {
        Request::Get(p, r) => {
            let res = match c.get_data(&p).await {
                Ok((d, s)) => Ok(Some((d, stat(&s)))),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(map_err(e)),
            };
            let _ = r.send(res).await;
        }
        Request::Children(p, r) => {
            let res = match c.list_children(&p).await {
                Ok(v) => Ok(Some(v)),
                Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(map_err(e)),
            };
            let _ = r.send(res).await;
        }
        Request::Create(p, d, mode, parents, r) => {
            let zmode = match mode {
                CreateMode::Persistent => zk::CreateMode::Persistent,
                CreateMode::Ephemeral => zk::CreateMode::Ephemeral,
                CreateMode::PersistentSequential => zk::CreateMode::PersistentSequential,
                CreateMode::EphemeralSequential => zk::CreateMode::EphemeralSequential,
            };
            let opts = zmode.with_acls(zk::Acls::anyone_all());
            let mut res = c.create(&p, &d, &opts).await;
            if parents && matches!(res, Err(zk::Error::NoNode)) {
                let mut at = 0;
                while let Some(i) = p[at + 1..].find('/') {
                    let parent = &p[..at + 1 + i];
                    at += 1 + i;
                    let popts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    match c.create(parent, &[], &popts).await {
                        Ok(_) | Err(zk::Error::NodeExists) => {}
                        Err(e) => {
                            let _ = r.send(Err(map_err(e))).await;
                            return;
                        }
                    }
                }
                res = c.create(&p, &d, &opts).await;
            }
            let res =
                res.map_err(map_err).map(|(_, seq)| if seq.into_i64() >= 0 { format!("{p}{seq}") } else { p.clone() });
            let _ = r.send(res).await;
        }
        Request::Set(p, d, v, r) => {
            let _ = r.send(c.set_data(&p, &d, v).await.map(|s| stat(&s)).map_err(map_err)).await;
        }
        Request::Delete(p, v, r) => {
            let _ = r.send(c.delete(&p, v).await.map_err(map_err)).await;
        }
    }
}
