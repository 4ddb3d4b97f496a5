//! The group coordinator: Kafka's classic consumer-group protocol, sharded over cores.
//!
//! The coordinator of group `g` is the core owning partition `abs(javaHash(g)) % N` of the
//! internal topic `__consumer_offsets` (Kafka's formula, so tools computing it agree). Each core
//! runs one [`GroupCoordinator`] for the groups of its partitions; group state and committed
//! offsets are records in those partitions, in Kafka's own key/value schemas (`records.rs`),
//! replayed on start before the groups are served.
//!
//! - `state.rs`: a group's members and state machine (pure, synchronous).
//! - `coordinator.rs`: ownership, loading, persistence, timers.
//! - `membership.rs`: JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//! - `offsets.rs`: offset commit/fetch/delete, group listing, description and deletion.
//! - `cursors.rs`: committed offsets mirrored into the partitions' durable cursors.

pub mod coordinator;
pub mod cursors;
pub mod membership;
pub mod offsets;
#[cfg(test)]
mod protocol_tests;
pub mod records;
pub mod state;

use std::collections::BTreeMap;

use thiserror::Error;
use uuid::Uuid;

use crate::config::Config;
use crate::meta::assignment::{self, PartitionOwner};
use crate::meta::catalog::{Catalog, TopicEntry};
use crate::meta::store::StoreOp;
use crate::meta::topic_name::TopicName;

pub use coordinator::GroupCoordinator;

/// The name Kafka clients use for the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Why a group request failed; mapped to Kafka error codes at the handler edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GroupError {
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    #[error("the group's partition is still loading")]
    LoadInProgress,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("a member id is required; rejoin with the one given")]
    MemberIdRequired,
    #[error("the static member's instance id is used by a newer member")]
    FencedInstanceId,
    #[error("session timeout outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset metadata is too large")]
    OffsetMetadataTooLarge,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("the commit is too large for the offsets topic")]
    InvalidCommitOffsetSize,
    #[error("the group's state could not be written")]
    StoreFailed,
}

/// Java's `String.hashCode`: 31-polynomial over UTF-16 code units, wrapping in i32.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's `partitionFor(groupId)`: `Utils.abs(hash) % partitions` (abs(MIN_VALUE) = 0).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The Pulsar topic holding `__consumer_offsets`.
pub fn offsets_topic_name(config: &Config) -> TopicName {
    TopicName {
        tenant: config.groups.metadata_tenant.clone(),
        namespace: config.groups.metadata_namespace.clone(),
        local: OFFSETS_TOPIC.to_string(),
    }
}

/// Adds `__consumer_offsets` (compacted, partitions spread over `brokers` like any topic) to a
/// catalog that lacks it. Returns the store ops that persist it (empty if it exists).
pub fn ensure_offsets_topic(catalog: &mut Catalog, config: &Config, brokers: &[u32]) -> Vec<StoreOp> {
    let name = offsets_topic_name(config);
    if catalog.get(&name).is_some() {
        return Vec::new();
    }
    let count = config.groups.offsets_topic_partitions.max(1) as usize;
    let start = crate::meta::controller::hash(&name.to_string()) as usize;
    let owners = assignment::place_on(brokers, catalog.owners(), std::iter::empty(), count, start);
    let topic = TopicEntry {
        name,
        id: Uuid::new_v4(),
        partitions: owners.into_iter().map(PartitionOwner::new).collect(),
        // Time and size retention would drop live offsets: the coordinator compacts instead.
        configs: BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
        ]),
    };
    let ops = Catalog::put_ops(&topic);
    catalog.insert(topic);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values from Java's "...".hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
        assert!(partition_for("polygenelubricants", 50) >= 0);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
