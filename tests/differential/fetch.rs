//! Fetch, ListOffsets and DeleteRecords.

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteRecordsRequest, FetchRequest, FetchResponse, ListOffsetsRequest,
};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::common::{batch, name};
use crate::norm::{e, id_set, reply};
use crate::peers::Side;
use crate::produce::produce;
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("fetch.records", fetch_records),
    ("fetch.offset_out_of_range", fetch_out_of_range),
    ("fetch.same_partition_twice", fetch_twice),
    ("fetch.max_bytes_zero", fetch_max_bytes_zero),
    ("fetch.unknown_topic", fetch_unknown),
    ("fetch.by_topic_id", fetch_by_id),
    ("fetch.aborted_transactions_null_or_empty", fetch_aborted_null),
    ("list_offsets.special_timestamps_by_version", list_offsets_specials),
    ("list_offsets.same_partition_twice", list_offsets_twice),
    ("list_offsets.unknown_partition", list_offsets_unknown),
    ("delete_records.bounds", delete_records),
];

/// Batches and records in a Fetch answer: (base offset, count, magic-independent fields), and
/// each record's offset, key, value, timestamp and headers.
fn fmt_records(b: &Option<Bytes>) -> String {
    let Some(b) = b else { return "null".into() };
    let mut buf = b.clone();
    let mut out = Vec::new();
    while !buf.is_empty() {
        match RecordBatchDecoder::decode(&mut buf) {
            Ok(set) => {
                let recs: Vec<String> = set
                    .records
                    .iter()
                    .map(|r| {
                        format!(
                            "{}:{}={}@{}{}",
                            r.offset,
                            r.key.as_ref().map(|k| String::from_utf8_lossy(k).to_string()).unwrap_or_default(),
                            r.value.as_ref().map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default(),
                            r.timestamp,
                            if r.headers.is_empty() { "" } else { "+headers" }
                        )
                    })
                    .collect();
                out.push(format!("batch[{}]", recs.join(" ")));
            }
            Err(_) => {
                out.push(format!("undecodable tail of {} bytes", buf.len()));
                break;
            }
        }
    }
    format!("{} bytes: {}", b.len(), out.join(" "))
}

/// Aborted transactions: null and an empty list mean the same to clients (no aborted
/// transactions), so both print "none" here; `fetch.aborted_transactions_null_or_empty` compares
/// them exactly.
fn aborted<X>(a: &Option<Vec<X>>) -> String {
    match a {
        Some(v) if !v.is_empty() => v.len().to_string(),
        _ => "none".into(),
    }
}

pub fn fmt_fetch(r: &FetchResponse) -> String {
    let mut items = Vec::new();
    for t in &r.responses {
        let tn = if t.topic.is_empty() { format!("topic_id={}", id_set(t.topic_id)) } else { t.topic.to_string() };
        for p in &t.partitions {
            items.push(format!(
                "{tn}/{}: {} hw={} lso={} log_start={} aborted={:?} preferred_replica={} records={}",
                p.partition_index,
                e(p.error_code),
                p.high_watermark,
                p.last_stable_offset,
                p.log_start_offset,
                aborted(&p.aborted_transactions),
                p.preferred_read_replica.0,
                fmt_records(&p.records)
            ));
        }
    }
    format!("{} [{}]", e(r.error_code), items.join(", "))
}

pub fn fetch_req(parts: &[(&str, i32, i64)], max_bytes: i32, partition_max: i32) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (t, p, off) in parts {
        let fp = FetchPartition::default()
            .with_partition(*p)
            .with_fetch_offset(*off)
            .with_partition_max_bytes(partition_max);
        match topics.iter_mut().find(|x| x.topic.as_str() == *t) {
            Some(x) => x.partitions.push(fp),
            None => topics.push(FetchTopic::default().with_topic(name(t)).with_partitions(vec![fp])),
        }
    }
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

