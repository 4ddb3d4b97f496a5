//! The managed ledger after a ledger-store failure (`resume`), and its durable state for
//! snapshots. A child module, so it works on the log's private state directly.

use super::{LogError, ManagedLedger};
use crate::log::snapshot::PartitionSnapshot;
use crate::storage::{LedgerId, LedgerStore};

impl ManagedLedger {
    /// After the store failed and resumed: drops every append of the current ledger the store
    /// did not make durable (index, tail cache, producer state, next offset), and if there
    /// were any, closes that ledger at its durable length and continues in a new one, as
    /// Pulsar does with a failed ledger. Recovery honours the closed length, so entries of
    /// the failed window that reached the disk anyway never reappear.
    pub(super) async fn resume(&self, failures: u64) -> Result<(), LogError> {
        let (lost_ledger, roll) = {
            let mut guard = self.state.borrow_mut();
            let st = &mut *guard;
            let Some(l) = st.current else {
                st.broken = None;
                st.store_failures = failures;
                return Ok(());
            };
            let durable = |ledger: LedgerId| self.store.last_entry(ledger).map_or(0, |e| e + 1);
            // What the store lost is a suffix of the index (store order is offset order); it
            // may reach back into the previous ledger if the failure hit during a rollover.
            let mut lost: Vec<(LedgerId, u64)> = Vec::new();
            for i in (0..st.index.len()).rev() {
                let Some(e) = st.index.get(i) else { break };
                if self.store.pending_entries(e.ledger) > 0 {
                    // Not settled yet (cannot happen after a store failure, which settles all).
                    return Err(LogError::Failed("appends still pending in the ledger store".into()));
                }
                let d = durable(e.ledger);
                if e.entry < d {
                    break;
                }
                if lost.last().is_none_or(|x| x.0 != e.ledger) {
                    lost.push((e.ledger, d));
                }
            }
            if self.store.pending_entries(l) > 0 {
                return Err(LogError::Failed("appends still pending in the ledger store".into()));
            }
            if st.current_entries > durable(l) && !lost.iter().any(|x| x.0 == l) {
                // Assigned but neither indexed nor durable: cannot happen, but would leave a gap.
                lost.push((l, durable(l)));
            }
            if !lost.is_empty() {
                let end = st.index.truncate_back(|e| lost.iter().any(|(x, d)| *x == e.ledger && e.entry >= *d));
                if let Some(end) = end {
                    tracing::warn!(topic = %self.topic, partition = self.partition, from = end, to = st.next_offset,
                        "appends lost to a ledger store failure are discarded; the log continues in a new ledger");
                    st.next_offset = end;
                    st.high_watermark = end;
                    st.tail.truncate_from(end);
                }
                // Closed ledgers get their durable length, written with the next ledger list.
                for (x, d) in &lost {
                    if Some(*x) == st.current {
                        continue;
                    }
                    if let Some(li) = st.info.ledger_info.iter_mut().find(|li| li.ledger_id as LedgerId == *x) {
                        li.entries = Some(*d as i64);
                    }
                }
                let d = durable(l);
                st.current_entries = d;
                st.current_bytes = st.index.bytes_in(l);
                st.must_roll = true;
            }
            let durable = durable(l);
            let end = st.next_offset;
            while let Some((pid, epoch, b)) = st.pending_producers.pop_front() {
                if b.last_offset < end {
                    st.durable_producers.record(pid, epoch, b);
                }
            }
            st.producers = st.durable_producers.clone();
            let lost_ledger = (st.must_roll && durable == 0).then_some(l);
            if !st.must_roll {
                st.broken = None;
                st.store_failures = failures;
            }
            (lost_ledger, st.must_roll)
        };
        if roll {
            self.roll_over().await?;
            {
                let mut st = self.state.borrow_mut();
                st.must_roll = false;
                st.broken = None;
                st.store_failures = failures;
            }
            if let Some(l) = lost_ledger {
                // Nothing of it is durable and the ledger list no longer names it.
                let _ = self.store.delete_ledger(l).await;
            }
        }
        self.progress.notify(usize::MAX);
        Ok(())
    }

    /// The durable state (below the high watermark) for a snapshot; synchronous, so it is
    /// one consistent cut.
    pub fn snapshot(&self) -> PartitionSnapshot {
        let st = self.state.borrow();
        let end = st.high_watermark;
        let index =
            (0..st.index.len()).filter_map(|i| st.index.get(i)).take_while(|e| e.base_offset < end).copied().collect();
        PartitionSnapshot { path: self.path(), end, index, producers: st.durable_producers.export() }
    }
}
