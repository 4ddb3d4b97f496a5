//! One Kafka connection: read requests, handle them in order, write responses in order, within
//! the connection's bounds.
//!
//! What a client can hold on a core is bounded: unsent responses (`connection.max.unwritten.bytes`
//! per connection; past it, or past the core's `queued.max.response.bytes`, no further request
//! is handled and so nothing more is read until the client reads — Kafka mutes a channel until
//! its response is sent), time (`connections.max.idle.ms` without a byte read or written;
//! `connections.request.read.timeout.ms` for a request to arrive whole once begun, and for the
//! first request after connecting) and read buffers (a connection idle for a moment gives its
//! read buffer back and waits with a small one).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;

use super::frame::FrameDecoder;
use super::read_buffer::ReadBuffer;
use crate::broker::{Broker, ResponseShare};
use crate::kafka::{self, ProduceInFlight, ResponseBuf};
use crate::runtime::{self, TcpStream};

/// Smallest read buffer of an active connection; reads grow up to MAX_READ while a large frame arrives.
const READ_CHUNK: usize = 64 << 10;
/// Most bytes one read asks for.
const MAX_READ: usize = 1 << 20;
/// Bytes an idle connection reads into before it has a read buffer again.
const IDLE_READ: usize = 512;
/// How long a connection keeps its read buffer while no bytes arrive.
const KEEP_READ_BUFFER: Duration = Duration::from_millis(500);

/// Why reading stopped without bytes.
enum ReadOutcome {
    /// Bytes were appended to the read buffer.
    Data,
    /// The peer closed its side cleanly between requests.
    Closed,
    /// Shutdown began.
    Shutdown,
}

pub(super) struct Connection<'a> {
    broker: &'a Broker,
    stream: TcpStream,
    client_host: &'a str,
    decoder: FrameDecoder,
    inbuf: ReadBuffer,
    /// Unsent responses (fetched batches referenced, not copied).
    outbuf: ResponseBuf,
    /// `outbuf`'s bytes, counted against the core's bound.
    share: ResponseShare,
    /// Last time a byte was read or a response written.
    last_activity: Instant,
    /// When the request now arriving began; at first, when the connection opened.
    request_began: Option<Instant>,
}

impl<'a> Connection<'a> {
    pub(super) fn new(broker: &'a Broker, stream: TcpStream, client_host: &'a str) -> Self {
        let now = Instant::now();
        Self {
            broker,
            stream,
            client_host,
            decoder: FrameDecoder::new(broker.config.socket_request_max_bytes),
            inbuf: ReadBuffer::new(),
            outbuf: ResponseBuf::default(),
            share: ResponseShare::new(broker.responses.clone()),
            last_activity: now,
            request_began: Some(now),
        }
    }

    /// Serves the connection until the peer closes it, it misbehaves or overstays a bound, or
    /// shutdown. An `Err` carries the reason to log.
    pub(super) async fn serve(mut self) -> Result<(), String> {
        let mut in_flight = VecDeque::new();
        let served = self.serve_requests(&mut in_flight).await;
        // Produces taken are seen through whatever ends the connection: their entries are
        // queued, and their logs book durability when the answers resolve.
        for produce in in_flight {
            let _ = produce.await;
        }
        served
    }

