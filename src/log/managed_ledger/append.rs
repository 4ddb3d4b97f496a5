//! Appending: the synchronous half (sequence check, offsets, entry, index and cache) and the
//! store's answer booked once the entry is durable. A child module, so it works on the log's
//! private state directly.

use super::*;

/// A batch handed to an append (validated).
#[derive(Clone, Copy)]
pub enum IncomingBatch<'a> {
    /// Copied into its entry.
    Copy(&'a [u8]),
    /// Only the header is copied; the records stay where they are, referenced by the entry
    /// until it is stored and by the tail cache after that. For large batches, whose buffer
    /// the caller accepts to keep alive that long.
    Share(&'a Bytes),
}

impl IncomingBatch<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            IncomingBatch::Copy(b) => b,
            IncomingBatch::Share(b) => b,
        }
    }
}

/// An append after its synchronous half.
struct Prepared {
    entry_bytes: SplitBytes,
    /// The checksum of the batch inside the entry (validated), for the store to build on.
    known_crc: KnownCrc,
    expected_entry: u64,
    base: i64,
    last: i64,
    append_time: i64,
    rollover: bool,
}

enum Step {
    Append(Prepared),
    /// A retried idempotent batch: already stored with these offsets.
    Duplicate(BatchSeq, i64),
}

impl ManagedLedger {
    /// The synchronous half of an append: sequence check, offset assignment, entry encoding,
    /// index and cache update. No await happens between this and handing the entry to the store.
    fn prepare(
        &self,
        ledger: LedgerId,
        incoming: IncomingBatch<'_>,
        validated: &Validated,
        leader_epoch: i32,
    ) -> Result<Step, LogError> {
        let batch = incoming.bytes();
        let header = &validated.header;
        let count = header.last_offset_delta as i64 + 1;
        let mut st = self.state.borrow_mut();
        let mut producer_batch = None;
        if header.producer_id >= 0 {
            let last_seq = crate::log::producer_state::last_seq(header.base_sequence, count as i32);
            match st.producers.check(header.producer_id, header.producer_epoch, header.base_sequence, last_seq) {
                SequenceCheck::New => producer_batch = Some(last_seq),
                SequenceCheck::Duplicate(b) => return Ok(Step::Duplicate(b, st.log_start)),
                SequenceCheck::StaleEpoch => return Err(LogError::InvalidProducerEpoch),
                SequenceCheck::OutOfOrder => return Err(LogError::OutOfOrderSequence),
            }
        }
        let base = st.next_offset;
        let last = base + count - 1;
        let now = now_ms();
        // A shared batch's records stay a piece of their own; its header is copied and edited.
        let records = match incoming {
            IncomingBatch::Share(b) if b.len() > record_batch::HEADER_SIZE => b.slice(record_batch::HEADER_SIZE..),
            _ => Bytes::new(),
        };
        let copied = &batch[..batch.len() - records.len()];
        let mut entry_bytes = entry::encode_kafka_entry_start(copied, last, count as i32, now as u64);
        let payload_at = entry_bytes.len() - copied.len();
        let append_time = if st.settings.log_append_time { now } else { -1 };
        let max_ts = if append_time >= 0 { append_time } else { validated.max_timestamp };
        {
            // The batch was validated, so these fixed-position edits cannot fail.
            let payload = &mut entry_bytes[payload_at..];
            let mut edit = record_batch::set_base_offset(payload, base)
                .and_then(|_| record_batch::set_partition_leader_epoch(payload, leader_epoch));
            if append_time >= 0 {
                edit = edit.and_then(|_| record_batch::set_log_append_time(payload, append_time));
            } else if validated.max_timestamp != header.max_timestamp {
                // Kafka stores the true maximum of the records, whatever the producer claimed.
                edit = edit.and_then(|_| record_batch::set_max_timestamp(payload, TimestampType::CreateTime, max_ts));
            }
            if let Err(e) = edit {
                debug_assert!(false, "editing a validated batch failed: {e}");
                return Err(LogError::Failed(e.to_string()));
            }
        }
        let entry_bytes = SplitBytes::new(entry_bytes.freeze(), records);
        // A validated batch always has its CRC field; else no tail is known (an empty one).
        let known_crc = record_batch::crc_field(&entry_bytes.front()[payload_at..]).map_or(
            KnownCrc { from: entry_bytes.len(), crc: 0 },
            |(from, crc)| KnownCrc { from: payload_at + from, crc },
        );
        let expected_entry = st.current_entries;
        st.next_offset = last + 1;
        st.current_entries += 1;
        st.current_bytes += entry_bytes.len() as u64;
        st.index.push(base, last, ledger, expected_entry, max_ts, batch.len() as u32);
        st.tail.push(base, entry_bytes.slice_from(payload_at));
        if let Some(last_seq) = producer_batch {
            let b = BatchSeq {
                first_seq: header.base_sequence,
                last_seq,
                base_offset: base,
                last_offset: last,
                max_timestamp: max_ts,
            };
            st.producers.record(header.producer_id, header.producer_epoch, b);
            st.pending_producers.push_back((header.producer_id, header.producer_epoch, b));
        }
        let rollover = Self::needs_rollover(&st);
        if rollover {
            st.rolling = true;
        }
        Ok(Step::Append(Prepared { entry_bytes, known_crc, expected_entry, base, last, append_time, rollover }))
    }

