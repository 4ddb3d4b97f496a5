//! The session thread: a current-thread tokio runtime driving one `zookeeper_client::Client`
//! at a time, answering the handles' requests, and opening a new session when one expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use zookeeper_client as zk;

use super::{CreateMode, Op, Request, SessionState, SharedState, Stat, ZkError, ancestors, valid_path};

/// Pause between failed attempts to open a session, so a server that refuses at once is not
/// hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How long a closing thread waits for the server to acknowledge the end of the session (so
/// its ephemeral nodes go at once rather than a session timeout later).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Where to connect: the hosts part of a connect string and its chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub hosts: String,
    pub chroot: Option<String>,
}

impl Target {
    /// "host:port[,host:port...][/chroot]".
    pub fn parse(connect: &str) -> Result<Target, ZkError> {
        let bad = |why: &str| ZkError::Other(format!("connect string `{connect}`: {why}"));
        let (hosts, chroot) = match connect.find('/') {
            Some(i) => (&connect[..i], Some(&connect[i..])),
            None => (connect, None),
        };
        let valid_host = |h: &str| h.rsplit_once(':').is_some_and(|(n, p)| !n.is_empty() && p.parse::<u16>().is_ok());
        if hosts.is_empty() || !hosts.split(',').all(valid_host) {
            return Err(bad("hosts must be HOST:PORT[,HOST:PORT...]"));
        }
        let chroot = match chroot {
            None | Some("/") => None,
            Some(c) if valid_path(c) => Some(c.to_string()),
            Some(_) => return Err(bad("the chroot is not a valid ZooKeeper path")),
        };
        Ok(Target { hosts: hosts.to_string(), chroot })
    }
}

/// Starts the session thread and waits (up to about the session timeout) for its first
/// session.
pub(super) fn start(
    target: Target,
    session_timeout: Duration,
    capacity: usize,
    requests: async_channel::Receiver<Request>,
    shared: Arc<SharedState>,
) -> Result<(), ZkError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| ZkError::Other(format!("cannot build the ZooKeeper runtime: {e}")))?;
    std::thread::Builder::new()
        .name("kopd-zookeeper".into())
        .spawn(move || {
            let session = Session { target, session_timeout, capacity, requests, shared };
            runtime.block_on(session.run(ready_tx));
        })
        .map_err(|e| ZkError::Other(format!("cannot start the ZooKeeper thread: {e}")))?;
    // The thread gives up on its own after one session timeout; the margin covers the chroot
    // creation that follows the session.
    match ready_rx.recv_timeout(session_timeout + Duration::from_secs(5)) {
        Ok(r) => r,
        Err(_) => Err(ZkError::ConnectionLoss),
    }
}

struct Session {
    target: Target,
    session_timeout: Duration,
    capacity: usize,
    requests: async_channel::Receiver<Request>,
    shared: Arc<SharedState>,
}

enum Ended {
    /// The session is gone (expired, closed by the server); open another.
    Lost,
    /// Every handle has been dropped.
    Closed,
}

impl Session {
    async fn run(self, ready: std::sync::mpsc::SyncSender<Result<(), ZkError>>) {
        let mut ready = Some(ready);
        loop {
            let client = match self.open().await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    tracing::warn!(error = %e, hosts = %self.target.hosts, "cannot open a ZooKeeper session; retrying");
                    if !self.refuse_for(RECONNECT_PAUSE).await {
                        return;
                    }
                    continue;
                }
            };
            self.shared.set(SessionState::Connected);
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
            match self.serve(&client).await {
                Ended::Lost => self.shared.set(SessionState::Expired),
                Ended::Closed => {
                    close(client).await;
                    return;
                }
            }
        }
    }

    /// Opens a session (and the chroot node), answering requests that arrive meanwhile with
    /// ConnectionLoss. `Ok(None)`: every handle is gone.
    async fn open(&self) -> Result<Option<zk::Client>, ZkError> {
        let mut connecting = std::pin::pin!(self.connect());
        loop {
            tokio::select! {
                r = &mut connecting => return r.map(Some),
                req = self.requests.recv() => match req {
                    Ok(req) => req.fail(ZkError::ConnectionLoss),
                    Err(_) => return Ok(None),
                },
            }
        }
    }

    async fn connect(&self) -> Result<zk::Client, ZkError> {
        let client = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .connect(&self.target.hosts)
            .await
            .map_err(map_error)?;
        let Some(chroot) = &self.target.chroot else { return Ok(client) };
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        client.mkdir(chroot, &options).await.map_err(map_error)?;
        client.chroot(chroot.as_str()).map_err(|_| ZkError::Other(format!("bad chroot {chroot}")))
    }

    /// Waits `pause`, failing requests meanwhile; false when every handle is gone.
    async fn refuse_for(&self, pause: Duration) -> bool {
        let mut sleep = std::pin::pin!(tokio::time::sleep(pause));
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                req = self.requests.recv() => match req {
                    Ok(req) => req.fail(ZkError::ConnectionLoss),
                    Err(_) => return false,
                },
            }
        }
    }

    /// Answers requests on `client` until its session ends or every handle is dropped.
    async fn serve(&self, client: &zk::Client) -> Ended {
        let mut watcher = client.state_watcher();
        let mut inflight: FuturesUnordered<Pin<Box<dyn Future<Output = ()>>>> = FuturesUnordered::new();
        // Watch loops live as long as the session (or their subscriber); dropped with it.
        let mut watches: FuturesUnordered<Pin<Box<dyn Future<Output = ()>>>> = FuturesUnordered::new();
        let ended = loop {
            tokio::select! {
                biased;
                state = watcher.changed() => match state {
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        self.shared.set(SessionState::Connected)
                    }
                    zk::SessionState::Disconnected => self.shared.set(SessionState::Disconnected),
                    other => {
                        tracing::warn!(state = %other, "ZooKeeper session ended; opening a new one");
                        break Ended::Lost;
                    }
                },
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                Some(()) = watches.next(), if !watches.is_empty() => {}
                req = self.requests.recv(), if inflight.len() < self.capacity => match req {
                    Ok(Request::Watch { path, notify, reply }) => watches.push(watch(client, path, notify, reply)),
                    Ok(req) => inflight.push(run(client, req, self.session_timeout)),
                    Err(_) => break Ended::Closed,
                },
            }
        };
        // Each finishes within its timeout (at once when the session is gone).
        while inflight.next().await.is_some() {}
        ended
    }
}

