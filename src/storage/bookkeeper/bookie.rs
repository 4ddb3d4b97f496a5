//! One core's connection to one bookie: requests are queued, written in batches (vectored, so
//! entry payloads go to the socket without a copy) and pipelined; responses are matched to
//! requests by (opcode, ledger, entry), since v2 frames carry no transaction id.
//!
//! A connection error fails every request outstanding on it; the next request reconnects
//! (after a short back-off, during which requests fail at once so writers can replace the bookie).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::metadata::BookieId;
use super::protocol::{self, Response};
use crate::runtime;
use crate::storage::SplitBytes;

/// What a request's owner is told once: the response, or why there is none.
pub type Completion = Box<dyn FnOnce(Result<Response, BookieError>)>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookieError {
    #[error("bookie {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("connection to bookie {0} failed: {1}")]
    Connection(String, String),
    #[error("bookie {0} did not answer in time")]
    Timeout(String),
    #[error("too many requests outstanding to bookie {0}")]
    Busy(String),
}

#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub connect_timeout: Duration,
    /// Requests to one bookie outstanding at once (a bound on what a slow bookie makes us hold).
    pub max_pending: usize,
    /// How long requests fail fast after a connection to the bookie failed.
    pub reconnect_backoff: Duration,
}

/// Bytes written per batch (one `sendmsg` when the socket has room).
const BATCH_BYTES: usize = 1 << 20;
const BATCH_FRAMES: usize = 512;
/// Bytes read per read call at most.
const READ_CHUNK: usize = 256 * 1024;
/// How often timed-out requests are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

type Key = (u8, i64, i64);

struct Pending {
    deadline: Instant,
    done: Completion,
}

struct Outgoing {
    head: Bytes,
    payload: SplitBytes,
}

struct Conn {
    bookie: String,
    queue: RefCell<VecDeque<Outgoing>>,
    pending: RefCell<HashMap<Key, VecDeque<Pending>>>,
    pending_count: Cell<usize>,
    writer_waker: RefCell<Option<Waker>>,
    failed: RefCell<Option<BookieError>>,
}

impl Conn {
    fn is_failed(&self) -> bool {
        self.failed.borrow().is_some()
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Fails the connection and everything outstanding on it (idempotent).
    fn fail(&self, err: BookieError) {
        if self.is_failed() {
            return;
        }
        *self.failed.borrow_mut() = Some(err.clone());
        self.queue.borrow_mut().clear();
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        self.pending_count.set(0);
        self.wake_writer();
        for (_, list) in pending {
            for p in list {
                (p.done)(Err(err.clone()));
            }
        }
    }

    fn complete(&self, resp: Response) {
        let key = (resp.op, resp.ledger, resp.entry);
        let found = {
            let mut map = self.pending.borrow_mut();
            let p = map.get_mut(&key).and_then(|l| l.pop_front());
            if map.get(&key).is_some_and(|l| l.is_empty()) {
                map.remove(&key);
            }
            p
        };
        match found {
            Some(p) => {
                self.pending_count.set(self.pending_count.get().saturating_sub(1));
                (p.done)(Ok(resp));
            }
            // A response to a request that already timed out.
            None => {
                debug!(bookie = %self.bookie, op = resp.op, ledger = resp.ledger, entry = resp.entry, "unmatched response")
            }
        }
    }

    fn sweep(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut map = self.pending.borrow_mut();
            map.retain(|_, list| {
                while list.front().is_some_and(|p| p.deadline <= now) {
                    if let Some(p) = list.pop_front() {
                        expired.push(p);
                    }
                }
                !list.is_empty()
            });
        }
        self.pending_count.set(self.pending_count.get().saturating_sub(expired.len()));
        for p in expired {
            (p.done)(Err(BookieError::Timeout(self.bookie.clone())));
        }
    }
}

/// A bookie as one core sees it.
pub struct Bookie {
    pub id: BookieId,
    addr: Option<SocketAddr>,
    config: ConnConfig,
    conn: RefCell<Option<Rc<Conn>>>,
    down_until: Cell<Option<Instant>>,
}

impl Bookie {
    pub fn new(id: BookieId, config: ConnConfig) -> Bookie {
        let addr = id.resolve();
        Bookie { id, addr, config, conn: RefCell::new(None), down_until: Cell::new(None) }
    }

    /// Requests outstanding on the current connection.
    pub fn outstanding(&self) -> usize {
        self.conn.borrow().as_ref().map_or(0, |c| c.pending_count.get())
    }

    /// Whether the last connection attempt failed recently.
    pub fn is_down(&self) -> bool {
        self.down_until.get().is_some_and(|t| Instant::now() < t)
    }

