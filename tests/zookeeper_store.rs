//! The ZooKeeper session handle and the ZooKeeper metadata store against a real ZooKeeper
//! 3.9.5 (scripts/bookkeeper-cluster.sh through tests/common/bookkeeper.rs), and kopd running
//! with `metadata.store = zk://...`: topics survive restarts, their nodes sit at Pulsar's
//! paths, and a ZooKeeper that stops answering fails topic admin with a Kafka error until it
//! is back.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::bookkeeper::BookKeeperCluster;
use common::{Conn, Kopd, create_topic, fetch, name, produce, temp_dir};
use futures_lite::future::block_on;
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::records::Compression;
use kopd::meta::store::{MetadataStore, StoreError, StoreOp, ZooKeeperMetadataStore};
use kopd::zookeeper::{CreateMode, Op, SessionState, ZkError, ZooKeeper};

const TIMEOUT: Duration = Duration::from_secs(6);

/// One cluster for the tests that do not stop ZooKeeper; each works under its own chroot.
fn shared_cluster() -> &'static BookKeeperCluster {
    static CLUSTER: OnceLock<BookKeeperCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| BookKeeperCluster::start(1))
}

fn connect(cluster: &BookKeeperCluster, chroot: &str) -> ZooKeeper {
    ZooKeeper::connect(&format!("{}{chroot}", cluster.zk_connect()), TIMEOUT, 64).expect("ZooKeeper session")
}

/// Kopd's harness points kopd at the suite's own ZooKeeper when the suite runs on BookKeeper,
/// overriding the store these tests choose; the suite then covers the ZooKeeper store anyway.
fn kopd_store_is_ours() -> bool {
    let ours = common::test_storage() == "local";
    if !ours {
        eprintln!("skipped: KOPD_TEST_STORAGE={} chooses kopd's metadata store", common::test_storage());
    }
    ours
}

fn put(path: &str, v: &[u8]) -> StoreOp {
    StoreOp::Put { path: path.into(), value: v.to_vec() }
}

fn del(path: &str) -> StoreOp {
    StoreOp::Delete { path: path.into() }
}

