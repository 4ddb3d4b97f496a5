//! Startup recovery (blocking std::fs, before the executors start).
//!
//! Pass 1 reads every segment of every `core-*` directory, checks each record's length and
//! checksum, truncates torn tails of each directory's last segment, and collects entry
//! locations, deletion markers and ledger-id reservations. Deletions and the contiguity of
//! entry ids can only be judged once everything is read (a marker may come after the entries
//! it deletes, and a ledger may have entries in several directories), so a second pass
//! re-reads the segments that hold kept entries and hands each one to the caller in append
//! order. Finally segments holding only deleted ledgers are unlinked.
//!
//! With a directory's checkpoint (`checkpoint.rs`) pass 1 takes the checkpointed prefix of
//! each segment from it and reads only what follows; pass 2 reads only the entries the caller
//! asks for (those after its own snapshots), starting at the first of them in each segment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::checkpoint::DirCheckpoint;
use super::format::{
    DELETE, Loc, REC_HEADER_LEN, RESERVE, RecHeader, SEG_HEADER_LEN, id_prefix, id_seq, parse_core_dir,
    parse_seg_header, parse_seg_name,
};
use super::segments::{SegInfo, removable};
use crate::storage::{EntryId, LedgerId, StorageError};

/// What recovery found, for every ledger in every core directory. `Send`: built on the main
/// thread, then split among the cores.
pub struct RecoveredStore {
    common: Arc<Common>,
    ledgers: HashMap<LedgerId, Vec<Loc>>,
}

/// The recovered ledgers one core owns, plus the shared facts its store needs at `open`.
pub struct RecoveredLedgers {
    pub(super) common: Arc<Common>,
    pub(super) ledgers: HashMap<LedgerId, Vec<Loc>>,
}

