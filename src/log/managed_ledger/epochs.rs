//! What a partition's stored batches say about its leaders and producers, for the admin and
//! client APIs that ask (OffsetForLeaderEpoch, DescribeProducers).
//!
//! kopd keeps no separate leader-epoch file: every batch is stamped with the epoch of the owner
//! that appended it, and epochs only grow along the log (a new owner has a higher epoch and
//! continues where the last one ended), so the batch where an epoch ends is found by binary
//! search over the offset index, reading the probed batches' headers. The lookup is rare
//! (clients ask after a leader change), so nothing is cached.

use super::{LogError, ManagedLedger};
use crate::log::offset_index::IndexEntry;
use crate::log::producer_state::BatchSeq;

/// Where the partition leader epoch sits in a batch header.
const EPOCH_AT: std::ops::Range<usize> = 12..16;

/// Retention may drop a prefix of the index while a probe reads; the search restarts then.
const SEARCH_ATTEMPTS: usize = 4;

impl ManagedLedger {
    /// The leader epoch stamped on the batch of `e` (-1 for an entry without one).
    async fn epoch_of(&self, e: &IndexEntry) -> Result<i32, LogError> {
        let batch = self.read_batch(e).await?;
        // In the first piece: a batch split in two keeps its whole header there.
        Ok(batch.front().get(EPOCH_AT).and_then(|b| b.try_into().ok()).map_or(-1, i32::from_be_bytes))
    }

    /// Live index entries below the high watermark: (count, base offset of the first).
    fn readable(&self) -> (usize, Option<i64>) {
        let st = self.state.borrow();
        let first = st.index.first().map(|e| e.base_offset);
        let below = st.index.position_from(st.high_watermark).unwrap_or(st.index.len());
        (below, first)
    }

    /// The index entry at `pos`, if the live index still starts where it did (`first`).
    fn entry_at(&self, pos: usize, first: Option<i64>) -> Option<IndexEntry> {
        let st = self.state.borrow();
        (st.index.first().map(|e| e.base_offset) == first).then(|| st.index.get(pos).copied()).flatten()
    }

    /// Kafka's end offset of leader epoch `requested`, given the owner's `current` epoch:
    /// `None` when the epoch is unknown here (negative, or newer than the current one);
    /// otherwise (the largest epoch at or below `requested` that wrote batches, or `requested`
    /// itself if none did; the first offset written under a later epoch, or the log end if no
    /// later epoch wrote anything yet). For the current epoch: (current, log end).
    pub async fn end_offset_for_epoch(&self, requested: i32, current: i32) -> Result<Option<(i32, i64)>, LogError> {
        if requested < 0 || requested > current {
            return Ok(None);
        }
        let log_end = self.high_watermark();
        if requested == current {
            return Ok(Some((current, log_end)));
        }
        for _ in 0..SEARCH_ATTEMPTS {
            let (n, first) = self.readable();
            // The first position whose batch was written under a later epoch.
            let (mut lo, mut hi) = (0, n);
            let mut moved = false;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let Some(e) = self.entry_at(mid, first) else {
                    moved = true;
                    break;
                };
                if self.epoch_of(&e).await? > requested {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            if moved {
                continue;
            }
            let end = if lo < n { self.entry_at(lo, first).map(|e| e.base_offset) } else { Some(log_end) };
            let floor = match lo.checked_sub(1) {
                Some(p) => match self.entry_at(p, first) {
                    Some(e) => Some(self.epoch_of(&e).await?),
                    None => None,
                },
                None => Some(requested),
            };
            if let (Some(end), Some(floor)) = (end, floor) {
                let floor = if (0..=requested).contains(&floor) { floor } else { requested };
                return Ok(Some((floor, end)));
            }
        }
        Err(LogError::Failed("the log's start moved during every leader epoch lookup".into()))
    }

    /// Every idempotent producer with acknowledged batches here: (producer id, epoch, its
    /// latest batch), by producer id.
    pub fn active_producers(&self) -> Vec<(i64, i16, BatchSeq)> {
        let st = self.state.borrow();
        st.durable_producers
            .export()
            .into_iter()
            .filter_map(|(pid, epoch, batches)| batches.last().map(|b| (pid, epoch, *b)))
            .collect()
    }
}
