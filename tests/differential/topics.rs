//! CreateTopics, DeleteTopics and Metadata.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, MetadataRequest, MetadataResponse,
};

use crate::common::name;
use crate::norm::{e, id_set, ops, reply};
use crate::peers::{Side, wait_until};
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("create_topics.valid", create_valid),
    ("create_topics.invalid_names", create_invalid_names),
    ("create_topics.collision_x_a_after_x.a", create_collision),
    ("create_topics.duplicate_name_in_request", create_duplicate),
    ("create_topics.bad_partition_counts", create_bad_partitions),
    ("create_topics.replication_factor_above_brokers", create_rf_too_big),
    ("create_topics.validate_only", create_validate_only),
    ("create_topics.already_exists", create_exists),
    ("delete_topics.unknown_and_existing", delete_topics),
    ("metadata.unknown_topic_auto_create_off", metadata_auto_off),
    ("metadata.unknown_topic_auto_create_on", metadata_auto_on),
    ("metadata.duplicate_topics", metadata_duplicates),
    ("metadata.authorized_operations", metadata_authorized_ops),
];

pub fn topic(n: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default().with_name(name(n)).with_num_partitions(partitions).with_replication_factor(rf)
}

pub fn create_req(topics: Vec<CreatableTopic>, validate_only: bool) -> CreateTopicsRequest {
    CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(15_000).with_validate_only(validate_only)
}

