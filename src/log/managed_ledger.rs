//! A partition's managed ledger: an ordered list of ledgers in the ledger store, with the
//! Kafka offsets, indexes, idempotent-producer state and tail cache on top.
//!
//! One per partition, owned by the partition's core. Appends assign offsets synchronously (in
//! call order), hand the entry to the store in the same poll (so store order = offset order),
//! and complete when the store reports the entry durable; the high watermark then advances.
//! Readers see only offsets below the high watermark.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use event_listener::Event;
use thiserror::Error;

use super::cursor::Cursor;
use super::ml_metadata::{LOG_START_OFFSET_PROPERTY, LedgerInfo, ML_PREFIX, ManagedLedgerInfo, ml_path};
use super::offset_index::OffsetIndex;
use super::producer_state::{BatchSeq, ProducerStateTable, SequenceCheck};
use super::record_batch::{self, TimestampType, Validated};
use super::tail_cache::TailCache;
use crate::meta::store::{MetadataStoreThread, StoreError, StoreOp};
use crate::meta::topic_name::TopicName;
use crate::storage::{Backend, EntryId, KnownCrc, LedgerId, LedgerStore, SplitBytes, StorageError, entry};

mod append;
mod epochs;
mod read;

pub use append::{Appending, IncomingBatch};
mod resume;
mod retention;
mod seal;

#[derive(Debug, Error)]
pub enum LogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("metadata store: {0}")]
    Metadata(String),
    #[error("producer epoch is older than the current one")]
    InvalidProducerEpoch,
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("offset {0} is out of range")]
    OffsetOutOfRange(i64),
    #[error("partition log failed: {0}")]
    Failed(String),
    /// Another node owns the partition now (it fenced this log's ledger, or changed its ledger
    /// list), or this node lost its claim to it: nothing more is appended or acknowledged here.
    #[error("the partition has moved to another owner")]
    Fenced,
}

/// Per-partition limits, from the topic's configs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub rollover_bytes: u64,
    pub rollover_entries: u64,
    pub rollover_age: Duration,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub log_append_time: bool,
    /// Retention keeps ledgers holding offsets some durable cursor has not consumed yet.
    pub keep_unconsumed: bool,
}

pub struct AppendResult {
    pub base_offset: i64,
    /// The broker time stamped on the batch, or -1 with CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// What recovery rebuilt for a partition (or nothing, for a new one).
#[derive(Default)]
pub struct RecoveredLog {
    pub info: ManagedLedgerInfo,
    pub index: OffsetIndex,
    pub producers: ProducerStateTable,
    pub cursors: Vec<Cursor>,
    /// The index and producer state still have to be read from the ledgers themselves (a
    /// backend whose ledgers only the partition's core can read); open does it.
    pub unread: bool,
}

struct State {
    info: ManagedLedgerInfo,
    /// Ledger taking appends; `None` until the first ledger is created.
    current: Option<LedgerId>,
    current_entries: u64,
    current_bytes: u64,
    current_since: Instant,
    index: OffsetIndex,
    log_start: i64,
    next_offset: i64,
    high_watermark: i64,
    /// Producer state including appends not yet durable (what sequence checks use).
    producers: ProducerStateTable,
    /// Producer state of the durable prefix (below the high watermark): what recovery would
    /// rebuild, so what the log rolls back to after a store failure.
    durable_producers: ProducerStateTable,
    /// Idempotent batches appended but not yet durable, in offset order.
    pending_producers: VecDeque<(i64, i16, BatchSeq)>,
    tail: TailCache,
    /// A new ledger is being created; appends wait.
    rolling: bool,
    /// The partition is deleted: nothing more is appended.
    failed: Option<String>,
    /// See [`LogError::Fenced`]; never cleared (a new owner opens a new `ManagedLedger`).
    fenced: bool,
    /// Being handed over to another owner: new appends are refused as if fenced, those under
    /// way are still acknowledged.
    moving: bool,
    /// An append failed in the store: appends wait for the store to resume, then the log
    /// rolls back to what is durable (`resume`).
    broken: Option<String>,
    /// `store.failures()` when this log last checked its appends against the store.
    store_failures: u64,
    /// The current ledger lost entries: the next ledger must be a new one.
    must_roll: bool,
    settings: LogSettings,
}

pub struct ManagedLedger {
    pub topic: TopicName,
    pub partition: i32,
    store: Rc<Backend>,
    meta: MetadataStoreThread,
    state: RefCell<State>,
    /// Fires when the high watermark moves or a rollover finishes.
    progress: Event,
    /// Durable cursors by name (see `cursor.rs`).
    pub(super) cursors: RefCell<BTreeMap<String, Cursor>>,
    /// Bytes and records in and out since the log was opened here (metrics).
    pub traffic: Traffic,
}

/// A partition's traffic counters, read by metrics scrapes.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: std::cell::Cell<u64>,
    pub records_in: std::cell::Cell<u64>,
    pub bytes_out: std::cell::Cell<u64>,
    pub records_out: std::cell::Cell<u64>,
}

