//! The storage backend's settings: where metadata is kept (`metadata.store`) and the
//! `bookkeeper` backend's keys (`metadata.service.uri`, quorums, digest, timeouts).

use std::time::Duration;

use super::{ConfigError, ConfigSources, bad};

/// Where cluster metadata (topics, managed-ledger lists, cursors) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataStoreKind {
    /// The embedded store in `data.dir/meta`.
    Local,
    /// A ZooKeeper ensemble: `host:port[,host:port...][/chroot]`.
    ZooKeeper { connect: String },
}

/// How BookKeeper entries are checksummed (BookKeeper's `DigestType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Crc32c,
    Crc32,
    Dummy,
}

/// The `bookkeeper` backend's settings (Pulsar's `managedLedgerDefault*` and BookKeeper
/// client keys).
#[derive(Debug, Clone)]
pub struct BookKeeperSettings {
    /// ZooKeeper connect string of the metadata service (`host:port[,host:port]`).
    pub zk_connect: String,
    /// The ledgers root in ZooKeeper (BookKeeper's `zkLedgersRootPath`, `/ledgers`).
    pub ledgers_root: String,
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub digest: DigestKind,
    pub password: Vec<u8>,
    /// Bytes of adds in flight (sent, not yet acknowledged by the ack quorum) per core.
    pub max_inflight_add_bytes: usize,
    pub add_entry_timeout: Duration,
    pub read_entry_timeout: Duration,
    pub speculative_read_timeout: Duration,
}

impl ConfigSources {
    pub(super) fn metadata_store(&self) -> Result<MetadataStoreKind, ConfigError> {
        const KEY: &str = "metadata.store";
        let v = self.raw(KEY).trim();
        if v == "local" && !self.values.contains_key(KEY) && self.raw("storage").trim() == "bookkeeper" {
            // Pulsar's layout: the broker's metadata at the root of the ZooKeeper that holds
            // the ledgers (a bad URI is reported by `bookkeeper_settings`).
            let uri = self.raw("metadata.service.uri").trim();
            let rest = zk_uri_rest(uri).unwrap_or(uri);
            let hosts = rest.split_once('/').map_or(rest, |(h, _)| h);
            return Ok(MetadataStoreKind::ZooKeeper { connect: hosts.to_string() });
        }
        if v == "local" {
            return Ok(MetadataStoreKind::Local);
        }
        let Some(connect) = v.strip_prefix("zk://") else {
            return Err(bad(KEY, format!("`{v}` is neither `local` nor zk://HOST:PORT[,HOST:PORT][/CHROOT]")));
        };
        let (hosts, chroot) = connect.find('/').map_or((connect, ""), |i| connect.split_at(i));
        if !valid_hosts(hosts) {
            return Err(bad(KEY, format!("`{hosts}` is not HOST:PORT[,HOST:PORT]")));
        }
        if !chroot.is_empty() && chroot != "/" && !crate::zookeeper::valid_path(chroot) {
            return Err(bad(KEY, format!("chroot `{chroot}` is not a ZooKeeper path")));
        }
        Ok(MetadataStoreKind::ZooKeeper { connect: connect.to_string() })
    }

    pub(super) fn bookkeeper_settings(&self) -> Result<BookKeeperSettings, ConfigError> {
        if self.raw("metadata.store").trim() == "local" && self.values.contains_key("metadata.store") {
            return Err(bad(
                "metadata.store",
                "storage=bookkeeper keeps its metadata in ZooKeeper: set zk://HOST:PORT[,HOST:PORT][/CHROOT]",
            ));
        }
        const URI: &str = "metadata.service.uri";
        let uri = self.raw(URI).trim();
        let rest = zk_uri_rest(uri)
            .ok_or_else(|| bad(URI, format!("`{uri}` is not zk+hierarchical://HOST:PORT[,HOST:PORT]/LEDGERS_ROOT")))?;
        let (hosts, root) = rest.split_once('/').map_or((rest, "/ledgers".to_string()), |(h, r)| (h, format!("/{r}")));
        let root = root.trim_end_matches('/').to_string();
        if !valid_hosts(hosts) {
            return Err(bad(URI, format!("`{hosts}` is not HOST:PORT[,HOST:PORT]")));
        }
        if root.is_empty() || root.contains("//") {
            return Err(bad(URI, format!("`{root}` is not a ZooKeeper path")));
        }
        let ensemble_size = self.int("bookkeeper.ensemble.size", 1, 64)? as usize;
        let write_quorum = self.int("bookkeeper.write.quorum", 1, 64)? as usize;
        let ack_quorum = self.int("bookkeeper.ack.quorum", 1, 64)? as usize;
        if write_quorum > ensemble_size {
            return Err(bad("bookkeeper.write.quorum", "must not exceed bookkeeper.ensemble.size"));
        }
        if ack_quorum > write_quorum {
            return Err(bad("bookkeeper.ack.quorum", "must not exceed bookkeeper.write.quorum"));
        }
        let digest = match self.one_of("bookkeeper.digest.type", &["CRC32C", "CRC32", "DUMMY"])?.as_str() {
            "CRC32" => DigestKind::Crc32,
            "DUMMY" => DigestKind::Dummy,
            _ => DigestKind::Crc32c,
        };
        let ms = |key: &str| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(self.int(key, 1, 3_600_000)? as u64))
        };
        Ok(BookKeeperSettings {
            zk_connect: hosts.to_string(),
            ledgers_root: root,
            ensemble_size,
            write_quorum,
            ack_quorum,
            digest,
            password: self.raw("bookkeeper.password").as_bytes().to_vec(),
            max_inflight_add_bytes: self.int("bookkeeper.max.inflight.add.bytes", 1 << 20, 1 << 40)? as usize,
            add_entry_timeout: ms("bookkeeper.add.entry.timeout.ms")?,
            read_entry_timeout: ms("bookkeeper.read.entry.timeout.ms")?,
            speculative_read_timeout: ms("bookkeeper.speculative.read.timeout.ms")?,
        })
    }
}