    /// Queues one request: `head` (and `payload`, possibly empty) form the whole frame. `done`
    /// is called exactly once, never from inside this call.
    pub fn send(
        self: &Rc<Self>,
        key: (u8, i64, i64),
        head: Bytes,
        payload: SplitBytes,
        timeout: Duration,
        done: Completion,
    ) {
        let refuse = |err: BookieError, done: Completion| runtime::spawn(async move { done(Err(err)) });
        let Some(addr) = self.addr else {
            return refuse(BookieError::Unreachable(self.id.0.clone(), "not a resolvable address".into()), done);
        };
        if self.is_down() {
            return refuse(BookieError::Unreachable(self.id.0.clone(), "recent connection failure".into()), done);
        }
        let conn = self.connection(addr);
        if conn.pending_count.get() >= self.config.max_pending {
            return refuse(BookieError::Busy(self.id.0.clone()), done);
        }
        conn.pending
            .borrow_mut()
            .entry(key)
            .or_default()
            .push_back(Pending { deadline: Instant::now() + timeout, done });
        conn.pending_count.set(conn.pending_count.get() + 1);
        conn.queue.borrow_mut().push_back(Outgoing { head, payload });
        conn.wake_writer();
    }

    fn connection(self: &Rc<Self>, addr: SocketAddr) -> Rc<Conn> {
        if let Some(c) = self.conn.borrow().as_ref().filter(|c| !c.is_failed()) {
            return c.clone();
        }
        let conn = Rc::new(Conn {
            bookie: self.id.0.clone(),
            queue: RefCell::new(VecDeque::new()),
            pending: RefCell::new(HashMap::new()),
            pending_count: Cell::new(0),
            writer_waker: RefCell::new(None),
            failed: RefCell::new(None),
        });
        *self.conn.borrow_mut() = Some(conn.clone());
        let me = Rc::downgrade(self);
        let c = conn.clone();
        let connect_timeout = self.config.connect_timeout;
        runtime::spawn(async move {
            let err = run(&c, addr, connect_timeout).await;
            if let Some(b) = me.upgrade()
                && matches!(err, BookieError::Unreachable(..))
            {
                b.down_until.set(Some(Instant::now() + b.config.reconnect_backoff));
            }
            warn!(bookie = %c.bookie, error = %err, "bookie connection closed");
            c.fail(err);
        });
        conn
    }
}

/// Connects, then writes queued requests until the connection fails; returns why it ended.
async fn run(conn: &Rc<Conn>, addr: SocketAddr, connect_timeout: Duration) -> BookieError {
    let name = conn.bookie.clone();
    let (mut reader, mut writer) = match runtime::tcp::connect(addr, connect_timeout).await {
        Ok(halves) => halves,
        Err(e) => return BookieError::Unreachable(name, e.to_string()),
    };
    debug!(bookie = %name, "connected to bookie");
    let rc = conn.clone();
    runtime::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let err = loop {
            match reader.read_buf(&mut buf, READ_CHUNK).await {
                Ok(0) => break "closed by the bookie".to_string(),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
            let mut failed = None;
            loop {
                match protocol::decode_response(&mut buf) {
                    Ok(Some(resp)) => rc.complete(resp),
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                break e;
            }
            if rc.is_failed() {
                break "connection failed".to_string();
            }
        };
        reader.shutdown();
        rc.fail(BookieError::Connection(rc.bookie.clone(), err));
    });
    // Timeouts are swept apart from the writer, which may be blocked on a full socket.
    let sc = conn.clone();
    runtime::spawn(async move {
        while !sc.is_failed() {
            runtime::sleep(SWEEP_EVERY).await;
            sc.sweep(Instant::now());
        }
    });
    loop {
        // Wait for requests (or failure).
        let c = conn.clone();
        futures_lite::future::poll_fn(move |cx| {
            if !c.queue.borrow().is_empty() || c.is_failed() {
                Poll::Ready(())
            } else {
                *c.writer_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if let Some(e) = conn.failed.borrow().clone() {
            writer.shutdown();
            return e;
        }
        let batch: Vec<Outgoing> = {
            let mut q = conn.queue.borrow_mut();
            let mut bytes = 0;
            let mut n = 0;
            while n < q.len() && n < BATCH_FRAMES && (n == 0 || bytes < BATCH_BYTES) {
                bytes += q[n].head.len() + q[n].payload.len();
                n += 1;
            }
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            continue;
        }
        let slices: Vec<&[u8]> =
            batch.iter().flat_map(|o| std::iter::once(&o.head[..]).chain(o.payload.pieces().map(|p| &p[..]))).collect();
        if let Err(e) = writer.write_all_vectored(&slices).await {
            writer.shutdown();
            return BookieError::Connection(name, e.to_string());
        }
    }
}
