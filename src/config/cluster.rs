//! Cluster mode's keys: `cluster.name` turns it on (several kopd nodes over one ZooKeeper and
//! one set of bookies), `node.id` names this node, `cluster.poll.interval.ms` paces it.

use std::time::Duration;

use super::{ConfigError, ConfigSources, MetadataStoreKind, bad};

/// Broker ids are `node id * BROKERS_PER_NODE + core index`, so a node's cores never collide
/// with another node's and keep their ids across restarts (node 0: 0, 1, ...; node 3: 3000...).
pub const BROKERS_PER_NODE: u32 = 1000;
/// The largest node id whose broker ids still fit Kafka's int32.
pub const MAX_NODE_ID: i64 = (i32::MAX as i64) / BROKERS_PER_NODE as i64 - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub name: String,
    /// `None`: allocated from ZooKeeper on the first start and kept in `data.dir/node.id`.
    pub node_id: Option<u32>,
    /// How often the node reads membership, leases and catalog changes from ZooKeeper.
    pub poll_interval: Duration,
    /// How long a produce for a partition the catalog has just given this core waits for the
    /// lease (and the open) before it is refused.
    pub lease_wait: Duration,
}

impl ConfigSources {
    /// `None` unless `cluster.name` is set (the single-node default).
    pub(super) fn cluster_settings(
        &self,
        cores: usize,
        bookkeeper: bool,
        metadata: &MetadataStoreKind,
    ) -> Result<Option<ClusterSettings>, ConfigError> {
        let name = self.raw("cluster.name").trim().to_string();
        let node_id = self.int("node.id", -1, MAX_NODE_ID)?;
        if name.is_empty() {
            return Ok(None);
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.len() > 128 {
            return Err(bad("cluster.name", "use letters, digits, '-', '_' and '.' (at most 128)"));
        }
        if !bookkeeper {
            return Err(bad("cluster.name", "a cluster keeps its data in BookKeeper: set storage=bookkeeper"));
        }
        if !matches!(metadata, MetadataStoreKind::ZooKeeper { .. }) {
            return Err(bad("cluster.name", "a cluster keeps its metadata in ZooKeeper: metadata.store must be zk://"));
        }
        if cores as u32 >= BROKERS_PER_NODE {
            return Err(bad("cores", format!("a cluster node has at most {} cores", BROKERS_PER_NODE - 1)));
        }
        Ok(Some(ClusterSettings {
            name,
            node_id: u32::try_from(node_id).ok(),
            poll_interval: Duration::from_millis(self.int("cluster.poll.interval.ms", 10, 60_000)? as u64),
            lease_wait: Duration::from_millis(self.int("cluster.lease.wait.ms", 0, 300_000)? as u64),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigSources;

    #[test]
    fn cluster_mode_needs_bookkeeper_and_zookeeper() {
        let mut s = ConfigSources::new();
        assert!(s.resolve(2).unwrap().cluster.is_none());
        s.set("cluster.name", "prod").unwrap();
        assert_eq!(s.resolve(2).unwrap_err().key, "cluster.name");
        s.set("storage", "bookkeeper").unwrap();
        let c = s.resolve(2).unwrap().cluster.unwrap();
        assert_eq!((c.name.as_str(), c.node_id), ("prod", None));
        s.set("node.id", "7").unwrap();
        assert_eq!(s.resolve(2).unwrap().cluster.unwrap().node_id, Some(7));
        s.set("metadata.store", "zk://127.0.0.1:2181").unwrap();
        s.set("node.id", "3000000").unwrap();
        assert_eq!(s.resolve(2).unwrap_err().key, "node.id");
        s.set("node.id", "1").unwrap();
        s.set("cluster.name", "a b").unwrap();
        assert_eq!(s.resolve(2).unwrap_err().key, "cluster.name");
    }
}