fn fmt_create(r: &CreateTopicsResponse) -> String {
    let items: Vec<String> = r
        .topics
        .iter()
        .map(|t| {
            format!(
                "{}: {} partitions={} rf={}",
                t.name.as_str(),
                e(t.error_code),
                t.num_partitions,
                t.replication_factor
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Sends CreateTopics and records the answer.
pub fn create(s: &mut Side, t: &mut T, topics: Vec<CreatableTopic>, validate_only: bool) {
    let v = s.ver(ApiKey::CreateTopics, 7);
    let names: Vec<String> = topics
        .iter()
        .map(|c| format!("{}(p={},rf={})", c.name.as_str(), c.num_partitions, c.replication_factor))
        .collect();
    let r = s.call(v, &create_req(topics, validate_only));
    t.step(format!("CreateTopics v{v} {names:?} validate_only={validate_only}"), reply(&r, fmt_create));
}

pub fn metadata_req(topics: &[&str], auto: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(topics.iter().map(|n| MetadataRequestTopic::default().with_name(Some(name(n)))).collect()))
        .with_allow_auto_topic_creation(auto)
}

/// Metadata topics, sorted by name: error, internal flag, partitions with leader (normalised),
/// replicas, isr and leader epoch; and the authorized operations when requested.
pub fn fmt_metadata(s: &Side, m: &MetadataResponse, version: i16) -> String {
    let mut topics: Vec<String> = m
        .topics
        .iter()
        .map(|t| {
            let mut parts: Vec<_> = t.partitions.iter().collect();
            parts.sort_by_key(|p| p.partition_index);
            let parts: Vec<String> = parts
                .iter()
                .map(|p| {
                    let nodes = |v: &[kafka_protocol::messages::BrokerId]| -> Vec<String> {
                        v.iter().map(|b| s.node(b.0)).collect()
                    };
                    format!(
                        "p{} {} leader={} epoch={} replicas={:?} isr={:?} offline={:?}",
                        p.partition_index,
                        e(p.error_code),
                        s.node(p.leader_id.0),
                        p.leader_epoch,
                        nodes(&p.replica_nodes),
                        nodes(&p.isr_nodes),
                        nodes(&p.offline_replicas)
                    )
                })
                .collect();
            let ops_s =
                if version >= 8 { format!(" ops={}", ops(t.topic_authorized_operations)) } else { String::new() };
            format!(
                "{}: {} internal={} topic_id={} [{}]{ops_s}",
                t.name.as_ref().map(|n| n.as_str()).unwrap_or("<null>"),
                e(t.error_code),
                t.is_internal,
                if version >= 10 { id_set(t.topic_id) } else { "n/a" },
                parts.join("; ")
            )
        })
        .collect();
    topics.sort();
    let brokers: Vec<String> = m.brokers.iter().map(|b| s.node(b.node_id.0)).collect();
    let cluster_ops = if (8..=10).contains(&version) {
        format!(" cluster_ops={}", ops(m.cluster_authorized_operations))
    } else {
        String::new()
    };
    format!("brokers={brokers:?} controller={} topics=[{}]{cluster_ops}", s.node(m.controller_id.0), topics.join(" | "))
}

pub fn metadata(s: &mut Side, t: &mut T, topics: &[&str], auto: bool) {
    let v = s.ver(ApiKey::Metadata, 12);
    let r = s.call(v, &metadata_req(topics, auto));
    let ans = reply(&r, |m| fmt_metadata(s, m, v));
    t.step(format!("Metadata v{v} {topics:?} allow_auto_topic_creation={auto}"), ans);
}

/// Waits (bounded, not recorded) until every partition of `topic` has a leader.
pub fn wait_ready(s: &mut Side, topic: &str) {
    let v = s.ver(ApiKey::Metadata, 12);
    let mut partitions = 0;
    wait_until(&format!("{} topic {topic} ready", s.name), || match s.call(v, &metadata_req(&[topic], false)) {
        Ok(m) => m.topics.iter().all(|t| {
            partitions = t.partitions.len() as i32;
            t.error_code == 0
                && !t.partitions.is_empty()
                && t.partitions.iter().all(|p| p.error_code == 0 && p.leader_id.0 >= 0)
        }),
        Err(_) => false,
    });
    // Kafka's metadata names a leader a moment before that broker serves the partition (it
    // answers NOT_LEADER_OR_FOLLOWER meanwhile): wait until every partition answers ListOffsets.
    let lv = s.ver(ApiKey::ListOffsets, 10);
    let parts: Vec<(&str, i32, i64)> = (0..partitions).map(|p| (topic, p, -1)).collect();
    let req = crate::fetch::lo_req(&parts);
    wait_until(&format!("{} topic {topic} served", s.name), || match s.call(lv, &req) {
        Ok(r) => r.topics.iter().all(|t| t.partitions.iter().all(|p| p.error_code == 0)),
        Err(_) => false,
    });
}

/// Creates a topic (not recorded) and waits until it is ready; fails the case if it cannot.
pub fn ensure(s: &mut Side, topic_name: &str, partitions: i32) {
    let v = s.ver(ApiKey::CreateTopics, 7);
    let r = s.call(v, &create_req(vec![topic(topic_name, partitions, 1)], false)).expect("CreateTopics");
    assert_eq!(r.topics[0].error_code, 0, "{}: creating {topic_name}", s.name);
    wait_ready(s, topic_name);
}

fn create_valid(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("ct-valid", 3, 1)], false);
    wait_ready(s, "ct-valid");
    metadata(s, t, &["ct-valid"], false);
    create(s, t, vec![topic("ct-default", -1, -1)], false);
}

fn create_invalid_names(s: &mut Side, t: &mut T) {
    let long = "l".repeat(250);
    for n in ["", ".", "..", "bad name", "bad/slash", "bad:colon", "ümlaut", long.as_str()] {
        create(s, t, vec![topic(n, 1, 1)], false);
    }
    // 249 characters is the longest valid name.
    create(s, t, vec![topic(&"m".repeat(249), 1, 1)], false);
}

fn create_collision(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("x.a", 1, 1)], false);
    create(s, t, vec![topic("x_a", 1, 1)], false);
    create(s, t, vec![topic("y_b", 1, 1)], false);
    create(s, t, vec![topic("y.b", 1, 1)], false);
}

fn create_duplicate(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("ct-dup", 1, 1), topic("ct-dup", 2, 1)], false);
    metadata(s, t, &["ct-dup"], false);
}