/// Facts about the whole ledger directory, shared read-only by every core's store.
#[derive(Debug)]
pub(super) struct Common {
    pub root: PathBuf,
    pub segs: Vec<SegInfo>,
    pub dirs: BTreeMap<usize, DirState>,
    /// Per ledger-id prefix (creating core): the lowest seq that was surely never handed out.
    pub next_seq: HashMap<usize, u64>,
    pub deleted: HashSet<LedgerId>,
    /// Ledgers that lost entries after a gap: readable, but not appendable.
    pub sealed: HashSet<LedgerId>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct DirState {
    /// The directory's last segment, if appending to it can continue.
    pub last: Option<LastSeg>,
    /// Seq for the directory's next new segment.
    pub next_seq: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct LastSeg {
    pub seg: u32,
    pub len: u64,
}

impl RecoveredStore {
    /// Every recovered (non-deleted) ledger, ascending.
    pub fn ledger_ids(&self) -> Vec<LedgerId> {
        sorted_ids(&self.ledgers)
    }

    /// Moves the given ledgers' indexes out, for the core that will own them. Ids that were not
    /// recovered (or were already split off) are ignored.
    pub fn split_for_core(&mut self, ledgers: impl IntoIterator<Item = LedgerId>) -> RecoveredLedgers {
        let mut mine = HashMap::new();
        for l in ledgers {
            if let Some(locs) = self.ledgers.remove(&l) {
                mine.insert(l, locs);
            }
        }
        RecoveredLedgers { common: self.common.clone(), ledgers: mine }
    }
}

impl RecoveredLedgers {
    pub fn ledger_ids(&self) -> Vec<LedgerId> {
        sorted_ids(&self.ledgers)
    }
}

fn sorted_ids(m: &HashMap<LedgerId, Vec<Loc>>) -> Vec<LedgerId> {
    let mut ids: Vec<LedgerId> = m.keys().copied().collect();
    ids.sort_unstable();
    ids
}

/// Scans `<dir>/core-*/*.log`, repairs torn tails, and calls `visit` for every kept entry of
/// every non-deleted ledger (in append order within a directory). Creates `dir` if missing.
pub fn recover(dir: &Path, visit: &mut dyn FnMut(LedgerId, EntryId, &Bytes)) -> Result<RecoveredStore, StorageError> {
    scan(dir, &HashMap::new())?.finish(&|_| 0, visit)
}

/// Pass 1 of recovery: every directory scanned (from its checkpoint in `checkpoints`, by core,
/// when it is usable), torn tails repaired, dead segments unlinked.
pub fn scan(dir: &Path, checkpoints: &HashMap<usize, Vec<u8>>) -> Result<Scanned, StorageError> {
    fs::create_dir_all(dir)?;
    let mut b = Builder { root: dir.to_path_buf(), ..Default::default() };
    for (core, path) in list_core_dirs(dir)? {
        let ckpt = checkpoints.get(&core).and_then(|data| match DirCheckpoint::decode(data) {
            Ok(c) if c.core == core => Some(c),
            Ok(_) => None,
            Err(e) => {
                warn!(core, error = %e, "ledger store checkpoint unusable; scanning the directory");
                None
            }
        });
        b.scan_dir(core, &path, ckpt.as_ref())?;
    }
    let (ledgers, sealed) = b.resolve_ledgers();
    b.remove_dead_segments();
    Ok(Scanned { b, ledgers, sealed })
}

/// What pass 1 found; `finish` reads the entries the caller still needs.
pub struct Scanned {
    b: Builder,
    ledgers: HashMap<LedgerId, Vec<Loc>>,
    sealed: HashSet<LedgerId>,
}

impl Scanned {
    /// Entries recovered for a ledger (0 if unknown or deleted).
    pub fn entry_count(&self, ledger: LedgerId) -> u64 {
        self.ledgers.get(&ledger).map_or(0, |l| l.len() as u64)
    }

    /// Calls `visit` for every kept entry at or after `from(ledger)` (in append order within a
    /// directory), reading only from the first such entry of each segment on.
    pub fn finish(
        self,
        from: &dyn Fn(LedgerId) -> EntryId,
        visit: &mut dyn FnMut(LedgerId, EntryId, &Bytes),
    ) -> Result<RecoveredStore, StorageError> {
        let Scanned { b, ledgers, sealed } = self;
        b.visit(&ledgers, from, visit)?;
        let common = Common {
            root: b.root,
            segs: b.segs,
            dirs: b.dirs,
            next_seq: b.found.next_seq,
            deleted: b.found.deleted,
            sealed,
        };
        Ok(RecoveredStore { common: Arc::new(common), ledgers })
    }
}

#[derive(Default)]
struct Found {
    entries: HashMap<LedgerId, Vec<(EntryId, Loc)>>,
    deleted: HashSet<LedgerId>,
    next_seq: HashMap<usize, u64>,
}

impl Found {
    fn bump(&mut self, prefix: usize, next: u64) {
        let n = self.next_seq.entry(prefix).or_insert(0);
        *n = (*n).max(next);
    }

    fn note(&mut self, info: &mut SegInfo, seg: u32, h: &RecHeader, offset: u64) {
        match h.entry {
            DELETE => {
                self.deleted.insert(h.ledger);
                info.markers.push(h.ledger);
                self.bump(id_prefix(h.ledger), id_seq(h.ledger).saturating_add(1));
            }
            RESERVE => self.bump(id_prefix(h.ledger), id_seq(h.ledger)),
            entry => {
                let loc = Loc { offset, seg, len: h.len };
                self.entries.entry(h.ledger).or_default().push((entry, loc));
                info.present.insert(h.ledger);
                self.bump(id_prefix(h.ledger), id_seq(h.ledger).saturating_add(1));
            }
        }
    }
}

#[derive(Default)]
struct Builder {
    root: PathBuf,
    segs: Vec<SegInfo>,
    /// Validated length of each segment in `segs`.
    valid: Vec<u64>,
    dirs: BTreeMap<usize, DirState>,
    found: Found,
}

impl Builder {
    fn scan_dir(&mut self, core: usize, dir: &Path, ckpt: Option<&DirCheckpoint>) -> Result<(), StorageError> {
        let mut files = list_segments(dir)?;
        let next_seq = files.last().map_or(0, |f| f.0 + 1);
        // A last segment without a valid header is a creation cut short by a crash: nothing
        // in it was ever acknowledged.
        if let Some((_, path)) = files.last() {
            let mut f = File::open(path)?;
            let mut h = [0u8; SEG_HEADER_LEN as usize];
            let n = read_up_to(&mut f, &mut h)?;
            if parse_seg_header(&h[..n]).is_none() {
                if h[..n].iter().any(|b| *b != 0) {
                    warn!(path = %path.display(), "ledger segment has a bad header; removed");
                }
                fs::remove_file(path)?;
                files.pop();
            }
        }
        let trusted = ckpt.and_then(|c| usable(c, &files));
        // Segment table index of each checkpointed segment that still exists.
        let mut seg_of: HashMap<usize, u32> = HashMap::new();
        let mut last = None;
        let count = files.len();
        for (i, (seq, path)) in files.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let seg = self.segs.len() as u32;
            let mut info = SegInfo::new(core, seq);
            let mut from = None;
            if let (Some(c), Some(&k)) = (ckpt, trusted.as_ref().and_then(|t| t.get(&seq))) {
                let cs = &c.segs[k];
                info.present = cs.present.iter().copied().collect();
                for m in &cs.markers {
                    self.found.deleted.insert(*m);
                    self.found.bump(id_prefix(*m), id_seq(*m).saturating_add(1));
                }
                info.markers = cs.markers.clone();
                seg_of.insert(k, seg);
                from = Some(cs.len);
            }
            let found = &mut self.found;
            let scan = scan_segment(&path, from, None, &mut |h, off, _| found.note(&mut info, seg, h, off))?;
            if let Some((hcore, floor)) = scan.header {
                self.found.bump(hcore, floor);
            } else {
                warn!(path = %path.display(), "ledger segment has a bad header; skipped");
                info.damaged = true;
            }
            if scan.garbage {
                if is_last {
                    warn!(path = %path.display(), at = scan.valid_len, "torn tail in ledger segment; truncated");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(scan.valid_len)?;
                    f.sync_all()?;
                } else {
                    warn!(path = %path.display(), at = scan.valid_len, "corrupt record in ledger segment; the rest of it is ignored");
                    info.damaged = true;
                }
            }
            if is_last {
                last = (!info.damaged).then_some(LastSeg { seg, len: scan.valid_len });
            }
            info.durable = scan.valid_len;
            self.segs.push(info);
            self.valid.push(scan.valid_len);
        }
        if let (Some(c), Some(_)) = (ckpt, trusted) {
            self.found.bump(core, c.floor);
            for l in &c.ledgers {
                self.found.bump(id_prefix(l.id), id_seq(l.id).saturating_add(1));
                for (entry, (k, offset, len)) in l.locs.iter().enumerate() {
                    // Entries in unlinked segments are gone, as a scan would find them gone.
                    if let Some(&seg) = seg_of.get(&(*k as usize)) {
                        let loc = Loc { offset: *offset, seg, len: *len };
                        self.found.entries.entry(l.id).or_default().push((entry as EntryId, loc));
                    }
                }
            }
        }
        self.dirs.insert(core, DirState { last, next_seq });
        Ok(())
    }

    /// Each live ledger's entries from id 0 up to the first gap.
    fn resolve_ledgers(&mut self) -> (HashMap<LedgerId, Vec<Loc>>, HashSet<LedgerId>) {
        let mut out = HashMap::new();
        let mut sealed = HashSet::new();
        for (ledger, mut recs) in self.found.entries.drain() {
            if self.found.deleted.contains(&ledger) {
                continue;
            }
            // Stable: within a directory, append order breaks ties.
            recs.sort_by_key(|r| r.0);
            let mut locs: Vec<Loc> = Vec::with_capacity(recs.len());
            for (entry, loc) in recs {
                let next = locs.len() as u64;
                if entry == next {
                    locs.push(loc);
                } else if entry < next {
                    warn!(ledger, entry, "duplicate ledger entry ignored");
                } else {
                    warn!(ledger, missing = next, "ledger entries missing; later ones dropped");
                    sealed.insert(ledger);
                    break;
                }
            }
            out.insert(ledger, locs);
        }
        (out, sealed)
    }

    fn remove_dead_segments(&mut self) {
        let last_seq: HashMap<usize, u64> = self.segs.iter().fold(HashMap::new(), |mut m, s| {
            let e = m.entry(s.core).or_insert(0);
            *e = (*e).max(s.seq);
            m
        });
        // A directory's newest segment stays even if dead: its header keeps the id floor.
        let doomed = removable(&self.segs, &self.found.deleted, |_, s| last_seq.get(&s.core) != Some(&s.seq));
        for i in doomed {
            let s = &mut self.segs[i];
            let path = super::format::seg_path(&self.root, s.core, s.seq);
            match fs::remove_file(&path) {
                Ok(()) => s.gone = true,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove dead ledger segment")
                }
            }
        }
    }

