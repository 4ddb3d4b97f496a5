//! One core's broker: the state every handler on that core reads.
//!
//! Each core is advertised as its own Kafka broker (id = node id * 1000 + core index; on a
//! single node, node 0, the core index). Its `Broker` holds the core's read-only catalog
//! replica and cluster view, its handle to the controller and the shutdown signal. It lives in
//! an `Rc` on its core and is never shared with another thread.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::ClusterView;
use crate::config::Config;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC, offsets_topic_name};
use crate::kafka::ProducerIdBlock;
use crate::log::PartitionLogs;
use crate::meta::assignment::PartitionOwner;
use crate::meta::broker_config::DynamicLayers;
use crate::meta::catalog::{Catalog, TopicEntry};
use crate::meta::controller::ControllerClient;
use crate::meta::topic_name::{TopicName, TopicNameError};

/// Fires once, for every core, when the process is asked to stop.
#[derive(Clone)]
pub struct Shutdown {
    signal: async_channel::Receiver<()>,
}

impl Shutdown {
    /// The signal fires when `trigger` is closed or dropped.
    pub fn new() -> (async_channel::Sender<()>, Shutdown) {
        let (tx, rx) = async_channel::bounded(1);
        (tx, Shutdown { signal: rx })
    }

    pub fn is_triggered(&self) -> bool {
        self.signal.is_closed()
    }

    pub async fn wait(&self) {
        while self.signal.recv().await.is_ok() {}
    }
}

/// Messages between cores. Control only: nothing on the data path crosses cores.
pub enum CoreMessage {
    /// A new catalog version from the controller; reply on `done` once it is in use.
    Catalog { catalog: Arc<Catalog>, done: async_channel::Sender<()> },
    /// A coordinator's round of committed-offset changes for this core's partitions' cursors.
    Cursors { coordinator: i32, full: bool, updates: Vec<crate::group::cursors::CursorUpdate> },
    /// The admin API asks for the stats of this core's open partitions.
    Stats { reply: async_channel::Sender<Vec<crate::admin::PartitionStats>> },
    /// A metrics scrape asks for this core's samples.
    Metrics { reply: async_channel::Sender<crate::metrics::Snapshot> },
    /// Cluster mode: the live nodes changed.
    Cluster(Arc<ClusterView>),
    /// Cluster mode: this core's node holds the partition's lease now; serve it. The reply says
    /// whether it opened.
    Acquire { topic: Arc<TopicEntry>, partition: i32, done: async_channel::Sender<Result<(), String>> },
    /// Cluster mode: stop serving the partition (`graceful`: a planned move, seal it first).
    Release { topic: TopicName, partition: i32, graceful: bool, done: async_channel::Sender<()> },
}

/// Response bytes that this core's connections have produced but clients have not read yet
/// (bounded by `queued.max.response.bytes`). The network layer counts them; handlers that
/// can answer with less (Fetch) look at what is left.
pub struct ResponseMemory {
    used: Cell<usize>,
    limit: usize,
}

impl ResponseMemory {
    pub fn new(limit: usize) -> Rc<Self> {
        Rc::new(Self { used: Cell::new(0), limit })
    }

    /// Bytes that may still be queued before the core is over its bound.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used.get())
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }
}

/// One connection's share of [`ResponseMemory`]; released when dropped.
pub struct ResponseShare {
    memory: Rc<ResponseMemory>,
    held: usize,
}

impl ResponseShare {
    pub fn new(memory: Rc<ResponseMemory>) -> Self {
        Self { memory, held: 0 }
    }

    /// This connection now holds `bytes` unsent bytes.
    pub fn set(&mut self, bytes: usize) {
        let used = self.memory.used.get() - self.held + bytes;
        self.memory.used.set(used);
        self.held = bytes;
    }
}

impl Drop for ResponseShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

