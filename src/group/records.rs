//! `__consumer_offsets` records in Kafka's own schemas, so Kafka's tooling (e.g. the console
//! consumer's offsets formatter) decodes what kopd writes, and kopd replays what Kafka wrote.
//!
//! Keys: `[version i16]` then OffsetCommitKey (versions 0, 1: group, topic, partition) or
//! GroupMetadataKey (version 2: group). Values: OffsetCommitValue v0..4 and GroupMetadataValue
//! v0..4 (v4 flexible). kopd writes OffsetCommitValue v3 (v1 when an explicit expire time was
//! asked for, as Kafka does) and GroupMetadataValue v3. A null value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("undecodable __consumer_offsets record: {0}")]
pub struct RecordError(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Explicit expiry (OffsetCommit v2-v4 retention time); -1 when none.
    pub expire_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset { group: String, topic: String, partition: i32, value: Option<OffsetValue> },
    Group { group: String, value: Option<GroupValue> },
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

impl GroupRecord {
    pub fn key(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            GroupRecord::Offset { group, topic, partition, .. } => {
                b.put_i16(1);
                put_str(&mut b, group);
                put_str(&mut b, topic);
                b.put_i32(*partition);
            }
            GroupRecord::Group { group, .. } => {
                b.put_i16(2);
                put_str(&mut b, group);
            }
        }
        b.freeze()
    }

    pub fn value(&self) -> Option<Bytes> {
        let mut b = BytesMut::new();
        match self {
            GroupRecord::Offset { value: Some(v), .. } => {
                if v.expire_timestamp >= 0 {
                    b.put_i16(1);
                    b.put_i64(v.offset);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                    b.put_i64(v.expire_timestamp);
                } else {
                    b.put_i16(3);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                }
            }
            GroupRecord::Group { value: Some(v), .. } => {
                b.put_i16(3);
                put_str(&mut b, &v.protocol_type);
                b.put_i32(v.generation);
                put_nullable(&mut b, v.protocol.as_deref());
                put_nullable(&mut b, v.leader.as_deref());
                b.put_i64(v.state_timestamp);
                b.put_i32(v.members.len() as i32);
                for m in &v.members {
                    put_str(&mut b, &m.member_id);
                    put_nullable(&mut b, m.instance_id.as_deref());
                    put_str(&mut b, &m.client_id);
                    put_str(&mut b, &m.client_host);
                    b.put_i32(m.rebalance_timeout);
                    b.put_i32(m.session_timeout);
                    put_bytes(&mut b, &m.subscription);
                    put_bytes(&mut b, &m.assignment);
                }
            }
            _ => return None,
        }
        Some(b.freeze())
    }

    /// Decodes a stored record. `Ok(None)` for record types kopd does not use (Kafka's newer
    /// consumer-group and share-group records), which replay skips.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<GroupRecord>, RecordError> {
        let mut k = Reader { b: key, flexible: false };
        match k.i16()? {
            0 | 1 => {
                let (group, topic, partition) = (k.string()?, k.string()?, k.i32()?);
                let value = value.map(decode_offset).transpose()?;
                Ok(Some(GroupRecord::Offset { group, topic, partition, value }))
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group).transpose()?;
                Ok(Some(GroupRecord::Group { group, value }))
            }
            _ => Ok(None),
        }
    }
}

fn decode_offset(v: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader { b: v, flexible: false };
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError(format!("OffsetCommitValue version {version}")));
    }
    r.flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    let expire_timestamp = if version == 1 { r.i64()? } else { -1 };
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp, expire_timestamp })
}

fn decode_group(v: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader { b: v, flexible: false };
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError(format!("GroupMetadataValue version {version}")));
    }
    r.flexible = version >= 4;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let n = r.array_len()?;
    let mut members = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let member_id = r.string()?;
        let instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        r.skip_tags()?;
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            session_timeout,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
}

