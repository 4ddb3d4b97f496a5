//! The segment table: what each segment file holds, and which files may be unlinked.
//!
//! A segment may go once every ledger with an entry in it is deleted, *and* no deletion marker
//! in it is still needed. A marker for ledger L is needed while any surviving segment still
//! holds an entry of L: dropping the marker first would bring L back at the next recovery.

use std::collections::HashSet;

use crate::storage::LedgerId;

#[derive(Clone, Debug)]
pub(super) struct SegInfo {
    /// Which `core-<N>` directory holds the file.
    pub core: usize,
    pub seq: u64,
    /// Ledgers with at least one entry record in this segment (valid or not kept).
    pub present: HashSet<LedgerId>,
    /// Ledgers whose deletion marker is in this segment.
    pub markers: Vec<LedgerId>,
    /// Not read to its end at recovery: it may hold entries nobody knows about, so it is
    /// never unlinked automatically.
    pub damaged: bool,
    /// Unlinked.
    pub gone: bool,
    /// Length known durable (fdatasync'd, or found at recovery): what a checkpoint may trust.
    pub durable: u64,
}

impl SegInfo {
    pub fn new(core: usize, seq: u64) -> Self {
        SegInfo { core, seq, present: HashSet::new(), markers: Vec::new(), damaged: false, gone: false, durable: 0 }
    }
}

/// Segments (indexes into `segs`) that may be unlinked. `candidate` narrows the choice (own
/// directory, not active, ...); `deleted` is every ledger known to be deleted.
pub(super) fn removable(
    segs: &[SegInfo],
    deleted: &HashSet<LedgerId>,
    candidate: impl Fn(usize, &SegInfo) -> bool,
) -> Vec<usize> {
    let mut chosen: Vec<bool> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| !s.gone && !s.damaged && candidate(i, s) && s.present.iter().all(|l| deleted.contains(l)))
        .collect();
    // Greatest fixed point: drop a choice whose markers are needed by a segment that stays;
    // that segment staying may in turn make other markers needed, so repeat until stable.
    loop {
        let mut changed = false;
        for i in 0..segs.len() {
            if !chosen[i] {
                continue;
            }
            let needed = segs[i].markers.iter().any(|l| {
                segs.iter().enumerate().any(|(j, t)| j != i && !t.gone && !chosen[j] && t.present.contains(l))
            });
            if needed {
                chosen[i] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    chosen.iter().enumerate().filter_map(|(i, c)| c.then_some(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(present: &[LedgerId], markers: &[LedgerId]) -> SegInfo {
        let mut s = SegInfo::new(0, 0);
        s.present = present.iter().copied().collect();
        s.markers = markers.to_vec();
        s
    }

    #[test]
    fn markers_outlive_the_entries_they_hide() {
        // 0: entries of 1 (deleted) and 2 (live); 1: entries of 1 and the marker of 1.
        let segs = vec![seg(&[1, 2], &[]), seg(&[1], &[1])];
        let deleted: HashSet<_> = [1].into_iter().collect();
        assert!(removable(&segs, &deleted, |_, _| true).is_empty());
        let deleted: HashSet<_> = [1, 2].into_iter().collect();
        assert_eq!(removable(&segs, &deleted, |_, _| true), vec![0, 1]);
        // The marker's segment stays while a non-candidate holds the ledger.
        assert!(removable(&segs, &deleted, |i, _| i == 1).is_empty());
        assert_eq!(removable(&segs, &deleted, |i, _| i == 0), vec![0]);
    }
}
