//! The admin HTTP API: read-only stats views on `admin.listen` (served by core 0).
//!
//! - `GET /admin/v2/persistent/{tenant}/{ns}/{topic}-partition-{i}/internalStats`: one
//!   partition's managed ledger as Pulsar's internal stats show it (ledgers, entries, and every
//!   durable cursor with its mark-delete and read positions).
//! - `GET /admin/v2/persistent/{tenant}/{ns}/{topic}/partitioned-internalStats`: the same for
//!   every partition of a topic.
//! - `GET /kopd/cursors`: every cursor on every partition as a flat list (the consumer group,
//!   its committed offset, position and backlog); `kopd cursors` prints it as a table.
//! - `GET /metrics`: Prometheus metrics (see `crate::metrics` and `metrics.rs`).
//!
//! Each core reports its own open partitions (`CoreMessage::Stats`), so a view is a snapshot
//! assembled from all cores. One request per connection, small requests only.

pub mod client;
pub mod metrics;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::{Value, json};

use crate::broker::{Broker, CoreMessage};
use crate::log::cursor::{Cursor, Position};
use crate::log::ml_metadata::LedgerInfo;
use crate::meta::topic_name::TopicName;
use crate::runtime::{self, TcpStream};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the listener keeps trying a busy address (a killed predecessor may still hold it).
const BIND_PATIENCE: Duration = Duration::from_secs(10);

/// One partition's managed ledger and cursors, as its core sees it.
pub struct PartitionStats {
    pub topic: TopicName,
    pub partition: i32,
    pub log_start: i64,
    pub high_watermark: i64,
    pub ledgers: Vec<LedgerInfo>,
    pub cursors: Vec<(Cursor, Position)>,
}

/// The stats of every partition open on this core.
pub fn partition_stats(broker: &Broker) -> Vec<PartitionStats> {
    broker
        .logs
        .open_logs()
        .into_iter()
        .map(|log| PartitionStats {
            topic: log.topic.clone(),
            partition: log.partition,
            log_start: log.log_start_offset(),
            high_watermark: log.high_watermark(),
            ledgers: log.ledgers(),
            cursors: log
                .cursors()
                .into_iter()
                .map(|c| {
                    let read = log.read_position(c.offset);
                    (c, read)
                })
                .collect(),
        })
        .collect()
}

