//! One core's group coordinator: which groups it owns, loading them from `__consumer_offsets`,
//! writing their records, and the timers (session expiry, join and sync deadlines, offset
//! retention) run by one periodic task per core.
//!
//! Writes to a partition are serialized by a per-partition lock held across "snapshot, append,
//! apply", so the in-memory state always equals what replaying the partition would rebuild.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::Event;

use super::records::{self, GroupRecord};
use super::state::{Group, GroupState};
use super::{GroupError, membership, offsets_topic_name, partition_for};
use crate::broker::Broker;
use crate::log::managed_ledger::now_ms;
use crate::log::record_batch::{self, BatchError, ValidationLimits};
use crate::meta::catalog::TopicEntry;
use crate::runtime;

/// How often timers are checked; bounds how late a session expiry or deadline fires.
const TICK: Duration = Duration::from_millis(100);
/// Largest decompressed batch replay accepts.
const MAX_REPLAY_BATCH: usize = 64 << 20;
/// Largest batch the coordinator writes (a big group's metadata can exceed 1 MiB).
const MAX_WRITE_BATCH: usize = 64 << 20;
/// A partition is compacted only once its history has at least this many records...
const COMPACT_MIN_RECORDS: i64 = 10_000;
/// ...and the rewrite goes out in batches of this many records.
const COMPACT_CHUNK: usize = 1_000;

/// A tiny async mutex (the core is single-threaded; only ordering across awaits matters).
#[derive(Default)]
struct PartitionLock {
    busy: Cell<bool>,
    freed: Event,
}

pub struct LockGuard(Rc<PartitionLock>);

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.0.busy.set(false);
        self.0.freed.notify(1);
    }
}

#[derive(Default)]
pub struct GroupCoordinator {
    pub(super) groups: RefCell<HashMap<String, Group>>,
    /// Owned `__consumer_offsets` partitions whose replay has finished.
    loaded: RefCell<HashSet<i32>>,
    /// Fires on every group change that a waiting JoinGroup or SyncGroup may care about.
    pub(super) changed: Event,
    locks: RefCell<HashMap<i32, Rc<PartitionLock>>>,
    /// Committed offsets on their way into durable cursors.
    pub(super) mirror: super::cursors::CursorMirror,
}

impl GroupCoordinator {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn offsets_topic(broker: &Broker) -> Option<Arc<TopicEntry>> {
        broker.catalog().get(&offsets_topic_name(&broker.config)).cloned()
    }

    /// The core coordinating `group`, if the internal topic exists.
    pub fn coordinator_of(broker: &Broker, group: &str) -> Option<i32> {
        let topic = Self::offsets_topic(broker)?;
        let p = partition_for(group, topic.partitions.len() as i32);
        topic.partitions.get(p as usize).map(|o| o.broker as i32)
    }

    /// The group's partition, if this core coordinates it and has loaded it.
    pub fn locate(&self, broker: &Broker, group: &str) -> Result<i32, GroupError> {
        if group.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let topic = Self::offsets_topic(broker).ok_or(GroupError::CoordinatorNotAvailable)?;
        let p = partition_for(group, topic.partitions.len() as i32);
        let owner = topic.partitions.get(p as usize).ok_or(GroupError::CoordinatorNotAvailable)?;
        if !broker.serves(&topic.name, p, owner) {
            return Err(GroupError::NotCoordinator);
        }
        if !self.loaded.borrow().contains(&p) {
            return Err(GroupError::LoadInProgress);
        }
        Ok(p)
    }

    pub(super) async fn lock(&self, partition: i32) -> LockGuard {
        let lock = self.locks.borrow_mut().entry(partition).or_default().clone();
        loop {
            if !lock.busy.get() {
                lock.busy.set(true);
                return LockGuard(lock);
            }
            let l = lock.freed.listen();
            if lock.busy.get() {
                l.await;
            }
        }
    }

    /// Appends records to a partition as one batch; returns once durable. Hold the
    /// partition's lock.
    pub(super) async fn append(&self, broker: &Broker, partition: i32, recs: &[GroupRecord]) -> Result<(), GroupError> {
        if recs.is_empty() {
            return Ok(());
        }
        self.append_at(broker, partition, recs).await.map(|_| ())
    }

