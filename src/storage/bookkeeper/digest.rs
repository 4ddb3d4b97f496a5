//! Entry digests and keys exactly as BookKeeper computes them, so bookies, BookKeeper's own
//! clients and tools accept what kopd writes (and kopd verifies what they wrote).
//!
//! A stored entry is `[ledgerId i64][entryId i64][lastAddConfirmed i64][length i64][digest][payload]`
//! (big-endian); the digest covers the 32-byte header and the payload.

use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

/// Bytes of the header that precedes the digest in a stored entry.
pub const ENTRY_HEADER_LEN: usize = 32;
/// Length of a master key (a SHA-1).
pub const MASTER_KEY_LEN: usize = 20;

/// BookKeeper's digest types; the discriminants are `LedgerMetadataFormat.DigestType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestType {
    Crc32 = 1,
    Mac = 2,
    Crc32c = 3,
    Dummy = 4,
}

impl DigestType {
    pub fn from_metadata(v: i32) -> Option<DigestType> {
        match v {
            1 => Some(DigestType::Crc32),
            2 => Some(DigestType::Mac),
            3 => Some(DigestType::Crc32c),
            4 => Some(DigestType::Dummy),
            _ => None,
        }
    }

    /// Parses a config value (Pulsar's `managedLedgerDigestType` spellings).
    pub fn parse(s: &str) -> Option<DigestType> {
        match s.to_ascii_uppercase().as_str() {
            "CRC32" => Some(DigestType::Crc32),
            "MAC" | "HMAC" => Some(DigestType::Mac),
            "CRC32C" => Some(DigestType::Crc32c),
            "DUMMY" => Some(DigestType::Dummy),
            _ => None,
        }
    }

    /// Bytes of the digest in a stored entry.
    pub fn digest_len(self) -> usize {
        match self {
            DigestType::Crc32 => 8,
            DigestType::Mac => 20,
            DigestType::Crc32c => 4,
            DigestType::Dummy => 0,
        }
    }
}

/// `SHA1("ledger" || password)`: the key a writer presents with every add and a fencing read.
pub fn master_key(password: &[u8]) -> [u8; MASTER_KEY_LEN] {
    let mut h = Sha1::new();
    h.update(b"ledger");
    h.update(password);
    h.finalize().into()
}

/// `SHA1("mac" || password)`: the HMAC key of the MAC digest.
fn mac_key(password: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(b"mac");
    h.update(password);
    h.finalize().into()
}

/// Computes and checks digests of one ledger (type and password are per ledger).
#[derive(Clone)]
pub struct Digester {
    kind: DigestType,
    mac_key: [u8; 20],
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digester({:?})", self.kind)
    }
}

impl Digester {
    pub fn new(kind: DigestType, password: &[u8]) -> Digester {
        Digester { kind, mac_key: mac_key(password) }
    }

    pub fn kind(&self) -> DigestType {
        self.kind
    }

    /// Appends the digest of `header || payload` (the concatenation of its pieces) to `out`.
    pub fn digest_into(&self, header: &[u8], payload: &[&[u8]], out: &mut Vec<u8>) {
        match self.kind {
            DigestType::Crc32 => {
                let mut h = crc32fast::Hasher::new();
                h.update(header);
                payload.iter().for_each(|p| h.update(p));
                // Java's CRC32.getValue() is a long with the upper half zero.
                out.extend_from_slice(&u64::from(h.finalize()).to_be_bytes());
            }
            DigestType::Crc32c => {
                let crc = payload.iter().fold(crc32c::crc32c(header), |crc, p| crc32c::crc32c_append(crc, p));
                out.extend_from_slice(&crc.to_be_bytes());
            }
            DigestType::Mac => {
                // A 20-byte key is always a valid HMAC key; the error arm is unreachable.
                if let Ok(mut m) = Hmac::<Sha1>::new_from_slice(&self.mac_key) {
                    m.update(header);
                    payload.iter().for_each(|p| m.update(p));
                    out.extend_from_slice(&m.finalize().into_bytes());
                }
            }
            DigestType::Dummy => {}
        }
    }

    /// The 32-byte header plus digest of an entry, ready to be followed by the payload on the wire.
    pub fn entry_prefix(&self, ledger: i64, entry: i64, lac: i64, length: i64, payload: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_HEADER_LEN + self.kind.digest_len());
        out.extend_from_slice(&ledger.to_be_bytes());
        out.extend_from_slice(&entry.to_be_bytes());
        out.extend_from_slice(&lac.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        let (header, _) = out.split_at(ENTRY_HEADER_LEN);
        let header: [u8; ENTRY_HEADER_LEN] = header.try_into().unwrap_or([0; ENTRY_HEADER_LEN]);
        self.digest_into(&header, payload, &mut out);
        out
    }

