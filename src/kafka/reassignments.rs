//! Partition reassignment and leader election (kafka-reassign-partitions.sh,
//! kafka-leader-election.sh), mapped onto kopd's ownership: a partition has one replica as
//! Kafka sees it, its owner; BookKeeper keeps the copies. Reassigning it to a broker moves its
//! ownership there at once (nothing is copied, so nothing is ever "in progress") and pins it
//! against load balancing; its owner is always the preferred leader, so a preferred election
//! has nothing to do, and an unclean one nothing to choose from. DescribeLogDirs, which the
//! reassignment tool reads first, lists the partitions each core serves.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::KafkaError;
use super::topics::kname;
use crate::broker::Broker;
use crate::config::StorageKind;
use crate::meta::controller::AdminOp;

fn text(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

pub async fn alter(
    broker: &Broker,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let cluster = broker.config.cluster.is_some();
    // (topic index, partition index) of each op sent to the controller, in order.
    let mut ops = Vec::new();
    let mut at = Vec::new();
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (t, topic) in req.topics.iter().enumerate() {
        let mut partitions = Vec::new();
        let name = broker.topic_name(topic.name.as_str());
        let entry = name.as_ref().ok().and_then(|n| broker.catalog().get(n).cloned());
        for (p, part) in topic.partitions.iter().enumerate() {
            let resp = ReassignablePartitionResponse::default().with_partition_index(part.partition_index);
            let owner = entry
                .as_ref()
                .and_then(|e| usize::try_from(part.partition_index).ok().and_then(|i| e.partitions.get(i)));
            let error = match (&name, owner, &part.replicas) {
                (Err(_), ..) | (_, None, _) => {
                    Some((ResponseError::UnknownTopicOrPartition, "this server does not host this topic-partition"))
                }
                // A cancellation: moves finish as they are made, so none is ever pending.
                (_, Some(_), None) => {
                    Some((ResponseError::NoReassignmentInProgress, "no reassignment of this partition is in progress"))
                }
                (_, Some(_), Some(r)) if r.len() != 1 => Some((
                    ResponseError::InvalidReplicationFactor,
                    "kopd partitions have one replica (their owner); BookKeeper replicates the data",
                )),
                (_, Some(o), Some(r)) if !cluster && r[0].0 != o.broker as i32 => Some((
                    ResponseError::InvalidReplicaAssignment,
                    "a single kopd node moves partitions between its cores only at a restart with another `cores`",
                )),
                (_, Some(_), Some(r)) if r[0].0 < 0 => {
                    Some((ResponseError::InvalidReplicaAssignment, "broker ids are not negative"))
                }
                (Ok(n), Some(_), Some(r)) => {
                    ops.push(AdminOp::Reassign {
                        name: n.clone(),
                        partition: part.partition_index,
                        broker: r[0].0 as u32,
                    });
                    at.push((t, p));
                    None
                }
            };
            partitions.push(match error {
                Some((e, m)) => resp.with_error_code(e.code()).with_error_message(text(m)),
                None => resp,
            });
        }
        responses.push(ReassignableTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions));
    }
    if !ops.is_empty() {
        for ((t, p), result) in at.into_iter().zip(broker.controller.submit(ops).await) {
            if let Err(e) = result {
                let k = KafkaError::from(&e);
                let resp = &mut responses[t].partitions[p];
                resp.error_code = k.code;
                resp.error_message = k.message;
            }
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(version >= 1 && req.allow_replication_factor_change)
        .with_responses(responses)
}

/// Nothing is ever in progress: a move is done when it is answered.
pub fn list(_req: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default()
}

pub fn elect(broker: &Broker, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let catalog = broker.catalog();
    let view = broker.cluster();
    let Some(requested) = req.topic_partitions else {
        // Every partition, as Kafka does: only those that needed an election are listed, so
        // here only those without a live owner (they get one when the leader moves them).
        let mut results = Vec::new();
        for topic in catalog.topics() {
            let offline: Vec<PartitionResult> = topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, o)| !view.is_live(o.broker))
                .map(|(i, _)| offline(i as i32))
                .collect();
            if !offline.is_empty() {
                results.push(
                    ReplicaElectionResult::default()
                        .with_topic(kname(&broker.kafka_name(&topic.name)))
                        .with_partition_result(offline),
                );
            }
        }
        return ElectLeadersResponse::default().with_replica_election_results(results);
    };
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for t in requested {
        by_topic.entry(t.topic.to_string()).or_default().extend(t.partitions);
    }
    let results = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let entry = broker.topic_name(&name).ok().and_then(|n| catalog.get(&n).cloned());
            let results = partitions
                .into_iter()
                .map(|p| {
                    let owner = entry.as_ref().and_then(|e| usize::try_from(p).ok().and_then(|i| e.partitions.get(i)));
                    match owner {
                        None => PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(text("this server does not host this topic-partition")),
                        Some(o) if view.is_live(o.broker) => PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(ResponseError::ElectionNotNeeded.code())
                            .with_error_message(text("the partition's owner is its preferred leader")),
                        Some(_) => offline(p),
                    }
                })
                .collect();
            ReplicaElectionResult::default().with_topic(kname(&name)).with_partition_result(results)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// A partition whose owner is gone: the cluster's leader gives it another one shortly.
fn offline(p: i32) -> PartitionResult {
    PartitionResult::default()
        .with_partition_id(p)
        .with_error_code(ResponseError::EligibleLeadersNotAvailable.code())
        .with_error_message(text("the partition's owner is offline; it moves to a live broker shortly"))
}

/// DescribeLogDirs, asked of each broker (a core): one "log dir", the core's ledger directory,
/// with its filesystem's size and free space and every partition the core owns and serves
/// with the bytes its ledgers hold.
pub async fn describe_log_dirs(broker: &Broker, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in ts {
            m.entry(t.topic.to_string()).or_default().extend(t.partitions);
        }
        m
    });
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    // Every partition this core serves, opened if no request has touched it yet (as Kafka
    // lists a partition as soon as it is created).
    let catalog = broker.catalog();
    for topic in catalog.topics() {
        let name = broker.kafka_name(&topic.name);
        for (p, owner) in topic.partitions.iter().enumerate() {
            let p = p as i32;
            let asked = wanted.as_ref().is_none_or(|w| w.get(&name).is_some_and(|ps| ps.contains(&p)));
            if !asked || !broker.serves(&topic.name, p, owner) {
                continue;
            }
            let Ok(log) = broker.logs.get(topic, p).await else { continue };
            if log.is_fenced() {
                continue;
            }
            topics.entry(name.clone()).or_default().push(
                DescribeLogDirsPartition::default().with_partition_index(p).with_partition_size(log.stored_bytes()),
            );
        }
    }
    // The core's own ledger directory; on BookKeeper the bookies' disks hold the data and
    // their space is not known here (Kafka's "not reported", -1).
    let (log_dir, space) = match broker.config.storage {
        StorageKind::Local => {
            let dir = crate::storage::local::core_dir(&broker.config.data_dir.join("ledgers"), broker.core);
            let space = crate::storage::local::disk_space(&dir);
            (dir.display().to_string(), space)
        }
        StorageKind::BookKeeper => ("bookkeeper".to_string(), None),
    };
    let (total, usable) = space.map_or((-1, -1), |(t, u)| (t as i64, u as i64));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir))
        .with_total_bytes(total)
        .with_usable_bytes(usable)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, mut ps)| {
                    ps.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic::default().with_name(kname(&name)).with_partitions(ps)
                })
                .collect(),
        );
    DescribeLogDirsResponse::default().with_results(vec![result])
}
