//! The cluster agent: one task on core 0 of every node that keeps the node's place in the
//! cluster. Every `cluster.poll.interval.ms` it
//! 1. keeps the node registered (again after a lost session) and reads the live nodes, which
//!    every core gets as its [`ClusterView`];
//! 2. notices catalog changes of other nodes (`/kopd/catalog-version`) and has the controller
//!    re-read the catalog;
//! 3. takes part in the leader election; the leader's controller moves partitions off nodes
//!    that left and evens out load (only ownership moves: the data is in BookKeeper);
//! 4. takes the lease of every partition the catalog gives this node and has the owning core
//!    open it (which fences the previous owner's ledger), and hands over every partition the
//!    catalog has moved away (sealed first, then the lease is released).
//!
//! A session lost (expired, or no ZooKeeper for a whole session timeout) drops every lease at
//! once: each core fences its logs, so nothing more is acknowledged. A stop signal first
//! deregisters the node (the leader moves its partitions), hands over what moves, and only
//! then stops the cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Claim, ClusterView, NodeInfo, broker_id, leases, membership, node_of};
use crate::broker::{Broker, CoreMessage, Shutdown};
use crate::config::ClusterSettings;
use crate::log::PartitionKey;
use crate::meta::assignment::PartitionOwner;
use crate::meta::catalog::{Catalog, TopicEntry, VERSION_PATH};
use crate::meta::topic_name::TopicName;
use crate::runtime;
use crate::zookeeper::{SessionState, ZooKeeper};

/// How long a round waits for the controller to re-read a changed catalog.
const RELOAD_WAIT: Duration = Duration::from_secs(1);
/// Partitions being taken over at once (each opens its ledgers from the bookies).
const MAX_ACQUIRING: usize = 32;
/// Every this many rounds the catalog replica is compared with the store whatever its version
/// says (a safety net: a replica that missed a change would otherwise wait for the next one).
const FULL_CHECK_ROUNDS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Acquiring,
    Serving,
    Releasing,
}

struct Held {
    broker: u32,
    phase: Phase,
}

pub struct ClusterAgent {
    zk: ZooKeeper,
    me: NodeInfo,
    claim: Claim,
    settings: ClusterSettings,
    broker: Rc<Broker>,
    held: RefCell<HashMap<PartitionKey, Held>>,
    view: RefCell<Arc<ClusterView>>,
    registered: Cell<bool>,
    leading: Cell<bool>,
    leaving: Cell<bool>,
    /// Bumped whenever every lease is lost, so late acquisitions know they are stale.
    generation: Cell<u64>,
    rounds: Cell<u64>,
    /// Woken by ZooKeeper watches on the membership, the leadership and the catalog version,
    /// so a round starts as soon as one changes instead of at the next poll.
    wake: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Whether this session's watches are in place (a new session has none).
    watching: Cell<bool>,
}

impl ClusterAgent {
    /// `zk` is a session of the agent's own, on the metadata store's ZooKeeper (and chroot);
    /// the node is registered already (see [`membership::register`]).
    pub fn new(zk: ZooKeeper, me: NodeInfo, settings: ClusterSettings, broker: Rc<Broker>) -> Rc<Self> {
        let claim = Claim { node: me.id, incarnation: me.incarnation.clone(), broker: 0, epoch: 0 };
        Rc::new(Self {
            zk,
            view: RefCell::new(broker.cluster()),
            me,
            claim,
            settings,
            broker,
            held: RefCell::new(HashMap::new()),
            registered: Cell::new(true),
            leading: Cell::new(false),
            leaving: Cell::new(false),
            generation: Cell::new(0),
            rounds: Cell::new(0),
            wake: async_channel::bounded(1),
            watching: Cell::new(false),
        })
    }