pub struct Broker {
    /// Kafka broker id (see the module doc).
    pub id: i32,
    /// This core's index on its node.
    pub core: usize,
    /// This node's id (0 on a single node).
    pub node: u32,
    pub config: Arc<Config>,
    pub controller: ControllerClient,
    pub shutdown: Shutdown,
    /// The logs of the partitions this core owns.
    pub logs: PartitionLogs,
    pub producer_ids: ProducerIdBlock,
    /// The group coordinator for this core's `__consumer_offsets` partitions.
    pub groups: GroupCoordinator,
    /// Every core's inbox (index = core), this one's included.
    pub peers: Vec<async_channel::Sender<CoreMessage>>,
    /// Unsent responses of this core's connections.
    pub responses: Rc<ResponseMemory>,
    catalog: RefCell<Arc<Catalog>>,
    cluster: RefCell<Arc<ClusterView>>,
}

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: usize,
        node: u32,
        cluster: Arc<ClusterView>,
        config: Arc<Config>,
        catalog: Arc<Catalog>,
        controller: ControllerClient,
        shutdown: Shutdown,
        logs: PartitionLogs,
        peers: Vec<async_channel::Sender<CoreMessage>>,
    ) -> Self {
        let responses = ResponseMemory::new(config.connections.queued_max_response_bytes);
        let broker = Self {
            id: crate::cluster::broker_id(node, core),
            core,
            node,
            config,
            controller,
            shutdown,
            logs,
            producer_ids: ProducerIdBlock::default(),
            groups: GroupCoordinator::new(),
            peers,
            responses,
            catalog: RefCell::new(catalog.clone()),
            cluster: RefCell::new(cluster),
        };
        broker.apply_dynamic_configs(&catalog);
        broker
    }

    /// Takes this broker's dynamic configs from a catalog (see `meta::broker_config`).
    fn apply_dynamic_configs(&self, catalog: &Catalog) {
        let layers = DynamicLayers::of(catalog, Some(self.id));
        self.logs.set_dynamic(
            layers.topic_defaults(&self.config.topic_defaults),
            layers.tail_cache_bytes(self.config.tail_cache_bytes),
        );
    }

    /// This core's view of the cluster's live brokers.
    pub fn cluster(&self) -> Arc<ClusterView> {
        self.cluster.borrow().clone()
    }

    /// The core of this node that is broker `broker`, if it is one of this node's.
    pub fn local_core(&self, broker: u32) -> Option<usize> {
        let core = (broker % crate::config::BROKERS_PER_NODE) as usize;
        (crate::cluster::node_of(broker) == self.node && core < self.peers.len()).then_some(core)
    }

    /// Whether this core serves the partition now: the catalog names it the owner and (in a
    /// cluster) its node holds the partition's lease.
    pub fn serves(&self, topic: &TopicName, partition: i32, owner: &PartitionOwner) -> bool {
        owner.broker as i32 == self.id && self.logs.is_leased(topic, partition)
    }

    /// The leader to point a misdirected client at (KIP-951): the owner, if it is live.
    pub fn leader_hint(&self, owner: &PartitionOwner) -> Option<(i32, i32)> {
        self.cluster().is_live(owner.broker).then_some((owner.broker as i32, owner.epoch))
    }

    /// This core's current catalog replica.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        tracing::debug!(
            core = self.core,
            version = catalog.version,
            owned = catalog.owners().filter(|b| *b as i32 == self.id).count(),
            "catalog in use"
        );
        self.apply_dynamic_configs(&catalog);
        self.logs.catalog_changed(&catalog);
        *self.catalog.borrow_mut() = catalog;
    }

    /// Maps a name a Kafka client sent to its Pulsar topic.
    /// `__consumer_offsets` is the internal topic in the metadata namespace.
    pub fn topic_name(&self, kafka_name: &str) -> Result<TopicName, TopicNameError> {
        if kafka_name == OFFSETS_TOPIC {
            return Ok(offsets_topic_name(&self.config));
        }
        TopicName::parse(kafka_name, &self.config.kafka_tenant, &self.config.kafka_namespace)
    }

    /// The name Kafka clients see for a topic they did not name themselves (listings).
    pub fn kafka_name(&self, name: &TopicName) -> String {
        if *name == offsets_topic_name(&self.config) {
            return OFFSETS_TOPIC.to_string();
        }
        name.kafka_name(&self.config.kafka_tenant, &self.config.kafka_namespace)
    }

    /// Applies messages from other cores until every sender is gone.
    pub async fn run_inbox(self: &Rc<Self>, inbox: async_channel::Receiver<CoreMessage>) {
        while let Ok(msg) = inbox.recv().await {
            match msg {
                CoreMessage::Catalog { catalog, done } => {
                    self.set_catalog(catalog);
                    let _ = done.send(()).await;
                }
                CoreMessage::Cursors { coordinator, full, updates } => {
                    crate::group::cursors::apply(self, coordinator, full, updates).await;
                }
                CoreMessage::Stats { reply } => {
                    let _ = reply.send(crate::admin::partition_stats(self)).await;
                }
                CoreMessage::Metrics { reply } => {
                    let _ = reply.send(crate::admin::metrics::core_snapshot(self)).await;
                }
                CoreMessage::Cluster(view) => *self.cluster.borrow_mut() = view,
                // Opening reads a partition's ledgers, sealing waits for its appends: neither
                // may hold up the inbox (a catalog swap waits behind them).
                CoreMessage::Acquire { topic, partition, done } => {
                    let b = self.clone();
                    crate::runtime::spawn(async move {
                        crate::cluster::agent::serve_partition(&b, topic, partition, done).await
                    });
                }
                CoreMessage::Release { topic, partition, graceful, done } => {
                    let b = self.clone();
                    crate::runtime::spawn(async move {
                        crate::cluster::agent::stop_serving(&b, &topic, partition, graceful).await;
                        let _ = done.send(()).await;
                    });
                }
            }
        }
    }
}
