//! `GET /metrics`: every core's samples (its [`crate::metrics::CoreMetrics`], its groups, its
//! open partitions), gathered through the cores' inboxes and rendered as Prometheus text.

use crate::broker::{Broker, CoreMessage};
use crate::metrics::{self, Sample, Snapshot, Value};

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One core's samples, assembled on that core.
pub fn core_snapshot(broker: &Broker) -> Snapshot {
    let mut out = metrics::with(|m| m.snapshot(broker.id));
    let id = broker.id.to_string();
    let mut push = |family, labels: Vec<(&'static str, String)>, v: f64| {
        out.push(Sample { family, labels, value: Value::Number(v) });
    };
    let mut states = std::collections::BTreeMap::new();
    for (_, _, state) in broker.groups.list() {
        *states.entry(state).or_insert(0u64) += 1;
    }
    for (state, n) in states {
        push("kopd_groups", vec![("broker", id.clone()), ("state", state.to_string())], n as f64);
    }
    for log in broker.logs.open_logs() {
        let (topic, partition) = (broker.kafka_name(&log.topic), log.partition.to_string());
        let labels = || vec![("broker", id.clone()), ("topic", topic.clone()), ("partition", partition.clone())];
        let t = &log.traffic;
        push("kopd_partition_bytes_in_total", labels(), t.bytes_in.get() as f64);
        push("kopd_partition_records_in_total", labels(), t.records_in.get() as f64);
        push("kopd_partition_bytes_out_total", labels(), t.bytes_out.get() as f64);
        push("kopd_partition_records_out_total", labels(), t.records_out.get() as f64);
        let (hw, start) = (log.high_watermark(), log.log_start_offset());
        push("kopd_partition_high_watermark", labels(), hw as f64);
        push("kopd_partition_log_start_offset", labels(), start as f64);
        let ledgers = log.ledgers();
        push("kopd_partition_ledgers", labels(), ledgers.len() as f64);
        let bytes: i64 = ledgers.iter().filter_map(|l| l.size).sum();
        push("kopd_partition_ledger_bytes", labels(), bytes as f64);
        for c in log.cursors() {
            let mut l = labels();
            l.insert(1, ("group", c.name.clone()));
            push("kopd_consumer_group_committed_offset", l.clone(), c.offset as f64);
            // Records the group has yet to commit, from the log start if it is behind that.
            push("kopd_consumer_group_lag", l, (hw - c.offset.max(start)).max(0) as f64);
        }
    }
    out
}

/// Asks every core for its samples and renders them.
pub async fn scrape(broker: &Broker) -> String {
    let all = super::ask_every_core(broker, |reply| CoreMessage::Metrics { reply }).await;
    metrics::render::text(&all)
}
