//! The tail cache: the most recent batches of a partition kept in memory, so consumers at the
//! tail are served without touching the ledger store. Bounded in bytes; oldest out first.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug)]
pub struct TailCache {
    batches: VecDeque<(i64, Bytes)>,
    bytes: usize,
    max_bytes: usize,
}

impl TailCache {
    pub fn new(max_bytes: usize) -> Self {
        Self { batches: VecDeque::new(), bytes: 0, max_bytes }
    }

    /// Adds the batch whose first offset is `base_offset` (offsets increase from call to call).
    pub fn push(&mut self, base_offset: i64, batch: Bytes) {
        debug_assert!(self.batches.back().is_none_or(|(b, _)| *b < base_offset));
        if batch.len() > self.max_bytes {
            self.clear();
            return;
        }
        self.bytes += batch.len();
        self.batches.push_back((base_offset, batch));
        while self.bytes > self.max_bytes {
            match self.batches.pop_front() {
                Some((_, b)) => self.bytes -= b.len(),
                None => break,
            }
        }
    }

    /// The cached batch starting at `base_offset`.
    pub fn get(&self, base_offset: i64) -> Option<&Bytes> {
        let i = self.batches.partition_point(|(b, _)| *b < base_offset);
        self.batches.get(i).filter(|(b, _)| *b == base_offset).map(|(_, batch)| batch)
    }

    /// Drops every batch starting at or after `offset` (appends that never became durable).
    pub fn truncate_from(&mut self, offset: i64) {
        while self.batches.back().is_some_and(|(b, _)| *b >= offset) {
            if let Some((_, b)) = self.batches.pop_back() {
                self.bytes -= b.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_bytes() {
        let mut c = TailCache::new(10);
        c.push(0, Bytes::from_static(b"aaaa"));
        c.push(4, Bytes::from_static(b"bbbb"));
        assert!(c.get(0).is_some());
        c.push(8, Bytes::from_static(b"cccc"));
        assert!(c.get(0).is_none());
        assert_eq!(c.get(4).map(|b| &b[..]), Some(&b"bbbb"[..]));
        assert!(c.get(5).is_none());
        c.push(12, Bytes::from(vec![0u8; 11]));
        assert!(c.get(8).is_none() && c.get(12).is_none());
    }

    #[test]
    fn truncate_drops_the_newest_batches() {
        let mut c = TailCache::new(100);
        for (o, b) in [(0, &b"aa"[..]), (2, b"bb"), (4, b"cc")] {
            c.push(o, Bytes::copy_from_slice(b));
        }
        c.truncate_from(2);
        assert!(c.get(0).is_some() && c.get(2).is_none() && c.get(4).is_none());
        c.push(2, Bytes::from_static(b"dd"));
        assert_eq!(c.get(2).map(|b| &b[..]), Some(&b"dd"[..]));
    }
}
