//! The bytes of one ledger entry, in the layout Pulsar brokers write, so that Pulsar tooling can
//! read kopd's ledgers and kopd can read entries Pulsar producers wrote.
//!
//! ```text
//! [u16 0x0e02][u32 n][BrokerEntryMetadata, n bytes]
//! ([u16 0x0e01][u32 crc32c of everything after it])   only in entries Pulsar producers wrote
//! [u32 m][MessageMetadata, m bytes][payload]
//! ```
//!
//! kopd writes KoP's `kafka` entry format: no checksum section (the Kafka batch carries its own
//! CRC), a minimal MessageMetadata tagged `entry.format=kafka`, and the raw Kafka RecordBatch as
//! payload. The BrokerEntryMetadata `index` is the offset of the entry's *last* message.
//! Integers are big-endian; the two metadata messages are protobuf (proto2), encoded and decoded
//! here by hand so that encoding is one exact-size allocation and decoding copies nothing.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::StorageError;

const MAGIC_BROKER_ENTRY_METADATA: u16 = 0x0e02;
const MAGIC_CRC32C: u16 = 0x0e01;
/// MessageMetadata property naming the payload's format, as KoP writes it.
pub const ENTRY_FORMAT_KEY: &str = "entry.format";
pub const ENTRY_FORMAT_KAFKA: &str = "kafka";

/// `KeyValue{key=1: "entry.format", value=2: "kafka"}`, constant, so encoded once here.
const KAFKA_FORMAT_PROPERTY: &[u8] = b"\x0a\x0centry.format\x12\x05kafka";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry truncated: {what} needs {needed} bytes at offset {at}, entry has {len}")]
    Truncated { what: &'static str, at: usize, needed: usize, len: usize },
    #[error("entry has no broker entry metadata (found magic {0:#06x})")]
    NoBrokerEntryMetadata(u16),
    #[error("entry checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed protobuf in {message}: {reason}")]
    Protobuf { message: &'static str, reason: &'static str },
    #[error("{message} lacks required field {field}")]
    MissingField { message: &'static str, field: &'static str },
    #[error("invalid num_messages_in_batch {0}")]
    BadMessageCount(i32),
}

