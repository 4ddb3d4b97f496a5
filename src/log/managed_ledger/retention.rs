//! Dropping data: DeleteRecords, retention by time and size (whole ledgers, oldest first) and
//! deleting the partition. A child module, so it works on the log's private state directly.

use super::{LogError, ManagedLedger, now_ms};
use crate::log::cursor::cursor_path;
use crate::log::ml_metadata::LOG_START_OFFSET_PROPERTY;
use crate::log::offset_index::IndexEntry;
use crate::meta::store::StoreOp;
use crate::storage::{LedgerId, LedgerStore};

impl ManagedLedger {
    /// Moves the log start offset forward (DeleteRecords). Returns the new log start offset.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let ops = {
            let mut st = self.state.borrow_mut();
            let target = if offset == -1 { st.high_watermark } else { offset };
            if target < 0 || target > st.high_watermark {
                return Err(LogError::OffsetOutOfRange(offset));
            }
            if target <= st.log_start {
                return Ok(st.log_start);
            }
            st.log_start = target;
            st.info.set_property(LOG_START_OFFSET_PROPERTY, target.to_string());
            vec![StoreOp::Put { path: self.path(), value: st.info.to_bytes() }]
        };
        self.meta.commit(ops).await.map_err(|e| self.metadata_error(e))?;
        self.enforce_retention().await?;
        Ok(self.log_start_offset())
    }

    /// Deletes whole closed ledgers beyond retention.ms / retention.bytes or wholly below the
    /// log start offset, oldest first.
    pub async fn enforce_retention(&self) -> Result<(), LogError> {
        loop {
            let victim = {
                let st = self.state.borrow();
                let Some(oldest) = st.index.first().map(|e| e.ledger) else { return Ok(()) };
                if Some(oldest) == st.current {
                    return Ok(());
                }
                let ledger_entries: Vec<&IndexEntry> =
                    (0..st.index.len()).filter_map(|i| st.index.get(i)).take_while(|e| e.ledger == oldest).collect();
                let last = ledger_entries.last().map(|e| (e.last_offset, e.running_max_timestamp));
                let ledger_bytes: i64 = ledger_entries.iter().map(|e| e.size as i64).sum();
                let total_bytes: i64 = (0..st.index.len()).filter_map(|i| st.index.get(i)).map(|e| e.size as i64).sum();
                let (last_offset, newest_ts) = last.unwrap_or((-1, 0));
                // A ledger rolled over with appends still in flight is not deleted under them
                // (Kafka, too, deletes only segments below the high watermark).
                if last_offset >= st.high_watermark {
                    return Ok(());
                }
                let s = &st.settings;
                let expired = s.retention_ms >= 0 && newest_ts < now_ms() - s.retention_ms;
                let oversize = s.retention_bytes >= 0 && total_bytes - ledger_bytes >= s.retention_bytes;
                let below_start = last_offset < st.log_start;
                // A cursor still needing the ledger keeps it unless DeleteRecords moved past it.
                let unconsumed = s.keep_unconsumed
                    && self.cursors.borrow().values().map(|c| c.offset).min().is_some_and(|o| o <= last_offset);
                if !(below_start || ((expired || oversize) && !unconsumed)) {
                    return Ok(());
                }
                oldest
            };
            let ops = {
                let mut st = self.state.borrow_mut();
                st.info.ledger_info.retain(|l| l.ledger_id as LedgerId != victim);
                st.index.drop_ledger_prefix(victim);
                let first = st.index.first().map_or(st.next_offset, |e| e.base_offset);
                st.log_start = st.log_start.max(first);
                let start = st.log_start.to_string();
                st.info.set_property(LOG_START_OFFSET_PROPERTY, start);
                vec![StoreOp::Put { path: self.path(), value: st.info.to_bytes() }]
            };
            self.meta.commit(ops).await.map_err(|e| self.metadata_error(e))?;
            self.store.delete_ledger(victim).await?;
        }
    }

    /// Removes the partition's data and metadata (topic deleted).
    pub async fn delete(&self) -> Result<(), LogError> {
        let ledgers: Vec<LedgerId> = {
            let mut st = self.state.borrow_mut();
            st.failed = Some("partition deleted".into());
            st.tail.clear();
            st.info.ledger_ids().collect()
        };
        self.progress.notify(usize::MAX);
        let path = self.path();
        let mut ops: Vec<StoreOp> =
            self.cursors.take().keys().map(|name| StoreOp::Delete { path: cursor_path(&path, name) }).collect();
        ops.push(StoreOp::Delete { path });
        self.meta.commit(ops).await.map_err(|e| self.metadata_error(e))?;
        for l in ledgers {
            self.store.delete_ledger(l).await?;
        }
        Ok(())
    }
}
