//! A kopd cluster: several kopd processes over one ZooKeeper and three bookies
//! (`cluster.name`). Every partition has one owner among the nodes' cores; moving it moves
//! only its ownership. The tests check lookup from any node, failover after kill -9 (no
//! acknowledged record lost, none duplicated, committed offsets kept), a paused node being
//! fenced, and planned moves (a graceful stop hands over, a new node takes a share).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bookkeeper::BookKeeperCluster;
use common::cluster::{CORES, Cluster, SESSION_MS};
use common::{Conn, RECORDS, batch_value, idempotent_batch, init_producer, name};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
};
use kafka_protocol::protocol::StrBytes;

/// Brokers and, per partition of `topic`, (leader, epoch) from one node's Metadata.
type Layout = (HashMap<i32, SocketAddr>, Vec<(i32, i32)>);

fn layout(c: &mut Conn, topic: &str) -> Option<Layout> {
    let m = c.send(12, &MetadataRequest::default().with_topics(None)).ok()?;
    let brokers = m.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port).parse().unwrap())).collect();
    let t = m.topics.iter().find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))?;
    let mut p: Vec<(i32, i32, i32)> =
        t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch)).collect();
    p.sort();
    Some((brokers, p.into_iter().map(|(_, l, e)| (l, e)).collect()))
}

