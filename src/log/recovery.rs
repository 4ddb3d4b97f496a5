//! Startup recovery of every partition's log, before the cores start.
//!
//! The managed-ledger metadata says which ledgers make up each partition; the ledger store's
//! recovery scan (which also truncates torn tails) yields every durable entry. From the entries'
//! BrokerEntryMetadata and Kafka batch headers this rebuilds, per partition, the offset and
//! time index and the idempotent-producer state.
//!
//! A partition with a usable snapshot (`snapshot.rs`, checked in `usable_from`) starts from
//! it, and only the entries after it are read; the store likewise starts each directory from
//! its checkpoint. Anything that does not fit falls back to reading everything.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use tracing::warn;

use super::cursor::{Cursor, parse_cursor_path};
use super::managed_ledger::{LogError, RecoveredLog};
use super::ml_metadata::{ML_PREFIX, ManagedLedgerInfo, parse_ml_path};
use super::producer_state::BatchSeq;
use super::record_batch;
use super::snapshot::{self, PartitionSnapshot};
use crate::meta::store::MetadataStore;
use crate::meta::topic_name::TopicName;
use crate::storage::local::{self, RecoveredStore, Scanned};
use crate::storage::{Backend, EntryId, LedgerId, LedgerStore, entry};
use futures_util::StreamExt;

pub type PartitionKey = (TopicName, i32);

pub struct RecoveredLogs {
    pub partitions: HashMap<PartitionKey, RecoveredLog>,
    pub store: RecoveredStore,
}

/// One recovered entry, before it is put in order.
struct Found {
    ledger: LedgerId,
    entry: EntryId,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    size: u32,
    producer: Option<(i64, i16, i32)>,
}

type Cursors = HashMap<PartitionKey, Vec<Cursor>>;

/// Every managed ledger's info and cursors from the metadata store.
fn load_metadata(meta: &dyn MetadataStore) -> anyhow::Result<(HashMap<PartitionKey, ManagedLedgerInfo>, Cursors)> {
    let mut infos: HashMap<PartitionKey, ManagedLedgerInfo> = HashMap::new();
    let mut cursors: Cursors = HashMap::new();
    for (path, value) in meta.scan(ML_PREFIX) {
        let Some(key) = parse_ml_path(&path) else {
            // Cursor nodes live under their managed ledger's path; anything else is foreign.
            let cursor = parse_cursor_path(&path).and_then(|(ml, name)| Some((parse_ml_path(ml)?, name)));
            match cursor {
                Some((key, name)) => match Cursor::from_bytes(name, &value) {
                    Ok(c) => cursors.entry(key).or_default().push(c),
                    Err(e) => warn!(%path, error = %e, "ignoring undecodable cursor"),
                },
                None => warn!(%path, "ignoring unrecognised managed-ledger path"),
            }
            continue;
        };
        let info = ManagedLedgerInfo::from_bytes(&value).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        infos.insert(key, info);
    }
    Ok((infos, cursors))
}

/// One partition's managed ledger and cursors, re-read from a store other writers share (in a
/// cluster the partition's previous owner wrote them last). Its ledgers are read when it opens.
/// The ledger list's node is pinned as read: if anyone else writes it from now on (a later
/// owner), this owner's next write to it conflicts and its log is fenced.
pub fn reload_partition(
    meta: &mut dyn MetadataStore,
    topic: &TopicName,
    partition: i32,
) -> anyhow::Result<RecoveredLog> {
    let path = super::ml_metadata::ml_path(topic, partition);
    meta.refresh(&path)?;
    meta.pin(&path);
    let mut log = RecoveredLog::default();
    let Some(value) = meta.get(&path) else { return Ok(log) };
    log.info = ManagedLedgerInfo::from_bytes(value).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    log.unread = true;
    for (p, value) in meta.scan(&format!("{path}/")) {
        match parse_cursor_path(&p).map(|(_, name)| Cursor::from_bytes(name, &value)) {
            Some(Ok(c)) => log.cursors.push(c),
            Some(Err(e)) => warn!(path = %p, error = %e, "ignoring undecodable cursor"),
            None => warn!(path = %p, "ignoring unrecognised managed-ledger path"),
        }
    }
    Ok(log)
}