#[test]
fn handle_creates_reads_and_guards_nodes() {
    let c = shared_cluster();
    let zk = connect(c, "/handle-test/root");
    assert_eq!(zk.session_state(), SessionState::Connected);
    block_on(async {
        // Parents on request only.
        assert_eq!(zk.create("/q/r", b"x".to_vec(), CreateMode::Persistent, false).await, Err(ZkError::NoNode));
        assert_eq!(zk.create("/a/b/c", b"v1".to_vec(), CreateMode::Persistent, true).await.unwrap(), "/a/b/c");
        assert_eq!(zk.create("/a/b/c", b"v".to_vec(), CreateMode::Persistent, true).await, Err(ZkError::NodeExists));
        // Existing ancestors are fine.
        zk.create("/a/b/d", Vec::new(), CreateMode::Persistent, true).await.unwrap();
        let (data, stat) = zk.get("/a/b/c").await.unwrap().unwrap();
        assert_eq!((data.as_slice(), stat.version, stat.ephemeral_owner), (&b"v1"[..], 0, 0));
        assert_eq!(zk.get("/a/b").await.unwrap().unwrap().0, Vec::<u8>::new());
        let mut kids = zk.children("/a/b").await.unwrap().unwrap();
        kids.sort();
        assert_eq!(kids, ["c", "d"]);
        assert_eq!(zk.get("/nothing").await.unwrap(), None);
        assert_eq!(zk.children("/nothing").await.unwrap(), None);

        // Sequential nodes get ZooKeeper's ten-digit counter of their parent.
        let s0 = zk.create("/seq/n-", Vec::new(), CreateMode::PersistentSequential, true).await.unwrap();
        let s1 = zk.create("/seq/n-", Vec::new(), CreateMode::EphemeralSequential, true).await.unwrap();
        assert_eq!((s0.as_str(), s1.as_str()), ("/seq/n-0000000000", "/seq/n-0000000001"));
        let eph = zk.get(&s1).await.unwrap().unwrap().1;
        assert_ne!(eph.ephemeral_owner, 0, "an ephemeral node names its session");

        // Compare-and-set on the data version.
        let st = zk.set("/a/b/c", b"v2".to_vec(), Some(0)).await.unwrap();
        assert_eq!(st.version, 1);
        assert_eq!(zk.set("/a/b/c", b"v3".to_vec(), Some(0)).await, Err(ZkError::BadVersion));
        assert_eq!(zk.set("/nothing", b"v".to_vec(), None).await, Err(ZkError::NoNode));
        assert_eq!(zk.delete("/a/b/c", Some(7)).await, Err(ZkError::BadVersion));

        // Deletes: not with children, not of absent nodes.
        assert_eq!(zk.delete("/a/b", None).await, Err(ZkError::NotEmpty));
        assert_eq!(zk.delete("/nothing", None).await, Err(ZkError::NoNode));
        zk.delete("/a/b/d", None).await.unwrap();

        // Multi is all or nothing.
        let failing = vec![
            Op::Create { path: "/m1".into(), data: b"1".to_vec(), mode: CreateMode::Persistent },
            Op::SetData { path: "/a/b/c".into(), data: b"lost".to_vec(), version: None },
            Op::Create { path: "/a".into(), data: Vec::new(), mode: CreateMode::Persistent },
        ];
        assert_eq!(zk.multi(failing).await, Err(ZkError::NodeExists));
        assert_eq!(zk.get("/m1").await.unwrap(), None);
        assert_eq!(zk.get("/a/b/c").await.unwrap().unwrap().0, b"v2");
        let stale = vec![
            Op::Create { path: "/m1".into(), data: b"1".to_vec(), mode: CreateMode::Persistent },
            Op::Check { path: "/a/b/c".into(), version: 0 },
        ];
        assert_eq!(zk.multi(stale).await, Err(ZkError::BadVersion));
        assert_eq!(zk.get("/m1").await.unwrap(), None);
        let good = vec![
            Op::Check { path: "/a/b/c".into(), version: 1 },
            Op::Create { path: "/m1".into(), data: b"1".to_vec(), mode: CreateMode::Persistent },
            Op::SetData { path: "/a/b/c".into(), data: b"v3".to_vec(), version: Some(1) },
            Op::Delete { path: "/a/b/c".into(), version: Some(2) },
        ];
        zk.multi(good).await.unwrap();
        assert_eq!(zk.get("/m1").await.unwrap().unwrap().0, b"1");
        assert_eq!(zk.get("/a/b/c").await.unwrap(), None);
    });

    // The chroot is honoured: a session without it sees the nodes below it.
    let root = connect(c, "");
    let seen = block_on(root.get("/handle-test/root/m1")).unwrap().map(|(d, _)| d);
    assert_eq!(seen.as_deref(), Some(&b"1"[..]));
    // Dropping the last handle closes the session: its ephemeral node goes at once.
    drop(zk);
    let deadline = Instant::now() + Duration::from_secs(3);
    while block_on(root.get("/handle-test/root/seq/n-0000000001")).unwrap().is_some() {
        assert!(Instant::now() < deadline, "the ephemeral node outlived its closed session");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn handle_serves_a_kopd_core() {
    // The BookKeeper client awaits the handle on its cores: many requests at once, more than
    // the queue (64) holds.
    let zk = connect(shared_cluster(), "/core-test");
    let spec = kopd::runtime::CoreSpec { index: 0, cpu: None, io_memory: 64 << 10, spin_before_park: Duration::ZERO };
    let core = kopd::runtime::start_core(spec, move || async move {
        let zk = &zk;
        let creates = (0..200)
            .map(|i| async move { zk.create(&format!("/n/{i}"), vec![i as u8], CreateMode::Persistent, true).await });
        let created = futures_util::future::join_all(creates).await;
        let reads =
            futures_util::future::join_all((0..200).map(|i| async move { zk.get(&format!("/n/{i}")).await })).await;
        let kids = zk.children("/n").await;
        (created, reads, kids)
    })
    .unwrap();
    let (created, reads, kids) = core.join().unwrap();
    assert!(created.iter().all(Result::is_ok), "{:?}", created.iter().find(|r| r.is_err()));
    for (i, r) in reads.into_iter().enumerate() {
        assert_eq!(r.unwrap().unwrap().0, vec![i as u8]);
    }
    assert_eq!(kids.unwrap().unwrap().len(), 200);
}

#[test]
fn handle_refuses_an_unreachable_ensemble() {
    let port = common::free_ports(1);
    let t0 = Instant::now();
    let r = ZooKeeper::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2), 8);
    assert!(matches!(r, Err(ZkError::ConnectionLoss)), "{:?}", r.err());
    assert!(t0.elapsed() < Duration::from_secs(10), "connect took {:?}", t0.elapsed());
    assert!(ZooKeeper::connect("no-port-here", TIMEOUT, 8).is_err());
}