/// Waits until `topic`'s every partition has a live leader that accepts a produce (an empty
/// idempotent-free probe is not possible, so: Metadata agrees, and ListOffsets answers).
fn wait_served(cluster: &Cluster, via: usize, topic: &str, limit: Duration) -> Layout {
    let deadline = Instant::now() + limit;
    let check = || -> Result<Layout, String> {
        let mut c = Conn::try_connect(cluster.addr(via), Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let (brokers, leaders) = layout(&mut c, topic).ok_or("no metadata")?;
        for (p, (leader, _)) in leaders.iter().enumerate() {
            let addr = brokers.get(leader).ok_or(format!("partition {p}: leader {leader} unknown"))?;
            let mut lc = Conn::try_connect(*addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
            let (err, _) = common::list_offset(&mut lc, topic, p as i32, -1);
            if err != 0 {
                return Err(format!("partition {p} at broker {leader}: error {err}"));
            }
        }
        Ok((brokers, leaders))
    };
    loop {
        match check() {
            Ok(l) => return l,
            Err(e) => {
                if Instant::now() >= deadline {
                    // What each node believes, for the failure report.
                    for (i, n) in cluster.nodes.iter().enumerate().filter(|(_, n)| n.kopd.is_some()) {
                        let view =
                            Conn::try_connect(SocketAddr::from(([127, 0, 0, 1], n.port)), Duration::from_secs(5))
                                .ok()
                                .and_then(|mut c| layout(&mut c, topic).map(|l| l.1));
                        eprintln!("node {i} (port {}): leaders and epochs {view:?}", n.port);
                    }
                    panic!("{topic} not served within {limit:?}: {e}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One produce of `records` (acks=all, v11): error code, base offset, and the leader hint.
fn produce(addr: SocketAddr, topic: &str, partition: i32, records: Bytes) -> Result<(i16, i64, i32), String> {
    // A paused leader holds a request until the client gives up: give up soon.
    let mut c = Conn::try_connect(addr, Duration::from_secs(6)).map_err(|e| e.to_string())?;
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(4_000).with_topic_data(vec![
        TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ]);
    let resp = c.send(11, &req).map_err(|e| e.to_string())?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset, p.current_leader.leader_id.0))
}

/// An idempotent producer of numbered batches that follows partition leaders: a batch is
/// retried (same sequence numbers) until acknowledged.
struct Producer {
    topic: String,
    pid: i64,
    epoch: i16,
    /// Per partition: batches acknowledged, with their base offsets.
    acked: Vec<Vec<i64>>,
    leaders: Vec<i32>,
    brokers: HashMap<i32, SocketAddr>,
}

impl Producer {
    fn new(cluster: &Cluster, topic: &str, partitions: usize) -> Producer {
        let (brokers, leaders) = wait_served(cluster, 0, topic, Duration::from_secs(30));
        let (pid, epoch) = init_producer(&mut cluster.conn(0));
        Producer {
            topic: topic.into(),
            pid,
            epoch,
            acked: vec![Vec::new(); partitions],
            leaders: leaders.into_iter().map(|(l, _)| l).collect(),
            brokers,
        }
    }

    fn refresh(&mut self, seeds: &[SocketAddr]) {
        for s in seeds {
            if let Ok(mut c) = Conn::try_connect(*s, Duration::from_secs(5))
                && let Some((brokers, leaders)) = layout(&mut c, &self.topic)
            {
                self.brokers = brokers;
                self.leaders = leaders.into_iter().map(|(l, _)| l).collect();
                return;
            }
        }
    }

    /// Sends partition `p`'s next batch until acknowledged (or `limit`); returns when.
    fn send_next(&mut self, p: usize, seeds: &[SocketAddr], limit: Duration) -> Instant {
        let b = self.acked[p].len();
        let batch = idempotent_batch(self.pid, self.epoch, 0, b);
        let deadline = Instant::now() + limit;
        loop {
            let addr = self.brokers.get(&self.leaders[p]).copied();
            let outcome = match addr {
                Some(a) => produce(a, &self.topic, p as i32, batch.clone()),
                None => Err("no leader".into()),
            };
            match outcome {
                Ok((0, base, _)) => {
                    self.acked[p].push(base);
                    return Instant::now();
                }
                Ok((code, _, hint)) => {
                    // NOT_LEADER_OR_FOLLOWER (6), LEADER_NOT_AVAILABLE (5), timeouts and
                    // storage errors during a move are retriable; anything else is a bug.
                    assert!([5, 6, 7, 56].contains(&code), "partition {p} batch {b}: error {code}");
                    if code == 6 && hint >= 0 && self.brokers.contains_key(&hint) {
                        self.leaders[p] = hint;
                        continue;
                    }
                }
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "partition {p} batch {b} not acknowledged within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
            self.refresh(seeds);
        }
    }

    /// Reads every partition back through its leader: each acknowledged batch exactly once, at
    /// the offset it was acknowledged at, in order, and nothing else. (A partition moving
    /// under the read is read again from its new leader.)
    fn verify(&mut self, seeds: &[SocketAddr]) {
        for p in 0..self.acked.len() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let records = loop {
                self.refresh(seeds);
                let read =
                    self.brokers.get(&self.leaders[p]).ok_or(-1).and_then(|a| try_read_all(*a, &self.topic, p as i32));
                match read {
                    Ok(r) => break r,
                    Err(code) => {
                        assert!([-1, 5, 6].contains(&code), "partition {p}: read failed with {code}");
                        assert!(Instant::now() < deadline, "partition {p} not readable");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            };
            let expected: Vec<(i64, Bytes)> = self.acked[p]
                .iter()
                .enumerate()
                .flat_map(|(b, base)| (0..RECORDS).map(move |i| (base + i as i64, batch_value(b, i))))
                .collect();
            assert_eq!(records.len(), expected.len(), "partition {p}: records read vs acknowledged");
            assert!(records == expected, "partition {p}: acknowledged batches not read back exactly once, in order");
        }
    }
}

/// Every record of a partition up to the high watermark, as (offset, value); the error code
/// (-1: no connection) if the broker refuses.
fn try_read_all(addr: SocketAddr, topic: &str, partition: i32) -> Result<Vec<(i64, Bytes)>, i16> {
    let mut c = Conn::try_connect(addr, Duration::from_secs(6)).map_err(|_| -1i16)?;
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let (err, _, mut buf) = common::fetch(&mut c, topic, partition, next);
        if err != 0 {
            return Err(err);
        }
        if buf.is_empty() {
            return Ok(out);
        }
        while !buf.is_empty() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(|_| -2i16)?;
            for r in set.records {
                out.push((r.offset, r.value.clone().unwrap_or_default()));
                next = r.offset + 1;
            }
        }
    }
}

fn find_coordinator(c: &mut Conn, group: &str) -> (i16, i32) {
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into())).with_key_type(0);
    let r = c.send(3, &req).unwrap();
    (r.error_code, r.node_id.0)
}

fn commit_offset(c: &mut Conn, group: &str, topic: &str, partition: i32, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(name(topic)).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset),
        ])]);
    let r = c.send(8, &req).unwrap();
    r.topics[0].partitions[0].error_code
}

fn fetch_offset(c: &mut Conn, group: &str, topic: &str, partition: i32) -> (i16, i64) {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_string(group.into()))).with_topics(
        Some(vec![OffsetFetchRequestTopic::default().with_name(name(topic)).with_partition_indexes(vec![partition])]),
    );
    let r = c.send(7, &req).unwrap();
    let p = &r.topics[0].partitions[0];
    (if r.error_code != 0 { r.error_code } else { p.error_code }, p.committed_offset)
}

