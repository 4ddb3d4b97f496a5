//! Consumer groups over the raw protocol: coordinator lookup, the classic join/sync/heartbeat
//! flow, rebalances, static membership, committed offsets and their survival of a restart.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Conn, Kopd, temp_dir};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const NOT_COORDINATOR: i16 = 16;
const LOAD_IN_PROGRESS: i16 = 14;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// Groups join at once and members may use short sessions in these tests.
const FAST: &[&str] = &["--set", "group.initial.rebalance.delay.ms=0", "--set", "group.min.session.timeout.ms=100"];

fn st(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A ConsumerProtocolSubscription v0 naming `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = vec![0u8, 0];
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// Connects to the group's coordinator once it has loaded its partition.
fn coordinator(kopd: &Kopd, group: &str) -> Conn {
    let mut c = Conn::connect(kopd.addr(0));
    let r = c.send(3, &FindCoordinatorRequest::default().with_key(st(group))).unwrap();
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let mut conn = Conn::connect(kopd.addr(r.node_id.0 as u16));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f =
            conn.send(7, &OffsetFetchRequest::default().with_group_id(GroupId(st(group))).with_topics(None)).unwrap();
        if f.error_code != LOAD_IN_PROGRESS {
            assert_eq!(f.error_code, 0);
            return conn;
        }
        assert!(Instant::now() < deadline, "group partition never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn join_req(
    group: &str,
    member: &str,
    instance: Option<&str>,
    session_ms: i32,
    protocols: &[&str],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(st(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(st(member))
        .with_group_instance_id(instance.map(st))
        .with_protocol_type(st("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|p| JoinGroupRequestProtocol::default().with_name(st(p)).with_metadata(subscription(&["t"])))
                .collect(),
        )
}

/// JoinGroup v9, doing the MEMBER_ID_REQUIRED round trip of a new dynamic member.
fn join(conn: &mut Conn, group: &str, member: &str) -> JoinGroupResponse {
    let r = conn.send(9, &join_req(group, member, None, 10_000, &["range"])).unwrap();
    if r.error_code == MEMBER_ID_REQUIRED {
        assert!(!r.member_id.is_empty());
        return conn.send(9, &join_req(group, r.member_id.as_str(), None, 10_000, &["range"])).unwrap();
    }
    r
}

fn sync(conn: &mut Conn, group: &str, gen_id: i32, member: &str, assignments: &[(&str, &[u8])]) -> (i16, Bytes) {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(st(group)))
        .with_generation_id(gen_id)
        .with_member_id(st(member))
        .with_protocol_type(Some(st("consumer")))
        .with_protocol_name(Some(st("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(st(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    let r = conn.send(5, &req).unwrap();
    (r.error_code, r.assignment)
}

fn heartbeat(conn: &mut Conn, group: &str, gen_id: i32, member: &str, instance: Option<&str>) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(st(group)))
        .with_generation_id(gen_id)
        .with_member_id(st(member))
        .with_group_instance_id(instance.map(st));
    conn.send(4, &req).unwrap().error_code
}

fn describe(conn: &mut Conn, group: &str) -> (String, usize) {
    let r = conn.send(5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(st(group))])).unwrap();
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0);
    (g.group_state.to_string(), g.members.len())
}

fn commit(conn: &mut Conn, group: &str, gen_id: i32, member: &str, topic: &str, offsets: &[(i32, i64)]) -> Vec<i16> {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(st(group)))
        .with_generation_id_or_member_epoch(gen_id)
        .with_member_id(st(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(TopicName(st(topic))).with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_metadata(Some(st("meta")))
                    })
                    .collect(),
            ),
        ]);
    let r = conn.send(8, &req).unwrap();
    r.topics[0].partitions.iter().map(|p| p.error_code).collect()
}

/// Committed offsets of partitions 0..n (OffsetFetch v7).
fn fetch(conn: &mut Conn, group: &str, topic: &str, n: i32) -> Vec<i64> {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(st(group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(st(topic))).with_partition_indexes((0..n).collect()),
    ]));
    let r = conn.send(7, &req).unwrap();
    assert_eq!(r.error_code, 0);
    r.topics[0].partitions.iter().map(|p| p.committed_offset).collect()
}

fn create(conn: &mut Conn, topic: &str, partitions: i32) {
    common::create_topic(conn, topic, partitions, &[]);
}

fn list(conn: &mut Conn) -> Vec<(String, String)> {
    let r = conn.send(4, &ListGroupsRequest::default()).unwrap();
    r.groups.iter().map(|g| (g.group_id.to_string(), g.group_state.to_string())).collect()
}

#[test]
fn find_coordinator_and_not_coordinator_elsewhere() {
    let dir = temp_dir("groups-coordinator");
    let kopd = Kopd::start(&dir, 2, FAST);
    let mut c = Conn::connect(kopd.addr(1));
    // Batched lookup (v4+): every key answered, each by a real broker.
    let keys: Vec<StrBytes> = (0..8).map(|i| st(&format!("group-{i}"))).collect();
    let r = c.send(4, &FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(keys)).unwrap();
    assert_eq!(r.coordinators.len(), 8);
    let nodes: Vec<i32> = r.coordinators.iter().map(|c| c.node_id.0).collect();
    assert!(r.coordinators.iter().all(|c| c.error_code == 0 && c.port == kopd.port as i32 + c.node_id.0));
    assert!(nodes.contains(&0) && nodes.contains(&1), "groups spread over cores: {nodes:?}");
    // Transactions have no coordinator here.
    let r = c.send(3, &FindCoordinatorRequest::default().with_key(st("tx")).with_key_type(1)).unwrap();
    assert_ne!(r.error_code, 0);
    // The internal topic is visible, and internal.
    let m = c.send(12, &MetadataRequest::default().with_topics(None)).unwrap();
    let internal = m.topics.iter().find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("__consumer_offsets")).unwrap();
    assert!(internal.is_internal);
    assert_eq!(internal.partitions.len(), 50);
    // A group request at the other core: NOT_COORDINATOR.
    let owner = nodes[0];
    let mut wrong = Conn::connect(kopd.addr(1 - owner as u16));
    let r = wrong.send(9, &join_req("group-0", "", None, 10_000, &["range"])).unwrap();
    assert_eq!(r.error_code, NOT_COORDINATOR);
    let hb = heartbeat(&mut wrong, "group-0", 1, "m", None);
    assert_eq!(hb, NOT_COORDINATOR);
}

#[test]
fn join_sync_heartbeat_leave() {
    let dir = temp_dir("groups-flow");
    let kopd = Kopd::start(&dir, 1, FAST);
    let mut c = coordinator(&kopd, "flow");
    // v4+: a new member first gets its id with MEMBER_ID_REQUIRED.
    let first = c.send(9, &join_req("flow", "", None, 10_000, &["range"])).unwrap();
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let j = c.send(9, &join_req("flow", first.member_id.as_str(), None, 10_000, &["range"])).unwrap();
    assert_eq!(j.error_code, 0);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    let me = j.member_id.to_string();
    assert_eq!(describe(&mut c, "flow").0, "CompletingRebalance");
    let (err, assignment) = sync(&mut c, "flow", 1, &me, &[(&me, b"mine")]);
    assert_eq!((err, &assignment[..]), (0, &b"mine"[..]));
    assert_eq!(heartbeat(&mut c, "flow", 1, &me, None), 0);
    assert_eq!(heartbeat(&mut c, "flow", 0, &me, None), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&mut c, "flow", 1, "nobody", None), UNKNOWN_MEMBER_ID);
    assert_eq!(describe(&mut c, "flow"), ("Stable".to_string(), 1));
    let d = c.send(5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(st("flow"))])).unwrap();
    assert_eq!(d.groups[0].members[0].client_host.as_str(), "/127.0.0.1", "Kafka's form of the member's address");
    assert!(list(&mut c).contains(&("flow".to_string(), "Stable".to_string())));
    // Errors Kafka gives for bad joins.
    let bad = c.send(9, &join_req("flow", "", None, 10, &["range"])).unwrap();
    assert_eq!(bad.error_code, INVALID_SESSION_TIMEOUT);
    let bad = c.send(9, &join_req("flow", "", None, 10_000, &["roundrobin"])).unwrap();
    assert_eq!(bad.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // A non-empty group cannot be deleted.
    let d = c.send(2, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(st("flow"))])).unwrap();
    assert_eq!(d.results[0].error_code, NON_EMPTY_GROUP);
    // Leave (batched, v3+): the group empties.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(st("flow")))
        .with_members(vec![MemberIdentity::default().with_member_id(st(&me))]);
    let r = c.send(5, &leave).unwrap();
    assert_eq!((r.error_code, r.members[0].error_code), (0, 0));
    assert_eq!(describe(&mut c, "flow"), ("Empty".to_string(), 0));
    assert_eq!(heartbeat(&mut c, "flow", 1, &me, None), UNKNOWN_MEMBER_ID);
    let d = c.send(2, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(st("flow"))])).unwrap();
    assert_eq!(d.results[0].error_code, 0);
    let d = c.send(2, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(st("flow"))])).unwrap();
    assert_eq!(d.results[0].error_code, GROUP_ID_NOT_FOUND);
}

#[test]
fn a_second_member_triggers_a_rebalance() {
    let dir = temp_dir("groups-rebalance");
    let kopd = Kopd::start(&dir, 2, FAST);
    let mut a = coordinator(&kopd, "reb");
    let ja = join(&mut a, "reb", "");
    let ma = ja.member_id.to_string();
    assert_eq!(sync(&mut a, "reb", 1, &ma, &[(&ma, b"all")]).0, 0);
    let port = a.stream.peer_addr().unwrap();
    // B's join waits until A rejoins.
    let b = std::thread::spawn(move || {
        let mut b = Conn::connect(port);
        join(&mut b, "reb", "")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while heartbeat(&mut a, "reb", 1, &ma, None) != REBALANCE_IN_PROGRESS {
        assert!(Instant::now() < deadline, "no rebalance started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ja2 = a.send(9, &join_req("reb", &ma, None, 10_000, &["range"])).unwrap();
    let jb = b.join().unwrap();
    assert_eq!((ja2.error_code, jb.error_code), (0, 0));
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja2.leader.as_str(), ma, "the leader stays");
    assert_eq!(ja2.members.len(), 2);
    assert!(jb.members.is_empty(), "followers get no member list");
    // The old generation may no longer commit.
    assert_eq!(commit(&mut a, "reb", 1, &ma, "__consumer_offsets", &[(0, 1)]), vec![ILLEGAL_GENERATION]);
    let mb = jb.member_id.to_string();
    let b_sync = std::thread::spawn(move || {
        let mut b = Conn::connect(port);
        sync(&mut b, "reb", 2, &mb, &[])
    });
    let (err, asg) = sync(&mut a, "reb", 2, &ma, &[(&ma, b"a"), (jb.member_id.as_str(), b"b")]);
    assert_eq!((err, &asg[..]), (0, &b"a"[..]));
    let (err, asg) = b_sync.join().unwrap();
    assert_eq!((err, &asg[..]), (0, &b"b"[..]));
    assert_eq!(describe(&mut a, "reb"), ("Stable".to_string(), 2));
}

#[test]
fn static_member_rejoins_without_rebalance() {
    let dir = temp_dir("groups-static");
    let kopd = Kopd::start(&dir, 1, FAST);
    let mut c = coordinator(&kopd, "static");
    // Static members get their id at once (no MEMBER_ID_REQUIRED).
    let j = c.send(9, &join_req("static", "", Some("inst-1"), 10_000, &["range"])).unwrap();
    assert_eq!((j.error_code, j.generation_id), (0, 1));
    let old = j.member_id.to_string();
    assert!(old.starts_with("inst-1-"));
    assert_eq!(sync(&mut c, "static", 1, &old, &[(&old, b"p0")]).0, 0);
    // A restarted instance rejoins with no member id: same generation, no rebalance.
    let again = c.send(9, &join_req("static", "", Some("inst-1"), 10_000, &["range"])).unwrap();
    assert_eq!((again.error_code, again.generation_id), (0, 1));
    let new = again.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(describe(&mut c, "static"), ("Stable".to_string(), 1));
    // The old member id is fenced; the new one has the old assignment.
    assert_eq!(heartbeat(&mut c, "static", 1, &old, Some("inst-1")), FENCED_INSTANCE_ID);
    assert_eq!(heartbeat(&mut c, "static", 1, &new, Some("inst-1")), 0);
    let (err, asg) = sync(&mut c, "static", 1, &new, &[]);
    assert_eq!((err, &asg[..]), (0, &b"p0"[..]));
}

#[test]
fn expired_sessions_empty_the_group() {
    let dir = temp_dir("groups-expiry");
    let kopd = Kopd::start(&dir, 1, FAST);
    let mut c = coordinator(&kopd, "expiry");
    let j = c.send(9, &join_req("expiry", "", Some("i"), 300, &["range"])).unwrap();
    assert_eq!(j.error_code, 0);
    assert_eq!(sync(&mut c, "expiry", 1, j.member_id.as_str(), &[]).0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&mut c, "expiry").0 != "Empty" {
        assert!(Instant::now() < deadline, "member never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(heartbeat(&mut c, "expiry", 1, j.member_id.as_str(), None), UNKNOWN_MEMBER_ID);
}

#[test]
fn committed_offsets_and_groups_survive_a_restart() {
    let dir = temp_dir("groups-restart");
    let mut kopd = Kopd::start(&dir, 2, FAST);
    let port = kopd.port;
    let mut admin = Conn::connect(kopd.addr(0));
    create(&mut admin, "t", 3);
    let mut c = coordinator(&kopd, "offsets");
    // A simple (memberless) commit creates the group; unknown partitions are refused.
    assert_eq!(commit(&mut c, "offsets", -1, "", "t", &[(0, 10), (1, 20), (2, 30)]), vec![0, 0, 0]);
    assert_eq!(commit(&mut c, "offsets", -1, "", "t", &[(7, 1)]), vec![3]);
    assert_eq!(commit(&mut c, "offsets", -1, "", "t", &[(2, 31)]), vec![0]);
    assert_eq!(fetch(&mut c, "offsets", "t", 3), vec![10, 20, 31]);
    // A consumer group with a member, committing within its generation.
    let mut g = coordinator(&kopd, "members");
    let j = join(&mut g, "members", "");
    let m = j.member_id.to_string();
    assert_eq!(sync(&mut g, "members", 1, &m, &[(&m, b"x")]).0, 0);
    assert_eq!(commit(&mut g, "members", 1, &m, "t", &[(0, 5)]), vec![0]);
    assert_eq!(commit(&mut g, "members", 1, "stranger", "t", &[(0, 6)]), vec![UNKNOWN_MEMBER_ID]);
    drop((admin, c, g));
    assert!(kopd.stop().success());

    let kopd = Kopd::start_on(&dir, 2, port, FAST);
    let mut c = coordinator(&kopd, "offsets");
    assert_eq!(fetch(&mut c, "offsets", "t", 3), vec![10, 20, 31]);
    let mut g = coordinator(&kopd, "members");
    assert_eq!(fetch(&mut g, "members", "t", 1), vec![5]);
    // The member's generation survived: it keeps heartbeating without a rebalance.
    assert_eq!(heartbeat(&mut g, "members", 1, &m, None), 0);
    assert_eq!(describe(&mut g, "members"), ("Stable".to_string(), 1));
    let mut all: Vec<String> =
        (0..2).flat_map(|core| list(&mut Conn::connect(kopd.addr(core))).into_iter().map(|(id, _)| id)).collect();
    all.sort();
    assert_eq!(all, vec!["members".to_string(), "offsets".to_string()]);
    // Several groups in one OffsetFetch (v8+), each from its coordinator.
    let req = OffsetFetchRequest::default()
        .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(st("offsets"))).with_topics(None)]);
    let r = c.send(8, &req).unwrap();
    assert_eq!(r.groups[0].error_code, 0);
    let offsets: Vec<i64> = r.groups[0].topics[0].partitions.iter().map(|p| p.committed_offset).collect();
    assert_eq!(offsets, vec![10, 20, 31]);
    // OffsetDelete: refused for a subscribed topic of a live consumer group, done otherwise.
    let del = |topic: &str| {
        OffsetDeleteRequest::default().with_group_id(GroupId(st("x"))).with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(st(topic)))
                .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
        ])
    };
    let r = g.send(0, &del("t").with_group_id(GroupId(st("members")))).unwrap();
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, GROUP_SUBSCRIBED_TO_TOPIC));
    let r = c.send(0, &del("t").with_group_id(GroupId(st("offsets")))).unwrap();
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(fetch(&mut c, "offsets", "t", 3), vec![-1, 20, 31]);
    // A deleted group's offsets are gone, across a restart too.
    let d = c.send(2, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(st("offsets"))])).unwrap();
    assert_eq!(d.results[0].error_code, 0);
    assert_eq!(fetch(&mut c, "offsets", "t", 3), vec![-1, -1, -1]);
    drop((c, g));
    let mut kopd = kopd;
    assert!(kopd.stop().success());
    let kopd = Kopd::start_on(&dir, 2, port, FAST);
    let mut c = coordinator(&kopd, "offsets");
    assert_eq!(fetch(&mut c, "offsets", "t", 3), vec![-1, -1, -1]);
    let mut g = coordinator(&kopd, "members");
    assert_eq!(fetch(&mut g, "members", "t", 1), vec![5]);
}

/// Kafka's partitionFor(group) over 50 partitions (Java's String.hashCode).
fn offsets_partition(group: &str) -> i32 {
    let h = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    if h == i32::MIN { 0 } else { h.abs() % 50 }
}

fn earliest(conn: &mut Conn, topic: &str, partition: i32) -> i64 {
    let req = ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(st(topic)))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-2)]),
    ]);
    let p = conn.send(7, &req).unwrap().topics[0].partitions[0].clone();
    assert_eq!(p.error_code, 0);
    p.offset
}

#[test]
fn offsets_partitions_are_compacted_and_replay_the_compacted_state() {
    let dir = temp_dir("groups-compact");
    let args = [FAST, &["--set", "offsets.retention.check.interval.ms=300"]].concat();
    let mut kopd = Kopd::start(&dir, 1, &args);
    let port = kopd.port;
    let mut c = coordinator(&kopd, "compact");
    create(&mut c, "wide", 100);
    // 10,100 offset records: past the compaction threshold (10,000).
    for round in 0..101i64 {
        let offsets: Vec<(i32, i64)> = (0..100).map(|p| (p, round * 1000 + p as i64)).collect();
        assert!(commit(&mut c, "compact", -1, "", "wide", &offsets).iter().all(|e| *e == 0));
    }
    let expected: Vec<i64> = (0..100).map(|p| 100_000 + p as i64).collect();
    assert_eq!(fetch(&mut c, "compact", "wide", 100), expected);
    let p = offsets_partition("compact");
    let deadline = Instant::now() + Duration::from_secs(20);
    while earliest(&mut c, "__consumer_offsets", p) < 10_000 {
        assert!(Instant::now() < deadline, "history never compacted");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
    assert!(kopd.stop().success());
    let kopd = Kopd::start_on(&dir, 1, port, &args);
    let mut c = coordinator(&kopd, "compact");
    assert_eq!(fetch(&mut c, "compact", "wide", 100), expected);
}
