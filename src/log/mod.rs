//! The log: each partition a managed ledger (Pulsar's layout) with Kafka offsets on top.
//!
//! `PartitionLogs` is one core's set of partition logs: opened on first use, deleted when their
//! topic disappears from the catalog, and swept by retention.

pub mod cursor;
pub mod managed_ledger;
pub mod ml_metadata;
pub mod offset_index;
pub mod producer_state;
pub mod record_batch;
pub mod recovery;
pub mod snapshot;
pub mod tail_cache;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;
use uuid::Uuid;

use crate::config::{Config, TopicDefaults};
use crate::meta::catalog::{Catalog, TopicEntry};
use crate::meta::store::MetadataStoreThread;
use crate::meta::topic_config;
use crate::meta::topic_name::TopicName;
use crate::storage::{Backend, LedgerStore};
use managed_ledger::{LogError, LogSettings, ManagedLedger, RecoveredLog};
pub use recovery::PartitionKey;
use tail_cache::{TailBudget, TailCache};

/// Pulsar's default ledger rollover by entry count (managedLedgerMaxEntriesPerLedger).
const LEDGER_MAX_ENTRIES: u64 = 50_000;

/// The effective log settings of a topic (its overrides over the broker defaults).
pub fn settings_for(defaults: &TopicDefaults, topic: &TopicEntry) -> LogSettings {
    let get = |name: &str| -> String {
        match topic.configs.get(name) {
            Some(v) => v.clone(),
            None => topic_config::lookup(name).map(|d| topic_config::default_value(d, defaults)).unwrap_or_default(),
        }
    };
    let int = |name: &str, fallback: i64| get(name).parse::<i64>().unwrap_or(fallback);
    LogSettings {
        rollover_bytes: int("segment.bytes", 1 << 30).max(1) as u64,
        rollover_entries: LEDGER_MAX_ENTRIES,
        rollover_age: Duration::from_millis(int("segment.ms", 604_800_000).max(1) as u64),
        retention_ms: int("retention.ms", 604_800_000),
        retention_bytes: int("retention.bytes", -1),
        log_append_time: get("message.timestamp.type") == "LogAppendTime",
        keep_unconsumed: get("kopd.retention.keep.unconsumed") == "true",
    }
}

struct Slot {
    topic_id: Uuid,
    log: Rc<ManagedLedger>,
}

pub struct PartitionLogs {
    config: std::sync::Arc<Config>,
    store: Rc<Backend>,
    meta: MetadataStoreThread,
    /// In a cluster: the partitions this core may open and serve (its node holds their
    /// leases). `None` on a single node, where the catalog's word is enough.
    /// By topic, so the check on every request borrows the name instead of cloning it.
    leased: Option<RefCell<HashMap<TopicName, std::collections::HashSet<i32>>>>,
    /// Notified whenever a lease is taken or given back here.
    lease_changed: Event,
    open: RefCell<HashMap<PartitionKey, Slot>>,
    opening: RefCell<HashMap<PartitionKey, Rc<Event>>>,
    recovered: RefCell<HashMap<PartitionKey, RecoveredLog>>,
    /// The core's `log.tail.cache.bytes`, shared by its partitions' tail caches.
    tail_budget: Rc<TailBudget>,
    /// This core's (broker's) topic defaults: the static ones under its dynamic broker configs.
    defaults: RefCell<Rc<TopicDefaults>>,
}