/// What follows BookKeeper's `zk+hierarchical://` (or `zk://`) scheme in a metadata service URI.
fn zk_uri_rest(uri: &str) -> Option<&str> {
    uri.strip_prefix("zk+hierarchical://").or_else(|| uri.strip_prefix("zk://"))
}

/// `HOST:PORT[,HOST:PORT...]`.
fn valid_hosts(hosts: &str) -> bool {
    let valid_host = |h: &str| h.rsplit_once(':').is_some_and(|(n, p)| !n.is_empty() && p.parse::<u16>().is_ok());
    !hosts.is_empty() && hosts.split(',').all(valid_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeper_settings_parse_and_check_quorums() {
        let mut s = ConfigSources::new();
        assert!(s.resolve(1).unwrap().bookkeeper.is_none());
        s.set("storage", "bookkeeper").unwrap();
        // By default the metadata goes to the root of the ledgers' ZooKeeper, as Pulsar's does.
        assert_eq!(
            s.resolve(1).unwrap().metadata_store,
            MetadataStoreKind::ZooKeeper { connect: "127.0.0.1:2181".into() }
        );
        s.set("metadata.store", "local").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "metadata.store");
        s.set("metadata.store", "zk://127.0.0.1:2181/kopd").unwrap();
        s.set("metadata.service.uri", "zk+hierarchical://127.0.0.1:2181,127.0.0.1:2182/pulsar/ledgers").unwrap();
        let bk = s.resolve(1).unwrap().bookkeeper.unwrap();
        assert_eq!(bk.zk_connect, "127.0.0.1:2181,127.0.0.1:2182");
        assert_eq!(bk.ledgers_root, "/pulsar/ledgers");
        assert_eq!((bk.ensemble_size, bk.write_quorum, bk.ack_quorum), (2, 2, 2));
        assert_eq!(bk.digest, DigestKind::Crc32c);
        for (key, value) in [
            ("metadata.service.uri", "http://127.0.0.1:2181/ledgers"),
            ("metadata.service.uri", "zk://nohostport/ledgers"),
            ("bookkeeper.write.quorum", "3"),
            ("bookkeeper.digest.type", "MD5"),
        ] {
            let mut bad = ConfigSources::new();
            bad.set("storage", "bookkeeper").unwrap();
            bad.set("metadata.store", "zk://127.0.0.1:2181").unwrap();
            bad.set(key, value).unwrap();
            assert_eq!(bad.resolve(1).unwrap_err().key, key, "{key}={value}");
        }
        s.set("bookkeeper.ensemble.size", "3").unwrap();
        s.set("bookkeeper.ack.quorum", "3").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "bookkeeper.ack.quorum");
    }

    #[test]
    fn metadata_store_choices() {
        let c = ConfigSources::new().resolve(1).unwrap();
        assert_eq!(c.metadata_store, MetadataStoreKind::Local);
        assert_eq!(c.zookeeper_session_timeout, Duration::from_millis(18000));
        let mut s = ConfigSources::new();
        s.set("metadata.store", "zk://127.0.0.1:2181,127.0.0.2:2182/kopd/a").unwrap();
        s.set("zookeeper.session.timeout.ms", "4000").unwrap();
        let c = s.resolve(1).unwrap();
        assert_eq!(
            c.metadata_store,
            MetadataStoreKind::ZooKeeper { connect: "127.0.0.1:2181,127.0.0.2:2182/kopd/a".into() }
        );
        assert_eq!(c.zookeeper_session_timeout, Duration::from_millis(4000));
        for bad in ["zookeeper", "zk://", "zk://host", "zk://h:1/a/", "zk://h:1//a", "ZK://h:1"] {
            let mut s = ConfigSources::new();
            s.set("metadata.store", bad).unwrap();
            assert_eq!(s.resolve(1).unwrap_err().key, "metadata.store", "{bad}");
        }
        let mut s = ConfigSources::new();
        s.set("zookeeper.session.timeout.ms", "10").unwrap();
        assert_eq!(s.resolve(1).unwrap_err().key, "zookeeper.session.timeout.ms");
    }
}
