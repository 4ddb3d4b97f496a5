//! The topic catalog: every topic's Pulsar name, Kafka topic id, partitions with their owner
//! brokers, and config overrides.
//!
//! A `Catalog` value is immutable once published: the controller (core 0) builds the next
//! version and sends an `Arc` of it to every core, which swaps its read-only replica.
//!
//! Persisted layout in the metadata store (Pulsar's paths where Pulsar has the concept):
//! - `/admin/partitioned-topics/{tenant}/{ns}/persistent/{topic}`: Pulsar's partitioned-topic
//!   metadata JSON `{"partitions": n, "properties": {...}}`; properties hold the Kafka topic id
//!   (`kafka.topic.id`) and config overrides (`kafka.config.<name>`).
//! - `/kopd/assignment/{tenant}/{ns}/persistent/{topic}`: `[[broker, leader_epoch], ...]`.
//! - `/kopd/cluster`: `{"cluster_id": ..., "cores": n}`.
//! - `/kopd/config/{kind}/{entity}`: `{"config": {...}}`, configs of entities other than topics
//!   (Kafka's entity configs: client quotas of users, client ids and IPs, under `quotas/`).
//! - `/kopd/catalog-version`: a counter every catalog change sets (a conditional write), so
//!   changes from different writers are serialized and other nodes notice them by reading
//!   one node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::assignment::PartitionOwner;
use super::store::{MetadataStore, StoreError, StoreOp};
use super::topic_name::TopicName;

const TOPICS_PREFIX: &str = "/admin/partitioned-topics/";
const ASSIGNMENT_PREFIX: &str = "/kopd/assignment/";
const CLUSTER_PATH: &str = "/kopd/cluster";
const PRODUCER_IDS_PATH: &str = "/kopd/producer-ids";
const ENTITY_CONFIGS_PREFIX: &str = "/kopd/config/";
pub const VERSION_PATH: &str = "/kopd/catalog-version";
/// Every path of the catalog's content (VERSION_PATH aside), for a store other writers share.
const CONTENT_PATHS: &[&str] =
    &["/admin/partitioned-topics", "/kopd/assignment", CLUSTER_PATH, PRODUCER_IDS_PATH, "/kopd/config"];
const TOPIC_ID_PROPERTY: &str = "kafka.topic.id";
const CONFIG_PROPERTY_PREFIX: &str = "kafka.config.";

#[derive(Debug, Clone, PartialEq)]
pub struct TopicEntry {
    pub name: TopicName,
    pub id: Uuid,
    /// Index = partition number.
    pub partitions: Vec<PartitionOwner>,
    /// Config overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub cluster_id: String,
    pub cores: u32,
    /// First producer id not yet handed out (blocks are reserved through the controller).
    pub next_producer_id: i64,
    /// Counts catalog changes (see [`VERSION_PATH`]).
    pub version: i64,
    topics: BTreeMap<TopicName, Arc<TopicEntry>>,
    ids: HashMap<Uuid, TopicName>,
    /// Configs of non-topic entities by key (`quotas/user=alice`); none is empty.
    pub entity_configs: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize)]
