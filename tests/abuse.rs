//! Clients that abuse the front door — pipelining without reading, thousands of idle
//! connections from one host, slow-loris frames, oversize frames — while a well-behaved
//! producer and consumer keep working, and memory stays bounded and comes back afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Conn, Kopd, create_topic, encode, fetch, list_offset, produce, record, temp_dir};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, MetadataRequest};
use kafka_protocol::records::Compression;

const IDLE_MS: u64 = 3_000;
const READ_TIMEOUT_MS: u64 = 2_000;

fn start(dir: &std::path::Path, extra: &[&str]) -> Kopd {
    start_with(dir, READ_TIMEOUT_MS, extra)
}

fn start_with(dir: &std::path::Path, read_timeout_ms: u64, extra: &[&str]) -> Kopd {
    let idle = format!("connections.max.idle.ms={IDLE_MS}");
    let read = format!("connections.request.read.timeout.ms={read_timeout_ms}");
    let mut args = vec!["--set", &idle, "--set", &read];
    args.extend_from_slice(extra);
    Kopd::start(dir, 1, &args)
}

/// A well-behaved client on 127.0.0.1: produces a batch and fetches it back, over and over,
/// until stopped. Every request must succeed; the count of rounds is the proof of service.
struct GoodClient {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl GoodClient {
    fn start(addr: SocketAddr, topic: &'static str) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let handle = std::thread::spawn(move || {
            let mut c = Conn::connect(addr);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let records = encode(&[record(0, None, Bytes::from_static(b"good"))], Compression::None);
                let (err, base) = produce(&mut c, topic, 0, records);
                assert_eq!(err, 0, "the good producer is served");
                let (err, hw, bytes) = fetch(&mut c, topic, 0, base);
                assert_eq!(err, 0, "the good consumer is served");
                assert!(hw > base && !bytes.is_empty(), "the good consumer reads what it produced");
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        GoodClient { stop, rounds, handle: Some(handle) }
    }

