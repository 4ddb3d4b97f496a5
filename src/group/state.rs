//! One classic group: members, generation, the state machine. Pure and synchronous; the
//! coordinator drives it and persists what it decides.
//!
//! States as in Kafka: Empty -> PreparingRebalance (members (re)join) -> CompletingRebalance
//! (join answered; waiting for the leader's assignment) -> Stable; Dead once deleted.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;

use super::GroupError;
use super::records::{GroupValue, MemberValue, OffsetValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka's tools print and ListGroups filters on.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member's id, instance id and metadata for the protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(e: GroupError, member_id: &str) -> Self {
        JoinOutcome {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    /// A JoinGroup of this member waits for the rebalance to complete.
    pub awaiting_join: bool,
    pub join_result: Option<JoinOutcome>,
    /// A SyncGroup of this member waits for the leader's assignment.
    pub awaiting_sync: bool,
    pub sync_result: Option<Result<Bytes, GroupError>>,
    /// Sent SyncGroup in the current generation.
    pub synced: bool,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    pub fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

pub struct Group {
    pub id: String,
    /// Its `__consumer_offsets` partition.
    pub partition: i32,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id of static members.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire unused.
    pub pending: HashMap<String, Instant>,
    pub offsets: HashMap<(String, i32), OffsetValue>,
    /// When the current join phase ends at the latest.
    pub rebalance_deadline: Option<Instant>,
    /// A new group's first join phase: waits this long for more members (and may extend).
    pub initial_delay: Option<InitialDelay>,
    /// When CompletingRebalance gives up on members that never sent SyncGroup.
    pub sync_deadline: Option<Instant>,
    /// Wall-clock ms of the last state change (Kafka's currentStateTimestamp).
    pub state_timestamp: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct InitialDelay {
    pub until: Instant,
    pub remaining_ms: u64,
    pub members_at_start: usize,
}

impl Group {
    pub fn new(id: &str, partition: i32, now_ms: i64) -> Self {
        Group {
            id: id.to_string(),
            partition,
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            state_timestamp: now_ms,
        }
    }

    pub fn set_state(&mut self, s: GroupState, now_ms: i64) {
        self.state = s;
        self.state_timestamp = now_ms;
    }

    /// Protocols every member supports, in the first member's order.
    fn candidates(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else { return Vec::new() };
        let mut c: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            c.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        c
    }

    /// Whether a joining member's protocols fit the group (Kafka's supportsProtocols).
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let c = self.candidates();
        protocols.iter().any(|(n, _)| c.contains(n))
    }

    /// Kafka's selectProtocol: each member votes for its most preferred candidate; most votes
    /// wins, ties to the candidate the first member prefers.
    pub fn select_protocol(&self) -> Option<String> {
        let c = self.candidates();
        let mut votes: Vec<usize> = vec![0; c.len()];
        for m in self.members.values() {
            if let Some(i) = m.protocols.iter().find_map(|(n, _)| c.iter().position(|x| x == n)) {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        c.into_iter().zip(votes).find(|(_, v)| *v == best).map(|(n, _)| n)
    }

    /// Every known member has a JoinGroup waiting and no handed-out member id is outstanding.
    pub fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join)
    }

    pub fn max_rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0)
    }

    /// Removes a member (leave, expiry, replacement). Does not change state.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(i) = &m.instance_id
            && self.static_members.get(i).is_some_and(|id| id == member_id)
        {
            self.static_members.remove(i);
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(m)
    }

    /// The outcome of a completed join phase for one member.
    pub fn join_outcome(&self, member_id: &str, version_skip: bool) -> JoinOutcome {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if is_leader {
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: is_leader && version_skip,
        }
    }

    /// The group-metadata record value for the current state (Kafka's GroupMetadataValue).
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds membership from a replayed record: a group with members is Stable at its
    /// generation (members keep heartbeating as before), one without is Empty.
    pub fn apply_value(&mut self, v: GroupValue, now: Instant) {
        self.protocol_type = Some(v.protocol_type).filter(|s| !s.is_empty());
        self.generation = v.generation;
        self.protocol = v.protocol.clone();
        self.leader = v.leader;
        self.state_timestamp = v.state_timestamp;
        self.members.clear();
        self.static_members.clear();
        let protocol = v.protocol.unwrap_or_default();
        for m in v.members {
            if let Some(i) = &m.instance_id {
                self.static_members.insert(i.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout,
                    rebalance_timeout_ms: m.rebalance_timeout,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    last_heartbeat: now,
                    awaiting_join: false,
                    join_result: None,
                    awaiting_sync: false,
                    sync_result: None,
                    synced: true,
                },
            );
        }
        self.state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
    }

    /// Offsets past retention: only an Empty group's expire, counted from the later of the
    /// commit and the group becoming Empty (or at the explicit expire time a client asked for).
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, v)| {
                if v.expire_timestamp >= 0 {
                    v.expire_timestamp <= now_ms
                } else {
                    v.commit_timestamp.max(self.state_timestamp).saturating_add(retention_ms) <= now_ms
                }
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<&Member, GroupError> {
        if let Some(i) = instance_id
            && let Some(current) = self.static_members.get(i)
            && current != member_id
        {
            return Err(GroupError::FencedInstanceId);
        }
        self.members.get(member_id).ok_or(GroupError::UnknownMemberId)
    }
}

/// Topics a consumer-protocol subscription names (ConsumerProtocolSubscription: version i16,
/// topics [string], ...). Unparseable metadata names none.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let read_i16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let Some(n) = metadata.get(2..6).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]])) else { return out };
    let mut at = 6;
    for _ in 0..n.max(0) {
        let Some(len) = read_i16(metadata, at).and_then(|l| usize::try_from(l).ok()) else { break };
        let Some(raw) = metadata.get(at + 2..at + 2 + len) else { break };
        out.push(String::from_utf8_lossy(raw).into_owned());
        at += 2 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::new())).collect(),
            assignment: Bytes::new(),
            last_heartbeat: Instant::now(),
            awaiting_join: true,
            join_result: None,
            awaiting_sync: false,
            sync_result: None,
            synced: false,
        }
    }

    #[test]
    fn protocol_selection_by_votes() {
        let mut g = Group::new("g", 0, 0);
        g.protocol_type = Some("consumer".into());
        g.members.insert("a".into(), member("a", &["range", "cooperative-sticky"]));
        g.members.insert("b".into(), member("b", &["cooperative-sticky", "range"]));
        g.members.insert("c".into(), member("c", &["cooperative-sticky", "range", "roundrobin"]));
        assert_eq!(g.select_protocol().as_deref(), Some("cooperative-sticky"));
        assert!(g.supports("consumer", &[("range".into(), Bytes::new())]));
        assert!(!g.supports("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!g.supports("connect", &[("range".into(), Bytes::new())]));
    }

    #[test]
    fn parses_subscriptions() {
        let mut m = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        assert_eq!(subscribed_topics(&m), vec!["a", "bc"]);
        m.truncate(10);
        assert_eq!(subscribed_topics(&m), vec!["a"]);
        assert!(subscribed_topics(&[1]).is_empty());
    }
}