    /// Appends one validated batch. `batch` is the client's bytes; offsets are assigned here.
    pub async fn append(
        self: &Rc<Self>,
        batch: &[u8],
        validated: &Validated,
        leader_epoch: i32,
    ) -> Result<AppendResult, LogError> {
        self.begin_append(IncomingBatch::Copy(batch), validated, leader_epoch).await?.await
    }

    /// The first half of [`Self::append`]: assigns the batch its offsets and queues it in the
    /// store, then returns what awaits its durability. Batches begun one after another keep
    /// that order (offsets and store order), however their durability is awaited, so a
    /// connection may take its next produce before answering this one.
    pub async fn begin_append(
        self: &Rc<Self>,
        batch: IncomingBatch<'_>,
        validated: &Validated,
        leader_epoch: i32,
    ) -> Result<Appending, LogError> {
        let ledger = self.ready().await?;
        // Refused before offsets are assigned, so backpressure leaves nothing to undo. The
        // margin covers the entry's Pulsar metadata.
        if !self.store.has_room(batch.bytes().len() + 256) {
            return Err(LogError::Storage(StorageError::Backpressure));
        }
        let ml = self.clone();
        let Prepared { entry_bytes, known_crc, expected_entry, base, last, append_time, rollover } =
            match self.prepare(ledger, batch, validated, leader_epoch)? {
                Step::Append(p) => p,
                Step::Duplicate(b, log_start) => {
                    return Ok(Box::pin(async move {
                        ml.durable(b.last_offset).await?;
                        // Kafka answers a duplicate with the original batch's timestamp.
                        Ok(AppendResult {
                            base_offset: b.base_offset,
                            log_append_time: b.max_timestamp,
                            log_start_offset: log_start,
                        })
                    }));
                }
            };
        // Called in the same poll as the offset assignment: store order is offset order.
        let appended = self.store.append_known(ledger, entry_bytes, known_crc);
        if rollover {
            let ml = self.clone();
            crate::runtime::spawn(async move {
                if let Err(e) = ml.roll_over().await {
                    tracing::warn!(topic = %ml.topic, partition = ml.partition, error = %e, "ledger rollover failed");
                }
            });
        }
        Ok(Box::pin(async move {
            let stored = appended.await;
            ml.appended(stored, expected_entry, last).map(|log_start_offset| AppendResult {
                base_offset: base,
                log_append_time: append_time,
                log_start_offset,
            })
        }))
    }

    /// Books the store's answer to an append of offsets up to `last`: the high watermark and
    /// producer states move on, or the log is fenced or broken. The log start offset on success.
    fn appended(
        &self,
        stored: Result<EntryId, StorageError>,
        expected_entry: EntryId,
        last: i64,
    ) -> Result<i64, LogError> {
        match stored {
            Ok(_) if self.state.borrow().fenced => Err(LogError::Fenced),
            Ok(id) => {
                debug_assert_eq!(id, expected_entry, "entry ids contiguous");
                let log_start = {
                    let mut guard = self.state.borrow_mut();
                    let st = &mut *guard;
                    st.high_watermark = st.high_watermark.max(last + 1);
                    while st.pending_producers.front().is_some_and(|p| p.2.last_offset < st.high_watermark) {
                        if let Some((pid, epoch, b)) = st.pending_producers.pop_front() {
                            st.durable_producers.record(pid, epoch, b);
                        }
                    }
                    st.log_start
                };
                self.progress.notify(usize::MAX);
                Ok(log_start)
            }
            Err(StorageError::Fenced(ledger)) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, ledger,
                    "ledger fenced by another writer: the partition has a new owner");
                self.fence();
                Err(LogError::Fenced)
            }
            Err(e) => {
                // Offsets past this one may already be assigned; nothing more is appended
                // until the store resumes and `resume` rolls back to what is durable.
                self.state.borrow_mut().broken.get_or_insert_with(|| e.to_string());
                self.progress.notify(usize::MAX);
                Err(LogError::Storage(e))
            }
        }
    }
}

/// An append whose offsets are assigned and whose entry is queued in the store: resolves once
/// the entry is durable (or the append failed).
pub type Appending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AppendResult, LogError>>>>;