fn create_bad_partitions(s: &mut Side, t: &mut T) {
    for (n, p, rf) in [("ct-p0", 0, 1), ("ct-pneg", -2, 1), ("ct-rf0", 1, 0), ("ct-rfneg", 1, -2)] {
        create(s, t, vec![topic(n, p, rf)], false);
    }
}

fn create_rf_too_big(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("ct-rf3", 1, 3)], false);
}

fn create_validate_only(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("ct-validate", 2, 1)], true);
    create(s, t, vec![topic("ct-validate-bad", 0, 1)], true);
    metadata(s, t, &["ct-validate"], false);
}

fn create_exists(s: &mut Side, t: &mut T) {
    create(s, t, vec![topic("ct-exists", 1, 1)], false);
    create(s, t, vec![topic("ct-exists", 1, 1)], false);
    create(s, t, vec![topic("ct-exists", 1, 1)], true);
}

fn delete_topics(s: &mut Side, t: &mut T) {
    ensure(s, "dt-existing", 1);
    let v = s.ver(ApiKey::DeleteTopics, 6);
    for n in ["dt-unknown", "dt-existing", "dt-existing"] {
        let req = DeleteTopicsRequest::default()
            .with_topics(vec![DeleteTopicState::default().with_name(Some(name(n)))])
            .with_topic_names(vec![name(n)])
            .with_timeout_ms(15_000);
        let r = s.call(v, &req);
        let ans = reply(&r, |r| {
            let items: Vec<String> = r
                .responses
                .iter()
                .map(|x| format!("{}: {}", x.name.as_ref().map(|n| n.as_str()).unwrap_or("<null>"), e(x.error_code)))
                .collect();
            format!("{items:?}")
        });
        t.step(format!("DeleteTopics v{v} [{n}]"), ans);
    }
}

fn metadata_auto_off(s: &mut Side, t: &mut T) {
    metadata(s, t, &["md-auto-off"], false);
    metadata(s, t, &["md-auto-off"], false);
}

fn metadata_auto_on(s: &mut Side, t: &mut T) {
    let v = s.ver(ApiKey::Metadata, 12);
    let r = s.call(v, &metadata_req(&["md-auto-on"], true));
    // The first answer: the topic error code only (Kafka creates it asynchronously).
    let first = reply(&r, |m| m.topics.iter().map(|t| e(t.error_code)).collect::<Vec<_>>().join(","));
    t.step(format!("Metadata v{v} [md-auto-on] allow_auto_topic_creation=true (topic error)"), first);
    wait_ready(s, "md-auto-on");
    metadata(s, t, &["md-auto-on"], false);
}

fn metadata_duplicates(s: &mut Side, t: &mut T) {
    ensure(s, "md-dup", 1);
    metadata(s, t, &["md-dup", "md-dup"], false);
    metadata(s, t, &["md-dup-unknown", "md-dup-unknown"], false);
}

fn metadata_authorized_ops(s: &mut Side, t: &mut T) {
    ensure(s, "md-ops", 1);
    for v in [8, 10, 11, 12] {
        if !s.both_serve(ApiKey::Metadata, v) {
            t.step(format!("Metadata v{v}"), "not served by both");
            continue;
        }
        let req = metadata_req(&["md-ops"], false)
            .with_include_cluster_authorized_operations(v <= 10)
            .with_include_topic_authorized_operations(true);
        let r = s.call(v, &req);
        let ans = reply(&r, |m| fmt_metadata(s, m, v));
        t.step(format!("Metadata v{v} [md-ops] include_cluster_ops={} include_topic_ops=true", v <= 10), ans);
        let r = s.call(v, &metadata_req(&["md-ops"], false));
        let ans = reply(&r, |m| fmt_metadata(s, m, v));
        t.step(format!("Metadata v{v} [md-ops] include_*_ops=false"), ans);
    }
}
