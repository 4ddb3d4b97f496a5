//! The controller: the one writer of the catalog, running on core 0.
//!
//! Cores send topic-admin operations here. The controller applies a request's operations to a
//! copy of the catalog, persists the changes in one atomic store commit, publishes the new
//! catalog to every core, waits until each core has swapped it in, and only then replies, so
//! a client that created a topic on one broker (core) finds it on every other.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

use super::catalog::{Catalog, TopicEntry};
use super::client_quotas::{self, QuotaAlteration};
use super::store::{MetadataStoreThread, StoreError, StoreOp};

/// `ControllerClient::reload`'s `seen` that re-reads whatever the version: a periodic check
/// that the replica still equals the store.
pub const RELOAD_ALWAYS: i64 = -1;

/// Commits tried before a change that keeps meeting other writers' changes gives up.
const MAX_ATTEMPTS: u32 = 8;
use super::topic_config;
use super::topic_name::TopicName;

mod entity_configs;
mod topic_admin;

pub use entity_configs::BrokerConfigAlteration;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// Kafka forbids topics whose names differ only in '.' versus '_' (metric names collide).
    #[error("Topic '{0}' collides with existing topic: {1}")]
    TopicCollision(String, String),
    #[error("this server does not host this topic")]
    UnknownTopic,
    #[error("no topic with this id")]
    UnknownTopicId,
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("metadata store failed: {0}")]
    Store(String),
    #[error("the controller is not available")]
    ControllerUnavailable,
    /// A client quota alteration Kafka refuses (INVALID_REQUEST / UNSUPPORTED_VERSION).
    #[error("{0:?}")]
    Quota(client_quotas::QuotaError),
}

#[derive(Debug, Clone)]
pub enum TopicRef {
    Name(TopicName),
    Id(Uuid),
}

