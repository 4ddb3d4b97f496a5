//! Committed offsets (commit, fetch, delete) and group administration (list, describe,
//! delete). A commit is acknowledged only once its records are durable in `__consumer_offsets`.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::GroupError;
use super::coordinator::GroupCoordinator;
use super::records::{GroupRecord, OffsetValue};
use super::state::{Group, GroupState, subscribed_topics};
use crate::broker::Broker;
use crate::log::managed_ledger::now_ms;

pub struct CommitRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// OffsetCommit v2-v4 retention time; -1 for the broker's.
    pub retention_ms: i64,
    /// (topic, partition, offset, leader epoch, metadata)
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

/// A member as DescribeGroups shows it.
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Offsets by topic then partition; `None` where nothing is committed.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// Kafka's checks of who may commit (validateOffsetCommit of the classic protocol).
fn check_committer(g: Option<&Group>, r: &CommitRequest) -> Result<(), GroupError> {
    let simple = r.generation < 0 && r.member_id.is_empty() && r.instance_id.is_none();
    let Some(g) = g else {
        return if r.generation < 0 { Ok(()) } else { Err(GroupError::IllegalGeneration) };
    };
    match g.state {
        GroupState::Dead => return Err(GroupError::CoordinatorNotAvailable),
        GroupState::Empty if simple => return Ok(()),
        _ => {}
    }
    g.check_member(&r.member_id, r.instance_id.as_deref())?;
    if r.generation != g.generation {
        return Err(GroupError::IllegalGeneration);
    }
    if g.state == GroupState::CompletingRebalance {
        return Err(GroupError::RebalanceInProgress);
    }
    Ok(())
}

impl GroupCoordinator {
    /// One result per requested offset; `Err` for the whole request.
    pub async fn commit(&self, broker: &Broker, r: CommitRequest) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if r.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let p = self.locate(broker, &r.group_id)?;
        {
            let mut groups = self.groups.borrow_mut();
            check_committer(groups.get(&r.group_id), &r)?;
            if let Some(m) = groups.get_mut(&r.group_id).and_then(|g| g.members.get_mut(&r.member_id)) {
                m.last_heartbeat = Instant::now();
            }
        }
        let catalog = broker.catalog();
        let now = now_ms();
        let expire = if r.retention_ms >= 0 { now.saturating_add(r.retention_ms) } else { -1 };
        let max_metadata = broker.config.groups.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(r.offsets.len());
        let mut recs = Vec::new();
        for (topic, partition, offset, epoch, metadata) in &r.offsets {
            let exists = broker
                .topic_name(topic)
                .ok()
                .and_then(|n| catalog.get(&n).map(|t| *partition >= 0 && (*partition as usize) < t.partitions.len()))
                .unwrap_or(false);
            let metadata = metadata.clone().unwrap_or_default();
            let res = if !exists {
                Err(GroupError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Err(GroupError::OffsetMetadataTooLarge)
            } else {
                recs.push(GroupRecord::Offset {
                    group: r.group_id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(OffsetValue {
                        offset: *offset,
                        leader_epoch: *epoch,
                        metadata,
                        commit_timestamp: now,
                        expire_timestamp: expire,
                    }),
                });
                Ok(())
            };
            results.push(res);
        }
        let _lock = self.lock(p).await;
        if let Err(e) = self.append(broker, p, &recs).await {
            return Ok(results.into_iter().map(|res| res.and(Err(e))).collect());
        }
        let mut groups = self.groups.borrow_mut();
        self.mirror.mark(&r.group_id);
        let g = groups.entry(r.group_id.clone()).or_insert_with(|| Group::new(&r.group_id, p, now));
        for rec in recs {
            if let GroupRecord::Offset { topic, partition, value: Some(v), .. } = rec {
                g.offsets.insert((topic, partition), v);
            }
        }
        Ok(results)
    }