/// Recovery for the local store: one scan of the ledger directory rebuilds every partition.
pub fn recover(meta: &dyn MetadataStore, ledger_dir: &Path) -> anyhow::Result<RecoveredLogs> {
    let (infos, mut cursors) = load_metadata(meta)?;
    let owner_of: HashMap<LedgerId, PartitionKey> =
        infos.iter().flat_map(|(key, info)| info.ledger_ids().map(move |l| (l, key.clone()))).collect();

    let mut found: HashMap<PartitionKey, Vec<Found>> = HashMap::new();
    let mut visit = |ledger: LedgerId, entry_id: EntryId, bytes: &Bytes| {
        let Some(key) = owner_of.get(&ledger) else { return };
        if let Some(f) = Found::decode(ledger, entry_id, bytes) {
            found.entry(key.clone()).or_default().push(f);
        }
    };
    let snaps = snapshot::read_all(ledger_dir);
    let checkpoints: HashMap<usize, Vec<u8>> =
        snaps.iter().filter_map(|(core, s)| Some((*core, s.store.clone()?))).collect();
    let scanned = local::scan(ledger_dir, &checkpoints)?;
    // The newest snapshot of each partition (a partition moved by a core-count change may
    // be in two files).
    let mut latest: HashMap<PartitionKey, PartitionSnapshot> = HashMap::new();
    for p in snaps.into_values().flat_map(|s| s.partitions) {
        if let Some(key) = parse_ml_path(&p.path)
            && latest.get(&key).is_none_or(|q| q.end < p.end)
        {
            latest.insert(key, p);
        }
    }
    let mut from: HashMap<LedgerId, EntryId> = HashMap::new();
    let mut bases: HashMap<PartitionKey, PartitionSnapshot> = HashMap::new();
    for (key, snap) in latest {
        let Some(info) = infos.get(&key) else { continue };
        if snap.index.is_empty() {
            // Nothing to start from (an empty partition): the rebuild reads nothing either.
            continue;
        }
        match usable_from(info, &snap, &scanned) {
            Some(f) => {
                from.extend(f);
                bases.insert(key, snap);
            }
            None => {
                warn!(topic = %key.0, partition = key.1, "log snapshot does not match the ledgers; rebuilding the partition")
            }
        }
    }
    let from_fn =
        |l: LedgerId| if owner_of.contains_key(&l) { from.get(&l).copied().unwrap_or(0) } else { EntryId::MAX };
    let store = scanned.finish(&from_fn, &mut visit)?;

    let mut partitions = HashMap::new();
    for (key, info) in infos {
        let cursors = cursors.remove(&key).unwrap_or_default();
        let mut log = RecoveredLog { info, cursors, ..Default::default() };
        let mut prev_last = -1i64;
        if let Some(snap) = bases.remove(&key) {
            let order: HashMap<LedgerId, usize> = log.info.ledger_ids().enumerate().map(|(i, l)| (l, i)).collect();
            // Entries of ledgers deleted since the snapshot (its oldest) are gone.
            for e in snap.index.iter().filter(|e| order.contains_key(&e.ledger)) {
                log.index.push(e.base_offset, e.last_offset, e.ledger, e.entry, e.max_timestamp, e.size);
            }
            for (pid, epoch, batches) in snap.producers {
                batches.into_iter().for_each(|b| log.producers.record(pid, epoch, b));
            }
            prev_last = snap.index.last().map_or(-1, |e| e.last_offset);
        }
        replay(&key, &mut log, found.remove(&key).unwrap_or_default(), prev_last);
        partitions.insert(key, log);
    }
    for (key, orphans) in cursors {
        warn!(topic = %key.0, partition = key.1, count = orphans.len(), "cursors without a managed ledger ignored");
    }
    Ok(RecoveredLogs { partitions, store })
}

