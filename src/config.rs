//! Configuration: defaults, then a TOML file, then `KOPD_*` environment variables, then flags.
//!
//! Every key uses Kafka's dotted name where Kafka has the concept (`num.partitions`) and
//! KoP's where Pulsar has it (`kafka.tenant`). In the TOML file a dotted key and the
//! equivalent nested table mean the same thing. The environment variable of a key is
//! `KOPD_` + the key upper-cased with `.` and `-` turned into `_`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

mod cluster;
mod storage;
pub use cluster::{BROKERS_PER_NODE, ClusterSettings};
pub use storage::{BookKeeperSettings, DigestKind, MetadataStoreKind};

/// One bad setting: which key, and what is wrong with it.
#[derive(Debug, Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_string(), problem: problem.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Local,
    /// Apache BookKeeper bookies, ledger metadata in ZooKeeper.
    BookKeeper,
}

/// When an acknowledged entry is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// fdatasync before the ack; one sync covers every append of its commit window.
    Always,
    /// Ack after the write; fdatasync every so often. Chosen explicitly, never by default.
    Interval(std::time::Duration),
}

/// Broker-wide defaults for topic configs (Kafka's `log.*` / `message.max.bytes` keys).
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub cleanup_policy: String,
    pub max_message_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub message_timestamp_type: String,
    pub keep_unconsumed: bool,
}

/// The group coordinator's settings (Kafka's `group.*` and `offsets.*` keys).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Pulsar tenant and namespace holding `__consumer_offsets`.
    pub metadata_tenant: String,
    pub metadata_namespace: String,
    pub offsets_topic_partitions: i32,
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
    /// How often committed offsets are mirrored into durable cursors.
    pub cursor_mirror_interval_ms: u64,
}

/// Bounds on Kafka connections: how many, how long they may idle or dawdle, how much unsent
/// response data they may hold (Kafka's `max.connections*`, `connections.max.idle.ms`).
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// `max.connections` over all cores, split evenly.
    pub max_per_core: usize,
    /// `max.connections.per.ip`: per broker (core), as in Kafka, where each core is a broker.
    pub max_per_ip: usize,
    pub max_per_ip_overrides: HashMap<IpAddr, usize>,
    /// Connections the kernel queues before kopd accepts them (`socket.listen.backlog.size`).
    pub listen_backlog: u32,
    /// A connection with no bytes read or written for this long is closed.
    pub max_idle: Duration,
    /// A request must arrive whole within this long of its first byte (and the first request
    /// within this long of the connection), or the connection is closed.
    pub request_read_timeout: Duration,
    /// Unsent response bytes one connection may hold before kopd stops handling its requests
    /// (and so stops reading its socket) until the client has read them.
    pub max_unwritten_bytes: usize,
    /// Produce requests of one connection taken (offsets assigned, entries queued) while
    /// earlier ones still await durability; 1 handles a connection's requests one at a time.
    pub max_pipelined_produce: usize,
    /// Unsent response bytes of all connections on a core; past it, fetches answer with less.
    pub queued_max_response_bytes: usize,
}

