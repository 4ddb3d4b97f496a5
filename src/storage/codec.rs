//! Framing for kopd's own checkpoint files (the store's checkpoint, the logs' snapshots):
//! `[magic 8][version u32][body][crc32c u32 of everything before it]`, big-endian integers,
//! read through a bounds-checked cursor so a truncated or corrupt file is an error, never a
//! panic or a huge allocation.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated")]
    Truncated,
    #[error("bad magic or version")]
    Header,
    #[error("invalid content: {0}")]
    Invalid(&'static str),
}

/// Appends big-endian integers to a buffer that starts with the file header.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(magic: &[u8; 8], version: u32) -> Writer {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(magic);
        buf.extend_from_slice(&version.to_be_bytes());
        Writer { buf }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(v as u64);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }

    /// Seals the buffer with its checksum.
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

/// Reads what `Writer` wrote, after checking header and checksum.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn open(data: &'a [u8], magic: &[u8; 8], version: u32) -> Result<Reader<'a>, CodecError> {
        if data.len() < 16 {
            return Err(CodecError::Truncated);
        }
        let (body, crc) = data.split_at(data.len() - 4);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32c::crc32c(body) != u32::from_be_bytes(c) {
            return Err(CodecError::Checksum);
        }
        let mut r = Reader { buf: body };
        let m = r.take(8)?;
        if m != magic || r.u32()? != version {
            return Err(CodecError::Header);
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(self.u64()? as i64)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of items at least `min_item` bytes each, checked against what is left so a
    /// corrupt count cannot make the caller reserve memory for items that are not there.
    pub fn count(&mut self, min_item: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(CodecError::Truncated);
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let mut w = Writer::new(b"TESTTEST", 1);
        w.u32(7);
        w.i64(-5);
        w.bytes(b"abc");
        let data = w.finish();
        let mut r = Reader::open(&data, b"TESTTEST", 1).unwrap();
        assert_eq!((r.u32().unwrap(), r.i64().unwrap(), r.bytes().unwrap()), (7, -5, &b"abc"[..]));
        assert!(r.is_empty());
        assert_eq!(r.u8().err(), Some(CodecError::Truncated));
        assert_eq!(Reader::open(&data, b"TESTTEST", 2).err(), Some(CodecError::Header));
        assert_eq!(Reader::open(&data[..data.len() - 1], b"TESTTEST", 1).err(), Some(CodecError::Checksum));
        assert_eq!(Reader::open(&data[..10], b"TESTTEST", 1).err(), Some(CodecError::Truncated));
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            assert!(Reader::open(&bad, b"TESTTEST", 1).is_err(), "flip at {i} detected");
        }
    }
}