    /// Committed offsets of `topics` (all of the group's when `None`).
    pub fn fetch_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedOffsets, GroupError> {
        self.locate(broker, group_id)?;
        let groups = self.groups.borrow();
        let g = groups.get(group_id);
        let get = |t: &str, p: i32| g.and_then(|g| g.offsets.get(&(t.to_string(), p)).cloned());
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| (t.clone(), ps.into_iter().map(|p| (p, get(&t, p))).collect()))
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetValue>)>> = BTreeMap::new();
                for ((t, p), v) in g.map(|g| g.offsets.iter()).into_iter().flatten() {
                    by_topic.entry(t.clone()).or_default().push((*p, Some(v.clone())));
                }
                for ps in by_topic.values_mut() {
                    ps.sort_by_key(|(p, _)| *p);
                }
                by_topic.into_iter().collect()
            }
        })
    }

    /// OffsetDelete: removes committed offsets of topics the group does not consume.
    pub async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<Vec<(String, Vec<(i32, Result<(), GroupError>)>)>, GroupError> {
        let p = self.locate(broker, group_id)?;
        let _lock = self.lock(p).await;
        let (results, recs) = {
            let groups = self.groups.borrow();
            let g = groups.get(group_id).ok_or(GroupError::GroupIdNotFound)?;
            let subscribed: HashSet<String> = match g.state {
                GroupState::Empty => HashSet::new(),
                GroupState::Dead => return Err(GroupError::GroupIdNotFound),
                _ if g.protocol_type.as_deref() == Some("consumer") => {
                    let protocol = g.protocol.clone().unwrap_or_default();
                    g.members.values().flat_map(|m| subscribed_topics(&m.metadata(&protocol))).collect()
                }
                _ => return Err(GroupError::NonEmptyGroup),
            };
            let mut recs = Vec::new();
            let results: Vec<_> = topics
                .into_iter()
                .map(|(t, ps)| {
                    let rs = ps
                        .into_iter()
                        .map(|p| {
                            if subscribed.contains(&t) {
                                return (p, Err(GroupError::GroupSubscribedToTopic));
                            }
                            if g.offsets.contains_key(&(t.clone(), p)) {
                                recs.push(GroupRecord::Offset {
                                    group: group_id.to_string(),
                                    topic: t.clone(),
                                    partition: p,
                                    value: None,
                                });
                            }
                            (p, Ok(()))
                        })
                        .collect();
                    (t, rs)
                })
                .collect();
            (results, recs)
        };
        self.append(broker, p, &recs).await?;
        self.mirror.mark(group_id);
        if let Some(g) = self.groups.borrow_mut().get_mut(group_id) {
            for r in recs {
                if let GroupRecord::Offset { topic, partition, .. } = r {
                    g.offsets.remove(&(topic, partition));
                }
            }
        }
        Ok(results)
    }

    /// DeleteGroups for one group: only an empty group may go; its offsets and metadata are
    /// tombstoned.
    pub async fn delete_group(&self, broker: &Broker, group_id: &str) -> Result<(), GroupError> {
        let p = self.locate(broker, group_id)?;
        let _lock = self.lock(p).await;
        let recs = {
            let mut groups = self.groups.borrow_mut();
            let g = groups.get_mut(group_id).ok_or(GroupError::GroupIdNotFound)?;
            match g.state {
                GroupState::Empty => {}
                GroupState::Dead => return Err(GroupError::GroupIdNotFound),
                _ => return Err(GroupError::NonEmptyGroup),
            }
            // Dead while the tombstones are written: joins and commits are refused meanwhile.
            g.state = GroupState::Dead;
            let mut recs: Vec<GroupRecord> = g
                .offsets
                .keys()
                .map(|(t, p)| GroupRecord::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                })
                .collect();
            recs.push(GroupRecord::Group { group: group_id.to_string(), value: None });
            recs
        };
        let result = self.append(broker, p, &recs).await;
        let mut groups = self.groups.borrow_mut();
        match result {
            Ok(()) => {
                groups.remove(group_id);
                self.mirror.mark(group_id);
                Ok(())
            }
            Err(e) => {
                if let Some(g) = groups.get_mut(group_id) {
                    g.state = GroupState::Empty;
                }
                Err(e)
            }
        }
    }

    /// `None` for a group this coordinator does not know (Kafka answers it as Dead).
    pub fn describe(&self, broker: &Broker, group_id: &str) -> Result<Option<GroupDescription>, GroupError> {
        self.locate(broker, group_id)?;
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group_id) else { return Ok(None) };
        // As Kafka: member metadata and the protocol only once the group is Stable.
        let stable = g.state == GroupState::Stable;
        let protocol = if stable { g.protocol.clone().unwrap_or_default() } else { String::new() };
        let members = g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata(&protocol) } else { Default::default() },
                assignment: if stable { m.assignment.clone() } else { Default::default() },
            })
            .collect();
        Ok(Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        }))
    }

    /// (group id, protocol type, state) of every group this core coordinates.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut out: Vec<_> = self
            .groups
            .borrow()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| (g.id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name()))
            .collect();
        out.sort();
        out
    }
}