    /// `append`, returning the batch's base offset.
    async fn append_at(&self, broker: &Broker, partition: i32, recs: &[GroupRecord]) -> Result<i64, GroupError> {
        let topic = Self::offsets_topic(broker).ok_or(GroupError::CoordinatorNotAvailable)?;
        let owner = topic.partitions.get(partition as usize).ok_or(GroupError::CoordinatorNotAvailable)?;
        if !broker.serves(&topic.name, partition, owner) {
            return Err(GroupError::NotCoordinator);
        }
        let now = now_ms();
        let batch = records::encode_batch(recs, now).map_err(|e| {
            tracing::warn!(error = %e, "cannot encode group records");
            GroupError::StoreFailed
        })?;
        let limits = ValidationLimits {
            max_message_bytes: MAX_WRITE_BATCH,
            require_keys: true,
            now_ms: now,
            ..ValidationLimits::default()
        };
        let validated = record_batch::validate(&batch, &limits).map_err(|e| match e {
            BatchError::MessageTooLarge { .. } => GroupError::InvalidCommitOffsetSize,
            _ => GroupError::StoreFailed,
        })?;
        let log = broker.logs.get(&topic, partition).await.map_err(|e| {
            tracing::warn!(partition, error = %e, "cannot open __consumer_offsets partition");
            GroupError::StoreFailed
        })?;
        log.append(&batch, &validated, owner.epoch).await.map(|r| r.base_offset).map_err(|e| {
            tracing::warn!(partition, error = %e, "cannot write group records");
            GroupError::StoreFailed
        })
    }

    /// Writes the group's metadata record (a tombstone if the group is gone).
    pub(super) async fn persist_group(&self, broker: &Broker, partition: i32, group: &str) -> Result<(), GroupError> {
        let _g = self.lock(partition).await;
        let value = self.groups.borrow().get(group).filter(|g| g.state != GroupState::Dead).map(Group::to_value);
        self.append(broker, partition, &[GroupRecord::Group { group: group.to_string(), value }]).await
    }

    /// Replays every owned partition of `__consumer_offsets`, then serves it. Runs once at
    /// core start; requests for a partition not yet loaded get COORDINATOR_LOAD_IN_PROGRESS.
    /// (In a cluster a core serves nothing at start: partitions come with their leases.)
    pub async fn load(&self, broker: &Broker) {
        let Some(topic) = Self::offsets_topic(broker) else {
            tracing::warn!("__consumer_offsets is missing: no group can be coordinated");
            return;
        };
        for (p, owner) in topic.partitions.iter().enumerate() {
            if broker.serves(&topic.name, p as i32, owner) {
                self.load_one(broker, &topic, p as i32).await;
            }
        }
    }

    /// Replays one partition this core serves, retrying until it loads, the core stops, or
    /// the core no longer serves it.
    pub async fn load_one(&self, broker: &Broker, topic: &TopicEntry, p: i32) {
        let mut attempt = 0u32;
        loop {
            match self.load_partition(broker, topic, p).await {
                Ok(n) => {
                    tracing::debug!(partition = p, records = n, "loaded group partition");
                    self.loaded.borrow_mut().insert(p);
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(partition = p, attempt, error = %e, "loading group partition failed; retrying");
                    if broker.shutdown.is_triggered() || !broker.logs.is_leased(&topic.name, p) {
                        return;
                    }
                    runtime::sleep(Duration::from_millis(500 * attempt.min(20) as u64)).await;
                }
            }
        }
    }

    /// Forgets the groups of a partition this core no longer serves (its new owner replays it).
    pub fn unload(&self, partition: i32, partitions: i32) {
        self.loaded.borrow_mut().remove(&partition);
        let gone: Vec<String> =
            self.groups.borrow().keys().filter(|g| partition_for(g, partitions) == partition).cloned().collect();
        let mut groups = self.groups.borrow_mut();
        let mut sent = self.mirror.sent.borrow_mut();
        for g in gone {
            groups.remove(&g);
            sent.remove(&g);
        }
        drop((groups, sent));
        self.changed.notify(usize::MAX);
    }