    /// Checks a stored entry (header + digest + payload) and splits it.
    pub fn verify(&self, stored: &[u8]) -> Result<StoredEntry, DigestError> {
        let dlen = self.kind.digest_len();
        if stored.len() < ENTRY_HEADER_LEN + dlen {
            return Err(DigestError::Truncated(stored.len()));
        }
        let (header, rest) = stored.split_at(ENTRY_HEADER_LEN);
        let (digest, payload) = rest.split_at(dlen);
        let mut expect = Vec::with_capacity(dlen);
        self.digest_into(header, &[payload], &mut expect);
        if expect != digest {
            return Err(DigestError::Mismatch);
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i * 8..i * 8 + 8]);
            i64::from_be_bytes(b)
        };
        Ok(StoredEntry {
            ledger: field(0),
            entry: field(1),
            lac: field(2),
            length: field(3),
            payload_offset: ENTRY_HEADER_LEN + dlen,
        })
    }
}

/// The header fields of a verified stored entry; the payload starts at `payload_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEntry {
    pub ledger: i64,
    pub entry: i64,
    pub lac: i64,
    pub length: i64,
    pub payload_offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("stored entry of {0} bytes is shorter than its header and digest")]
    Truncated(usize),
    #[error("entry digest mismatch")]
    Mismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn master_key_of_empty_password_is_sha1_of_ledger() {
        assert_eq!(hex(&master_key(b"")), "850bf1071c5e3d8c24235676f8816ae0cbe2f14f");
        assert_ne!(master_key(b"x"), master_key(b""));
    }

    // Vectors computed independently with Python:
    //   h = struct.pack('>qqqq', 7, 3, 2, 1029); p = b'hello bookkeeper'
    //   crc32c.crc32c(h + p), zlib.crc32(h + p), hmac.new(sha1(b'mac').digest(), h + p, sha1)
    const PAYLOAD: &[u8] = b"hello bookkeeper";

    fn prefix(kind: DigestType) -> Vec<u8> {
        Digester::new(kind, b"").entry_prefix(7, 3, 2, 1029, &[PAYLOAD])
    }

    #[test]
    fn digests_match_independent_vectors() {
        assert_eq!(hex(&prefix(DigestType::Crc32c)[32..]), CRC32C_VECTOR);
        assert_eq!(hex(&prefix(DigestType::Crc32)[32..]), CRC32_VECTOR);
        assert_eq!(hex(&prefix(DigestType::Mac)[32..]), MAC_VECTOR);
        assert_eq!(prefix(DigestType::Dummy).len(), 32);
        assert_eq!(hex(&prefix(DigestType::Dummy)[..16]), "00000000000000070000000000000003");
    }

    const CRC32C_VECTOR: &str = include_str!("testdata/crc32c.hex").trim_ascii();
    const CRC32_VECTOR: &str = include_str!("testdata/crc32.hex").trim_ascii();
    const MAC_VECTOR: &str = include_str!("testdata/mac.hex").trim_ascii();

    #[test]
    fn verify_round_trips_and_detects_corruption() {
        for kind in [DigestType::Crc32, DigestType::Crc32c, DigestType::Mac, DigestType::Dummy] {
            let d = Digester::new(kind, b"pw");
            let mut stored = d.entry_prefix(7, 3, 2, 1029, &[PAYLOAD]);
            stored.extend_from_slice(PAYLOAD);
            let e = d.verify(&stored).unwrap();
            assert_eq!((e.ledger, e.entry, e.lac, e.length), (7, 3, 2, 1029));
            assert_eq!(&stored[e.payload_offset..], PAYLOAD);
            if kind != DigestType::Dummy {
                let last = stored.len() - 1;
                stored[last] ^= 1;
                assert_eq!(d.verify(&stored), Err(DigestError::Mismatch));
                // The digest covers the header too.
                stored[last] ^= 1;
                stored[15] ^= 1;
                assert_eq!(d.verify(&stored), Err(DigestError::Mismatch));
            }
            assert!(matches!(d.verify(&stored[..20]), Err(DigestError::Truncated(20))));
        }
        // A MAC made with another password does not verify.
        let mut stored = Digester::new(DigestType::Mac, b"a").entry_prefix(1, 0, -1, 3, &[b"abc"]);
        stored.extend_from_slice(b"abc");
        assert_eq!(Digester::new(DigestType::Mac, b"b").verify(&stored), Err(DigestError::Mismatch));
    }
}
