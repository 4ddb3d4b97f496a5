//! Outgoing TCP connections split into a read half and a write half (so one task can read
//! responses while another writes requests), with vectored writes: a batch of frames goes out
//! in one `sendmsg` without first copying them into one buffer.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};

use super::TcpStream;

/// At most this many slices per `sendmsg` (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 1024;

/// Connects to `addr` within `timeout`, with TCP_NODELAY (requests are batched by the caller).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<(TcpReader, TcpWriter)> {
    let timeout = timeout.max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(addr, timeout).await.map_err(io::Error::from)?;
    stream.set_nodelay(true).map_err(io::Error::from)?;
    let s = Rc::new(RefCell::new(stream));
    Ok((TcpReader { s: s.clone() }, TcpWriter { s }))
}

/// The read half. Each poll borrows the stream only for the poll itself, so the halves never
/// contend: the executor runs one task at a time.
pub struct TcpReader {
    s: Rc<RefCell<TcpStream>>,
}

impl TcpReader {
    /// Reads what is available (at least one byte, at most `max`) onto the end of `buf`;
    /// `Ok(0)` at end of stream.
    pub async fn read_buf(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let start = buf.len();
        let want = buf.capacity().saturating_sub(start).clamp(4096, max.max(4096));
        buf.resize(start + want, 0);
        let r = futures_lite::future::poll_fn(|cx| {
            let mut s = self.s.borrow_mut();
            std::pin::Pin::new(&mut *s).poll_read(cx, &mut buf[start..])
        })
        .await;
        let n = *r.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        r
    }

    /// Shuts the connection down both ways, which also ends the other half's pending I/O.
    pub fn shutdown(&self) {
        shutdown(&self.s);
    }
}

/// The write half.
pub struct TcpWriter {
    s: Rc<RefCell<TcpStream>>,
}

impl TcpWriter {
    /// Writes every slice, in order, with as few syscalls as the socket buffer allows.
    pub async fn write_all_vectored(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        let fd = self.s.borrow().as_raw_fd();
        let s = &self.s;
        send_all(fd, bufs, |cx, cur| {
            let mut s = s.borrow_mut();
            std::pin::Pin::new(&mut *s).poll_write(cx, cur)
        })
        .await
    }

    /// Shuts the connection down both ways, which also ends a read pending on the other half.
    pub fn shutdown(&self) {
        shutdown(&self.s);
    }
}

fn shutdown(s: &RefCell<TcpStream>) {
    // SAFETY: shutdown(2) on a socket these halves own; errors (already closed) don't matter.
    unsafe { libc::shutdown(s.borrow().as_raw_fd(), libc::SHUT_RDWR) };
}

/// Reads what is available (at least one byte, at most `buf.len()`) into memory that need
/// not be initialized, returning how many bytes were written at its start; `Ok(0)` at end of
/// stream. A server's read buffers are filled this way, so their room is never zeroed first.
/// Dropped while waiting, it has consumed nothing: bytes are taken only by the `recv` that
/// returns them, in the same poll.
pub async fn recv_uninit(stream: &TcpStream, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    let fd = stream.as_raw_fd();
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which is valid for writes
        // of that many bytes; `MaybeUninit` memory needs no initialization before.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => {}
            io::ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
        // Nothing there yet: wait for data with a one-byte peek (the executor's own wait), then
        // take it with recv; a peek of nothing is the end of the stream.
        let mut probe = [0u8; 1];
        if stream.peek(&mut probe).await.map_err(io::Error::from)? == 0 {
            return Ok(0);
        }
    }
}

/// Writes every slice of `bufs` to `stream`, in order, with as few syscalls as the socket
/// buffer allows (a server's response frames with stored batches referenced, not copied).
pub async fn write_all_vectored(stream: &mut TcpStream, bufs: &[&[u8]]) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    send_all(fd, bufs, |cx, cur| std::pin::Pin::new(&mut *stream).poll_write(cx, cur)).await
}

/// `sendmsg` of up to [`MAX_IOV`] slices at a time, non-blocking; when the socket buffer is
/// full, `wait_write` writes the current slice's next bytes once there is room.
async fn send_all(
    fd: std::os::fd::RawFd,
    bufs: &[&[u8]],
    mut wait_write: impl FnMut(&mut std::task::Context<'_>, &[u8]) -> std::task::Poll<io::Result<usize>>,
) -> io::Result<()> {
    let (mut i, mut off) = (0usize, 0usize);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(MAX_IOV));
    while i < bufs.len() {
        if off == bufs[i].len() {
            i += 1;
            off = 0;
            continue;
        }
        iov.clear();
        for (k, b) in bufs[i..].iter().enumerate().take(MAX_IOV) {
            let b = if k == 0 { &b[off..] } else { b };
            if !b.is_empty() {
                iov.push(libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() });
            }
        }
        // SAFETY: a zeroed msghdr is valid; the iovecs point into `bufs`, alive for the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: sendmsg on a socket the caller owns, with a msghdr built above.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        let mut sent = if n >= 0 {
            n as usize
        } else {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => 0,
                io::ErrorKind::WouldBlock => {
                    // The socket buffer is full: let the executor wait for room while it
                    // writes the current slice's next bytes, then go back to batches.
                    let cur = &bufs[i][off..];
                    let w = futures_lite::future::poll_fn(|cx| wait_write(cx, cur)).await?;
                    if w == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    w
                }
                _ => return Err(e),
            }
        };
        while sent > 0 && i < bufs.len() {
            let left = bufs[i].len() - off;
            if sent >= left {
                sent -= left;
                i += 1;
                off = 0;
            } else {
                off += sent;
                sent = 0;
            }
        }
    }
    Ok(())
}
