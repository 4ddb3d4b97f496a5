//! Ledger metadata as BookKeeper keeps it in ZooKeeper (format version 3), ledger paths of the
//! hierarchical ledger manager, and bookie ids.
//!
//! Value = `"BookieMetadataFormatVersion\t3\n"` + varint32 length + `LedgerMetadataFormat`
//! (bookkeeper-proto DataFormats.proto; the message below mirrors its field numbers and types).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use prost::Message;

use super::digest::DigestType;

const HEADER: &[u8] = b"BookieMetadataFormatVersion\t3\n";

#[derive(Clone, PartialEq, prost::Message)]
struct LedgerMetadataFormat {
    #[prost(int32, required, tag = "1")]
    quorum_size: i32,
    #[prost(int32, required, tag = "2")]
    ensemble_size: i32,
    #[prost(int64, required, tag = "3")]
    length: i64,
    #[prost(int64, optional, tag = "4")]
    last_entry_id: Option<i64>,
    #[prost(int32, required, tag = "5")]
    state: i32,
    #[prost(message, repeated, tag = "6")]
    segment: Vec<SegmentFormat>,
    #[prost(int32, optional, tag = "7")]
    digest_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "8")]
    password: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "9")]
    ack_quorum_size: Option<i32>,
    #[prost(int64, optional, tag = "10")]
    ctime: Option<i64>,
    #[prost(message, repeated, tag = "11")]
    custom_metadata: Vec<CustomEntry>,
    #[prost(int64, optional, tag = "12")]
    c_token: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SegmentFormat {
    #[prost(string, repeated, tag = "1")]
    ensemble_member: Vec<String>,
    #[prost(int64, required, tag = "2")]
    first_entry_id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CustomEntry {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    Open = 1,
    InRecovery = 2,
    Closed = 3,
}

/// One ensemble and the first entry it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first_entry: i64,
    pub ensemble: Vec<BookieId>,
}

/// A ledger's metadata (the parts kopd reads and writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerMetadata {
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub ensemble_size: usize,
    pub state: LedgerState,
    /// Last entry id once closed; -1 while open.
    pub last_entry: i64,
    pub length: i64,
    pub segments: Vec<Segment>,
    pub digest: DigestType,
    pub password: Vec<u8>,
    pub ctime: i64,
    pub custom: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("ledger metadata: {0}")]
    Invalid(String),
}

fn invalid<E: std::fmt::Display>(e: E) -> MetadataError {
    MetadataError::Invalid(e.to_string())
}

impl LedgerMetadata {
    /// The ensemble that holds `entry`.
    pub fn ensemble_for(&self, entry: i64) -> &[BookieId] {
        let mut found: &[BookieId] = &[];
        for s in &self.segments {
            if s.first_entry <= entry || found.is_empty() {
                found = &s.ensemble;
            } else {
                break;
            }
        }
        found
    }

    pub fn encode(&self) -> Vec<u8> {
        let msg = LedgerMetadataFormat {
            quorum_size: self.write_quorum as i32,
            ensemble_size: self.ensemble_size as i32,
            length: self.length,
            last_entry_id: Some(self.last_entry),
            state: self.state as i32,
            segment: self
                .segments
                .iter()
                .map(|s| SegmentFormat {
                    ensemble_member: s.ensemble.iter().map(|b| b.0.clone()).collect(),
                    first_entry_id: s.first_entry,
                })
                .collect(),
            digest_type: Some(self.digest as i32),
            password: Some(self.password.clone()),
            ack_quorum_size: Some(self.ack_quorum as i32),
            ctime: Some(self.ctime),
            custom_metadata: self
                .custom
                .iter()
                .map(|(k, v)| CustomEntry { key: Some(k.clone()), value: Some(v.clone()) })
                .collect(),
            c_token: None,
        };
        let mut out = Vec::with_capacity(HEADER.len() + 10 + msg.encoded_len());
        out.extend_from_slice(HEADER);
        // Length-delimited, as protobuf's writeDelimitedTo; encoding into a Vec cannot fail.
        let _ = msg.encode_length_delimited(&mut out);
        out
    }

