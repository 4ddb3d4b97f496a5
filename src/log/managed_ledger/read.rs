//! Lookups and reads of stored batches for fetch and ListOffsets: only below the high
//! watermark. A child module, so it works on the log's private state directly.

use crate::storage::SplitBytes;

use super::{LogError, ManagedLedger};
use crate::log::offset_index::IndexEntry;
use crate::storage::{LedgerStore, StorageError, entry};

impl ManagedLedger {
    /// Index entry holding offsets at or after `offset`, if below the high watermark.
    pub fn entry_from(&self, offset: i64) -> Option<IndexEntry> {
        let st = self.state.borrow();
        let pos = st.index.position_from(offset)?;
        st.index.get(pos).filter(|e| e.base_offset < st.high_watermark).copied()
    }

    /// The index entries a fetch from `offset` reads with `budget` bytes, in one walk of the
    /// index (one search, then consecutive entries): whole batches below the high watermark
    /// until the next would exceed the budget, the first one even if larger when
    /// `allow_oversize` (a consumer must always make progress).
    pub fn entries_from(&self, offset: i64, mut budget: usize, mut allow_oversize: bool) -> Vec<IndexEntry> {
        let st = self.state.borrow();
        let mut out = Vec::new();
        let Some(first) = st.index.position_from(offset) else { return out };
        for pos in first.. {
            let Some(e) = st.index.get(pos).filter(|e| e.base_offset < st.high_watermark) else { break };
            if (e.size as usize) > budget && !allow_oversize {
                break;
            }
            debug_assert!(out.last().is_none_or(|p: &IndexEntry| p.last_offset < e.base_offset), "offsets ascend");
            budget = budget.saturating_sub(e.size as usize);
            allow_oversize = false;
            out.push(*e);
            if budget == 0 {
                break;
            }
        }
        out
    }

    /// The stored batch bytes of an index entry: from the tail cache (maybe in two pieces:
    /// see `IncomingBatch::Share`), else from the store.
    pub async fn read_batch(&self, e: &IndexEntry) -> Result<SplitBytes, LogError> {
        if let Some(b) = self.state.borrow().tail.get(e.base_offset) {
            crate::metrics::with(|m| crate::metrics::inc(&m.tail_cache_hits));
            return Ok(b);
        }
        crate::metrics::with(|m| crate::metrics::inc(&m.tail_cache_misses));
        let raw = self.store.read(e.ledger, e.entry).await?;
        let decoded = entry::decode_entry(&raw).map_err(|err| StorageError::Corrupt(err.to_string()))?;
        Ok(decoded.payload.into())
    }

    /// Index position search by timestamp, returning the entry (below the high watermark).
    pub fn entry_for_timestamp(&self, ts: i64) -> Option<IndexEntry> {
        let st = self.state.borrow();
        let pos = st.index.position_for_timestamp(ts)?;
        st.index.get(pos).filter(|e| e.base_offset < st.high_watermark).copied()
    }

    pub fn entry_with_max_timestamp(&self) -> Option<IndexEntry> {
        let st = self.state.borrow();
        let from = st.index.position_from(st.log_start)?;
        let pos = st.index.position_of_max_timestamp(from, st.high_watermark)?;
        st.index.get(pos).copied()
    }
}
