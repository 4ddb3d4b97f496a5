//! The admin and client APIs an operator's tools reach for besides configs:
//! OffsetForLeaderEpoch, DescribeProducers, ListConfigResources.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeProducersRequest, ListConfigResourcesRequest, OffsetForLeaderEpochRequest,
};
use kafka_protocol::records::Compression;

use crate::common::{batch, name};
use crate::norm::{e, reply};
use crate::peers::Side;
use crate::produce::{batch_with, init_pid, produce};
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("offset_for_leader_epoch", offset_for_leader_epoch),
    ("describe_producers", describe_producers),
    ("list_config_resources", list_config_resources),
];

/// (topic, partition, current leader epoch, requested epoch)
fn ole(s: &mut Side, t: &mut T, version: i16, replica: i32, parts: &[(&str, i32, i32, i32)]) {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for (tn, p, current, epoch) in parts {
        let lp = OffsetForLeaderPartition::default()
            .with_partition(*p)
            .with_current_leader_epoch(*current)
            .with_leader_epoch(*epoch);
        match topics.iter_mut().find(|x| x.topic.as_str() == *tn) {
            Some(x) => x.partitions.push(lp),
            None => topics.push(OffsetForLeaderTopic::default().with_topic(name(tn)).with_partitions(vec![lp])),
        }
    }
    let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(replica)).with_topics(topics);
    let r = s.call(version, &req);
    t.step(
        format!("OffsetForLeaderEpoch v{version} replica={replica} {parts:?}"),
        reply(&r, |r| {
            let items: Vec<String> = r
                .topics
                .iter()
                .flat_map(|tr| {
                    tr.partitions.iter().map(move |p| {
                        format!(
                            "{}/{}: {} epoch={} end={}",
                            tr.topic.as_str(),
                            p.partition,
                            e(p.error_code),
                            p.leader_epoch,
                            p.end_offset
                        )
                    })
                })
                .collect();
            format!("[{}]", items.join(", "))
        }),
    );
}

fn offset_for_leader_epoch(s: &mut Side, t: &mut T) {
    ensure(s, "ole", 2);
    produce(s, t, "3 records", &[("ole", 0, Some(batch(3, Compression::None)))]);
    for v in 2..=4 {
        if !s.both_serve(ApiKey::OffsetForLeaderEpoch, v) {
            continue;
        }
        let replica = if v >= 3 { -1 } else { 0 };
        ole(s, t, v, replica, &[("ole", 0, -1, 0), ("ole", 1, -1, 0)]);
        ole(s, t, v, replica, &[("ole", 0, 0, 0), ("ole", 0, -1, -1), ("ole", 0, -1, 5)]);
        ole(s, t, v, replica, &[("ole", 0, 1, 0), ("ole", 0, 7, 3)]);
        ole(s, t, v, replica, &[("ole", 9, -1, 0), ("ole-missing", 0, -1, 0)]);
    }
    let v = s.ver(ApiKey::OffsetForLeaderEpoch, 4);
    ole(s, t, v, -2, &[("ole", 0, -1, 0)]);
}

fn describe_producers(s: &mut Side, t: &mut T) {
    ensure(s, "dp", 2);
    let (pid, epoch) = init_pid(s, t);
    produce(s, t, "idempotent seq 0..2", &[("dp", 0, Some(batch_with(3, pid, epoch, 0, false, false, 2)))]);
    produce(s, t, "idempotent seq 3..4", &[("dp", 0, Some(batch_with(2, pid, epoch, 3, false, false, 2)))]);
    produce(s, t, "plain", &[("dp", 1, Some(batch(2, Compression::None)))]);
    let v = s.ver(ApiKey::DescribeProducers, 0);
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default().with_name(name("dp")).with_partition_indexes(vec![0, 1, 4]),
        TopicRequest::default().with_name(name("dp-missing")).with_partition_indexes(vec![0]),
    ]);
    let r = s.call(v, &req);
    t.step(
        format!("DescribeProducers v{v} dp/0,1,4 dp-missing/0"),
        reply(&r, |r| {
            let items: Vec<String> = r
                .topics
                .iter()
                .flat_map(|tr| {
                    tr.partitions.iter().map(move |p| {
                        let producers: Vec<String> = p
                            .active_producers
                            .iter()
                            .map(|x| {
                                format!(
                                    "{} epoch={} last_seq={} last_ts={} coordinator_epoch={} txn_start={}",
                                    crate::norm::pid(x.producer_id.0),
                                    x.producer_epoch,
                                    x.last_sequence,
                                    x.last_timestamp,
                                    x.coordinator_epoch,
                                    x.current_txn_start_offset
                                )
                            })
                            .collect();
                        format!(
                            "{}/{}: {} {:?} [{}]",
                            tr.name.as_str(),
                            p.partition_index,
                            e(p.error_code),
                            p.error_message.as_ref().map(|m| m.to_string()),
                            producers.join("; ")
                        )
                    })
                })
                .collect();
            format!("[{}]", items.join(", "))
        }),
    );
}

fn list_config_resources(s: &mut Side, t: &mut T) {
    ensure(s, "lcr-topic", 1);
    let types: &[&[i8]] = &[&[], &[2], &[4, 8], &[8], &[16], &[32], &[2, 2], &[64], &[2, 3], &[0], &[1]];
    for v in 0..=1 {
        if !s.both_serve(ApiKey::ListConfigResources, v) {
            continue;
        }
        for ty in types {
            if v == 0 && !ty.is_empty() {
                continue;
            }
            let r = s.call(v, &ListConfigResourcesRequest::default().with_resource_types(ty.to_vec()));
            let node = |n: &str| n.parse::<i32>().map(|id| s.node(id)).unwrap_or_else(|_| n.to_string());
            t.step(
                format!("ListConfigResources v{v} types={ty:?}"),
                reply(&r, |r| {
                    // Topics other cases made differ in timing only; this case's own topic and
                    // every non-topic resource are compared, in the order given.
                    let items: Vec<String> = r
                        .config_resources
                        .iter()
                        .filter(|c| c.resource_type != 2 || c.resource_name.starts_with("lcr-"))
                        .map(|c| format!("{}:{}", c.resource_type, node(c.resource_name.as_str())))
                        .collect();
                    let topics = r.config_resources.iter().filter(|c| c.resource_type == 2).count();
                    format!("{} [{}] topics>1={}", e(r.error_code), items.join(", "), topics > 1)
                }),
            );
        }
    }
}
