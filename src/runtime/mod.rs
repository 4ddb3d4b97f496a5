//! The runtime seam: everything kopd needs from its executor, in one place.
//!
//! Handlers and the network layer use these functions and types rather than glommio's, so
//! the executor could be replaced by touching only this module.

pub mod alloc;
mod core_bytes;
pub mod tcp;

pub use core_bytes::{core_bytes, leaked_core_buffers};

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

pub use glommio::net::TcpStream;

/// A listening socket owned by one core.
pub type TcpListener = glommio::net::TcpListener;

/// How to start one core's executor.
pub struct CoreSpec {
    pub index: usize,
    /// CPU to pin to, or `None` to let the scheduler place it.
    pub cpu: Option<usize>,
    /// io_uring registered-buffer bytes (counts against RLIMIT_MEMLOCK).
    pub io_memory: usize,
    /// Busy-poll this long before sleeping when idle (only for a pinned core; zero = sleep at once).
    pub spin_before_park: Duration,
}

/// A running core; `join` waits for its main future to finish.
pub struct CoreHandle<T: Send + 'static> {
    inner: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> CoreHandle<T> {
    pub fn join(self) -> io::Result<T> {
        self.inner.join().map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Starts a pinned executor thread running `main`.
pub fn start_core<G, F, T>(spec: CoreSpec, main: G) -> io::Result<CoreHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match spec.cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let mut builder = glommio::LocalExecutorBuilder::new(placement)
        .name(&format!("kopd-core-{}", spec.index))
        .io_memory(spec.io_memory);
    if !spec.spin_before_park.is_zero() {
        builder = builder.spin_before_park(spec.spin_before_park);
    }
    let inner = builder.spawn(main).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(CoreHandle { inner })
}

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// CPU ids this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect()).unwrap_or_default()
}

/// Runs `fut` in the background on the current core.
pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    glommio::spawn_local(fut).detach();
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// `Some(output)` if `fut` finishes within `d`.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// Binds a listener without SO_REUSEPORT (so a second server on the same port fails loudly).
/// Called before the cores start; the socket is handed to its core with [`adopt_listener`].
///
/// After a crash the kernel tears down the dead process's io_uring asynchronously, and its
/// pending accept keeps the old listening socket alive for a moment; so "address in use" is
/// retried for up to `patience` before it counts.
pub fn bind_listener(
    addr: std::net::SocketAddr,
    backlog: u32,
    patience: Duration,
) -> io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(l) => {
                // std listens with a backlog of 128; listening again sets the queue length.
                let backlog = backlog.min(i32::MAX as u32) as i32;
                // SAFETY: listen(2) on a socket this function owns.
                if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), backlog) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                return Ok(l);
            }
            other => return other,
        }
    }
}

/// Turns a bound std listener into this core's async listener. Must run on the core.
pub fn adopt_listener(l: std::net::TcpListener) -> TcpListener {
    // SAFETY: the fd comes from a live, bound, listening socket whose ownership moves here.
    unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) }
}

/// Raises the soft limit on open files to the hard limit (each Kafka connection is a file
/// descriptor, and `max.connections` defaults to thousands). Returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Creates `path` if needed and takes an exclusive, non-blocking `flock` on it: two processes
/// must never share a data directory. The lock lasts as long as the returned file is open.
pub fn lock_exclusively(path: &std::path::Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    // SAFETY: flock on a descriptor owned by `file`.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}
