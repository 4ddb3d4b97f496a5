//! One core's broker: the state every handler on that core reads.
//!
//! Each core is advertised as its own Kafka broker (id = core index). Its `Broker` holds the
//! core's read-only catalog replica, its handle to the controller and the shutdown signal. It
//! lives in an `Rc` on its core and is never shared with another thread.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use crate::config::Config;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC, offsets_topic_name};
use crate::kafka::ProducerIdBlock;
use crate::log::PartitionLogs;
use crate::meta::catalog::Catalog;
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
    /// Kafka broker id, equal to the core index.
    pub id: i32,
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
}

impl Broker {
    pub fn new(
        id: i32,
        config: Arc<Config>,
        catalog: Arc<Catalog>,
        controller: ControllerClient,
        shutdown: Shutdown,
        logs: PartitionLogs,
        peers: Vec<async_channel::Sender<CoreMessage>>,
    ) -> Self {
        let responses = ResponseMemory::new(config.connections.queued_max_response_bytes);
        Self {
            id,
            config,
            controller,
            shutdown,
            logs,
            producer_ids: ProducerIdBlock::default(),
            groups: GroupCoordinator::new(),
            peers,
            responses,
            catalog: RefCell::new(catalog),
        }
    }

    /// This core's current catalog replica.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
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
    pub async fn run_inbox(&self, inbox: async_channel::Receiver<CoreMessage>) {
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
            }
        }
    }
}