/// A group whose coordinator is on node `node`, and that coordinator's broker id.
fn group_on_node(cluster: &Cluster, brokers: &HashMap<i32, SocketAddr>, node: usize) -> (String, i32) {
    let mut c = cluster.conn(0);
    for i in 0..1000 {
        let g = format!("group-{i}");
        let (err, id) = find_coordinator(&mut c, &g);
        if err == 0 && cluster.node_of(brokers, id) == Some(node) {
            return (g, id);
        }
    }
    panic!("no group hashes to node {node}");
}

/// Runs `f` on a connection to `group`'s coordinator, wherever it is (following moves), until
/// it returns something or `limit` passes.
fn at_coordinator<T>(
    cluster: &Cluster,
    alive: &[usize],
    group: &str,
    topic: &str,
    limit: Duration,
    mut f: impl FnMut(&mut Conn) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let mut c = cluster.conn(alive[0]);
        let (err, id) = find_coordinator(&mut c, group);
        let (brokers, _) = layout(&mut c, topic).unwrap();
        if err == 0
            && let Some(addr) = brokers.get(&id)
            && let Ok(mut cc) = Conn::try_connect(*addr, Duration::from_secs(5))
            && let Some(v) = f(&mut cc)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "coordinator of {group} did not answer within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Commits `offset` for `group` wherever its coordinator is, following moves.
fn commit_following(cluster: &Cluster, alive: &[usize], group: &str, topic: &str, offset: i64, limit: Duration) {
    at_coordinator(cluster, alive, group, topic, limit, |c| {
        (commit_offset(c, group, topic, 0, offset) == 0).then_some(())
    })
}

/// Reads `group`'s committed offset wherever its coordinator is (following moves).
fn fetch_following(cluster: &Cluster, alive: &[usize], group: &str, topic: &str, limit: Duration) -> i64 {
    at_coordinator(cluster, alive, group, topic, limit, |c| match fetch_offset(c, group, topic, 0) {
        (0, o) => Some(o),
        _ => None,
    })
}

fn partitions_per_node(cluster: &Cluster, layout: &Layout) -> BTreeMap<usize, usize> {
    let mut per = BTreeMap::new();
    for (leader, _) in &layout.1 {
        *per.entry(cluster.node_of(&layout.0, *leader).unwrap_or(usize::MAX)).or_insert(0) += 1;
    }
    per
}

/// A three-node cluster with `topic` of `partitions` partitions, a producer that has written one
/// batch to each, and the nodes' addresses.
fn cluster_with_data(name: &str, partitions: usize) -> (Cluster, Producer, Vec<SocketAddr>) {
    let cluster = Cluster::start(name, 3);
    common::create_topic(&mut cluster.conn(0), name, partitions as i32, &[]);
    let mut p = Producer::new(&cluster, name, partitions);
    let seeds: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    for part in 0..partitions {
        p.send_next(part, &seeds, Duration::from_secs(20));
    }
    (cluster, p, seeds)
}

/// Waits until node `node` leads at least `min` partitions of `topic`; the spread per node.
fn wait_share(cluster: &Cluster, topic: &str, node: usize, min: usize, limit: Duration) -> BTreeMap<usize, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let l = wait_served(cluster, 0, topic, Duration::from_secs(30));
        let per = partitions_per_node(cluster, &l);
        if per.get(&node).copied().unwrap_or(0) >= min {
            return per;
        }
        assert!(Instant::now() < deadline, "node {node} leads fewer than {min} partitions: {per:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_nodes_serve_every_partition_from_any_node() {
    let cluster = Cluster::start("lookup", 3);
    let topic = "spread";
    common::create_topic(&mut cluster.conn(1), topic, 12, &[]);
    let first = wait_served(&cluster, 2, topic, Duration::from_secs(30));
    // Every node answers with the same brokers (3 nodes x 2 cores) and the same leaders, once
    // the partitions have settled on all three nodes (node 2 may have answered before the
    // leader spread them, or before the other replicas followed).
    let deadline = Instant::now() + Duration::from_secs(30);
    let l = loop {
        let views: Vec<Option<Layout>> = (0..3).map(|i| layout(&mut cluster.conn(i), topic)).collect();
        if let Some(Some(v)) = views.first()
            && views.iter().all(|w| w.as_ref() == Some(v))
            && partitions_per_node(&cluster, v).len() == 3
        {
            break v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on a spread layout: {views:?}; node 2 first: {first:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(l.0.len(), 3 * CORES as usize, "brokers: {:?}", l.0);
    // Broker ids are node id * 1000 + core.
    let mut ids: Vec<i32> = l.0.keys().copied().collect();
    ids.sort();
    for pair in ids.chunks(2) {
        assert_eq!(pair[1], pair[0] + 1);
        assert_eq!(pair[0] % 1000, 0);
    }
    let per = partitions_per_node(&cluster, &l);
    assert_eq!(per.len(), 3, "leaders on every node: {per:?}");
    assert!(per.values().all(|n| *n == 4), "12 partitions spread evenly over 3 nodes: {per:?}");

    // Produce through every leader; a request at a non-owner is refused with the leader named
    // (KIP-951), and the data reads back from anywhere the leader is.
    let seeds: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    let mut p = Producer::new(&cluster, topic, 12);
    for part in 0..12 {
        for _ in 0..3 {
            p.send_next(part, &seeds, Duration::from_secs(20));
        }
        let leader = p.leaders[part];
        let other = *l.0.keys().find(|b| **b != leader).unwrap();
        let batch = idempotent_batch(p.pid, p.epoch, 0, p.acked[part].len());
        let (err, _, hint) = produce(l.0[&other], topic, part as i32, batch).unwrap();
        assert_eq!((err, hint), (6, leader), "partition {part} at broker {other}");
    }
    p.verify(&seeds);

    // kcat (librdkafka) bootstrapped at one node produces and consumes through all of them.
    let broker_list = format!("127.0.0.1:{}", cluster.nodes[2].port);
    let out = std::process::Command::new("kcat").args(["-b", &broker_list, "-L"]).output().expect("kcat");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("{} brokers", 3 * CORES)), "{listing}");
    let mut produce_cmd = std::process::Command::new("kcat")
        .args(["-b", &broker_list, "-P", "-t", "kcat-topic", "-X", "topic.request.required.acks=-1"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat -P");
    {
        use std::io::Write;
        let stdin = produce_cmd.stdin.as_mut().unwrap();
        for i in 0..500 {
            writeln!(stdin, "message {i}").unwrap();
        }
    }
    assert!(produce_cmd.wait().unwrap().success());
    let consumed = std::process::Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{}", cluster.nodes[0].port), "-C", "-t", "kcat-topic", "-e", "-q"])
        .output()
        .expect("kcat -C");
    let lines = String::from_utf8_lossy(&consumed.stdout).lines().count();
    assert_eq!(lines, 500);
}

#[test]
fn kill_nine_moves_partitions_without_loss_or_duplicates() {
    let mut cluster = Cluster::start("failover", 3);
    let topic = "orders";
    common::create_topic(&mut cluster.conn(0), topic, 6, &[]);
    let seeds: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    let mut p = Producer::new(&cluster, topic, 6);
    let victim = 1;
    let before = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    let moved: Vec<usize> = (0..6).filter(|i| cluster.node_of(&before.0, before.1[*i].0) == Some(victim)).collect();
    assert!(!moved.is_empty(), "the victim leads something: {:?}", before.1);
    // A group coordinated on the victim, with a committed offset.
    let (group, _) = group_on_node(&cluster, &before.0, victim);
    commit_following(&cluster, &[0], &group, topic, 42, Duration::from_secs(20));

    for _round in 0..5 {
        for part in 0..6 {
            p.send_next(part, &seeds, Duration::from_secs(20));
        }
    }
    // kill -9 while batches are in flight: the killer fires from another thread.
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let pid = cluster.nodes[victim].kopd.as_ref().unwrap().pid();
    let k = killed_at.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SIGKILL: no hand-over, no sealing.
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        *k.lock().unwrap() = Some(Instant::now());
    });
    let survivors = [0usize, 2];
    let live_seeds: Vec<SocketAddr> = survivors.iter().map(|i| cluster.addr(*i)).collect();
    // Per moved partition: how long after the kill its first acknowledgement came.
    let mut resumed: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while resumed.len() < moved.len() {
        assert!(Instant::now() < deadline, "moved partitions not all resumed: {resumed:?}");
        for part in 0..6 {
            let acked_at = p.send_next(part, &live_seeds, Duration::from_secs(60));
            if let Some(k) = *killed_at.lock().unwrap()
                && moved.contains(&part)
                && acked_at > k
            {
                resumed.entry(part).or_insert(acked_at - k);
            }
        }
    }
    killer.join().unwrap();
    cluster.kill9(victim);
    let first = resumed.values().min().copied().unwrap_or_default();
    let last = resumed.values().max().copied().unwrap_or_default();
    eprintln!(
        "failover: kill -9 to the first ack on a moved partition {first:?}, on the last {last:?} \
         (session timeout {SESSION_MS} ms, {} partitions moved)",
        moved.len()
    );
    assert!(last < Duration::from_millis(SESSION_MS) + Duration::from_secs(20), "failover took {last:?}");
    let after = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    for part in &moved {
        let (leader, epoch) = after.1[*part];
        assert_ne!(cluster.node_of(&after.0, leader), Some(victim));
        assert!(epoch > before.1[*part].1, "partition {part}: the leader epoch moved on");
    }
    p.verify(&live_seeds);
    // The group's coordinator moved with its partition, and its offsets with it.
    assert_eq!(fetch_following(&cluster, &survivors, &group, topic, Duration::from_secs(30)), 42);
    commit_following(&cluster, &survivors, &group, topic, 43, Duration::from_secs(20));
    assert_eq!(fetch_following(&cluster, &survivors, &group, topic, Duration::from_secs(30)), 43);
}

#[test]
fn a_paused_node_is_fenced_and_rejoins() {
    let topic = "paused";
    let (mut cluster, mut p, seeds) = cluster_with_data(topic, 6);
    let victim = 2;
    let before = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    let part = (0..6).find(|i| cluster.node_of(&before.0, before.1[*i].0) == Some(victim)).expect("victim leads");
    let victim_broker = before.1[part].0;
    let pid = cluster.nodes[victim].kopd.as_ref().unwrap().pid();
    let signal =
        |s: &str| assert!(std::process::Command::new("kill").args([s, &pid.to_string()]).status().unwrap().success());
    signal("-STOP");
    // Past the session timeout the survivors take the partition over.
    let survivors = [0usize, 1];
    let live_seeds: Vec<SocketAddr> = survivors.iter().map(|i| cluster.addr(*i)).collect();
    let t = Instant::now();
    p.send_next(part, &live_seeds, Duration::from_secs(60));
    eprintln!("paused node: partition {part} acknowledged elsewhere after {:?}", t.elapsed());
    assert_ne!(p.leaders[part], victim_broker);
    // Woken up, the paused node acknowledges nothing on the strength of the ownership it
    // lost. It may get the partition back at once, though (it rejoins, and the leader evens
    // out load), and then rightly take the batch. So an acknowledgement here is held to what
    // every other is: `verify` reads it back exactly once, at its offset, after the batches
    // the survivor took (a write into a ledger the new owner never heard of would be missing).
    signal("-CONT");
    let stale = idempotent_batch(p.pid, p.epoch, 0, p.acked[part].len());
    if let Ok((0, base, _)) = produce(before.0[&victim_broker], topic, part as i32, stale) {
        eprintln!("paused node: took partition {part} back and acknowledged the batch at {base}");
        p.acked[part].push(base);
    }
    // It rejoins: after a while it leads partitions again, and everything reads back.
    wait_share(&cluster, topic, victim, 1, Duration::from_secs(40));
    for part in 0..6 {
        p.send_next(part, &seeds, Duration::from_secs(30));
    }
    p.verify(&seeds);
    cluster.kill9(victim);
}

#[test]
fn planned_moves_hand_over_and_a_new_node_takes_a_share() {
    let topic = "planned";
    let (mut cluster, mut p, _) = cluster_with_data(topic, 12);
    // Rolling restart: each node stops gracefully (handing its partitions over first), then
    // comes back; production continues between steps and nothing acknowledged is lost.
    for i in 0..3 {
        let took = cluster.stop(i);
        eprintln!("rolling restart: node {i} handed over and stopped in {took:?}");
        let alive: Vec<SocketAddr> = (0..3).filter(|j| *j != i).map(|j| cluster.addr(j)).collect();
        let t = Instant::now();
        for part in 0..12 {
            p.send_next(part, &alive, Duration::from_secs(30));
        }
        eprintln!("rolling restart: every partition acknowledged {:?} after node {i} stopped", t.elapsed());
        cluster.restart(i);
        wait_served(&cluster, i, topic, Duration::from_secs(30));
    }
    // The restarted nodes listen on new ports.
    let seeds: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    p.verify(&seeds);

    // A fourth node: a fair share moves to it, and no entry is copied (the bookies hold what
    // they held: only ownership moved).
    let ledger_bytes = |c: &BookKeeperCluster| -> u64 {
        fn size(p: &std::path::Path) -> u64 {
            std::fs::read_dir(p)
                .map(|d| {
                    d.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => size(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        size(c.dir())
    };
    // A topic placed by an operator (all on one broker): balancing leaves it there.
    let placed = "placed";
    let (brokers, _) = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    let one = *brokers.keys().min().expect("a broker");
    create_assigned(&mut cluster.conn(0), placed, &[one; 4]);
    let before = ledger_bytes(&cluster.bk);
    let n = cluster.add_node();
    let per = wait_share(&cluster, topic, n, 2, Duration::from_secs(30));
    eprintln!("after adding a node: {per:?}");
    let (_, owners) = wait_served(&cluster, n, placed, Duration::from_secs(30));
    assert!(owners.iter().all(|(leader, epoch)| (*leader, *epoch) == (one, 0)), "placed by hand: {owners:?}");
    let after = ledger_bytes(&cluster.bk);
    // Moving a partition writes a new (empty) ledger and seals the old one: kilobytes, not
    // the data (12 partitions hold well over a megabyte).
    assert!(after < before + (512 << 10), "bookie data grew from {before} to {after} bytes");
    let all: Vec<SocketAddr> = (0..4).map(|i| cluster.addr(i)).collect();
    for part in 0..12 {
        p.send_next(part, &all, Duration::from_secs(30));
    }
    p.verify(&all);
}

/// Moves partition `partition` of `topic` to broker `to` (AlterPartitionReassignments v0);
/// the partition's error code.
fn reassign(c: &mut Conn, topic: &str, partition: i32, to: i32) -> i16 {
    use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
    use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    let req = AlterPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        ReassignableTopic::default().with_name(name(topic)).with_partitions(vec![
            ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(Some(vec![kafka_protocol::messages::BrokerId(to)])),
        ]),
    ]);
    let resp = c.send(0, &req).expect("AlterPartitionReassignments");
    assert_eq!(resp.error_code, 0, "{resp:?}");
    resp.responses[0].partitions[0].error_code
}

/// Sends `batches` to one partition on one connection, each `gap` after the last, without
/// waiting for answers (as a producer with several requests in flight does); the answers in
/// order as (error code, base offset).
fn produce_pipelined(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    batches: &[Bytes],
    gap: Duration,
) -> Vec<(i16, i64)> {
    use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let mut c = Conn::try_connect(addr, Duration::from_secs(30)).expect("connect");
    for (i, records) in batches.iter().enumerate() {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(20_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(records.clone())),
            ]),
        ]);
        std::io::Write::write_all(&mut c.stream, &Conn::frame(i as i32, 11, &req)).expect("send");
        std::thread::sleep(gap);
    }
    (0..batches.len())
        .map(|i| {
            let mut frame = c.read_frame().expect("produce answer");
            let header = ResponseHeader::decode(&mut frame, ApiKey::Produce.response_header_version(11)).unwrap();
            assert_eq!(header.correlation_id, i as i32, "answers in request order");
            let resp = ProduceResponse::decode(&mut frame, 11).unwrap();
            let p = &resp.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        })
        .collect()
}