#[test]
fn store_commits_atomically_and_reloads() {
    let c = shared_cluster();
    let connect_str = format!("{}/store-test", c.zk_connect());
    let mut store = ZooKeeperMetadataStore::open(&connect_str, TIMEOUT, 64).unwrap();
    let ml = "/managed-ledgers/public/default/persistent/t-partition-0";
    store
        .commit(vec![
            put("/admin/partitioned-topics/public/default/persistent/t", b"{\"partitions\":1}"),
            put(ml, b"ledgers"),
            put(&format!("{ml}/group-a"), b"cursor"),
            put("/kopd/cluster", b"c1"),
        ])
        .unwrap();
    store.commit(vec![put("/kopd/cluster", b"c2")]).unwrap();
    assert_eq!(store.get("/kopd/cluster"), Some(&b"c2"[..]));
    // Structure (the parents created on the way) is not a value.
    assert_eq!(store.get("/managed-ledgers/public"), None);
    assert_eq!(store.scan("/managed-ledgers/").len(), 2);

    // A multi that ZooKeeper refuses changes nothing, here or there: a foreign node sits where
    // the store must create a parent of a new value, as a file would (ephemeral: no children).
    let zk = connect(c, "/store-test");
    block_on(zk.create("/kopd/eph", b"e".to_vec(), CreateMode::Ephemeral, false)).unwrap();
    let r = store.commit(vec![put("/kopd/cluster", b"c3"), put("/kopd/eph/child", b"x")]);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(store.get("/kopd/cluster"), Some(&b"c2"[..]));
    assert_eq!(block_on(zk.get("/kopd/cluster")).unwrap().unwrap().0, b"c2");
    // The failed commit's re-read picked the foreign node up, as a value.
    assert_eq!(store.get("/kopd/eph"), Some(&b"e"[..]));

    // A node another client created since the load: the commit is refused as a conflict (its
    // writer decides again), the store re-reads it, and a put planned on that succeeds.
    block_on(zk.create("/kopd/late", b"theirs".to_vec(), CreateMode::Persistent, false)).unwrap();
    let r = store.commit(vec![put("/kopd/late", b"ours")]);
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(store.get("/kopd/late"), Some(&b"theirs"[..]));
    store.commit(vec![put("/kopd/late", b"ours")]).unwrap();
    assert_eq!(block_on(zk.get("/kopd/late")).unwrap().unwrap().0, b"ours");
    // Data another writer set since: never silently replaced (a conditional set).
    block_on(zk.set("/kopd/late", b"newer".to_vec(), None)).unwrap();
    let r = store.commit(vec![put("/kopd/late", b"stale"), put("/kopd/other", b"o")]);
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(block_on(zk.get("/kopd/late")).unwrap().unwrap().0, b"newer");
    assert_eq!(block_on(zk.get("/kopd/other")).unwrap(), None);
    assert_eq!(store.get("/kopd/late"), Some(&b"newer"[..]));
    // `refresh` picks up changes made elsewhere without a failed commit.
    block_on(zk.set("/kopd/late", b"newest".to_vec(), None)).unwrap();
    store.refresh("/kopd/late").unwrap();
    assert_eq!(store.get("/kopd/late"), Some(&b"newest"[..]));
    store.commit(vec![put("/kopd/late", b"ours")]).unwrap();
    assert_eq!(block_on(zk.get("/kopd/late")).unwrap().unwrap().0, b"ours");

    // Deleting a managed ledger takes a cursor kopd never wrote (Pulsar's) with it.
    block_on(zk.create(&format!("{ml}/pulsar-sub"), b"p".to_vec(), CreateMode::Persistent, false)).unwrap();
    store.commit(vec![del(&format!("{ml}/group-a")), del(ml)]).unwrap();
    assert_eq!(block_on(zk.get(ml)).unwrap(), None);
    assert_eq!(store.scan("/managed-ledgers/"), Vec::new());

    // Refused before anything is sent.
    assert!(matches!(store.commit(vec![put("/kopd/big", &vec![7; 1 << 20])]), Err(StoreError::Rejected(_))));
    assert!(matches!(store.commit(vec![put("/elsewhere", b"x")]), Err(StoreError::Rejected(_))));
    assert!(matches!(store.commit(vec![put("/kopd/empty", b"")]), Err(StoreError::Rejected(_))));
    // Close to the limit still goes through.
    store.commit(vec![put("/kopd/big", &vec![7; 900_000])]).unwrap();

    // A new session loads the same values, and nothing else.
    drop(store);
    let again = ZooKeeperMetadataStore::open(&connect_str, TIMEOUT, 64).unwrap();
    let mut paths: Vec<String> = ["/admin/", "/kopd/", "/managed-ledgers/"]
        .iter()
        .flat_map(|p| again.scan(p).into_iter().map(|(p, _)| p))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/admin/partitioned-topics/public/default/persistent/t",
            "/kopd/big",
            "/kopd/cluster",
            "/kopd/eph",
            "/kopd/late"
        ]
    );
    assert_eq!(again.get("/kopd/big").map(<[u8]>::len), Some(900_000));
}

