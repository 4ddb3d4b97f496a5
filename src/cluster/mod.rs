//! Cluster mode: several kopd nodes serving one Kafka cluster over one ZooKeeper and one set of
//! bookies (`cluster.name`). Data never moves between nodes: a partition's ledgers are in
//! BookKeeper, so moving a partition is moving its ownership.
//!
//! - Membership ([`membership`]): each node registers an ephemeral node with its listeners and
//!   cores; broker id = node id * 1000 + core index.
//! - Ownership: the catalog (written by any node's controller, conditionally) says which broker
//!   owns each partition; the cluster's leader (an ephemeral election) moves partitions off
//!   nodes that left and evens out load. A broker serves a partition only while its node holds
//!   the partition's lease ([`leases`]), an ephemeral node of its ZooKeeper session: a node
//!   that loses its session loses every lease and stops acknowledging at once. Opening the
//!   partition fences and recovers the previous owner's last ledger, so a stale owner can
//!   write nothing more.
//! - [`agent`] runs all of it on core 0 and tells every core what it serves.
//!
//! ZooKeeper layout (beside Pulsar's paths, under [`ROOT`]):
//! - `/kopd-cluster/nodes/<node id>`: ephemeral, a [`NodeInfo`].
//! - `/kopd-cluster/leader`: ephemeral, the leading node's [`Claim`].
//! - `/kopd-cluster/leases/<tenant>/<ns>/persistent/<topic>/<partition>`: ephemeral, a [`Claim`].
//! - `/kopd-cluster/node-ids/id-`: sequential nodes that hand out node ids.

pub mod agent;
pub mod leases;
pub mod membership;

use serde::{Deserialize, Serialize};

use crate::config::{BROKERS_PER_NODE, Config};

pub const ROOT: &str = "/kopd-cluster";

/// Kafka broker id of `core` on node `node`.
pub fn broker_id(node: u32, core: usize) -> i32 {
    (node * BROKERS_PER_NODE + core as u32) as i32
}

/// The node a broker id belongs to.
pub fn node_of(broker: u32) -> u32 {
    broker / BROKERS_PER_NODE
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u32,
    /// Host advertised to Kafka clients.
    pub host: String,
    /// Core 0's port; core i listens on port + i.
    pub port: u16,
    pub cores: u32,
    /// Random per process: tells this process's ephemeral nodes from an earlier one's.
    pub incarnation: String,
}

impl NodeInfo {
    pub fn brokers(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.cores).map(|c| self.id * BROKERS_PER_NODE + c)
    }
}

/// Who holds an ephemeral claim (the leadership, a lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub node: u32,
    pub incarnation: String,
    /// For a lease: the broker (core) serving the partition, and its leader epoch.
    #[serde(default)]
    pub broker: u32,
    #[serde(default)]
    pub epoch: i32,
}

/// What every core knows of the cluster: the live nodes and the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Sorted by id.
    pub nodes: Vec<NodeInfo>,
    /// The broker id Metadata names as controller (the leading node's core 0).
    pub controller: i32,
}

impl ClusterView {
    /// A single node: its cores are the brokers.
    pub fn single(config: &Config) -> Self {
        let node = NodeInfo {
            id: 0,
            host: config.advertised_host.clone(),
            port: config.listen.port(),
            cores: config.cores as u32,
            incarnation: String::new(),
        };
        Self { nodes: vec![node], controller: 0 }
    }

    /// Every live broker: (id, host, port), by id.
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                (0..n.cores).map(move |c| (broker_id(n.id, c as usize), n.host.clone(), n.port as i32 + c as i32))
            })
            .collect()
    }

    /// Every live broker id, sorted.
    pub fn broker_ids(&self) -> Vec<u32> {
        self.nodes.iter().flat_map(NodeInfo::brokers).collect()
    }

    pub fn is_live(&self, broker: u32) -> bool {
        self.nodes
            .binary_search_by_key(&node_of(broker), |n| n.id)
            .is_ok_and(|i| broker % BROKERS_PER_NODE < self.nodes[i].cores)
    }

    /// Host and port of a live broker.
    pub fn endpoint(&self, broker: u32) -> Option<(String, i32)> {
        let n = &self.nodes[self.nodes.binary_search_by_key(&node_of(broker), |n| n.id).ok()?];
        let core = broker % BROKERS_PER_NODE;
        (core < n.cores).then(|| (n.host.clone(), n.port as i32 + core as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, port: u16, cores: u32) -> NodeInfo {
        NodeInfo { id, host: "h".into(), port, cores, incarnation: String::new() }
    }

    #[test]
    fn broker_ids_and_endpoints() {
        let v = ClusterView { nodes: vec![node(1, 9092, 2), node(4, 9192, 3)], controller: 1000 };
        assert_eq!(v.broker_ids(), vec![1000, 1001, 4000, 4001, 4002]);
        assert!(v.is_live(4002) && !v.is_live(4003) && !v.is_live(2000) && !v.is_live(0));
        assert_eq!(v.endpoint(1001), Some(("h".to_string(), 9093)));
        assert_eq!(v.endpoint(4003), None);
        assert_eq!(v.brokers().len(), 5);
        assert_eq!(broker_id(4, 2), 4002);
        assert_eq!(node_of(4002), 4);
    }
}
