//! A connection's read buffer: bytes read but not yet split off as frames, then spare room
//! for the next read. A socket read needs initialized memory; the spare room is zeroed once
//! per allocation instead of before every read (zeroing a 64 KiB chunk per read, while a
//! large request arrives in many small reads, was a large part of produce's instructions).

use bytes::{Bytes, BytesMut};

use super::frame::{FrameDecoder, FrameError};

pub(super) struct ReadBuffer {
    buf: BytesMut,
    /// How many bytes past `buf.len()` are initialized (zeroed, or read into and given back by
    /// `filled`). Splitting frames off the front does not move them; a reallocation resets it.
    spare_init: usize,
    /// The room `spare` last gave out, counted in `buf.len()` until `filled`.
    lent: usize,
}

impl ReadBuffer {
    pub fn new() -> Self {
        Self { buf: BytesMut::new(), spare_init: 0, lent: 0 }
    }

    /// The bytes read and not yet taken as frames.
    pub fn bytes(&self) -> &BytesMut {
        debug_assert_eq!(self.lent, 0, "room lent to a read is not data");
        &self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives the memory back to the allocator (an idle or drained connection).
    pub fn release(&mut self) {
        self.buf = BytesMut::new();
        self.spare_init = 0;
        self.lent = 0;
    }

    /// Takes the whole frame at the front, if it has arrived.
    pub fn next_frame(&mut self, decoder: &FrameDecoder) -> Result<Option<Bytes>, FrameError> {
        debug_assert_eq!(self.lent, 0, "room lent to a read is not data");
        // Splitting off the front leaves the spare room (and what is known of it) in place.
        decoder.next_frame(&mut self.buf)
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.filled(0);
        let before = self.buf.capacity() - self.buf.len();
        self.buf.extend_from_slice(bytes);
        let after = self.buf.capacity() - self.buf.len();
        self.spare_init = if after + bytes.len() == before { self.spare_init.saturating_sub(bytes.len()) } else { 0 };
    }

    /// Room for a read of up to `want` bytes, past the bytes held; hand the count read to
    /// `filled` before anything else touches the buffer.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        self.filled(0);
        let len = self.buf.len();
        if self.buf.capacity() - len < want {
            self.buf.reserve(want);
            // A new (or compacted) allocation: nothing past `len` is known initialized.
            self.spare_init = 0;
        }
        if self.spare_init < want {
            // SAFETY: `spare_init <= capacity - len`, and those bytes are initialized (the
            // field's invariant); `resize` zeroes the rest.
            unsafe { self.buf.set_len(len + self.spare_init) };
            self.buf.resize(len + want, 0);
            self.spare_init = want;
        } else {
            // SAFETY: as above, with `want <= spare_init`.
            unsafe { self.buf.set_len(len + want) };
        }
        self.lent = want;
        &mut self.buf[len..]
    }

    /// Keeps `n` bytes of the room `spare` gave (the ones read); the rest stays spare.
    pub fn filled(&mut self, n: usize) {
        let start = self.buf.len() - self.lent;
        let n = n.min(self.lent);
        self.buf.truncate(start + n);
        self.spare_init -= n;
        self.lent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn reads_split_frames_and_reuse_the_zeroed_room() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        let wire = [frame(b"hello"), frame(&[7u8; 3000]), frame(b"x")].concat();
        let mut fed = 0;
        let mut frames = Vec::new();
        // Arrives 700 bytes at a time into 4 KiB of room.
        while fed < wire.len() {
            let room = b.spare(4096);
            assert_eq!(room.len(), 4096);
            let n = (wire.len() - fed).min(700);
            room[..n].copy_from_slice(&wire[fed..fed + n]);
            b.filled(n);
            fed += n;
            while let Some(f) = b.next_frame(&decoder).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hello");
        assert_eq!(&frames[1][..], &[7u8; 3000][..]);
        assert_eq!(&frames[2][..], b"x");
        assert!(b.is_empty());
        // The spare room known initialized never exceeds what the allocation has.
        assert!(b.spare_init <= b.capacity() - b.bytes().len());
    }

    #[test]
    fn partial_reads_keep_earlier_bytes_and_extend_copies_in() {
        let mut b = ReadBuffer::new();
        b.extend_from_slice(&[0, 0]);
        let room = b.spare(8);
        room[..3].copy_from_slice(&[0, 5, 1]);
        b.filled(3);
        assert_eq!(&b.bytes()[..], &[0, 0, 0, 5, 1]);
        b.filled(0);
        assert_eq!(b.bytes().len(), 5);
        let room = b.spare(2);
        room.copy_from_slice(&[2, 3]);
        b.filled(2);
        assert_eq!(&b.bytes()[..], &[0, 0, 0, 5, 1, 2, 3]);
        b.release();
        assert!(b.is_empty() && b.capacity() == 0);
    }
}
