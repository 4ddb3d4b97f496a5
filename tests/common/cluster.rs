//! A kopd cluster for tests: several kopd processes (2 cores each) over one ZooKeeper and three
//! bookies, in one `cluster.name`, with the controls the cluster tests need (stop, kill -9,
//! SIGSTOP/SIGCONT, restart).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::bookkeeper::BookKeeperCluster;
use super::{Conn, Kopd, free_ports, temp_dir};

pub const CORES: u16 = 2;
pub const SESSION_MS: u64 = 4000;

/// One kopd node of the test cluster.
pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
    pub kopd: Option<Kopd>,
}

pub struct Cluster {
    pub bk: BookKeeperCluster,
    pub chroot: String,
    pub nodes: Vec<Node>,
    /// The nodes' `zookeeper.session.timeout.ms`.
    pub session_ms: u64,
}

impl Cluster {
    pub fn start(name: &str, nodes: usize) -> Cluster {
        Self::start_with_session(name, nodes, SESSION_MS)
    }

    /// A cluster whose nodes' ZooKeeper sessions last `session_ms`: a test that pauses a node
    /// for reasons other than its session keeps clear of expiry on a slow machine this way.
    pub fn start_with_session(name: &str, nodes: usize, session_ms: u64) -> Cluster {
        if super::test_storage() != "local" {
            // This suite starts its own ZooKeeper and bookies whatever the pass.
            eprintln!("running with a cluster of its own (KOPD_TEST_STORAGE is ignored here)");
        }
        let bk = BookKeeperCluster::start(3);
        let mut c = Cluster { bk, chroot: format!("/{name}"), nodes: Vec::new(), session_ms };
        for _ in 0..nodes {
            c.add_node();
        }
        c
    }

    pub fn args(&self) -> Vec<String> {
        [
            "--storage".to_string(),
            "bookkeeper".into(),
            "--set".into(),
            format!("metadata.service.uri={}", self.bk.metadata_service_uri()),
            "--set".into(),
            format!("metadata.store=zk://{}{}", self.bk.zk_connect(), self.chroot),
            "--set".into(),
            "cluster.name=test".into(),
            "--set".into(),
            format!("zookeeper.session.timeout.ms={}", self.session_ms),
            "--set".into(),
            "cluster.poll.interval.ms=100".into(),
            "--set".into(),
            "admin.listen=".into(),
            "--set".into(),
            "shutdown.timeout.ms=10000".into(),
        ]
        .into()
    }

    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let dir = temp_dir(&format!("cluster-{}-n{i}", self.chroot.trim_start_matches('/')));
        let port = free_ports(CORES);
        let kopd = Kopd::start_exact(&dir, CORES, port, &self.args());
        self.nodes.push(Node { dir, port, kopd: Some(kopd) });
        i
    }

    /// Starts a stopped node again (on fresh ports: the node is its `node.id`, kept in its
    /// data directory, and its old ports may have been taken meanwhile).
    pub fn restart(&mut self, i: usize) {
        let args = self.args();
        let n = &mut self.nodes[i];
        assert!(n.kopd.is_none());
        n.port = free_ports(CORES);
        n.kopd = Some(Kopd::start_exact(&n.dir, CORES, n.port, &args));
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port))
    }

    pub fn conn(&self, i: usize) -> Conn {
        Conn::connect(self.addr(i))
    }

    /// Node index of a broker id (by port: core c of node i listens on port + c).
    pub fn node_of(&self, brokers: &HashMap<i32, SocketAddr>, broker: i32) -> Option<usize> {
        let port = brokers.get(&broker)?.port();
        self.nodes.iter().position(|n| (n.port..n.port + CORES).contains(&port))
    }

    /// Sends `signal` ("-STOP", "-CONT") to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].kopd.as_ref().expect("running").pid();
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut k) = self.nodes[i].kopd.take() {
            k.kill9();
        }
    }

    pub fn stop(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        if let Some(mut k) = self.nodes[i].kopd.take() {
            assert!(k.stop().success(), "node {i} did not stop cleanly");
        }
        t.elapsed()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}
