//! Per-core snapshots of partition logs, so a restart reads only what came after them.
//!
//! One file per core, `data.dir/ledgers/core-N/log.snapshot`, written every
//! `log.snapshot.interval.ms` and at clean shutdown: the ledger store's checkpoint of that
//! core's directory, and for each partition the core has open its durable offset index and
//! idempotent-producer state (everything below its high watermark). Written atomically:
//! temp file, fsync, rename, fsync of the directory. Recovery (`recovery.rs`) checks each
//! partition's snapshot against the managed-ledger metadata and what the store recovered, and
//! falls back to a full rebuild of that partition when they disagree; a corrupt file is
//! ignored whole.
//!
//! It lives beside the data it describes rather than in the metadata store: it is large (an
//! index entry per batch), rewritten often, and only meaningful together with the segments of
//! the same directory; the metadata store is a small replayed log of cluster facts.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::offset_index::IndexEntry;
use super::producer_state::BatchSeq;
use crate::storage::codec::{CodecError, Reader, Writer};

pub const FILE_NAME: &str = "log.snapshot";
const MAGIC: &[u8; 8] = b"KOPDSNAP";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The managed ledger's metadata path (names the partition).
    pub path: String,
    /// Offset after the last covered record (the high watermark when taken).
    pub end: i64,
    pub index: Vec<IndexEntry>,
    /// Producer id, epoch and its remembered batches, oldest first.
    pub producers: Vec<(i64, i16, Vec<BatchSeq>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreSnapshot {
    /// The ledger store's checkpoint of the core's directory, if it could take one.
    pub store: Option<Vec<u8>>,
    pub partitions: Vec<PartitionSnapshot>,
}

impl CoreSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(MAGIC, VERSION);
        match &self.store {
            Some(s) => {
                w.u8(1);
                w.bytes(s);
            }
            None => w.u8(0),
        }
        w.u32(self.partitions.len() as u32);
        for p in &self.partitions {
            w.bytes(p.path.as_bytes());
            w.i64(p.end);
            w.u32(p.index.len() as u32);
            for e in &p.index {
                w.i64(e.base_offset);
                w.i64(e.last_offset);
                w.u64(e.ledger);
                w.u64(e.entry);
                w.i64(e.max_timestamp);
                w.u32(e.size);
            }
            w.u32(p.producers.len() as u32);
            for (pid, epoch, batches) in &p.producers {
                w.i64(*pid);
                w.u32(*epoch as u16 as u32);
                w.u32(batches.len() as u32);
                for b in batches {
                    w.u32(b.first_seq as u32);
                    w.u32(b.last_seq as u32);
                    w.i64(b.base_offset);
                    w.i64(b.last_offset);
                    w.i64(b.max_timestamp);
                }
            }
        }
        w.finish()
    }

    pub fn decode(data: &[u8]) -> Result<CoreSnapshot, CodecError> {
        let mut r = Reader::open(data, MAGIC, VERSION)?;
        let store = match r.u8()? {
            0 => None,
            1 => Some(r.bytes()?.to_vec()),
            _ => return Err(CodecError::Invalid("store checkpoint flag")),
        };
        let n = r.count(20)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let path = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError::Invalid("path"))?;
            let end = r.i64()?;
            let entries = r.count(44)?;
            let mut index: Vec<IndexEntry> = Vec::with_capacity(entries);
            for _ in 0..entries {
                let (base_offset, last_offset, ledger, entry) = (r.i64()?, r.i64()?, r.u64()?, r.u64()?);
                let (max_timestamp, size) = (r.i64()?, r.u32()?);
                let prev = index.last();
                if last_offset < base_offset || prev.is_some_and(|p| p.last_offset >= base_offset) || last_offset >= end
                {
                    return Err(CodecError::Invalid("index offsets out of order"));
                }
                let running = prev.map_or(max_timestamp, |p| p.running_max_timestamp.max(max_timestamp));
                index.push(IndexEntry {
                    base_offset,
                    last_offset,
                    ledger,
                    entry,
                    max_timestamp,
                    running_max_timestamp: running,
                    size,
                });
            }
            let np = r.count(12)?;
            let mut producers = Vec::with_capacity(np);
            for _ in 0..np {
                let pid = r.i64()?;
                let epoch = r.u32()? as u16 as i16;
                let nb = r.count(32)?;
                let batches = (0..nb)
                    .map(|_| {
                        Ok(BatchSeq {
                            first_seq: r.u32()? as i32,
                            last_seq: r.u32()? as i32,
                            base_offset: r.i64()?,
                            last_offset: r.i64()?,
                            max_timestamp: r.i64()?,
                        })
                    })
                    .collect::<Result<Vec<_>, CodecError>>()?;
                producers.push((pid, epoch, batches));
            }
            partitions.push(PartitionSnapshot { path, end, index, producers });
        }
        if !r.is_empty() {
            return Err(CodecError::Invalid("trailing bytes"));
        }
        Ok(CoreSnapshot { store, partitions })
    }
}