/// Drops the client and gives the session task a moment to tell the server.
async fn close(client: zk::Client) {
    let mut watcher = client.state_watcher();
    drop(client);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while !matches!(watcher.changed().await, zk::SessionState::Closed | zk::SessionState::Expired) {}
    })
    .await;
}

/// Starts one request. Plain operations are sent to the server here, so requests go out in
/// the order they were received; each reply comes within `timeout` (ConnectionLoss after it).
fn run(client: &zk::Client, req: Request, timeout: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
    match req {
        Request::Get { path, reply } => {
            let f = client.get_data(&path);
            Box::pin(async move {
                let r = match within(timeout, f).await {
                    Ok((data, stat)) => Ok(Some((data, map_stat(&stat)))),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                };
                let _ = reply.try_send(r);
            })
        }
        Request::Children { path, reply } => {
            let f = client.get_children(&path);
            Box::pin(async move {
                let r = match within(timeout, f).await {
                    Ok((children, _)) => Ok(Some(children)),
                    Err(ZkError::NoNode) => Ok(None),
                    Err(e) => Err(e),
                };
                let _ = reply.try_send(r);
            })
        }
        Request::Set { path, data, version, reply } => {
            let f = client.set_data(&path, &data, version);
            Box::pin(async move {
                let _ = reply.try_send(within(timeout, f).await.map(|s| map_stat(&s)));
            })
        }
        Request::Delete { path, version, reply } => {
            let f = client.delete(&path, version);
            Box::pin(async move {
                let _ = reply.try_send(within(timeout, f).await);
            })
        }
        Request::Create { path, data, mode, parents, reply } => {
            let client = client.clone();
            Box::pin(async move {
                let r = match tokio::time::timeout(timeout, create(&client, &path, &data, mode, parents)).await {
                    Ok(r) => r,
                    Err(_) => Err(ZkError::ConnectionLoss),
                };
                let _ = reply.try_send(r);
            })
        }
        Request::Watch { reply, .. } => {
            // Served by `watch` (see `Session::serve`); never reaches here.
            Box::pin(async move {
                let _ = reply.try_send(Err(ZkError::Other("watch request misrouted".into())));
            })
        }
        Request::Multi { ops, reply } => {
            let client = client.clone();
            Box::pin(async move {
                let r = match tokio::time::timeout(timeout, multi(&client, &ops)).await {
                    Ok(r) => r,
                    Err(_) => Err(ZkError::ConnectionLoss),
                };
                let _ = reply.try_send(r);
            })
        }
    }
}

/// Adds a persistent watch and forwards its events until the session ends or the
/// subscriber is gone.
fn watch(
    client: &zk::Client,
    path: String,
    notify: async_channel::Sender<()>,
    reply: super::Reply<()>,
) -> Pin<Box<dyn Future<Output = ()>>> {
    let client = client.clone();
    Box::pin(async move {
        let mut watcher = match client.watch(&path, zk::AddWatchMode::Persistent).await {
            Ok(w) => w,
            Err(e) => {
                let _ = reply.try_send(Err(map_error(e)));
                return;
            }
        };
        let _ = reply.try_send(Ok(()));
        loop {
            let event = watcher.changed().await;
            // The watcher must not be polled after a terminal session event.
            if event.event_type == zk::EventType::Session && event.session_state.is_terminated() {
                return;
            }
            if notify.is_closed() {
                return;
            }
            let _ = notify.try_send(());
        }
    })
}

