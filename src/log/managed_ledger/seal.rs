//! Sealing ledgers: the one a rollover left behind, and the current one at shutdown. A child
//! module, so it works on the log's private state directly.

use super::ManagedLedger;
use crate::storage::{LedgerId, LedgerStore};

impl ManagedLedger {
    /// Shutdown: no more appends; the ledger taking them is sealed once they have settled.
    /// (An empty one stays in the ledger list, so it is sealed, not deleted.)
    pub async fn close(&self) {
        let current = {
            let mut st = self.state.borrow_mut();
            st.failed.get_or_insert_with(|| "partition closed".into());
            st.current
        };
        self.progress.notify(usize::MAX);
        let Some(ledger) = current else { return };
        loop {
            let listener = self.progress.listen();
            if self.store.pending_entries(ledger) == 0 {
                break;
            }
            listener.await;
        }
        if let Err(e) = self.store.close_ledger(ledger).await {
            tracing::warn!(topic = %self.topic, partition = self.partition, ledger, error = %e, "cannot seal the current ledger at shutdown");
        }
    }

    /// A planned move: new appends are refused (clients go to the new owner), those under way
    /// still complete, and the current ledger is sealed so the next owner finds it closed.
    pub async fn hand_over(&self) {
        self.state.borrow_mut().moving = true;
        self.close().await;
    }

    /// Seals the ledger a rollover left once its appends have settled (a store that closes a
    /// ledger fails the appends still in flight), or deletes it if it got nothing.
    pub(super) async fn seal(&self, ledger: LedgerId, empty: bool) {
        loop {
            let listener = self.progress.listen();
            if self.store.pending_entries(ledger) == 0 || self.state.borrow().failed.is_some() {
                break;
            }
            listener.await;
        }
        let result = if empty { self.store.delete_ledger(ledger).await } else { self.store.close_ledger(ledger).await };
        if let Err(e) = result {
            // Recovery fences and seals it on the next open.
            tracing::warn!(topic = %self.topic, partition = self.partition, ledger, error = %e, "cannot seal a rolled-over ledger");
        }
    }
}