#[test]
fn a_moved_partition_takes_a_new_producers_pipelined_batches_in_order() {
    // A producer that learns a partition's new owner from Metadata sends there at once, with
    // several requests in flight. Were its first batches refused while the new owner's node
    // was still taking the lease and later ones taken, an idempotent producer new to the
    // partition would be left with a sequence gap it cannot close (Java's producer retries
    // OUT_OF_ORDER_SEQUENCE_NUMBER forever). The new owner holds such requests until it serves.
    const BATCHES: usize = 20;
    let topic = "moving";
    let cluster = Cluster::start(topic, 3);
    common::create_topic(&mut cluster.conn(0), topic, 1, &[]);
    let (brokers, mut leaders) = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    let mut expected: Vec<(i64, Bytes)> = Vec::new();
    // (leader epoch, first offset written under it), per round.
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let first_epoch = leaders[0].1;
    for round in 0..4 {
        let from = leaders[0].0;
        let next_node = (cluster.node_of(&brokers, from).expect("leader's node") + 1) % 3;
        let to = *brokers.keys().filter(|b| cluster.node_of(&brokers, **b) == Some(next_node)).min().expect("broker");
        assert_eq!(reassign(&mut cluster.conn(round % 3), topic, 0, to), 0, "round {round}: move to {to}");
        // The moment the new owner names itself the leader, a producer new to the partition
        // writes to it.
        let target = brokers[&to];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = Conn::try_connect(target, Duration::from_secs(10)).expect("connect to the new owner");
        let epoch_here = loop {
            match layout(&mut c, topic) {
                Some(l) if l.1[0].0 == to => break l.1[0].1,
                _ => {}
            }
            assert!(Instant::now() < deadline, "round {round}: broker {to} never named itself the leader");
            std::thread::sleep(Duration::from_millis(2));
        };
        let (pid, epoch) = init_producer(&mut cluster.conn(0));
        let batches: Vec<Bytes> = (0..BATCHES).map(|b| idempotent_batch(pid, epoch, 0, b)).collect();
        let t = Instant::now();
        let answers = produce_pipelined(target, topic, 0, &batches, Duration::from_millis(10));
        eprintln!("round {round}: moved to broker {to}; {BATCHES} pipelined batches answered in {:?}", t.elapsed());
        assert!(answers.iter().all(|(code, _)| *code == 0), "round {round}: answers {answers:?}");
        let base = answers[0].1;
        epochs.push((epoch_here, base));
        for (b, (_, offset)) in answers.iter().enumerate() {
            assert_eq!(*offset, base + (b * RECORDS) as i64, "round {round}: batch {b} out of place");
            expected.extend((0..RECORDS).map(|i| (offset + i as i64, batch_value(b, i))));
        }
        leaders = wait_served(&cluster, round % 3, topic, Duration::from_secs(30)).1;
        assert_eq!(leaders[0].0, to, "round {round}: the move held");
    }
    let (records, _) = common::read_all(&mut Conn::connect(brokers[&leaders[0].0]), topic, 0);
    assert!(records == expected, "every acknowledged batch once, at its offset ({} records read)", records.len());

    // OffsetForLeaderEpoch at the last owner: every earlier epoch ends where the next one's
    // batches start (KIP-320 consumers compare this with their position), the current one at
    // the log end; an epoch before any batch ends where the first batch starts.
    let mut c = Conn::connect(brokers[&leaders[0].0]);
    let current = epochs.last().expect("rounds").0;
    let end = expected.len() as i64;
    assert!(epochs.windows(2).all(|w| w[0].0 < w[1].0), "epochs grow with each move: {epochs:?}");
    for (i, (epoch, _)) in epochs.iter().enumerate() {
        let want = if i + 1 < epochs.len() { (*epoch, epochs[i + 1].1) } else { (*epoch, end) };
        assert_eq!(offset_for_leader_epoch(&mut c, topic, current, *epoch), (0, want.0, want.1), "epoch {epoch}");
    }
    assert_eq!(offset_for_leader_epoch(&mut c, topic, current, first_epoch), (0, first_epoch, 0));
    assert_eq!(offset_for_leader_epoch(&mut c, topic, current, current + 1), (0, -1, -1), "an epoch not yet seen");
    assert_eq!(offset_for_leader_epoch(&mut c, topic, current - 1, current).0, 74, "FENCED_LEADER_EPOCH");
}