/// Writes `data` as `dir/FILE_NAME` atomically and durably (blocking; run off the executor).
pub fn write_file(dir: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Every core's snapshot under the ledger root; unreadable or corrupt ones are skipped.
pub fn read_all(ledger_root: &Path) -> HashMap<usize, CoreSnapshot> {
    let mut out = HashMap::new();
    let Ok(dirs) = std::fs::read_dir(ledger_root) else { return out };
    for d in dirs.flatten() {
        let name = d.file_name();
        let Some(core) = name.to_str().and_then(|n| n.strip_prefix("core-")).and_then(|n| n.parse().ok()) else {
            continue;
        };
        let path: PathBuf = d.path().join(FILE_NAME);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read log snapshot; rebuilding from the ledgers");
                continue;
            }
        };
        match CoreSnapshot::decode(&data) {
            Ok(s) => {
                out.insert(core, s);
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "corrupt log snapshot ignored; rebuilding from the ledgers")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CoreSnapshot {
        let e = |b: i64, l: i64, ledger: u64, entry: u64, ts: i64| IndexEntry {
            base_offset: b,
            last_offset: l,
            ledger,
            entry,
            max_timestamp: ts,
            running_max_timestamp: ts.max(if b == 0 { ts } else { 100 }),
            size: 70,
        };
        CoreSnapshot {
            store: Some(vec![1, 2, 3]),
            partitions: vec![PartitionSnapshot {
                path: "/managed-ledgers/public/default/persistent/t-partition-0".into(),
                end: 10,
                index: vec![e(0, 4, 7, 0, 100), e(5, 9, 7, 1, 90)],
                producers: vec![(
                    42,
                    -1,
                    vec![BatchSeq {
                        first_seq: 0,
                        last_seq: 4,
                        base_offset: 0,
                        last_offset: 4,
                        max_timestamp: 1_700_000_000_000,
                    }],
                )],
            }],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(CoreSnapshot::decode(&s.encode()), Ok(s));
        let empty = CoreSnapshot::default();
        assert_eq!(CoreSnapshot::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn corrupt_or_truncated_snapshots_are_rejected() {
        let data = sample().encode();
        for n in 0..data.len() {
            assert!(CoreSnapshot::decode(&data[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert!(CoreSnapshot::decode(&bad).is_err(), "flip at {i}");
        }
        // Well-formed but inconsistent: offsets beyond the covered end.
        let mut s = sample();
        s.partitions[0].end = 5;
        assert!(matches!(CoreSnapshot::decode(&s.encode()), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("kopd-snap-{}", std::process::id()));
        let core = dir.join("core-3");
        std::fs::create_dir_all(&core).unwrap();
        write_file(&core, &sample().encode()).unwrap();
        std::fs::create_dir_all(dir.join("core-4")).unwrap();
        std::fs::write(dir.join("core-4").join(FILE_NAME), b"garbage").unwrap();
        let all = read_all(&dir);
        assert_eq!(all.len(), 1);
        assert_eq!(all.get(&3), Some(&sample()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