impl PartitionLogs {
    pub fn new(
        config: std::sync::Arc<Config>,
        store: Rc<Backend>,
        meta: MetadataStoreThread,
        recovered: HashMap<PartitionKey, RecoveredLog>,
        clustered: bool,
    ) -> Self {
        Self {
            tail_budget: TailBudget::new(config.tail_cache_bytes),
            defaults: RefCell::new(Rc::new(config.topic_defaults.clone())),
            config,
            store,
            meta,
            leased: clustered.then(Default::default),
            lease_changed: Event::new(),
            open: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashMap::new()),
            recovered: RefCell::new(recovered),
        }
    }

    /// Whether this core may serve the partition (always on a single node).
    pub fn is_leased(&self, topic: &TopicName, partition: i32) -> bool {
        match &self.leased {
            None => true,
            Some(l) => l.borrow().get(topic).is_some_and(|ps| ps.contains(&partition)),
        }
    }

    fn set_leased(&self, (topic, partition): &PartitionKey, leased: bool) {
        let Some(l) = &self.leased else { return };
        {
            let mut l = l.borrow_mut();
            if leased {
                l.entry(topic.clone()).or_default().insert(*partition);
            } else if let Some(ps) = l.get_mut(topic) {
                ps.remove(partition);
                if ps.is_empty() {
                    l.remove(topic);
                }
            }
        }
        self.lease_changed.notify(usize::MAX);
    }

    /// Waits, at most `max`, until this core may serve the partition; whether it may.
    pub async fn wait_leased(&self, topic: &TopicName, partition: i32, max: Duration) -> bool {
        let deadline = std::time::Instant::now() + max;
        loop {
            if self.is_leased(topic, partition) {
                return true;
            }
            let changed = self.lease_changed.listen();
            if self.is_leased(topic, partition) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || crate::runtime::timeout(left, changed).await.is_none() {
                return self.is_leased(topic, partition);
            }
        }
    }

    /// The open log of a partition this core owns, opening it on first use.
    pub async fn get(&self, topic: &TopicEntry, partition: i32) -> Result<Rc<ManagedLedger>, LogError> {
        if !self.is_leased(&topic.name, partition) {
            return Err(LogError::Fenced);
        }
        let key = (topic.name.clone(), partition);
        loop {
            if let Some(s) = self.open.borrow().get(&key).filter(|s| s.topic_id == topic.id) {
                return Ok(s.log.clone());
            }
            let busy = self.opening.borrow().get(&key).cloned();
            match busy {
                Some(ev) => {
                    let l = ev.listen();
                    if self.opening.borrow().contains_key(&key) {
                        l.await;
                    }
                }
                None => break,
            }
        }
        let done = Rc::new(Event::new());
        self.opening.borrow_mut().insert(key.clone(), done.clone());
        let recovered = self.recovered.borrow_mut().remove(&key).unwrap_or_default();
        let result = ManagedLedger::open(
            topic.name.clone(),
            partition,
            self.store.clone(),
            self.meta.clone(),
            recovered,
            settings_for(&self.defaults(), topic),
            TailCache::new(self.tail_budget.clone()),
        )
        .await;
        self.opening.borrow_mut().remove(&key);
        done.notify(usize::MAX);
        let log = result?;
        self.open.borrow_mut().insert(key, Slot { topic_id: topic.id, log: log.clone() });
        Ok(log)
    }

    /// Cluster mode: this core takes the partition over (its node now holds the lease). Its
    /// ledger list and cursors are re-read from ZooKeeper, and opening it fences and recovers
    /// the previous owner's last ledger before anything is served.
    pub async fn acquire(&self, topic: &TopicEntry, partition: i32) -> Result<Rc<ManagedLedger>, LogError> {
        let key = (topic.name.clone(), partition);
        let (name, p) = key.clone();
        let started = std::time::Instant::now();
        let recovered = self
            .meta
            .with(move |s| recovery::reload_partition(s, &name, p).map_err(|e| e.to_string()))
            .await
            .map_err(|e| LogError::Metadata(e.to_string()))?
            .map_err(LogError::Metadata)?;
        self.recovered.borrow_mut().insert(key.clone(), recovered);
        self.set_leased(&key, true);
        let reloaded = started.elapsed();
        let opened = self.get(topic, partition).await;
        tracing::debug!(topic = %key.0, partition, reload_ms = reloaded.as_millis() as u64,
            open_ms = (started.elapsed() - reloaded).as_millis() as u64, "partition acquired");
        if opened.is_err() {
            self.recovered.borrow_mut().remove(&key);
            self.set_leased(&key, false);
        }
        opened
    }

    /// Cluster mode: this core stops serving the partition. `graceful` (a planned move) seals
    /// its current ledger first, so the next owner finds it closed; otherwise (the lease is
    /// lost) the log is fenced at once and nothing more is acknowledged.
    pub async fn release(&self, topic: &TopicName, partition: i32, graceful: bool) {
        let key = (topic.clone(), partition);
        self.set_leased(&key, false);
        self.recovered.borrow_mut().remove(&key);
        let slot = self.open.borrow_mut().remove(&key);
        // From here on this node writes the ledger list no more; the store then refuses
        // even a write already on its way.
        let path = ml_metadata::ml_path(topic, partition);
        let release = self.meta.with(move |s| s.release_pin(&path));
        let Some(slot) = slot else {
            let _ = release.await;
            return;
        };
        if graceful {
            let sealing = slot.log.hand_over();
            if crate::runtime::timeout(Duration::from_millis(self.config.shutdown_timeout_ms), sealing).await.is_none()
            {
                tracing::warn!(topic = %topic, partition, "ledger not sealed in time; the next owner recovers it");
            }
        }
        slot.log.abandon();
        let _ = release.await;
    }

    /// Commits metadata ops (e.g. cursor nodes of many partitions) in one batch.
    pub async fn commit_metadata(
        &self,
        ops: Vec<crate::meta::store::StoreOp>,
    ) -> Result<(), crate::meta::store::StoreError> {
        self.meta.commit(ops).await
    }

    /// Every log open on this core.
    pub fn open_logs(&self) -> Vec<Rc<ManagedLedger>> {
        self.open.borrow().values().map(|s| s.log.clone()).collect()
    }

    /// Opens every recovered partition this core owns, and deletes recovered partitions whose
    /// topic no longer exists (deleted while a previous run was stopping).
    pub async fn open_recovered(&self, catalog: &Catalog, core: u32) {
        let keys: Vec<PartitionKey> = self.recovered.borrow().keys().cloned().collect();
        for key in keys {
            match catalog.get(&key.0) {
                Some(topic) if catalog.owner(&key.0, key.1) == Some(core) => {
                    let topic = topic.clone();
                    if let Err(e) = self.get(&topic, key.1).await {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot open recovered partition");
                    }
                }
                Some(_) => {}
                None => {
                    let rec = self.recovered.borrow_mut().remove(&key).unwrap_or_default();
                    let settings = settings_for(&self.defaults(), &orphan(&key));
                    let tail = TailCache::new(self.tail_budget.clone());
                    let opened = ManagedLedger::open(
                        key.0.clone(),
                        key.1,
                        self.store.clone(),
                        self.meta.clone(),
                        rec,
                        settings,
                        tail,
                    )
                    .await;
                    if let Ok(log) = opened {
                        let _ = log.delete().await;
                    }
                }
            }
        }
    }

    /// This core's default `max.message.bytes` (read on every produce to a topic without its own).
    pub fn default_max_message_bytes(&self) -> i64 {
        self.defaults.borrow().max_message_bytes
    }

    /// This core's topic defaults now.
    pub fn defaults(&self) -> Rc<TopicDefaults> {
        self.defaults.borrow().clone()
    }

    /// New dynamic broker configs of this core: its topic defaults and tail-cache budget.
    /// Open logs take them with the next [`Self::catalog_changed`].
    pub fn set_dynamic(&self, defaults: TopicDefaults, tail_cache_bytes: usize) {
        *self.defaults.borrow_mut() = Rc::new(defaults);
        self.tail_budget.set_max_bytes(tail_cache_bytes);
    }

    /// Reacts to a new catalog: logs of deleted (or re-created) topics are removed, settings
    /// of the others refreshed.
    pub fn catalog_changed(&self, catalog: &Catalog) {
        let gone: Vec<PartitionKey> = self
            .open
            .borrow()
            .iter()
            .filter(|(k, s)| catalog.get(&k.0).is_none_or(|t| t.id != s.topic_id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(slot) = self.open.borrow_mut().remove(&key) {
                crate::runtime::spawn(async move {
                    if let Err(e) = slot.log.delete().await {
                        tracing::warn!(topic = %slot.log.topic, partition = slot.log.partition, error = %e, "deleting partition data failed");
                    }
                });
            }
        }
        let defaults = self.defaults();
        for (key, slot) in self.open.borrow().iter() {
            if let Some(t) = catalog.get(&key.0) {
                slot.log.set_settings(settings_for(&defaults, t));
            }
        }
    }

    /// Seals every open log's current ledger, stops the core's ledger store after writing and
    /// syncing everything queued, then snapshots every open log, so the next start reads
    /// nothing but the snapshot.
    pub async fn close(&self) {
        // Sealed first, so the next start finds closed ledgers instead of recovering them;
        // bounded, as an append a store cannot settle must not hold the process up.
        let logs = self.open_logs();
        let sealing = futures_util::future::join_all(logs.iter().map(|l| l.close()));
        if crate::runtime::timeout(Duration::from_millis(self.config.shutdown_timeout_ms), sealing).await.is_none() {
            tracing::warn!("ledgers not all sealed at shutdown; the next start recovers them");
        }
        self.store.close().await;
        self.write_snapshot().await;
    }

    /// Snapshots every open log and the store's checkpoint (see `snapshot.rs`); runs forever.
    pub async fn run_snapshots(&self, every: Duration) {
        loop {
            crate::runtime::sleep(every).await;
            self.write_snapshot().await;
        }
    }

    /// Takes the snapshot in one synchronous step (a consistent cut) and writes it on a
    /// helper thread, so the core does not block on the file system.
    pub async fn write_snapshot(&self) {
        // Only a backend with local files of its own keeps snapshots.
        let Some((checkpoint, dir)) = self.store.snapshot_target() else { return };
        if self.store.failure().is_some() {
            return;
        }
        let mut partitions: Vec<snapshot::PartitionSnapshot> =
            self.open.borrow().values().map(|s| s.log.snapshot()).collect();
        // Recovered but not opened yet (a stop right after start): what recovery rebuilt is
        // durable as it stands.
        partitions.extend(self.recovered.borrow().iter().map(|((topic, p), rec)| snapshot::PartitionSnapshot {
            path: ml_metadata::ml_path(topic, *p),
            end: rec.index.last().map_or(0, |e| e.last_offset + 1),
            index: (0..rec.index.len()).filter_map(|i| rec.index.get(i)).copied().collect(),
            producers: rec.producers.export(),
        }));
        let snap = snapshot::CoreSnapshot { store: checkpoint, partitions };
        let (tx, rx) = async_channel::bounded(1);
        let spawned = std::thread::Builder::new().name("kopd-snapshot".into()).spawn(move || {
            let _ = tx.send_blocking(snapshot::write_file(&dir, &snap.encode()));
        });
        let res = match spawned {
            Ok(_) => rx.recv().await.unwrap_or_else(|_| Err(std::io::Error::other("snapshot thread died"))),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot write the log snapshot; the next start reads more");
        }
    }

    /// Applies retention to every open log; runs forever on the core.
    pub async fn run_retention(&self, every: Duration) {
        loop {
            crate::runtime::sleep(every).await;
            let logs: Vec<Rc<ManagedLedger>> = self.open.borrow().values().map(|s| s.log.clone()).collect();
            for log in logs {
                if let Err(e) = log.enforce_retention().await {
                    tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "retention failed");
                }
            }
        }
    }
}

/// A stand-in catalog entry for a partition whose topic is gone (only its name matters).
fn orphan(key: &PartitionKey) -> TopicEntry {
    TopicEntry { name: key.0.clone(), id: Uuid::nil(), partitions: Vec::new(), configs: Default::default() }
}