/// OffsetForLeaderEpoch v4 for partition 0: (error code, epoch, end offset).
fn offset_for_leader_epoch(c: &mut Conn, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
    use kafka_protocol::messages::OffsetForLeaderEpochRequest;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default().with_topic(name(topic)).with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch),
            ])]);
    let resp = c.send(4, &req).expect("OffsetForLeaderEpoch");
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

#[test]
fn a_new_owner_whose_catalog_lags_takes_pipelined_batches_in_order() {
    // The new owner's node is the last to hear of a move (here: paused while another node makes
    // it), and a producer told by a node that knows already sends there at once. Refusing the
    // first batches while its catalog replica is behind, then taking later ones once it has
    // caught up, would leave an idempotent producer new to the partition with a sequence gap:
    // the new owner compares its replica with the store before it refuses.
    const BATCHES: usize = 12;
    let topic = "lagging";
    // Each pause below must stay well inside the paused node's session: one that outlived it
    // (a slow machine) would take the node's partitions away, a different test.
    let cluster = Cluster::start_with_session(topic, 3, 15_000);
    common::create_topic(&mut cluster.conn(0), topic, 1, &[]);
    let (brokers, mut leaders) = wait_served(&cluster, 0, topic, Duration::from_secs(30));
    let mut expected: Vec<(i64, Bytes)> = Vec::new();
    for round in 0..3 {
        let from = cluster.node_of(&brokers, leaders[0].0).expect("leader's node");
        let behind = (from + 1) % 3;
        let teller = (from + 2) % 3;
        let mut cores: Vec<i32> =
            brokers.keys().copied().filter(|b| cluster.node_of(&brokers, *b) == Some(behind)).collect();
        cores.sort_unstable();
        let to = cores[round % cores.len()];
        let (pid, epoch) = init_producer(&mut cluster.conn(teller));
        let batches: Vec<Bytes> = (0..BATCHES).map(|b| idempotent_batch(pid, epoch, 0, b)).collect();
        cluster.signal(behind, "-STOP");
        assert_eq!(reassign(&mut cluster.conn(teller), topic, 0, to), 0, "round {round}: move to {to}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while layout(&mut cluster.conn(teller), topic).is_none_or(|l| l.1[0].0 != to) {
            assert!(Instant::now() < deadline, "round {round}: node {teller} never named broker {to} the leader");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Queued in the paused node's socket; it reads them the moment it runs again, racing
        // its own cluster agent's view of the move.
        let target = brokers[&to];
        let sender = std::thread::spawn(move || produce_pipelined(target, topic, 0, &batches, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(300));
        cluster.signal(behind, "-CONT");
        let answers = sender.join().expect("producer thread");
        assert!(answers.iter().all(|(code, _)| *code == 0), "round {round}: answers {answers:?}");
        let base = answers[0].1;
        for (b, (_, offset)) in answers.iter().enumerate() {
            assert_eq!(*offset, base + (b * RECORDS) as i64, "round {round}: batch {b} out of place");
            expected.extend((0..RECORDS).map(|i| (offset + i as i64, batch_value(b, i))));
        }
        leaders = wait_served(&cluster, teller, topic, Duration::from_secs(30)).1;
        assert_eq!(leaders[0].0, to, "round {round}: the move held");
    }
    let (records, _) = common::read_all(&mut Conn::connect(brokers[&leaders[0].0]), topic, 0);
    assert!(records == expected, "every acknowledged batch once, at its offset ({} records read)", records.len());

    // A topic created through another node while the owner's node is paused: the first
    // batches reach the owner before its catalog replica has the topic at all. It compares
    // the replica with the store rather than answer UNKNOWN_TOPIC_OR_PARTITION.
    let fresh = "lagging-new";
    let behind = (cluster.node_of(&brokers, leaders[0].0).expect("leader's node") + 1) % 3;
    let teller = (behind + 1) % 3;
    let to = *brokers.keys().filter(|b| cluster.node_of(&brokers, **b) == Some(behind)).min().expect("broker");
    let (pid, epoch) = init_producer(&mut cluster.conn(teller));
    let batches: Vec<Bytes> = (0..BATCHES).map(|b| idempotent_batch(pid, epoch, 0, b)).collect();
    cluster.signal(behind, "-STOP");
    let paused = Instant::now();
    create_assigned(&mut cluster.conn(teller), fresh, &[to]);
    let target = brokers[&to];
    let sender = std::thread::spawn(move || produce_pipelined(target, fresh, 0, &batches, Duration::ZERO));
    std::thread::sleep(Duration::from_millis(300));
    cluster.signal(behind, "-CONT");
    let paused = paused.elapsed();
    let answered = Instant::now();
    let answers = sender.join().expect("producer thread");
    let offsets: Vec<(i16, i64)> = (0..BATCHES).map(|b| (0, (b * RECORDS) as i64)).collect();
    assert!(
        answers == offsets,
        "a new topic's first batches: {answers:?} (node {behind} paused {paused:?}, answered within {:?}; \
         node {teller} now names {:?} for broker {to}'s partition)",
        answered.elapsed(),
        layout(&mut cluster.conn(teller), fresh).map(|l| l.1)
    );
}

/// Creates a topic whose partition i is on `brokers[i]`.
fn create_assigned(c: &mut Conn, topic: &str, brokers: &[i32]) {
    use kafka_protocol::messages::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
    let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                brokers
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(i as i32)
                            .with_broker_ids(vec![kafka_protocol::messages::BrokerId(*b)])
                    })
                    .collect(),
            ),
    ]);
    let resp = c.send(7, &req).expect("CreateTopics");
    assert_eq!(resp.topics[0].error_code, 0, "create {topic}: {:?}", resp.topics[0].error_message);
}
