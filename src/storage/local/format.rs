//! On-disk format of the entry log: file names, the segment header, and records.
//!
//! Segment `<root>/core-<N>/<seq:020>.log` = header, then records back to back. Integers are
//! big-endian. A record is `[u32 len][u32 crc32c][u64 ledger][u64 entry][payload; len]` with the
//! checksum over everything after itself, so a torn or flipped record is detected as a whole.
//! Two entry ids are reserved for control records with an empty payload: a deletion marker and a
//! ledger-id reservation (see `RESERVE`).

use std::path::{Path, PathBuf};

use crate::storage::{EntryId, KnownCrc, LedgerId, SplitBytes};

pub(super) const SEG_MAGIC: [u8; 8] = *b"KOPDLEDG";
pub(super) const SEG_VERSION: u32 = 1;
/// magic(8) version(4) crc(4) core(4) pad(4) id_floor(8).
pub(super) const SEG_HEADER_LEN: u64 = 32;
pub(super) const REC_HEADER_LEN: usize = 24;
/// Largest payload a record can carry (its length field is a u32).
pub(super) const MAX_PAYLOAD: usize = (u32::MAX as usize) - REC_HEADER_LEN;

/// `entry` of a record that deletes its ledger.
pub(super) const DELETE: EntryId = u64::MAX;
/// `entry` of a record whose `ledger` field is `core << 48 | bound`: ledger seqs below `bound`
/// may have been handed out by that core, so a restart must not reuse them.
pub(super) const RESERVE: EntryId = u64::MAX - 1;

/// Ledger ids are `core << 48 | seq`.
pub(super) const SEQ_BITS: u32 = 48;
pub(super) const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

pub(super) fn ledger_id(core: usize, seq: u64) -> LedgerId {
    ((core as u64) << SEQ_BITS) | (seq & SEQ_MASK)
}

pub(super) fn id_prefix(ledger: LedgerId) -> usize {
    (ledger >> SEQ_BITS) as usize
}

pub(super) fn id_seq(ledger: LedgerId) -> u64 {
    ledger & SEQ_MASK
}

pub fn core_dir(root: &Path, core: usize) -> PathBuf {
    root.join(format!("core-{core}"))
}

/// (total, available to kopd) bytes of the filesystem holding `dir`, as DescribeLogDirs
/// reports them; `None` if the filesystem cannot be asked.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the struct it is given; `path` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

pub(super) fn parse_core_dir(name: &str) -> Option<usize> {
    let n = name.strip_prefix("core-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub(super) fn seg_path(root: &Path, core: usize, seq: u64) -> PathBuf {
    core_dir(root, core).join(format!("{seq:020}.log"))
}

pub(super) fn parse_seg_name(name: &str) -> Option<u64> {
    let n = name.strip_suffix(".log")?;
    if n.len() != 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

pub(super) fn encode_seg_header(core: usize, id_floor: u64) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_be_bytes());
    h[16..20].copy_from_slice(&(core as u32).to_be_bytes());
    h[24..32].copy_from_slice(&id_floor.to_be_bytes());
    let crc = crc32c::crc32c(&h[16..]);
    h[12..16].copy_from_slice(&crc.to_be_bytes());
    h
}

/// `(core, id_floor)` of a valid header.
pub(super) fn parse_seg_header(h: &[u8]) -> Option<(usize, u64)> {
    if h.len() < SEG_HEADER_LEN as usize || h[0..8] != SEG_MAGIC || be32(&h[8..12]) != SEG_VERSION {
        return None;
    }
    if be32(&h[12..16]) != crc32c::crc32c(&h[16..SEG_HEADER_LEN as usize]) {
        return None;
    }
    Some((be32(&h[16..20]) as usize, be64(&h[24..32])))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RecHeader {
    pub len: u32,
    pub crc: u32,
    pub ledger: LedgerId,
    pub entry: EntryId,
}

impl RecHeader {
    pub fn parse(b: &[u8; REC_HEADER_LEN]) -> Self {
        RecHeader { len: be32(&b[0..4]), crc: be32(&b[4..8]), ledger: be64(&b[8..16]), entry: be64(&b[16..24]) }
    }

    pub fn total_len(&self) -> u64 {
        REC_HEADER_LEN as u64 + self.len as u64
    }

    pub fn crc_ok(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && record_crc(self.ledger, self.entry, payload) == self.crc
    }
}

pub(super) fn record_crc(ledger: LedgerId, entry: EntryId, payload: &[u8]) -> u32 {
    let mut ids = [0u8; 16];
    ids[0..8].copy_from_slice(&ledger.to_be_bytes());
    ids[8..16].copy_from_slice(&entry.to_be_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&ids), payload)
}

