//! The ZooKeeper metadata store: kopd's metadata at Pulsar's paths in a ZooKeeper ensemble, so
//! Pulsar's tools see kopd's topics and managed ledgers.
//!
//! On open it loads the subtrees kopd uses ([`ROOTS`]) into memory; `get`/`scan` answer from
//! there, and `commit` is one ZooKeeper `multi` (all or nothing). Layout conventions:
//! - A node with data is a value; a node without data is structure (a parent such as
//!   `/managed-ledgers/public`), never returned by `get`/`scan`. So empty values are refused.
//! - Put creates the node (and its missing ancestors, empty, in the same multi) or sets its data
//!   if it is still at the version this store last saw: a write never silently replaces what
//!   another writer (another kopd node, or an earlier owner of a partition) put there since.
//! - Delete removes the node with everything below it, deepest first, in the same multi: a
//!   managed ledger goes with its cursors even when they are Pulsar's and not kopd's.
//! - If ZooKeeper holds something the cache did not know (another client wrote there), nothing
//!   was applied and the touched paths are re-read. A commit of deletes only is then planned
//!   and sent once more (children the cache missed go too); one with a put fails with
//!   [`StoreError::Conflict`], for the caller to decide again on what is there now (the
//!   controller re-plans a topic change; a managed ledger has lost its partition).
//! - When the outcome of a multi is unknown (the connection or session broke under it), the
//!   touched paths are re-read before the next commit, so the cache never keeps disagreeing
//!   with ZooKeeper. While there is no session, commits fail at once with
//!   [`StoreError::Unavailable`].
//! - A ZooKeeper request is limited to about 1 MB (jute.maxbuffer); a commit whose multi would
//!   be larger is refused with [`StoreError::Rejected`] rather than cut the session.
//!
//! The store runs on the metadata-store thread (or at startup on the main thread), so it
//! blocks on the session handle with `futures_lite::future::block_on`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_lite::future::block_on;

use super::pins::{Expected, Pins};
use super::{MetadataStore, StoreError, StoreOp};
use crate::zookeeper::{CreateMode, Op, SessionState, ZkError, ZooKeeper, ancestors, valid_path};

/// The subtrees kopd reads and writes: Pulsar's topic catalog and managed ledgers, and kopd's
/// own state.
pub const ROOTS: &[&str] = &["/admin/partitioned-topics", "/managed-ledgers", "/kopd"];
/// Largest multi request sent (ZooKeeper's default jute.maxbuffer is 1 MiB - 1, and a bigger
/// request makes the server drop the connection).
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
/// Reads sent at once while loading a subtree.
const LOAD_BATCH: usize = 512;

pub struct ZooKeeperMetadataStore {
    zk: ZooKeeper,
    /// Nodes with data, by path: what `get` and `scan` answer.
    values: BTreeMap<String, Vec<u8>>,
    /// Every node known to exist under (and above) the roots, values and structure alike.
    nodes: BTreeSet<String>,
    /// The ZooKeeper data version of every known node (a put sets data only at this version).
    versions: BTreeMap<String, i32>,
    /// Paths touched by a commit whose outcome is unknown; re-read before the next commit.
    unsure: BTreeSet<String>,
    /// Nodes written only over their own writer's versions (see [`MetadataStore::pin`]).
    pins: Pins,
}

fn unavailable(e: ZkError) -> StoreError {
    match e {
        ZkError::Stopped => StoreError::Stopped,
        e => StoreError::Unavailable(e.to_string()),
    }
}

fn under(path: &str, root: &str) -> bool {
    path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// Paths strictly below `path` in `set`, in path order.
fn descendants<'a>(set: &'a BTreeSet<String>, path: &str) -> impl Iterator<Item = &'a String> {
    let prefix = format!("{path}/");
    set.range(prefix.clone()..).take_while(move |p| p.starts_with(&prefix))
}

/// What a commit sends, and how it changes the cache if ZooKeeper applies it.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    ops: Vec<Op>,
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
    /// The version each node set or created by this plan has once it is applied.
    versions: BTreeMap<String, i32>,
    bytes: usize,
}

impl Plan {
    fn push(&mut self, op: Op) {
        // Path, data and the fixed fields (headers, ACL, flags) of one op, generously.
        let (path, data) = match &op {
            Op::Create { path, data, .. } | Op::SetData { path, data, .. } => (path.len(), data.len()),
            Op::Delete { path, .. } | Op::Check { path, .. } => (path.len(), 0),
        };
        self.bytes += path + data + 64;
        self.ops.push(op);
    }