#[derive(Debug, Clone)]
pub enum AdminOp {
    CreateTopic {
        name: TopicName,
        partitions: i32,
        /// Owner core per partition, when the client chose replica assignments.
        owners: Option<Vec<u32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    DeleteTopic(TopicRef),
    CreatePartitions {
        name: TopicName,
        total: i32,
        owners: Option<Vec<u32>>,
        validate_only: bool,
    },
    /// A partition reassignment: `broker` owns the partition from now on (a new leader epoch
    /// if it moves), and load balancing leaves it there.
    Reassign {
        name: TopicName,
        partition: i32,
        broker: u32,
    },
    /// IncrementalAlterConfigs (`replace`: legacy AlterConfigs) of a topic's overrides.
    AlterTopicConfigs {
        name: TopicName,
        changes: Vec<topic_config::ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
}

pub type AdminResult = Result<Arc<TopicEntry>, AdminError>;

/// What a core publishes to every core after a change.
pub type CatalogPublisher = Box<dyn Fn(Arc<Catalog>) -> futures_lite::future::Boxed<()>>;

pub enum ControllerRequest {
    Admin {
        ops: Vec<AdminOp>,
        reply: async_channel::Sender<Vec<AdminResult>>,
    },
    /// A block of `count` fresh producer ids; the reply is the first.
    ProducerIds {
        count: i64,
        reply: async_channel::Sender<Result<i64, AdminError>>,
    },
    /// Another writer may have changed the catalog (version `seen` in the store): re-read it
    /// and publish it if it is newer than this controller's.
    Reload {
        seen: i64,
        /// Told (dropped) once the re-read catalog, if any, has reached every core.
        done: Option<async_channel::Sender<()>>,
    },
    /// Compares the catalog's version in the store with this controller's and re-reads it if
    /// they differ; `done` is told (dropped) once any re-read catalog has reached every core.
    /// For a node about to refuse a request because its replica names another owner: the
    /// replica may only be behind (another node's controller moved the partition here).
    /// Requests asked before a check started are answered by that check (a request naming
    /// many moved partitions costs one store read).
    CatchUp {
        asked: std::time::Instant,
        done: async_channel::Sender<()>,
    },
    /// AlterClientQuotas: per entity its ops (`None`: remove the key), applied to the quotas
    /// the catalog holds when the change is made; one result per alteration.
    ClientQuotas {
        alterations: Vec<QuotaAlteration>,
        validate_only: bool,
        reply: async_channel::Sender<Vec<Result<(), AdminError>>>,
    },
    /// AlterConfigs of broker resources: dynamic broker configs, one result per alteration.
    BrokerConfigs {
        alterations: Vec<BrokerConfigAlteration>,
        validate_only: bool,
        reply: async_channel::Sender<Vec<Result<(), AdminError>>>,
    },
    /// The live brokers (sorted) new partitions are placed on; with `rebalance` (the cluster's
    /// leader) partitions of brokers not among them move, and load is evened out.
    Place {
        brokers: Vec<u32>,
        rebalance: bool,
        reply: async_channel::Sender<Result<(), AdminError>>,
    },
}

/// What became of a planned catalog change.
enum Committed {
    Yes,
    /// Another writer changed the catalog first; it was re-read: plan again.
    Retry,
    No(AdminError),
}

/// A core's handle to the controller.
#[derive(Clone)]
pub struct ControllerClient {
    inbox: async_channel::Sender<ControllerRequest>,
}

impl ControllerClient {
    pub fn new(inbox: async_channel::Sender<ControllerRequest>) -> Self {
        Self { inbox }
    }

    pub async fn submit(&self, ops: Vec<AdminOp>) -> Vec<AdminResult> {
        let n = ops.len();
        let (reply, answer) = async_channel::bounded(1);
        if self.inbox.send(ControllerRequest::Admin { ops, reply }).await.is_err() {
            return vec![Err(AdminError::ControllerUnavailable); n];
        }
        answer.recv().await.unwrap_or_else(|_| vec![Err(AdminError::ControllerUnavailable); n])
    }

    /// Asks for a re-read of the catalog, whose stored version is now `seen` (never waits:
    /// a full inbox is already busy and will see the change).
    pub fn reload(&self, seen: i64) {
        let _ = self.inbox.try_send(ControllerRequest::Reload { seen, done: None });
    }

    /// Like [`Self::reload`], and waits until every core has the re-read catalog (or the
    /// controller gave up on it).
    pub async fn reload_and_wait(&self, seen: i64) {
        let (done, finished) = async_channel::bounded(1);
        if self.inbox.send(ControllerRequest::Reload { seen, done: Some(done) }).await.is_ok() {
            let _ = finished.recv().await;
        }
    }

    /// See [`ControllerRequest::CatchUp`].
    pub async fn catch_up(&self) {
        let (done, finished) = async_channel::bounded(1);
        let asked = std::time::Instant::now();
        if self.inbox.send(ControllerRequest::CatchUp { asked, done }).await.is_ok() {
            let _ = finished.recv().await;
        }
    }

    /// See [`ControllerRequest::ClientQuotas`].
    pub async fn alter_client_quotas(
        &self,
        alterations: Vec<QuotaAlteration>,
        validate_only: bool,
    ) -> Vec<Result<(), AdminError>> {
        let n = alterations.len();
        self.per_item(n, |reply| ControllerRequest::ClientQuotas { alterations, validate_only, reply }).await
    }

    /// See [`ControllerRequest::BrokerConfigs`].
    pub async fn alter_broker_configs(
        &self,
        alterations: Vec<BrokerConfigAlteration>,
        validate_only: bool,
    ) -> Vec<Result<(), AdminError>> {
        let n = alterations.len();
        self.per_item(n, |reply| ControllerRequest::BrokerConfigs { alterations, validate_only, reply }).await
    }

    /// Sends a request answered with one result per item (`n` of them).
    async fn per_item(
        &self,
        n: usize,
        request: impl FnOnce(async_channel::Sender<Vec<Result<(), AdminError>>>) -> ControllerRequest,
    ) -> Vec<Result<(), AdminError>> {
        let (reply, answer) = async_channel::bounded(1);
        if self.inbox.send(request(reply)).await.is_err() {
            return vec![Err(AdminError::ControllerUnavailable); n];
        }
        answer.recv().await.unwrap_or_else(|_| vec![Err(AdminError::ControllerUnavailable); n])
    }

    /// See [`ControllerRequest::Place`].
    pub async fn place(&self, brokers: Vec<u32>, rebalance: bool) -> Result<(), AdminError> {
        let (reply, answer) = async_channel::bounded(1);
        self.inbox
            .send(ControllerRequest::Place { brokers, rebalance, reply })
            .await
            .map_err(|_| AdminError::ControllerUnavailable)?;
        answer.recv().await.map_err(|_| AdminError::ControllerUnavailable)?
    }

    pub async fn producer_ids(&self, count: i64) -> Result<i64, AdminError> {
        let (reply, answer) = async_channel::bounded(1);
        self.inbox
            .send(ControllerRequest::ProducerIds { count, reply })
            .await
            .map_err(|_| AdminError::ControllerUnavailable)?;
        answer.recv().await.map_err(|_| AdminError::ControllerUnavailable)?
    }
}

pub struct Controller {
    catalog: Arc<Catalog>,
    /// Broker defaults of topic configs (list configs are appended to from them).
    topic_defaults: crate::config::TopicDefaults,
    store: MetadataStoreThread,
    max_partitions: i32,
    /// The brokers new partitions go to (sorted): a single node's cores, or a cluster's live
    /// brokers as its membership last said.
    brokers: Vec<u32>,
    /// The store may hold a newer catalog than `catalog` while its conditional-write versions
    /// are already the newer ones (a re-read that failed half way, a commit whose outcome is
    /// unknown): planning from `catalog` then could overwrite another writer's change, so the
    /// next change re-reads first.
    stale: bool,
}

impl Controller {
    pub fn new(
        catalog: Arc<Catalog>,
        store: MetadataStoreThread,
        max_partitions: i32,
        brokers: Vec<u32>,
        topic_defaults: crate::config::TopicDefaults,
    ) -> Self {
        Self { catalog, topic_defaults, store, max_partitions, brokers, stale: false }
    }

    /// Re-reads the catalog if an earlier failure left it possibly behind the store.
    async fn ensure_fresh(&mut self, publish: &CatalogPublisher) -> Result<(), AdminError> {
        if self.stale {
            self.reload(publish).await.map_err(|e| AdminError::Store(e.to_string()))?;
        }
        Ok(())
    }

    /// A commit failed other than by conflict: it may or may not have applied.
    fn commit_failed(&mut self, e: StoreError) -> AdminError {
        self.stale = true;
        AdminError::Store(e.to_string())
    }

    /// Serves requests until every client handle is dropped.
    pub async fn run(mut self, inbox: async_channel::Receiver<ControllerRequest>, publish: CatalogPublisher) {
        // When the last catch-up check started.
        let mut last_check: Option<std::time::Instant> = None;
        while let Ok(req) = inbox.recv().await {
            match req {
                ControllerRequest::Admin { ops, reply } => {
                    let results = self.admin(&ops, &publish).await;
                    let _ = reply.send(results).await;
                }
                ControllerRequest::ClientQuotas { alterations, validate_only, reply } => {
                    let results = self.client_quotas(&alterations, validate_only, &publish).await;
                    let _ = reply.send(results).await;
                }
                ControllerRequest::BrokerConfigs { alterations, validate_only, reply } => {
                    let results = self.broker_configs(&alterations, validate_only, &publish).await;
                    let _ = reply.send(results).await;
                }
                ControllerRequest::ProducerIds { count, reply } => {
                    let _ = reply.send(self.allocate_producer_ids(count).await).await;
                }
                ControllerRequest::Place { mut brokers, rebalance, reply } => {
                    brokers.sort_unstable();
                    brokers.dedup();
                    self.brokers = brokers;
                    let r = if rebalance { self.rebalance(&publish).await } else { Ok(()) };
                    let _ = reply.send(r).await;
                }
                ControllerRequest::CatchUp { asked, done: _done } => {
                    if last_check.is_some_and(|started| started > asked) {
                        continue;
                    }
                    last_check = Some(std::time::Instant::now());
                    if let Err(e) = self.catch_up(&publish).await {
                        tracing::debug!(error = %e, "cannot compare the catalog with the store");
                    }
                }
                ControllerRequest::Reload { seen, done: _done } => {
                    if (seen == RELOAD_ALWAYS || seen != self.catalog.version)
                        && let Err(e) = self.reload(&publish).await
                    {
                        tracing::warn!(error = %e, "cannot re-read the catalog");
                    }
                }
            }
        }
    }

    /// Applies a request's ops and commits them as one change. Another writer's change in
    /// between (another node's controller) refuses the commit; the catalog is then re-read
    /// and the ops applied again to what is there now.
    async fn admin(&mut self, ops: &[AdminOp], publish: &CatalogPublisher) -> Vec<AdminResult> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(e) = self.ensure_fresh(publish).await {
                return ops.iter().map(|_| Err(e.clone())).collect();
            }
            let mut next = (*self.catalog).clone();
            let mut store_ops = Vec::new();
            let results: Vec<AdminResult> = ops.iter().map(|op| self.apply(&mut next, op, &mut store_ops)).collect();
            if store_ops.is_empty() {
                return results;
            }
            let err = match self.commit_next(next, store_ops, attempt, publish).await {
                Committed::Yes => return results,
                Committed::Retry => continue,
                Committed::No(err) => err,
            };
            return Self::failed(ops, results, err);
        }
    }