    fn visit(
        &self,
        ledgers: &HashMap<LedgerId, Vec<Loc>>,
        from: &dyn Fn(LedgerId) -> EntryId,
        visit: &mut dyn FnMut(LedgerId, EntryId, &Bytes),
    ) -> Result<(), StorageError> {
        // Per segment, the offset of the first entry wanted there.
        let mut start: HashMap<u32, u64> = HashMap::new();
        for (l, locs) in ledgers {
            let first = usize::try_from(from(*l)).unwrap_or(usize::MAX);
            for loc in locs.get(first..).unwrap_or(&[]) {
                let at = start.entry(loc.seg).or_insert(u64::MAX);
                *at = (*at).min(loc.offset);
            }
        }
        for (i, s) in self.segs.iter().enumerate() {
            let Some(&at) = start.get(&(i as u32)) else { continue };
            if s.gone {
                continue;
            }
            let path = super::format::seg_path(&self.root, s.core, s.seq);
            let seg = i as u32;
            let scan = scan_segment(&path, Some(at), Some(self.valid[i]), &mut |h, offset, payload| {
                let loc = Loc { offset, seg, len: h.len };
                let kept = ledgers.get(&h.ledger).and_then(|v| v.get(h.entry as usize));
                if h.entry < RESERVE && kept == Some(&loc) && h.entry >= from(h.ledger) {
                    visit(h.ledger, h.entry, &Bytes::copy_from_slice(payload));
                }
            })?;
            if scan.valid_len != self.valid[i] {
                return Err(StorageError::Corrupt(format!("{} changed during recovery", path.display())));
            }
        }
        Ok(())
    }
}

