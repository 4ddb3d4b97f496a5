//! Fetch responses without the concatenation copy.
//!
//! A partition's records go into a Fetch response as one byte string, but a fetch usually
//! returns several stored batches, each its own `Bytes`. Joining them first and letting the
//! codec copy the result into the response buffer would copy every fetched byte twice. Instead
//! the partition gets a placeholder of the right length: a slice of a static, never-read region.
//! The codec writes the placeholder with one `put_slice`, which [`SplicingBuf`] recognises by
//! its address and replaces with the batches themselves, so each byte is copied once, into the
//! response buffer.
//!
//! The codec visits partitions in order, so placeholders are matched to batch lists first in,
//! first out; a length that does not match fails the encode rather than sending wrong bytes.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Multi-batch records up to this size are spliced; larger ones are joined (rare: a single
/// partition's fetch is bounded by the client's `max.partition.fetch.bytes`).
const PLACEHOLDER_LEN: usize = 64 << 20;

/// A read-only anonymous mapping that is never unmapped: address space only (nothing reads
/// it, and a read would see zero pages). `None` if it cannot be mapped: then batches are joined.
fn placeholder() -> Option<&'static [u8]> {
    static REGION: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let base = *REGION.get_or_init(|| {
        // SAFETY: a fresh private anonymous mapping; no existing memory is involved.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PLACEHOLDER_LEN,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(p as usize)
    });
    // SAFETY: the mapping is PLACEHOLDER_LEN readable bytes and lives until the process exits.
    base.map(|b| unsafe { std::slice::from_raw_parts(b as *const u8, PLACEHOLDER_LEN) })
}

fn is_placeholder(s: &[u8]) -> bool {
    placeholder().is_some_and(|p| !s.is_empty() && s.as_ptr() == p.as_ptr() && s.len() <= p.len())
}

/// Batch lists waiting to replace their placeholders, in encoding order.
#[derive(Default)]
pub struct Splices {
    pending: VecDeque<(usize, Vec<Bytes>)>,
    /// Off: `records` joins batches (for a response not encoded through [`SplicingBuf`]).
    enabled: bool,
}

impl Splices {
    pub fn new(enabled: bool) -> Self {
        Splices { pending: VecDeque::new(), enabled }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The `records` value for `batches` (of `total` bytes): the batch itself when there is
    /// one, else a placeholder (or, past the placeholder size, the joined bytes).
    pub fn records(&mut self, mut batches: Vec<Bytes>, total: usize) -> Bytes {
        if batches.len() <= 1 {
            return batches.pop().unwrap_or_default();
        }
        match placeholder() {
            Some(region) if self.enabled && total > 0 && total <= region.len() => {
                self.pending.push_back((total, batches));
                Bytes::from_static(&region[..total])
            }
            _ => {
                let mut buf = BytesMut::with_capacity(total);
                for b in &batches {
                    buf.extend_from_slice(b);
                }
                buf.freeze()
            }
        }
    }
}

/// The response buffer as the codec sees it, splicing batches in for placeholders.
pub struct SplicingBuf<'a> {
    out: &'a mut BytesMut,
    splices: Splices,
    mismatch: bool,
}

impl<'a> SplicingBuf<'a> {
    pub fn new(out: &'a mut BytesMut, splices: Splices) -> Self {
        SplicingBuf { out, splices, mismatch: false }
    }

    /// Err if a placeholder was left unmatched or matched the wrong length.
    pub fn finish(self) -> Result<(), String> {
        if self.mismatch || !self.splices.pending.is_empty() {
            return Err("fetch records placeholders did not match their batches".into());
        }
        Ok(())
    }
}

// SAFETY: every method delegates to `BytesMut`, whose implementation upholds the contract;
// `put_slice` only adds bytes through `BytesMut::extend_from_slice`.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.out.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee that `cnt` bytes were initialised.
        unsafe { self.out.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.out.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !is_placeholder(src) {
            self.out.extend_from_slice(src);
            return;
        }
        match self.splices.pending.pop_front() {
            Some((total, batches)) if total == src.len() => {
                self.out.reserve(total);
                for b in &batches {
                    self.out.extend_from_slice(b);
                }
            }
            _ => {
                // Keep the frame the declared length; the caller fails the request anyway.
                self.mismatch = true;
                self.out.extend_from_slice(src);
            }
        }
    }
}

impl ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.out.offset()
    }

    fn seek(&mut self, offset: usize) {
        self.out.seek(offset)
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        self.out.range(r)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn batches(seed: u8, sizes: &[usize]) -> Vec<Bytes> {
        sizes.iter().enumerate().map(|(i, n)| Bytes::from(vec![seed.wrapping_add(i as u8); *n])).collect()
    }

    fn response(records: Vec<Option<Bytes>>) -> FetchResponse {
        let partitions = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default().with_partition_index(i as i32).with_high_watermark(7).with_records(r)
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(partitions),
        ])
    }

    #[test]
    fn spliced_encoding_equals_joined_encoding() {
        let lists = [batches(1, &[10, 20, 30]), batches(9, &[5]), Vec::new(), batches(40, &[1, 1000, 7, 64 << 10])];
        for version in 4..=17 {
            let joined: Vec<Option<Bytes>> = lists.iter().map(|l| Some(Bytes::from(l.concat()))).collect();
            let mut expected = BytesMut::new();
            response(joined).encode(&mut expected, version).unwrap();

            let mut splices = Splices::new(true);
            let recs: Vec<Option<Bytes>> =
                lists.iter().map(|l| Some(splices.records(l.clone(), l.iter().map(|b| b.len()).sum()))).collect();
            assert!(!splices.is_empty());
            let mut out = BytesMut::new();
            let mut buf = SplicingBuf::new(&mut out, splices);
            response(recs).encode(&mut buf, version).unwrap();
            buf.finish().unwrap();
            assert_eq!(out, expected, "version {version}");
        }
    }

    #[test]
    fn a_mismatched_placeholder_fails_the_encode() {
        let mut splices = Splices::new(true);
        let r = splices.records(batches(1, &[3, 4]), 7);
        let mut out = BytesMut::new();
        // Encoded twice: the second placeholder has nothing left to match.
        let mut buf = SplicingBuf::new(&mut out, splices);
        response(vec![Some(r.clone()), Some(r)]).encode(&mut buf, 12).unwrap();
        assert!(buf.finish().is_err());
        // Unconsumed splices fail too.
        let mut splices = Splices::new(true);
        let _ = splices.records(batches(1, &[3, 4]), 7);
        let mut out = BytesMut::new();
        let buf = SplicingBuf::new(&mut out, splices);
        assert!(buf.finish().is_err());
    }
}
