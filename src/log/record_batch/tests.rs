//! Tests of Kafka RecordBatch parsing and validation.
use super::*;
use bytes::BytesMut;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression as KC, Record as KRecord, RecordBatchEncoder};
use kafka_protocol::records::{RecordEncodeOptions, TimestampType as KTs};

const CODECS: [(KC, Compression); 5] = [
    (KC::None, Compression::None),
    (KC::Gzip, Compression::Gzip),
    (KC::Snappy, Compression::Snappy),
    (KC::Lz4, Compression::Lz4),
    (KC::Zstd, Compression::Zstd),
];

/// An idempotent producer's record; keys, values and headers vary (and are sometimes null).
fn krecord(offset: i64, value_len: usize) -> KRecord {
    let mut headers = IndexMap::new();
    if offset % 2 == 0 {
        headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from(format!("{offset}"))));
        headers.insert(StrBytes::from_static_str("null"), None);
    }
    KRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 7,
        producer_epoch: 0,
        timestamp_type: KTs::Creation,
        offset,
        sequence: offset as i32,
        timestamp: 1_000 + offset,
        key: (offset % 3 != 0).then(|| Bytes::from(format!("k{offset}"))),
        value: (offset != 1).then(|| Bytes::from(vec![b'a' + (offset % 26) as u8; value_len])),
        headers,
    }
}

fn encode_records(recs: &[KRecord], compression: KC) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let opts = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buf, recs, &opts).unwrap();
    buf.to_vec()
}

fn encode(n: i64, compression: KC) -> Vec<u8> {
    encode_records(&(0..n).map(|i| krecord(i, i as usize * 3)).collect::<Vec<_>>(), compression)
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
    b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

fn crc_ok(b: &[u8]) -> bool {
    parse_header(b).unwrap().crc == crc32c::crc32c(&b[ATTRIBUTES..])
}

/// Rewrites bytes and re-signs the batch, as a buggy or hostile client would.
fn patched(good: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    fix_crc(&mut b);
    b
}

/// The Kafka error code `validate` answers with.
fn code(b: &[u8], limits: &ValidationLimits) -> Result<(), i16> {
    validate(b, limits).map(|_| ()).map_err(|e| e.kafka_code())
}

fn assert_same(got: &[Record], want: &[KRecord]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.offset, g.timestamp, &g.key, &g.value), (w.offset, w.timestamp, &w.key, &w.value));
        let headers =
            w.headers.iter().map(|(k, v)| Header { key: Bytes::copy_from_slice(k.as_bytes()), value: v.clone() });
        assert_eq!(g.headers, headers.collect::<Vec<_>>());
    }
}

#[test]
fn every_codec_validates_and_round_trips() {
    for (kc, c) in CODECS {
        // 40 KiB of values: more than one 32 KiB xerial snappy block.
        let want: Vec<_> = (0..20).map(|i| krecord(i, 2048)).collect();
        let b = encode_records(&want, kc);
        let v = validate(&b, &ValidationLimits::default()).unwrap();
        assert_eq!(v.header.compression(), Ok(c));
        assert_eq!((v.header.records_count, v.header.last_offset_delta), (20, 19));
        assert_eq!((v.header.producer_id, v.header.base_sequence, v.max_timestamp), (7, 0, 1_019));
        assert_same(&records(&Bytes::from(b), 1 << 20).unwrap(), &want);
    }
}

#[test]
fn raw_snappy_as_librdkafka_writes_it() {
    let want: Vec<_> = (0..5).map(|i| krecord(i, 100)).collect();
    let mut buf = BytesMut::new();
    let raw = |plain: &mut BytesMut, out: &mut BytesMut, _: KC| {
        out.extend_from_slice(&snap::raw::Encoder::new().compress_vec(plain)?);
        Ok(())
    };
    let opts = RecordEncodeOptions { version: 2, compression: KC::Snappy };
    RecordBatchEncoder::encode_with_custom_compression(&mut buf, &want, &opts, Some(raw)).unwrap();
    assert!(!buf[HEADER_SIZE..].starts_with(XERIAL_MAGIC));
    validate(&buf, &ValidationLimits::default()).unwrap();
    assert_same(&records(&buf.freeze(), 1 << 20).unwrap(), &want);
}

