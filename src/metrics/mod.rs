//! Prometheus metrics.
//!
//! Every core records into its own thread-local [`CoreMetrics`]: a core is one thread, so a
//! counter is a `Cell` and recording takes no lock and no atomic. Per-partition counters live
//! in the partition's managed ledger. A scrape (`GET /metrics` on the admin listener) asks
//! every core for a [`Snapshot`] through its inbox, like the other admin views; the admin core
//! renders them in the Prometheus text format (`render.rs`). So a scrape costs each core one
//! message handled between requests, never a lock on the data path.
//!
//! Latencies are HdrHistograms (microseconds, two significant digits), exposed as Prometheus
//! histograms with the classic buckets plus finer ones below 5 ms, where kopd's latencies live.

pub mod render;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets: Prometheus' classic ones with
/// finer steps below them.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Upper bounds (bytes) of the commit-window size histogram.
pub const BYTES_BUCKETS: &[f64] =
    &[1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0];

/// A distribution recorded in whole units (microseconds or bytes).
pub struct Histogram {
    hdr: RefCell<Option<hdrhistogram::Histogram<u64>>>,
    sum: Cell<u64>,
}

impl Histogram {
    const fn new() -> Self {
        Histogram { hdr: RefCell::new(None), sum: Cell::new(0) }
    }

    pub fn record(&self, units: u64) {
        let mut hdr = self.hdr.borrow_mut();
        // Allocated on first use: a core that never serves an API pays nothing for it.
        if hdr.is_none() {
            // Fixed bounds: an auto-resizing histogram would clamp in saturating_record.
            *hdr = hdrhistogram::Histogram::new_with_bounds(1, 1 << 40, 2).ok();
        }
        if let Some(h) = hdr.as_mut() {
            h.saturating_record(units);
            self.sum.set(self.sum.get().saturating_add(units));
        }
    }