#[test]
fn a_pinned_ledger_list_is_never_written_over_a_later_owners() {
    // A partition's old owner (`old`) and the node that took it over (`new`), each with its own
    // store and session. Once the new owner has written the ledger list, no re-read on the old
    // owner's side may let it write there again.
    let c = shared_cluster();
    let at = format!("{}/pin-test", c.zk_connect());
    let ml = "/managed-ledgers/public/default/persistent/p-partition-0";
    let mut old = ZooKeeperMetadataStore::open(&at, TIMEOUT, 64).unwrap();
    old.pin(ml);
    old.commit(vec![put(ml, b"old-1")]).unwrap();
    old.commit(vec![put(ml, b"old-2")]).unwrap();
    let mut new = ZooKeeperMetadataStore::open(&at, TIMEOUT, 64).unwrap();
    new.refresh(ml).unwrap();
    new.pin(ml);
    let cursor = format!("{ml}/group");
    new.commit(vec![put(ml, b"new-1"), put(&cursor, b"new")]).unwrap();
    // The old owner's cursor write meets the new owner's cursor, and the store re-reads the
    // cursor with its ancestors, the ledger list among them: its cache now has the new
    // owner's version, and an unpinned put would go through.
    assert!(matches!(old.commit(vec![put(&cursor, b"old")]), Err(StoreError::Conflict(_))));
    assert_eq!(old.get(ml), Some(&b"new-1"[..]));
    let r = old.commit(vec![put(ml, b"old-3")]);
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    old.refresh(ml).unwrap();
    let r = old.commit(vec![put(ml, b"old-4")]);
    assert!(matches!(r, Err(StoreError::Conflict(_))), "still refused after any re-read: {r:?}");
    let zk = connect(c, "/pin-test");
    assert_eq!(block_on(zk.get(ml)).unwrap().unwrap().0, b"new-1");
    // The new owner keeps writing; letting go refuses even its own next put.
    new.commit(vec![put(ml, b"new-2")]).unwrap();
    new.release_pin(ml);
    assert!(matches!(new.commit(vec![put(ml, b"new-3")]), Err(StoreError::Conflict(_))));
    // Taken back (pinned anew): writes go over what is there now.
    old.refresh(ml).unwrap();
    old.pin(ml);
    old.commit(vec![put(ml, b"old-5")]).unwrap();
    assert_eq!(block_on(zk.get(ml)).unwrap().unwrap().0, b"old-5");
    // Pinned while absent: another writer's create wins, the pinned one conflicts.
    let fresh = "/managed-ledgers/public/default/persistent/p-partition-1";
    old.refresh(fresh).unwrap();
    old.pin(fresh);
    block_on(zk.create(fresh, b"theirs".to_vec(), CreateMode::Persistent, true)).unwrap();
    assert!(matches!(old.commit(vec![put(fresh, b"mine")]), Err(StoreError::Conflict(_))));
    assert_eq!(block_on(zk.get(fresh)).unwrap().unwrap().0, b"theirs");
}

