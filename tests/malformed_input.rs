//! Hostile and broken input: every bad frame closes only its own connection, the server keeps
//! serving others, and memory stays flat.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Conn, Kopd, temp_dir};
use kafka_protocol::messages::MetadataRequest;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn header(key: i16, version: i16, correlation: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&correlation.to_be_bytes());
    h.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    h
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// The i-th malformed input: a different kind of breakage for each residue.
fn malformed(i: u64, rng: &mut XorShift) -> Vec<u8> {
    match i % 8 {
        // Random bytes, random length prefix included.
        0 => (0..(rng.next() % 64 + 1)).map(|_| rng.next() as u8).collect(),
        // A 2 GiB frame size.
        1 => vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0],
        // A negative frame size.
        2 => vec![0xff, 0xff, 0xff, 0xf0],
        // Unknown API key.
        3 => framed(&header(9999, 0, 7)),
        // Known API at a version no broker serves.
        4 => framed(&header(3, 99, 7)),
        // Metadata v1 whose topic array claims 2^31-1 entries.
        5 => {
            let mut b = header(3, 1, 7);
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            framed(&b)
        }
        // Frame shorter than a request header.
        6 => framed(&[0, 3, 0]),
        // Truncated: announces 1000 bytes, sends 10, then the client goes away.
        _ => {
            let mut b = 1000u32.to_be_bytes().to_vec();
            b.extend_from_slice(&header(18, 0, 1)[..10]);
            b
        }
    }
}

/// Sends one malformed input on a new connection, ends the client's side (so a partial frame
/// is seen as truncated) and waits until the server closes the connection.
fn send_malformed(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 256];
    for _ in 0..20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn healthy_round_trip(conn: &mut Conn) {
    let v = conn.send(3, &common::api_versions_request()).expect("ApiVersions on healthy connection");
    assert_eq!(v.error_code, 0);
    let m = conn.send(12, &MetadataRequest::default()).expect("Metadata on healthy connection");
    assert_eq!(m.brokers.len(), 2);
}

#[test]
fn ten_thousand_malformed_frames_leave_kopd_serving_with_flat_memory() {
    let dir = temp_dir("malformed");
    let mut kopd = Kopd::start(&dir, 2, &[]);
    let mut healthy: Vec<Conn> = (0..2).map(|c| Conn::connect(kopd.addr(c))).collect();
    for c in &mut healthy {
        healthy_round_trip(c);
    }

    let total: u64 = 10_000;
    let threads: u64 = 4;
    let mut rss_after_warmup = 0;
    // Warm-up first (allocator pools, connection buffers), then the measured bulk.
    for (phase, count) in [(0u64, 1_000u64), (1, total - 1_000)] {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let addr = kopd.addr((t % 2) as u16);
                std::thread::spawn(move || {
                    let mut rng = XorShift(0x9e3779b97f4a7c15 ^ (t + 1) ^ (phase << 32));
                    for i in 0..count / threads {
                        send_malformed(addr, &malformed(i * threads + t, &mut rng));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("sender thread");
        }
        assert!(kopd.is_running(), "kopd died under malformed input");
        for c in &mut healthy {
            healthy_round_trip(c);
        }
        if phase == 0 {
            rss_after_warmup = kopd.rss_kib();
        }
    }
    let rss_end = kopd.rss_kib();
    assert!(rss_after_warmup > 0);
    assert!(
        rss_end < rss_after_warmup + 16 * 1024,
        "RSS grew from {rss_after_warmup} KiB to {rss_end} KiB over 9,000 malformed frames"
    );
    // New connections still work too.
    healthy_round_trip(&mut Conn::connect(kopd.addr(1)));
    assert!(kopd.stop().success());
}

#[test]
fn bad_frame_closes_only_its_connection() {
    let dir = temp_dir("isolation");
    let kopd = Kopd::start(&dir, 2, &[]);
    let mut good = Conn::connect(kopd.addr(0));
    healthy_round_trip(&mut good);
    let mut bad = Conn::connect(kopd.addr(0));
    bad.stream.write_all(&framed(&header(9999, 0, 1))).unwrap();
    assert!(bad.closed_by_server(), "unknown API key closes the connection");
    let mut bad = Conn::connect(kopd.addr(0));
    bad.stream.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    assert!(bad.closed_by_server(), "a 2 GiB frame closes the connection");
    healthy_round_trip(&mut good);
}