    async fn serve_requests(&mut self, in_flight: &mut VecDeque<ProduceInFlight<'a>>) -> Result<(), String> {
        let limits = &self.broker.config.connections;
        let depth = limits.max_pipelined_produce.max(1);
        loop {
            // Handle the requests already here while this connection's unsent bytes are under
            // its bound; past the core's bound, only while it has nothing unsent (so every
            // connection still makes progress).
            while self.outbuf.len() < limits.max_unwritten_bytes
                && (self.outbuf.is_empty() || self.broker.responses.available() > 0)
                && in_flight.len() < depth
            {
                let Some(frame) = self.inbuf.next_frame(&self.decoder).map_err(|e| e.to_string())? else {
                    break;
                };
                self.request_began = None;
                if kafka::is_produce(&frame) {
                    // Offsets are assigned now, in request order; the answer comes when durable.
                    let allocation = self.inbuf.allocation();
                    let begun = kafka::begin_produce(self.broker, frame, allocation).await;
                    in_flight.push_back(begun.map_err(|e| e.to_string())?);
                    continue;
                }
                // Answers go out in request order: earlier produces are answered first.
                while let Some(produce) = in_flight.pop_front() {
                    self.answer(produce.await)?;
                }
                kafka::handle_request(self.broker, frame, &mut self.outbuf, self.client_host)
                    .await
                    .map_err(|e| e.to_string())?;
                self.share.set(self.outbuf.len());
            }
            // Produces already durable join this write.
            while let Some(head) = in_flight.front_mut() {
                let Some(answer) = futures_lite::future::poll_once(head).await else { break };
                in_flight.pop_front();
                self.answer(answer)?;
            }
            if !self.inbuf.is_empty() && self.request_began.is_none() {
                // The rest of a request that came with the last read.
                self.request_began = Some(Instant::now());
            }
            if !self.write_responses().await? || self.broker.shutdown.is_triggered() {
                return Ok(());
            }
            let has_frame = self.decoder.has_frame(self.inbuf.bytes()).map_err(|e| e.to_string())?;
            if has_frame && in_flight.len() < depth {
                continue;
            }
            let full = has_frame || in_flight.len() >= depth;
            let outcome = match in_flight.front_mut() {
                None => self.read().await?,
                // No room for another request, or it is here already: the oldest answer first.
                Some(head) if full => {
                    let answer = head.await;
                    in_flight.pop_front();
                    self.answer(answer)?;
                    continue;
                }
                // Whichever comes first: the oldest answer, or the next request's bytes (a read
                // given up loses nothing: it copies bytes only once they are there).
                Some(head) => {
                    let answered = futures_lite::future::or(async { Err(head.await) }, async { Ok(self.read().await) });
                    match answered.await {
                        Err(answer) => {
                            in_flight.pop_front();
                            self.answer(answer)?;
                            continue;
                        }
                        Ok(outcome) => outcome?,
                    }
                }
            };
            match outcome {
                ReadOutcome::Data => {}
                ReadOutcome::Closed | ReadOutcome::Shutdown => {
                    // A client that closed only its sending side still gets its answers.
                    while let Some(produce) = in_flight.pop_front() {
                        self.answer(produce.await)?;
                    }
                    self.write_responses().await?;
                    return Ok(());
                }
            }
        }
    }

    /// Queues a produce's answer (none for acks=0) behind the responses before it.
    fn answer(&mut self, answer: Result<Option<bytes::BytesMut>, kafka::ProtocolError>) -> Result<(), String> {
        if let Some(frame) = answer.map_err(|e| e.to_string())? {
            self.outbuf.bytes.extend_from_slice(&frame);
            self.share.set(self.outbuf.len());
        }
        Ok(())
    }

    /// Writes every unsent response. `Ok(false)`: shutdown began while the client was not reading.
    async fn write_responses(&mut self) -> Result<bool, String> {
        if self.outbuf.is_empty() {
            return Ok(true);
        }
        let idle = self.broker.config.connections.max_idle;
        let written = futures_lite::future::or(
            async {
                let slices = self.outbuf.slices();
                Some(runtime::timeout(idle, runtime::tcp::write_all_vectored(&mut self.stream, &slices)).await)
            },
            async {
                self.broker.shutdown.wait().await;
                None
            },
        )
        .await;
        match written {
            None => return Ok(false),
            Some(None) => return Err(format!("the client read no response for {} ms", idle.as_millis())),
            Some(Some(Err(e))) => return Err(format!("write failed: {e}")),
            Some(Some(Ok(()))) => {}
        }
        self.last_activity = Instant::now();
        // A large response's buffer goes back to the allocator rather than staying with the connection.
        self.outbuf.clear(self.broker.config.connections.max_unwritten_bytes.max(READ_CHUNK));
        self.share.set(0);
        Ok(true)
    }