/// The Pulsar-layout JSON of a topic in ZooKeeper, if there.
fn topic_node(zk: &ZooKeeper, topic: &str) -> Option<serde_json::Value> {
    let path = format!("/admin/partitioned-topics/public/default/persistent/{topic}");
    let (data, _) = block_on(zk.get(&path)).unwrap()?;
    Some(serde_json::from_slice(&data).unwrap())
}

#[test]
fn kopd_keeps_its_catalog_in_zookeeper_across_restarts() {
    if !kopd_store_is_ours() {
        return;
    }
    let c = shared_cluster();
    let dir = temp_dir("zk-restart");
    let chroot = "/kopd-zk-restart";
    let setting = format!("metadata.store=zk://{}{chroot}", c.zk_connect());
    let args = ["--set", setting.as_str()];
    let mut k = Kopd::start(&dir, 2, &args);
    let mut conn = Conn::connect(k.addr(0));
    create_topic(&mut conn, "zt", 3, &[("retention.ms", "123456")]);
    create_topic(&mut conn, "zu", 1, &[]);
    let leaders = common::leaders(&mut conn, "zt");
    let mut owner = Conn::connect(k.addr(leaders[0] as u16));
    assert_eq!(produce(&mut owner, "zt", 0, common::batch(5, Compression::None)).0, 0);
    drop((conn, owner));
    k.stop();

    // The nodes are where Pulsar keeps them.
    let zk = connect(c, chroot);
    let meta = topic_node(&zk, "zt").expect("topic node");
    assert_eq!(meta["partitions"], 3);
    assert_eq!(meta["properties"]["kafka.config.retention.ms"], "123456");
    assert!(topic_node(&zk, "zu").is_some());
    // A managed ledger is made on a partition's first use.
    let ml = "/managed-ledgers/public/default/persistent/zt-partition-0";
    assert!(!block_on(zk.get(ml)).unwrap().expect("ledger list of the written partition").0.is_empty());
    assert_eq!(block_on(zk.get("/managed-ledgers/public/default/persistent/zt-partition-1")).unwrap(), None);
    assert!(block_on(zk.get("/kopd/assignment/public/default/persistent/zt")).unwrap().is_some());
    assert!(block_on(zk.get("/kopd/cluster")).unwrap().is_some());

    // Restarted: same topics, same owners, the data of the local ledger store.
    let mut k = Kopd::start(&dir, 2, &args);
    let mut conn = Conn::connect(k.addr(0));
    assert_eq!(common::leaders(&mut conn, "zt"), leaders);
    assert_eq!(common::leaders(&mut conn, "zu").len(), 1);
    let mut owner = Conn::connect(k.addr(leaders[0] as u16));
    let (err, hw, _) = fetch(&mut owner, "zt", 0, 0);
    assert_eq!((err, hw), (0, 5), "the produced batch survived the restart");
    assert_eq!(produce(&mut owner, "zt", 0, common::batch(2, Compression::None)), (0, 5));
    let resp = conn.send(7, &create_request("zt", 3)).unwrap();
    assert_eq!(resp.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS after the restart");
    k.stop();

    // On an empty data dir the catalog still comes from ZooKeeper.
    let fresh = temp_dir("zk-restart-fresh");
    let mut k = Kopd::start(&fresh, 2, &args);
    let mut conn = Conn::connect(k.addr(0));
    assert_eq!(common::leaders(&mut conn, "zt"), leaders, "the catalog comes from ZooKeeper");
    k.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}

fn create_request(topic: &str, partitions: i32) -> CreateTopicsRequest {
    CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatableTopic::default().with_name(name(topic)).with_num_partitions(partitions).with_replication_factor(1),
    ])
}