pub fn fetch(s: &mut Side, t: &mut T, label: &str, parts: &[(&str, i32, i64)], max_bytes: i32, partition_max: i32) {
    // v13+ names topics by id; the name-based versions are what most cases build.
    let v = s.ver(ApiKey::Fetch, 12);
    let r = s.call(v, &fetch_req(parts, max_bytes, partition_max));
    t.step(
        format!("Fetch v{v} {label} max_bytes={max_bytes} partition_max_bytes={partition_max}"),
        reply(&r, fmt_fetch),
    );
}

fn seed(s: &mut Side, t: &mut T, topic: &str) {
    ensure(s, topic, 1);
    produce(s, t, &format!("{topic}/0 3 records"), &[(topic, 0, Some(batch(3, Compression::None)))]);
    produce(s, t, &format!("{topic}/0 2 records"), &[(topic, 0, Some(batch(2, Compression::None)))]);
}

fn fetch_records(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-data");
    for off in [0, 3, 4, 5] {
        fetch(s, t, &format!("fe-data/0@{off}"), &[("fe-data", 0, off)], 1 << 20, 1 << 20);
    }
}

fn fetch_aborted_null(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-abort");
    let v = s.ver(ApiKey::Fetch, 12);
    for iso in [0i8, 1] {
        let req = fetch_req(&[("fe-abort", 0, 0)], 1 << 20, 1 << 20).with_isolation_level(iso);
        let r = s.call(v, &req);
        let ans = reply(&r, |r| {
            let p = &r.responses[0].partitions[0];
            format!("{} aborted_transactions={:?}", e(p.error_code), p.aborted_transactions.as_ref().map(|a| a.len()))
        });
        t.step(format!("Fetch v{v} fe-abort/0@0 isolation_level={iso}"), ans);
    }
}

fn fetch_out_of_range(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-oor");
    for off in [-1, -5, 6, 1000] {
        fetch(s, t, &format!("fe-oor/0@{off}"), &[("fe-oor", 0, off)], 1 << 20, 1 << 20);
    }
}

fn fetch_twice(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-twice");
    fetch(s, t, "fe-twice/0@0 and fe-twice/0@3", &[("fe-twice", 0, 0), ("fe-twice", 0, 3)], 1 << 20, 1 << 20);
}

fn fetch_max_bytes_zero(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-zero");
    fetch(s, t, "fe-zero/0@0", &[("fe-zero", 0, 0)], 0, 1 << 20);
    fetch(s, t, "fe-zero/0@0", &[("fe-zero", 0, 0)], 1 << 20, 0);
    fetch(s, t, "fe-zero/0@0", &[("fe-zero", 0, 0)], 10, 10);
}

fn fetch_unknown(s: &mut Side, t: &mut T) {
    ensure(s, "fe-one", 1);
    fetch(s, t, "fe-unknown/0@0 (never created)", &[("fe-unknown", 0, 0)], 1 << 20, 1 << 20);
    fetch(s, t, "fe-one/3@0 (topic has 1 partition)", &[("fe-one", 3, 0)], 1 << 20, 1 << 20);
}

fn fetch_by_id(s: &mut Side, t: &mut T) {
    seed(s, t, "fe-id");
    let mv = s.ver(ApiKey::Metadata, 12);
    let m = s.call(mv, &crate::topics::metadata_req(&["fe-id"], false)).expect("metadata");
    let id = m.topics[0].topic_id;
    for v in [13, 17] {
        if !s.both_serve(ApiKey::Fetch, v) {
            t.step(format!("Fetch v{v}"), "not served by both");
            continue;
        }
        for (label, tid) in [("fe-id's topic id", id), ("unknown topic id", uuid::Uuid::from_u128(0x1234_5678))] {
            let req = fetch_req(&[("", 0, 0)], 1 << 20, 1 << 20);
            let mut req = req;
            req.topics[0].topic_id = tid;
            let r = s.call(v, &req);
            t.step(format!("Fetch v{v} by {label} partition 0 @0"), reply(&r, fmt_fetch));
        }
    }
}