impl ConnectionSettings {
    /// The connection limit for one peer address on one core.
    pub fn max_for_ip(&self, ip: IpAddr) -> usize {
        self.max_per_ip_overrides.get(&ip).copied().unwrap_or(self.max_per_ip)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub advertised_host: String,
    /// The admin HTTP API (stats views), if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Number of cores (executors, advertised brokers). Resolved: never 0.
    pub cores: usize,
    pub data_dir: PathBuf,
    pub storage: StorageKind,
    /// Set when `storage = bookkeeper`.
    pub bookkeeper: Option<BookKeeperSettings>,
    /// Set when `cluster.name` is: this process is one node of a kopd cluster.
    pub cluster: Option<ClusterSettings>,
    pub metadata_store: MetadataStoreKind,
    /// Session timeout asked of ZooKeeper (Kafka's `zookeeper.session.timeout.ms`).
    pub zookeeper_session_timeout: Duration,
    pub kafka_tenant: String,
    pub kafka_namespace: String,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub max_partitions_per_topic: i32,
    pub socket_request_max_bytes: usize,
    pub connections: ConnectionSettings,
    /// Broker-side cap on a Fetch response's record bytes (Kafka's `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// Bytes of io_uring registered buffer per core; the sum must fit RLIMIT_MEMLOCK.
    pub io_memory_per_core: usize,
    /// How long an idle pinned executor busy-polls before it sleeps.
    pub spin_before_park: std::time::Duration,
    /// Leave transparent huge pages on for the process (off: `PR_SET_THP_DISABLE`).
    pub transparent_huge_pages: bool,
    pub shutdown_timeout_ms: u64,
    pub control_queue_capacity: usize,
    pub topic_defaults: TopicDefaults,
    pub retention_check_interval_ms: u64,
    pub tail_cache_bytes: usize,
    pub flush: Flush,
    pub ledger_file_bytes: u64,
    pub ledger_max_pending_bytes: usize,
    /// While a core's ledger store is failed (disk full, I/O error), how often it probes
    /// whether writes succeed again.
    pub ledger_failure_probe_interval: std::time::Duration,
    /// How often each core snapshots its partitions' logs (restart reads only what follows).
    pub log_snapshot_interval: std::time::Duration,
    pub groups: GroupSettings,
    /// Every key's effective value, for DescribeConfigs on broker resources.
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub key: String,
    pub value: String,
    /// Set by file, environment or flag rather than defaulted.
    pub explicit: bool,
    pub doc: &'static str,
}

/// Every key with its default, as text. The single list parsing, env lookup and docs use.
#[rustfmt::skip]
pub const KEYS: &[(&str, &str, &str)] = &[
    ("listen",                           "127.0.0.1:9092", "address of core 0's Kafka listener; core i listens on port + i"),
    ("advertised.host",                  "",            "host advertised to clients (default: the listen host)"),
    ("admin.listen",                     "127.0.0.1:8080", "HTTP address of the admin API (topic and cursor stats, Pulsar's paths); empty: off"),
    ("cores",                            "0",           "executors (one per core, each a Kafka broker); 0 = all online CPUs"),
    ("data.dir",                         "./data",      "directory for metadata and ledgers"),
    ("storage",                          "local",       "ledger store: `local` (embedded) or `bookkeeper` (Apache BookKeeper bookies)"),
    ("metadata.service.uri",             "zk+hierarchical://127.0.0.1:2181/ledgers", "bookkeeper: BookKeeper's metadataServiceUri (ZooKeeper hosts and ledgers root)"),
    ("bookkeeper.ensemble.size",         "2",           "bookkeeper: bookies per ledger (Pulsar's managedLedgerDefaultEnsembleSize)"),
    ("bookkeeper.write.quorum",          "2",           "bookkeeper: copies of each entry (managedLedgerDefaultWriteQuorum)"),
    ("bookkeeper.ack.quorum",            "2",           "bookkeeper: copies acknowledged before an entry is durable (managedLedgerDefaultAckQuorum)"),
    ("bookkeeper.digest.type",           "CRC32C",      "bookkeeper: entry checksum, CRC32C, CRC32 or DUMMY (managedLedgerDigestType)"),
    ("bookkeeper.password",              "",            "bookkeeper: ledger password (managedLedgerPassword); its SHA-1 is the ledgers' master key"),
    ("bookkeeper.max.inflight.add.bytes", "67108864",   "bookkeeper: bytes of adds awaiting their ack quorum per core before produce backs off"),
    ("bookkeeper.add.entry.timeout.ms",  "10000",       "bookkeeper: an add a bookie has not answered in this long fails that bookie (BookKeeper's addEntryTimeout)"),
    ("bookkeeper.read.entry.timeout.ms", "5000",        "bookkeeper: a read a bookie has not answered in this long goes to the next one (readEntryTimeout)"),
    ("bookkeeper.speculative.read.timeout.ms", "2000",  "bookkeeper: a read unanswered this long is also sent to the next bookie of the entry (speculativeReadTimeout)"),
    ("metadata.store",                   "local",       "cluster metadata store: `local` (embedded, in data.dir) or `zk://HOST:PORT[,HOST:PORT][/CHROOT]` (ZooKeeper, Pulsar's paths); with storage=bookkeeper the default is the root of metadata.service.uri's ZooKeeper"),
    ("cluster.name",                     "",            "cluster mode: several kopd nodes over one ZooKeeper and one set of bookies (needs storage=bookkeeper); empty: a single node"),
    ("node.id",                          "-1",          "cluster: this node's id (broker ids are node.id * 1000 + core); -1: allocated once from ZooKeeper and kept in data.dir/node.id"),
    ("cluster.poll.interval.ms",         "200",         "cluster: how often a node reads membership, partition leases and catalog changes from ZooKeeper (adds to failover time)"),
    ("cluster.lease.wait.ms",            "5000",        "cluster: how long a produce for a partition just moved to this core waits for its node to take the lease and open it, instead of answering NOT_LEADER_OR_FOLLOWER at once"),
    ("zookeeper.session.timeout.ms",     "18000",       "ZooKeeper session timeout; a ZooKeeper unreachable this long ends the session (ephemeral nodes go) and metadata writes fail until a new one is open"),
    ("kafka.tenant",                     "public",      "Pulsar tenant for Kafka topics without one"),
    ("kafka.namespace",                  "default",     "Pulsar namespace for Kafka topics without one"),
    ("auto.create.topics.enable",        "true",        "create unknown topics named in Metadata requests"),
    ("num.partitions",                   "1",           "partitions of an auto-created topic or a CreateTopics with -1"),
    ("max.partitions.per.topic",         "100000",      "upper bound on a topic's partition count"),
    ("socket.request.max.bytes",         "104857600",   "largest request frame accepted"),
    ("max.connections",                  "10000",       "Kafka connections accepted over all cores (each core takes an even share)"),
    ("max.connections.per.ip",           "2147483647",  "Kafka connections one client address may hold on one core (broker); more are closed at once"),
    ("max.connections.per.ip.overrides", "",            "per-address exceptions to max.connections.per.ip: `IP:COUNT,IP:COUNT`"),
    ("socket.listen.backlog.size",       "1024",        "connections the kernel queues per core before kopd accepts them (capped by net.core.somaxconn)"),
    ("connections.max.idle.ms",          "600000",      "close a connection with no bytes read or written for this long"),
    ("connections.request.read.timeout.ms", "30000",    "close a connection whose request (or first request) has not arrived whole this long after it began"),
    ("connection.max.unwritten.bytes",   "1048576",     "unsent response bytes a connection may hold before kopd stops reading its requests until the client reads"),
    ("connection.max.pipelined.produce", "5",           "produce requests of one connection taken while earlier ones still await durability (answers stay in order; 1: one at a time)"),
    ("queued.max.response.bytes",        "67108864",    "unsent response bytes of all connections of a core; beyond it fetches return less"),
    ("fetch.max.bytes",                  "57671680",    "most record bytes one Fetch response carries, whatever the client asks"),
    ("io.memory.per.core",               "524288",      "io_uring registered buffer bytes per core (memlock)"),
    ("memory.transparent.huge.pages",    "true",        "let the kernel back kopd's heap with transparent huge pages (false: opt out, PR_SET_THP_DISABLE)"),
    ("io.spin.before.park.us",           "0",           "an idle pinned core polls for this long before it sleeps (trades CPU for wake-up latency)"),
    ("shutdown.timeout.ms",              "10000",       "how long shutdown waits for in-flight requests"),
    ("control.queue.capacity",           "1024",        "bound of every cross-core control queue"),
    ("log.retention.ms",                 "604800000",   "default retention.ms of topics"),
    ("log.retention.bytes",              "-1",          "default retention.bytes of topics"),
    ("log.cleanup.policy",               "delete",      "default cleanup.policy of topics"),
    ("message.max.bytes",                "1048588",     "default max.message.bytes of topics"),
    ("log.segment.bytes",                "1073741824",  "default segment.bytes (ledger rollover size)"),
    ("log.roll.ms",                      "604800000",   "default segment.ms (ledger rollover age)"),
    ("log.message.timestamp.type",       "CreateTime",  "default message.timestamp.type"),
    ("log.retention.keep.unconsumed",    "false",       "default kopd.retention.keep.unconsumed: retention spares data a group's cursor still needs"),
    ("log.retention.check.interval.ms",  "300000",      "how often retention deletes old ledgers"),
    ("log.tail.cache.bytes",             "33554432",    "per-core bytes of recent batches kept in memory, shared by the core's partitions (the batch written longest ago goes first)"),
    ("flush",                            "always",      "`always`: ack after fdatasync (group commit); `interval`: ack after write"),
    ("flush.interval.ms",                "200",         "fdatasync period under `flush = interval`"),
    ("ledger.file.bytes",                "268435456",   "size at which a core's entry-log file rolls over"),
    ("ledger.max.pending.bytes",         "67108864",    "bytes per core queued for the disk before produce backs off"),
    ("log.snapshot.interval.ms",         "30000",       "how often each core snapshots its partitions' offset indexes and producer state (and at clean shutdown); a restart reads only entries written after the last snapshot"),
    ("ledger.failure.probe.interval.ms", "1000",        "after a failed write or fdatasync (e.g. disk full) produce gets KAFKA_STORAGE_ERROR; this often the core probes whether writes succeed again, and resumes when they do"),
    ("kafka.metadata.tenant",            "public",      "Pulsar tenant of kopd's internal topics (__consumer_offsets)"),
    ("kafka.metadata.namespace",         "__kafka",     "Pulsar namespace of kopd's internal topics"),
    ("offsets.topic.num.partitions",     "50",          "partitions of __consumer_offsets when it is created"),
    ("group.initial.rebalance.delay.ms", "3000",        "how long a new group waits for more members before its first rebalance"),
    ("group.min.session.timeout.ms",     "6000",        "smallest session timeout a group member may ask for"),
    ("group.max.session.timeout.ms",     "1800000",     "largest session timeout a group member may ask for"),
    ("offsets.retention.minutes",        "10080",       "committed offsets of an empty group are removed this long after it became empty"),
    ("offsets.retention.check.interval.ms", "600000",   "how often expired committed offsets are removed"),
    ("offset.metadata.max.bytes",        "4096",        "largest metadata string of a committed offset"),
    ("group.cursor.mirror.interval.ms",  "1000",        "how often committed offsets are mirrored into the partitions' durable cursors"),
];

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    let mut s = String::from("KOPD_");
    for c in key.chars() {
        s.push(match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    s
}

/// Flattens nested TOML tables into dotted keys.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Integer(i) => {
                out.insert(key, i.to_string());
            }
            toml::Value::Boolean(b) => {
                out.insert(key, b.to_string());
            }
            toml::Value::Float(f) => {
                out.insert(key, f.to_string());
            }
            _ => return Err(bad(&key, "arrays and dates are not accepted here")),
        }
    }
    Ok(())
}

