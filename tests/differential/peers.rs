//! The two brokers under comparison: Apache Kafka 4.4.0 (single-node KRaft, started with
//! scripts/kafka-server.sh and always stopped by a Drop guard) and kopd (one core, through
//! tests/common), plus a raw connection per broker that survives the server closing it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Request};

use crate::common::Conn;

pub const KAFKA_VERSION: &str = "4.4.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running Apache Kafka broker; dropping it runs `kafka-server.sh stop` (also on panic).
pub struct KafkaServer {
    pub dir: PathBuf,
    pub port: u16,
}

impl KafkaServer {
    pub fn start(dir: &Path) -> KafkaServer {
        let libs = root().join(format!(".peers/kafka-{KAFKA_VERSION}/libs/.complete"));
        if !libs.exists() {
            let st = Command::new("bash").arg(root().join("scripts/install-peers.sh")).status().expect("install-peers");
            assert!(st.success(), "scripts/install-peers.sh failed");
        }
        let port = port_with_controller();
        let guard = KafkaServer { dir: dir.to_path_buf(), port };
        let st = Command::new("bash")
            .arg(root().join("scripts/kafka-server.sh"))
            .arg("start")
            .arg(dir)
            .arg(port.to_string())
            // kopd's defaults, so that both brokers start from the same configuration.
            .args(["auto.create.topics.enable=true", "num.partitions=1", "group.initial.rebalance.delay.ms=0"])
            .status()
            .expect("kafka-server.sh start");
        assert!(st.success(), "kafka-server.sh start failed (see {}/kafka.out)", dir.display());
        guard
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(root().join("scripts/kafka-server.sh")).arg("stop").arg(&self.dir).status();
    }
}

/// A free port whose controller port (port + 1000, see kafka-server.sh) is free too.
fn port_with_controller() -> u16 {
    for _ in 0..200 {
        let p = crate::common::free_ports(1);
        if p < 64000 && TcpListener::bind(("127.0.0.1", p + 1000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for Kafka");
}

/// Version ranges a broker serves, by API key.
pub type Ranges = BTreeMap<i16, (i16, i16)>;

/// One broker as the cases see it: its address, a raw connection, the version ranges both
/// brokers serve, and its own node id (normalised away in answers).
pub struct Side {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub node_id: i32,
    pub common: Ranges,
    conn: Option<Conn>,
}

/// What a request got: a decoded response, a closed connection, or no response in time.
pub type Reply<T> = Result<T, String>;

impl Side {
    pub fn new(name: &'static str, addr: SocketAddr, node_id: i32) -> Side {
        Side { name, addr, node_id, common: Ranges::new(), conn: None }
    }

    fn conn(&mut self) -> &mut Conn {
        if self.conn.is_none() {
            let c = Conn::connect(self.addr);
            c.stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            self.conn = Some(c);
        }
        self.conn.as_mut().expect("connected")
    }

    /// Drops the current connection; the next request opens a new one.
    pub fn reconnect(&mut self) {
        self.conn = None;
    }

    /// Sends `req` at `version`; a closed connection is an answer ("connection closed"), after
    /// which the next request uses a new connection.
    pub fn call<R: Request>(&mut self, version: i16, req: &R) -> Reply<R::Response> {
        let frame = Conn::frame(7, version, req);
        let raw = self.raw(&frame)?;
        let mut buf = raw;
        let api = ApiKey::try_from(R::KEY).expect("api key");
        let header = ResponseHeader::decode(&mut buf, api.response_header_version(version))
            .map_err(|e| format!("undecodable response header: {e}"))?;
        if header.correlation_id != 7 {
            return Err(format!("correlation id {} instead of 7", header.correlation_id));
        }
        R::Response::decode(&mut buf, version).map_err(|e| format!("undecodable v{version} response: {e}"))
    }

    /// Writes a whole frame (length prefix included) and reads one response frame (without
    /// its length prefix).
    pub fn raw(&mut self, frame: &[u8]) -> Reply<Bytes> {
        let c = self.conn();
        if c.stream.write_all(frame).is_err() {
            self.conn = None;
            return Err("connection closed".into());
        }
        match read_frame(&mut c.stream) {
            Ok(b) => Ok(b),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Writes a frame and expects no response (acks=0).
    pub fn send_only(&mut self, frame: &[u8]) {
        let _ = self.conn().stream.write_all(frame);
    }

    /// The highest version of `api` that both brokers serve, capped at `cap`.
    pub fn ver(&self, api: ApiKey, cap: i16) -> i16 {
        let (min, max) = self.common.get(&(api as i16)).copied().unwrap_or((0, -1));
        assert!(min <= max, "{api:?} has no version both brokers serve");
        max.min(cap).max(min)
    }

    /// True if both brokers serve `api` at `version`.
    pub fn both_serve(&self, api: ApiKey, version: i16) -> bool {
        matches!(self.common.get(&(api as i16)), Some(&(min, max)) if min <= version && version <= max)
    }

    /// Node id normalisation: this broker's own id reads "self" (Kafka is node 1, kopd's one
    /// core is broker 0); anything else is printed as is.
    pub fn node(&self, id: i32) -> String {
        if id == self.node_id { "self".into() } else { id.to_string() }
    }
}

fn read_frame(s: &mut TcpStream) -> Reply<Bytes> {
    let mut size = [0u8; 4];
    match s.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Err("no response within 5 s".into());
        }
        Err(_) => return Err("connection closed".into()),
    }
    let mut buf = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).map_err(|_| "connection closed mid-frame".to_string())?;
    Ok(Bytes::from(buf))
}

/// ApiVersions v3+ request with the client software name and version Kafka requires (an empty
/// name gets INVALID_REQUEST from Kafka).
pub fn api_versions_req() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(kafka_protocol::protocol::StrBytes::from_static_str("kopd-differential"))
        .with_client_software_version(kafka_protocol::protocol::StrBytes::from_static_str("1"))
}

/// ApiVersions v3 from a broker.
pub fn api_versions(addr: SocketAddr) -> ApiVersionsResponse {
    let mut side = Side::new("probe", addr, -1);
    side.call(3, &api_versions_req()).expect("ApiVersions v3")
}

pub fn ranges(r: &ApiVersionsResponse) -> Ranges {
    r.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect()
}

/// Versions both brokers and this test's codec serve.
pub fn common_ranges(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Ranges::new();
    for (k, &(amin, amax)) in a {
        let Some(&(bmin, bmax)) = b.get(k) else { continue };
        let Ok(api) = ApiKey::try_from(*k) else { continue };
        let codec = api.valid_versions();
        let (min, max) = (amin.max(bmin).max(codec.min), amax.min(bmax).min(codec.max));
        if min <= max {
            out.insert(*k, (min, max));
        }
    }
    out
}

/// Waits (bounded) until `f` returns true.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Request header bytes (v1: key, version, correlation id, null client id) for raw frames.
pub fn raw_header(key: i16, version: i16) -> BytesMut {
    let mut h = BytesMut::new();
    h.extend_from_slice(&key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&7i32.to_be_bytes());
    h.extend_from_slice(&(-1i16).to_be_bytes());
    h
}

pub fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}
