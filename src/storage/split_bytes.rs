//! Bytes in at most two pieces, read as their concatenation: an entry (or a stored batch)
//! whose large record section stayed in the buffer the produce request arrived in, behind a
//! small piece of its own (the entry's metadata and the batch's edited header). Writers send
//! the pieces as they are (DMA buffer, socket iovecs), so the record bytes are never copied
//! between the request and the disk or the bookies.

use bytes::Bytes;

#[derive(Clone, Debug, Default)]
pub struct SplitBytes {
    front: Bytes,
    /// Empty when the bytes are in one piece.
    back: Bytes,
}

impl SplitBytes {
    pub fn new(front: Bytes, back: Bytes) -> Self {
        if front.is_empty() { SplitBytes { front: back, back: Bytes::new() } } else { SplitBytes { front, back } }
    }

    pub fn len(&self) -> usize {
        self.front.len() + self.back.len()
    }

    pub fn is_empty(&self) -> bool {
        self.front.is_empty()
    }

    /// The first piece (all of the bytes when they are in one).
    pub fn front(&self) -> &Bytes {
        &self.front
    }

    /// The non-empty pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &Bytes> {
        [&self.front, &self.back].into_iter().filter(|p| !p.is_empty())
    }

    /// The bytes from `at` on (without a copy). `at` must lie within the first piece.
    pub fn slice_from(&self, at: usize) -> SplitBytes {
        debug_assert!(at <= self.front.len(), "a cut inside the second piece");
        let at = at.min(self.front.len());
        SplitBytes::new(self.front.slice(at..), self.back.clone())
    }

    /// The bytes in one piece: no copy when they already are, else one.
    pub fn contiguous(&self) -> Bytes {
        if self.back.is_empty() {
            return self.front.clone();
        }
        let mut joined = Vec::with_capacity(self.len());
        joined.extend_from_slice(&self.front);
        joined.extend_from_slice(&self.back);
        Bytes::from(joined)
    }

    /// The CRC-32C of the concatenation.
    pub fn crc32c(&self) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&self.front), &self.back)
    }
}

impl From<Bytes> for SplitBytes {
    fn from(b: Bytes) -> Self {
        SplitBytes { front: b, back: Bytes::new() }
    }
}

impl From<Vec<u8>> for SplitBytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl PartialEq for SplitBytes {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.contiguous() == other.contiguous()
    }
}

impl Eq for SplitBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_concatenation() {
        let s = SplitBytes::new(Bytes::from_static(b"head"), Bytes::from_static(b"-records"));
        assert_eq!(s.len(), 12);
        assert_eq!(&s.contiguous()[..], b"head-records");
        assert_eq!(s.crc32c(), crc32c::crc32c(b"head-records"));
        assert_eq!(s.pieces().count(), 2);
        let tail = s.slice_from(2);
        assert_eq!(&tail.contiguous()[..], b"ad-records");
        assert_eq!(s.slice_from(4).pieces().count(), 1, "an emptied first piece is dropped");
        assert_eq!(&s.slice_from(4).front()[..], b"-records");
        assert_eq!(s, SplitBytes::from(Bytes::from_static(b"head-records")));
    }

    #[test]
    fn one_piece_is_not_copied() {
        let b = Bytes::from(vec![1u8; 100]);
        let s = SplitBytes::from(b.clone());
        assert_eq!(s.contiguous().as_ptr(), b.as_ptr());
        assert!(SplitBytes::default().is_empty());
        assert_eq!(SplitBytes::default().pieces().count(), 0);
    }
}