    pub fn decode(data: &[u8]) -> Result<LedgerMetadata, MetadataError> {
        let body = data
            .strip_prefix(HEADER)
            .ok_or_else(|| MetadataError::Invalid("not BookieMetadataFormatVersion 3".into()))?;
        let msg = LedgerMetadataFormat::decode_length_delimited(body).map_err(invalid)?;
        let count = |v: i32, what: &str| {
            usize::try_from(v).ok().filter(|&n| n >= 1).ok_or_else(|| invalid(format!("{what} {v}")))
        };
        let write_quorum = count(msg.quorum_size, "write quorum")?;
        let ensemble_size = count(msg.ensemble_size, "ensemble size")?;
        // Metadata without an ack quorum predates it: the ack quorum was the write quorum.
        let ack_quorum = count(msg.ack_quorum_size.unwrap_or(msg.quorum_size), "ack quorum")?;
        let state = match msg.state {
            1 => LedgerState::Open,
            2 => LedgerState::InRecovery,
            3 => LedgerState::Closed,
            s => return Err(invalid(format!("state {s}"))),
        };
        let digest = match msg.digest_type {
            None => DigestType::Crc32,
            Some(d) => DigestType::from_metadata(d).ok_or_else(|| invalid(format!("digest type {d}")))?,
        };
        let segments: Vec<Segment> = msg
            .segment
            .into_iter()
            .map(|s| Segment {
                first_entry: s.first_entry_id,
                ensemble: s.ensemble_member.into_iter().map(BookieId).collect(),
            })
            .collect();
        if segments.is_empty() || segments.iter().any(|s| s.ensemble.len() != ensemble_size) {
            return Err(invalid("segments do not match the ensemble size"));
        }
        Ok(LedgerMetadata {
            write_quorum,
            ack_quorum,
            ensemble_size,
            state,
            last_entry: msg.last_entry_id.unwrap_or(-1),
            length: msg.length,
            segments,
            digest,
            password: msg.password.unwrap_or_default(),
            ctime: msg.ctime.unwrap_or(0),
            custom: msg
                .custom_metadata
                .into_iter()
                .filter_map(|e| Some((e.key?, e.value.unwrap_or_default())))
                .collect(),
        })
    }
}

/// A bookie id as registered in ZooKeeper: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BookieId(pub String);

impl BookieId {
    /// The socket address, if the id is an `ip:port` (kopd connects by address, not by name).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.0.parse().ok()
    }

    /// Resolves `host:port` (a name needs the system resolver; call it off the data path).
    pub fn resolve(&self) -> Option<SocketAddr> {
        use std::net::ToSocketAddrs;
        self.socket_addr().or_else(|| self.0.to_socket_addrs().ok()?.next())
    }
}

impl std::fmt::Display for BookieId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The metadata node of a ledger under the hierarchical ledger manager: ids below 2^31 use
/// `%010d` split 2/4/4 (`L` before the last part), larger ones `%019d` split 3/4/4/4/4.
pub fn ledger_path(root: &str, id: u64) -> String {
    if id < i32::MAX as u64 {
        let s = format!("{id:010}");
        format!("{root}/{}/{}/L{}", &s[0..2], &s[2..6], &s[6..10])
    } else {
        let s = format!("{id:019}");
        format!("{root}/{}/{}/{}/{}/L{}", &s[0..3], &s[3..7], &s[7..11], &s[11..15], &s[15..19])
    }
}

/// The id-generator prefix: sequential ephemeral nodes `<root>/idgen/ID-<seq>`.
pub fn idgen_prefix(root: &str) -> String {
    format!("{root}/idgen/ID-")
}