/// Layers raw settings. Later layers win; unknown keys are errors.
#[derive(Debug, Default)]
pub struct ConfigSources {
    values: BTreeMap<String, String>,
}

impl ConfigSources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<(), ConfigError> {
        if !KEYS.iter().any(|(k, _, _)| *k == key) {
            return Err(bad(key, "unknown key"));
        }
        self.values.insert(key.to_string(), value.into());
        Ok(())
    }

    pub fn add_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| bad("--config", format!("not valid TOML: {}", e.message())))?;
        let mut flat = BTreeMap::new();
        flatten("", &table, &mut flat)?;
        for (k, v) in flat {
            self.set(&k, v)?;
        }
        Ok(())
    }

    pub fn add_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (k, _, _) in KEYS {
            if let Some(v) = lookup(&env_name(k)) {
                self.set(k, v)?;
            }
        }
        Ok(())
    }

    fn raw(&self, key: &str) -> &str {
        self.values
            .get(key)
            .map(String::as_str)
            .or_else(|| KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| *d))
            .unwrap_or("")
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
        let raw = self.raw(key).trim();
        let v: i64 = raw.parse().map_err(|_| bad(key, format!("`{raw}` is not an integer")))?;
        if v < min || v > max {
            return Err(bad(key, format!("{v} is outside {min}..={max}")));
        }
        Ok(v)
    }

    fn boolean(&self, key: &str) -> Result<bool, ConfigError> {
        match self.raw(key).trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(bad(key, format!("`{other}` is not true or false"))),
        }
    }

    fn name(&self, key: &str) -> Result<String, ConfigError> {
        let v = self.raw(key).trim().to_string();
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(bad(key, format!("`{v}` is not a valid Pulsar name")));
        }
        Ok(v)
    }

    fn one_of(&self, key: &str, allowed: &[&str]) -> Result<String, ConfigError> {
        let v = self.raw(key).trim();
        if allowed.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(bad(key, format!("`{v}` is not one of {}", allowed.join(", "))))
        }
    }

    /// Validates every key and resolves derived values (core count, advertised host).
    pub fn resolve(&self, online_cpus: usize) -> Result<Config, ConfigError> {
        let listen_raw = self.raw("listen").trim();
        let listen: SocketAddr = listen_raw
            .parse()
            .map_err(|_| bad("listen", format!("`{listen_raw}` is not HOST:PORT with a numeric host")))?;
        let cores = match self.int("cores", 0, 1024)? as usize {
            0 => online_cpus.max(1),
            n => n,
        };
        if listen.port() as usize + cores - 1 > u16::MAX as usize || listen.port() == 0 {
            return Err(bad(
                "listen",
                format!("port {} leaves no room for {cores} cores (port + core index)", listen.port()),
            ));
        }
        let advertised_host = match self.raw("advertised.host").trim() {
            "" if listen.ip().is_unspecified() => "127.0.0.1".to_string(),
            "" => listen.ip().to_string(),
            h => h.to_string(),
        };
        let data_dir = PathBuf::from(self.raw("data.dir"));
        if data_dir.as_os_str().is_empty() {
            return Err(bad("data.dir", "must not be empty"));
        }
        let (storage, bookkeeper) = match self.one_of("storage", &["local", "bookkeeper"])?.as_str() {
            "bookkeeper" => (StorageKind::BookKeeper, Some(self.bookkeeper_settings()?)),
            _ => (StorageKind::Local, None),
        };
        let connections = self.connection_settings(cores)?;
        let metadata_store = self.metadata_store()?;
        let cluster = self.cluster_settings(cores, bookkeeper.is_some(), &metadata_store)?;
        let io_memory_per_core = self.int("io.memory.per.core", 64 << 10, 1 << 30)? as usize;
        let topic_defaults = TopicDefaults {
            retention_ms: self.int("log.retention.ms", -1, i64::MAX)?,
            retention_bytes: self.int("log.retention.bytes", -1, i64::MAX)?,
            cleanup_policy: self
                .one_of("log.cleanup.policy", &["delete", "compact", "compact,delete", "delete,compact"])?,
            max_message_bytes: self.int("message.max.bytes", 0, i32::MAX as i64)?,
            segment_bytes: self.int("log.segment.bytes", 14, i32::MAX as i64)?,
            segment_ms: self.int("log.roll.ms", 1, i64::MAX)?,
            message_timestamp_type: self.one_of("log.message.timestamp.type", &["CreateTime", "LogAppendTime"])?,
            keep_unconsumed: self.boolean("log.retention.keep.unconsumed")?,
        };
        let admin_listen = match self.raw("admin.listen").trim() {
            "" => None,
            a => Some(
                a.parse::<SocketAddr>().map_err(|_| bad("admin.listen", "is not an address like 127.0.0.1:8080"))?,
            ),
        };
        Ok(Config {
            listen,
            advertised_host,
            admin_listen,
            cores,
            data_dir,
            storage,
            bookkeeper,
            cluster,
            metadata_store,
            zookeeper_session_timeout: Duration::from_millis(
                self.int("zookeeper.session.timeout.ms", 1000, 600_000)? as u64
            ),
            kafka_tenant: self.name("kafka.tenant")?,
            kafka_namespace: self.name("kafka.namespace")?,
            auto_create_topics: self.boolean("auto.create.topics.enable")?,
            num_partitions: self.int("num.partitions", 1, 100_000)? as i32,
            max_partitions_per_topic: self.int("max.partitions.per.topic", 1, 1_000_000)? as i32,
            socket_request_max_bytes: self.int("socket.request.max.bytes", 1024, i32::MAX as i64)? as usize,
            connections,
            fetch_max_bytes: self.int("fetch.max.bytes", 0, i32::MAX as i64)? as usize,
            io_memory_per_core,
            spin_before_park: std::time::Duration::from_micros(
                self.int("io.spin.before.park.us", 0, 60_000_000)? as u64
            ),
            transparent_huge_pages: self.boolean("memory.transparent.huge.pages")?,
            shutdown_timeout_ms: self.int("shutdown.timeout.ms", 0, 3_600_000)? as u64,
            control_queue_capacity: self.int("control.queue.capacity", 1, 1_000_000)? as usize,
            topic_defaults,
            retention_check_interval_ms: self.int("log.retention.check.interval.ms", 1, i64::MAX)? as u64,
            tail_cache_bytes: self.int("log.tail.cache.bytes", 0, 1 << 40)? as usize,
            flush: match self.one_of("flush", &["always", "interval"])?.as_str() {
                "always" => Flush::Always,
                _ => Flush::Interval(std::time::Duration::from_millis(
                    self.int("flush.interval.ms", 1, 3_600_000)? as u64
                )),
            },
            ledger_file_bytes: self.int("ledger.file.bytes", 1 << 20, 1 << 40)? as u64,
            ledger_max_pending_bytes: self.int("ledger.max.pending.bytes", 1 << 20, 1 << 40)? as usize,
            log_snapshot_interval: std::time::Duration::from_millis(self.int(
                "log.snapshot.interval.ms",
                100,
                i64::MAX,
            )? as u64),
            ledger_failure_probe_interval: std::time::Duration::from_millis(self.int(
                "ledger.failure.probe.interval.ms",
                10,
                3_600_000,
            )? as u64),
            groups: self.group_settings()?,
            settings: KEYS
                .iter()
                .map(|(k, _, doc)| Setting {
                    key: k.to_string(),
                    value: self.raw(k).to_string(),
                    explicit: self.values.contains_key(*k),
                    doc,
                })
                .collect(),
        })
    }
}