#[test]
fn paused_zookeeper_fails_topic_admin_then_recovers() {
    if !kopd_store_is_ours() {
        return;
    }
    let cluster = BookKeeperCluster::start(1);
    let dir = temp_dir("zk-pause");
    let setting = format!("metadata.store=zk://{}/kopd-zk-pause", cluster.zk_connect());
    let mut k = Kopd::start(&dir, 1, &["--set", &setting, "--set", "zookeeper.session.timeout.ms=4000"]);
    let mut conn = Conn::connect(k.addr(0));
    create_topic(&mut conn, "before", 1, &[]);
    // Opens the partition's managed ledger (its ledger list is written to ZooKeeper).
    assert_eq!(produce(&mut conn, "before", 0, common::batch(3, Compression::None)).0, 0);

    // A handle of our own, to watch its session through the pause, and a store writing into
    // the pause.
    let short = Duration::from_secs(4);
    let watched = ZooKeeper::connect(&format!("{}/pause-handle", cluster.zk_connect()), short, 16).unwrap();
    let changes = watched.session_changes();
    block_on(watched.create("/mine", Vec::new(), CreateMode::Ephemeral, false)).unwrap();
    let store_at = format!("{}/pause-store", cluster.zk_connect());
    let mut store = ZooKeeperMetadataStore::open(&store_at, short, 16).unwrap();
    store.commit(vec![put("/kopd/x", b"1")]).unwrap();

    cluster.pause_zk();
    let paused = Instant::now();
    // Sent on a live session that stops answering: fails once the connection is given up
    // (its outcome unknown: the server may still apply it when it runs again).
    let r = store.commit(vec![put("/kopd/x", b"2")]);
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(paused.elapsed() < Duration::from_secs(6), "the commit took {:?}", paused.elapsed());
    // Well past the 4 s session timeout (expiry is rounded up to ZooKeeper's tick): the
    // session is gone.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed()));
    let t0 = Instant::now();
    let resp = conn.send(7, &create_request("during", 1)).unwrap();
    let took = t0.elapsed();
    assert_eq!(resp.topics[0].error_code, 56, "KAFKA_STORAGE_ERROR: {:?}", resp.topics[0].error_message);
    assert!(took < Duration::from_secs(10), "the failure took {took:?}");
    // The data path does not need ZooKeeper while a partition's ledger does not roll.
    assert_eq!(produce(&mut conn, "before", 0, common::batch(3, Compression::None)).0, 0);
    assert!(k.is_running());

    cluster.resume_zk();
    // The handle reports the end of its session, then a new one, whose ephemeral nodes are
    // not the old session's.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last() != Some(&SessionState::Connected) || !seen.contains(&SessionState::Expired) {
        assert!(Instant::now() < deadline, "session changes so far: {seen:?}");
        if let Ok(s) = changes.try_recv() {
            seen.push(s);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(seen.first(), Some(&SessionState::Disconnected), "{seen:?}");
    assert_eq!(watched.session_state(), SessionState::Connected);
    // The server deletes an expired session's ephemeral nodes in a transaction of its own,
    // which may land just after it has told the client the session expired: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some((_, stat)) = block_on(watched.get("/mine")).unwrap() {
        assert!(Instant::now() < deadline, "the expired session's ephemeral node stays: {stat:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    block_on(watched.create("/mine", Vec::new(), CreateMode::Ephemeral, false)).unwrap();
    // The store's next commit re-reads what the unclear one touched: whichever way it went,
    // the cache and ZooKeeper agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = store.commit(vec![put("/kopd/y", b"y")]) {
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(Instant::now() < deadline, "store commits still failing: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let check = ZooKeeper::connect(&store_at, TIMEOUT, 4).unwrap();
    let in_zk = block_on(check.get("/kopd/x")).unwrap().map(|(d, _)| d);
    assert_eq!(store.get("/kopd/x"), in_zk.as_deref());
    eprintln!("the commit sent into the pause was applied: {}", in_zk.as_deref() == Some(&b"2"[..]));

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let resp = conn.send(7, &create_request("after", 2)).unwrap();
        match resp.topics[0].error_code {
            0 => break,
            56 => {}
            other => panic!("unexpected error {other}: {:?}", resp.topics[0].error_message),
        }
        assert!(Instant::now() < deadline, "topic creation still failing 40 s after ZooKeeper resumed");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(common::leaders(&mut conn, "after").len(), 2);
    // The failed creation left nothing behind; it can be made now.
    let resp = conn.send(7, &create_request("during", 1)).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    let zk = connect(&cluster, "/kopd-zk-pause");
    assert!(topic_node(&zk, "after").is_some());
    k.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