/// The ledger id in a created id-generator node's path.
pub fn parse_idgen_path(created: &str) -> Option<u64> {
    let (_, seq) = created.rsplit_once("/ID-")?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// Parses `zk+hierarchical://host:port[;host:port...]/ledgers` (BookKeeper separates hosts
/// with `;` in URIs; `,` is accepted too). Returns (ZooKeeper connect string, ledgers root).
pub fn parse_metadata_uri(uri: &str) -> Result<(String, String), MetadataError> {
    let rest = uri
        .strip_prefix("zk+hierarchical://")
        .or_else(|| uri.strip_prefix("zk://"))
        .ok_or_else(|| invalid(format!("metadata service uri {uri:?} is not zk+hierarchical://")))?;
    let (hosts, root) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/ledgers"),
    };
    let root = root.trim_end_matches('/');
    if hosts.is_empty() || root.is_empty() {
        return Err(invalid(format!("metadata service uri {uri:?} needs hosts and a ledgers path")));
    }
    Ok((hosts.replace(';', ","), root.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LedgerMetadata {
        LedgerMetadata {
            write_quorum: 2,
            ack_quorum: 2,
            ensemble_size: 3,
            state: LedgerState::Open,
            last_entry: -1,
            length: 0,
            segments: vec![Segment {
                first_entry: 0,
                ensemble: vec![
                    BookieId("127.0.0.1:3181".into()),
                    BookieId("127.0.0.1:3182".into()),
                    BookieId("127.0.0.1:3183".into()),
                ],
            }],
            digest: DigestType::Crc32c,
            password: Vec::new(),
            ctime: 1_700_000_000_000,
            custom: [("application".to_string(), b"pulsar".to_vec())].into_iter().collect(),
        }
    }

    #[test]
    fn metadata_round_trips_with_bookkeeper_header() {
        let m = sample();
        let bytes = m.encode();
        assert!(bytes.starts_with(b"BookieMetadataFormatVersion\t3\n"));
        // The varint length prefix equals the rest.
        let body = &bytes[HEADER.len()..];
        assert_eq!(body[0] as usize, body.len() - 1);
        assert_eq!(LedgerMetadata::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn metadata_field_numbers_are_bookkeepers() {
        let bytes = sample().encode();
        let body = &bytes[HEADER.len() + 1..];
        // quorumSize=1 varint 2, ensembleSize=2 varint 3, length=3 varint 0, lastEntryId=4 = -1.
        assert_eq!(&body[..6], &[0x08, 2, 0x10, 3, 0x18, 0]);
        assert_eq!(body[6], 0x20);
        // state=5 (OPEN) after the 10-byte varint of -1.
        assert_eq!(&body[17..19], &[0x28, 1]);
        assert_eq!(body[19], 0x32); // segment=6, length-delimited
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(LedgerMetadata::decode(b"").is_err());
        assert!(LedgerMetadata::decode(b"BookieMetadataFormatVersion\t2\n").is_err());
        let mut bytes = sample().encode();
        bytes.truncate(bytes.len() - 3);
        assert!(LedgerMetadata::decode(&bytes).is_err());
        let mut m = sample();
        m.segments[0].ensemble.pop();
        assert!(LedgerMetadata::decode(&m.encode()).is_err());
    }

    #[test]
    fn ensemble_for_picks_the_segment_of_an_entry() {
        let mut m = sample();
        let second = vec![BookieId("a:1".into()), BookieId("b:1".into()), BookieId("c:1".into())];
        m.segments.push(Segment { first_entry: 10, ensemble: second.clone() });
        assert_eq!(m.ensemble_for(0), &m.segments[0].ensemble[..]);
        assert_eq!(m.ensemble_for(9), &m.segments[0].ensemble[..]);
        assert_eq!(m.ensemble_for(10), &second[..]);
        assert_eq!(m.ensemble_for(1000), &second[..]);
    }

    #[test]
    fn hierarchical_paths() {
        assert_eq!(ledger_path("/ledgers", 1), "/ledgers/00/0000/L0001");
        assert_eq!(ledger_path("/ledgers", 1_234_567_890), "/ledgers/12/3456/L7890");
        assert_eq!(ledger_path("/ledgers", 2_147_483_648), "/ledgers/000/0000/0021/4748/L3648");
    }

    #[test]
    fn idgen_and_uri_parsing() {
        assert_eq!(idgen_prefix("/ledgers"), "/ledgers/idgen/ID-");
        assert_eq!(parse_idgen_path("/ledgers/idgen/ID-0000000042"), Some(42));
        assert_eq!(parse_idgen_path("/ledgers/idgen/ID-"), None);
        assert_eq!(parse_idgen_path("/ledgers/idgen/ID-12x"), None);
        assert_eq!(
            parse_metadata_uri("zk+hierarchical://127.0.0.1:2181;127.0.0.1:2182/ledgers").unwrap(),
            ("127.0.0.1:2181,127.0.0.1:2182".to_string(), "/ledgers".to_string())
        );
        assert!(parse_metadata_uri("http://x/ledgers").is_err());
        assert_eq!(BookieId("127.0.0.1:3181".into()).socket_addr(), Some("127.0.0.1:3181".parse().unwrap()));
    }
}