    /// Waits until the client has completed `n` more rounds (bounded).
    fn makes_progress(&self, n: u64) {
        let from = self.rounds.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.rounds.load(Ordering::Relaxed) < from + n {
            assert!(
                Instant::now() < deadline,
                "the good client stalled at {} rounds",
                self.rounds.load(Ordering::Relaxed)
            );
            assert!(!self.handle.as_ref().unwrap().is_finished(), "the good client failed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("the good client never failed");
        self.rounds.load(Ordering::Relaxed)
    }
}

/// A TCP connection to `to` from the source address `from` (another loopback address, so
/// the abuser is a different host than the good client).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sockaddr(SocketAddrV4::new(from, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(to);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// The server closed `s`: a read returns EOF or a reset (not a timeout).
fn is_closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The server has closed `s` already (checked without waiting).
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

#[test]
fn never_reading_pipeliners_are_bounded_and_memory_returns() {
    let dir = temp_dir("abuse-pipeline");
    let kopd = start(&dir, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    create_topic(&mut c, "big", 1, &[]);
    create_topic(&mut c, "good-1", 1, &[]);
    // 16 MiB of 64 KiB records, so each Fetch answers up to its 1 MiB partition limit.
    let value = Bytes::from(vec![b'v'; 64 << 10]);
    for _ in 0..32 {
        let records: Vec<_> = (0..8).map(|i| record(i, None, value.clone())).collect();
        assert_eq!(produce(&mut c, "big", 0, encode(&records, Compression::None)).0, 0);
    }
    let good = GoodClient::start(kopd.addr(0), "good-1");
    good.makes_progress(5);
    let baseline = kopd.rss_kib();

    // Four connections each pipeline 600 Fetch requests (~56 KB written once) and never read.
    let fetch_req =
        FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_max_bytes(50 << 20).with_topics(vec![
            FetchTopic::default().with_topic(common::name("big")).with_partitions(vec![
                FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
            ]),
        ]);
    let mut pipeliners = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(kopd.addr(0)).unwrap();
        let mut all = Vec::new();
        for i in 0..600 {
            all.extend(Conn::frame(i, 12, &fetch_req));
        }
        s.write_all(&all).unwrap();
        pipeliners.push(s);
    }
    let mut peak = 0;
    for _ in 0..10 {
        good.makes_progress(3);
        peak = peak.max(kopd.rss_kib());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("pipelining abuse: baseline {} MiB, peak {} MiB", mib(baseline), mib(peak));
    // Unbounded, this grew past 1 GiB per connection; bounded, each holds about one
    // connection.max.unwritten.bytes plus one response.
    assert!(peak < baseline + (96 << 10), "RSS {} MiB during the abuse, baseline {} MiB", mib(peak), mib(baseline));
    drop(pipeliners);
    good.makes_progress(10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = kopd.rss_kib();
    while after > baseline + (32 << 10) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = kopd.rss_kib();
    }
    assert!(after < baseline + (32 << 10), "RSS {} MiB after the abuse, baseline {} MiB", mib(after), mib(baseline));
    assert!(good.finish() > 0);
}

#[test]
fn thousands_of_idle_connections_from_one_host_do_not_lock_others_out() {
    let dir = temp_dir("abuse-idle");
    // One core, so every connection lands on the same broker; the abusing host may hold 4000.
    // Silent connections are closed after 10 s here: long enough to count them all first.
    let read_timeout_ms = 10_000;
    let kopd = start_with(
        &dir,
        read_timeout_ms,
        &["--set", "max.connections=6000", "--set", "max.connections.per.ip.overrides=127.0.0.2:4000"],
    );
    let mut c = Conn::connect(kopd.addr(0));
    create_topic(&mut c, "good-2", 1, &[]);
    let good = GoodClient::start(kopd.addr(0), "good-2");
    good.makes_progress(3);
    let baseline = kopd.rss_kib();

    let abuser = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::new();
    let opened = Instant::now();
    for _ in 0..5_100 {
        idle.push(connect_from(abuser, kopd.addr(0)).expect("the kernel accepts the connection"));
    }
    eprintln!("idle abuse: 5100 connections made in {:?}", opened.elapsed());
    good.makes_progress(3);
    // The ones past the per-address limit are closed at once; the rest are held.
    std::thread::sleep(Duration::from_millis(500));
    let closed: Vec<bool> = idle.iter_mut().map(closed_now).collect();
    assert_eq!(closed.iter().filter(|c| **c).count(), 1_100, "connections past the per-address limit of 4000");
    assert!(closed[..4_000].iter().all(|c| !c), "the first 4000 are held");
    let held = kopd.rss_kib();
    eprintln!("idle abuse: baseline {} MiB, with 4000 idle connections {} MiB", mib(baseline), mib(held));
    assert!(held < baseline + (64 << 10), "4000 idle connections cost {} MiB", mib(held - baseline.min(held)));
    // A new client from the good host still gets in and is served.
    let mut fresh = Conn::connect(kopd.addr(0));
    fresh.send(3, &common::api_versions_request()).unwrap();
    drop(fresh);

    // Connections that never send a request are closed after connections.request.read.timeout.ms.
    assert!(opened.elapsed() < Duration::from_millis(read_timeout_ms), "counted before the timeout");
    let wait = Duration::from_millis(read_timeout_ms + 3_000).saturating_sub(opened.elapsed());
    std::thread::sleep(wait);
    let still_open = idle.iter_mut().take(4_000).map(closed_now).filter(|c| !c).count();
    assert_eq!(still_open, 0, "silent connections are closed");
    good.makes_progress(3);
    assert!(good.finish() > 0);
}

#[test]
fn idle_and_slow_loris_connections_are_closed() {
    let dir = temp_dir("abuse-slow");
    let kopd = start(&dir, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    create_topic(&mut c, "good-3", 1, &[]);
    let good = GoodClient::start(kopd.addr(0), "good-3");

    // Completed a request, then silent: closed after connections.max.idle.ms.
    let mut quiet = Conn::connect(kopd.addr(0));
    quiet.send(1, &MetadataRequest::default()).unwrap();
    let since = Instant::now();
    assert!(!is_closed(&mut quiet.stream, Duration::from_millis(IDLE_MS - 1_000)), "not closed before the idle limit");
    assert!(is_closed(&mut quiet.stream, Duration::from_millis(4_000)), "closed after the idle limit");
    assert!(since.elapsed() >= Duration::from_millis(IDLE_MS - 100));

    // Slow loris: announce a 100 MB frame and trickle a byte every 100 ms; the connection is
    // never idle, but the request does not arrive whole in time.
    let mut lorises: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(kopd.addr(0)).unwrap()).collect();
    for s in &mut lorises {
        s.write_all(&(100_000_000u32).to_be_bytes()).unwrap();
    }
    let started = Instant::now();
    let mut closed = vec![false; lorises.len()];
    while closed.iter().any(|c| !c) && started.elapsed() < Duration::from_secs(10) {
        for (s, done) in lorises.iter_mut().zip(closed.iter_mut()) {
            if !*done && (s.write_all(b"x").is_err() || is_closed(s, Duration::from_millis(1))) {
                *done = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed.iter().all(|c| *c), "slow-loris connections are closed");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(READ_TIMEOUT_MS - 200), "closed only at the limit ({took:?})");

    // Oversize frames are refused at once.
    let mut big = TcpStream::connect(kopd.addr(0)).unwrap();
    big.write_all(&(200_000_000u32).to_be_bytes()).unwrap();
    assert!(is_closed(&mut big, Duration::from_secs(5)));

    good.makes_progress(3);
    let mut c = Conn::connect(kopd.addr(0));
    assert_eq!(list_offset(&mut c, "good-3", 0, -1).0, 0);
    assert!(good.finish() > 0);
}
