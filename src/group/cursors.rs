//! Committed offsets mirrored into durable cursors: for every group and every partition it
//! has committed on, a Pulsar subscription named after the group on the partition's managed
//! ledger, its mark-delete position following the committed offset.
//!
//! The coordinator core (owning the group) and the data core (owning the partition) are
//! usually different, so the mirror is a control-plane flow: every
//! `group.cursor.mirror.interval.ms` each coordinator diffs the groups that changed since the
//! last round against what it last sent, and sends each data core its changes
//! (`CoreMessage::Cursors`). The data core translates offsets to positions in its own
//! managed ledgers and persists all cursor nodes of the round in one metadata commit.
//!
//! The first round after start is *full*: it carries every committed offset, and tells every
//! core to drop the cursors of this coordinator's groups that it did not mention (groups
//! deleted while a previous run had not mirrored the deletion yet). Cursors lag commits by
//! at most one interval; `__consumer_offsets` stays the source of truth.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use super::coordinator::GroupCoordinator;
use crate::broker::{Broker, CoreMessage};
use crate::log::cursor::CursorChange;
use crate::meta::topic_name::TopicName;
use crate::runtime;

/// One cursor change for a data core.
#[derive(Debug, Clone)]
pub struct CursorUpdate {
    pub topic: TopicName,
    /// The topic incarnation the offset was committed against (a re-created topic starts fresh).
    pub topic_id: Uuid,
    pub partition: i32,
    pub group: String,
    /// The committed offset, or `None` when the group no longer has one there.
    pub offset: Option<i64>,
    pub at_ms: i64,
}

/// A committed offset's place: (Kafka topic, partition).
type OffsetKey = (String, i32);

/// What a coordinator has mirrored so far, and which groups changed since.
#[derive(Default)]
pub struct CursorMirror {
    pub(super) dirty: RefCell<HashSet<String>>,
    /// Per group: the offsets last sent.
    pub(super) sent: RefCell<HashMap<String, HashMap<OffsetKey, i64>>>,
}

impl CursorMirror {
    /// Notes that a group's committed offsets changed.
    pub fn mark(&self, group: &str) {
        self.dirty.borrow_mut().insert(group.to_string());
    }
}

impl GroupCoordinator {
    /// The mirror loop of one coordinator core; starts once its partitions are loaded.
    pub async fn run_cursor_mirror(&self, broker: &Broker) {
        let every = Duration::from_millis(broker.config.groups.cursor_mirror_interval_ms);
        let mut full = true;
        while !broker.shutdown.is_triggered() {
            runtime::timeout(every, broker.shutdown.wait()).await;
            if broker.shutdown.is_triggered() {
                break;
            }
            let mut per_core = self.cursor_updates(broker, full);
            for (core, peer) in broker.peers.iter().enumerate() {
                let updates = per_core.remove(&(core as u32)).unwrap_or_default();
                if updates.is_empty() && !full {
                    continue;
                }
                let msg = CoreMessage::Cursors { coordinator: broker.id, full, updates };
                if peer.send(msg).await.is_err() {
                    return; // the core is gone: shutting down
                }
            }
            full = false;
        }
    }

    /// The changes since the last round, by data core of this node. `full`: every group counts
    /// as changed.
    fn cursor_updates(&self, broker: &Broker, full: bool) -> HashMap<u32, Vec<CursorUpdate>> {
        let catalog = broker.catalog();
        let groups = self.groups.borrow();
        let dirty: Vec<String> = if full {
            self.mirror.dirty.borrow_mut().clear();
            groups.keys().cloned().collect()
        } else {
            self.mirror.dirty.borrow_mut().drain().collect()
        };
        let mut sent = self.mirror.sent.borrow_mut();
        let mut out: HashMap<u32, Vec<CursorUpdate>> = HashMap::new();
        let now = crate::log::managed_ledger::now_ms();
        for group in dirty {
            let current: HashMap<OffsetKey, (i64, i64)> = groups
                .get(&group)
                .map(|g| g.offsets.iter().map(|(k, v)| (k.clone(), (v.offset, v.commit_timestamp))).collect())
                .unwrap_or_default();
            let before = sent.remove(&group).unwrap_or_default();
            let mut changes: Vec<(OffsetKey, Option<(i64, i64)>)> = current
                .iter()
                .filter(|(k, (o, _))| before.get(*k) != Some(o))
                .map(|(k, v)| (k.clone(), Some(*v)))
                .collect();
            changes.extend(before.keys().filter(|k| !current.contains_key(*k)).map(|k| (k.clone(), None)));
            for ((topic, partition), value) in changes {
                let Ok(name) = broker.topic_name(&topic) else { continue };
                let Some(entry) = catalog.get(&name) else { continue };
                // Only partitions of this node: a cluster's other nodes mirror their own groups.
                let Some(core) = catalog.owner(&name, partition).and_then(|b| broker.local_core(b)) else { continue };
                let core = core as u32;
                out.entry(core).or_default().push(CursorUpdate {
                    topic: name,
                    topic_id: entry.id,
                    partition,
                    group: group.clone(),
                    offset: value.map(|(o, _)| o),
                    at_ms: value.map_or(now, |(_, t)| t),
                });
            }
            if !current.is_empty() {
                sent.insert(group, current.into_iter().map(|(k, (o, _))| (k, o)).collect());
            }
        }
        out
    }
}

/// Applies a coordinator's round on the data core that owns the partitions.
pub async fn apply(broker: &Broker, coordinator: i32, full: bool, updates: Vec<CursorUpdate>) {
    let catalog = broker.catalog();
    let mut by_partition: HashMap<(TopicName, i32), Vec<CursorChange>> = HashMap::new();
    let mut mentioned: HashSet<(TopicName, i32, String)> = HashSet::new();
    for u in updates {
        let current = catalog.get(&u.topic).is_some_and(|t| t.id == u.topic_id);
        if !current
            || catalog.owner(&u.topic, u.partition) != Some(broker.id as u32)
            || !broker.logs.is_leased(&u.topic, u.partition)
        {
            continue;
        }
        if full {
            mentioned.insert((u.topic.clone(), u.partition, u.group.clone()));
        }
        let change = match u.offset {
            Some(offset) => CursorChange::Set { name: u.group, offset, at_ms: u.at_ms },
            None => CursorChange::Remove { name: u.group },
        };
        by_partition.entry((u.topic, u.partition)).or_default().push(change);
    }
    if full {
        for log in broker.logs.open_logs() {
            for c in log.cursors() {
                let stale = GroupCoordinator::coordinator_of(broker, &c.name) == Some(coordinator)
                    && !mentioned.contains(&(log.topic.clone(), log.partition, c.name.clone()));
                if stale {
                    by_partition
                        .entry((log.topic.clone(), log.partition))
                        .or_default()
                        .push(CursorChange::Remove { name: c.name });
                }
            }
        }
    }
    let mut ops = Vec::new();
    for ((topic, partition), changes) in by_partition {
        let Some(entry) = catalog.get(&topic) else { continue };
        match broker.logs.get(entry, partition).await {
            Ok(log) => ops.extend(log.cursor_ops(changes)),
            Err(e) => tracing::warn!(%topic, partition, error = %e, "cannot open partition to move its cursors"),
        }
    }
    if ops.is_empty() {
        return;
    }
    if let Err(e) = broker.logs.commit_metadata(ops).await {
        tracing::warn!(error = %e, "cannot persist cursor positions");
    }
}