struct EntityConfigRecord {
    config: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct PartitionedTopicMetadata {
    partitions: u32,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct ClusterRecord {
    cluster_id: String,
    cores: u32,
}

/// A decimal counter kept in one node (0 while the node does not exist).
fn stored_number(store: &dyn MetadataStore, path: &str) -> Result<i64, StoreError> {
    match store.get(path) {
        None => Ok(0),
        Some(b) => {
            std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| corrupt(path, "not a number"))
        }
    }
}

fn corrupt(path: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{path}: {e}"))
}

impl Catalog {
    pub fn get(&self, name: &TopicName) -> Option<&Arc<TopicEntry>> {
        self.topics.get(name)
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<&Arc<TopicEntry>> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicEntry>> {
        self.topics.values()
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The broker that owns partition `partition` of `name`, if both exist.
    pub fn owner(&self, name: &TopicName, partition: i32) -> Option<u32> {
        let topic = self.topics.get(name)?;
        usize::try_from(partition).ok().and_then(|p| topic.partitions.get(p)).map(|o| o.broker)
    }

    /// Every partition's owner, over all topics.
    pub fn owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.topics.values().flat_map(|t| t.partitions.iter().map(|p| p.broker))
    }

    /// Whether both hold the same topics, partition owners and configs.
    /// Same topics and entity configs (what a re-read compares, whatever the versions say).
    pub fn same_content(&self, other: &Catalog) -> bool {
        self.topics == other.topics && self.entity_configs == other.entity_configs
    }

    pub fn insert(&mut self, topic: TopicEntry) {
        self.ids.insert(topic.id, topic.name.clone());
        self.topics.insert(topic.name.clone(), Arc::new(topic));
    }

    pub fn remove(&mut self, name: &TopicName) -> Option<Arc<TopicEntry>> {
        let t = self.topics.remove(name)?;
        self.ids.remove(&t.id);
        Some(t)
    }

    /// Store ops that persist one topic (create or update).
    pub fn put_ops(topic: &TopicEntry) -> Vec<StoreOp> {
        let mut properties = BTreeMap::new();
        properties.insert(TOPIC_ID_PROPERTY.to_string(), topic.id.to_string());
        for (k, v) in &topic.configs {
            properties.insert(format!("{CONFIG_PROPERTY_PREFIX}{k}"), v.clone());
        }
        let meta = PartitionedTopicMetadata { partitions: topic.partitions.len() as u32, properties };
        let owners: Vec<Vec<i64>> = topic
            .partitions
            .iter()
            .map(|p| {
                let mut o = vec![p.broker as i64, p.epoch as i64];
                if p.pinned {
                    o.push(1);
                }
                o
            })
            .collect();
        let path = topic.name.metadata_path();
        vec![
            StoreOp::Put {
                path: format!("{TOPICS_PREFIX}{path}"),
                value: serde_json::to_vec(&meta).unwrap_or_default(),
            },
            StoreOp::Put {
                path: format!("{ASSIGNMENT_PREFIX}{path}"),
                value: serde_json::to_vec(&owners).unwrap_or_default(),
            },
        ]
    }

    pub fn delete_ops(name: &TopicName) -> Vec<StoreOp> {
        let path = name.metadata_path();
        vec![
            StoreOp::Delete { path: format!("{TOPICS_PREFIX}{path}") },
            StoreOp::Delete { path: format!("{ASSIGNMENT_PREFIX}{path}") },
        ]
    }

    /// Sets an entity's configs (none: removes the entity) and returns the store op that
    /// persists it.
    pub fn set_entity_config(&mut self, key: &str, config: BTreeMap<String, String>) -> StoreOp {
        let path = format!("{ENTITY_CONFIGS_PREFIX}{key}");
        if config.is_empty() {
            self.entity_configs.remove(key);
            return StoreOp::Delete { path };
        }
        let value = serde_json::to_vec(&EntityConfigRecord { config: config.clone() }).unwrap_or_default();
        self.entity_configs.insert(key.to_string(), config);
        StoreOp::Put { path, value }
    }

    pub fn cluster_op(&self) -> StoreOp {
        let rec = ClusterRecord { cluster_id: self.cluster_id.clone(), cores: self.cores };
        StoreOp::Put { path: CLUSTER_PATH.into(), value: serde_json::to_vec(&rec).unwrap_or_default() }
    }

    /// The op every catalog change includes: the next version.
    pub fn version_op(&mut self) -> StoreOp {
        self.version += 1;
        StoreOp::Put { path: VERSION_PATH.into(), value: self.version.to_string().into_bytes() }
    }

    /// The catalog version a store holds (0 before the first change).
    pub fn stored_version(store: &dyn MetadataStore) -> Result<i64, StoreError> {
        stored_number(store, VERSION_PATH)
    }

    /// The next unreserved producer id a store holds (0 before the first reservation).
    pub fn stored_next_producer_id(store: &dyn MetadataStore) -> Result<i64, StoreError> {
        stored_number(store, PRODUCER_IDS_PATH)
    }

    /// Re-reads the catalog from a store other writers share: its version, then its content,
    /// then the version again; again if another change landed meanwhile (a few times, then it
    /// gives up for now). Every change bumps the version in the same transaction and one
    /// session's reads are answered in order, so content read between two equal versions is
    /// that version's. (Reading the version after the content labelled a change that landed
    /// mid-read with the new version but part of the old content.)
    pub fn reload(store: &mut dyn MetadataStore) -> Result<Catalog, StoreError> {
        for _ in 0..3 {
            store.refresh(VERSION_PATH)?;
            for p in CONTENT_PATHS {
                store.refresh(p)?;
            }
            let cat = Catalog::load(store)?;
            store.refresh(VERSION_PATH)?;
            if Catalog::stored_version(store)? == cat.version {
                return Ok(cat);
            }
        }
        Err(StoreError::Unavailable("the catalog kept changing while it was read".into()))
    }

    pub fn producer_id_op(&self) -> StoreOp {
        StoreOp::Put { path: PRODUCER_IDS_PATH.into(), value: self.next_producer_id.to_string().into_bytes() }
    }

    /// Reads the catalog from a store. `cores` is 0 and `cluster_id` empty on a new store.
    pub fn load(store: &dyn MetadataStore) -> Result<Catalog, StoreError> {
        let mut cat = Catalog { version: Catalog::stored_version(store)?, ..Default::default() };
        if let Some(bytes) = store.get(CLUSTER_PATH) {
            let rec: ClusterRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(CLUSTER_PATH, e))?;
            cat.cluster_id = rec.cluster_id;
            cat.cores = rec.cores;
        }
        cat.next_producer_id = stored_number(store, PRODUCER_IDS_PATH)?;
        for (path, bytes) in store.scan(ENTITY_CONFIGS_PREFIX) {
            // Parent nodes a store creates on the way hold nothing.
            if bytes.is_empty() {
                continue;
            }
            let rec: EntityConfigRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
            if !rec.config.is_empty() {
                cat.entity_configs.insert(path[ENTITY_CONFIGS_PREFIX.len()..].to_string(), rec.config);
            }
        }
        for (path, bytes) in store.scan(TOPICS_PREFIX) {
            let rel = &path[TOPICS_PREFIX.len()..];
            let name = TopicName::from_metadata_path(rel).ok_or_else(|| corrupt(&path, "not a topic path"))?;
            let meta: PartitionedTopicMetadata = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
            let id = meta
                .properties
                .get(TOPIC_ID_PROPERTY)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| corrupt(&path, "no kafka.topic.id property"))?;
            let configs = meta
                .properties
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(CONFIG_PROPERTY_PREFIX).map(|k| (k.to_string(), v.clone())))
                .collect();
            let apath = format!("{ASSIGNMENT_PREFIX}{rel}");
            // [broker, epoch] per partition, with a third element 1 when pinned.
            let owners: Vec<Vec<i64>> = match store.get(&apath) {
                Some(b) => serde_json::from_slice(b).map_err(|e| corrupt(&apath, e))?,
                None => Vec::new(),
            };
            // A partition without a recorded owner (e.g. written by Pulsar's own tools) gets
            // broker u32::MAX, which the next rebalance replaces with a real one.
            let partitions = (0..meta.partitions as usize)
                .map(|i| match owners.get(i).map(Vec::as_slice) {
                    Some([broker, epoch, rest @ ..]) => PartitionOwner {
                        broker: *broker as u32,
                        epoch: *epoch as i32,
                        pinned: rest.first() == Some(&1),
                    },
                    _ => PartitionOwner::new(u32::MAX),
                })
                .collect();
            cat.insert(TopicEntry { name, id, partitions, configs });
        }
        Ok(cat)
    }

    /// Makes the catalog fit `cores` cores of a single node (brokers 0..cores): moves
    /// partitions of missing cores, evens out load. Returns the store ops that persist the
    /// change (empty when nothing changed).
    pub fn fit_to_cores(&mut self, cores: u32) -> Vec<StoreOp> {
        let mut ops = self.ensure_cluster_id();
        if self.cores != cores {
            self.cores = cores;
            ops.push(self.cluster_op());
        }
        let brokers: Vec<u32> = (0..cores).collect();
        ops.extend(self.rebalance(&brokers));
        ops
    }

    /// Gives a new catalog its Kafka cluster id.
    pub fn ensure_cluster_id(&mut self) -> Vec<StoreOp> {
        if !self.cluster_id.is_empty() {
            return Vec::new();
        }
        self.cluster_id = new_cluster_id();
        vec![self.cluster_op()]
    }

    /// Moves partitions off brokers not in `brokers` (sorted) and evens out the load over them.
    /// Returns the store ops that persist the change (empty when nothing moved).
    pub fn rebalance(&mut self, brokers: &[u32]) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        if brokers.is_empty() {
            return ops;
        }
        let names: Vec<TopicName> = self.topics.keys().cloned().collect();
        let mut owners: Vec<Vec<PartitionOwner>> = names.iter().map(|n| self.topics[n].partitions.clone()).collect();
        if super::assignment::rebalance(&mut owners, brokers).is_empty() {
            return ops;
        }
        for (n, new) in names.iter().zip(owners) {
            if self.topics[n].partitions != new {
                let mut t = (*self.topics[n]).clone();
                t.partitions = new;
                ops.extend(Catalog::put_ops(&t));
                self.insert(t);
            }
        }
        ops
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | b as u32;
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::store::LocalMetadataStore;
    use super::*;

    fn topic(local: &str, brokers: &[u32]) -> TopicEntry {
        TopicEntry {
            name: TopicName { tenant: "public".into(), namespace: "default".into(), local: local.into() },
            id: Uuid::new_v4(),
            partitions: brokers.iter().map(|&b| PartitionOwner::new(b)).collect(),
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        }
    }

    #[test]
    fn round_trips_through_a_store() {
        let dir = std::env::temp_dir().join(format!("kopd-catalog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = LocalMetadataStore::open(&dir).unwrap();
        let mut cat = Catalog::default();
        let mut ops = cat.fit_to_cores(2);
        let t = topic("orders", &[0, 1, 0]);
        ops.extend(Catalog::put_ops(&t));
        cat.insert(t.clone());
        store.commit(ops).unwrap();
        let loaded = Catalog::load(&store).unwrap();
        assert_eq!(loaded.cluster_id, cat.cluster_id);
        assert_eq!(loaded.cluster_id.len(), 22);
        assert_eq!(loaded.cores, 2);
        assert_eq!(**loaded.get(&t.name).unwrap(), t);
        assert_eq!(loaded.get_by_id(&t.id).unwrap().name, t.name);
        assert_eq!(loaded.owner(&t.name, 1), Some(1));
        assert_eq!(loaded.owner(&t.name, 3), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fitting_to_fewer_cores_moves_partitions() {
        let mut cat = Catalog { cluster_id: "x".into(), cores: 4, ..Default::default() };
        cat.insert(topic("a", &[0, 1, 2, 3]));
        let ops = cat.fit_to_cores(2);
        assert!(!ops.is_empty());
        assert_eq!(super::super::assignment::load(&[0, 1], cat.owners()), vec![2, 2]);
        assert!(cat.fit_to_cores(2).is_empty());
    }
}