#[test]
fn framing_size_and_format_errors() {
    let good = encode(4, KC::None);
    let limits = ValidationLimits::default();
    let mut b = good.clone();
    *b.last_mut().unwrap() ^= 1;
    assert_eq!(code(&b, &limits), Err(2), "bad CRC");
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(code(&longer, &limits), Err(2), "batchLength short of the bytes");
    assert_eq!(code(&good[..good.len() - 1], &limits), Err(2), "batchLength past the bytes");
    assert_eq!(code(&patched(&good, 8, &48i32.to_be_bytes()), &limits), Err(2));
    assert_eq!(parse_header(&good[..60]).map_err(|e| e.kafka_code()), Err(2));

    let small = ValidationLimits { max_message_bytes: good.len() - 1, ..limits.clone() };
    let e = BatchError::MessageTooLarge { size: good.len(), max: good.len() - 1 };
    assert_eq!(validate(&good, &small), Err(e));

    assert_eq!(validate(&patched(&good, MAGIC, &[1]), &limits), Err(BatchError::UnsupportedMessageFormat(1)));
    assert_eq!(code(&patched(&good, MAGIC, &[3]), &limits), Err(2));
}

#[test]
fn semantic_errors_for_every_codec() {
    let limits = ValidationLimits::default();
    for (kc, _) in CODECS {
        let good = encode(4, kc);
        let attrs = i16::from_be_bytes([good[ATTRIBUTES], good[ATTRIBUTES + 1]]);
        let with_attrs = |a: i16| patched(&good, ATTRIBUTES, &a.to_be_bytes());
        // recordsCount lying both ways, with a lastOffsetDelta to match.
        for n in [3i32, 5] {
            let b = patched(&patched(&good, 57, &n.to_be_bytes()), 23, &(n - 1).to_be_bytes());
            assert_eq!(code(&b, &limits), Err(87), "{kc:?} count {n}");
            assert!(records(&Bytes::from(b), 1 << 20).is_err());
        }
        assert_eq!(code(&patched(&good, 23, &2i32.to_be_bytes()), &limits), Err(87));
        assert_eq!(code(&patched(&good, 57, &0i32.to_be_bytes()), &limits), Err(87));
        assert_eq!(code(&with_attrs(attrs | CONTROL_BIT), &limits), Err(87));
        assert_eq!(code(&patched(&good, 0, &5i64.to_be_bytes()), &limits), Err(87), "baseOffset");
        assert_eq!(code(&patched(&good, 53, &(-1i32).to_be_bytes()), &limits), Err(87), "seq");
        for c in 5..8 {
            let e = BatchError::UnsupportedCompressionType(c);
            assert_eq!(validate(&with_attrs((attrs & !7) | c), &limits), Err(e));
        }
        let lat = ValidationLimits { timestamp_type: TimestampType::LogAppendTime, ..limits.clone() };
        assert_eq!(code(&with_attrs(attrs | TIMESTAMP_TYPE_BIT), &lat), Err(32));
        assert_eq!(code(&good, &lat), Ok(()));

        let keyed = ValidationLimits { require_keys: true, ..limits.clone() };
        assert_eq!(code(&good, &keyed), Err(87));
        let old = ValidationLimits { now_ms: 2_000, timestamp_before_max_ms: 998, ..limits.clone() };
        assert_eq!(code(&good, &old), Err(32));
        let future = ValidationLimits { now_ms: 500, timestamp_after_max_ms: 502, ..limits.clone() };
        assert_eq!(code(&good, &future), Err(32));
        let now = 1_001;
        let fits = ValidationLimits { now_ms: now, timestamp_before_max_ms: 1, timestamp_after_max_ms: 2, ..limits };
        assert_eq!(code(&good, &fits), Ok(()));
    }
}

#[test]
fn offset_deltas_must_count_up() {
    let mut recs: Vec<_> = (0..3).map(|i| krecord(i, 1)).collect();
    recs.swap(1, 2);
    let b = encode_records(&recs, KC::None);
    assert_eq!(parse_header(&b).unwrap().records_count, 3);
    assert_eq!(code(&b, &ValidationLimits::default()), Err(87));
}

#[test]
fn decompression_is_bounded() {
    for (kc, _) in &CODECS[1..] {
        let b = encode_records(&[krecord(0, 2 << 20)], *kc);
        let limits = ValidationLimits { max_uncompressed_bytes: 1 << 20, ..ValidationLimits::default() };
        let e = validate(&b, &limits).unwrap_err();
        assert!(matches!(e, BatchError::InvalidRecord(ref m) if m.contains("decompress")), "{kc:?}: {e}");
        assert!(records(&Bytes::from(b.clone()), 1 << 20).is_err());
        assert_eq!(records(&Bytes::from(b), 4 << 20).unwrap().len(), 1);
    }
}

