//! The Prometheus text exposition format (version 0.0.4) of every core's snapshot, plus the
//! partition and group samples the admin view gathers.

use std::fmt::Write as _;

use super::{Sample, Value};

/// Kind of a metric family, as `# TYPE` names it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family kopd exposes: name, type, help. The order here is the order of the output.
const FAMILIES: &[(&str, Kind, &str)] = &[
    ("kopd_requests_total", Kind::Counter, "Kafka requests handled, by API."),
    (
        "kopd_request_errors_total",
        Kind::Counter,
        "Error answers by API and Kafka error (per partition for Produce and Fetch).",
    ),
    ("kopd_request_duration_seconds", Kind::Histogram, "Time from a request's arrival to its answer, by API."),
    (
        "kopd_produce_stage_duration_seconds",
        Kind::Histogram,
        "Produce time by stage: validate (checks and offset assignment, per request), queue (a commit window of the embedded store waiting for its write, per window), persist (until the store acknowledged: queue, write and fsync, per request); fsync itself is kopd_fsync_duration_seconds.",
    ),
    ("kopd_fsync_duration_seconds", Kind::Histogram, "fdatasync latency of the embedded ledger store."),
    (
        "kopd_commit_window_bytes",
        Kind::Histogram,
        "Entry bytes written per commit window (one fdatasync covers a window).",
    ),
    ("kopd_fetch_wait_seconds", Kind::Histogram, "Time fetches waited for data (min.bytes, max.wait.ms)."),
    ("kopd_tail_cache_hits_total", Kind::Counter, "Batch reads served from the tail cache."),
    ("kopd_tail_cache_misses_total", Kind::Counter, "Batch reads that went to the ledger store."),
    ("kopd_connections_open", Kind::Gauge, "Open Kafka connections."),
    ("kopd_connections_accepted_total", Kind::Counter, "Kafka connections accepted."),
    ("kopd_connections_closed_total", Kind::Counter, "Kafka connections closed."),
    ("kopd_connections_refused_total", Kind::Counter, "Kafka connections refused, by the limit that refused them."),
    ("kopd_group_rebalances_total", Kind::Counter, "Consumer group rebalances started."),
    ("kopd_groups", Kind::Gauge, "Consumer groups by state."),
    ("kopd_partition_bytes_in_total", Kind::Counter, "Record batch bytes appended to a partition."),
    ("kopd_partition_records_in_total", Kind::Counter, "Records appended to a partition."),
    ("kopd_partition_bytes_out_total", Kind::Counter, "Record batch bytes fetched from a partition."),
    ("kopd_partition_records_out_total", Kind::Counter, "Records fetched from a partition."),
    ("kopd_partition_high_watermark", Kind::Gauge, "A partition's high watermark (next offset to be written)."),
    ("kopd_partition_log_start_offset", Kind::Gauge, "A partition's first offset still stored."),
    ("kopd_partition_ledgers", Kind::Gauge, "Ledgers of a partition's managed ledger."),
    ("kopd_partition_ledger_bytes", Kind::Gauge, "Bytes stored in a partition's ledgers."),
    (
        "kopd_consumer_group_committed_offset",
        Kind::Gauge,
        "A group's committed offset of a partition (as mirrored into its durable cursor).",
    ),
    (
        "kopd_consumer_group_lag",
        Kind::Gauge,
        "Records of a partition a group has not committed: high watermark minus committed offset.",
    ),
];

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(ls: &[(&str, String)], extra: Option<(&str, String)>) -> String {
    let all: Vec<String> = ls.iter().cloned().chain(extra).map(|(k, v)| format!("{k}=\"{}\"", escape(&v))).collect();
    if all.is_empty() { String::new() } else { format!("{{{}}}", all.join(",")) }
}

/// A float as Prometheus writes it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == v.trunc() && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Renders samples grouped by family, in [`FAMILIES`] order. A family with no samples is
/// left out; samples of an unlisted family are dropped (a test keeps the list complete).
pub fn text(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.family == *name).collect();
        if mine.is_empty() {
            continue;
        }
        let ty = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for s in mine {
            match &s.value {
                Value::Number(v) => {
                    let _ = writeln!(out, "{name}{} {}", labels(&s.labels, None), num(*v));
                }
                Value::Histogram(h) => {
                    for (bound, n) in h.bounds.iter().zip(&h.cumulative) {
                        let le = Some(("le", num(*bound)));
                        let _ = writeln!(out, "{name}_bucket{} {n}", labels(&s.labels, le));
                    }
                    let inf = Some(("le", "+Inf".to_string()));
                    let _ = writeln!(out, "{name}_bucket{} {}", labels(&s.labels, inf), h.count);
                    let _ = writeln!(out, "{name}_sum{} {}", labels(&s.labels, None), num(h.sum));
                    let _ = writeln!(out, "{name}_count{} {}", labels(&s.labels, None), h.count);
                }
            }
        }
    }
    out
}

/// Whether a family is listed (the test that every family a core reports renders).
#[cfg(test)]
pub fn is_listed(family: &str) -> bool {
    FAMILIES.iter().any(|(n, _, _)| *n == family)
}

#[cfg(test)]
mod tests {
    use super::super::HistogramSnapshot;
    use super::*;

    #[test]
    fn families_render_with_help_type_and_histogram_series() {
        let samples = vec![
            Sample {
                family: "kopd_requests_total",
                labels: vec![("broker", "0".into()), ("api", "Produce".into())],
                value: Value::Number(3.0),
            },
            Sample {
                family: "kopd_fetch_wait_seconds",
                labels: vec![("broker", "0".into())],
                value: Value::Histogram(HistogramSnapshot {
                    bounds: &[0.5, 1.0],
                    cumulative: vec![1, 2],
                    count: 3,
                    sum: 2.25,
                }),
            },
            Sample {
                family: "kopd_consumer_group_lag",
                labels: vec![("group", "a\"b".into())],
                value: Value::Number(7.0),
            },
        ];
        let t = text(&samples);
        assert!(
            t.contains("# TYPE kopd_requests_total counter\nkopd_requests_total{broker=\"0\",api=\"Produce\"} 3\n"),
            "{t}"
        );
        assert!(t.contains("kopd_fetch_wait_seconds_bucket{broker=\"0\",le=\"0.5\"} 1\n"), "{t}");
        assert!(t.contains("kopd_fetch_wait_seconds_bucket{broker=\"0\",le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("kopd_fetch_wait_seconds_sum{broker=\"0\"} 2.25\n"), "{t}");
        assert!(t.contains("kopd_consumer_group_lag{group=\"a\\\"b\"} 7\n"), "{t}");
        assert!(!t.contains("kopd_groups"), "no samples, no family");
    }
}