    /// Runs until `signal` fires and the hand-over is done (or timed out), then fires `stop`.
    pub async fn run(self: Rc<Self>, signal: Shutdown, stop: async_channel::Sender<()>) {
        let changes = self.zk.session_changes();
        let mut cut_off_since: Option<Instant> = None;
        let mut leave_deadline: Option<Instant> = None;
        loop {
            while let Ok(s) = changes.try_recv() {
                if s == SessionState::Expired {
                    self.watching.set(false);
                    self.lose_everything("ZooKeeper session expired");
                }
            }
            match self.zk.session_state() {
                SessionState::Connected => cut_off_since = None,
                _ => {
                    let since = *cut_off_since.get_or_insert_with(Instant::now);
                    // The server has ended the session by now: another node may own our
                    // partitions already.
                    if since.elapsed() >= self.zk.session_timeout() && !self.held.borrow().is_empty() {
                        self.lose_everything("no ZooKeeper for a whole session timeout");
                    }
                }
            }
            if signal.is_triggered() && !self.leaving.get() {
                self.leaving.set(true);
                leave_deadline = Some(Instant::now() + Duration::from_millis(self.broker.config.shutdown_timeout_ms));
                self.leave().await;
            }
            if let Some(deadline) = leave_deadline {
                let done = self.held.borrow().values().all(|h| h.phase == Phase::Releasing) && self.all_released();
                if done || Instant::now() >= deadline {
                    if !done {
                        tracing::warn!(held = self.held.borrow().len(), "hand-over unfinished at shutdown timeout");
                    }
                    break;
                }
            }
            if self.zk.session_state() == SessionState::Connected
                && let Err(e) = self.tick().await
            {
                tracing::debug!(error = %e, "cluster round failed; trying again");
            }
            let pause = self.settings.poll_interval;
            if leave_deadline.is_some() {
                runtime::sleep(pause).await;
            } else {
                let woken = std::pin::pin!(self.wake.1.recv());
                runtime::timeout(pause, futures_util::future::select(std::pin::pin!(signal.wait()), woken)).await;
            }
        }
        stop.close();
    }

    fn all_released(&self) -> bool {
        self.held.borrow().is_empty()
    }

    /// Watches what starts a round early; without them, rounds still come every poll interval.
    async fn watch(&self) {
        let [nodes, leader] = membership::watched_paths();
        for path in [nodes.as_str(), leader.as_str(), VERSION_PATH] {
            if let Err(e) = self.zk.watch(path, self.wake.0.clone()).await {
                tracing::debug!(path, error = %e, "cannot watch; polling only");
                return;
            }
        }
        self.watching.set(true);
    }

    /// A planned stop: out of the membership and the leadership, so the leader moves this
    /// node's partitions to others (handed over as the catalog says so).
    async fn leave(self: &Rc<Self>) {
        tracing::info!(
            node = self.me.id,
            held = self.held.borrow().len(),
            "leaving the cluster: handing partitions over"
        );
        if let Err(e) = membership::deregister(&self.zk, &self.me).await {
            tracing::warn!(error = %e, "cannot deregister; partitions move when the session ends");
        }
        if self.leading.replace(false)
            && let Err(e) = membership::resign(&self.zk, &self.claim).await
        {
            tracing::warn!(error = %e, "cannot resign the leadership");
        }
        self.registered.set(false);
        // The last node: nobody will move its partitions away, so it seals them now instead of
        // waiting out shutdown.timeout.ms for moves that cannot come.
        let alone = membership::live_nodes(&self.zk).await.is_ok_and(|n| n.iter().all(|n| n.id == self.me.id));
        if alone {
            let serving: Vec<(PartitionKey, u32)> = self
                .held
                .borrow_mut()
                .iter_mut()
                .filter(|(_, h)| h.phase == Phase::Serving)
                .map(|(k, h)| {
                    h.phase = Phase::Releasing;
                    (k.clone(), h.broker)
                })
                .collect();
            for (key, broker) in serving {
                let agent = self.clone();
                runtime::spawn(async move { agent.hand_over(key, broker).await });
            }
        }
    }

    /// Every lease is gone (or must be taken as gone): every core stops serving at once.
    fn lose_everything(&self, why: &str) {
        let lost: Vec<(PartitionKey, u32)> = self.held.borrow_mut().drain().map(|(k, h)| (k, h.broker)).collect();
        self.generation.set(self.generation.get() + 1);
        self.registered.set(false);
        self.leading.set(false);
        if !lost.is_empty() {
            tracing::warn!(
                partitions = lost.len(),
                reason = why,
                "lost every partition lease; nothing more is acknowledged"
            );
        }
        for ((topic, partition), broker) in lost {
            self.tell_core(broker, topic, partition, false);
        }
    }

    /// Sends a release to the core serving a partition, without waiting.
    fn tell_core(&self, broker: u32, topic: TopicName, partition: i32, graceful: bool) {
        let Some(core) = self.broker.local_core(broker) else { return };
        let peer = self.broker.peers[core].clone();
        runtime::spawn(async move {
            let (done, _wait) = async_channel::bounded(1);
            let _ = peer.send(CoreMessage::Release { topic, partition, graceful, done }).await;
        });
    }