impl ConfigSources {
    fn connection_settings(&self, cores: usize) -> Result<ConnectionSettings, ConfigError> {
        let key = "max.connections.per.ip.overrides";
        let mut overrides = HashMap::new();
        for item in self.raw(key).split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item.rsplit_once(':').and_then(|(ip, n)| {
                Some((ip.trim_matches(['[', ']']).parse::<IpAddr>().ok()?, n.parse::<usize>().ok()?))
            });
            let Some((ip, n)) = parsed else {
                return Err(bad(key, format!("`{item}` is not IP:COUNT (host names are not resolved)")));
            };
            overrides.insert(ip, n);
        }
        let ms = |key: &str, min: i64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(self.int(key, min, i64::MAX / 2)? as u64))
        };
        Ok(ConnectionSettings {
            max_per_core: (self.int("max.connections", 1, 10_000_000)? as usize).div_ceil(cores),
            max_per_ip: self.int("max.connections.per.ip", 0, i32::MAX as i64)? as usize,
            max_per_ip_overrides: overrides,
            listen_backlog: self.int("socket.listen.backlog.size", 1, i32::MAX as i64)? as u32,
            max_idle: ms("connections.max.idle.ms", 1)?,
            request_read_timeout: ms("connections.request.read.timeout.ms", 1)?,
            max_unwritten_bytes: self.int("connection.max.unwritten.bytes", 1024, 1 << 40)? as usize,
            max_pipelined_produce: self.int("connection.max.pipelined.produce", 1, 1024)? as usize,
            queued_max_response_bytes: self.int("queued.max.response.bytes", 1 << 20, 1 << 40)? as usize,
        })
    }

    fn group_settings(&self) -> Result<GroupSettings, ConfigError> {
        let min_session = self.int("group.min.session.timeout.ms", 1, i32::MAX as i64)? as i32;
        let max_session = self.int("group.max.session.timeout.ms", 1, i32::MAX as i64)? as i32;
        if max_session < min_session {
            return Err(bad("group.max.session.timeout.ms", "is below group.min.session.timeout.ms"));
        }
        Ok(GroupSettings {
            metadata_tenant: self.name("kafka.metadata.tenant")?,
            metadata_namespace: self.name("kafka.metadata.namespace")?,
            offsets_topic_partitions: self.int("offsets.topic.num.partitions", 1, 100_000)? as i32,
            initial_rebalance_delay_ms: self.int("group.initial.rebalance.delay.ms", 0, i32::MAX as i64)? as u64,
            min_session_timeout_ms: min_session,
            max_session_timeout_ms: max_session,
            offsets_retention_ms: self.int("offsets.retention.minutes", 1, i32::MAX as i64)? * 60_000,
            offsets_retention_check_interval_ms: self.int("offsets.retention.check.interval.ms", 1, i64::MAX)? as u64,
            offset_metadata_max_bytes: self.int("offset.metadata.max.bytes", 0, i32::MAX as i64)? as usize,
            cursor_mirror_interval_ms: self.int("group.cursor.mirror.interval.ms", 1, i64::MAX)? as u64,
        })
    }
}

