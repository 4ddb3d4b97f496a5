//! `kopd serve`: opens the metadata store, fits the catalog to the core count, binds one
//! listener per core, starts one pinned executor per core and waits for a stop signal.

use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::broker::{Broker, CoreMessage, Shutdown};
use crate::cluster::agent::ClusterAgent;
use crate::cluster::{ClusterView, NodeInfo};
use crate::config::{BookKeeperSettings, Config, DigestKind, Flush, MetadataStoreKind};
use crate::log::recovery::{self, PartitionKey, RecoveredLogs};
use crate::log::{PartitionLogs, managed_ledger::RecoveredLog};
use crate::meta::catalog::Catalog;
use crate::meta::controller::{CatalogPublisher, Controller, ControllerClient};
use crate::meta::store::{LocalMetadataStore, MetadataStore, MetadataStoreThread, ZooKeeperMetadataStore};
use crate::storage::Backend;
use crate::storage::LedgerId;
use crate::storage::bookkeeper::{BookKeeperConfig, BookKeeperStore, DigestType};
use crate::storage::local::{FlushPolicy, LocalLedgerStore, LocalStoreConfig, RecoveredLedgers};
use crate::zookeeper::ZooKeeper;
use crate::{net, runtime};

/// What a core opens its ledger store from.
enum CoreStorage {
    /// Its part of the local store's recovery scan.
    Local(RecoveredLedgers),
    BookKeeper(BookKeeperConfig, ZooKeeper),
}

/// The BookKeeper client's settings from kopd's keys.
fn bookkeeper_config(bk: &BookKeeperSettings) -> BookKeeperConfig {
    BookKeeperConfig {
        metadata_service_uri: format!("zk+hierarchical://{}{}", bk.zk_connect, bk.ledgers_root),
        ensemble: bk.ensemble_size,
        write_quorum: bk.write_quorum,
        ack_quorum: bk.ack_quorum,
        digest: match bk.digest {
            DigestKind::Crc32c => DigestType::Crc32c,
            DigestKind::Crc32 => DigestType::Crc32,
            DigestKind::Dummy => DigestType::Dummy,
        },
        password: bk.password.clone(),
        max_inflight_add_bytes: bk.max_inflight_add_bytes,
        add_timeout: bk.add_entry_timeout,
        read_timeout: bk.read_entry_timeout,
        speculative_read_timeout: bk.speculative_read_timeout,
        ..BookKeeperConfig::default()
    }
}

/// The BookKeeper client's own ZooKeeper session (as a Pulsar broker's BookKeeper client has
/// one apart from its metadata store's), on a thread of its own.
fn connect_bookkeeper_zk(bk: &BookKeeperSettings, config: &Config) -> anyhow::Result<ZooKeeper> {
    ZooKeeper::connect(&bk.zk_connect, config.zookeeper_session_timeout, config.control_queue_capacity).map_err(|e| {
        anyhow::anyhow!("config key `metadata.service.uri`: cannot reach ZooKeeper {}: {e}", bk.zk_connect)
    })
}

/// What recovery hands one core: its partitions' rebuilt logs and their ledgers.
#[derive(Default)]
struct CoreShare {
    logs: std::collections::HashMap<PartitionKey, RecoveredLog>,
    ledgers: Vec<LedgerId>,
}