impl From<EntryError> for StorageError {
    fn from(e: EntryError) -> Self {
        StorageError::Corrupt(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFormat {
    /// Payload is one Kafka RecordBatch (magic 2).
    Kafka,
    /// Anything else: a Pulsar producer's payload (maybe batched, maybe compressed).
    Pulsar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEntry {
    pub broker_timestamp: u64,
    /// Offset of the entry's last message.
    pub index: i64,
    pub num_messages: i32,
    pub publish_time: u64,
    pub entry_format: EntryFormat,
    /// The MessageMetadata bytes (slice of the entry), for readers of fields not decoded here
    /// (compression, partition key...) when converting Pulsar-format entries.
    pub metadata: Bytes,
    /// Slice of the entry, not a copy.
    pub payload: Bytes,
}

impl DecodedEntry {
    /// Offset of the entry's first message.
    pub fn base_offset(&self) -> i64 {
        self.index.wrapping_sub(i64::from(self.num_messages) - 1)
    }
}

/// Encodes a Kafka batch as a KoP `kafka`-format entry. `index` is the offset of the batch's
/// last record; `broker_timestamp` (ms) is also used as the publish time, as KoP does.
pub fn encode_kafka_entry(batch: &[u8], index: i64, num_messages: i32, broker_timestamp: u64) -> Bytes {
    encode_kafka_entry_start(batch, index, num_messages, broker_timestamp).freeze()
}

/// The start of a `kafka`-format entry: its metadata followed by `batch_start`, the whole batch
/// or its first bytes (the rest following in a piece of its own: see `SplitBytes`).
pub fn encode_kafka_entry_start(batch_start: &[u8], index: i64, num_messages: i32, broker_timestamp: u64) -> BytesMut {
    let batch = batch_start;
    // proto uint64 carries Java's long bit for bit, so a negative index round-trips too.
    let index = index as u64;
    let bem_len = 1 + varint_len(broker_timestamp) + 1 + varint_len(index);
    // int32 fields are sign-extended to 64 bits on the wire.
    let num = i64::from(num_messages) as u64;
    let meta_len = 2 // producer_name = ""
        + 2 // sequence_id = 0
        + 1 + varint_len(broker_timestamp) // publish_time
        + 2 + KAFKA_FORMAT_PROPERTY.len() // properties
        + 1 + varint_len(num); // num_messages_in_batch
    let total = 2 + 4 + bem_len + 4 + meta_len + batch.len();

    let mut out = BytesMut::with_capacity(total);
    out.put_u16(MAGIC_BROKER_ENTRY_METADATA);
    out.put_u32(bem_len as u32);
    out.put_u8(1 << 3); // broker_timestamp = 1, varint
    put_varint(&mut out, broker_timestamp);
    out.put_u8(2 << 3); // index = 2, varint
    put_varint(&mut out, index);

    out.put_u32(meta_len as u32);
    out.put_slice(&[(1 << 3) | 2, 0]); // producer_name = 1, length-delimited, empty
    out.put_slice(&[2 << 3, 0]); // sequence_id = 2, varint 0
    out.put_u8(3 << 3); // publish_time = 3
    put_varint(&mut out, broker_timestamp);
    out.put_slice(&[(4 << 3) | 2, KAFKA_FORMAT_PROPERTY.len() as u8]); // properties = 4
    out.put_slice(KAFKA_FORMAT_PROPERTY);
    out.put_u8(11 << 3); // num_messages_in_batch = 11
    put_varint(&mut out, num);
    out.put_slice(batch);
    debug_assert_eq!(out.len(), total);
    out
}

/// Decodes an entry written by kopd, KoP or a Pulsar broker with broker entry metadata on.
/// Verifies the crc32c section when present.
pub fn decode_entry(entry: &Bytes) -> Result<DecodedEntry, EntryError> {
    let mut cur = Cursor { buf: entry, pos: 0 };
    let (broker_timestamp, index) = read_broker_entry_metadata(&mut cur)?;

    // A Pulsar producer's checksum covers everything after it: metadata size, metadata, payload.
    if cur.peek_u16() == Some(MAGIC_CRC32C) {
        cur.take(2, "checksum magic")?;
        let stored = cur.u32("checksum")?;
        let computed = crc32c::crc32c(cur.rest());
        if stored != computed {
            return Err(EntryError::Checksum { stored, computed });
        }
    }

    let meta_len = cur.u32("metadata size")? as usize;
    let meta_start = cur.pos;
    let meta = cur.take(meta_len, "message metadata")?;
    let m = parse_message_metadata(meta)?;
    Ok(DecodedEntry {
        broker_timestamp,
        index,
        num_messages: m.num_messages,
        publish_time: m.publish_time,
        entry_format: m.format,
        metadata: entry.slice(meta_start..meta_start + meta_len),
        payload: entry.slice(cur.pos..),
    })
}

/// The entry's `index` (offset of its last message), reading only the broker entry metadata:
/// what a binary search over a ledger needs.
pub fn peek_index(entry: &[u8]) -> Result<i64, EntryError> {
    let mut cur = Cursor { buf: entry, pos: 0 };
    read_broker_entry_metadata(&mut cur).map(|(_, index)| index)
}

fn read_broker_entry_metadata(cur: &mut Cursor<'_>) -> Result<(u64, i64), EntryError> {
    let magic = cur.u16("magic")?;
    if magic != MAGIC_BROKER_ENTRY_METADATA {
        return Err(EntryError::NoBrokerEntryMetadata(magic));
    }
    let len = cur.u32("broker entry metadata size")? as usize;
    let mut fields = Fields::new(cur.take(len, "broker entry metadata")?, "BrokerEntryMetadata");
    let (mut timestamp, mut index) = (0, None);
    while let Some((field, value)) = fields.next_field()? {
        match field {
            1 => timestamp = value.varint(fields.message)?,
            2 => index = Some(value.varint(fields.message)? as i64),
            _ => {}
        }
    }
    let index = index.ok_or(EntryError::MissingField { message: "BrokerEntryMetadata", field: "index" })?;
    Ok((timestamp, index))
}

struct MessageMetadata {
    publish_time: u64,
    num_messages: i32,
    format: EntryFormat,
}

fn parse_message_metadata(meta: &[u8]) -> Result<MessageMetadata, EntryError> {
    const MSG: &str = "MessageMetadata";
    let mut fields = Fields::new(meta, MSG);
    let (mut producer_name, mut sequence_id, mut publish_time) = (false, false, None);
    let mut num_messages = 1; // the proto default
    let mut format = EntryFormat::Pulsar;
    while let Some((field, value)) = fields.next_field()? {
        match field {
            1 => producer_name = value.bytes(MSG).map(|_| true)?,
            2 => sequence_id = value.varint(MSG).map(|_| true)?,
            3 => publish_time = Some(value.varint(MSG)?),
            4 if is_kafka_format_property(value.bytes(MSG)?)? => format = EntryFormat::Kafka,
            // int32: the low 32 bits of the sign-extended varint.
            11 => num_messages = value.varint(MSG)? as i32,
            _ => {}
        }
    }
    // Pulsar's own parser rejects metadata missing a required field; so do we.
    for (present, field) in [(producer_name, "producer_name"), (sequence_id, "sequence_id")] {
        if !present {
            return Err(EntryError::MissingField { message: MSG, field });
        }
    }
    let publish_time = publish_time.ok_or(EntryError::MissingField { message: MSG, field: "publish_time" })?;
    if num_messages < 1 {
        return Err(EntryError::BadMessageCount(num_messages));
    }
    Ok(MessageMetadata { publish_time, num_messages, format })
}

fn is_kafka_format_property(kv: &[u8]) -> Result<bool, EntryError> {
    const MSG: &str = "KeyValue";
    let mut fields = Fields::new(kv, MSG);
    let (mut key, mut value) = (None, None);
    while let Some((field, v)) = fields.next_field()? {
        match field {
            1 => key = Some(v.bytes(MSG)?),
            2 => value = Some(v.bytes(MSG)?),
            _ => {}
        }
    }
    Ok(key == Some(ENTRY_FORMAT_KEY.as_bytes()) && value == Some(ENTRY_FORMAT_KAFKA.as_bytes()))
}

/// Bounds-checked big-endian reader over an entry.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EntryError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(EntryError::Truncated { what, at: self.pos, needed: n, len: self.buf.len() })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EntryError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EntryError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn peek_u16(&self) -> Option<u16> {
        let b = self.buf.get(self.pos..self.pos.checked_add(2)?)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

fn varint_len(v: u64) -> usize {
    // 7 payload bits per byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// One protobuf field value; only the wire types proto2 messages here can hold.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Value<'a> {
    fn varint(&self, message: &'static str) -> Result<u64, EntryError> {
        match self {
            Value::Varint(v) => Ok(*v),
            _ => Err(EntryError::Protobuf { message, reason: "wrong wire type, expected varint" }),
        }
    }
    fn bytes(&self, message: &'static str) -> Result<&'a [u8], EntryError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(EntryError::Protobuf { message, reason: "wrong wire type, expected bytes" }),
        }
    }
}

/// Walks the fields of one encoded protobuf message without allocating.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Fields { buf, pos: 0, message }
    }

    fn err(&self, reason: &'static str) -> EntryError {
        EntryError::Protobuf { message: self.message, reason }
    }

    fn varint(&mut self) -> Result<u64, EntryError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err("field runs past the message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, EntryError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.err("length too large"))?;
                Value::Bytes(self.skip(len)?)
            }
            5 => self.skip(4).map(|_| Value::Fixed)?,
            _ => return Err(self.err("unsupported wire type")),
        };
        Ok(Some((key >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        encode_kafka_entry(b"kafka-batch-bytes", 41, 5, 1_700_000_000_123)
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let d = decode_entry(&e).unwrap();
        assert_eq!(d.broker_timestamp, 1_700_000_000_123);
        assert_eq!(d.publish_time, 1_700_000_000_123);
        assert_eq!(d.index, 41);
        assert_eq!(d.num_messages, 5);
        assert_eq!(d.base_offset(), 37);
        assert_eq!(d.entry_format, EntryFormat::Kafka);
        assert_eq!(&d.payload[..], b"kafka-batch-bytes");
        assert_eq!(peek_index(&e).unwrap(), 41);
        // The payload is a view of the entry, not a copy.
        assert_eq!(d.payload.as_ptr(), e[e.len() - d.payload.len()..].as_ptr());
    }

    #[test]
    fn encoding_is_exact_and_matches_the_layout() {
        let e = encode_kafka_entry(b"", 0, 1, 0);
        let expected: &[u8] = &[
            0x0e, 0x02, 0, 0, 0, 4, 0x08, 0, 0x10, 0, // BrokerEntryMetadata{0, 0}
            0, 0, 0, 31, 0x0a, 0, 0x10, 0, 0x18, 0, 0x22, 21, // size, name, seq, time, property
        ];
        assert_eq!(&e[..expected.len()], expected);
        assert_eq!(&e[expected.len()..expected.len() + 21], KAFKA_FORMAT_PROPERTY);
        assert_eq!(&e[expected.len() + 21..], &[0x58, 1]);
        // Extreme values still encode to the size computed up front.
        for (idx, n, ts) in [(i64::MAX, i32::MAX, u64::MAX), (-1, -1, 1 << 63), (0, 0, 127)] {
            let e = encode_kafka_entry(b"x", idx, n, ts);
            assert_eq!(peek_index(&e).unwrap(), idx);
        }
    }

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::MAX >> 1, u64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    /// An entry as a Pulsar producer + broker would write it: with the 0x0e01 checksum and a
    /// metadata that has no entry.format property.
    fn pulsar_entry(corrupt_crc: bool) -> Bytes {
        let meta: &[u8] = &[0x0a, 1, b'p', 0x10, 7, 0x18, 9, 0x40, 0, 0x58, 3];
        let payload = b"pulsar-payload";
        let mut rest = BytesMut::new();
        rest.put_u32(meta.len() as u32);
        rest.put_slice(meta);
        rest.put_slice(payload);
        let mut crc = crc32c::crc32c(&rest);
        if corrupt_crc {
            crc ^= 1;
        }
        let mut e = BytesMut::new();
        e.put_slice(&[0x0e, 0x02, 0, 0, 0, 4, 0x08, 5, 0x10, 99]);
        e.put_u16(0x0e01);
        e.put_u32(crc);
        e.put_slice(&rest);
        e.freeze()
    }

    #[test]
    fn decodes_entries_with_checksum() {
        let d = decode_entry(&pulsar_entry(false)).unwrap();
        assert_eq!((d.broker_timestamp, d.index, d.num_messages, d.publish_time), (5, 99, 3, 9));
        assert_eq!(d.entry_format, EntryFormat::Pulsar);
        assert_eq!(d.base_offset(), 97);
        assert_eq!(&d.payload[..], b"pulsar-payload");
        assert!(matches!(decode_entry(&pulsar_entry(true)), Err(EntryError::Checksum { .. })));
    }

    #[test]
    fn corrupt_inputs_are_errors() {
        let good = sample();
        assert!(matches!(decode_entry(&Bytes::new()), Err(EntryError::Truncated { .. })));
        assert!(matches!(peek_index(&[0x0e]), Err(EntryError::Truncated { .. })));
        let mut bad_magic = good.to_vec();
        bad_magic[1] = 0x01;
        assert_eq!(peek_index(&bad_magic), Err(EntryError::NoBrokerEntryMetadata(0x0e01)));

        // Lying sizes: broker entry metadata and message metadata claiming more than is there.
        let mut lying = good.to_vec();
        lying[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_entry(&Bytes::from(lying)), Err(EntryError::Truncated { .. })));
        let bem_end = 6 + u32::from_be_bytes(good[2..6].try_into().unwrap()) as usize;
        let mut lying = good.to_vec();
        lying[bem_end..bem_end + 4].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
        assert!(matches!(decode_entry(&Bytes::from(lying)), Err(EntryError::Truncated { .. })));

        // A metadata without publish_time, and one with a zero message count.
        let mut e = BytesMut::new();
        e.put_slice(&[0x0e, 0x02, 0, 0, 0, 2, 0x10, 1, 0, 0, 0, 4, 0x0a, 0, 0x10, 0]);
        let r = decode_entry(&e.freeze());
        assert_eq!(r, Err(EntryError::MissingField { message: "MessageMetadata", field: "publish_time" }));
        let zero = encode_kafka_entry(b"", 1, 0, 1);
        assert_eq!(decode_entry(&zero), Err(EntryError::BadMessageCount(0)));
        // No index in the broker entry metadata.
        let r = peek_index(&[0x0e, 0x02, 0, 0, 0, 2, 0x08, 1]);
        assert!(matches!(r, Err(EntryError::MissingField { field: "index", .. })));
        // A group wire type and an overlong varint.
        assert!(matches!(peek_index(&[0x0e, 0x02, 0, 0, 0, 1, 0x0b]), Err(EntryError::Protobuf { .. })));
        let mut long = vec![0x0e, 0x02, 0, 0, 0, 12, 0x10];
        long.extend([0xff; 11]);
        assert!(matches!(peek_index(&long), Err(EntryError::Protobuf { .. })));
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        for good in [sample(), pulsar_entry(false)] {
            for n in 0..good.len() {
                let _ = decode_entry(&good.slice(..n));
                let _ = peek_index(&good[..n]);
            }
            for bit in 0..good.len() * 8 {
                let mut b = good.to_vec();
                b[bit / 8] ^= 1 << (bit % 8);
                let b = Bytes::from(b);
                let _ = decode_entry(&b);
                let _ = peek_index(&b);
            }
        }
    }
}