    /// Commits `next` (a change of the catalog, persisted by `store_ops`) with the next
    /// version and publishes it. Another writer's change in between re-reads the catalog:
    /// the caller plans again (`Retry`, up to MAX_ATTEMPTS).
    async fn commit_next(
        &mut self,
        mut next: Catalog,
        mut store_ops: Vec<StoreOp>,
        attempt: u32,
        publish: &CatalogPublisher,
    ) -> Committed {
        store_ops.push(next.version_op());
        match self.store.commit(store_ops).await {
            Ok(()) => {
                tracing::debug!(version = next.version, "catalog changed by an admin request");
                self.catalog = Arc::new(next);
                publish(self.catalog.clone()).await;
                Committed::Yes
            }
            Err(StoreError::Conflict(_)) if attempt < MAX_ATTEMPTS => match self.reload(publish).await {
                Ok(()) => Committed::Retry,
                Err(e) => Committed::No(AdminError::Store(e.to_string())),
            },
            Err(e) => Committed::No(self.commit_failed(e)),
        }
    }

    /// Results of a change that was not committed: what would have succeeded failed with `err`.
    fn failed(ops: &[AdminOp], mut results: Vec<AdminResult>, err: AdminError) -> Vec<AdminResult> {
        for (r, op) in results.iter_mut().zip(ops) {
            if r.is_ok() && !op.validate_only() {
                *r = Err(err.clone());
            }
        }
        results
    }

