//! A checkpoint of one core directory: what recovery's first pass would find in its segments
//! up to each one's durable length (entry locations, deletion markers, the ledger-id floor).
//! With it, restart re-reads only what was written after the checkpoint.
//!
//! Why trusting the prefix is safe: the lengths are fdatasync'd lengths, recorded only after
//! the sync returned, so the bytes below them were written and checksummed by this process and
//! are on stable storage; torn tails can only lie beyond them. Checksums are still verified on
//! every read of an entry, so later corruption in the prefix surfaces as a read error for that
//! entry (a full scan would instead drop the rest of the segment). A checkpoint that does not
//! match the directory (a listed segment shorter than its length, an unlisted older segment)
//! is not used: recovery scans that directory from the start.
//!
//! A directory is checkpointed only by the core that writes it, and only while that core owns
//! every live ledger with entries there (after a change of core count another core may own
//! some; the checkpoint would miss them, so the directory is scanned in full until they go).

use super::LocalLedgerStore;
use super::format::{REC_HEADER_LEN, id_prefix};
use crate::storage::LedgerId;
use crate::storage::codec::{CodecError, Reader, Writer};

const MAGIC: &[u8; 8] = b"KOPDCKPT";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirCheckpoint {
    pub core: usize,
    /// Ledger seqs of this core below this may have been handed out.
    pub floor: u64,
    pub segs: Vec<CkptSeg>,
    pub ledgers: Vec<CkptLedger>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CkptSeg {
    pub seq: u64,
    /// Durable length: records below it are trusted without being re-read.
    pub len: u64,
    pub present: Vec<LedgerId>,
    pub markers: Vec<LedgerId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CkptLedger {
    pub id: LedgerId,
    /// Entries 0.. in order: (index into `segs`, record offset, payload length).
    pub locs: Vec<(u32, u64, u32)>,
}

impl DirCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, VERSION);
        w.u32(self.core as u32);
        w.u64(self.floor);
        w.u32(self.segs.len() as u32);
        for s in &self.segs {
            w.u64(s.seq);
            w.u64(s.len);
            for ids in [&s.present, &s.markers] {
                w.u32(ids.len() as u32);
                ids.iter().for_each(|l| w.u64(*l));
            }
        }
        w.u32(self.ledgers.len() as u32);
        for l in &self.ledgers {
            w.u64(l.id);
            w.u32(l.locs.len() as u32);
            for (seg, off, len) in &l.locs {
                w.u32(*seg);
                w.u64(*off);
                w.u32(*len);
            }
        }
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<DirCheckpoint, CodecError> {
        let mut r = Reader::open(data, MAGIC, VERSION)?;
        let core = r.u32()? as usize;
        let floor = r.u64()?;
        let nsegs = r.count(24)?;
        let mut segs = Vec::with_capacity(nsegs);
        for _ in 0..nsegs {
            let (seq, len) = (r.u64()?, r.u64()?);
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                let n = r.count(8)?;
                *list = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
            }
            let [present, markers] = lists;
            segs.push(CkptSeg { seq, len, present, markers });
        }
        let nledgers = r.count(12)?;
        let mut ledgers = Vec::with_capacity(nledgers);
        for _ in 0..nledgers {
            let id = r.u64()?;
            let n = r.count(16)?;
            let mut locs = Vec::with_capacity(n);
            for _ in 0..n {
                let loc = (r.u32()?, r.u64()?, r.u32()?);
                let end =
                    segs.get(loc.0 as usize).map(|s| s.len).ok_or(CodecError::Invalid("entry in unknown segment"))?;
                if loc.1.saturating_add(REC_HEADER_LEN as u64 + loc.2 as u64) > end {
                    return Err(CodecError::Invalid("entry past its segment's checkpointed length"));
                }
                locs.push(loc);
            }
            ledgers.push(CkptLedger { id, locs });
        }
        if !r.is_empty() {
            return Err(CodecError::Invalid("trailing bytes"));
        }
        Ok(DirCheckpoint { core, floor, segs, ledgers })
    }
}

impl LocalLedgerStore {
    /// The checkpoint of this core's directory as of now, encoded; `None` while the store is
    /// failed or when this core does not own every live ledger written there.
    pub fn checkpoint(&self) -> Option<Vec<u8>> {
        let core = self.shared.core;
        let st = self.shared.st.borrow();
        if st.failed.is_some() {
            return None;
        }
        let mut index_of = std::collections::HashMap::new();
        let mut segs = Vec::new();
        for (i, s) in st.segs.iter().enumerate() {
            if s.core != core || s.gone {
                continue;
            }
            if s.damaged || s.present.iter().any(|l| !st.ledgers.contains_key(l) && !st.deleted.contains(l)) {
                return None;
            }
            index_of.insert(i as u32, (segs.len() as u32, s.durable));
            let mut present: Vec<LedgerId> = s.present.iter().copied().collect();
            present.sort_unstable();
            segs.push(CkptSeg { seq: s.seq, len: s.durable, present, markers: s.markers.clone() });
        }
        let mut ledgers: Vec<CkptLedger> = st
            .ledgers
            .iter()
            .filter(|(id, _)| id_prefix(**id) == core)
            .map(|(id, ix)| {
                // Only what is durable: under `flush = interval` the index runs ahead of syncs.
                let locs = ix
                    .locs
                    .iter()
                    .map_while(|l| {
                        let (seg, durable) = index_of.get(&l.seg)?;
                        (l.offset + REC_HEADER_LEN as u64 + l.len as u64 <= *durable).then_some((*seg, l.offset, l.len))
                    })
                    .collect();
                CkptLedger { id: *id, locs }
            })
            .filter(|l| !l.locs.is_empty())
            .collect();
        ledgers.sort_unstable_by_key(|l| l.id);
        Some(DirCheckpoint { core, floor: st.reserved, segs, ledgers }.encode())
    }

    /// `data.dir/ledgers/core-N`: where this core writes (and its checkpoints live).
    pub fn core_dir(&self) -> std::path::PathBuf {
        super::format::core_dir(&self.shared.root, self.shared.core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DirCheckpoint {
        DirCheckpoint {
            core: 1,
            floor: 2048,
            segs: vec![
                CkptSeg { seq: 0, len: 4096, present: vec![5, 6], markers: vec![] },
                CkptSeg { seq: 1, len: 100, present: vec![6], markers: vec![5] },
            ],
            ledgers: vec![CkptLedger { id: 6, locs: vec![(0, 32, 10), (1, 32, 20)] }],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(DirCheckpoint::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn corrupt_or_truncated_checkpoints_are_rejected() {
        let data = sample().encode();
        for n in 0..data.len() {
            assert!(DirCheckpoint::decode(&data[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            assert!(DirCheckpoint::decode(&bad).is_err(), "flip at {i}");
        }
        // Well-formed but inconsistent: an entry beyond its segment's length.
        let mut c = sample();
        c.ledgers[0].locs[1] = (1, 90, 20);
        assert!(matches!(DirCheckpoint::decode(&c.encode()), Err(CodecError::Invalid(_))));
    }
}
