//! Idempotent-producer state of one partition: per producer id, its epoch and the last few
//! batches' sequence ranges, so a retried batch is recognised and answered with its original
//! offset, and gaps or stale epochs are refused as Kafka refuses them.

use std::collections::{HashMap, VecDeque};

/// Kafka keeps this many recent batches per producer for duplicate detection (and the Java
/// producer allows as many in flight).
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The stored batch's max timestamp: what Kafka reports as the append time of a duplicate.
    pub max_timestamp: i64,
}

#[derive(Debug, Default, Clone)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchSeq>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    New,
    /// Already stored: answer with this batch's offsets.
    Duplicate(BatchSeq),
    /// The producer's epoch is older than the latest seen.
    StaleEpoch,
    /// A gap (or a new epoch not starting at 0).
    OutOfOrder,
}

/// The sequence after `seq` (sequences wrap from i32::MAX to 0).
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// Last sequence of a batch of `count` records starting at `first`.
pub fn last_seq(first: i32, count: i32) -> i32 {
    ((first as i64 + count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Default, Clone)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> SequenceCheck {
        let Some(p) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state was removed with old data): accept.
            return SequenceCheck::New;
        };
        if epoch < p.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if epoch > p.epoch {
            return if first_seq == 0 { SequenceCheck::New } else { SequenceCheck::OutOfOrder };
        }
        if let Some(b) = p.batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last_seq) {
            return SequenceCheck::Duplicate(*b);
        }
        match p.batches.back() {
            Some(b) if next_seq(b.last_seq) != first_seq => SequenceCheck::OutOfOrder,
            _ => SequenceCheck::New,
        }
    }

    /// Records an appended batch (after `check` said New, or during recovery).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchSeq) {
        let p = self.producers.entry(producer_id).or_default();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        if p.batches.len() == BATCHES_PER_PRODUCER {
            p.batches.pop_front();
        }
        p.batches.push_back(batch);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Every producer's epoch and remembered batches (oldest first), by producer id; feeding
    /// them back through `record` rebuilds the same table.
    pub fn export(&self) -> Vec<(i64, i16, Vec<BatchSeq>)> {
        let mut out: Vec<_> =
            self.producers.iter().map(|(pid, p)| (*pid, p.epoch, p.batches.iter().copied().collect())).collect();
        out.sort_unstable_by_key(|p: &(i64, i16, Vec<BatchSeq>)| p.0);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, off: i64) -> BatchSeq {
        BatchSeq {
            first_seq: first,
            last_seq: last,
            base_offset: off,
            last_offset: off + (last - first) as i64,
            max_timestamp: -1,
        }
    }

    #[test]
    fn sequences_duplicates_and_gaps() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(7, 0, 0, 4), SequenceCheck::New);
        t.record(7, 0, b(0, 4, 100));
        assert_eq!(t.check(7, 0, 5, 9), SequenceCheck::New);
        t.record(7, 0, b(5, 9, 105));
        assert_eq!(t.check(7, 0, 0, 4), SequenceCheck::Duplicate(b(0, 4, 100)));
        assert_eq!(t.check(7, 0, 11, 12), SequenceCheck::OutOfOrder);
        assert_eq!(t.check(7, 1, 3, 4), SequenceCheck::OutOfOrder);
        assert_eq!(t.check(7, 1, 0, 0), SequenceCheck::New);
        t.record(7, 1, b(0, 0, 200));
        assert_eq!(t.check(7, 0, 10, 10), SequenceCheck::StaleEpoch);
    }

    #[test]
    fn only_recent_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..10 {
            t.record(1, 0, b(i, i, i as i64));
        }
        assert_eq!(t.check(1, 0, 9, 9), SequenceCheck::Duplicate(b(9, 9, 9)));
        assert_eq!(t.check(1, 0, 5, 5), SequenceCheck::Duplicate(b(5, 5, 5)));
        assert_eq!(t.check(1, 0, 4, 4), SequenceCheck::OutOfOrder);
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(last_seq(i32::MAX, 2), 0);
        let mut t = ProducerStateTable::default();
        t.record(1, 0, b(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(t.check(1, 0, 0, 3), SequenceCheck::New);
    }

    #[test]
    fn export_rebuilds_the_same_table() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(1, 0, b(i, i, i as i64));
        }
        t.record(2, 3, b(0, 4, 100));
        let mut back = ProducerStateTable::default();
        for (pid, epoch, batches) in t.export() {
            batches.into_iter().for_each(|x| back.record(pid, epoch, x));
        }
        assert_eq!(back.export(), t.export());
        assert_eq!(back.check(1, 0, 6, 6), SequenceCheck::Duplicate(b(6, 6, 6)));
        assert_eq!(back.check(2, 2, 5, 5), SequenceCheck::StaleEpoch);
    }
}
