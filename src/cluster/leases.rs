//! Partition leases: an ephemeral node per partition, created by the node that serves it. Only
//! one session can hold it, and it goes when that session does, so a node that is cut off
//! from ZooKeeper long enough loses its partitions, and another may take them.

use super::membership::remove_if_ours;
use super::{Claim, ROOT};
use crate::meta::topic_name::TopicName;
use crate::zookeeper::{CreateMode, ZkError, ZooKeeper};

pub fn lease_path(topic: &TopicName, partition: i32) -> String {
    format!("{ROOT}/leases/{}/{partition}", topic.metadata_path())
}

/// Takes the lease for `claim`. `Ok(false)`: someone else holds it.
pub async fn acquire(zk: &ZooKeeper, path: &str, claim: &Claim) -> Result<bool, ZkError> {
    match zk.create(path, serde_json::to_vec(claim).unwrap_or_default(), CreateMode::Ephemeral, true).await {
        Ok(_) => Ok(true),
        Err(ZkError::NodeExists) => Ok(holder(zk, path).await?.is_some_and(|c| c.incarnation == claim.incarnation)),
        Err(e) => Err(e),
    }
}

/// Who holds the lease at `path`.
pub async fn holder(zk: &ZooKeeper, path: &str) -> Result<Option<Claim>, ZkError> {
    Ok(zk.get(path).await?.and_then(|(d, _)| serde_json::from_slice(&d).ok()))
}

/// Gives the lease up, if `claim`'s process holds it.
pub async fn release(zk: &ZooKeeper, path: &str, claim: &Claim) -> Result<(), ZkError> {
    remove_if_ours(zk, path, |d| serde_json::from_slice::<Claim>(d).is_ok_and(|c| c.incarnation == claim.incarnation))
        .await
}