    fn exists(&self, nodes: &BTreeSet<String>, path: &str) -> bool {
        self.created.contains(path) || (nodes.contains(path) && !self.deleted.contains(path))
    }
}

/// Checks every op, then turns the ops into ZooKeeper operations against the known tree (and
/// the known versions: a set expects the version last seen, or a pinned node its pin's).
fn plan(
    nodes: &BTreeSet<String>,
    versions: &BTreeMap<String, i32>,
    pins: &Pins,
    ops: &[StoreOp],
) -> Result<Plan, StoreError> {
    let mut p = Plan::default();
    for op in ops {
        let path = match op {
            StoreOp::Put { path, .. } | StoreOp::Delete { path } => path,
        };
        if !valid_path(path) || !ROOTS.iter().any(|r| under(path, r) && path != *r) {
            return Err(StoreError::Rejected(format!(
                "`{path}` is not a path below {} (the subtrees this store keeps)",
                ROOTS.join(", ")
            )));
        }
        match op {
            StoreOp::Put { path, value } => {
                if value.is_empty() {
                    return Err(StoreError::Rejected(format!(
                        "empty value for `{path}`: a node without data is structure in ZooKeeper"
                    )));
                }
                // A pinned node's first put in this commit goes over the pin's version.
                let touched_here = p.versions.contains_key(path) || p.deleted.contains(path);
                match pins.expected(path)? {
                    Expected::Version(Some(v)) if !touched_here => {
                        p.push(Op::SetData { path: path.clone(), data: value.clone(), version: Some(v) });
                        p.versions.insert(path.clone(), v.wrapping_add(1));
                        continue;
                    }
                    Expected::Version(None) if !touched_here && p.exists(nodes, path) => {
                        return Err(StoreError::Conflict(format!("`{path}` was created by another writer")));
                    }
                    _ => {}
                }
                if p.exists(nodes, path) {
                    let expected = p.versions.get(path).or_else(|| versions.get(path)).copied();
                    p.push(Op::SetData { path: path.clone(), data: value.clone(), version: expected });
                    if let Some(v) = expected {
                        p.versions.insert(path.clone(), v.wrapping_add(1));
                    }
                    continue;
                }
                for a in ancestors(path) {
                    if !p.exists(nodes, a) {
                        p.push(Op::Create { path: a.to_string(), data: Vec::new(), mode: CreateMode::Persistent });
                        p.deleted.remove(a);
                        p.created.insert(a.to_string());
                        p.versions.insert(a.to_string(), 0);
                    }
                }
                p.push(Op::Create { path: path.clone(), data: value.clone(), mode: CreateMode::Persistent });
                p.deleted.remove(path);
                p.created.insert(path.clone());
                p.versions.insert(path.clone(), 0);
            }
            StoreOp::Delete { path } => {
                if !p.exists(nodes, path) {
                    continue;
                }
                let mut doomed: Vec<String> = descendants(nodes, path)
                    .chain(descendants(&p.created, path))
                    .filter(|d| p.exists(nodes, d))
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                // Children before parents: deepest first.
                doomed.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
                doomed.push(path.clone());
                for d in doomed {
                    p.push(Op::Delete { path: d.clone(), version: None });
                    p.created.remove(&d);
                    p.versions.remove(&d);
                    p.deleted.insert(d);
                }
            }
        }
    }
    if p.bytes > MAX_REQUEST_BYTES {
        return Err(StoreError::Rejected(format!(
            "commit of about {} bytes ({} ZooKeeper operations) exceeds the {MAX_REQUEST_BYTES}-byte \
             ZooKeeper request limit (jute.maxbuffer)",
            p.bytes,
            p.ops.len()
        )));
    }
    Ok(p)
}

impl ZooKeeperMetadataStore {
    /// Connects (`connect` = "host:port[,host:port][/chroot]") and loads kopd's subtrees.
    pub fn open(connect: &str, session_timeout: Duration, queue_capacity: usize) -> Result<Self, StoreError> {
        let zk = ZooKeeper::connect(connect, session_timeout, queue_capacity)
            .map_err(|e| StoreError::Unavailable(format!("cannot open a ZooKeeper session with {connect}: {e}")))?;
        Self::with_session(zk)
    }

    /// Loads kopd's subtrees through an open session.
    pub fn with_session(zk: ZooKeeper) -> Result<Self, StoreError> {
        let mut s = Self {
            zk,
            values: BTreeMap::new(),
            nodes: BTreeSet::new(),
            versions: BTreeMap::new(),
            unsure: BTreeSet::new(),
            pins: Pins::default(),
        };
        for root in ROOTS {
            s.reread(root).map_err(unavailable)?;
        }
        tracing::info!(nodes = s.nodes.len(), values = s.values.len(), "ZooKeeper metadata loaded");
        Ok(s)
    }