pub fn serve(mut config: Config) -> anyhow::Result<()> {
    if !config.transparent_huge_pages
        && let Err(e) = crate::runtime::alloc::disable_transparent_huge_pages()
    {
        tracing::warn!(error = %e, "cannot opt out of transparent huge pages");
    }
    match runtime::raise_open_files_limit() {
        Ok(n) if (n as usize) < config.connections.max_per_core * config.cores => {
            warn!(open_files = n, "the open-files limit is below max.connections")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data.dir {}", config.data_dir.display()))?;
    // Resolved once, here: the io_uring layer opens files relative to no directory, so a
    // relative path would fail on the cores (and the working directory is not theirs to know).
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("cannot resolve data.dir {}", config.data_dir.display()))?;
    // Held until the process exits (the kernel drops it on kill -9 too).
    let _data_dir_lock = runtime::lock_exclusively(&config.data_dir.join("kopd.lock")).with_context(|| {
        format!("data.dir {} is in use by another kopd process (or cannot be locked)", config.data_dir.display())
    })?;
    let config = Arc::new(config);
    let mut store: Box<dyn MetadataStore> = match &config.metadata_store {
        MetadataStoreKind::Local => Box::new(LocalMetadataStore::open(&config.data_dir.join("meta"))?),
        MetadataStoreKind::ZooKeeper { connect } => Box::new(
            ZooKeeperMetadataStore::open(connect, config.zookeeper_session_timeout, config.control_queue_capacity)
                .with_context(|| format!("config key `metadata.store`: cannot open zk://{connect}"))?,
        ),
    };
    // In a cluster other nodes write the catalog while this one reads it: read it so that it
    // is never labelled newer than it is (see `Catalog::reload`).
    let mut catalog =
        if config.cluster.is_some() { Catalog::reload(store.as_mut())? } else { Catalog::load(store.as_ref())? };
    let cluster_zk = match (&config.cluster, &config.metadata_store) {
        (Some(_), MetadataStoreKind::ZooKeeper { connect }) => Some(
            ZooKeeper::connect(connect, config.zookeeper_session_timeout, config.control_queue_capacity)
                .map_err(|e| anyhow::anyhow!("config key `metadata.store`: cannot reach ZooKeeper {connect}: {e}"))?,
        ),
        _ => None,
    };
    let node = match (&config.cluster, &cluster_zk) {
        (Some(c), Some(zk)) => {
            futures_lite::future::block_on(crate::cluster::membership::node_id(zk, c.node_id, &config.data_dir))?
        }
        _ => 0,
    };
    // The brokers new partitions go to until the cluster's membership says more.
    let own_brokers: Vec<u32> = (0..config.cores).map(|c| crate::cluster::broker_id(node, c) as u32).collect();
    if config.cluster.is_some() {
        // Other nodes may be writing the catalog too: a conflict means read it again.
        for attempt in 1.. {
            let mut ops = catalog.ensure_cluster_id();
            ops.extend(crate::group::ensure_offsets_topic(&mut catalog, &config, &own_brokers));
            if ops.is_empty() {
                break;
            }
            ops.push(catalog.version_op());
            match store.commit(ops) {
                Ok(()) => break,
                Err(crate::meta::store::StoreError::Conflict(_)) if attempt < 8 => {
                    catalog = Catalog::reload(store.as_mut())?
                }
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        let previous_cores = catalog.cores;
        let mut ops = catalog.fit_to_cores(config.cores as u32);
        ops.extend(crate::group::ensure_offsets_topic(&mut catalog, &config, &own_brokers));
        if !ops.is_empty() {
            ops.push(catalog.version_op());
            store.commit(ops)?;
            if previous_cores != 0 && previous_cores != catalog.cores {
                info!(from = previous_cores, to = catalog.cores, "core count changed; partitions reassigned");
            }
        }
    }
    let catalog = Arc::new(catalog);

    // Rebuild every partition's log from the ledger store, then deal each core its share.
    let ledger_dir = config.data_dir.join("ledgers");
    let (mut partitions, mut recovered_store) = match &config.bookkeeper {
        None => {
            let RecoveredLogs { partitions, store: recovered } = recovery::recover(store.as_ref(), &ledger_dir)?;
            (partitions, Some(recovered))
        }
        // In a cluster every partition comes with its lease, read afresh when it is taken.
        Some(_) if config.cluster.is_some() => (Default::default(), None),
        // Each core reads its partitions from the bookies when it opens them.
        Some(_) => (recovery::recover_metadata(store.as_ref())?, None),
    };
    let bookkeeper = match &config.bookkeeper {
        Some(bk) => Some((bookkeeper_config(bk), connect_bookkeeper_zk(bk, &config)?)),
        None => None,
    };
    let mut shares: Vec<CoreShare> = (0..config.cores).map(|_| CoreShare::default()).collect();
    for (key, log) in partitions.drain() {
        // Partitions of deleted topics go to core 0, which removes them.
        let core = catalog.owner(&key.0, key.1).unwrap_or(0) as usize;
        if let Some(share) = shares.get_mut(core) {
            share.ledgers.extend(log.info.ledger_ids());
            share.logs.insert(key, log);
        }
    }
    let share_stores: Vec<CoreStorage> = shares
        .iter_mut()
        .map(|s| match (&mut recovered_store, &bookkeeper) {
            (_, Some((cfg, zk))) => CoreStorage::BookKeeper(cfg.clone(), zk.clone()),
            (Some(r), None) => CoreStorage::Local(r.split_for_core(s.ledgers.drain(..))),
            (None, None) => unreachable!("the local backend always recovers a store"),
        })
        .collect();
    let store = MetadataStoreThread::spawn(store, config.control_queue_capacity)?;

    let listeners = (0..config.cores)
        .map(|core| {
            let addr = config.core_listen(core);
            runtime::bind_listener(addr, config.connections.listen_backlog, std::time::Duration::from_secs(10))
                .with_context(|| format!("cannot listen on {addr} (core {core})"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let (stop, shutdown) = Shutdown::new();
    // In a cluster a stop signal goes to the agent first, which hands partitions over and then
    // stops the cores; otherwise it stops them at once.
    let mut agent = match (&config.cluster, cluster_zk) {
        (Some(settings), Some(zk)) => {
            let me = NodeInfo {
                id: node,
                host: config.advertised_host.clone(),
                port: config.listen.port(),
                cores: config.cores as u32,
                incarnation: uuid::Uuid::new_v4().to_string(),
            };
            crate::cluster::membership::register(&zk, &me, config.zookeeper_session_timeout * 2)?;
            info!(node, cluster = %settings.name, "registered in the cluster");
            let (signal_tx, signal) = Shutdown::new();
            watch_signals(signal_tx)?;
            Some((zk, me, settings.clone(), signal, stop.clone()))
        }
        _ => {
            watch_signals(stop.clone())?;
            None
        }
    };
    let view = Arc::new(match &agent {
        Some((_, me, ..)) => ClusterView { nodes: vec![me.clone()], controller: -1 },
        None => ClusterView::single(&config),
    });

    let (controller_tx, controller_rx) = async_channel::bounded(config.control_queue_capacity);
    let inboxes: Vec<_> =
        (0..config.cores).map(|_| async_channel::bounded::<CoreMessage>(config.control_queue_capacity)).collect();
    let core_senders: Vec<_> = inboxes.iter().map(|(tx, _)| tx.clone()).collect();
    let mut controller = Some((
        Controller::new(
            catalog.clone(),
            store.clone(),
            config.max_partitions_per_topic,
            own_brokers,
            config.topic_defaults.clone(),
        ),
        controller_rx,
    ));

    let cpus = runtime::allowed_cpus();
    let pin = cpus.len() >= config.cores;
    if !pin {
        warn!(cores = config.cores, cpus = cpus.len(), "more cores than CPUs: executors are not pinned");
    }
    let mut handles = Vec::new();
    let mut per_core = shares.into_iter().zip(share_stores);
    for (core, (listener, (_, inbox))) in listeners.into_iter().zip(inboxes).enumerate() {
        let Some((share, ledgers)) = per_core.next() else { break };
        let meta = store.clone();
        let spec = runtime::CoreSpec {
            index: core,
            cpu: pin.then(|| cpus[core]),
            io_memory: config.io_memory_per_core,
            spin_before_park: config.spin_before_park,
        };
        let (config, catalog, shutdown) = (config.clone(), catalog.clone(), shutdown.clone());
        let client = ControllerClient::new(controller_tx.clone());
        let controller = if core == 0 { controller.take() } else { None };
        let agent = if core == 0 { agent.take() } else { None };
        let view = view.clone();
        let peers = core_senders.clone();
        // A core that ends, for whatever reason (a failed start, a panic), stops the others:
        // a process with a dead core must not look healthy.
        let stop_all = StopOnExit(stop.clone());
        handles.push(runtime::start_core(spec, move || async move {
            let _stop_all = stop_all;
            let backend = match ledgers {
                CoreStorage::Local(recovered) => {
                    let store_config = LocalStoreConfig {
                        dir: config.data_dir.join("ledgers"),
                        segment_bytes: config.ledger_file_bytes,
                        flush: match config.flush {
                            Flush::Always => FlushPolicy::Always,
                            Flush::Interval(d) => FlushPolicy::Interval(d),
                        },
                        max_pending_bytes: config.ledger_max_pending_bytes,
                        probe_interval: config.ledger_failure_probe_interval,
                    };
                    let dir = crate::storage::local::core_dir(&store_config.dir, core);
                    let s = LocalLedgerStore::open(core, store_config, recovered)
                        .await
                        .map_err(|e| format!("core {core}: cannot open its ledger store {}: {e}", dir.display()))?;
                    Backend::Local(s)
                }
                CoreStorage::BookKeeper(cfg, zk) => Backend::BookKeeper(
                    BookKeeperStore::open(core, cfg, zk)
                        .map_err(|e| format!("core {core}: cannot start its BookKeeper client: {e}"))?,
                ),
            };
            let clustered = config.cluster.is_some();
            let logs = PartitionLogs::new(config.clone(), Rc::new(backend), meta, share.logs, clustered);
            let broker = Rc::new(Broker::new(core, node, view, config, catalog, client, shutdown, logs, peers.clone()));
            if let Some((zk, me, settings, signal, stop)) = agent {
                let agent = ClusterAgent::new(zk, me, settings, broker.clone());
                runtime::spawn(agent.run(signal, stop));
            }
            let b = broker.clone();
            runtime::spawn(async move {
                b.logs.open_recovered(&b.catalog(), b.id as u32).await;
                b.logs.run_retention(std::time::Duration::from_millis(b.config.retention_check_interval_ms)).await;
            });
            let b = broker.clone();
            runtime::spawn(async move { b.logs.run_snapshots(b.config.log_snapshot_interval).await });
            let b = broker.clone();
            runtime::spawn(async move { b.run_inbox(inbox).await });
            let b = broker.clone();
            runtime::spawn(async move {
                b.groups.load(&b).await;
                let m = b.clone();
                runtime::spawn(async move { m.groups.run_cursor_mirror(&m).await });
                b.groups.run(&b).await;
            });
            if core == 0
                && let Some(addr) = broker.config.admin_listen
            {
                let b = broker.clone();
                runtime::spawn(async move { crate::admin::serve(b, addr).await });
            }
            if let Some((controller, rx)) = controller {
                runtime::spawn(controller.run(rx, publisher(peers)));
            }
            info!(core, addr = %broker.config.core_listen(core), "core serving");
            net::serve(broker.clone(), runtime::adopt_listener(listener)).await;
            // Sync what was written: under `flush = interval` acknowledged data may still be
            // only in the device cache.
            broker.logs.close().await;
            Ok::<(), String>(())
        })?);
    }
    drop((controller_tx, core_senders, stop));
    info!(cores = config.cores, listen = %config.listen, "kopd started");
    let mut failures = Vec::new();
    for (core, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("core {core} crashed: {e}")),
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    info!("kopd stopped");
    Ok(())
}

/// Triggers the process-wide shutdown when dropped.
struct StopOnExit(async_channel::Sender<()>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Sends each new catalog to every core and waits until all have it.
fn publisher(cores: Vec<async_channel::Sender<CoreMessage>>) -> CatalogPublisher {
    Box::new(move |catalog| {
        let cores = cores.clone();
        Box::pin(async move {
            let (done_tx, done_rx) = async_channel::bounded(cores.len());
            let mut expected = 0;
            for c in &cores {
                let msg = CoreMessage::Catalog { catalog: catalog.clone(), done: done_tx.clone() };
                if c.send(msg).await.is_ok() {
                    expected += 1;
                }
            }
            drop(done_tx);
            for _ in 0..expected {
                if done_rx.recv().await.is_err() {
                    break;
                }
            }
        })
    })
}

/// First SIGINT/SIGTERM: stop accepting and drain. Second: exit at once.
fn watch_signals(stop: async_channel::Sender<()>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("kopd-signals".into()).spawn(move || {
        let mut stop = Some(stop);
        for sig in signals.forever() {
            match stop.take() {
                Some(s) => {
                    info!(signal = sig, "stopping: finishing in-flight requests");
                    s.close();
                }
                None => {
                    warn!(signal = sig, "second stop signal: exiting now");
                    std::process::exit(1);
                }
            }
        }
    })?;
    Ok(())
}
