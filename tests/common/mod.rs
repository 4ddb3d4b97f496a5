//! Test support: runs the built `kopd` binary on free ports with a temporary data dir, and
//! speaks raw Kafka protocol to it through the kafka-protocol codec.
#![allow(dead_code)]

pub mod bookkeeper;
pub mod cluster;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

pub fn kopd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kopd"))
}

/// A fresh directory under the target dir, removed first if it exists.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kopd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A base port with `n` consecutive free ports after it.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base as u32 + n as u32 >= 65535 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// `kopd serve`, to add arguments to.
/// The storage backend the suite runs against: `KOPD_TEST_STORAGE=bookkeeper` (with
/// `KOPD_TEST_ZK=host:port` of a running ZooKeeper + bookies, see
/// scripts/bookkeeper-cluster.sh) runs the same tests on BookKeeper; unset, the local store.
pub fn test_storage() -> String {
    std::env::var("KOPD_TEST_STORAGE").unwrap_or_else(|_| "local".to_string())
}

/// The settings that put a kopd on the suite's backend. On BookKeeper each data directory
/// gets its own ZooKeeper chroot, so a restart on the same data dir finds its metadata and
/// tests running at once never share a catalog. (Python's and Java's harnesses do the same.)
pub fn backend_args(data_dir: &Path) -> Vec<String> {
    if test_storage() != "bookkeeper" {
        return Vec::new();
    }
    let zk = std::env::var("KOPD_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".to_string());
    let quorums = std::env::var("KOPD_TEST_BK_QUORUMS").unwrap_or_else(|_| "2/2/2".to_string());
    let q: Vec<&str> = quorums.split('/').collect();
    let chroot = test_chroot(data_dir);
    let mut args = Vec::new();
    for kv in [
        "storage=bookkeeper".to_string(),
        format!("metadata.service.uri=zk+hierarchical://{zk}/ledgers"),
        format!("metadata.store=zk://{zk}{chroot}"),
        format!("bookkeeper.ensemble.size={}", q.first().unwrap_or(&"2")),
        format!("bookkeeper.write.quorum={}", q.get(1).unwrap_or(&"2")),
        format!("bookkeeper.ack.quorum={}", q.get(2).unwrap_or(&"2")),
    ] {
        args.push("--set".to_string());
        args.push(kv);
    }
    args
}

/// `/kopd-tests/<data dir with '/' as '_'>`.
pub fn test_chroot(data_dir: &Path) -> String {
    let abs = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let flat: String =
        abs.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("/kopd-tests/{flat}")
}

pub fn serve_command() -> Command {
    let mut cmd = Command::new(kopd_bin());
    cmd.arg("serve");
    cmd
}

pub struct Kopd {
    pub child: Option<Child>,
    pub port: u16,
    pub cores: u16,
    pub data_dir: PathBuf,
}

impl Kopd {
    pub fn start(data_dir: &Path, cores: u16, extra: &[&str]) -> Kopd {
        let port = free_ports(cores);
        Self::start_on(data_dir, cores, port, extra)
    }

    pub fn start_on(data_dir: &Path, cores: u16, port: u16, extra: &[&str]) -> Kopd {
        let mut cmd = serve_command();
        cmd.arg("--data-dir").arg(data_dir).args(extra);
        Self::spawn(cmd, port, cores, data_dir)
    }

    /// Runs `cmd` (from [`serve_command`], with arguments or a working directory of the
    /// test's) on `port` with `cores` cores; `data_dir` is where it keeps its data.
    pub fn spawn(mut cmd: Command, port: u16, cores: u16, data_dir: &Path) -> Kopd {
        cmd.args(backend_args(data_dir));
        Kopd::launch(cmd, port, cores, data_dir)
    }

    /// Starts `cmd` listening on `port` and up with `cores` cores. `KOPD_TEST_LOG` sets kopd's
    /// `RUST_LOG` (default `warn`).
    fn launch(mut cmd: Command, port: u16, cores: u16, data_dir: &Path) -> Kopd {
        let child = cmd
            .args(["--listen", &format!("127.0.0.1:{port}"), "--cores", &cores.to_string()])
            .env("RUST_LOG", std::env::var("KOPD_TEST_LOG").unwrap_or_else(|_| "warn".to_string()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn kopd");
        let k = Kopd { child: Some(child), port, cores, data_dir: data_dir.to_path_buf() };
        for core in 0..cores {
            k.wait_listening(port + core);
        }
        k
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("kopd did not listen on {port} within 20 s");
    }

    pub fn addr(&self, core: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + core))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL, then wait until the ports are released: the kernel tears down the dead
    /// process's io_uring (and the listening sockets it pins) asynchronously.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for core in 0..self.cores {
            while TcpStream::connect(("127.0.0.1", self.port + core)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGTERM, then wait (bounded) for exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kopd did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kopd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// A blocking Kafka client connection for tests.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { stream, next_correlation: 1 }
    }

    /// Encodes a request frame at `version`.
    pub fn frame<R: Request>(correlation: i32, version: i16, req: &R) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("kopd-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut buf = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> std::io::Result<R::Response> {
        let c = self.next_correlation;
        self.next_correlation += 1;
        self.stream.write_all(&Self::frame(c, version, req))?;
        let mut frame = self.read_frame()?;
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, c, "responses arrive in request order");
        Ok(R::Response::decode(&mut frame, version).unwrap())
    }

