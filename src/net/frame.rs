//! Kafka framing: every request and response is a 4-byte big-endian size and that many bytes.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
}

/// Splits complete frames off the front of a read buffer.
pub struct FrameDecoder {
    max_size: usize,
}

impl FrameDecoder {
    pub fn new(max_size: usize) -> Self {
        Self { max_size }
    }

    /// The next complete frame's body, `None` if more bytes are needed.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.peek_size(buf)? else {
            return Ok(None);
        };
        if buf.len() < 4 + size {
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }

    /// Whether a whole frame is at the front of `buf`.
    pub fn has_frame(&self, buf: &BytesMut) -> Result<bool, FrameError> {
        Ok(self.peek_size(buf)?.is_some_and(|size| buf.len() >= 4 + size))
    }

    /// Bytes still missing for the frame at the front of `buf` (0 if complete or unknown).
    pub fn missing(&self, buf: &BytesMut) -> usize {
        match self.peek_size(buf) {
            Ok(Some(size)) => (4 + size).saturating_sub(buf.len()),
            _ => 0,
        }
    }

    fn peek_size(&self, buf: &BytesMut) -> Result<Option<usize>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size < 0 {
            return Err(FrameError::NegativeSize(size));
        }
        let size = size as usize;
        if size > self.max_size {
            return Err(FrameError::TooLarge { size, max: self.max_size });
        }
        Ok(Some(size))
    }
}

/// Starts a response frame: reserves the size prefix, to be filled by [`finish_frame`].
pub fn start_frame(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fills in the size of the frame started at `at`: what `out` holds after it, plus
/// `referenced` bytes sent with it from elsewhere (spliced fetch batches).
pub fn finish_frame(out: &mut BytesMut, at: usize, referenced: usize) {
    let size = (out.len() - at - 4 + referenced) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pipelined_and_partial_frames() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 3, b'c']);
        assert_eq!(d.next_frame(&mut buf).unwrap().unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(d.next_frame(&mut buf).unwrap(), None);
        assert_eq!(d.missing(&buf), 2);
        buf.extend_from_slice(b"de");
        assert_eq!(d.next_frame(&mut buf).unwrap().unwrap(), Bytes::from_static(b"cde"));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_sizes() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0x80, 0, 0, 0][..]);
        assert!(matches!(d.next_frame(&mut buf), Err(FrameError::NegativeSize(_))));
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(d.next_frame(&mut buf), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn response_frame_size_is_patched() {
        let mut out = BytesMut::new();
        let at = start_frame(&mut out);
        out.extend_from_slice(b"xyz");
        finish_frame(&mut out, at, 0);
        assert_eq!(&out[..], &[0, 0, 0, 3, b'x', b'y', b'z']);
    }
}
