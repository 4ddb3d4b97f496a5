//! Kafka RecordBatch (magic 2): header parsing, produce-time validation, in-place header edits,
//! and record decoding. kopd stores client batches as they arrived (only offsets, epoch and
//! append time are patched), so everything a reader will later trust is checked here first.
//!
//! Layout (big-endian): baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C of attributes..end), attributes i16, lastOffsetDelta i32, baseTimestamp i64,
//! maxTimestamp i64, producerId i64, producerEpoch i16, baseSequence i32, recordsCount i32,
//! records. Each record: length varint, attributes i8, timestampDelta varlong, offsetDelta
//! varint, key, value (varint length, negative = null), header count varint, headers.

use std::io::Read;

use bytes::Bytes;
use thiserror::Error;

/// baseOffset + batchLength: the bytes `batchLength` does not count.
pub const LOG_OVERHEAD: usize = 12;
/// Header size of a magic-2 batch, i.e. where its records start.
pub const HEADER_SIZE: usize = 61;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const MAX_TIMESTAMP: usize = 35;

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// A record's timestamp when the producer set none.
pub const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Bytes damaged in transit (bad CRC or framing): retriable for the client.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// Intact bytes that break the format or the topic's rules: not retriable.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("record batch magic {0} is not supported: only magic 2 is")]
    UnsupportedMessageFormat(i8),
    #[error("unsupported compression codec {0}")]
    UnsupportedCompressionType(i16),
}

impl BatchError {
    /// The Kafka protocol error code for a Produce response.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::CorruptMessage(_) => 2,
            BatchError::MessageTooLarge { .. } => 10,
            BatchError::InvalidTimestamp(_) => 32,
            BatchError::UnsupportedMessageFormat(_) => 43,
            BatchError::UnsupportedCompressionType(_) => 76,
            BatchError::InvalidRecord(_) => 87,
        }
    }
}

fn corrupt(msg: impl Into<String>) -> BatchError {
    BatchError::CorruptMessage(msg.into())
}
fn invalid(msg: impl Into<String>) -> BatchError {
    BatchError::InvalidRecord(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(match self.attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            c => return Err(BatchError::UnsupportedCompressionType(c)),
        })
    }
    pub fn timestamp_type(&self) -> TimestampType {
        match self.attributes & TIMESTAMP_TYPE_BIT {
            0 => TimestampType::CreateTime,
            _ => TimestampType::LogAppendTime,
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta.into())
    }
    /// Bytes the whole batch occupies, per its own length field.
    pub fn size_in_bytes(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }
}

fn get<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], BatchError> {
    let s = b.get(at..at + N).and_then(|s| s.try_into().ok());
    s.ok_or_else(|| corrupt(format!("batch of {} bytes is too short", b.len())))
}

fn put<const N: usize>(b: &mut [u8], at: usize, v: [u8; N]) -> Result<(), BatchError> {
    let len = b.len();
    let s = b.get_mut(at..at + N);
    s.ok_or_else(|| corrupt(format!("batch of {len} bytes is too short")))?.copy_from_slice(&v);
    Ok(())
}

/// A batch's CRC field and where the bytes it covers start (they run to the batch's end).
/// Only as trustworthy as the batch: [`validate`] has checked it, and the editors here keep
/// it right.
pub fn crc_field(b: &[u8]) -> Option<(usize, u32)> {
    get(b, CRC).ok().map(|c| (ATTRIBUTES, u32::from_be_bytes(c)))
}

/// Parses the fixed header. Checks only what the header alone tells: the magic, and a
/// `batchLength` large enough to hold the header.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchError> {
    // Every message format keeps its magic at byte 16, so it can be read before the layout is known.
    let magic = i8::from_be_bytes(get(b, MAGIC)?);
    if magic != 2 {
        return Err(match magic {
            ..2 => BatchError::UnsupportedMessageFormat(magic),
            _ => corrupt(format!("unknown magic {magic}")),
        });
    }
    let i64_at = |at| get(b, at).map(i64::from_be_bytes);
    let i32_at = |at| get(b, at).map(i32::from_be_bytes);
    let h = BatchHeader {
        base_offset: i64_at(0)?,
        batch_length: i32_at(8)?,
        partition_leader_epoch: i32_at(12)?,
        magic,
        crc: get(b, CRC).map(u32::from_be_bytes)?,
        attributes: get(b, ATTRIBUTES).map(i16::from_be_bytes)?,
        last_offset_delta: i32_at(23)?,
        base_timestamp: i64_at(27)?,
        max_timestamp: i64_at(MAX_TIMESTAMP)?,
        producer_id: i64_at(43)?,
        producer_epoch: get(b, 51).map(i16::from_be_bytes)?,
        base_sequence: i32_at(53)?,
        records_count: i32_at(57)?,
    };
    if h.size_in_bytes() < HEADER_SIZE {
        return Err(corrupt(format!("batchLength {} is below a header", h.batch_length)));
    }
    Ok(h)
}