/// Appends a partition's recovered entries (any order) after `prev_last` to its index and
/// producer state, in ledger-list order.
fn replay(key: &PartitionKey, log: &mut RecoveredLog, mut entries: Vec<Found>, mut prev_last: i64) {
    let order: HashMap<LedgerId, usize> = log.info.ledger_ids().enumerate().map(|(i, l)| (l, i)).collect();
    // A closed ledger's entry count is authoritative: entries past it were never
    // acknowledged (written by a window whose sync failed) and must not come back.
    let closed: HashMap<LedgerId, u64> = log
        .info
        .ledger_info
        .iter()
        .filter_map(|l| Some((l.ledger_id as LedgerId, u64::try_from(l.entries?).ok()?)))
        .collect();
    entries.sort_by_key(|f| (order.get(&f.ledger).copied().unwrap_or(usize::MAX), f.entry));
    for f in entries {
        if closed.get(&f.ledger).is_some_and(|n| f.entry >= *n) {
            warn!(topic = %key.0, partition = key.1, ledger = f.ledger, entry = f.entry, "entry past its closed ledger's end skipped");
            continue;
        }
        if f.base_offset <= prev_last {
            warn!(topic = %key.0, partition = key.1, offset = f.base_offset, "entry overlaps earlier offsets; skipped");
            continue;
        }
        if f.base_offset != prev_last + 1 && prev_last >= 0 {
            warn!(topic = %key.0, partition = key.1, from = prev_last + 1, to = f.base_offset, "offset hole in recovered log");
        }
        log.index.push(f.base_offset, f.last_offset, f.ledger, f.entry, f.max_timestamp, f.size);
        if let Some((pid, epoch, first_seq)) = f.producer {
            let count = (f.last_offset - f.base_offset + 1) as i32;
            let last_seq = super::producer_state::last_seq(first_seq, count);
            let b = BatchSeq {
                first_seq,
                last_seq,
                base_offset: f.base_offset,
                last_offset: f.last_offset,
                max_timestamp: f.max_timestamp,
            };
            log.producers.record(pid, epoch, b);
        }
        prev_last = f.last_offset;
    }
}

impl Found {
    /// What the index needs of one stored entry; `None` (logged) if it does not decode.
    fn decode(ledger: LedgerId, entry_id: EntryId, bytes: &Bytes) -> Option<Found> {
        let decoded = match entry::decode_entry(bytes) {
            Ok(d) => d,
            Err(e) => {
                warn!(ledger, entry = entry_id, error = %e, "undecodable entry skipped");
                return None;
            }
        };
        let header = record_batch::parse_header(&decoded.payload).ok();
        let count = decoded.num_messages.max(1) as i64;
        Some(Found {
            ledger,
            entry: entry_id,
            base_offset: decoded.index - (count - 1),
            last_offset: decoded.index,
            max_timestamp: header.as_ref().map_or(-1, |h| h.max_timestamp),
            size: decoded.payload.len() as u32,
            producer: header.filter(|h| h.producer_id >= 0).map(|h| (h.producer_id, h.producer_epoch, h.base_sequence)),
        })
    }
}

/// Entries read at once while a partition is rebuilt from its ledgers.
const READS_IN_FLIGHT: usize = 32;

