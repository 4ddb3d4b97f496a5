//! The tail cache: the most recent batches of each partition kept in memory, so consumers at
//! the tail are served without touching the ledger store.
//!
//! All partitions of a core draw from one [`TailBudget`] (`log.tail.cache.bytes` per core):
//! when it is spent, the batch written longest ago, whichever partition holds it, goes first.
//! So memory stays flat as partitions are added, and busy partitions keep more of their tail
//! than idle ones. Within a partition, write order is offset order, so a partition always
//! loses its oldest batch first and its cache stays a contiguous run of offsets.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use crate::storage::SplitBytes;

type Batches = RefCell<VecDeque<(i64, SplitBytes)>>;

/// One core's tail-cache budget, shared by its partitions.
#[derive(Debug)]
pub struct TailBudget {
    /// `log.tail.cache.bytes`, changeable at run time (a dynamic broker config).
    max_bytes: Cell<usize>,
    /// Bytes held by all caches drawing from this budget.
    bytes: Cell<usize>,
    /// Every cached batch in write order: its partition's cache and base offset. Entries of
    /// batches already gone (truncated, cleared, their partition closed) are skipped when met.
    order: RefCell<VecDeque<(Weak<Batches>, i64)>>,
    /// Batches cached now (`order` minus the stale entries).
    live: Cell<usize>,
}

impl TailBudget {
    pub fn new(max_bytes: usize) -> Rc<Self> {
        Rc::new(TailBudget {
            max_bytes: Cell::new(max_bytes),
            bytes: Cell::new(0),
            order: RefCell::new(VecDeque::new()),
            live: Cell::new(0),
        })
    }

    /// A new budget; a smaller one evicts the oldest batches at once.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        if self.max_bytes.replace(max_bytes) != max_bytes {
            self.evict();
        }
    }

    /// Bytes cached now, over all partitions.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    fn released(&self, batches: usize, bytes: usize) {
        self.live.set(self.live.get() - batches);
        self.bytes.set(self.bytes.get() - bytes);
    }

    /// Evicts the oldest batches until the budget holds.
    fn evict(&self) {
        let mut order = self.order.borrow_mut();
        while self.bytes.get() > self.max_bytes.get() {
            let Some((cache, base)) = order.pop_front() else { break };
            let Some(cache) = cache.upgrade() else { continue };
            let mut b = cache.borrow_mut();
            // Otherwise already gone: its bytes were given back then.
            if b.front().is_some_and(|(o, _)| *o == base)
                && let Some((_, batch)) = b.pop_front()
            {
                self.released(1, batch.len());
            }
        }
        // Stale entries pile up only while nothing is evicted (the budget not spent): drop
        // them once they outnumber the live ones, so `order` stays proportional to the cache.
        if order.len() > 2 * self.live.get() + 1024 {
            order.retain(|(cache, base)| {
                cache.upgrade().is_some_and(|c| {
                    let b = c.borrow();
                    let i = b.partition_point(|(o, _)| o < base);
                    b.get(i).is_some_and(|(o, _)| o == base)
                })
            });
        }
    }
}

/// One partition's cached batches, by base offset.
#[derive(Debug)]
pub struct TailCache {
    batches: Rc<Batches>,
    budget: Rc<TailBudget>,
}

impl TailCache {
    pub fn new(budget: Rc<TailBudget>) -> Self {
        Self { batches: Rc::new(RefCell::new(VecDeque::new())), budget }
    }

    /// Adds the batch whose first offset is `base_offset` (offsets increase from call to call).
    pub fn push(&mut self, base_offset: i64, batch: SplitBytes) {
        debug_assert!(self.batches.borrow().back().is_none_or(|(b, _)| *b < base_offset));
        if batch.len() > self.budget.max_bytes.get() {
            // Could never be kept; and a gap must not be left in the run of offsets.
            self.clear();
            return;
        }
        let b = &self.budget;
        b.bytes.set(b.bytes.get() + batch.len());
        b.live.set(b.live.get() + 1);
        self.batches.borrow_mut().push_back((base_offset, batch));
        b.order.borrow_mut().push_back((Rc::downgrade(&self.batches), base_offset));
        b.evict();
    }

    /// The cached batch starting at `base_offset`.
    pub fn get(&self, base_offset: i64) -> Option<SplitBytes> {
        let b = self.batches.borrow();
        let i = b.partition_point(|(o, _)| *o < base_offset);
        b.get(i).filter(|(o, _)| *o == base_offset).map(|(_, batch)| batch.clone())
    }

    /// Drops every batch starting at or after `offset` (appends that never became durable).
    pub fn truncate_from(&mut self, offset: i64) {
        let mut b = self.batches.borrow_mut();
        while b.back().is_some_and(|(o, _)| *o >= offset) {
            if let Some((_, batch)) = b.pop_back() {
                self.budget.released(1, batch.len());
            }
        }
    }