/// Whether a v2 batch has the transactional bit, read from its magic and attributes alone
/// (false for other formats and for bytes too short to tell; validation reports those).
pub fn is_transactional(b: &[u8]) -> bool {
    b.get(MAGIC) == Some(&2) && get(b, ATTRIBUTES).is_ok_and(|a| i16::from_be_bytes(a) & TRANSACTIONAL_BIT != 0)
}

/// `parse_header`, plus `batchLength` must cover exactly the bytes given.
fn parse_whole(b: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_header(b)?;
    if h.size_in_bytes() != b.len() {
        let len = h.batch_length;
        return Err(corrupt(format!("batchLength {len} does not match {} bytes", b.len())));
    }
    Ok(h)
}

/// Smallest size a batch's length field may claim (Kafka's oldest record overhead).
const MIN_BATCH_LENGTH: i32 = 14;

/// Splits a Produce request's `records` into its batches (zero-copy), the way Kafka walks a
/// record set: fewer than 12 bytes left, or a batch longer than what is left, ends the walk
/// (those trailing bytes are ignored, as Kafka ignores them); a length below the smallest
/// record overhead is corruption.
pub fn split_batches(mut records: Bytes) -> Result<Vec<Bytes>, BatchError> {
    let mut out = Vec::with_capacity(1);
    while records.len() >= LOG_OVERHEAD {
        let len = get(&records, 8).map(i32::from_be_bytes)?;
        if len < MIN_BATCH_LENGTH {
            return Err(corrupt(format!(
                "record size {len} is less than the minimum record overhead ({MIN_BATCH_LENGTH})"
            )));
        }
        let size = len as usize + LOG_OVERHEAD;
        if size > records.len() {
            break;
        }
        out.push(records.split_to(size));
    }
    Ok(out)
}

/// Topic settings and safety bounds that `validate` enforces.
#[derive(Debug, Clone)]
pub struct ValidationLimits {
    /// `max.message.bytes`: largest batch accepted, as sent (compressed).
    pub max_message_bytes: usize,
    /// Largest records section after decompression: what a zip bomb may make us allocate.
    pub max_uncompressed_bytes: usize,
    /// `cleanup.policy` includes `compact`: every record must have a key.
    pub require_keys: bool,
    /// `message.timestamp.type` of the topic.
    pub timestamp_type: TimestampType,
    /// Clock and `message.timestamp.{before,after}.max.ms` for CreateTime range checks;
    /// `i64::MAX` disables a side.
    pub now_ms: i64,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_message_bytes: 1_048_588,
            max_uncompressed_bytes: 64 << 20,
            require_keys: false,
            timestamp_type: TimestampType::CreateTime,
            now_ms: 0,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }
}

/// What `validate` learned beyond the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    pub header: BatchHeader,
    /// Largest record timestamp (`NO_TIMESTAMP` if none). Kafka rewrites a CreateTime batch's
    /// maxTimestamp to this, whatever the client wrote: see `set_max_timestamp`.
    pub max_timestamp: i64,
}

/// Validates one batch from a producer, as a Kafka broker does before appending it.
pub fn validate(batch: &[u8], limits: &ValidationLimits) -> Result<Validated, BatchError> {
    let h = parse_whole(batch)?;
    let (size, max) = (batch.len(), limits.max_message_bytes);
    if size > max {
        return Err(BatchError::MessageTooLarge { size, max });
    }
    let computed = crc32c::crc32c(batch.get(ATTRIBUTES..).unwrap_or_default());
    if computed != h.crc {
        return Err(corrupt(format!("CRC {:#010x}, computed {computed:#010x}", h.crc)));
    }
    // From here the bytes are what the client meant to send: errors are not retriable.
    if h.base_offset != 0 {
        return Err(invalid(format!("produced baseOffset must be 0, not {}", h.base_offset)));
    }
    if h.is_control() {
        return Err(invalid("clients may not write control batches"));
    }
    let (count, last) = (h.records_count, h.last_offset_delta);
    if count < 1 || last != count - 1 {
        return Err(invalid(format!("recordsCount {count} with lastOffsetDelta {last}")));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(invalid(format!("sequence {} with a producer id", h.base_sequence)));
    }
    let body = batch.get(HEADER_SIZE..).unwrap_or_default();
    let decompressed = decompress(h.compression()?, body, limits.max_uncompressed_bytes)?;
    let data = decompressed.as_deref().unwrap_or(body);

    let mut max_timestamp = NO_TIMESTAMP;
    walk(data, count, |i, r| {
        if r.offset_delta != i {
            return Err(invalid(format!("record {i} has offsetDelta {}", r.offset_delta)));
        }
        if limits.require_keys && r.key.is_none() {
            return Err(invalid("compacted topic cannot accept a record without key"));
        }
        let ts = record_timestamp(&h, r.timestamp_delta);
        // Kafka's rules: range-check CreateTime timestamps; LogAppendTime is the broker's to set.
        if limits.timestamp_type == TimestampType::CreateTime && ts != NO_TIMESTAMP {
            let behind = limits.now_ms.saturating_sub(ts);
            if behind > limits.timestamp_before_max_ms || behind.saturating_neg() > limits.timestamp_after_max_ms {
                return Err(BatchError::InvalidTimestamp(format!("record {i} has {ts}")));
            }
        } else if h.timestamp_type() == TimestampType::LogAppendTime {
            return Err(BatchError::InvalidTimestamp("producer set LogAppendTime".into()));
        }
        max_timestamp = max_timestamp.max(ts);
        Ok(())
    })?;
    Ok(Validated { header: h, max_timestamp })
}