    /// Moves partitions onto the live brokers (see [`Catalog::rebalance`]), committed as one
    /// catalog change.
    async fn rebalance(&mut self, publish: &CatalogPublisher) -> Result<(), AdminError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.ensure_fresh(publish).await?;
            let mut next = (*self.catalog).clone();
            let mut ops = next.ensure_cluster_id();
            ops.extend(next.rebalance(&self.brokers));
            if ops.is_empty() {
                return Ok(());
            }
            ops.push(next.version_op());
            match self.store.commit(ops).await {
                Ok(()) => {
                    tracing::info!(brokers = ?self.brokers, version = next.version, "partitions reassigned");
                    self.catalog = Arc::new(next);
                    publish(self.catalog.clone()).await;
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) if attempt < MAX_ATTEMPTS => {
                    self.reload(publish).await.map_err(|e| AdminError::Store(e.to_string()))?
                }
                Err(e) => return Err(self.commit_failed(e)),
            }
        }
    }

    /// Re-reads the catalog if the store's version differs from this one's.
    async fn catch_up(&mut self, publish: &CatalogPublisher) -> Result<(), StoreError> {
        let stored = self
            .store
            .with(|s| {
                s.refresh(super::catalog::VERSION_PATH)?;
                Catalog::stored_version(s)
            })
            .await??;
        if stored != self.catalog.version || self.stale {
            self.reload(publish).await?;
        }
        Ok(())
    }

    /// Re-reads the catalog from the store and publishes it.
    async fn reload(&mut self, publish: &CatalogPublisher) -> Result<(), StoreError> {
        // A failed re-read may have refreshed part of the store's cache: stale until one succeeds.
        self.stale = true;
        let loaded = self.store.with(Catalog::reload).await??;
        self.stale = false;
        let differs = !loaded.same_content(&self.catalog);
        if loaded.version == self.catalog.version && differs {
            tracing::warn!(
                version = loaded.version,
                "catalog replica differed from the store at the same version; replaced"
            );
        }
        if loaded.version != self.catalog.version || differs {
            tracing::debug!(from = self.catalog.version, to = loaded.version, "catalog changed elsewhere");
            self.catalog = Arc::new(loaded);
            publish(self.catalog.clone()).await;
        }
        Ok(())
    }

    /// Reserves producer ids durably, so ids are never handed out twice across restarts (or
    /// by two nodes: the counter is written conditionally on the value read, and a conflict
    /// re-reads it). The counter is not part of the catalog's version.
    async fn allocate_producer_ids(&mut self, count: i64) -> Result<i64, AdminError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let stored = self.store.with(|s| Catalog::stored_next_producer_id(s)).await.and_then(|r| r);
            let first = stored.map_err(|e| AdminError::Store(e.to_string()))?.max(self.catalog.next_producer_id);
            let mut next = (*self.catalog).clone();
            next.next_producer_id = first + count.max(1);
            match self.store.commit(vec![next.producer_id_op()]).await {
                Ok(()) => {
                    self.catalog = Arc::new(next);
                    return Ok(first);
                }
                Err(StoreError::Conflict(_)) if attempt < MAX_ATTEMPTS => {}
                Err(e) => return Err(self.commit_failed(e)),
            }
        }
    }

    fn check_owners(&self, owners: &Option<Vec<u32>>, count: usize) -> Result<(), AdminError> {
        if let Some(o) = owners {
            if o.len() != count {
                return Err(AdminError::InvalidReplicaAssignment(format!(
                    "{} assignments given for {count} partitions",
                    o.len()
                )));
            }
            if let Some(bad) = o.iter().find(|b| self.brokers.binary_search(b).is_err()) {
                return Err(AdminError::InvalidReplicaAssignment(format!("broker {bad} does not exist")));
            }
        }
        Ok(())
    }
}

/// FNV-1a: a stable hash (unlike std's, which is randomly seeded per process).
pub fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