    /// True if the server closed this connection (read returns EOF or reset).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// ApiVersions as a client sends it from v3 on: with a valid software name and version.
pub fn api_versions_request() -> kafka_protocol::messages::ApiVersionsRequest {
    kafka_protocol::messages::ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kopd-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

// Records and the data-path requests tests share.

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn record(i: usize, key: Option<Bytes>, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // The encoder starts a new batch whenever offset - sequence changes.
        sequence: i as i32 - 1,
        timestamp: 1_700_000_000_000 + i as i64,
        key,
        value: Some(value),
        headers: Default::default(),
    }
}

pub fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.freeze()
}

pub fn batch(n: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> =
        (0..n).map(|i| record(i, Some(Bytes::from(format!("k{i}"))), Bytes::from(format!("value-{i}")))).collect();
    encode(&records, compression)
}

/// Creates `topic` (replication factor 1) with topic configs; asserts success.
pub fn create_topic(conn: &mut Conn, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(configs),
    ]);
    let resp = conn.send(7, &req).unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "create {topic}: {:?}", resp.topics[0].error_message);
}

/// Fetch v12 of one partition without waiting: (error, high watermark, records).
pub fn fetch(conn: &mut Conn, topic: &str, partition: i32, offset: i64) -> (i16, i64, Bytes) {
    let req = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]),
    ]);
    let resp = conn.send(12, &req).unwrap();
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.records.clone().unwrap_or_default())
}

pub fn produce(conn: &mut Conn, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ]);
    let resp = conn.send(9, &req).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    if p.error_code != 0 {
        eprintln!("produce error {}: {:?}", p.error_code, p.error_message);
    }
    (p.error_code, p.base_offset)
}

pub fn list_offset(conn: &mut Conn, topic: &str, partition: i32, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(ts)]),
    ]);
    let resp = conn.send(7, &req).unwrap();
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// Owner core of each partition, from Metadata.
pub fn leaders(conn: &mut Conn, topic: &str) -> Vec<i32> {
    let m = conn.send(12, &MetadataRequest::default().with_topics(None)).unwrap();
    let t = m.topics.iter().find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic)).unwrap();
    let mut p: Vec<(i32, i32)> = t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect();
    p.sort();
    p.into_iter().map(|(_, l)| l).collect()
}

// An idempotent producer's numbered batches, and reading a partition back.

/// Records per `idempotent_batch`.
pub const RECORDS: usize = 8;
const VALUE_BYTES: usize = 2000;

/// The value of record `i` of batch `batch`: its numbers, padded to 2000 bytes.
pub fn batch_value(batch: usize, i: usize) -> Bytes {
    let mut v = format!("batch {batch} record {i};").into_bytes();
    v.resize(VALUE_BYTES, (batch * 7 + i) as u8);
    Bytes::from(v)
}

/// Batch number `b` of an idempotent producer whose first batch had sequence `seq0`:
/// sequences `seq0 + b * RECORDS ..`, values `batch_value(b, i)`.
pub fn idempotent_batch(pid: i64, epoch: i16, seq0: usize, b: usize) -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: (seq0 + b * RECORDS + i) as i32,
            timestamp: 1_700_000_000_000 + (b * RECORDS + i) as i64,
            key: None,
            value: Some(batch_value(b, i)),
            headers: Default::default(),
        })
        .collect();
    encode(&records, Compression::None)
}

pub fn init_producer(c: &mut Conn) -> (i64, i16) {
    let req = kafka_protocol::messages::InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = c.send(4, &req).unwrap();
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

/// Every record of a partition from offset 0 up to the high watermark, as (offset, value),
/// and the high watermark.
pub fn read_all(c: &mut Conn, topic: &str, partition: i32) -> (Vec<(i64, Bytes)>, i64) {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let part = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(next)
            .with_partition_max_bytes(4 << 20);
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(4 << 20)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![part])]);
        let resp = c.send(12, &req).unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch at {next}");
        let mut buf = p.records.clone().unwrap_or_default();
        if buf.is_empty() {
            return (out, p.high_watermark);
        }
        while !buf.is_empty() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            for r in set.records {
                out.push((r.offset, r.value.clone().unwrap_or_default()));
                next = r.offset + 1;
            }
        }
    }
}

// For tests that run a cluster of their own (tests/bookkeeper_faults.rs).

impl Kopd {
    /// `kopd serve` on `port` with exactly `args` besides the data dir, listener and cores:
    /// unlike [`Kopd::start_on`] nothing comes from the suite's environment
    /// ([`backend_args`]), since the test chose the backend itself.
    pub fn start_exact(data_dir: &Path, cores: u16, port: u16, args: &[String]) -> Kopd {
        let mut cmd = serve_command();
        cmd.arg("--data-dir").arg(data_dir).args(args);
        Kopd::launch(cmd, port, cores, data_dir)
    }
}

impl Conn {
    /// Like [`Conn::connect`], but an error instead of a panic: for clients that ride out a
    /// server restart.
    pub fn try_connect(addr: SocketAddr, read_timeout: Duration) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_write_timeout(Some(read_timeout))?;
        Ok(Conn { stream, next_correlation: 1 })
    }
}
