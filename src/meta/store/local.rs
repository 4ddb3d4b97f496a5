//! The embedded metadata store: an in-memory map made durable by an append-only log.
//!
//! File `metadata.log` = magic, then records `[len u32][crc32c u32][payload]`, where a payload is
//! one atomic batch of ops. A commit appends one record and fdatasyncs. On open the log is
//! replayed; a record that is short or fails its checksum ends the log (a torn write from a
//! crash) and the file is truncated there. When the log grows well past the live data it is
//! rewritten as one record into a temporary file that atomically replaces it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{MetadataStore, StoreError, StoreOp, apply};

const MAGIC: &[u8; 8] = b"KOPDMD01";
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Rewrite the log once it is this many times larger than the live data (and over 1 MiB).
const COMPACTION_FACTOR: u64 = 4;
const COMPACTION_MIN_BYTES: u64 = 1 << 20;

pub struct LocalMetadataStore {
    dir: PathBuf,
    map: BTreeMap<String, Vec<u8>>,
    log: File,
    log_len: u64,
    /// Set after a failed write or sync: the file's state is unknown, so refuse further commits
    /// rather than risk acknowledging metadata that a later replay would not see.
    failed: bool,
}

fn encode_ops(ops: &[StoreOp]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&(ops.len() as u32).to_be_bytes());
    for op in ops {
        match op {
            StoreOp::Put { path, value } => {
                p.push(OP_PUT);
                p.extend_from_slice(&(path.len() as u32).to_be_bytes());
                p.extend_from_slice(path.as_bytes());
                p.extend_from_slice(&(value.len() as u32).to_be_bytes());
                p.extend_from_slice(value);
            }
            StoreOp::Delete { path } => {
                p.push(OP_DELETE);
                p.extend_from_slice(&(path.len() as u32).to_be_bytes());
                p.extend_from_slice(path.as_bytes());
            }
        }
    }
    p
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_ops(payload: &[u8]) -> Option<Vec<StoreOp>> {
    let mut c = Cursor(payload);
    let n = c.u32()?;
    let mut ops = Vec::new();
    for _ in 0..n {
        let kind = c.take(1)?[0];
        let path = c.string()?;
        match kind {
            OP_PUT => {
                let len = c.u32()? as usize;
                ops.push(StoreOp::Put { path, value: c.take(len)?.to_vec() });
            }
            OP_DELETE => ops.push(StoreOp::Delete { path }),
            _ => return None,
        }
    }
    c.0.is_empty().then_some(ops)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(payload.len() + 8);
    rec.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    rec.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    rec.extend_from_slice(payload);
    rec
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalMetadataStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)?;
        let path = dir.join("metadata.log");
        let mut log = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut map = BTreeMap::new();
        let valid_len = if bytes.is_empty() {
            log.write_all(MAGIC)?;
            log.sync_all()?;
            sync_dir(dir)?;
            MAGIC.len()
        } else if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StoreError::Corrupt(format!("{} does not start with the kopd metadata magic", path.display())));
        } else {
            let mut pos = MAGIC.len();
            loop {
                let mut c = Cursor(&bytes[pos..]);
                let (Some(len), Some(crc)) = (c.u32(), c.u32()) else {
                    break;
                };
                let Some(payload) = c.take(len as usize) else {
                    break;
                };
                if crc32c::crc32c(payload) != crc {
                    break;
                }
                let Some(ops) = decode_ops(payload) else {
                    break;
                };
                apply(&mut map, &ops);
                pos += 8 + len as usize;
            }
            pos
        };
        if valid_len < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                dropped_bytes = bytes.len() - valid_len,
                "metadata log had a torn or corrupt tail; truncated"
            );
            log.set_len(valid_len as u64)?;
            log.sync_all()?;
        }
        // Appends go to the end regardless of the read position.
        let log = OpenOptions::new().append(true).open(&path)?;
        Ok(Self { dir: dir.to_path_buf(), map, log, log_len: valid_len as u64, failed: false })
    }

    fn live_bytes(&self) -> u64 {
        self.map.iter().map(|(k, v)| (k.len() + v.len() + 9) as u64).sum()
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        let ops: Vec<StoreOp> =
            self.map.iter().map(|(k, v)| StoreOp::Put { path: k.clone(), value: v.clone() }).collect();
        let tmp = self.dir.join("metadata.log.tmp");
        let mut f = File::create(&tmp)?;
        let rec = frame(&encode_ops(&ops));
        f.write_all(MAGIC)?;
        f.write_all(&rec)?;
        f.sync_all()?;
        let path = self.dir.join("metadata.log");
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.log = OpenOptions::new().append(true).open(&path)?;
        self.log_len = (MAGIC.len() + rec.len()) as u64;
        Ok(())
    }
}

impl MetadataStore for LocalMetadataStore {
    fn get(&self, path: &str) -> Option<&[u8]> {
        self.map.get(path).map(Vec::as_slice)
    }

    fn scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn commit(&mut self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.failed {
            return Err(StoreError::Corrupt("an earlier write failed; restart to recover".into()));
        }
        let rec = frame(&encode_ops(&ops));
        if let Err(e) = self.log.write_all(&rec).and_then(|_| self.log.sync_data()) {
            self.failed = true;
            return Err(e.into());
        }
        self.log_len += rec.len() as u64;
        apply(&mut self.map, &ops);
        if self.log_len > COMPACTION_MIN_BYTES && self.log_len > COMPACTION_FACTOR * self.live_bytes() {
            self.compact()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kopd-md-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn put(p: &str, v: &str) -> StoreOp {
        StoreOp::Put { path: p.into(), value: v.as_bytes().to_vec() }
    }

    #[test]
    fn survives_reopen_and_torn_tail() {
        let d = tmpdir("torn");
        {
            let mut s = LocalMetadataStore::open(&d).unwrap();
            s.commit(vec![put("/a/1", "x"), put("/a/2", "y")]).unwrap();
            s.commit(vec![StoreOp::Delete { path: "/a/1".into() }]).unwrap();
        }
        // A crash mid-append leaves a partial record behind.
        let mut f = OpenOptions::new().append(true).open(d.join("metadata.log")).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let mut s = LocalMetadataStore::open(&d).unwrap();
        assert_eq!(s.get("/a/1"), None);
        assert_eq!(s.get("/a/2"), Some(&b"y"[..]));
        s.commit(vec![put("/b", "z")]).unwrap();
        drop(s);
        let s = LocalMetadataStore::open(&d).unwrap();
        assert_eq!(s.scan("/").len(), 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_record_ends_the_log() {
        let d = tmpdir("crc");
        {
            let mut s = LocalMetadataStore::open(&d).unwrap();
            s.commit(vec![put("/a", "1")]).unwrap();
            s.commit(vec![put("/b", "2")]).unwrap();
        }
        let path = d.join("metadata.log");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let s = LocalMetadataStore::open(&d).unwrap();
        assert_eq!(s.get("/a"), Some(&b"1"[..]));
        assert_eq!(s.get("/b"), None);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_keeps_live_data() {
        let d = tmpdir("compact");
        let mut s = LocalMetadataStore::open(&d).unwrap();
        let big = "v".repeat(64 << 10);
        for i in 0..40 {
            s.commit(vec![put("/k", &format!("{i}{big}"))]).unwrap();
        }
        assert!(s.log_len < 40 * (64 << 10));
        drop(s);
        let s = LocalMetadataStore::open(&d).unwrap();
        assert!(s.get("/k").unwrap().starts_with(b"39"));
        let _ = fs::remove_dir_all(&d);
    }
}
