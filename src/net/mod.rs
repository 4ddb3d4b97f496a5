//! Listeners and connections. Each core accepts on its own port and serves its connections
//! itself; a connection never leaves the core that accepted it.
//!
//! Requests on one connection are handled one at a time, in order, as a Kafka broker does;
//! pipelined requests queue in the read buffer and their responses are written in order, in
//! as few writes as the buffer allows.

pub mod frame;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::kafka;
use crate::runtime::{self, TcpListener, TcpStream};
use frame::FrameDecoder;

/// Smallest read; reads grow up to MAX_READ while a large frame arrives.
const READ_CHUNK: usize = 64 << 10;
/// Most bytes one read asks for.
const MAX_READ: usize = 1 << 20;

/// Accepts connections until shutdown, then waits (bounded) for open connections to finish.
pub async fn serve(broker: Rc<Broker>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            broker.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                warn!(core = broker.id, error = %e, "accept failed");
                runtime::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= broker.config.max_connections_per_core {
            debug!(core = broker.id, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let (b, o) = (broker.clone(), open.clone());
        runtime::spawn(async move {
            let peer = stream.peer_addr().ok();
            // Kafka shows a member's host as "/<ip>" (DescribeGroups, kafka-consumer-groups).
            let client_host = peer.map(|p| format!("/{}", p.ip())).unwrap_or_default();
            if let Err(reason) = serve_connection(&b, stream, &client_host).await {
                info!(core = b.id, peer = ?peer, %reason, "closing connection");
            }
            o.set(o.get() - 1);
        });
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_millis(broker.config.shutdown_timeout_ms);
    while open.get() > 0 && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
    if open.get() > 0 {
        warn!(core = broker.id, open = open.get(), "shutdown timeout: dropping open connections");
    }
}

/// Serves one connection until the peer closes it, it misbehaves, or shutdown. An `Err`
/// carries the reason to log.
async fn serve_connection(broker: &Broker, mut stream: TcpStream, client_host: &str) -> Result<(), String> {
    let decoder = FrameDecoder::new(broker.config.socket_request_max_bytes);
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut outbuf = BytesMut::new();
    loop {
        while let Some(frame) = decoder.next_frame(&mut inbuf).map_err(|e| e.to_string())? {
            kafka::handle_request(broker, frame, &mut outbuf, client_host).await.map_err(|e| e.to_string())?;
        }
        if !outbuf.is_empty() {
            stream.write_all(&outbuf).await.map_err(|e| format!("write failed: {e}"))?;
            outbuf.clear();
        }
        if broker.shutdown.is_triggered() {
            return Ok(());
        }
        // Release memory a large frame left behind once the buffer has drained.
        if inbuf.is_empty() && inbuf.capacity() > MAX_READ {
            inbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        // Grow toward a large frame as its bytes arrive, so a size prefix alone commits no memory.
        let start = inbuf.len();
        let want = decoder.missing(&inbuf).clamp(READ_CHUNK, MAX_READ);
        inbuf.resize(start + want, 0);
        let read = futures_lite::future::or(async { Some(stream.read(&mut inbuf[start..]).await) }, async {
            broker.shutdown.wait().await;
            None
        })
        .await;
        match read {
            None => return Ok(()),
            Some(Ok(0)) => {
                inbuf.truncate(start);
                return if inbuf.is_empty() { Ok(()) } else { Err("peer closed mid-frame".into()) };
            }
            Some(Ok(n)) => inbuf.truncate(start + n),
            Some(Err(e)) => return Err(format!("read failed: {e}")),
        }
    }
}
