//! A connection's read buffer: bytes read but not yet split off as frames, then spare room
//! for the next read. A socket read needs initialized memory; the spare room is zeroed once
//! per allocation instead of before every read (zeroing a 64 KiB chunk per read, while a
//! large request arrives in many small reads, was a large part of produce's instructions).

use bytes::{Bytes, BytesMut};

use super::frame::{FrameDecoder, FrameError};

pub(super) struct ReadBuffer {
    buf: BytesMut,
    /// The address where the initialized prefix of `buf`'s allocation ends: every byte of the
    /// allocation before it was written (read into, copied in, or zeroed) since it was made.
    /// Splitting frames off the front, reading and truncating do not move it. Growing either
    /// keeps the allocation (moving the data to its front, or extending it in place: the prefix
    /// stays initialized) or moves to a new one, disjoint from the old (both are live while the
    /// bytes are copied), where `spare_init` no longer finds this address inside its room.
    init_end: usize,
    /// The room `spare` last gave out, counted in `buf.len()` until `filled`.
    lent: usize,
    /// Bytes zeroed so far (what this type exists to keep low).
    zeroed: usize,
    /// Size of the allocation the buffered bytes live in: what a frame split off now keeps
    /// alive for as long as any slice of it is kept (a produce's large batch, in the tail cache).
    allocation: usize,
}

impl ReadBuffer {
    pub fn new() -> Self {
        Self { buf: BytesMut::new(), init_end: 0, lent: 0, zeroed: 0, allocation: 0 }
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

    /// The size of the allocation that frames split off now are slices of.
    pub fn allocation(&self) -> usize {
        self.allocation
    }

    /// Gives the memory back to the allocator (an idle or drained connection).
    pub fn release(&mut self) {
        self.buf = BytesMut::new();
        self.init_end = 0;
        self.lent = 0;
        self.allocation = 0;
    }

    /// Takes the whole frame at the front, if it has arrived.
    pub fn next_frame(&mut self, decoder: &FrameDecoder) -> Result<Option<Bytes>, FrameError> {
        // Room lent to a read that was given up (see `abandon_read`) is not data.
        self.filled(0);
        // Splitting off the front leaves the spare room (and what is known of it) in place.
        decoder.next_frame(&mut self.buf)
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.filled(0);
        let at = self.buf.as_ptr();
        self.buf.extend_from_slice(bytes);
        if self.buf.as_ptr() != at {
            self.allocation = self.buf.capacity();
        }
        let end = self.data_end();
        self.init_end = self.init_end.max(end);
        if self.spare_init() == 0 {
            self.init_end = end;
        }
    }

    fn data_end(&self) -> usize {
        self.buf.as_ptr() as usize + self.buf.len()
    }

    /// How many bytes past the data are initialized, in the current allocation.
    fn spare_init(&self) -> usize {
        let end = self.data_end();
        let room_end = self.buf.as_ptr() as usize + self.buf.capacity();
        if (end..=room_end).contains(&self.init_end) { self.init_end - end } else { 0 }
    }

    /// Room for a read of up to `want` bytes, past the bytes held; hand the count read to
    /// `filled` before anything else touches the buffer.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        self.filled(0);
        let len = self.buf.len();
        if self.buf.capacity() - len < want {
            self.buf.reserve(want);
            // Grown in place, moved to the front of its own allocation, or copied to a new
            // one: either way the data now starts the allocation, which `capacity` spans.
            self.allocation = self.buf.capacity();
        }
        let init = self.spare_init();
        if init < want {
            // SAFETY: the `init` bytes past the data lie before `init_end` in the current
            // allocation, so they are initialized (see `init_end`); `resize` zeroes the rest.
            unsafe { self.buf.set_len(len + init) };
            self.buf.resize(len + want, 0);
            self.zeroed += want - init;
            self.init_end = self.data_end();
        } else {
            // SAFETY: as above, with `want <= init`.
            unsafe { self.buf.set_len(len + want) };
        }
        self.lent = want;
        &mut self.buf[len..]
    }

    /// Forgets the room `spare` lent to a read that was given up before it returned (a read
    /// raced against something else): none of it is data.
    pub fn abandon_read(&mut self) {
        self.filled(0);
    }

    /// Keeps `n` bytes of the room `spare` gave (the ones read); the rest stays spare.
    pub fn filled(&mut self, n: usize) {
        let start = self.buf.len() - self.lent;
        self.buf.truncate(start + n.min(self.lent));
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
        assert!(b.spare_init() <= b.capacity() - b.bytes().len());
    }

    #[test]
    fn room_freed_by_taken_frames_is_not_zeroed_again() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        for round in 0..5 {
            let room = b.spare(4096);
            room[..4].copy_from_slice(&4092u32.to_be_bytes());
            room[4..].fill(round);
            b.filled(4096);
            let f = b.next_frame(&decoder).unwrap().expect("a whole frame");
            assert!(f.iter().all(|x| *x == round));
            drop(f);
        }
        // The first round zeroed the room; later ones reuse it (the frame is gone, so the
        // buffer takes its allocation back in place).
        assert_eq!(b.zeroed, 4096);
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

    #[test]
    fn a_read_given_up_leaves_only_the_data() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        b.extend_from_slice(&frame(b"one")[..5]);
        // A read is lent room, then dropped before it returns (it lost a race).
        let room = b.spare(4096);
        room[..4].copy_from_slice(b"junk");
        b.abandon_read();
        assert_eq!(b.bytes().len(), 5, "the lent room is not data");
        let rest = &frame(b"one")[5..];
        let room = b.spare(16);
        room[..rest.len()].copy_from_slice(rest);
        b.filled(rest.len());
        assert_eq!(&b.next_frame(&decoder).unwrap().expect("frame")[..], b"one");
        // Even without abandon_read, taking frames never reads lent room as data.
        b.spare(64);
        assert!(b.next_frame(&decoder).unwrap().is_none());
        assert!(b.is_empty());
    }

    #[test]
    fn frames_know_the_allocation_they_keep_alive() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        assert_eq!(b.allocation(), 0);
        let wire = [frame(&[1u8; 10_000]), frame(&[2u8; 100_000])].concat();
        let mut fed = 0;
        let mut seen = Vec::new();
        while fed < wire.len() {
            let want = (wire.len() - fed).clamp(4096, 65_536);
            let room = b.spare(want);
            let n = (wire.len() - fed).min(room.len());
            room[..n].copy_from_slice(&wire[fed..fed + n]);
            b.filled(n);
            fed += n;
            while let Some(f) = b.next_frame(&decoder).unwrap() {
                // The frame lies inside an allocation of the size reported.
                assert!(b.allocation() >= f.len(), "{} in {}", f.len(), b.allocation());
                seen.push((f, b.allocation()));
            }
        }
        assert_eq!(seen.len(), 2);
        // The frames are kept (as the tail cache would): the buffer cannot take its room back,
        // so the large frame grew into a new allocation, no larger than its reads needed.
        assert!(seen[1].1 >= 100_004 && seen[1].1 < 4 * 100_004, "{}", seen[1].1);
        b.release();
        assert_eq!(b.allocation(), 0);
    }
}