    pub fn clear(&mut self) {
        let mut b = self.batches.borrow_mut();
        let bytes = b.iter().map(|(_, batch)| batch.len()).sum();
        self.budget.released(b.len(), bytes);
        b.clear();
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn bounded_by_bytes() {
        let mut c = TailCache::new(TailBudget::new(10));
        c.push(0, Bytes::from_static(b"aaaa").into());
        c.push(4, Bytes::from_static(b"bbbb").into());
        assert!(c.get(0).is_some());
        c.push(8, Bytes::from_static(b"cccc").into());
        assert!(c.get(0).is_none());
        assert_eq!(c.get(4).map(|b| b.contiguous()).as_deref(), Some(&b"bbbb"[..]));
        assert!(c.get(5).is_none());
        c.push(12, Bytes::from(vec![0u8; 11]).into());
        assert!(c.get(8).is_none() && c.get(12).is_none());
        assert_eq!(c.budget.bytes(), 0);
    }

    #[test]
    fn truncate_drops_the_newest_batches() {
        let mut c = TailCache::new(TailBudget::new(100));
        for (o, b) in [(0, &b"aa"[..]), (2, b"bb"), (4, b"cc")] {
            c.push(o, Bytes::copy_from_slice(b).into());
        }
        c.truncate_from(2);
        assert!(c.get(0).is_some() && c.get(2).is_none() && c.get(4).is_none());
        assert_eq!(c.budget.bytes(), 2);
        c.push(2, Bytes::from_static(b"dd").into());
        assert_eq!(c.get(2).map(|b| b.contiguous()).as_deref(), Some(&b"dd"[..]));
    }

    #[test]
    fn partitions_share_the_budget_oldest_write_out_first() {
        let budget = TailBudget::new(300);
        let (mut a, mut b) = (TailCache::new(budget.clone()), TailCache::new(budget.clone()));
        a.push(0, bytes(100).into());
        b.push(0, bytes(100).into());
        a.push(1, bytes(100).into());
        assert_eq!(budget.bytes(), 300);
        // Over budget: the oldest write (a's offset 0) goes, not b's newer batch.
        b.push(1, bytes(100).into());
        assert!(a.get(0).is_none() && b.get(0).is_some() && a.get(1).is_some() && b.get(1).is_some());
        assert_eq!(budget.bytes(), 300);
        // A busy partition takes the whole budget from an idle one over time.
        for o in 2..5 {
            a.push(o, bytes(100).into());
        }
        assert!(b.get(0).is_none() && b.get(1).is_none());
        assert!((2..5).all(|o| a.get(o).is_some()));
        assert_eq!(budget.bytes(), 300);
    }

    #[test]
    fn closed_partitions_give_their_bytes_back() {
        let budget = TailBudget::new(1000);
        let mut a = TailCache::new(budget.clone());
        for o in 0..5 {
            a.push(o, bytes(100).into());
        }
        let mut b = TailCache::new(budget.clone());
        b.push(0, bytes(100).into());
        drop(a);
        assert_eq!(budget.bytes(), 100);
        // The dropped partition's stale entries do not cost the others anything.
        for o in 1..10 {
            b.push(o, bytes(100).into());
        }
        assert_eq!(budget.bytes(), 1000);
        b.push(10, bytes(100).into());
        assert!(b.get(0).is_none() && b.get(1).is_some());
        assert_eq!(budget.bytes(), 1000);
    }

    #[test]
    fn a_smaller_budget_evicts_the_oldest_at_once() {
        let budget = TailBudget::new(1000);
        let mut a = TailCache::new(budget.clone());
        for o in 0..5 {
            a.push(o, bytes(100).into());
        }
        budget.set_max_bytes(200);
        assert_eq!(budget.bytes(), 200);
        assert!(a.get(2).is_none() && a.get(3).is_some() && a.get(4).is_some());
        budget.set_max_bytes(0);
        a.push(5, bytes(100).into());
        assert_eq!(budget.bytes(), 0, "no budget: nothing is kept");
    }

    #[test]
    fn stale_entries_stay_bounded_while_under_budget() {
        let budget = TailBudget::new(usize::MAX);
        let mut c = TailCache::new(budget.clone());
        for round in 0..100i64 {
            for o in 0..100 {
                c.push(round * 100 + o, bytes(1).into());
            }
            c.clear();
        }
        c.push(1_000_000, bytes(1).into());
        // One live batch: at most twice that plus the slack, plus the pushes of one round.
        assert!(budget.order.borrow().len() <= 2 + 1024 + 100, "{}", budget.order.borrow().len());
        assert_eq!(budget.bytes(), 1);
    }
}