    /// Re-reads `path`: whether its ancestors exist, and its whole subtree.
    fn reread(&mut self, path: &str) -> Result<(), ZkError> {
        // The ancestors in one round trip (a partition's path is five levels deep, and taking
        // a partition over re-reads it), applied outermost first as if read one by one.
        let outer: Vec<String> = ancestors(path).map(str::to_string).collect();
        let zk = &self.zk;
        let read = block_on(futures_util::future::join_all(outer.iter().map(|a| zk.get(a))));
        for (a, r) in outer.into_iter().zip(read) {
            if let Some((data, stat)) = r? {
                if data.is_empty() {
                    self.values.remove(&a);
                } else {
                    self.values.insert(a.clone(), data);
                }
                self.versions.insert(a.clone(), stat.version);
                self.nodes.insert(a);
            } else {
                self.forget(&a);
                return Ok(());
            }
        }
        self.forget(path);
        let zk = self.zk.clone();
        let mut frontier = vec![path.to_string()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for batch in frontier.chunks(LOAD_BATCH) {
                let zk = &zk;
                let reads = batch.iter().map(|p| async move {
                    let data = zk.get(p).await?;
                    let children = zk.children(p).await?;
                    Ok::<_, ZkError>((p, data, children))
                });
                for r in block_on(futures_util::future::join_all(reads)) {
                    let (p, data, children) = r?;
                    // Gone between listing and reading: another client deleted it.
                    let (Some((data, stat)), Some(children)) = (data, children) else { continue };
                    self.nodes.insert(p.clone());
                    self.versions.insert(p.clone(), stat.version);
                    if !data.is_empty() {
                        self.values.insert(p.clone(), data);
                    }
                    next.extend(children.into_iter().map(|c| format!("{p}/{c}")));
                }
            }
            frontier = next;
        }
        Ok(())
    }

    /// Drops `path` and its subtree from the cache.
    fn forget(&mut self, path: &str) {
        let below: Vec<String> = descendants(&self.nodes, path).cloned().collect();
        for p in below.iter().map(String::as_str).chain([path]) {
            self.nodes.remove(p);
            self.values.remove(p);
            self.versions.remove(p);
        }
    }

    fn refresh_all(&mut self, paths: &BTreeSet<String>) -> Result<(), ZkError> {
        for p in paths {
            self.reread(p)?;
        }
        Ok(())
    }

    /// Records what ZooKeeper applied: the plan's final tree, and the values op by op (a put
    /// followed by a delete of the same path leaves nothing).
    fn apply(&mut self, plan: Plan, ops: &[StoreOp]) {
        for d in &plan.deleted {
            self.forget(d);
        }
        self.nodes.extend(plan.created);
        self.versions.extend(plan.versions);
        for op in ops {
            match op {
                StoreOp::Put { path, value } => {
                    self.values.insert(path.clone(), value.clone());
                }
                StoreOp::Delete { path } => {
                    let prefix = format!("{path}/");
                    let below: Vec<String> = self
                        .values
                        .range(prefix.clone()..)
                        .take_while(|(p, _)| p.starts_with(&prefix))
                        .map(|(p, _)| p.clone())
                        .collect();
                    for p in below.iter().chain([path]) {
                        self.values.remove(p);
                    }
                }
            }
        }
    }

    /// The session handle (for tests and tools that read ZooKeeper directly).
    pub fn session(&self) -> &ZooKeeper {
        &self.zk
    }
}

impl MetadataStore for ZooKeeperMetadataStore {
    fn get(&self, path: &str) -> Option<&[u8]> {
        self.values.get(path).map(Vec::as_slice)
    }