    async fn load_partition(&self, broker: &Broker, topic: &TopicEntry, p: i32) -> Result<usize, String> {
        let log = broker.logs.get(topic, p).await.map_err(|e| e.to_string())?;
        let end = log.high_watermark();
        let mut next = log.log_start_offset();
        let mut loaded: HashMap<String, Group> = HashMap::new();
        let mut with_metadata: HashSet<String> = HashSet::new();
        let mut count = 0;
        let now = Instant::now();
        while next < end {
            let Some(entry) = log.entry_from(next) else { break };
            let batch = log.read_batch(&entry).await.map_err(|e| e.to_string())?.contiguous();
            next = entry.last_offset + 1;
            let recs = match record_batch::records(&batch, MAX_REPLAY_BATCH) {
                Ok(r) => r,
                Err(e) => {
                    // One bad batch must not hide every other group of the partition.
                    tracing::warn!(partition = p, offset = entry.base_offset, error = %e, "skipping undecodable batch");
                    continue;
                }
            };
            for r in recs {
                let Some(key) = r.key.as_deref() else { continue };
                let rec = match GroupRecord::decode(key, r.value.as_deref()) {
                    Ok(Some(rec)) => rec,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(partition = p, offset = r.offset, error = %e, "skipping record");
                        continue;
                    }
                };
                count += 1;
                match rec {
                    GroupRecord::Offset { group, topic, partition, value } => {
                        let g = loaded.entry(group.clone()).or_insert_with(|| Group::new(&group, p, 0));
                        match value {
                            Some(v) => g.offsets.insert((topic, partition), v),
                            None => g.offsets.remove(&(topic, partition)),
                        };
                    }
                    GroupRecord::Group { group, value: Some(v) } => {
                        loaded.entry(group.clone()).or_insert_with(|| Group::new(&group, p, 0)).apply_value(v, now);
                        with_metadata.insert(group);
                    }
                    GroupRecord::Group { group, value: None } => {
                        with_metadata.remove(&group);
                        if let Some(g) = loaded.get_mut(&group) {
                            let offsets = std::mem::take(&mut g.offsets);
                            *g = Group::new(&group, p, 0);
                            g.offsets = offsets;
                        }
                    }
                }
            }
        }
        loaded.retain(|id, g| with_metadata.contains(id) || !g.offsets.is_empty());
        let mut groups = self.groups.borrow_mut();
        groups.retain(|_, g| g.partition != p);
        groups.extend(loaded);
        Ok(count)
    }

    /// Groups this core coordinates (loaded partitions only).
    pub fn with_groups<T>(&self, f: impl FnOnce(&HashMap<String, Group>) -> T) -> T {
        f(&self.groups.borrow())
    }

    /// Waits until `check` yields, the group changes no more within `limit`, or shutdown.
    pub(super) async fn wait_for<T>(
        &self,
        broker: &Broker,
        limit: Duration,
        mut check: impl FnMut(&mut HashMap<String, Group>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.changed.listen();
            if let Some(v) = check(&mut self.groups.borrow_mut()) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline || broker.shutdown.is_triggered() {
                return None;
            }
            runtime::timeout(deadline - now, futures_lite::future::or(l, broker.shutdown.wait())).await;
        }
    }

    /// The periodic task: membership timers every tick, offset retention at its interval.
    pub async fn run(&self, broker: &Broker) {
        let retention_every = Duration::from_millis(broker.config.groups.offsets_retention_check_interval_ms);
        let mut next_retention = Instant::now() + retention_every;
        while !broker.shutdown.is_triggered() {
            runtime::timeout(TICK, broker.shutdown.wait()).await;
            let emptied = self.tick(broker);
            for (p, g) in emptied {
                if let Err(e) = self.persist_group(broker, p, &g).await {
                    tracing::warn!(group = %g, error = %e, "cannot record the group as empty");
                }
            }
            if Instant::now() >= next_retention {
                next_retention = Instant::now() + retention_every;
                self.expire_offsets(broker).await;
                let partitions: Vec<i32> = self.loaded.borrow().iter().copied().collect();
                for p in partitions {
                    if let Err(e) = self.compact(broker, p).await {
                        tracing::warn!(partition = p, error = %e, "compacting group partition failed");
                    }
                }
            }
        }
    }

    /// Fires due timers. Returns the groups whose metadata must be written.
    fn tick(&self, broker: &Broker) -> Vec<(i32, String)> {
        let now = Instant::now();
        let mut to_persist = Vec::new();
        let settings = &broker.config.groups;
        let mut groups = self.groups.borrow_mut();
        for g in groups.values_mut() {
            if membership::on_tick(g, settings, now) {
                to_persist.push((g.partition, g.id.clone()));
            }
        }
        drop(groups);
        self.changed.notify(usize::MAX);
        to_persist
    }

    /// Kafka compacts `__consumer_offsets`; kopd's log has no compaction, so once a partition's
    /// history is much longer than its live state, the coordinator rewrites the live state
    /// (every group's metadata and offsets) and moves the log start to that copy. The copy is
    /// durable before the history goes, so a crash in between only leaves both.
    async fn compact(&self, broker: &Broker, p: i32) -> Result<(), GroupError> {
        let topic = Self::offsets_topic(broker).ok_or(GroupError::CoordinatorNotAvailable)?;
        let log = broker.logs.get(&topic, p).await.map_err(|_| GroupError::StoreFailed)?;
        let _g = self.lock(p).await;
        let live: Vec<GroupRecord> = {
            let groups = self.groups.borrow();
            let mut live = Vec::new();
            for g in groups.values().filter(|g| g.partition == p && g.state != GroupState::Dead) {
                if g.protocol_type.is_some() || g.generation > 0 {
                    live.push(GroupRecord::Group { group: g.id.clone(), value: Some(g.to_value()) });
                }
                live.extend(g.offsets.iter().map(|((t, part), v)| GroupRecord::Offset {
                    group: g.id.clone(),
                    topic: t.clone(),
                    partition: *part,
                    value: Some(v.clone()),
                }));
            }
            live
        };
        let history = log.high_watermark() - log.log_start_offset();
        if history < COMPACT_MIN_RECORDS || history < 2 * live.len() as i64 {
            return Ok(());
        }
        let mut start = log.high_watermark();
        for (i, chunk) in live.chunks(COMPACT_CHUNK).enumerate() {
            let base = self.append_at(broker, p, chunk).await?;
            if i == 0 {
                start = base;
            }
        }
        log.delete_records_before(start).await.map_err(|e| {
            tracing::warn!(partition = p, error = %e, "cannot drop compacted history");
            GroupError::StoreFailed
        })?;
        tracing::info!(partition = p, history, live = live.len(), "compacted group partition");
        Ok(())
    }

    /// Removes committed offsets of empty groups older than `offsets.retention.minutes`
    /// (tombstones), and groups left with nothing.
    async fn expire_offsets(&self, broker: &Broker) {
        let retention = broker.config.groups.offsets_retention_ms;
        let partitions: Vec<i32> = self.loaded.borrow().iter().copied().collect();
        for p in partitions {
            let _g = self.lock(p).await;
            let now = now_ms();
            let mut tombstones = Vec::new();
            let mut dead_groups = Vec::new();
            for g in self.groups.borrow().values().filter(|g| g.partition == p) {
                let expired = g.expired_offsets(now, retention);
                let dead = g.state == GroupState::Empty && g.pending.is_empty() && expired.len() == g.offsets.len();
                tombstones.extend(expired.into_iter().map(|(topic, partition)| GroupRecord::Offset {
                    group: g.id.clone(),
                    topic,
                    partition,
                    value: None,
                }));
                if dead {
                    dead_groups.push(g.id.clone());
                    tombstones.push(GroupRecord::Group { group: g.id.clone(), value: None });
                }
            }
            if tombstones.is_empty() {
                continue;
            }
            if let Err(e) = self.append(broker, p, &tombstones).await {
                tracing::warn!(partition = p, error = %e, "cannot remove expired offsets");
                continue;
            }
            let mut groups = self.groups.borrow_mut();
            for t in &tombstones {
                if let GroupRecord::Offset { group, .. } = t {
                    self.mirror.mark(group);
                }
                if let GroupRecord::Offset { group, topic, partition, .. } = t
                    && let Some(g) = groups.get_mut(group)
                {
                    g.offsets.remove(&(topic.clone(), *partition));
                }
            }
            for id in dead_groups {
                if groups.get(&id).is_some_and(|g| g.state == GroupState::Empty && g.offsets.is_empty()) {
                    groups.remove(&id);
                }
            }
            tracing::info!(partition = p, records = tombstones.len(), "expired committed offsets");
        }
    }
}