/// Rebuilds an `unread` partition from its ledgers, on its core, when it is opened: each
/// ledger is recovered first (the previous writer fenced off and the ledger sealed, so what
/// is read is final), then every entry up to its end is read.
pub(super) async fn read_ledgers(
    store: &Backend,
    topic: &TopicName,
    partition: i32,
    log: &mut RecoveredLog,
) -> Result<(), LogError> {
    let ledgers: Vec<(LedgerId, Option<i64>)> =
        log.info.ledger_info.iter().map(|l| (l.ledger_id as LedgerId, l.entries)).collect();
    // Every ledger recovered at once (each is a few round trips; only the last is usually
    // open), then one stream of reads over all of them, so short ledgers do not drain the
    // pipeline at each boundary. A new owner waits for this before it serves.
    let lasts = futures_util::future::join_all(ledgers.iter().map(|(l, _)| store.recover_ledger(*l))).await;
    let mut plan = Vec::with_capacity(ledgers.len());
    for ((ledger, closed_entries), last) in ledgers.into_iter().zip(lasts) {
        let mut end = last?.map_or(0, |e| e + 1);
        if let Some(n) = closed_entries.and_then(|n| u64::try_from(n).ok()) {
            end = end.min(n);
        }
        plan.push((ledger, end));
    }
    let mut entries = Vec::new();
    let mut reads = futures_util::stream::iter(plan.into_iter().flat_map(|(l, end)| (0..end).map(move |e| (l, e))))
        .map(|(ledger, e)| async move { (ledger, e, store.read(ledger, e).await) })
        .buffered(READS_IN_FLIGHT);
    while let Some((ledger, e, bytes)) = reads.next().await {
        if let Some(f) = Found::decode(ledger, e, &bytes?) {
            entries.push(f);
        }
    }
    replay(&(topic.clone(), partition), log, entries, -1);
    log.unread = false;
    Ok(())
}

/// The partitions of a backend whose ledgers are read when each partition is opened: only
/// the managed-ledger metadata and cursors are loaded here.
pub fn recover_metadata(meta: &dyn MetadataStore) -> anyhow::Result<HashMap<PartitionKey, RecoveredLog>> {
    let (infos, mut cursors) = load_metadata(meta)?;
    let mut partitions = HashMap::new();
    for (key, info) in infos {
        let cursors = cursors.remove(&key).unwrap_or_default();
        partitions.insert(key, RecoveredLog { info, cursors, unread: true, ..Default::default() });
    }
    for (key, orphans) in cursors {
        warn!(topic = %key.0, partition = key.1, count = orphans.len(), "cursors without a managed ledger ignored");
    }
    Ok(partitions)
}

/// Where reading must start for each ledger of a partition whose snapshot fits: `None` if it
/// does not. It fits when its ledgers come in the ledger list's order, and each one's entries
/// are all the store kept (up to the ledger's closed length), except that the last one may
/// have more entries since. Entries of ledgers deleted since (retention and DeleteRecords
/// delete the oldest first) are dropped from the front.
fn usable_from(
    info: &ManagedLedgerInfo,
    snap: &PartitionSnapshot,
    scanned: &Scanned,
) -> Option<Vec<(LedgerId, EntryId)>> {
    let pos: HashMap<LedgerId, usize> = info.ledger_ids().enumerate().map(|(i, l)| (l, i)).collect();
    let effective = |l: LedgerId| {
        let closed = info
            .ledger_info
            .iter()
            .find(|li| li.ledger_id as LedgerId == l)
            .and_then(|li| u64::try_from(li.entries?).ok())
            .unwrap_or(u64::MAX);
        scanned.entry_count(l).min(closed)
    };
    let live = snap.index.iter().skip_while(|e| !pos.contains_key(&e.ledger));
    // (ledger, entries covered) in snapshot order.
    let mut covered: Vec<(LedgerId, u64)> = Vec::new();
    for e in live {
        let p = *pos.get(&e.ledger)?;
        match covered.last_mut() {
            Some((l, n)) if *l == e.ledger => *n = (*n).max(e.entry + 1),
            last => {
                if last.is_some_and(|(l, _)| pos.get(l).is_none_or(|q| *q >= p)) {
                    return None;
                }
                covered.push((e.ledger, e.entry + 1));
            }
        }
    }
    let (last, last_n) = *covered.last()?;
    if last_n > effective(last) {
        return None;
    }
    let mut from = Vec::new();
    let last_pos = *pos.get(&last)?;
    for l in info.ledger_ids().take(last_pos) {
        let n = covered.iter().find(|(c, _)| *c == l).map_or(0, |(_, n)| *n);
        if n != effective(l) {
            return None;
        }
        from.push((l, EntryId::MAX));
    }
    from.push((last, last_n));
    Some(from)
}
