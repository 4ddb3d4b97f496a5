//! A node's place in the cluster: its id (configured, or allocated once from ZooKeeper and
//! kept in `data.dir/node.id`), its registration (an ephemeral node with its listeners), the
//! live nodes, and the leader election (an ephemeral node only one session can hold).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Claim, NodeInfo, ROOT};
use crate::zookeeper::{CreateMode, ZkError, ZooKeeper};

const NODE_ID_FILE: &str = "node.id";

fn nodes_path() -> String {
    format!("{ROOT}/nodes")
}

fn node_path(id: u32) -> String {
    format!("{ROOT}/nodes/{id}")
}

fn leader_path() -> String {
    format!("{ROOT}/leader")
}

/// The paths whose changes mean the membership or the leadership changed (for watches).
pub fn watched_paths() -> [String; 2] {
    [nodes_path(), leader_path()]
}

/// This node's id: `node.id` if set, else the one kept in `data.dir/node.id`, else a new one
/// from ZooKeeper (a sequential node: ids are never handed out twice), written down at once.
pub async fn node_id(zk: &ZooKeeper, configured: Option<u32>, data_dir: &Path) -> anyhow::Result<u32> {
    let file = data_dir.join(NODE_ID_FILE);
    let kept = match std::fs::read_to_string(&file) {
        Ok(s) => {
            Some(s.trim().parse::<u32>().map_err(|_| anyhow::anyhow!("{} does not hold a node id", file.display()))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    };
    match (configured, kept) {
        (Some(c), Some(k)) if c != k => anyhow::bail!(
            "config key `node.id`: {c}, but {} says this data directory belongs to node {k}",
            file.display()
        ),
        (Some(c), _) => Ok(c),
        (None, Some(k)) => Ok(k),
        (None, None) => {
            let created = zk
                .create(&format!("{ROOT}/node-ids/id-"), Vec::new(), CreateMode::PersistentSequential, true)
                .await
                .map_err(|e| anyhow::anyhow!("cannot allocate a node id in ZooKeeper: {e}"))?;
            let seq: u32 = created
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unexpected sequential node {created}"))?;
            // Node 0 is the single-node default's; allocated ids start at 1.
            let id = seq + 1;
            let tmp = data_dir.join("node.id.tmp");
            std::fs::write(&tmp, format!("{id}\n"))
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &file))
                .map_err(|e| anyhow::anyhow!("cannot keep the node id in {}: {e}", file.display()))?;
            tracing::info!(node = id, "node id allocated");
            Ok(id)
        }
    }
}

/// Registers `me` once. `Ok(false)`: another session holds the node's registration (an
/// earlier process of this node, until its session expires, or a second process with the
/// same `node.id`).
pub async fn try_register(zk: &ZooKeeper, me: &NodeInfo) -> Result<bool, ZkError> {
    let data = serde_json::to_vec(me).unwrap_or_default();
    match zk.create(&node_path(me.id), data, CreateMode::Ephemeral, true).await {
        Ok(_) => Ok(true),
        Err(ZkError::NodeExists) => match zk.get(&node_path(me.id)).await? {
            // Created by this process with the answer lost.
            Some((d, _)) => Ok(serde_json::from_slice::<NodeInfo>(&d).is_ok_and(|n| n.incarnation == me.incarnation)),
            None => Ok(false),
        },
        Err(e) => Err(e),
    }
}

/// Registers `me` at startup (on a plain thread, blocking), waiting out an earlier process's
/// registration (kill -9 leaves it until its session expires). Fails if it is still held
/// after `limit`.
pub fn register(zk: &ZooKeeper, me: &NodeInfo, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut said = false;
    loop {
        match futures_lite::future::block_on(try_register(zk, me)) {
            Ok(true) => return Ok(()),
            Ok(false) if start.elapsed() < limit => {
                if !said {
                    tracing::info!(
                        node = me.id,
                        "node still registered by an earlier process; waiting for its session to end"
                    );
                    said = true;
                }
            }
            Ok(false) => anyhow::bail!(
                "config key `node.id`: node {} is registered by another live kopd process (still after {:?})",
                me.id,
                limit
            ),
            Err(e) if start.elapsed() < limit => tracing::debug!(error = %e, "cannot register yet"),
            Err(e) => anyhow::bail!("cannot register node {} in ZooKeeper: {e}", me.id),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes `me`'s registration (a planned stop: the leader moves its partitions at once).
pub async fn deregister(zk: &ZooKeeper, me: &NodeInfo) -> Result<(), ZkError> {
    remove_if_ours(zk, &node_path(me.id), |d| {
        serde_json::from_slice::<NodeInfo>(d).is_ok_and(|n| n.incarnation == me.incarnation)
    })
    .await
}

/// Every registered node, by id.
pub async fn live_nodes(zk: &ZooKeeper) -> Result<Vec<NodeInfo>, ZkError> {
    let Some(children) = zk.children(&nodes_path()).await? else { return Ok(Vec::new()) };
    let paths: Vec<String> = children.iter().map(|c| format!("{}/{c}", nodes_path())).collect();
    let reads = paths.iter().map(|p| zk.get(p));
    let mut nodes = Vec::new();
    for r in futures_util::future::join_all(reads).await {
        if let Some((data, _)) = r? {
            match serde_json::from_slice::<NodeInfo>(&data) {
                Ok(n) => nodes.push(n),
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable node registration"),
            }
        }
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// The leading node's claim, claiming leadership for `me` when nobody holds it.
pub async fn leader(zk: &ZooKeeper, me: &Claim) -> Result<Option<Claim>, ZkError> {
    if let Some((d, _)) = zk.get(&leader_path()).await? {
        return Ok(serde_json::from_slice(&d).ok());
    }
    match zk.create(&leader_path(), serde_json::to_vec(me).unwrap_or_default(), CreateMode::Ephemeral, true).await {
        Ok(_) => {
            tracing::info!(node = me.node, "this node leads the cluster");
            Ok(Some(me.clone()))
        }
        Err(ZkError::NodeExists) => {
            Ok(zk.get(&leader_path()).await?.and_then(|(d, _)| serde_json::from_slice(&d).ok()))
        }
        Err(e) => Err(e),
    }
}

/// Gives leadership up (a planned stop), if `me` holds it.
pub async fn resign(zk: &ZooKeeper, me: &Claim) -> Result<(), ZkError> {
    remove_if_ours(zk, &leader_path(), |d| {
        serde_json::from_slice::<Claim>(d).is_ok_and(|c| c.incarnation == me.incarnation)
    })
    .await
}

/// Deletes `path` if `ours` says its data is this process's (at the version read: a node
/// re-created by someone else since stays).
pub async fn remove_if_ours(zk: &ZooKeeper, path: &str, ours: impl Fn(&[u8]) -> bool) -> Result<(), ZkError> {
    match zk.get(path).await? {
        Some((d, stat)) if ours(&d) => match zk.delete(path, Some(stat.version)).await {
            Ok(()) | Err(ZkError::NoNode) | Err(ZkError::BadVersion) => Ok(()),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    }
}