/// Kafka semantics: in a LogAppendTime batch every record carries the batch's maxTimestamp.
fn record_timestamp(h: &BatchHeader, delta: i64) -> i64 {
    match h.timestamp_type() {
        TimestampType::LogAppendTime => h.max_timestamp,
        TimestampType::CreateTime => h.base_timestamp.wrapping_add(delta),
    }
}

/// Sets baseOffset (outside the CRC, so no recomputation).
pub fn set_base_offset(batch: &mut [u8], offset: i64) -> Result<(), BatchError> {
    put(batch, 0, offset.to_be_bytes())
}

/// Sets partitionLeaderEpoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    put(batch, 12, epoch.to_be_bytes())
}

/// Sets the timestamp type and maxTimestamp, and updates the CRC. `batch` is the whole batch
/// or only its first [`HEADER_SIZE`] bytes (the records may be elsewhere): the new CRC is the
/// old one corrected by what the edit changed, so the records are not read, and the batch's
/// CRC must be right beforehand (it has been validated).
pub fn set_max_timestamp(batch: &mut [u8], kind: TimestampType, ts: i64) -> Result<(), BatchError> {
    let h = parse_header(batch)?;
    let covered = |b: &[u8]| crc32c::crc32c(b.get(ATTRIBUTES..HEADER_SIZE).unwrap_or_default());
    let before = covered(batch);
    let attributes = match kind {
        TimestampType::LogAppendTime => h.attributes | TIMESTAMP_TYPE_BIT,
        TimestampType::CreateTime => h.attributes & !TIMESTAMP_TYPE_BIT,
    };
    put(batch, ATTRIBUTES, attributes.to_be_bytes())?;
    put(batch, MAX_TIMESTAMP, ts.to_be_bytes())?;
    // CRC-32C is affine: changing bytes followed by n others changes the checksum by the
    // change's own checksum difference shifted over those n bytes.
    let records = h.size_in_bytes().saturating_sub(HEADER_SIZE);
    let crc = h.crc ^ crate::storage::crc::crc32c_combine(before ^ covered(batch), 0, records);
    put(batch, CRC, crc.to_be_bytes())
}

/// Stamps a batch for a LogAppendTime topic.
pub fn set_log_append_time(batch: &mut [u8], ts: i64) -> Result<(), BatchError> {
    set_max_timestamp(batch, TimestampType::LogAppendTime, ts)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub attributes: i8,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Decodes every record of a batch, decompressing at most `max_uncompressed_bytes`. Keys,
/// values and headers share the batch's (or the decompressed) buffer. Does not check the CRC:
/// `validate` is the gate for untrusted batches.
pub fn records(batch: &Bytes, max_uncompressed_bytes: usize) -> Result<Vec<Record>, BatchError> {
    let h = parse_whole(batch)?;
    let body = batch.slice(HEADER_SIZE..);
    let data = match decompress(h.compression()?, &body, max_uncompressed_bytes)? {
        Some(d) => Bytes::from(d),
        None => body,
    };
    let mut out = Vec::new();
    walk(&data, h.records_count, |_, r| {
        let headers =
            r.headers.iter().map(|(k, v)| Header { key: data.slice_ref(k), value: v.map(|v| data.slice_ref(v)) });
        out.push(Record {
            offset: h.base_offset.wrapping_add(r.offset_delta.into()),
            timestamp: record_timestamp(&h, r.timestamp_delta),
            attributes: r.attributes,
            key: r.key.map(|k| data.slice_ref(k)),
            value: r.value.map(|v| data.slice_ref(v)),
            headers: headers.collect(),
        });
        Ok(())
    })?;
    Ok(out)
}

type RawHeader<'a> = (&'a [u8], Option<&'a [u8]>);

struct RawRecord<'a, 's> {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'s [RawHeader<'a>],
}