/// A bounds-checked reader of Kafka's classic and flexible (compact) encodings.
struct Reader<'a> {
    b: &'a [u8],
    flexible: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if n > self.b.len() {
            return Err(RecordError(format!("{n} bytes wanted, {} left", self.b.len())));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let [b] = self.fixed::<1>()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError("varint too long".into()))
    }

    /// Length of a string/bytes/array field; `None` for null.
    fn len(&mut self, wide: bool) -> Result<Option<usize>, RecordError> {
        let n: i64 = if self.flexible {
            self.varint()? as i64 - 1
        } else if wide {
            self.i32()? as i64
        } else {
            self.i16()? as i64
        };
        Ok(usize::try_from(n).ok())
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.len(false)? {
            None => Ok(None),
            Some(n) => {
                let raw = self.take(n)?;
                String::from_utf8(raw.to_vec()).map(Some).map_err(|_| RecordError("string is not UTF-8".into()))
            }
        }
    }

    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?.ok_or_else(|| RecordError("null string".into()))
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let n = self.len(true)?.unwrap_or(0);
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    fn array_len(&mut self) -> Result<usize, RecordError> {
        Ok(self.len(true)?.unwrap_or(0))
    }

    /// Skips a flexible struct's tagged fields.
    fn skip_tags(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        for _ in 0..self.varint()? {
            self.varint()?;
            let size = self.varint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

/// Encodes records as one uncompressed Kafka RecordBatch v2 (no producer id).
pub fn encode_batch(records: &[GroupRecord], now_ms: i64) -> Result<Bytes, RecordError> {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(r.key()),
            value: r.value(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| RecordError(e.to_string()))?;
    Ok(buf.freeze())
}

impl Default for OffsetValue {
    fn default() -> Self {
        OffsetValue { offset: 0, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0, expire_timestamp: -1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: GroupRecord) {
        let (k, v) = (r.key(), r.value());
        assert_eq!(GroupRecord::decode(&k, v.as_deref()).unwrap(), Some(r));
    }

    #[test]
    fn records_round_trip() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
            expire_timestamp: -1,
        };
        round_trip(GroupRecord::Offset { group: "g".into(), topic: "t".into(), partition: 7, value: Some(offset) });
        let expiring = OffsetValue { leader_epoch: -1, expire_timestamp: 5, ..Default::default() };
        round_trip(GroupRecord::Offset { group: "g".into(), topic: "t".into(), partition: 0, value: Some(expiring) });
        round_trip(GroupRecord::Offset { group: "g".into(), topic: "t".into(), partition: 0, value: None });
        let member = MemberValue {
            member_id: "m-1".into(),
            instance_id: Some("i".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout: 300_000,
            session_timeout: 45_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        };
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp: 9,
            members: vec![member],
        };
        round_trip(GroupRecord::Group { group: "g".into(), value: Some(group) });
        round_trip(GroupRecord::Group { group: "g".into(), value: None });
    }

    #[test]
    fn decodes_kafka_flexible_v4_and_rejects_garbage() {
        // OffsetCommitValue v4: offset, leaderEpoch, compact metadata "", commitTimestamp, no tags.
        let mut v = vec![0, 4];
        v.extend_from_slice(&10i64.to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v.push(1);
        v.extend_from_slice(&99i64.to_be_bytes());
        v.push(0);
        let mut k = vec![0, 1, 0, 1, b'g', 0, 1, b't'];
        k.extend_from_slice(&2i32.to_be_bytes());
        let r = GroupRecord::decode(&k, Some(&v)).unwrap();
        assert!(matches!(
            r,
            Some(GroupRecord::Offset { partition: 2, value: Some(OffsetValue { offset: 10, .. }), .. })
        ));
        assert!(GroupRecord::decode(&[0, 1, 0, 9], Some(&v)).is_err());
        assert!(GroupRecord::decode(&k, Some(&[0, 9])).is_err());
        assert_eq!(GroupRecord::decode(&[0, 5, 1], None), Ok(None));
    }

    #[test]
    fn batch_is_valid() {
        let recs = vec![GroupRecord::Group { group: "g".into(), value: None }];
        let b = encode_batch(&recs, 1).unwrap();
        let limits = crate::log::record_batch::ValidationLimits { require_keys: true, ..Default::default() };
        assert!(crate::log::record_batch::validate(&b, &limits).is_ok());
    }
}
