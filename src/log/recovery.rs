//! Startup recovery of every partition's log, before the cores start.
//!
//! The managed-ledger metadata says which ledgers make up each partition; the ledger store's
//! recovery scan (which also truncates torn tails) yields every durable entry. From the entries'
//! BrokerEntryMetadata and Kafka batch headers this rebuilds, per partition, the offset and
//! time index and the idempotent-producer state.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use tracing::warn;

use super::cursor::{Cursor, parse_cursor_path};
use super::managed_ledger::RecoveredLog;
use super::ml_metadata::{ML_PREFIX, ManagedLedgerInfo, parse_ml_path};
use super::producer_state::BatchSeq;
use super::record_batch;
use crate::meta::store::MetadataStore;
use crate::meta::topic_name::TopicName;
use crate::storage::local::{self, RecoveredStore};
use crate::storage::{EntryId, LedgerId, entry};

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

pub fn recover(meta: &dyn MetadataStore, ledger_dir: &Path) -> anyhow::Result<RecoveredLogs> {
    let mut infos: HashMap<PartitionKey, ManagedLedgerInfo> = HashMap::new();
    let mut owner_of: HashMap<LedgerId, PartitionKey> = HashMap::new();
    let mut cursors: HashMap<PartitionKey, Vec<Cursor>> = HashMap::new();
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
        for l in info.ledger_ids() {
            owner_of.insert(l, key.clone());
        }
        infos.insert(key, info);
    }

    let mut found: HashMap<PartitionKey, Vec<Found>> = HashMap::new();
    let mut visit = |ledger: LedgerId, entry_id: EntryId, bytes: &Bytes| {
        let Some(key) = owner_of.get(&ledger) else { return };
        let decoded = match entry::decode_entry(bytes) {
            Ok(d) => d,
            Err(e) => {
                warn!(ledger, entry = entry_id, error = %e, "undecodable entry skipped");
                return;
            }
        };
        let header = record_batch::parse_header(&decoded.payload).ok();
        let count = decoded.num_messages.max(1) as i64;
        found.entry(key.clone()).or_default().push(Found {
            ledger,
            entry: entry_id,
            base_offset: decoded.index - (count - 1),
            last_offset: decoded.index,
            max_timestamp: header.as_ref().map_or(-1, |h| h.max_timestamp),
            size: decoded.payload.len() as u32,
            producer: header.filter(|h| h.producer_id >= 0).map(|h| (h.producer_id, h.producer_epoch, h.base_sequence)),
        });
    };
    let store = local::recover(ledger_dir, &mut visit)?;

    let mut partitions = HashMap::new();
    for (key, info) in infos {
        let order: HashMap<LedgerId, usize> = info.ledger_ids().enumerate().map(|(i, l)| (l, i)).collect();
        let mut entries = found.remove(&key).unwrap_or_default();
        entries.sort_by_key(|f| (order.get(&f.ledger).copied().unwrap_or(usize::MAX), f.entry));
        let cursors = cursors.remove(&key).unwrap_or_default();
        let mut log = RecoveredLog { info, cursors, ..Default::default() };
        let mut prev_last = -1i64;
        for f in entries {
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
        partitions.insert(key, log);
    }
    for (key, orphans) in cursors {
        warn!(topic = %key.0, partition = key.1, count = orphans.len(), "cursors without a managed ledger ignored");
    }
    Ok(RecoveredLogs { partitions, store })
}
