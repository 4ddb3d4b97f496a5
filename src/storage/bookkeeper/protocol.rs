//! BookKeeper's v2 binary wire protocol (the one Pulsar uses): request headers and response
//! parsing. Every frame is `[u32 length][length bytes]`; the first int of a frame is
//! `version << 24 | opcode << 16 | flags`.
//!
//! v2 carries no transaction id: a response names (opcode, ledger, entry) and is matched to
//! the request by those.

use bytes::{Buf, Bytes, BytesMut};

use super::digest::MASTER_KEY_LEN;

pub const PROTOCOL_VERSION: u8 = 2;
pub const OP_ADD: u8 = 1;
pub const OP_READ: u8 = 2;

pub const FLAG_DO_FENCING: u16 = 0x1;
pub const FLAG_RECOVERY_ADD: u16 = 0x2;

/// Entry id that asks a bookie for the last entry it has of a ledger.
pub const LAST_ADD_CONFIRMED: i64 = -1;

/// Bookies refuse frames above 5 MB (`nettyMaxFrameSizeBytes`); so does kopd, both ways.
pub const MAX_FRAME: usize = 5 * 1024 * 1024;

/// Bytes before the stored entry in an add request: length, header, master key.
pub const ADD_PREFIX_LEN: usize = 4 + 4 + MASTER_KEY_LEN;

/// v2 return codes.
pub mod rc {
    pub const EOK: i32 = 0;
    pub const ENOLEDGER: i32 = 1;
    pub const ENOENTRY: i32 = 2;
    pub const EBADREQ: i32 = 100;
    pub const EIO: i32 = 101;
    pub const EUA: i32 = 102;
    pub const EBADVERSION: i32 = 103;
    pub const EFENCED: i32 = 104;
    pub const EREADONLY: i32 = 105;
    pub const ETOOMANYREQUESTS: i32 = 106;
    pub const EUNKNOWNLEDGERSTATE: i32 = 107;

    pub fn name(rc: i32) -> &'static str {
        match rc {
            EOK => "EOK",
            ENOLEDGER => "ENOLEDGER",
            ENOENTRY => "ENOENTRY",
            EBADREQ => "EBADREQ",
            EIO => "EIO",
            EUA => "EUA",
            EBADVERSION => "EBADVERSION",
            EFENCED => "EFENCED",
            EREADONLY => "EREADONLY",
            ETOOMANYREQUESTS => "ETOOMANYREQUESTS",
            EUNKNOWNLEDGERSTATE => "EUNKNOWNLEDGERSTATE",
            _ => "unknown",
        }
    }
}

pub fn header(op: u8, flags: u16) -> u32 {
    (u32::from(PROTOCOL_VERSION) << 24) | (u32::from(op) << 16) | u32::from(flags)
}

/// The bytes before the stored entry of an add: `[len][header][master key]`, where `entry_len`
/// is the stored entry's length (32-byte header + digest + payload).
pub fn add_prefix(flags: u16, master_key: &[u8; MASTER_KEY_LEN], entry_len: usize) -> [u8; ADD_PREFIX_LEN] {
    let mut out = [0u8; ADD_PREFIX_LEN];
    let len = (4 + MASTER_KEY_LEN + entry_len) as u32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    out[4..8].copy_from_slice(&header(OP_ADD, flags).to_be_bytes());
    out[8..].copy_from_slice(master_key);
    out
}

/// A whole read request frame; a fencing read carries the master key.
pub fn read_request(ledger: i64, entry: i64, fence: Option<&[u8; MASTER_KEY_LEN]>) -> Vec<u8> {
    let flags = if fence.is_some() { FLAG_DO_FENCING } else { 0 };
    let body = 4 + 8 + 8 + fence.map_or(0, |k| k.len());
    let mut out = Vec::with_capacity(4 + body);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&header(OP_READ, flags).to_be_bytes());
    out.extend_from_slice(&ledger.to_be_bytes());
    out.extend_from_slice(&entry.to_be_bytes());
    if let Some(k) = fence {
        out.extend_from_slice(k);
    }
    out
}

/// A decoded response; `body` is the stored entry of a successful read (empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub op: u8,
    pub rc: i32,
    pub ledger: i64,
    pub entry: i64,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the 5 MB limit")]
    TooLarge(usize),
    #[error("malformed response frame: {0}")]
    Malformed(&'static str),
}

