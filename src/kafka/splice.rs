//! Fetch responses without copying the records.
//!
//! A partition's records go into a Fetch response as one byte string, but a fetch usually
//! returns several stored batches, each its own `Bytes`. Joining them and letting the codec
//! copy the result into the response buffer would copy every fetched byte twice. Instead the
//! partition gets a placeholder of the right length: a slice of a static, never-read region.
//! The codec writes the placeholder with one `put_slice`, which [`SplicingBuf`] recognises by
//! its address; the batches themselves are then referenced from the [`ResponseBuf`] at that
//! point, and the connection sends the encoded bytes and the batches with vectored writes. A
//! fetched byte is not copied at all on its way from the store's buffer to the socket (small
//! batches, below [`SPLICE_MIN`], are copied: an iovec entry costs more than they do).
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

/// Batches shorter than this are copied into the response rather than referenced.
pub const SPLICE_MIN: usize = 512;

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

    /// The `records` value for `batches` (of `total` bytes): a placeholder when splicing
    /// pays, else the batch itself when there is one, or the joined bytes.
    pub fn records(&mut self, mut batches: Vec<Bytes>, total: usize) -> Bytes {
        if batches.len() <= 1 && (!self.enabled || total < SPLICE_MIN) {
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

/// Response frames on their way to a connection: encoded bytes, with stored batches
/// referenced at the points where they belong.
#[derive(Default)]
pub struct ResponseBuf {
    pub bytes: BytesMut,
    /// `(at, batch)`: `batch` is sent right after `bytes[..at]`; `at` never decreases.
    spliced: Vec<(usize, Bytes)>,
    spliced_len: usize,
}

impl ResponseBuf {
    /// Bytes to send, spliced batches included.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.spliced_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of spliced batches so far (a frame's size counts those spliced into it).
    pub fn spliced_len(&self) -> usize {
        self.spliced_len
    }

    fn splice(&mut self, batch: Bytes) {
        self.spliced_len += batch.len();
        self.spliced.push((self.bytes.len(), batch));
    }

    /// Everything to send, in order.
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut v = Vec::with_capacity(2 * self.spliced.len() + 1);
        let mut from = 0;
        for (at, batch) in &self.spliced {
            if *at > from {
                v.push(&self.bytes[from..*at]);
                from = *at;
            }
            v.push(&batch[..]);
        }
        if self.bytes.len() > from {
            v.push(&self.bytes[from..]);
        }
        v
    }

    /// Forgets what was sent; keeps the encoding buffer unless it grew past `keep_capacity`.
    pub fn clear(&mut self, keep_capacity: usize) {
        self.bytes.clear();
        if self.bytes.capacity() > keep_capacity {
            self.bytes = BytesMut::new();
        }
        self.spliced.clear();
        self.spliced.shrink_to(64);
        self.spliced_len = 0;
    }

    /// The whole contents as one buffer (tests).
    #[cfg(test)]
    pub fn joined(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// The response buffer as the codec sees it, splicing batches in for placeholders.
pub struct SplicingBuf<'a> {
    out: &'a mut ResponseBuf,
    splices: Splices,
    mismatch: bool,
}

impl<'a> SplicingBuf<'a> {
    pub fn new(out: &'a mut ResponseBuf, splices: Splices) -> Self {
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
// `put_slice` only adds bytes through `BytesMut::extend_from_slice` or references batches
// after them.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.out.bytes.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee that `cnt` bytes were initialised.
        unsafe { self.out.bytes.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.out.bytes.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !is_placeholder(src) {
            self.out.bytes.extend_from_slice(src);
            return;
        }
        match self.splices.pending.pop_front() {
            Some((total, batches)) if total == src.len() => {
                for b in batches {
                    if b.len() < SPLICE_MIN {
                        self.out.bytes.extend_from_slice(&b);
                    } else {
                        self.out.splice(b);
                    }
                }
            }
            _ => {
                // Keep the frame the declared length; the caller fails the request anyway.
                self.mismatch = true;
                self.out.bytes.extend_from_slice(src);
            }
        }
    }
}

// The codec seeks and patches only within what it encoded itself (lengths before a compact
// structure); a spliced batch is never part of such a range, so offsets into `bytes` do.
impl ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.out.bytes.offset()
    }

    fn seek(&mut self, offset: usize) {
        self.out.bytes.seek(offset)
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        self.out.bytes.range(r)
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
            let mut out = ResponseBuf::default();
            let mut buf = SplicingBuf::new(&mut out, splices);
            response(recs).encode(&mut buf, version).unwrap();
            buf.finish().unwrap();
            assert_eq!(out.joined(), expected, "version {version}");
            // The large batches were referenced, not copied.
            assert_eq!(out.spliced_len(), 1000 + (64 << 10), "version {version}");
        }
    }

    #[test]
    fn response_buf_sends_bytes_and_batches_in_order() {
        let mut out = ResponseBuf::default();
        out.bytes.extend_from_slice(b"ab");
        out.splice(Bytes::from_static(b"XY"));
        out.splice(Bytes::from_static(b"Z"));
        out.bytes.extend_from_slice(b"cd");
        out.splice(Bytes::from_static(b"W"));
        assert_eq!(out.len(), 8);
        assert_eq!(out.slices(), vec![&b"ab"[..], b"XY", b"Z", b"cd", b"W"]);
        out.clear(1 << 20);
        assert!(out.is_empty() && out.slices().is_empty() && out.spliced_len() == 0);
        out.splice(Bytes::from_static(b"V"));
        out.bytes.extend_from_slice(b"e");
        assert_eq!(out.slices(), vec![&b"V"[..], b"e"]);
    }

    #[test]
    fn a_mismatched_placeholder_fails_the_encode() {
        let mut splices = Splices::new(true);
        let r = splices.records(batches(1, &[3, 4]), 7);
        let mut out = ResponseBuf::default();
        // Encoded twice: the second placeholder has nothing left to match.
        let mut buf = SplicingBuf::new(&mut out, splices);
        response(vec![Some(r.clone()), Some(r)]).encode(&mut buf, 12).unwrap();
        assert!(buf.finish().is_err());
        // Unconsumed splices fail too.
        let mut splices = Splices::new(true);
        let _ = splices.records(batches(1, &[3, 4]), 7);
        let mut out = ResponseBuf::default();
        let buf = SplicingBuf::new(&mut out, splices);
        assert!(buf.finish().is_err());
    }
}