#[test]
fn header_edits() {
    let mut b = encode(3, KC::Lz4);
    set_base_offset(&mut b, 100).unwrap();
    set_partition_leader_epoch(&mut b, 9).unwrap();
    assert!(crc_ok(&b), "baseOffset and epoch are outside the CRC");
    let h = parse_header(&b).unwrap();
    assert_eq!((h.base_offset, h.last_offset(), h.partition_leader_epoch), (100, 102, 9));

    set_log_append_time(&mut b, 5_000).unwrap();
    assert!(crc_ok(&b));
    let h = parse_header(&b).unwrap();
    assert_eq!((h.timestamp_type(), h.max_timestamp), (TimestampType::LogAppendTime, 5_000));
    let recs = records(&Bytes::from(b.clone()), 1 << 20).unwrap();
    let got: Vec<_> = recs.iter().map(|r| (r.offset, r.timestamp)).collect();
    assert_eq!(got, [(100, 5_000), (101, 5_000), (102, 5_000)]);

    set_max_timestamp(&mut b, TimestampType::CreateTime, 1_002).unwrap();
    assert!(crc_ok(&b));
    assert_eq!(records(&Bytes::from(b.clone()), 1 << 20).unwrap()[2].timestamp, 1_002);

    // Edited in its header alone (the records elsewhere), the CRC still covers the whole.
    for kind in [TimestampType::LogAppendTime, TimestampType::CreateTime] {
        let mut header = b[..HEADER_SIZE].to_vec();
        set_max_timestamp(&mut header, kind, 7_777).unwrap();
        let whole = [&header[..], &b[HEADER_SIZE..]].concat();
        assert!(crc_ok(&whole), "{kind:?}");
        assert_eq!(parse_header(&whole).unwrap().timestamp_type(), kind);
    }
    assert!(set_base_offset(&mut [0; 7], 1).is_err());
    assert!(set_log_append_time(&mut [0; 30], 1).is_err());
}

#[test]
fn splitting() {
    let (a, b) = (encode(2, KC::None), encode(3, KC::Gzip));
    let both = Bytes::from([a.clone(), b.clone()].concat());
    assert_eq!(split_batches(both.clone()).unwrap(), [Bytes::from(a.clone()), Bytes::from(b)]);
    assert!(split_batches(Bytes::new()).unwrap().is_empty());
    // A partial batch at the end is left out, as Kafka's record-set walk leaves it out.
    assert_eq!(split_batches(both.slice(..both.len() - 1)).unwrap(), [Bytes::from(a.clone())]);
    let garbage = [&a[..], &[1, 2, 3, 4, 5]].concat();
    assert_eq!(split_batches(Bytes::from(garbage)).unwrap(), [Bytes::from(a.clone())]);
    assert!(split_batches(Bytes::from_static(&[9; 7])).unwrap().is_empty());
    let negative = patched(&a, 8, &(-1i32).to_be_bytes());
    assert_eq!(split_batches(Bytes::from(negative)).map_err(|e| e.kafka_code()), Err(2));
}

#[test]
fn error_codes() {
    let s = String::new;
    let codes = [
        (BatchError::CorruptMessage(s()), 2),
        (BatchError::InvalidRecord(s()), 87),
        (BatchError::MessageTooLarge { size: 1, max: 0 }, 10),
        (BatchError::InvalidTimestamp(s()), 32),
        (BatchError::UnsupportedMessageFormat(0), 43),
        (BatchError::UnsupportedCompressionType(5), 76),
    ];
    for (e, code) in codes {
        assert_eq!(e.kafka_code(), code);
    }
}

/// Truncations and bit flips, also re-signed so that corruption reaches the decompressors
/// and the record parser: errors, never panics.
#[test]
fn mangled_batches_never_panic() {
    let limits = ValidationLimits { max_uncompressed_bytes: 1 << 20, ..ValidationLimits::default() };
    for (kc, _) in CODECS {
        let good = encode(6, kc);
        for n in 0..good.len() {
            let _ = validate(&good[..n], &limits);
            let _ = records(&Bytes::copy_from_slice(&good[..n]), 1 << 20);
            let _ = split_batches(Bytes::copy_from_slice(&good[..n]));
        }
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let _ = validate(&b, &limits);
            if bit / 8 >= ATTRIBUTES {
                fix_crc(&mut b);
                let _ = validate(&b, &limits);
            }
            let _ = records(&Bytes::from(b), 1 << 20);
        }
    }
}