    pub fn record_duration(&self, d: Duration) {
        self.record(d.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Cumulative counts at `bounds` (given in `units`-per-bound scaling: bound * scale).
    fn snapshot(&self, bounds: &'static [f64], scale: f64) -> Option<HistogramSnapshot> {
        let hdr = self.hdr.borrow();
        let h = hdr.as_ref()?;
        // Each recorded value (an HdrHistogram bucket, read at its midpoint) counts towards
        // every bound at or above it.
        let limits: Vec<u64> = bounds.iter().map(|b| (b * scale) as u64).collect();
        let mut cumulative = vec![0u64; bounds.len()];
        for v in h.iter_recorded() {
            let value = h.median_equivalent(v.value_iterated_to());
            let first = limits.partition_point(|l| *l < value);
            for c in &mut cumulative[first..] {
                *c += v.count_at_value();
            }
        }
        Some(HistogramSnapshot { bounds, cumulative, count: h.len(), sum: self.sum.get() as f64 / scale })
    }
}

/// A histogram as a scrape sees it.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// Observations at or below each bound.
    pub cumulative: Vec<u64>,
    pub count: u64,
    /// In the exposed unit (seconds or bytes).
    pub sum: f64,
}

/// One sample of a metric family.
#[derive(Debug, Clone)]
pub enum Value {
    Number(f64),
    Histogram(HistogramSnapshot),
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub family: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// What one core reports to a scrape.
pub type Snapshot = Vec<Sample>;

/// One API's requests on one core.
struct ApiMetrics {
    latency: Histogram,
}

/// One core's metrics (see the module doc).
pub struct CoreMetrics {
    /// By API key.
    requests: RefCell<BTreeMap<i16, ApiMetrics>>,
    /// (API key, error code) -> count of error answers.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    pub produce_validate: Histogram,
    /// Per commit window of the embedded store: from its first append until the committer
    /// takes it.
    pub produce_queue: Histogram,
    /// From offsets assigned to the store's acknowledgement (write and fsync included).
    pub produce_persist: Histogram,
    pub fsync: Histogram,
    pub commit_window_bytes: Histogram,
    pub fetch_wait: Histogram,
    pub tail_cache_hits: Cell<u64>,
    pub tail_cache_misses: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    pub connections_closed: Cell<u64>,
    /// By the limit that refused them.
    connections_refused: RefCell<BTreeMap<&'static str, u64>>,
    pub rebalances: Cell<u64>,
}

thread_local! {
    static CORE: CoreMetrics = const {
        CoreMetrics {
            requests: RefCell::new(BTreeMap::new()),
            errors: RefCell::new(BTreeMap::new()),
            produce_validate: Histogram::new(),
            produce_queue: Histogram::new(),
            produce_persist: Histogram::new(),
            fsync: Histogram::new(),
            commit_window_bytes: Histogram::new(),
            fetch_wait: Histogram::new(),
            tail_cache_hits: Cell::new(0),
            tail_cache_misses: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_closed: Cell::new(0),
            connections_refused: RefCell::new(BTreeMap::new()),
            rebalances: Cell::new(0),
        }
    };
}

/// This core's metrics.
pub fn with<R>(f: impl FnOnce(&CoreMetrics) -> R) -> R {
    CORE.with(f)
}

/// Adds one to a counter cell.
pub fn inc(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

impl CoreMetrics {
    /// One request of API `key` handled in `took`.
    pub fn request(&self, key: i16, took: Duration) {
        let mut r = self.requests.borrow_mut();
        r.entry(key).or_insert_with(|| ApiMetrics { latency: Histogram::new() }).latency.record_duration(took);
    }

    /// One answer of API `key` carrying error `code` (per partition where the API has them).
    pub fn error(&self, key: i16, code: i16) {
        if code != 0 {
            *self.errors.borrow_mut().entry((key, code)).or_default() += 1;
        }
    }

    pub fn refused(&self, limit: &'static str) {
        *self.connections_refused.borrow_mut().entry(limit).or_default() += 1;
    }

    /// Everything recorded so far, labelled with this core's broker id.
    pub fn snapshot(&self, broker: i32) -> Snapshot {
        let b = broker.to_string();
        let mut out = Vec::new();
        let mut num = |family, mut labels: Vec<(&'static str, String)>, v: f64| {
            labels.insert(0, ("broker", b.clone()));
            out.push(Sample { family, labels, value: Value::Number(v) });
        };
        for (key, m) in self.requests.borrow().iter() {
            let count = m.latency.hdr.borrow().as_ref().map_or(0, |h| h.len());
            num("kopd_requests_total", vec![("api", api_name(*key))], count as f64);
        }
        for ((key, code), n) in self.errors.borrow().iter() {
            num("kopd_request_errors_total", vec![("api", api_name(*key)), ("error", error_name(*code))], *n as f64);
        }
        num("kopd_tail_cache_hits_total", vec![], self.tail_cache_hits.get() as f64);
        num("kopd_tail_cache_misses_total", vec![], self.tail_cache_misses.get() as f64);
        let (accepted, closed) = (self.connections_accepted.get(), self.connections_closed.get());
        num("kopd_connections_open", vec![], accepted.saturating_sub(closed) as f64);
        num("kopd_connections_accepted_total", vec![], accepted as f64);
        num("kopd_connections_closed_total", vec![], closed as f64);
        for (limit, n) in self.connections_refused.borrow().iter() {
            num("kopd_connections_refused_total", vec![("limit", limit.to_string())], *n as f64);
        }
        num("kopd_group_rebalances_total", vec![], self.rebalances.get() as f64);
        let mut hist = |family, extra: Vec<(&'static str, String)>, h: &Histogram, bounds, scale| {
            if let Some(s) = h.snapshot(bounds, scale) {
                let mut labels = vec![("broker", b.clone())];
                labels.extend(extra);
                out.push(Sample { family, labels, value: Value::Histogram(s) });
            }
        };
        const MICROS: f64 = 1e6;
        for (key, m) in self.requests.borrow().iter() {
            hist("kopd_request_duration_seconds", vec![("api", api_name(*key))], &m.latency, LATENCY_BUCKETS, MICROS);
        }
        let stage = |s: &str| vec![("stage", s.to_string())];
        hist("kopd_produce_stage_duration_seconds", stage("validate"), &self.produce_validate, LATENCY_BUCKETS, MICROS);
        hist("kopd_produce_stage_duration_seconds", stage("queue"), &self.produce_queue, LATENCY_BUCKETS, MICROS);
        hist("kopd_produce_stage_duration_seconds", stage("persist"), &self.produce_persist, LATENCY_BUCKETS, MICROS);
        hist("kopd_fsync_duration_seconds", vec![], &self.fsync, LATENCY_BUCKETS, MICROS);
        hist("kopd_commit_window_bytes", vec![], &self.commit_window_bytes, BYTES_BUCKETS, 1.0);
        hist("kopd_fetch_wait_seconds", vec![], &self.fetch_wait, LATENCY_BUCKETS, MICROS);
        out
    }
}

/// Kafka's name of an API key ("Produce"), or the number.
fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

/// Kafka's name of an error code (UNKNOWN_TOPIC_OR_PARTITION), or the number.
fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(e) => {
            // The codec names errors in CamelCase; Kafka's operators know them in upper snake case.
            let mut s = String::new();
            for (i, c) in format!("{e:?}").chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    s.push('_');
                }
                s.push(c.to_ascii_uppercase());
            }
            s
        }
        None => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_report_cumulative_classic_buckets() {
        let h = Histogram::new();
        assert!(h.snapshot(LATENCY_BUCKETS, 1e6).is_none(), "nothing recorded: no series");
        for us in [50, 300, 300, 2_000, 7_000_000] {
            h.record(us);
        }
        let s = h.snapshot(LATENCY_BUCKETS, 1e6).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative[0], 1, "<= 100 us");
        assert_eq!(s.cumulative[2], 3, "<= 500 us");
        assert_eq!(s.cumulative[4], 4, "<= 2.5 ms");
        assert_eq!(*s.cumulative.last().unwrap(), 5, "<= 10 s");
        assert!((s.sum - 7.00265).abs() < 1e-9, "{}", s.sum);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn every_family_a_core_reports_is_listed_for_rendering() {
        let snapshot = with(|m| {
            m.request(0, Duration::from_micros(300));
            m.error(0, 3);
            m.refused("max.connections");
            for h in [
                &m.produce_validate,
                &m.produce_queue,
                &m.produce_persist,
                &m.fsync,
                &m.commit_window_bytes,
                &m.fetch_wait,
            ] {
                h.record(10);
            }
            m.snapshot(0)
        });
        assert!(snapshot.len() > 10);
        for s in &snapshot {
            assert!(render::is_listed(s.family), "{} is not in render::FAMILIES", s.family);
        }
    }

    #[test]
    fn names_are_kafkas() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
    }
}
