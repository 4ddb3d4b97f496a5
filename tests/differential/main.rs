//! Differential suite: the same raw request sequences go to Apache Kafka 4.4.0 (single-node
//! KRaft) and to kopd (one core), and the answers are compared field by field after the
//! normalisation in `norm.rs` (node ids, topic ids, cluster ids, throttle times, free-text
//! error messages).
//!
//! Each case is a function that runs a request sequence against one broker and writes a
//! transcript: one line per request with the normalised answer. The runner plays every case on
//! both brokers and reports every step whose answers differ, with the request and both answers.
//! Differences that are intended are listed in `INTENDED` (and in compatibility.md); they are
//! reported, not asserted. The full Kafka/kopd transcripts go to
//! `target/tmp/differential-report.txt`.

mod admin;
mod broker_configs;
#[path = "../common/mod.rs"]
mod common;
mod configs;
mod fetch;
mod groups;
mod misc;
mod norm;
mod peers;
mod produce;
mod topics;

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{Kopd, temp_dir};
use peers::{KafkaServer, Side, api_versions, common_ranges, ranges};

/// Differences between kopd and Kafka 4.4 that are intended: the case runs on both brokers,
/// both answers are reported, but they are not asserted equal. (case name, reason)
pub const INTENDED: &[(&str, &str)] = &[
    (
        "api_versions.ranges",
        "kopd serves the APIs and versions it has built; the ranges are reported, not asserted equal",
    ),
    (
        "api_versions.features",
        "kopd reports the feature levels it implements: metadata.version as Kafka 4.4, the others at 0 \
         (no KIP-848 groups, transactions, share groups, streams groups or ELR yet)",
    ),
    ("produce.null_records", "Kafka 4.4 never answers a Produce whose records are null; kopd answers INVALID_RECORD"),
    (
        "metadata.unknown_topic_auto_create_on",
        "kopd creates an auto-created topic before it answers (the topic, ready); Kafka creates it \
         asynchronously and first answers UNKNOWN_TOPIC_OR_PARTITION, which clients retry",
    ),
    (
        "find_coordinator.transaction",
        "kopd has no transaction coordinator yet: it answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED with a \
         message, which every client treats as fatal, instead of a retriable error that hangs them",
    ),
];

/// One case's record of requests and normalised answers.
#[derive(Default)]
pub struct T {
    pub steps: Vec<(String, String)>,
}

impl T {
    pub fn step(&mut self, request: impl Into<String>, answer: impl Into<String>) {
        self.steps.push((request.into(), answer.into()));
    }
}

pub type CaseFn = fn(&mut Side, &mut T);

fn all_cases() -> Vec<(&'static str, CaseFn)> {
    let mut v = Vec::new();
    for list in [
        misc::CASES,
        topics::CASES,
        configs::CASES,
        broker_configs::CASES,
        produce::CASES,
        fetch::CASES,
        groups::CASES,
        admin::CASES,
    ] {
        v.extend_from_slice(list);
    }
    v
}

fn play(side: &mut Side, case: CaseFn) -> T {
    let mut t = T::default();
    let r = catch_unwind(AssertUnwindSafe(|| case(side, &mut t)));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let first = msg.lines().next().unwrap_or_default();
        t.step("(case aborted)", format!("panic: {first}"));
        side.reconnect();
    }
    t
}

/// The steps whose answers differ: (request, kafka, kopd).
fn diff(kafka: &T, kopd: &T) -> Vec<(String, String, String)> {
    let n = kafka.steps.len().max(kopd.steps.len());
    let mut out = Vec::new();
    for i in 0..n {
        let k = kafka.steps.get(i);
        let o = kopd.steps.get(i);
        let same = matches!((k, o), (Some(a), Some(b)) if a == b);
        if !same {
            let req = k.or(o).map(|s| s.0.clone()).unwrap_or_default();
            let ka = k.map(|s| s.1.clone()).unwrap_or_else(|| "(no such step)".into());
            let oa = o.map(|s| s.1.clone()).unwrap_or_else(|| "(no such step)".into());
            let req = match (k, o) {
                (Some(a), Some(b)) if a.0 != b.0 => format!("kafka: {} / kopd: {}", a.0, b.0),
                _ => req,
            };
            out.push((req, ka, oa));
        }
    }
    out
}

#[test]
fn kopd_answers_like_kafka_4_4() {
    let kdir = temp_dir("diff-kafka");
    let kafka = KafkaServer::start(&kdir);
    let odir = temp_dir("diff-kopd");
    let kopd = Kopd::start(&odir, 1, &[]);

    let kaddr = std::net::SocketAddr::from(([127, 0, 0, 1], kafka.port));
    let oaddr = kopd.addr(0);
    let (kv, ov) = (api_versions(kaddr), api_versions(oaddr));
    let common = common_ranges(&ranges(&kv), &ranges(&ov));
    // Kafka's KRaft node is node 1 (kafka-server.sh); kopd's single core is broker 0.
    let mut sides = [Side::new("kafka", kaddr, 1), Side::new("kopd", oaddr, 0)];
    for s in &mut sides {
        s.common = common.clone();
        // Kafka creates __consumer_offsets on the first FindCoordinator and answers
        // COORDINATOR_NOT_AVAILABLE until it is loaded: wait for that before the cases run.
        groups::wait_coordinator(s);
    }

    let mut report = String::new();
    let mut failures = String::new();
    let mut failed = 0;
    let cases = all_cases();
    for (name, case) in &cases {
        let [k, o] = &mut sides;
        let tk = play(k, *case);
        let to = play(o, *case);
        let _ = writeln!(report, "## {name}");
        for (i, (req, ans)) in tk.steps.iter().enumerate() {
            let kopd_ans = to.steps.get(i).map(|s| s.1.as_str()).unwrap_or("(no such step)");
            let mark = if kopd_ans == ans { "=" } else { "≠" };
            let _ = writeln!(report, "  {mark} {req}\n      kafka: {ans}");
            if kopd_ans != ans {
                let _ = writeln!(report, "      kopd:  {kopd_ans}");
            }
        }
        let mut d = diff(&tk, &to);
        // A case that could not run to its end proves nothing, even if both brokers aborted alike.
        for (side, tr) in [("kafka", &tk), ("kopd", &to)] {
            if let Some((_, why)) = tr.steps.iter().find(|s| s.0 == "(case aborted)")
                && !d.iter().any(|x| x.0 == "(case aborted)")
            {
                d.push(("(case aborted)".into(), format!("{side}: {why}"), String::new()));
            }
        }
        if d.is_empty() {
            continue;
        }
        let intended = INTENDED.iter().find(|(n, _)| n == name);
        let mut text = String::new();
        for (req, ka, oa) in &d {
            let _ = writeln!(text, "    request: {req}\n      kafka 4.4: {ka}\n      kopd:      {oa}");
        }
        match intended {
            Some((_, why)) => {
                let _ = writeln!(report, "  (intended difference: {why})");
            }
            None => {
                failed += 1;
                let _ = writeln!(failures, "\n[{name}] {} step(s) differ\n{text}", d.len());
            }
        }
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential-report.txt");
    let _ = std::fs::write(&path, &report);
    println!("{report}");
    println!("full transcripts: {}", path.display());
    drop(kopd);
    drop(kafka);
    assert!(
        failed == 0,
        "{failed} of {} cases answer differently from Apache Kafka {}:{failures}",
        cases.len(),
        peers::KAFKA_VERSION
    );
}