async fn within<T>(timeout: Duration, f: impl Future<Output = Result<T, zk::Error>>) -> Result<T, ZkError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(map_error),
        Err(_) => Err(ZkError::ConnectionLoss),
    }
}

fn options(mode: CreateMode) -> zk::CreateOptions<'static> {
    let mode = match mode {
        CreateMode::Persistent => zk::CreateMode::Persistent,
        CreateMode::Ephemeral => zk::CreateMode::Ephemeral,
        CreateMode::PersistentSequential => zk::CreateMode::PersistentSequential,
        CreateMode::EphemeralSequential => zk::CreateMode::EphemeralSequential,
    };
    mode.with_acls(zk::Acls::anyone_all())
}

fn is_sequential(mode: CreateMode) -> bool {
    matches!(mode, CreateMode::PersistentSequential | CreateMode::EphemeralSequential)
}

async fn create(
    client: &zk::Client,
    path: &str,
    data: &[u8],
    mode: CreateMode,
    parents: bool,
) -> Result<String, ZkError> {
    let opts = options(mode);
    let first = client.create(path, data, &opts).await;
    let created = match first {
        Err(zk::Error::NoNode) if parents => {
            let dir = options(CreateMode::Persistent);
            for a in ancestors(path) {
                match client.create(a, &[], &dir).await {
                    Ok(_) | Err(zk::Error::NodeExists) => {}
                    Err(e) => return Err(map_error(e)),
                }
            }
            client.create(path, data, &opts).await
        }
        other => other,
    };
    let (_, seq) = created.map_err(map_error)?;
    Ok(if is_sequential(mode) { format!("{path}{seq}") } else { path.to_string() })
}

async fn multi(client: &zk::Client, ops: &[Op]) -> Result<(), ZkError> {
    let mut w = client.new_multi_writer();
    for op in ops {
        let added = match op {
            Op::Create { path, data, mode } => w.add_create(path, data, &options(*mode)),
            Op::SetData { path, data, version } => w.add_set_data(path, data, *version),
            Op::Delete { path, version } => w.add_delete(path, *version),
            Op::Check { path, version } => w.add_check_version(path, *version),
        };
        added.map_err(map_error)?;
    }
    w.commit().await.map(|_| ()).map_err(|e| map_error(e.into()))
}

fn map_stat(s: &zk::Stat) -> Stat {
    Stat { version: s.version, ctime: s.ctime, mtime: s.mtime, ephemeral_owner: s.ephemeral_owner }
}

/// The crate's errors in the handle's terms. Everything that means "the connection or the
/// session broke under the request" is ConnectionLoss or SessionExpired: the caller cannot
/// tell whether a write was applied.
pub(super) fn map_error(e: zk::Error) -> ZkError {
    match e {
        zk::Error::NoNode => ZkError::NoNode,
        zk::Error::NodeExists => ZkError::NodeExists,
        zk::Error::BadVersion => ZkError::BadVersion,
        zk::Error::NotEmpty => ZkError::NotEmpty,
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::Throttled
        | zk::Error::Custom(_) => ZkError::ConnectionLoss,
        zk::Error::SessionExpired | zk::Error::SessionMoved | zk::Error::ClientClosed => ZkError::SessionExpired,
        other => ZkError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_strings_parse() {
        let t = Target::parse("127.0.0.1:2181").unwrap();
        assert_eq!(t, Target { hosts: "127.0.0.1:2181".into(), chroot: None });
        let t = Target::parse("a:1,b:2/kopd/x").unwrap();
        assert_eq!(t, Target { hosts: "a:1,b:2".into(), chroot: Some("/kopd/x".into()) });
        assert_eq!(Target::parse("a:1/").unwrap().chroot, None);
        for bad in ["", "/x", "a", "a:x", "a:1,", "a:1/x/", "a:1//x", "a:99999"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_map_to_the_contract() {
        assert_eq!(map_error(zk::Error::NoNode), ZkError::NoNode);
        assert_eq!(map_error(zk::Error::NotEmpty), ZkError::NotEmpty);
        assert_eq!(map_error(zk::Error::Timeout), ZkError::ConnectionLoss);
        assert_eq!(map_error(zk::Error::ClientClosed), ZkError::SessionExpired);
        assert!(matches!(map_error(zk::Error::NoAuth), ZkError::Other(_)));
    }
}