impl Config {
    /// The listener address of one core.
    pub fn core_listen(&self, core: usize) -> SocketAddr {
        SocketAddr::new(self.listen.ip(), self.listen.port() + core as u16)
    }

    pub fn core_port(&self, core: usize) -> u16 {
        self.listen.port() + core as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let c = ConfigSources::new().resolve(4).unwrap();
        assert_eq!(c.cores, 4);
        assert_eq!(c.listen.port(), 9092);
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!(c.num_partitions, 1);
        assert_eq!(c.socket_request_max_bytes, 100 << 20);
        assert_eq!(c.core_port(3), 9095);
    }

    #[test]
    fn later_layers_win_and_tables_flatten() {
        let mut s = ConfigSources::new();
        s.add_toml("cores = 2\n[num]\npartitions = 3\n").unwrap();
        s.add_env(|k| (k == "KOPD_NUM_PARTITIONS").then(|| "5".to_string())).unwrap();
        let c = s.resolve(8).unwrap();
        assert_eq!(c.cores, 2);
        assert_eq!(c.num_partitions, 5);
        s.set("num.partitions", "7").unwrap();
        assert_eq!(s.resolve(8).unwrap().num_partitions, 7);
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut s = ConfigSources::new();
        s.set("num.partitions", "zero").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "num.partitions");
        let mut s = ConfigSources::new();
        assert_eq!(s.add_toml("bogus = 1").unwrap_err().key, "bogus");
        s.set("listen", "localhost").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "listen");
        let mut s = ConfigSources::new();
        s.set("listen", "127.0.0.1:65535").unwrap();
        s.set("cores", "2").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "listen");
    }

    #[test]
    fn per_ip_overrides_parse() {
        let mut s = ConfigSources::new();
        s.set("max.connections.per.ip", "10").unwrap();
        s.set("max.connections.per.ip.overrides", "127.0.0.2:3, [::1]:0").unwrap();
        let c = s.resolve(2).unwrap().connections;
        assert_eq!(c.max_for_ip("127.0.0.2".parse().unwrap()), 3);
        assert_eq!(c.max_for_ip("::1".parse().unwrap()), 0);
        assert_eq!(c.max_for_ip("127.0.0.1".parse().unwrap()), 10);
        s.set("max.connections.per.ip.overrides", "somehost:3").unwrap();
        assert_eq!(s.resolve(2).unwrap_err().key, "max.connections.per.ip.overrides");
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("auto.create.topics.enable"), "KOPD_AUTO_CREATE_TOPICS_ENABLE");
    }
}