/// Parses exactly `count` records covering all of `data`, calling `f` with each and its index.
/// Too few bytes or bytes left over both mean recordsCount lies: InvalidRecord, as in Kafka.
fn walk<'a>(
    data: &'a [u8],
    count: i32,
    mut f: impl FnMut(i32, RawRecord<'a, '_>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut cur = Cur { b: data, pos: 0 };
    // Reused across records so validating header-less records allocates nothing.
    let mut headers = Vec::new();
    for i in 0..count {
        let len = cur.len()?;
        let mut r = Cur { b: cur.bytes(len)?, pos: 0 };
        let attributes = i8::from_be_bytes([r.u8()?]);
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let (key, value) = (r.nullable()?, r.nullable()?);
        headers.clear();
        for _ in 0..r.len()? {
            let key_len = r.len()?;
            headers.push((r.bytes(key_len)?, r.nullable()?));
        }
        if r.pos != r.b.len() {
            return Err(invalid(format!("record {i} has bytes past its fields")));
        }
        let headers = &headers;
        f(i, RawRecord { attributes, timestamp_delta, offset_delta, key, value, headers })?;
    }
    if cur.pos != data.len() {
        return Err(invalid(format!("bytes left after recordsCount {count} records")));
    }
    Ok(())
}

/// Bounds-checked reader of record fields; running out of bytes is InvalidRecord.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn u8(&mut self) -> Result<u8, BatchError> {
        let v = *self.b.get(self.pos).ok_or_else(|| invalid("record truncated"))?;
        self.pos += 1;
        Ok(v)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| invalid(format!("field of {n} bytes runs past the record")))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Unsigned LEB128 of at most `max` bytes, as Kafka's ByteUtils reads it.
    fn raw_varint(&mut self, max: u32) -> Result<u64, BatchError> {
        let mut v = 0u64;
        for i in 0..max {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("varint too long"))
    }
    /// Zigzag-decoded, like every signed varint in the record format.
    fn varint(&mut self) -> Result<i32, BatchError> {
        let u = self.raw_varint(5)? as u32;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let u = self.raw_varint(10)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    /// A varint length or count that must not be negative.
    fn len(&mut self) -> Result<usize, BatchError> {
        let n = self.varint()?;
        usize::try_from(n).map_err(|_| invalid(format!("negative length or count {n}")))
    }
    /// A varint-length-prefixed byte string; any negative length is null, as Java Kafka reads it.
    fn nullable(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match usize::try_from(self.varint()?) {
            Ok(n) => self.bytes(n).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// Xerial snappy-java stream header, which Java producers (and kafka-protocol) write; then
/// blocks of `[u32 length][raw snappy]`.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16; // magic + version i32 + min compatible version i32

/// `None` when uncompressed (the caller uses the input as is); otherwise the records section,
/// refusing to produce more than `limit` bytes.
fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Option<Vec<u8>>, BatchError> {
    Ok(Some(match codec {
        Compression::None => return Ok(None),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit)?,
        // Kafka's lz4 is the LZ4 frame format (with a correct header checksum since magic 1).
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit)?,
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(data).map_err(decompress_err)?;
            read_bounded(d, limit)?
        }
        Compression::Snappy => snappy(data, limit)?,
    }))
}

fn decompress_err(e: impl std::fmt::Display) -> BatchError {
    invalid(format!("cannot decompress records: {e}"))
}

fn too_big(limit: usize) -> BatchError {
    invalid(format!("records decompress to more than {limit} bytes"))
}

fn read_bounded(r: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out).map_err(decompress_err)?;
    if out.len() > limit {
        return Err(too_big(limit));
    }
    Ok(out)
}

/// Xerial-framed (Java clients) or raw (librdkafka) snappy; Java Kafka likewise falls back to
/// raw when the xerial header is absent.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut dec = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut append = |block: &[u8], out: &mut Vec<u8>| {
        // The block states its decompressed size: check it before allocating.
        let n = snap::raw::decompress_len(block).map_err(decompress_err)?;
        let start = out.len();
        if n > limit - start {
            return Err(too_big(limit));
        }
        out.resize(start + n, 0);
        dec.decompress(block, &mut out[start..]).map_err(decompress_err)?;
        Ok(())
    };
    if data.len() < XERIAL_HEADER || !data.starts_with(XERIAL_MAGIC) {
        append(data, &mut out)?;
        return Ok(out);
    }
    let mut cur = Cur { b: data, pos: XERIAL_HEADER };
    while cur.pos < data.len() {
        let len = u32::from_be_bytes(get(cur.bytes(4)?, 0)?) as usize;
        append(cur.bytes(len)?, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