/// Takes one response out of `buf` if a whole frame is there (`Ok(None)`: need more bytes).
/// The body is split off the buffer, not copied.
pub fn decode_response(buf: &mut BytesMut) -> Result<Option<Response>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < 24 {
        return Err(FrameError::Malformed("shorter than a response header"));
    }
    if buf.len() < 4 + len {
        // Room for the rest, so the next read fills it without reallocating piecemeal.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(len);
    let h = frame.get_u32();
    let version = (h >> 24) as u8;
    let op = ((h >> 16) & 0xff) as u8;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Malformed("not a v2 response"));
    }
    let rc = frame.get_i32();
    let ledger = frame.get_i64();
    let entry = frame.get_i64();
    let body = match op {
        OP_ADD => Bytes::new(),
        OP_READ => frame.freeze(),
        _ => return Err(FrameError::Malformed("unexpected opcode")),
    };
    Ok(Some(Response { op, rc, ledger, entry, body }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_pack_version_op_and_flags() {
        assert_eq!(header(OP_ADD, 0), 0x0201_0000);
        assert_eq!(header(OP_ADD, FLAG_RECOVERY_ADD), 0x0201_0002);
        assert_eq!(header(OP_READ, FLAG_DO_FENCING), 0x0202_0001);
    }

    #[test]
    fn add_prefix_counts_header_key_and_entry() {
        let key = [7u8; 20];
        let p = add_prefix(FLAG_RECOVERY_ADD, &key, 100);
        assert_eq!(&p[0..4], &(4u32 + 20 + 100).to_be_bytes());
        assert_eq!(&p[4..8], &[2, 1, 0, 2]);
        assert_eq!(&p[8..], &key);
    }

    #[test]
    fn read_requests_with_and_without_fencing() {
        let r = read_request(5, 9, None);
        assert_eq!(r.len(), 24);
        assert_eq!(&r[0..4], &20u32.to_be_bytes());
        assert_eq!(&r[4..8], &[2, 2, 0, 0]);
        assert_eq!(&r[8..16], &5i64.to_be_bytes());
        assert_eq!(&r[16..24], &9i64.to_be_bytes());
        let key = [1u8; 20];
        let f = read_request(5, LAST_ADD_CONFIRMED, Some(&key));
        assert_eq!(f.len(), 44);
        assert_eq!(&f[0..4], &40u32.to_be_bytes());
        assert_eq!(&f[4..8], &[2, 2, 0, 1]);
        assert_eq!(&f[16..24], &(-1i64).to_be_bytes());
        assert_eq!(&f[24..], &key);
    }

    fn response(op: u8, rc: i32, ledger: i64, entry: i64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((24 + body.len()) as u32).to_be_bytes());
        v.extend_from_slice(&header(op, 0).to_be_bytes());
        v.extend_from_slice(&rc.to_be_bytes());
        v.extend_from_slice(&ledger.to_be_bytes());
        v.extend_from_slice(&entry.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_pipelined_responses_split_anywhere() {
        let mut wire = response(OP_ADD, rc::EOK, 3, 0, b"");
        wire.extend(response(OP_READ, rc::EOK, 3, 1, b"stored entry"));
        wire.extend(response(OP_READ, rc::ENOENTRY, 3, 2, b""));
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(r) = decode_response(&mut buf).unwrap() {
                got.push(r);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(r) = decode_response(&mut buf).unwrap() {
                got.push(r);
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!((got[0].op, got[0].rc, got[0].ledger, got[0].entry), (OP_ADD, 0, 3, 0));
            assert_eq!(&got[1].body[..], b"stored entry");
            assert_eq!((got[2].rc, got[2].entry, got[2].body.len()), (rc::ENOENTRY, 2, 0));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_oversized_and_malformed_frames() {
        let mut big = BytesMut::from(&((MAX_FRAME + 1) as u32).to_be_bytes()[..]);
        assert_eq!(decode_response(&mut big), Err(FrameError::TooLarge(MAX_FRAME + 1)));
        let mut short = BytesMut::from(&10u32.to_be_bytes()[..]);
        assert!(matches!(decode_response(&mut short), Err(FrameError::Malformed(_))));
        let mut v3 = BytesMut::from(&response(OP_ADD, 0, 1, 1, b"")[..]);
        v3[4] = 3;
        assert!(matches!(decode_response(&mut v3), Err(FrameError::Malformed(_))));
        let mut op = BytesMut::from(&response(OP_ADD, 0, 1, 1, b"")[..]);
        op[5] = 9;
        assert!(matches!(decode_response(&mut op), Err(FrameError::Malformed(_))));
    }
}
