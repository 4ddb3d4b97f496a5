//! Finding the partition a data-path request names, and refusing it where this core is not
//! its owner (clients then refresh metadata and go to the owner).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use crate::broker::Broker;
use crate::log::managed_ledger::LogError;
use crate::meta::assignment::PartitionOwner;
use crate::meta::catalog::{Catalog, TopicEntry};

/// Resolves a topic named by name (older versions) or by id (newer ones).
pub fn topic(
    broker: &Broker,
    catalog: &Catalog,
    name: Option<&str>,
    id: Uuid,
) -> Result<Arc<TopicEntry>, ResponseError> {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            let name = broker.topic_name(n).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
            catalog.get(&name).cloned().ok_or(ResponseError::UnknownTopicOrPartition)
        }
        None => catalog.get_by_id(&id).cloned().ok_or(ResponseError::UnknownTopicId),
    }
}

/// The partition's owner if it is this core.
pub fn owned(broker: &Broker, topic: &TopicEntry, partition: i32) -> Result<PartitionOwner, ResponseError> {
    let owner = usize::try_from(partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if !broker.serves(&topic.name, partition, owner) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(*owner)
}

/// `owned`, except that a partition just given to this core is waited for (at most `wait`;
/// zero outside a cluster) rather than refused: a producer sent here by another node's newer
/// Metadata would otherwise see its first batches refused and later ones taken, a sequence
/// gap it cannot close. "Just given" covers two windows: this node's catalog replica names
/// this core while the node is still taking the lease, or the replica has not yet followed
/// the move another node's controller made (so it is compared with the store first).
pub async fn owned_soon(
    broker: &Broker,
    topic: &TopicEntry,
    partition: i32,
    wait: std::time::Duration,
) -> Result<PartitionOwner, ResponseError> {
    match owned(broker, topic, partition) {
        // Unknown: a partition added through another node a moment ago.
        Err(ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition) if !wait.is_zero() => {}
        r => return r,
    }
    let deadline = std::time::Instant::now() + wait;
    let names_here = |t: &TopicEntry| {
        usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)).is_some_and(|o| o.broker as i32 == broker.id)
    };
    // The catalog as this core has it now, if the topic is still the same one.
    let current = || broker.catalog().get(&topic.name).filter(|t| t.id == topic.id).cloned();
    if !names_here(topic) {
        crate::runtime::timeout(wait, broker.controller.catch_up()).await;
        match current() {
            Some(t) if names_here(&t) => {}
            Some(t) => return Err(owned(broker, &t, partition).err().unwrap_or(ResponseError::NotLeaderOrFollower)),
            None => return Err(ResponseError::NotLeaderOrFollower),
        }
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    broker.logs.wait_leased(&topic.name, partition, left).await;
    // The catalog may have moved on meanwhile.
    match current() {
        Some(t) => owned(broker, &t, partition),
        None => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// Kafka's answer to a client's idea of the leader epoch (-1: the client does not say).
pub fn check_leader_epoch(owner: &PartitionOwner, client_epoch: i32) -> Result<(), ResponseError> {
    match client_epoch {
        -1 => Ok(()),
        e if e > owner.epoch => Err(ResponseError::UnknownLeaderEpoch),
        e if e < owner.epoch => Err(ResponseError::FencedLeaderEpoch),
        _ => Ok(()),
    }
}

pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        LogError::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        LogError::OffsetOutOfRange(_) => ResponseError::OffsetOutOfRange,
        LogError::Storage(crate::storage::StorageError::Backpressure) => ResponseError::RequestTimedOut,
        LogError::Storage(_) | LogError::Failed(_) => ResponseError::KafkaStorageError,
        LogError::Metadata(_) => ResponseError::KafkaStorageError,
        LogError::Fenced => ResponseError::NotLeaderOrFollower,
    }
}

/// Keeps, of every partition a request names more than once, only the last entry (Kafka keys
/// a request's partitions by topic and index, so later entries replace earlier ones), and
/// drops topics left without partitions. `parts` gives a topic's partition list, `key` a
/// partition's identity within the request.
pub fn keep_last_of_each<T, P, K: Eq + std::hash::Hash>(
    topics: &mut Vec<T>,
    parts: impl Fn(&mut T) -> &mut Vec<P>,
    key: impl Fn(&T, &P) -> K,
) {
    if topics.len() == 1 && parts(&mut topics[0]).len() <= 1 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for t in topics.iter_mut().rev() {
        let mut ps = std::mem::take(parts(t));
        ps.reverse();
        ps.retain(|p| seen.insert(key(t, p)));
        ps.reverse();
        *parts(t) = ps;
    }
    topics.retain_mut(|t| !parts(t).is_empty());
}