struct Scan {
    header: Option<(usize, u64)>,
    /// End of the last valid record (0 without a valid header).
    valid_len: u64,
    /// Non-zero bytes follow the valid records (zeros are the padding of aligned writes).
    garbage: bool,
}

/// Reads the valid records of a segment from `from` (a record boundary; default: the first
/// record) up to `limit` bytes if given, calling `on_rec` with each record's header, offset
/// and payload.
fn scan_segment(
    path: &Path,
    from: Option<u64>,
    limit: Option<u64>,
    on_rec: &mut dyn FnMut(&RecHeader, u64, &[u8]),
) -> io::Result<Scan> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let end = limit.map_or(size, |l| l.min(size));
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut hdr = [0u8; SEG_HEADER_LEN as usize];
    let n = read_up_to(&mut r, &mut hdr)?;
    let Some(header) = parse_seg_header(&hdr[..n]) else {
        let garbage = !rest_is_zero(&mut r, 0)?;
        return Ok(Scan { header: None, valid_len: 0, garbage });
    };
    let mut pos = SEG_HEADER_LEN;
    if let Some(at) = from.filter(|at| *at > SEG_HEADER_LEN) {
        if at > end {
            // Shorter than the checkpoint said (checked before use, so only a race).
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than its checkpoint"));
        }
        r.seek(SeekFrom::Start(at))?;
        pos = at;
    }
    let mut payload = Vec::new();
    loop {
        if pos == end {
            return Ok(Scan { header: Some(header), valid_len: pos, garbage: false });
        }
        if end - pos < REC_HEADER_LEN as u64 {
            break;
        }
        let mut hb = [0u8; REC_HEADER_LEN];
        r.read_exact(&mut hb)?;
        let h = RecHeader::parse(&hb);
        // The length is checked against the file before anything is allocated for it.
        if h.total_len() > end - pos {
            break;
        }
        payload.resize(h.len as usize, 0);
        r.read_exact(&mut payload)?;
        if !h.crc_ok(&payload) {
            break;
        }
        on_rec(&h, pos, &payload);
        pos += h.total_len();
    }
    let garbage = !rest_is_zero(&mut r, pos)?;
    Ok(Scan { header: Some(header), valid_len: pos, garbage })
}

fn rest_is_zero(r: &mut BufReader<File>, from: u64) -> io::Result<bool> {
    r.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn list_core_dirs(root: &Path) -> io::Result<Vec<(usize, PathBuf)>> {
    let mut dirs = Vec::new();
    for e in fs::read_dir(root)? {
        let e = e?;
        if let Some(core) = e.file_name().to_str().and_then(parse_core_dir)
            && e.file_type()?.is_dir()
        {
            dirs.push((core, e.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Which checkpointed segments (seq -> index in `c.segs`) may be trusted, or `None` if the
/// checkpoint does not fit the directory: a listed segment is shorter than its checkpointed
/// length, or an older segment is missing from it. A listed segment that no longer exists
/// was unlinked (it held only deleted ledgers).
fn usable(c: &DirCheckpoint, files: &[(u64, PathBuf)]) -> Option<HashMap<u64, usize>> {
    let on_disk: HashMap<u64, &PathBuf> = files.iter().map(|(s, p)| (*s, p)).collect();
    let mut trusted = HashMap::new();
    for (k, s) in c.segs.iter().enumerate() {
        let Some(path) = on_disk.get(&s.seq) else { continue };
        let size = fs::metadata(path).ok()?.len();
        if size < s.len {
            warn!(path = %path.display(), size, checkpointed = s.len, "segment does not match the checkpoint; scanning the directory");
            return None;
        }
        trusted.insert(s.seq, k);
    }
    let newest = c.segs.iter().map(|s| s.seq).max()?;
    if files.iter().any(|(seq, _)| *seq < newest && !trusted.contains_key(seq)) {
        warn!("a segment is missing from the checkpoint; scanning the directory");
        return None;
    }
    Some(trusted)
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(seq) = e.file_name().to_str().and_then(parse_seg_name) {
            files.push((seq, e.path()));
        }
    }
    files.sort();
    Ok(files)
}