impl Traffic {
    pub fn appended(&self, bytes: usize, records: u64) {
        self.bytes_in.set(self.bytes_in.get() + bytes as u64);
        self.records_in.set(self.records_in.get() + records);
    }

    pub fn fetched(&self, bytes: usize, records: u64) {
        self.bytes_out.set(self.bytes_out.get() + bytes as u64);
        self.records_out.set(self.records_out.get() + records);
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl ManagedLedger {
    /// Opens a partition's log on its core and starts its first (or next) ledger, as Pulsar
    /// does on every open: recovered ledgers stay read-only.
    pub async fn open(
        topic: TopicName,
        partition: i32,
        store: Rc<Backend>,
        meta: MetadataStoreThread,
        mut recovered: RecoveredLog,
        settings: LogSettings,
        tail: TailCache,
    ) -> Result<Rc<ManagedLedger>, LogError> {
        let started = Instant::now();
        if recovered.unread {
            super::recovery::read_ledgers(&store, &topic, partition, &mut recovered).await?;
        }
        let read = started.elapsed();
        let RecoveredLog { mut info, index, producers, cursors, .. } = recovered;
        // Ledgers that hold no entry (never written, or lost) are dropped from the list.
        let live: Vec<LedgerId> = info.ledger_ids().filter(|l| index_has_ledger(&index, *l)).collect();
        let empty: Vec<LedgerId> = info.ledger_ids().filter(|l| !live.contains(l)).collect();
        info.ledger_info.retain(|l| live.contains(&(l.ledger_id as LedgerId)));
        let next_offset = index.last().map_or(0, |e| e.last_offset + 1);
        let stored_start = info.property(LOG_START_OFFSET_PROPERTY).and_then(|s| s.parse().ok()).unwrap_or(0);
        let first_indexed = index.first().map_or(next_offset, |e| e.base_offset);
        let log_start = stored_start.max(first_indexed).min(next_offset);
        let store_failures = store.failures();
        let ml = Rc::new(ManagedLedger {
            topic,
            partition,
            store,
            meta,
            state: RefCell::new(State {
                info,
                current: None,
                current_entries: 0,
                current_bytes: 0,
                current_since: Instant::now(),
                index,
                log_start,
                next_offset,
                high_watermark: next_offset,
                durable_producers: producers.clone(),
                producers,
                pending_producers: VecDeque::new(),
                tail,
                rolling: true,
                failed: None,
                fenced: false,
                moving: false,
                broken: None,
                store_failures,
                must_roll: false,
                settings,
            }),
            progress: Event::new(),
            traffic: Traffic::default(),
            cursors: RefCell::new(cursors.into_iter().map(|c| (c.name.clone(), c)).collect()),
        });
        ml.roll_over().await?;
        let rolled = started.elapsed();
        for l in empty {
            let _ = ml.store.delete_ledger(l).await;
        }
        tracing::debug!(topic = %ml.topic, partition = ml.partition, read_ms = read.as_millis() as u64,
            roll_ms = (rolled - read).as_millis() as u64, delete_ms = (started.elapsed() - rolled).as_millis() as u64,
            "log opened");
        Ok(ml)
    }

    pub fn path(&self) -> String {
        ml_path(&self.topic, self.partition)
    }

    /// Stops this log for good: another owner has (or is about to have) the partition.
    /// Appends under way are not acknowledged, later ones are refused.
    pub fn fence(&self) {
        self.state.borrow_mut().fenced = true;
        self.progress.notify(usize::MAX);
    }

    /// Fences the log and lets the store forget the ledger it was writing: the partition is
    /// gone from this core, and whoever opens it next (maybe this core again) recovers the
    /// ledger from the bookies rather than from this writer's view.
    pub fn abandon(&self) {
        self.fence();
        let current = self.state.borrow().current;
        if let Some(ledger) = current {
            self.store.abandon_ledger(ledger);
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.state.borrow().fenced
    }

    /// A failed ledger-list write. A conflict means another writer changed the list: the
    /// partition has a new owner, and this log stops.
    pub(super) fn metadata_error(&self, e: StoreError) -> LogError {
        match e {
            StoreError::Conflict(_) => {
                tracing::warn!(topic = %self.topic, partition = self.partition,
                    "ledger list changed by another writer: the partition has a new owner");
                self.fence();
                LogError::Fenced
            }
            e => LogError::Metadata(e.to_string()),
        }
    }

    /// The managed ledger's Pulsar name (`tenant/namespace/persistent/topic-partition-N`).
    pub fn name(&self) -> String {
        let path = self.path();
        path.strip_prefix(ML_PREFIX).map(str::to_string).unwrap_or(path)
    }

    /// Bytes of entries in the partition's ledgers (closed ones as recorded, plus the current
    /// one's), as DescribeLogDirs reports a partition's size.
    pub fn stored_bytes(&self) -> i64 {
        self.ledgers().iter().filter_map(|l| l.size).sum()
    }

    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start
    }

    /// Runs `f` on the offset index and the ledger taking appends.
    pub(super) fn with_index<T>(&self, f: impl FnOnce(&OffsetIndex, Option<LedgerId>) -> T) -> T {
        let st = self.state.borrow();
        f(&st.index, st.current)
    }

    /// The ledger list as the metadata store has it, with the open ledger's running counts.
    pub fn ledgers(&self) -> Vec<LedgerInfo> {
        let st = self.state.borrow();
        let mut ledgers = st.info.ledger_info.clone();
        if let Some(li) = ledgers.iter_mut().find(|l| Some(l.ledger_id as LedgerId) == st.current) {
            li.entries = Some(st.current_entries as i64);
            li.size = Some(st.current_bytes as i64);
        }
        ledgers
    }

    pub fn set_settings(&self, settings: LogSettings) {
        self.state.borrow_mut().settings = settings;
    }

    /// A listener that fires on the next progress (append made durable, rollover done).
    pub fn listen(&self) -> event_listener::EventListener {
        self.progress.listen()
    }

    /// Creates a new ledger and makes it current once the ledger list is durable. While it
    /// runs, `rolling` holds appends back.
    async fn roll_over(&self) -> Result<(), LogError> {
        self.state.borrow_mut().rolling = true;
        let new = match self.store.create_ledger(&self.name()).await {
            Ok(l) => l,
            Err(e) => {
                self.state.borrow_mut().rolling = false;
                self.progress.notify(usize::MAX);
                return Err(e.into());
            }
        };
        let ops = {
            let mut st = self.state.borrow_mut();
            let (entries, bytes) = (st.current_entries as i64, st.current_bytes as i64);
            let current = st.current;
            if let Some(li) = st.info.ledger_info.iter_mut().find(|l| Some(l.ledger_id as LedgerId) == current) {
                li.entries = Some(entries);
                li.size = Some(bytes);
            }
            st.info.ledger_info.push(LedgerInfo {
                ledger_id: new as i64,
                entries: None,
                size: None,
                timestamp: Some(now_ms()),
            });
            vec![StoreOp::Put { path: self.path(), value: st.info.to_bytes() }]
        };
        let result = self.meta.commit(ops).await;
        let outcome = {
            let mut st = self.state.borrow_mut();
            st.rolling = false;
            match result {
                Ok(()) => {
                    let prev = st.current;
                    let prev_empty = st.current_entries == 0;
                    if prev_empty && let Some(prev) = prev {
                        // The previous ledger got nothing: forget it.
                        st.info.ledger_info.retain(|l| l.ledger_id as LedgerId != prev);
                    }
                    st.current = Some(new);
                    st.current_entries = 0;
                    st.current_bytes = 0;
                    st.current_since = Instant::now();
                    Ok(prev.map(|p| (p, prev_empty)))
                }
                Err(e) => {
                    st.info.ledger_info.retain(|l| l.ledger_id as LedgerId != new);
                    Err(e)
                }
            }
        };
        self.progress.notify(usize::MAX);
        match outcome {
            Ok(prev) => {
                if let Some((prev, empty)) = prev {
                    self.seal(prev, empty).await;
                }
                Ok(())
            }
            Err(e) => {
                // Not in any ledger list: nothing will ever read it.
                let _ = self.store.delete_ledger(new).await;
                Err(self.metadata_error(e))
            }
        }
    }

    fn needs_rollover(st: &State) -> bool {
        st.current_entries >= st.settings.rollover_entries
            || st.current_bytes >= st.settings.rollover_bytes
            || (st.current_entries > 0 && st.current_since.elapsed() >= st.settings.rollover_age)
    }

    /// Waits until no rollover is under way and a ledger is current. While the store is
    /// failed this answers at once with the store's error; once it has resumed, the first
    /// caller rolls the log back to what is durable (`resume`).
    async fn ready(&self) -> Result<LedgerId, LogError> {
        loop {
            let failures = self.store.failures();
            let listener = {
                let st = self.state.borrow();
                if st.fenced || st.moving {
                    return Err(LogError::Fenced);
                }
                if let Some(f) = &st.failed {
                    return Err(LogError::Failed(f.clone()));
                }
                let check = st.broken.is_some() || st.must_roll || failures != st.store_failures;
                if check && let Some(why) = self.store.failure() {
                    return Err(LogError::Storage(StorageError::Unavailable(why)));
                }
                match (st.rolling, st.current) {
                    (false, _) if check => None,
                    (false, Some(l)) => return Ok(l),
                    _ => Some(self.progress.listen()),
                }
            };
            match listener {
                Some(l) => l.await,
                None => self.resume(failures).await?,
            }
        }
    }

    /// Waits until `offset` is below the high watermark; an error if it never will be.
    async fn durable(&self, offset: i64) -> Result<(), LogError> {
        loop {
            let listener = self.progress.listen();
            {
                let st = self.state.borrow();
                if st.fenced {
                    return Err(LogError::Fenced);
                }
                if st.high_watermark > offset {
                    return Ok(());
                }
                if let Some(f) = st.failed.as_ref().or(st.broken.as_ref()) {
                    return Err(LogError::Storage(StorageError::Unavailable(f.clone())));
                }
            }
            listener.await;
        }
    }
}

fn index_has_ledger(index: &OffsetIndex, ledger: LedgerId) -> bool {
    (0..index.len()).filter_map(|i| index.get(i)).any(|e| e.ledger == ledger)
}