/// Serves the admin API until shutdown. A busy address is logged, not fatal: the Kafka
/// listeners are what the process is for.
pub async fn serve(broker: Rc<Broker>, addr: SocketAddr) {
    let deadline = Instant::now() + BIND_PATIENCE;
    let listener = loop {
        // Not glommio's bind: it sets SO_REUSEPORT, and two servers must not share the port.
        match std::net::TcpListener::bind(addr) {
            Ok(l) => break runtime::adopt_listener(l),
            Err(e) if Instant::now() < deadline && !broker.shutdown.is_triggered() => {
                tracing::debug!(%addr, error = %e, "admin listener: retrying bind");
                runtime::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "admin API disabled: cannot listen");
                return;
            }
        }
    };
    tracing::info!(%addr, "admin API serving");
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            broker.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let b = broker.clone();
                runtime::spawn(async move {
                    if let Err(e) = serve_one(&b, stream).await {
                        tracing::debug!(error = %e, "admin request failed");
                    }
                });
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin accept failed");
                runtime::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_one(broker: &Broker, mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = runtime::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    let target = match (complete, std::str::from_utf8(&head)) {
        (Some(true), Ok(text)) => match text.lines().next().map(|l| l.split(' ').collect::<Vec<_>>()) {
            Some(parts) if parts.len() == 3 && parts[0] == "GET" => Ok(parts[1].to_string()),
            Some(parts) if parts.len() == 3 => Err((405, json!({"reason": "only GET is served"}))),
            _ => Err((400, json!({"reason": "bad request line"}))),
        },
        _ => Err((400, json!({"reason": "incomplete or oversized request"}))),
    };
    let (status, content_type, body) = match target {
        Ok(t) if t.split('?').next() == Some("/metrics") => {
            (200, metrics::CONTENT_TYPE, metrics::scrape(broker).await.into_bytes())
        }
        Ok(t) => {
            let (status, body) = route(broker, &t).await;
            (status, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        Err((status, body)) => (status, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.close().await
}

async fn route(broker: &Broker, target: &str) -> (u16, Value) {
    let path = target.split('?').next().unwrap_or("");
    if path == "/kopd/cursors" {
        return (200, cursor_rows(broker, &gather(broker).await));
    }
    let Some(rest) = path.strip_prefix("/admin/v2/persistent/") else {
        return (404, json!({"reason": "unknown path"}));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [tenant, namespace, topic, view] = parts[..] else {
        return (404, json!({"reason": "expected /admin/v2/persistent/{tenant}/{namespace}/{topic}/{view}"}));
    };
    let name = |local: &str| TopicName { tenant: tenant.into(), namespace: namespace.into(), local: local.into() };
    match view {
        "internalStats" => {
            let Some((local, p)) =
                topic.rsplit_once("-partition-").and_then(|(l, p)| Some((l, p.parse::<i32>().ok()?)))
            else {
                return (404, json!({"reason": "internalStats needs a partition: {topic}-partition-{i}"}));
            };
            let (t, stats) = (name(local), gather(broker).await);
            match stats.iter().find(|s| s.topic == t && s.partition == p) {
                Some(s) => (200, internal_stats(s)),
                None => (404, json!({"reason": "no such partition, or it holds no data yet"})),
            }
        }
        "partitioned-internalStats" => {
            let t = name(topic);
            let Some(entry) = broker.catalog().get(&t).cloned() else {
                return (404, json!({"reason": "Topic not found"}));
            };
            let mut partitions = serde_json::Map::new();
            let stats = gather(broker).await;
            for s in stats.iter().filter(|s| s.topic == t) {
                partitions.insert(format!("{}-partition-{}", t, s.partition), internal_stats(s));
            }
            (200, json!({"metadata": {"partitions": entry.partitions.len()}, "partitions": partitions}))
        }
        _ => (404, json!({"reason": "unknown view"})),
    }
}

/// Asks every core (its inbox message made by `ask`) and collects the answers.
async fn ask_every_core<T>(broker: &Broker, ask: impl Fn(async_channel::Sender<Vec<T>>) -> CoreMessage) -> Vec<T> {
    let (tx, rx) = async_channel::bounded(broker.peers.len().max(1));
    let mut asked = 0;
    for peer in &broker.peers {
        if peer.send(ask(tx.clone())).await.is_ok() {
            asked += 1;
        }
    }
    drop(tx);
    let mut all = Vec::new();
    for _ in 0..asked {
        match rx.recv().await {
            Ok(s) => all.extend(s),
            Err(_) => break,
        }
    }
    all
}

/// Collects every core's partition stats.
async fn gather(broker: &Broker) -> Vec<PartitionStats> {
    let mut all = ask_every_core(broker, |reply| CoreMessage::Stats { reply }).await;
    all.sort_by(|a, b| (&a.topic.to_string(), a.partition).cmp(&(&b.topic.to_string(), b.partition)));
    all
}

/// Pulsar's internal stats of a managed ledger (the fields kopd can fill).
fn internal_stats(s: &PartitionStats) -> Value {
    let entries: i64 = s.ledgers.iter().filter_map(|l| l.entries).sum();
    let size: i64 = s.ledgers.iter().filter_map(|l| l.size).sum();
    let current = s.ledgers.last();
    let ledgers: Vec<Value> = s
        .ledgers
        .iter()
        .map(|l| json!({"ledgerId": l.ledger_id, "entries": l.entries.unwrap_or(0), "size": l.size.unwrap_or(0), "offloaded": false}))
        .collect();
    let mut cursors = serde_json::Map::new();
    for (c, read) in &s.cursors {
        cursors.insert(
            c.name.clone(),
            json!({
                "markDeletePosition": c.mark_delete.to_string(),
                "readPosition": read.to_string(),
                "cursorLedger": -1,
                "state": "Open",
                "lastActive": c.last_active,
                "properties": {crate::log::cursor::KAFKA_OFFSET_PROPERTY: c.offset},
                "kafkaCommittedOffset": c.offset,
                "kafkaBacklog": backlog(s, c.offset),
            }),
        );
    }
    json!({
        "numberOfEntries": entries,
        "totalSize": size,
        "currentLedgerEntries": current.and_then(|l| l.entries).unwrap_or(0),
        "currentLedgerSize": current.and_then(|l| l.size).unwrap_or(0),
        "state": "LedgerOpened",
        "ledgers": ledgers,
        "cursors": cursors,
        "kafkaLogStartOffset": s.log_start,
        "kafkaHighWatermark": s.high_watermark,
    })
}

/// Records the group has yet to read: from its committed offset (or the log start, if that is
/// later) to the high watermark.
fn backlog(s: &PartitionStats, offset: i64) -> i64 {
    (s.high_watermark - offset.max(s.log_start)).max(0)
}

fn cursor_rows(broker: &Broker, stats: &[PartitionStats]) -> Value {
    let rows: Vec<Value> = stats
        .iter()
        .flat_map(|s| {
            s.cursors.iter().map(move |(c, read)| {
                json!({
                    "topic": broker.kafka_name(&s.topic),
                    "partition": s.partition,
                    "group": c.name,
                    "committedOffset": c.offset,
                    "logEndOffset": s.high_watermark,
                    "backlog": backlog(s, c.offset),
                    "markDeletePosition": c.mark_delete.to_string(),
                    "readPosition": read.to_string(),
                    "lastActive": c.last_active,
                })
            })
        })
        .collect();
    Value::Array(rows)
}