    fn scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.values
            .range(prefix.to_string()..)
            .take_while(|(p, _)| p.starts_with(prefix))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect()
    }

    fn commit(&mut self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        // Checked before anything is sent, so a commit that can never succeed says so at once.
        plan(&self.nodes, &self.versions, &Pins::default(), &ops)?;
        if self.zk.session_state() != SessionState::Connected {
            return Err(StoreError::Unavailable("no ZooKeeper session".into()));
        }
        if !self.unsure.is_empty() {
            let unsure = std::mem::take(&mut self.unsure);
            if let Err(e) = self.refresh_all(&unsure) {
                self.unsure = unsure;
                return Err(unavailable(e));
            }
            let (nodes, versions, values) = (&self.nodes, &self.versions, &self.values);
            self.pins.settle(|path| {
                let version = nodes.contains(path).then(|| versions.get(path).copied()).flatten();
                (version, values.get(path).map(Vec::as_slice))
            });
        }
        let touched: BTreeSet<String> = ops
            .iter()
            .map(|op| match op {
                StoreOp::Put { path, .. } | StoreOp::Delete { path } => path.clone(),
            })
            .collect();
        let puts = ops.iter().any(|op| matches!(op, StoreOp::Put { .. }));
        let mut retried = false;
        loop {
            let p = plan(&self.nodes, &self.versions, &self.pins, &ops)?;
            match block_on(self.zk.multi(p.ops.clone())) {
                Ok(()) => {
                    self.pins.applied(&p.versions, p.deleted.iter());
                    self.apply(p, &ops);
                    return Ok(());
                }
                Err(e @ (ZkError::NoNode | ZkError::NodeExists | ZkError::NotEmpty | ZkError::BadVersion)) => {
                    // ZooKeeper holds what the cache did not know; nothing was applied. Read it.
                    tracing::info!(error = %e, "ZooKeeper disagreed with the metadata cache; re-reading");
                    if let Err(e) = self.refresh_all(&touched) {
                        self.unsure.extend(touched);
                        return Err(unavailable(e));
                    }
                    // Deletes take whatever is there (children the cache missed, nodes already
                    // gone): plan them again. A put met another writer's value: the caller
                    // decides again.
                    let deletes_only = matches!(e, ZkError::NotEmpty) || (e == ZkError::NoNode && !puts);
                    if retried || !deletes_only {
                        return Err(StoreError::Conflict(e.to_string()));
                    }
                    retried = true;
                }
                Err(e) if e.outcome_unknown() => {
                    // The last value put to each path that the commit leaves in place.
                    let mut last: BTreeMap<&String, &Vec<u8>> = BTreeMap::new();
                    for op in &ops {
                        match op {
                            StoreOp::Put { path, value } => last.insert(path, value),
                            StoreOp::Delete { path } => last.remove(path),
                        };
                    }
                    for d in &p.deleted {
                        self.pins.release(d);
                    }
                    self.pins.unknown(last.into_iter(), &p.versions);
                    self.unsure.extend(touched);
                    return Err(unavailable(e));
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    fn refresh(&mut self, path: &str) -> Result<(), StoreError> {
        if !valid_path(path) || !ROOTS.iter().any(|r| under(path, r)) {
            return Err(StoreError::Rejected(format!("`{path}` is not below {}", ROOTS.join(", "))));
        }
        if self.zk.session_state() != SessionState::Connected {
            return Err(StoreError::Unavailable("no ZooKeeper session".into()));
        }
        self.reread(path).map_err(unavailable)
    }

    fn pin(&mut self, path: &str) {
        let version = self.nodes.contains(path).then(|| self.versions.get(path).copied()).flatten();
        self.pins.pin(path, version);
    }

    fn release_pin(&mut self, path: &str) {
        self.pins.release(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, v: &[u8]) -> StoreOp {
        StoreOp::Put { path: path.into(), value: v.to_vec() }
    }

    fn del(path: &str) -> StoreOp {
        StoreOp::Delete { path: path.into() }
    }

    fn tree(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.ops
            .iter()
            .map(|op| match op {
                Op::Create { path, .. } => format!("create {path}"),
                Op::SetData { path, .. } => format!("set {path}"),
                Op::Delete { path, .. } => format!("delete {path}"),
                Op::Check { path, .. } => format!("check {path}"),
            })
            .collect()
    }

    /// The version each op of a plan expects (sets only).
    fn set_versions(p: &Plan) -> Vec<Option<i32>> {
        p.ops
            .iter()
            .map(|op| match op {
                Op::SetData { version, .. } => *version,
                _ => None,
            })
            .collect()
    }

    #[test]
    fn put_creates_missing_ancestors_then_sets_existing_nodes() {
        let nodes = tree(&["/kopd"]);
        let p = plan(
            &nodes,
            &BTreeMap::new(),
            &Pins::default(),
            &[put("/kopd/assignment/a/b", b"1"), put("/kopd/assignment/a/c", b"2")],
        )
        .unwrap();
        assert_eq!(
            kinds(&p),
            [
                "create /kopd/assignment",
                "create /kopd/assignment/a",
                "create /kopd/assignment/a/b",
                "create /kopd/assignment/a/c"
            ]
        );
        // Sets expect the version last seen, and a second set in one commit the one after.
        let versions = BTreeMap::from([("/kopd/cluster".to_string(), 4)]);
        let p = plan(
            &tree(&["/kopd", "/kopd/cluster"]),
            &versions,
            &Pins::default(),
            &[put("/kopd/cluster", b"x"), put("/kopd/cluster", b"y")],
        )
        .unwrap();
        assert_eq!(kinds(&p), ["set /kopd/cluster", "set /kopd/cluster"]);
        assert_eq!(set_versions(&p), [Some(4), Some(5)]);
        assert_eq!(p.versions.get("/kopd/cluster"), Some(&6));
    }

    #[test]
    fn a_pinned_node_is_set_over_its_pin_not_over_a_refreshed_version() {
        let ml = "/managed-ledgers/t/n/persistent/x-partition-0";
        let nodes = tree(&["/managed-ledgers", ml]);
        // The cache was re-read after another writer's change (version 5); the pin is older.
        let versions = BTreeMap::from([(ml.to_string(), 5)]);
        let mut pins = Pins::default();
        pins.pin(ml, Some(3));
        let p = plan(&nodes, &versions, &pins, &[put(ml, b"a"), put(ml, b"b")]).unwrap();
        assert_eq!(set_versions(&p), [Some(3), Some(4)]);
        // Pinned while absent: another writer's node is a conflict, not a set.
        pins.pin(ml, None);
        assert!(matches!(plan(&nodes, &versions, &pins, &[put(ml, b"a")]), Err(StoreError::Conflict(_))));
        let created = plan(&tree(&["/managed-ledgers"]), &versions, &pins, &[put(ml, b"a")]).unwrap();
        assert_eq!(kinds(&created).last(), Some(&format!("create {ml}")));
        pins.release(ml);
        assert!(matches!(plan(&nodes, &versions, &pins, &[put(ml, b"a")]), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn delete_takes_the_subtree_deepest_first_and_skips_absent_nodes() {
        let ml = "/managed-ledgers/t/n/persistent/x";
        let nodes = tree(&["/managed-ledgers", ml, &format!("{ml}/kopd-group"), &format!("{ml}/pulsar-sub")]);
        // kopd deletes its own cursor, then the ledger; Pulsar's cursor goes with the ledger.
        let p = plan(
            &nodes,
            &BTreeMap::new(),
            &Pins::default(),
            &[del(&format!("{ml}/kopd-group")), del(ml), del("/managed-ledgers/none")],
        )
        .unwrap();
        assert_eq!(
            kinds(&p),
            [format!("delete {ml}/kopd-group"), format!("delete {ml}/pulsar-sub"), format!("delete {ml}")]
        );
        // Delete then put again in one commit: the node is created anew.
        let p = plan(&nodes, &BTreeMap::new(), &Pins::default(), &[del(ml), put(ml, b"v")]).unwrap();
        assert_eq!(kinds(&p).last().map(String::as_str), Some(format!("create {ml}").as_str()));
        // Put under a path created in the same commit, then delete both.
        let p = plan(
            &tree(&["/kopd"]),
            &BTreeMap::new(),
            &Pins::default(),
            &[put("/kopd/a", b"1"), put("/kopd/a/b", b"2"), del("/kopd/a")],
        )
        .unwrap();
        assert_eq!(kinds(&p), ["create /kopd/a", "create /kopd/a/b", "delete /kopd/a/b", "delete /kopd/a"]);
        assert!(p.created.is_empty());
    }

    #[test]
    fn bad_paths_empty_values_and_oversized_commits_are_refused() {
        let nodes = tree(&[]);
        for bad in
            [put("/elsewhere/x", b"1"), put("/kopd", b"1"), put("/kopd/", b"1"), del("/kopdx/y"), put("/kopd/a", b"")]
        {
            assert!(
                matches!(
                    plan(&nodes, &BTreeMap::new(), &Pins::default(), std::slice::from_ref(&bad)),
                    Err(StoreError::Rejected(_))
                ),
                "{bad:?}"
            );
        }
        assert!(
            plan(&nodes, &BTreeMap::new(), &Pins::default(), &[put("/kopd/big", &vec![1; MAX_REQUEST_BYTES - 200])])
                .is_ok()
        );
        let e = plan(&nodes, &BTreeMap::new(), &Pins::default(), &[put("/kopd/big", &vec![1; MAX_REQUEST_BYTES])])
            .unwrap_err();
        assert!(e.to_string().contains("jute.maxbuffer"), "{e}");
        // Many small values add up as well.
        let many: Vec<_> = (0..20).map(|i| put(&format!("/kopd/v{i}"), &vec![1; 60_000])).collect();
        assert!(matches!(plan(&nodes, &BTreeMap::new(), &Pins::default(), &many), Err(StoreError::Rejected(_))));
    }
}
