//! A connection's read buffer: bytes read but not yet split off as frames, then spare room
//! for the next read. Reads go straight into the uninitialized room (`runtime::tcp::recv_uninit`),
//! so the room is never zeroed: a new allocation costs nothing before bytes arrive in it (frames
//! kept by produce, a large batch's records in the tail cache, make the buffer take new ones).

use std::io;

use bytes::{Bytes, BytesMut};

use super::frame::{FrameDecoder, FrameError};
use crate::runtime::{self, TcpStream};

pub(super) struct ReadBuffer {
    buf: BytesMut,
    /// Size of the allocation the buffered bytes live in: what a frame split off now keeps
    /// alive for as long as any slice of it is kept (a produce's large batch, in the tail cache).
    allocation: usize,
}

impl ReadBuffer {
    pub fn new() -> Self {
        Self { buf: BytesMut::new(), allocation: 0 }
    }

    /// The bytes read and not yet taken as frames.
    pub fn bytes(&self) -> &BytesMut {
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
        self.allocation = 0;
    }

    /// Takes the whole frame at the front, if it has arrived.
    pub fn next_frame(&mut self, decoder: &FrameDecoder) -> Result<Option<Bytes>, FrameError> {
        decoder.next_frame(&mut self.buf)
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Room for `want` more bytes past the data.
    fn reserve(&mut self, want: usize) {
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
            // Taken back whole (the data moved to its front) or new: either way the data now
            // starts the allocation, which `capacity` spans.
            self.allocation = self.buf.capacity();
        }
    }

    /// One read of at most `want` bytes from `stream` onto the end of the data; `Ok(0)` at end
    /// of stream. Dropped before it returns, it leaves the buffer as it was.
    pub async fn read_from(&mut self, stream: &TcpStream, want: usize) -> io::Result<usize> {
        self.reserve(want);
        let room = &mut self.buf.spare_capacity_mut()[..want];
        let n = runtime::tcp::recv_uninit(stream, room).await?;
        let len = self.buf.len() + n.min(want);
        // SAFETY: `recv_uninit` wrote the first `n` bytes of the room past the data (and never
        // more than the room), so the first `len` bytes are initialized.
        unsafe { self.buf.set_len(len) };
        Ok(n)
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
    fn splits_frames_that_arrive_in_pieces() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        let wire = [frame(b"hello"), frame(&[7u8; 3000]), frame(b"x")].concat();
        let mut frames = Vec::new();
        for piece in wire.chunks(700) {
            b.extend_from_slice(piece);
            while let Some(f) = b.next_frame(&decoder).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(&frames[0][..], b"hello");
        assert_eq!(&frames[1][..], &[7u8; 3000][..]);
        assert_eq!(&frames[2][..], b"x");
        assert!(b.is_empty());
        b.release();
        assert!(b.is_empty() && b.capacity() == 0 && b.allocation() == 0);
    }

    #[test]
    fn frames_know_the_allocation_they_keep_alive() {
        let decoder = FrameDecoder::new(1 << 20);
        let mut b = ReadBuffer::new();
        let wire = [frame(&[1u8; 10_000]), frame(&[2u8; 100_000])].concat();
        let mut seen = Vec::new();
        for piece in wire.chunks(65_536) {
            b.extend_from_slice(piece);
            while let Some(f) = b.next_frame(&decoder).unwrap() {
                // The frame lies inside an allocation of the size reported.
                assert!(b.allocation() >= f.len(), "{} in {}", f.len(), b.allocation());
                seen.push((f, b.allocation()));
            }
        }
        assert_eq!(seen.len(), 2);
        // The frames are kept (as the tail cache would): the buffer cannot take its room back,
        // so the large frame grew into a new allocation, no larger than its bytes needed.
        assert!(seen[1].1 >= 100_004 && seen[1].1 < 4 * 100_004, "{}", seen[1].1);
    }

    #[test]
    fn reads_from_a_socket_into_the_room() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 << 10)
            .make()
            .expect("executor");
        ex.run(async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let wire = [frame(b"first"), frame(&[9u8; 200_000])].concat();
            let sent = wire.clone();
            let writer = glommio::spawn_local(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                futures_lite::AsyncWriteExt::write_all(&mut s, &sent).await.unwrap();
            });
            let stream = listener.accept().await.unwrap();
            let (decoder, mut b, mut frames) = (FrameDecoder::new(1 << 20), ReadBuffer::new(), Vec::new());
            while frames.len() < 2 {
                assert!(b.read_from(&stream, 65_536).await.unwrap() > 0);
                while let Some(f) = b.next_frame(&decoder).unwrap() {
                    frames.push(f);
                }
            }
            writer.await;
            assert_eq!(frames.concat(), [&wire[4..9], &wire[13..]].concat());
            // The writer is gone: the end of the stream reads as 0.
            assert_eq!(b.read_from(&stream, 4096).await.unwrap(), 0);
        });
    }
}