    async fn tick(self: &Rc<Self>) -> Result<(), String> {
        if !self.registered.get() && !self.leaving.get() {
            if !membership::try_register(&self.zk, &self.me).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
            tracing::info!(node = self.me.id, "registered in the cluster");
            self.registered.set(true);
        }
        if !self.watching.get() {
            self.watch().await;
        }
        let nodes = membership::live_nodes(&self.zk).await.map_err(|e| e.to_string())?;
        if !self.leaving.get() && !nodes.iter().any(|n| n.id == self.me.id && n.incarnation == self.me.incarnation) {
            // The registration went with a session that ended under us: register again.
            self.registered.set(false);
        }
        let leader = if self.leaving.get() {
            None
        } else {
            membership::leader(&self.zk, &self.claim).await.map_err(|e| e.to_string())?
        };
        let leading = leader.as_ref().is_some_and(|l| l.incarnation == self.claim.incarnation);
        self.leading.set(leading);
        let view = ClusterView { nodes, controller: leader.map_or(-1, |l| broker_id(l.node, 0)) };
        let changed = **self.view.borrow() != view;
        if changed {
            let view = Arc::new(view);
            *self.view.borrow_mut() = view.clone();
            for peer in &self.broker.peers {
                let _ = peer.send(CoreMessage::Cluster(view.clone())).await;
            }
        }
        let stored = match self.zk.get(VERSION_PATH).await.map_err(|e| e.to_string())? {
            Some((d, _)) => std::str::from_utf8(&d).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0),
            None => 0,
        };
        let rounds = self.rounds.get() + 1;
        self.rounds.set(rounds);
        if stored != self.broker.catalog().version {
            // Waited for, so this round already follows the new catalog (bounded: a busy
            // controller sees the change anyway and the next round follows it).
            runtime::timeout(RELOAD_WAIT, self.broker.controller.reload_and_wait(stored)).await;
        } else if rounds.is_multiple_of(FULL_CHECK_ROUNDS) {
            self.broker.controller.reload(crate::meta::controller::RELOAD_ALWAYS);
        }
        let brokers = self.view.borrow().broker_ids();
        if (changed || leading) && !brokers.is_empty() {
            self.broker.controller.place(brokers, leading).await.map_err(|e| e.to_string())?;
        }
        self.follow_catalog();
        tracing::trace!(
            held = self.held.borrow().len(),
            version = self.broker.catalog().version,
            leading,
            "cluster round"
        );
        Ok(())
    }

    /// Takes the leases of partitions the catalog gives this node, hands over those it has
    /// moved elsewhere.
    fn follow_catalog(self: &Rc<Self>) {
        let catalog = self.broker.catalog();
        let mut acquiring = self.held.borrow().values().filter(|h| h.phase == Phase::Acquiring).count();
        let mut moved: Vec<(PartitionKey, u32)> = Vec::new();
        for (key, h) in self.held.borrow().iter() {
            if h.phase != Phase::Serving {
                continue;
            }
            if owner_of(&catalog, key).is_none_or(|o| o.broker != h.broker) {
                moved.push((key.clone(), h.broker));
            }
        }
        for (key, broker) in moved {
            tracing::debug!(topic = %key.0, partition = key.1, from = broker, "handing partition over");
            if let Some(h) = self.held.borrow_mut().get_mut(&key) {
                h.phase = Phase::Releasing;
            }
            let agent = self.clone();
            runtime::spawn(async move { agent.hand_over(key, broker).await });
        }
        if self.leaving.get() {
            return;
        }
        // Producers wait on data partitions; groups wait on `__consumer_offsets`, whose
        // clients retry a missing coordinator anyway. On a failover both compete for the
        // bookies and ZooKeeper, so the offsets partitions start once no data partition is
        // still being taken over (a finished take-over wakes the next round).
        let offsets = crate::group::offsets_topic_name(&self.broker.config);
        let (internal, data): (Vec<_>, Vec<_>) = catalog.topics().partition(|t| t.name == offsets);
        for topic in data.into_iter().chain(internal) {
            if topic.name == offsets
                && self.held.borrow().iter().any(|(k, h)| h.phase == Phase::Acquiring && k.0 != offsets)
            {
                break;
            }
            for (p, owner) in topic.partitions.iter().enumerate() {
                if node_of(owner.broker) != self.me.id || acquiring >= MAX_ACQUIRING {
                    continue;
                }
                let key = (topic.name.clone(), p as i32);
                if self.held.borrow().contains_key(&key) {
                    continue;
                }
                self.held.borrow_mut().insert(key.clone(), Held { broker: owner.broker, phase: Phase::Acquiring });
                acquiring += 1;
                let (agent, topic, owner) = (self.clone(), topic.clone(), *owner);
                tracing::debug!(topic = %topic.name, partition = p, broker = owner.broker, version = catalog.version, "taking partition over");
                runtime::spawn(async move { agent.take_over(topic, p as i32, owner).await });
            }
        }
    }

    /// Takes a partition's lease and has its core open it.
    async fn take_over(self: Rc<Self>, topic: Arc<TopicEntry>, partition: i32, owner: PartitionOwner) {
        let key = (topic.name.clone(), partition);
        let generation = self.generation.get();
        let path = leases::lease_path(&topic.name, partition);
        let claim = Claim { broker: owner.broker, epoch: owner.epoch, ..self.claim.clone() };
        let started = Instant::now();
        let taken = match leases::acquire(&self.zk, &path, &claim).await {
            Ok(true) => true,
            Ok(false) => false,
            Err(e) => {
                tracing::debug!(topic = %topic.name, partition, error = %e, "cannot take the lease yet");
                false
            }
        };
        let opened = if !taken {
            Err(String::new())
        } else {
            match self.broker.local_core(owner.broker) {
                Some(core) => {
                    let (done, reply) = async_channel::bounded(1);
                    let msg = CoreMessage::Acquire { topic: topic.clone(), partition, done };
                    match self.broker.peers[core].send(msg).await {
                        Ok(()) => reply.recv().await.unwrap_or_else(|_| Err("core stopped".into())),
                        Err(_) => Err("core stopped".into()),
                    }
                }
                None => Err(format!("broker {} is not on this node", owner.broker)),
            }
        };
        let stale = self.generation.get() != generation;
        match opened {
            Ok(()) if !stale => {
                tracing::info!(topic = %topic.name, partition, broker = owner.broker, epoch = owner.epoch,
                    took_ms = started.elapsed().as_millis() as u64, "serving partition");
                if let Some(h) = self.held.borrow_mut().get_mut(&key) {
                    h.phase = Phase::Serving;
                }
                // Partitions waiting for this one (see `follow_catalog`) may start now. (Not
                // after a failure: the lease may still be held, and the poll retries it.)
                let _ = self.wake.0.try_send(());
            }
            Ok(()) => self.tell_core(owner.broker, topic.name.clone(), partition, false),
            Err(e) => {
                if !e.is_empty() {
                    tracing::warn!(topic = %topic.name, partition, error = %e, "cannot open partition; giving its lease back");
                    let _ = leases::release(&self.zk, &path, &claim).await;
                }
                if !stale {
                    self.held.borrow_mut().remove(&key);
                }
            }
        }
    }

    /// A planned move: the core seals the partition, then the lease goes, so the new owner
    /// finds a closed ledger and can take the lease at once.
    async fn hand_over(self: Rc<Self>, key: PartitionKey, broker: u32) {
        let generation = self.generation.get();
        let (topic, partition) = key.clone();
        if let Some(core) = self.broker.local_core(broker) {
            let (done, wait) = async_channel::bounded(1);
            let msg = CoreMessage::Release { topic: topic.clone(), partition, graceful: true, done };
            if self.broker.peers[core].send(msg).await.is_ok() {
                let _ = wait.recv().await;
            }
        }
        let path = leases::lease_path(&topic, partition);
        let claim = Claim { broker, ..self.claim.clone() };
        // Until it is gone (or the session, with every lease) the new owner cannot start.
        for attempt in 0..50u32 {
            match leases::release(&self.zk, &path, &claim).await {
                Ok(()) => break,
                Err(e) => {
                    if self.generation.get() != generation {
                        break;
                    }
                    tracing::debug!(topic = %topic, partition, attempt, error = %e, "cannot release the lease yet");
                    runtime::sleep(self.settings.poll_interval).await;
                }
            }
        }
        if self.generation.get() == generation {
            self.held.borrow_mut().remove(&key);
        }
        tracing::info!(%topic, partition, "partition handed over");
    }
}

fn owner_of(catalog: &Catalog, key: &PartitionKey) -> Option<PartitionOwner> {
    catalog.get(&key.0)?.partitions.get(usize::try_from(key.1).ok()?).copied()
}

/// On the partition's core: open it and serve it (its node holds the lease now).
pub async fn serve_partition(
    broker: &Broker,
    topic: Arc<TopicEntry>,
    partition: i32,
    done: async_channel::Sender<Result<(), String>>,
) {
    let opened = broker.logs.acquire(&topic, partition).await.map(|_| ()).map_err(|e| e.to_string());
    let _ = done.send(opened.clone()).await;
    if opened.is_ok() && topic.name == crate::group::offsets_topic_name(&broker.config) {
        broker.groups.load_one(broker, &topic, partition).await;
    }
}

/// On the partition's core: stop serving it.
pub async fn stop_serving(broker: &Broker, topic: &TopicName, partition: i32, graceful: bool) {
    if *topic == crate::group::offsets_topic_name(&broker.config) {
        let count = broker.catalog().get(topic).map_or(0, |t| t.partitions.len() as i32);
        broker.groups.unload(partition, count);
    }
    broker.logs.release(topic, partition, graceful).await;
}