/// [`record_crc`] of a payload in pieces.
fn record_crc_split(ledger: LedgerId, entry: EntryId, payload: &SplitBytes) -> u32 {
    payload.pieces().fold(record_crc(ledger, entry, &[]), |crc, p| crc32c::crc32c_append(crc, p))
}

/// [`record_crc`] from the checksum of the payload's tail, which the caller computed: only
/// the bytes before it are read, and the two checksums combined.
pub(super) fn record_crc_known(ledger: LedgerId, entry: EntryId, payload: &SplitBytes, known: KnownCrc) -> u32 {
    let Some(head) = payload.front().get(..known.from) else {
        return record_crc_split(ledger, entry, payload);
    };
    let head_crc = record_crc(ledger, entry, head);
    crate::storage::crc::crc32c_combine(head_crc, known.crc, payload.len() - known.from)
}

/// The header of the record carrying `payload` (which follows it on disk); the caller has
/// checked `payload.len() <= MAX_PAYLOAD`.
pub(super) fn encode_record_header(
    ledger: LedgerId,
    entry: EntryId,
    payload: &SplitBytes,
    known: Option<KnownCrc>,
) -> [u8; REC_HEADER_LEN] {
    let crc = match known {
        Some(k) => record_crc_known(ledger, entry, payload, k),
        None => record_crc_split(ledger, entry, payload),
    };
    debug_assert_eq!(crc, record_crc_split(ledger, entry, payload), "a known checksum that is wrong");
    let mut h = [0u8; REC_HEADER_LEN];
    h[0..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    h[4..8].copy_from_slice(&crc.to_be_bytes());
    h[8..16].copy_from_slice(&ledger.to_be_bytes());
    h[16..24].copy_from_slice(&entry.to_be_bytes());
    h
}

/// Where one durable entry lives: segment (index into the store's segment table), the offset of
/// its record, and its payload length. 16 bytes per entry in the in-memory index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub offset: u64,
    pub seg: u32,
    pub len: u32,
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_tail_checksum_gives_the_same_record_checksum() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let whole = SplitBytes::from(payload.clone());
        // The same bytes in two pieces: the record's own part of a large batch's entry.
        let split = SplitBytes::new(bytes::Bytes::copy_from_slice(&payload[..150]), payload[150..].to_vec().into());
        for from in [0, 1, 21, 100, 4095, 4999, 5000] {
            let known = KnownCrc { from, crc: crc32c::crc32c(&payload[from..]) };
            for p in [&whole, &split] {
                assert_eq!(record_crc_known(9, 4, p, known), record_crc(9, 4, &payload), "from {from}");
            }
        }
        // Past the end (or past the first piece): falls back to reading everything.
        let known = KnownCrc { from: 6000, crc: 0 };
        assert_eq!(record_crc_known(9, 4, &whole, known), record_crc(9, 4, &payload));
        assert_eq!(record_crc_split(9, 4, &split), record_crc(9, 4, &payload));
    }

    #[test]
    fn record_and_header_round_trip() {
        let h = RecHeader::parse(&encode_record_header(7, 3, &bytes::Bytes::from_static(b"hello").into(), None));
        assert_eq!((h.len, h.ledger, h.entry), (5, 7, 3));
        assert!(h.crc_ok(b"hello"));
        assert!(!h.crc_ok(b"hellp"));
        let sh = encode_seg_header(3, 99);
        assert_eq!(parse_seg_header(&sh), Some((3, 99)));
        let mut bad = sh;
        bad[30] ^= 1;
        assert_eq!(parse_seg_header(&bad), None);
        assert_eq!(parse_seg_name("00000000000000000012.log"), Some(12));
        assert_eq!(parse_seg_name("12.log"), None);
        assert_eq!(parse_core_dir("core-4"), Some(4));
        assert_eq!(parse_core_dir("core-"), None);
        assert_eq!(id_prefix(ledger_id(5, 9)), 5);
        assert_eq!(id_seq(ledger_id(5, 9)), 9);
    }
}