    /// Reads more bytes into `inbuf`, within the connection's time bounds.
    async fn read(&mut self) -> Result<ReadOutcome, String> {
        let limits = &self.broker.config.connections;
        // Release memory a large frame left behind once the buffer has drained.
        if self.inbuf.is_empty() && self.inbuf.capacity() > MAX_READ {
            self.inbuf.release();
        }
        let idle_deadline = self.last_activity + limits.max_idle;
        let (deadline, what) = match self.request_began {
            Some(began) if began + limits.request_read_timeout < idle_deadline => (
                began + limits.request_read_timeout,
                "request not received whole within connections.request.read.timeout.ms",
            ),
            _ => (idle_deadline, "idle for connections.max.idle.ms"),
        };
        let outcome = if self.inbuf.is_empty() {
            // Between requests: keep the read buffer for a moment, then wait with a small one,
            // so that thousands of idle connections cost little memory.
            // A new connection waits with the small one from the start.
            let warm = if self.inbuf.capacity() > 0 {
                self.read_into_buffer((Instant::now() + KEEP_READ_BUFFER).min(deadline)).await?
            } else {
                None
            };
            match warm {
                Some(outcome) => outcome,
                None if Instant::now() >= deadline => return Err(what.into()),
                None => {
                    self.inbuf.release();
                    match self.read_idle(deadline).await? {
                        Some(outcome) => outcome,
                        None => return Err(what.into()),
                    }
                }
            }
        } else {
            match self.read_into_buffer(deadline).await? {
                Some(outcome) => outcome,
                None => return Err(what.into()),
            }
        };
        if matches!(outcome, ReadOutcome::Data) {
            self.last_activity = Instant::now();
            if self.request_began.is_none() {
                self.request_began = Some(self.last_activity);
            }
        }
        Ok(outcome)
    }

    /// One read into `inbuf`, sized for the frame arriving. `None`: nothing came by `until`.
    async fn read_into_buffer(&mut self, until: Instant) -> Result<Option<ReadOutcome>, String> {
        let start = self.inbuf.bytes().len();
        // Grow toward a large frame as its bytes arrive, so a size prefix alone commits no memory.
        let want = self.decoder.missing(self.inbuf.bytes()).clamp(READ_CHUNK, MAX_READ);
        let read = timeout_or_shutdown(self.broker, until, self.inbuf.read_from(&self.stream, want)).await;
        match read {
            Wait::Done(Ok(n)) => Ok(Some(self.outcome_of(n, start)?)),
            Wait::Done(Err(e)) => Err(format!("read failed: {e}")),
            Wait::TimedOut => Ok(None),
            Wait::Shutdown => Ok(Some(ReadOutcome::Shutdown)),
        }
    }

    /// One read of at most IDLE_READ bytes into a small buffer, copied into a new `inbuf`.
    async fn read_idle(&mut self, until: Instant) -> Result<Option<ReadOutcome>, String> {
        let mut small = [0u8; IDLE_READ];
        let read = timeout_or_shutdown(self.broker, until, self.stream.read(&mut small)).await;
        match read {
            Wait::Done(Ok(n)) => {
                self.inbuf.extend_from_slice(&small[..n]);
                Ok(Some(self.outcome_of(n, 0)?))
            }
            Wait::Done(Err(e)) => Err(format!("read failed: {e}")),
            Wait::TimedOut => Ok(None),
            Wait::Shutdown => Ok(Some(ReadOutcome::Shutdown)),
        }
    }

    fn outcome_of(&self, n: usize, start: usize) -> Result<ReadOutcome, String> {
        if n > 0 {
            return Ok(ReadOutcome::Data);
        }
        if start == 0 { Ok(ReadOutcome::Closed) } else { Err("peer closed mid-frame".into()) }
    }
}

enum Wait<T> {
    Done(T),
    TimedOut,
    Shutdown,
}

/// Awaits `fut` until `until` or shutdown, whichever comes first.
async fn timeout_or_shutdown<T>(broker: &Broker, until: Instant, fut: impl std::future::Future<Output = T>) -> Wait<T> {
    let left = until.saturating_duration_since(Instant::now());
    futures_lite::future::or(
        async {
            match runtime::timeout(left, fut).await {
                Some(v) => Wait::Done(v),
                None => Wait::TimedOut,
            }
        },
        async {
            broker.shutdown.wait().await;
            Wait::Shutdown
        },
    )
    .await
}
