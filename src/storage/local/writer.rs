//! The active segment's writer: appends records at its end, with O_DIRECT (`flush = always`)
//! or through the page cache (`flush = interval`); see [`SegmentFile`].
//!
//! DMA writes must start and end on the device's block boundary. The direct writer keeps an
//! in-memory copy of the active segment's last partial block (`tail`); each write starts at
//! that block, re-sends its bytes followed by the new records, and zero-pads to the next
//! boundary. The padding is overwritten by the next write; recovery treats an all-zero
//! remainder as the end.

use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaFile, OpenOptions, ReadResult};

use super::commit::sync_dir;
use super::format::{core_dir, encode_seg_header, seg_path};

/// Largest single DMA write; bigger windows go out in several writes (one sync still). Small
/// enough that a few in flight fit the core's registered io_uring buffer pool
/// (`io.memory.per.core`, default 512 KiB), so write buffers are neither heap-allocated nor
/// page-faulted per window.
const MAX_WRITE: usize = 128 << 10;
/// DMA writes of one window in flight at once. They cover disjoint whole blocks (only the last
/// one of a batch ends in a partial block), so their completion order does not matter.
const WRITES_IN_FLIGHT: usize = 4;
/// Page-cache writes are handed to the device in steps of this many bytes as they complete
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writeback, do not wait), so the interval
/// fdatasync finds little left to write. Without it a sync writes everything since the last,
/// and appends stall behind it the longer the more was written.
const WRITEBACK_STEP: u64 = 1 << 20;

/// The active segment's file.
///
/// Under `flush = always` it is written with O_DIRECT: every ack waits for the device anyway,
/// and the page cache would only hold a second copy. Under `flush = interval` it is written
/// through the page cache, as Kafka writes its log: an ack waits for the copy into the page
/// cache (which survives the process being killed, not a power loss: what `interval` means),
/// not for the device, whose writes stall for tens of milliseconds on a busy disk and would
/// stall every ack with them.
pub(super) enum SegmentFile {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

impl SegmentFile {
    /// A segment opened for reads the way its store writes: through the page cache under
    /// `flush = interval` (where the newest entries sit, maybe not yet on the device: an
    /// O_DIRECT read would first force them out), else with O_DIRECT.
    pub async fn open_for_reads(path: &Path, buffered: bool) -> io::Result<Self> {
        Ok(if buffered {
            SegmentFile::Buffered(BufferedFile::open(path).await?)
        } else {
            SegmentFile::Direct(DmaFile::open(path).await?)
        })
    }

    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadResult> {
        match self {
            SegmentFile::Direct(f) => Ok(f.read_at(pos, len).await?),
            SegmentFile::Buffered(f) => Ok(f.read_at(pos, len).await?),
        }
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        match self {
            SegmentFile::Direct(f) => Ok(f.fdatasync().await?),
            SegmentFile::Buffered(f) => Ok(f.fdatasync().await?),
        }
    }

    async fn close(self) -> io::Result<()> {
        match self {
            SegmentFile::Direct(f) => Ok(f.close().await?),
            SegmentFile::Buffered(f) => Ok(f.close().await?),
        }
    }
}

/// The active segment, open for appends.
pub(super) struct Writer {
    /// Shared with an interval sync in flight (`commit::sync_behind`), which may outlive the
    /// writer.
    pub file: Rc<SegmentFile>,
    pub seg: u32,
    pub seq: u64,
    /// Logical end: everything before it has been written.
    pub len: u64,
    /// O_DIRECT: bytes of the block containing `len`, from the block start up to `len`.
    tail: Vec<u8>,
    align: u64,
    /// Written since the last fdatasync was issued.
    pub dirty: bool,
    /// Everything before this is durable (fdatasync'd).
    pub synced: u64,
    /// Page cache: writeback has been started for everything before this.
    written_back: u64,
}

impl Writer {
    /// Creates a new segment and makes its header and directory entry durable.
    pub async fn create(root: &Path, core: usize, seq: u64, seg: u32, floor: u64, buffered: bool) -> io::Result<Self> {
        let path = seg_path(root, core, seq);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        let mut w = if buffered {
            Writer::new_buffered(opts.buffered_open(path).await?, seg, seq, 0)
        } else {
            Writer::new(opts.dma_open(path).await?, seg, seq, 0, Vec::new())
        };
        w.write(&encode_seg_header(core, floor)).await?;
        w.file.fdatasync().await?;
        w.dirty = false;
        w.synced = w.len;
        sync_dir(&core_dir(root, core)).await?;
        Ok(w)
    }

    /// Continues an existing segment whose valid data ends at `len`.
    pub async fn reopen(path: &Path, seg: u32, seq: u64, len: u64, buffered: bool) -> io::Result<Self> {
        if buffered {
            let file = OpenOptions::new().read(true).write(true).buffered_open(path).await?;
            return Ok(Writer::new_buffered(file, seg, seq, len));
        }
        let file = OpenOptions::new().read(true).write(true).dma_open(path).await?;
        let align = alignment(&file);
        let start = len / align * align;
        let mut tail = Vec::new();
        if len > start {
            let want = (len - start) as usize;
            let block = file.read_at_aligned(start, align as usize).await?;
            if block.len() < want {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shrank"));
            }
            tail.extend_from_slice(&block[..want]);
        }
        Ok(Writer::new(file, seg, seq, len, tail))
    }

    fn new(file: DmaFile, seg: u32, seq: u64, len: u64, tail: Vec<u8>) -> Self {
        let align = alignment(&file);
        let file = Rc::new(SegmentFile::Direct(file));
        Writer { file, seg, seq, len, tail, align, dirty: false, synced: len, written_back: len }
    }

