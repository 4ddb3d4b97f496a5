//! Listeners and connections. Each core accepts on its own port and serves its connections
//! itself; a connection never leaves the core that accepted it.
//!
//! Requests on one connection are handled one at a time, in order, as a Kafka broker does;
//! pipelined requests queue in the read buffer and their responses are written in order, in
//! as few writes as the connection's bounds allow (see `connection.rs`).

mod connection;
pub mod frame;
mod read_buffer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::runtime::{self, TcpListener};
use connection::Connection;

/// Open connections of one core, in all and per client address.
#[derive(Default)]
struct OpenConnections {
    total: Cell<usize>,
    per_ip: RefCell<HashMap<IpAddr, usize>>,
}

/// A connection's place in [`OpenConnections`], given back when dropped.
struct Slot {
    open: Rc<OpenConnections>,
    ip: Option<IpAddr>,
}

impl OpenConnections {
    /// Takes a slot for a new connection from `ip`, or says which limit refuses it.
    fn admit(self: &Rc<Self>, broker: &Broker, ip: Option<IpAddr>) -> Result<Slot, &'static str> {
        let limits = &broker.config.connections;
        if self.total.get() >= limits.max_per_core {
            return Err("max.connections");
        }
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.borrow_mut();
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= limits.max_for_ip(ip) {
                if *n == 0 {
                    per_ip.remove(&ip);
                }
                return Err("max.connections.per.ip");
            }
            *n += 1;
        }
        self.total.set(self.total.get() + 1);
        Ok(Slot { open: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.total.set(self.open.total.get() - 1);
        if let Some(ip) = self.ip {
            let mut per_ip = self.open.per_ip.borrow_mut();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Counts a connection closed when its task ends, however it ends.
struct ClosedOnDrop;

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        crate::metrics::with(|m| crate::metrics::inc(&m.connections_closed));
    }
}

/// Accepts connections until shutdown, then waits (bounded) for open connections to finish.
pub async fn serve(broker: Rc<Broker>, listener: TcpListener) {
    let open = Rc::new(OpenConnections::default());
    let mut refused = 0u64;
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
        let peer = stream.peer_addr().ok();
        let slot = match open.admit(&broker, peer.map(|p| p.ip())) {
            Ok(slot) => slot,
            Err(limit) => {
                // Kafka closes such a connection at once; the log stays quiet under a flood.
                crate::metrics::with(|m| m.refused(limit));
                refused += 1;
                if refused.is_power_of_two() {
                    info!(core = broker.id, peer = ?peer, limit, refused, "connection refused by a limit");
                } else {
                    debug!(core = broker.id, peer = ?peer, limit, "connection refused by a limit");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let b = broker.clone();
        crate::metrics::with(|m| crate::metrics::inc(&m.connections_accepted));
        runtime::spawn(async move {
            let _slot = slot;
            let _counted = ClosedOnDrop;
            // Kafka shows a member's host as "/<ip>" (DescribeGroups, kafka-consumer-groups).
            let client_host = peer.map(|p| format!("/{}", p.ip())).unwrap_or_default();
            if let Err(reason) = Connection::new(&b, stream, &client_host).serve().await {
                info!(core = b.id, peer = ?peer, %reason, "closing connection");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_millis(broker.config.shutdown_timeout_ms);
    while open.total.get() > 0 && Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
    if open.total.get() > 0 {
        warn!(core = broker.id, open = open.total.get(), "shutdown timeout: dropping open connections");
    }
}
