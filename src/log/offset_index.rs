//! Offset and time index of one partition: which entry holds an offset, and where the first
//! record at or after a timestamp lives, found by binary search, never by scanning.
//!
//! One element per entry (= one Kafka batch). Offsets are contiguous across elements; the
//! running maximum timestamp makes the time lookup a binary search like Kafka's time index.

use crate::storage::{EntryId, LedgerId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub ledger: LedgerId,
    pub entry: EntryId,
    /// Largest record timestamp in this batch.
    pub max_timestamp: i64,
    /// Largest record timestamp in this batch and every earlier one (monotonic).
    pub running_max_timestamp: i64,
    /// Stored batch size in bytes (for retention.bytes and fetch sizing).
    pub size: u32,
}

#[derive(Debug, Default)]
pub struct OffsetIndex {
    entries: Vec<IndexEntry>,
    /// Entries before this position were removed by retention; kept as an offset into the
    /// vector so trimming the front is cheap (compacted from time to time).
    start: usize,
}

impl OffsetIndex {
    /// Appends the next entry. Offsets must increase; they continue exactly where the index
    /// ends except where recovery found a hole (a lost ledger), which fetches skip over.
    pub fn push(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        ledger: LedgerId,
        entry: EntryId,
        max_ts: i64,
        size: u32,
    ) {
        debug_assert!(last_offset >= base_offset);
        debug_assert!(self.last().is_none_or(|l| l.last_offset < base_offset), "offsets increase");
        let running = self.last().map_or(max_ts, |l| l.running_max_timestamp.max(max_ts));
        self.entries.push(IndexEntry {
            base_offset,
            last_offset,
            ledger,
            entry,
            max_timestamp: max_ts,
            running_max_timestamp: running,
            size,
        });
    }

    fn live(&self) -> &[IndexEntry] {
        &self.entries[self.start..]
    }

    pub fn first(&self) -> Option<&IndexEntry> {
        self.live().first()
    }

    pub fn last(&self) -> Option<&IndexEntry> {
        self.live().last()
    }

    pub fn len(&self) -> usize {
        self.live().len()
    }

    pub fn is_empty(&self) -> bool {
        self.live().is_empty()
    }

    /// Position (for [`get`]) of the entry containing `offset`, if indexed.
    pub fn position_of(&self, offset: i64) -> Option<usize> {
        let live = self.live();
        let i = live.partition_point(|e| e.last_offset < offset);
        (i < live.len() && live[i].base_offset <= offset).then_some(i)
    }

    /// Position of the first entry with records at or after `offset` (what a fetch reads next).
    pub fn position_from(&self, offset: i64) -> Option<usize> {
        let live = self.live();
        let i = live.partition_point(|e| e.last_offset < offset);
        (i < live.len()).then_some(i)
    }

    pub fn get(&self, position: usize) -> Option<&IndexEntry> {
        self.live().get(position)
    }

    /// Position of the first entry that may hold a record with timestamp >= `ts`.
    pub fn position_for_timestamp(&self, ts: i64) -> Option<usize> {
        let live = self.live();
        let i = live.partition_point(|e| e.running_max_timestamp < ts);
        (i < live.len()).then_some(i)
    }

    /// Position of the entry holding the largest timestamp (the latest one on ties) among
    /// entries from `from` whose records start below `end_offset`. A linear scan: the running
    /// maximum cannot exclude deleted entries, and ListOffsets(-3) is rare.
    pub fn position_of_max_timestamp(&self, from: usize, end_offset: i64) -> Option<usize> {
        let live = self.live();
        let candidates = live.get(from..)?.iter().enumerate().take_while(|(_, e)| e.base_offset < end_offset);
        candidates
            .fold(None, |best: Option<(usize, i64)>, (i, e)| match best {
                Some((_, ts)) if ts > e.max_timestamp => best,
                _ => Some((from + i, e.max_timestamp)),
            })
            .map(|(i, _)| i)
    }

    /// Drops every entry of `ledger` at the front (retention deletes whole ledgers, oldest first).
    pub fn drop_ledger_prefix(&mut self, ledger: LedgerId) {
        while self.entries.get(self.start).is_some_and(|e| e.ledger == ledger) {
            self.start += 1;
        }
        if self.start > 1024 && self.start * 2 > self.entries.len() {
            self.entries.drain(..self.start);
            self.start = 0;
        }
    }

    /// Removes entries from the back while `lost` holds for them; returns the first offset
    /// removed (where the log now ends), if any.
    pub fn truncate_back(&mut self, lost: impl Fn(&IndexEntry) -> bool) -> Option<i64> {
        let mut end = None;
        while self.entries.len() > self.start && self.entries.last().is_some_and(&lost) {
            end = self.entries.pop().map(|e| e.base_offset);
        }
        end
    }

    /// Bytes stored per ledger, oldest first.
    pub fn bytes_in(&self, ledger: LedgerId) -> u64 {
        self.live().iter().filter(|e| e.ledger == ledger).map(|e| e.size as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> OffsetIndex {
        let mut ix = OffsetIndex::default();
        ix.push(0, 4, 1, 0, 100, 10);
        ix.push(5, 5, 1, 1, 90, 10);
        ix.push(6, 9, 2, 0, 300, 10);
        ix.push(10, 19, 2, 1, 200, 10);
        ix
    }

    #[test]
    fn finds_entries_by_offset() {
        let ix = index();
        assert_eq!(ix.position_of(0), Some(0));
        assert_eq!(ix.position_of(4), Some(0));
        assert_eq!(ix.position_of(5), Some(1));
        assert_eq!(ix.position_of(12), Some(3));
        assert_eq!(ix.position_of(20), None);
        assert_eq!(ix.position_of(-1), None);
        assert_eq!(ix.position_from(-1), Some(0));
        assert_eq!(ix.position_from(7), Some(2));
        assert_eq!(ix.position_from(20), None);
    }

    #[test]
    fn finds_entries_by_timestamp() {
        let ix = index();
        assert_eq!(ix.position_for_timestamp(50), Some(0));
        assert_eq!(ix.position_for_timestamp(95), Some(0));
        assert_eq!(ix.position_for_timestamp(150), Some(2));
        assert_eq!(ix.position_for_timestamp(250), Some(2));
        assert_eq!(ix.position_for_timestamp(301), None);
        assert_eq!(ix.position_of_max_timestamp(0, i64::MAX), Some(2));
        assert_eq!(ix.position_of_max_timestamp(3, i64::MAX), Some(3));
        assert_eq!(ix.position_of_max_timestamp(0, 6), Some(0));
        assert_eq!(ix.position_of_max_timestamp(4, i64::MAX), None);
    }

    #[test]
    fn retention_trims_whole_ledgers() {
        let mut ix = index();
        assert_eq!(ix.bytes_in(1), 20);
        ix.drop_ledger_prefix(1);
        assert_eq!(ix.first().map(|e| e.base_offset), Some(6));
        assert_eq!(ix.position_of(3), None);
        assert_eq!(ix.position_of(6), Some(0));
    }

    #[test]
    fn truncate_back_drops_lost_entries() {
        let mut ix = index();
        assert_eq!(ix.truncate_back(|e| e.ledger == 2 && e.entry >= 1), Some(10));
        assert_eq!(ix.last().map(|e| e.last_offset), Some(9));
        assert_eq!(ix.truncate_back(|e| e.ledger == 9), None);
        assert_eq!(ix.truncate_back(|_| true), Some(0));
        assert!(ix.is_empty());
    }
}