    fn new_buffered(file: BufferedFile, seg: u32, seq: u64, len: u64) -> Self {
        let file = Rc::new(SegmentFile::Buffered(file));
        Writer { file, seg, seq, len, tail: Vec::new(), align: 1, dirty: false, synced: len, written_back: len }
    }

    pub async fn write(&mut self, src: &[u8]) -> io::Result<()> {
        self.write_parts(&[src]).await
    }

    /// Appends the concatenation of `parts`. Each DMA write starts at the block holding the
    /// current end (re-sending its bytes from `tail`); every write but the last of a batch ends
    /// on a block boundary, so the writes of a batch never overlap and may run concurrently.
    pub async fn write_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let file = self.file.clone();
        let file = match &*file {
            SegmentFile::Buffered(f) => return self.write_buffered(f, parts).await,
            SegmentFile::Direct(f) => f,
        };
        let align = self.align as usize;
        let max = MAX_WRITE.max(2 * align);
        let mut left: usize = parts.iter().map(|p| p.len()).sum();
        let (mut part, mut off) = (0usize, 0usize);
        while left > 0 {
            let mut batch = Vec::with_capacity(WRITES_IN_FLIGHT);
            while left > 0 && batch.len() < WRITES_IN_FLIGHT {
                let start = self.len - self.tail.len() as u64;
                let head = self.tail.len();
                let mut take = left.min(max - head);
                if take < left {
                    // Not the end of the data: stop on a block boundary.
                    take = (head + take) / align * align - head;
                }
                let total = head + take;
                let padded = total.div_ceil(align) * align;
                // Buffers past the registered io_uring pool come from the heap (still aligned).
                let mut buf = file.alloc_dma_buffer(padded);
                let b = buf.as_bytes_mut();
                b[..head].copy_from_slice(&self.tail);
                let mut at = head;
                while at < total {
                    let Some(p) = parts.get(part) else { break };
                    let n = (p.len() - off).min(total - at);
                    b[at..at + n].copy_from_slice(&p[off..off + n]);
                    at += n;
                    off += n;
                    if off == p.len() {
                        part += 1;
                        off = 0;
                    }
                }
                b[total..].fill(0);
                let new_len = self.len + take as u64;
                let keep = (new_len / self.align * self.align - start) as usize;
                self.tail.clear();
                self.tail.extend_from_slice(&b[keep..total]);
                self.len = new_len;
                left -= take;
                batch.push((buf, start, padded));
            }
            // From here on the file is dirty even if a write fails (the store then fails).
            self.dirty = true;
            let writes = batch.into_iter().map(|(buf, start, padded)| async move {
                let n = file.write_at(buf, start).await?;
                if n != padded {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "short DMA write"));
                }
                Ok(())
            });
            for r in futures_util::future::join_all(writes).await {
                r?;
            }
        }
        Ok(())
    }

    /// Page-cache writes of up to `MAX_WRITE` bytes each, `WRITES_IN_FLIGHT` at a time (disjoint
    /// ranges: their order does not matter). Chunks are filled as their batch goes out, so at
    /// most `WRITES_IN_FLIGHT` of them exist at once, as on the direct path.
    async fn write_buffered(&mut self, f: &BufferedFile, parts: &[&[u8]]) -> io::Result<()> {
        let mut rest = parts.iter().copied().filter(|p| !p.is_empty());
        let mut cur: &[u8] = rest.next().unwrap_or_default();
        self.dirty = true;
        while !cur.is_empty() {
            let mut batch = Vec::with_capacity(WRITES_IN_FLIGHT);
            while !cur.is_empty() && batch.len() < WRITES_IN_FLIGHT {
                let mut chunk = Vec::with_capacity(MAX_WRITE);
                while !cur.is_empty() && chunk.len() < MAX_WRITE {
                    let n = cur.len().min(MAX_WRITE - chunk.len());
                    chunk.extend_from_slice(&cur[..n]);
                    cur = &cur[n..];
                    if cur.is_empty() {
                        cur = rest.next().unwrap_or_default();
                    }
                }
                let pos = self.len;
                self.len += chunk.len() as u64;
                batch.push((chunk, pos));
            }
            let writes = batch.into_iter().map(|(c, pos)| async move {
                let want = c.len();
                let n = f.write_at(c, pos).await?;
                if n != want {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
                }
                Ok(())
            });
            for r in futures_util::future::join_all(writes).await {
                r?;
            }
        }
        self.start_writeback(f);
        Ok(())
    }

    /// Starts writeback of the whole `WRITEBACK_STEP`s written since the last call. Only a
    /// hint to the kernel: it does not wait for the device (the fdatasync still decides what is
    /// durable), and a failure is left for that fdatasync to report.
    fn start_writeback(&mut self, f: &BufferedFile) {
        let end = self.len / WRITEBACK_STEP * WRITEBACK_STEP;
        if end <= self.written_back {
            return;
        }
        let (from, n) = (self.written_back, end - self.written_back);
        self.written_back = end;
        // SAFETY: plain syscall on a file descriptor this writer holds open.
        let _ = unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(f),
                from as libc::off64_t,
                n as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }

    /// Closes the file, or leaves that to an interval sync still using it.
    pub async fn close(self) -> io::Result<()> {
        match Rc::try_unwrap(self.file) {
            Ok(f) => Ok(f.close().await?),
            Err(_) => Ok(()),
        }
    }
}

fn alignment(file: &DmaFile) -> u64 {
    file.alignment().max(4096)
}
