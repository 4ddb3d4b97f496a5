//! `BookKeeperStore`: one core's ledger store on BookKeeper.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::digest::{Digester, master_key};
use super::metadata::{
    LedgerMetadata, LedgerState, Segment, idgen_prefix, ledger_path, parse_idgen_path, parse_metadata_uri,
};
use super::read::{ReadFailure, read_entry};
use super::write::{DELETED, WriteLedger, WriterState, zk_error};
use super::{BookKeeperConfig, Ctx};
use crate::storage::{EntryId, LedgerId, LedgerStore, SplitBytes, StorageError};
use crate::zookeeper::{CreateMode, ZkError, ZooKeeper};

/// A closed (or recovered) ledger: readable up to its last entry.
struct ClosedLedger {
    meta: LedgerMetadata,
    digester: Digester,
}

pub struct BookKeeperStore {
    ctx: Rc<Ctx>,
    writers: RefCell<HashMap<LedgerId, Rc<WriteLedger>>>,
    closed: RefCell<HashMap<LedgerId, Rc<ClosedLedger>>>,
}

impl BookKeeperStore {
    /// Opens core `core`'s store. Must run on that core (it starts a task that keeps the
    /// writable-bookie list fresh).
    pub fn open(core: usize, config: BookKeeperConfig, zk: ZooKeeper) -> Result<Rc<Self>, StorageError> {
        config.validate().map_err(StorageError::Unavailable)?;
        let (_, root) =
            parse_metadata_uri(&config.metadata_service_uri).map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let seed =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) ^ ((core as u64 + 1) << 32);
        let ctx = Rc::new(Ctx {
            core,
            master_key: master_key(&config.password),
            config,
            zk,
            root,
            bookies: Default::default(),
            available: RefCell::new(Vec::new()),
            available_known: Cell::new(false),
            inflight: Cell::new(0),
            failures: Cell::new(0),
            unavailable: RefCell::new(None),
            rng: Cell::new(seed | 1),
        });
        crate::runtime::spawn(watch_health(Rc::downgrade(&ctx)));
        Ok(Rc::new(BookKeeperStore { ctx, writers: RefCell::default(), closed: RefCell::default() }))
    }

    fn writer(&self, ledger: LedgerId) -> Option<Rc<WriteLedger>> {
        self.writers.borrow().get(&ledger).cloned()
    }

    /// The metadata of a closed ledger, loaded once.
    async fn closed_ledger(&self, ledger: LedgerId) -> Result<Rc<ClosedLedger>, StorageError> {
        if let Some(c) = self.closed.borrow().get(&ledger) {
            return Ok(c.clone());
        }
        let path = ledger_path(&self.ctx.root, ledger);
        let Some((data, _)) = self.ctx.zk.get(&path).await.map_err(zk_error)? else {
            return Err(StorageError::NoSuchLedger(ledger));
        };
        let meta = LedgerMetadata::decode(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        if meta.state != LedgerState::Closed {
            return Err(StorageError::Unavailable(format!("ledger {ledger} is not closed; recover it first")));
        }
        Ok(self.remember_closed(ledger, meta))
    }

    fn remember_closed(&self, ledger: LedgerId, meta: LedgerMetadata) -> Rc<ClosedLedger> {
        let c = Rc::new(ClosedLedger { digester: Digester::new(meta.digest, &meta.password), meta });
        self.closed.borrow_mut().insert(ledger, c.clone());
        c
    }

    async fn new_ledger_id(&self) -> Result<LedgerId, StorageError> {
        let prefix = idgen_prefix(&self.ctx.root);
        let created =
            self.ctx.zk.create(&prefix, Vec::new(), CreateMode::EphemeralSequential, true).await.map_err(zk_error)?;
        let id = parse_idgen_path(&created)
            .ok_or_else(|| StorageError::Corrupt(format!("ledger id node {created:?} has no sequence number")))?;
        // The node only made the number; BookKeeper deletes it at once too.
        if let Err(e) = self.ctx.zk.delete(&created, None).await {
            debug!(node = %created, error = %e, "could not delete the id generator node");
        }
        Ok(id)
    }

    async fn create(&self, name: &str) -> Result<LedgerId, StorageError> {
        let cfg = &self.ctx.config;
        let available = self.ctx.refresh_bookies().await.map_err(zk_error)?;
        let n = available.len();
        let ensemble = self.ctx.pick(available, cfg.ensemble).ok_or_else(|| {
            StorageError::Unavailable(format!("{n} writable bookies, fewer than the ensemble size {}", cfg.ensemble))
        })?;
        let id = self.new_ledger_id().await?;
        let custom: BTreeMap<String, Vec<u8>> =
            [("application", "pulsar"), ("component", "managed-ledger"), ("pulsar/managed-ledger", name)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
        let meta = LedgerMetadata {
            write_quorum: cfg.write_quorum,
            ack_quorum: cfg.ack_quorum,
            ensemble_size: cfg.ensemble,
            state: LedgerState::Open,
            last_entry: -1,
            length: 0,
            segments: vec![Segment { first_entry: 0, ensemble }],
            digest: cfg.digest,
            password: cfg.password.clone(),
            ctime: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            custom,
        };
        let path = ledger_path(&self.ctx.root, id);
        match self.ctx.zk.create(&path, meta.encode(), CreateMode::Persistent, true).await {
            Ok(_) => {}
            Err(ZkError::NodeExists) => {
                return Err(StorageError::Corrupt(format!("ledger {id} already exists (id generator reset?)")));
            }
            Err(e) => return Err(zk_error(e)),
        }
        // A new node has version 0.
        let w = WriteLedger::new(self.ctx.clone(), id, meta, 0);
        self.writers.borrow_mut().insert(id, w);
        info!(core = self.ctx.core, ledger = id, managed_ledger = name, "ledger created");
        Ok(id)
    }

    async fn read_one(&self, ledger: LedgerId, entry: EntryId) -> Result<Bytes, StorageError> {
        let e = i64::try_from(entry).map_err(|_| StorageError::NoSuchEntry { ledger, entry })?;
        let (ensemble, wq, digester) = if let Some(w) = self.writer(ledger) {
            if e > w.lac.get() {
                return Err(StorageError::NoSuchEntry { ledger, entry });
            }
            let meta = w.meta.borrow();
            (meta.ensemble_for(e).to_vec(), meta.write_quorum, Digester::new(meta.digest, &meta.password))
        } else {
            let c = self.closed_ledger(ledger).await?;
            if e > c.meta.last_entry {
                return Err(StorageError::NoSuchEntry { ledger, entry });
            }
            (c.meta.ensemble_for(e).to_vec(), c.meta.write_quorum, c.digester.clone())
        };
        match read_entry(&self.ctx, ledger, &ensemble, wq, &digester, e).await {
            Ok((_, payload)) => Ok(payload),
            Err(ReadFailure::NotFound { error: None, .. }) => Err(StorageError::NoSuchEntry { ledger, entry }),
            Err(ReadFailure::NotFound { error: Some(err), .. }) => {
                Err(StorageError::Unavailable(format!("ledger {ledger} entry {entry}: {err}")))
            }
        }
    }
}

/// Keeps the writable-bookie list fresh and counts failure episodes; ends with the store.
async fn watch_health(ctx: Weak<Ctx>) {
    loop {
        let Some(c) = ctx.upgrade() else { return };
        if let Err(e) = c.refresh_bookies().await {
            debug!(error = %e, "could not read the writable bookies");
        }
        let now = c.check_health();
        let was = c.unavailable.replace(now.clone());
        match (&was, &now) {
            (None, Some(why)) => {
                warn!(core = c.core, reason = %why, "bookkeeper store unavailable");
                c.note_failure();
            }
            (Some(_), None) => info!(core = c.core, "bookkeeper store available again"),
            _ => {}
        }
        let every = c.config.bookie_refresh_interval;
        drop(c);
        crate::runtime::sleep(every).await;
    }
}

impl LedgerStore for BookKeeperStore {
    async fn create_ledger(&self, name: &str) -> Result<LedgerId, StorageError> {
        self.create(name).await
    }

    fn append(
        &self,
        ledger: LedgerId,
        entry: SplitBytes,
    ) -> impl Future<Output = Result<EntryId, StorageError>> + use<> {
        // The entry is handed to the bookies now, so appends keep their call order.
        let rx = match self.writer(ledger) {
            Some(w) => w.append(entry),
            None => Err(StorageError::NoSuchLedger(ledger)),
        };
        async move {
            match rx?.await {
                Some(r) => r,
                None => Err(StorageError::Unavailable(format!("ledger {ledger}: writer dropped"))),
            }
        }
    }

    fn read(&self, ledger: LedgerId, entry: EntryId) -> impl Future<Output = Result<Bytes, StorageError>> {
        self.read_one(ledger, entry)
    }

    async fn close_ledger(&self, ledger: LedgerId) -> Result<(), StorageError> {
        {
            let Some(w) = self.writer(ledger) else {
                return if self.closed.borrow().contains_key(&ledger) {
                    Ok(())
                } else {
                    Err(StorageError::NoSuchLedger(ledger))
                };
            };
            let r = w.close().await;
            if *w.state.borrow() == WriterState::Closed {
                self.writers.borrow_mut().remove(&ledger);
                let meta = w.meta.borrow().clone();
                self.remember_closed(ledger, meta);
            }
            r
        }
    }

    async fn recover_ledger(&self, ledger: LedgerId) -> Result<Option<EntryId>, StorageError> {
        {
            if let Some(c) = self.closed.borrow().get(&ledger) {
                return Ok(u64::try_from(c.meta.last_entry).ok());
            }
            // A writer of ours still here is stale (the partition moved away and came back):
            // what it acknowledged is on the bookies, and its view of the ledger must not
            // shadow the recovered one.
            self.abandon_ledger(ledger);
            let meta = super::recover::recover(&self.ctx, ledger).await?;
            let last = u64::try_from(meta.last_entry).ok();
            self.remember_closed(ledger, meta);
            Ok(last)
        }
    }

    async fn delete_ledger(&self, ledger: LedgerId) -> Result<(), StorageError> {
        {
            if let Some(w) = self.writers.borrow_mut().remove(&ledger) {
                w.stop(WriterState::Failed(DELETED.into()));
            }
            self.closed.borrow_mut().remove(&ledger);
            match self.ctx.zk.delete(&ledger_path(&self.ctx.root, ledger), None).await {
                Ok(()) | Err(ZkError::NoNode) => Ok(()),
                Err(e) => Err(zk_error(e)),
            }
        }
    }

    fn abandon_ledger(&self, ledger: LedgerId) {
        let writer = self.writers.borrow_mut().remove(&ledger);
        if let Some(w) = writer {
            w.abandon();
        }
    }

    fn failure(&self) -> Option<String> {
        self.ctx.check_health()
    }

    fn failures(&self) -> u64 {
        self.ctx.failures.get()
    }

    fn has_room(&self, bytes: usize) -> bool {
        let used = self.ctx.inflight.get();
        // One entry larger than the whole bound still goes, alone.
        used == 0 || used + bytes <= self.ctx.config.max_inflight_add_bytes
    }

    fn pending_entries(&self, ledger: LedgerId) -> u64 {
        self.writer(ledger).map_or(0, |w| w.pending_count())
    }

    fn last_entry(&self, ledger: LedgerId) -> Option<EntryId> {
        if let Some(w) = self.writer(ledger) {
            return u64::try_from(w.lac.get()).ok();
        }
        self.closed.borrow().get(&ledger).and_then(|c| u64::try_from(c.meta.last_entry).ok())
    }
}