/// ListOffsets for one partition at `version` (0 = highest both serve, capped at 10).
pub fn list_offsets(s: &mut Side, t: &mut T, topic: &str, partition: i32, ts: i64, version: i16) {
    let v = if version == 0 { s.ver(ApiKey::ListOffsets, 10) } else { version };
    let req = lo_req(&[(topic, partition, ts)]);
    let r = s.call(v, &req);
    t.step(format!("ListOffsets v{v} {topic}/{partition} timestamp={ts}"), reply(&r, fmt_lo));
}

pub fn lo_req(parts: &[(&str, i32, i64)]) -> ListOffsetsRequest {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (tn, p, ts) in parts {
        let lp = ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(*ts);
        match topics.iter_mut().find(|x| x.name.as_str() == *tn) {
            Some(x) => x.partitions.push(lp),
            None => topics.push(ListOffsetsTopic::default().with_name(name(tn)).with_partitions(vec![lp])),
        }
    }
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics).with_timeout_ms(10_000)
}

fn fmt_lo(r: &kafka_protocol::messages::ListOffsetsResponse) -> String {
    let mut items = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            items.push(format!(
                "{}/{}: {} offset={} timestamp={} leader_epoch={}",
                t.name.as_str(),
                p.partition_index,
                e(p.error_code),
                p.offset,
                p.timestamp,
                p.leader_epoch
            ));
        }
    }
    format!("[{}]", items.join(", "))
}

fn list_offsets_specials(s: &mut Side, t: &mut T) {
    seed(s, t, "lo-spec");
    let (min, max) = s.common.get(&(ApiKey::ListOffsets as i16)).copied().expect("ListOffsets served by both");
    for v in min..=max {
        for ts in [-1, -2, -3, -4, -5, -6, -100, 1_700_000_000_001, 1_800_000_000_000] {
            list_offsets(s, t, "lo-spec", 0, ts, v);
        }
    }
}

fn list_offsets_twice(s: &mut Side, t: &mut T) {
    seed(s, t, "lo-twice");
    let (min, max) = s.common.get(&(ApiKey::ListOffsets as i16)).copied().expect("ListOffsets served by both");
    for v in min..=max {
        let r = s.call(v, &lo_req(&[("lo-twice", 0, -1), ("lo-twice", 0, -2)]));
        t.step(format!("ListOffsets v{v} lo-twice/0 (-1) and lo-twice/0 (-2)"), reply(&r, fmt_lo));
    }
}

fn list_offsets_unknown(s: &mut Side, t: &mut T) {
    ensure(s, "lo-one", 1);
    list_offsets(s, t, "lo-one", 4, -1, 0);
    list_offsets(s, t, "lo-unknown", 0, -1, 0);
}

fn delete_records(s: &mut Side, t: &mut T) {
    seed(s, t, "dr-bounds");
    let v = s.ver(ApiKey::DeleteRecords, 2);
    for (tn, p, off) in [
        ("dr-bounds", 0, 2),
        ("dr-bounds", 0, 10),
        ("dr-bounds", 0, 1),
        ("dr-bounds", 0, -1),
        ("dr-bounds", 3, 0),
        ("dr-unknown", 0, 0),
    ] {
        let req = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(tn))
                .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(p).with_offset(off)]),
        ]);
        let r = s.call(v, &req);
        let ans = reply(&r, |r| {
            let items: Vec<String> = r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        format!(
                            "{}/{}: {} low={}",
                            t.name.as_str(),
                            p.partition_index,
                            e(p.error_code),
                            p.low_watermark
                        )
                    })
                })
                .collect();
            format!("[{}]", items.join(", "))
        });
        t.step(format!("DeleteRecords v{v} {tn}/{p} before {off}"), ans);
    }
    fetch(s, t, "dr-bounds/0@0 (below log start)", &[("dr-bounds", 0, 0)], 1 << 20, 1 << 20);
    list_offsets(s, t, "dr-bounds", 0, -2, 0);
}
