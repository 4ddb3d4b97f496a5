//! FindCoordinator and the classic group protocol with wrong generations and unknown members.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest,
    JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::common::name;
use crate::norm::{e, ops, reply};
use crate::peers::Side;
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("find_coordinator.group", fc_group),
    ("find_coordinator.empty_key", fc_empty),
    ("find_coordinator.bad_key_type", fc_bad_type),
    ("find_coordinator.transaction", fc_txn),
    ("group.generations_and_members", group_flow),
    ("describe_groups.authorized_operations", describe_groups),
];

fn sb(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn fmt_fc(s: &Side, r: &FindCoordinatorResponse, v: i16) -> String {
    if v >= 4 {
        let items: Vec<String> = r
            .coordinators
            .iter()
            .map(|c| format!("{:?}: {} node={}", c.key.as_str(), e(c.error_code), s.node(c.node_id.0)))
            .collect();
        format!("[{}]", items.join(", "))
    } else {
        format!("{} node={}", e(r.error_code), s.node(r.node_id.0))
    }
}

fn fc_req(key: &str, key_type: i8, v: i16) -> FindCoordinatorRequest {
    let r = FindCoordinatorRequest::default().with_key_type(key_type);
    if v >= 4 { r.with_coordinator_keys(vec![sb(key)]) } else { r.with_key(sb(key)) }
}

/// One FindCoordinator; while the answer is COORDINATOR_NOT_AVAILABLE (the internal topic is
/// still being created) it is retried for up to 10 s, and the last answer is recorded.
fn find(s: &mut Side, t: &mut T, key: &str, key_type: i8, v: i16) {
    if v == 0 && key_type != 0 {
        return; // key_type exists from v1 on
    }
    let mut ans = String::new();
    for _ in 0..100 {
        let r = s.call(v, &fc_req(key, key_type, v));
        ans = reply(&r, |r| fmt_fc(s, r, v));
        if !ans.contains("15 CoordinatorNotAvailable") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    t.step(format!("FindCoordinator v{v} key={key:?} key_type={key_type}"), ans);
}

/// Waits (bounded, not recorded) until the group coordinator answers.
pub fn wait_coordinator(s: &mut Side) {
    let v = s.ver(ApiKey::FindCoordinator, 6);
    crate::peers::wait_until(&format!("{} group coordinator", s.name), || {
        s.call(v, &fc_req("warm-up", 0, v)).map(|r| fmt_fc(s, &r, v).contains(" 0 node=")).unwrap_or(false)
    });
}

fn versions(s: &Side) -> Vec<i16> {
    let (min, max) = s.common.get(&(ApiKey::FindCoordinator as i16)).copied().expect("FindCoordinator served by both");
    let mut v = vec![min, 3.min(max), max];
    v.dedup();
    v.into_iter().filter(|x| *x >= min && *x <= max).collect()
}

fn fc_group(s: &mut Side, t: &mut T) {
    for v in versions(s) {
        find(s, t, "fc-group", 0, v);
    }
}

fn fc_empty(s: &mut Side, t: &mut T) {
    find(s, t, "fc-warm", 0, s.ver(ApiKey::FindCoordinator, 6));
    for v in versions(s) {
        find(s, t, "", 0, v);
    }
}

fn fc_bad_type(s: &mut Side, t: &mut T) {
    for v in versions(s) {
        find(s, t, "fc-bad-type", 7, v);
    }
}

fn fc_txn(s: &mut Side, t: &mut T) {
    for v in versions(s) {
        find(s, t, "fc-txn", 1, v);
    }
}

fn join(s: &mut Side, group: &str, member: &str) -> (String, i32, String) {
    let v = s.ver(ApiKey::JoinGroup, 9);
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(sb(member))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(sb("range")).with_metadata(Bytes::from_static(b"\0\x01")),
        ]);
    let r = s.call(v, &req);
    let ans = reply(&r, |r| {
        format!(
            "{} generation={} protocol={:?} leader_is_me={} member_id={} members={}",
            e(r.error_code),
            r.generation_id,
            r.protocol_name.as_ref().map(|p| p.to_string()),
            !r.leader.is_empty() && r.leader == r.member_id,
            if r.member_id.is_empty() { "empty" } else { "set" },
            r.members.len()
        )
    });
    let (mid, gen_) = r.map(|r| (r.member_id.to_string(), r.generation_id)).unwrap_or_default();
    (ans, gen_, mid)
}

fn heartbeat(s: &mut Side, t: &mut T, group: &str, generation: i32, member: &str, label: &str) {
    let v = s.ver(ApiKey::Heartbeat, 4);
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_generation_id(generation)
        .with_member_id(sb(member));
    let r = s.call(v, &req);
    t.step(format!("Heartbeat v{v} {group} {label}"), reply(&r, |r| e(r.error_code)));
}

fn sync(s: &mut Side, t: &mut T, group: &str, generation: i32, member: &str, label: &str) {
    let v = s.ver(ApiKey::SyncGroup, 5);
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_generation_id(generation)
        .with_member_id(sb(member))
        .with_protocol_type(Some(sb("consumer")))
        .with_protocol_name(Some(sb("range")))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(sb(member))
                .with_assignment(Bytes::from_static(b"\0\x01a")),
        ]);
    let r = s.call(v, &req);
    t.step(
        format!("SyncGroup v{v} {group} {label}"),
        reply(&r, |r| format!("{} assignment={:?}", e(r.error_code), r.assignment)),
    );
}

fn commit(s: &mut Side, t: &mut T, group: &str, generation: i32, member: &str, label: &str) {
    let v = s.ver(ApiKey::OffsetCommit, 9);
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(sb(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(name("gr-topic")).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(2),
        ])]);
    let r = s.call(v, &req);
    let ans = reply(&r, |r| {
        let items: Vec<String> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| format!("{}/{}: {}", t.name.as_str(), p.partition_index, e(p.error_code)))
            })
            .collect();
        format!("[{}]", items.join(", "))
    });
    t.step(format!("OffsetCommit v{v} {group} {label}"), ans);
}

fn offset_fetch(s: &mut Side, t: &mut T, group: &str) {
    let v = s.ver(ApiKey::OffsetFetch, 9);
    let req = if v >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default().with_group_id(GroupId(sb(group))).with_topics(Some(vec![
                OffsetFetchRequestTopics::default().with_name(name("gr-topic")).with_partition_indexes(vec![0, 1]),
            ])),
        ])
    } else {
        OffsetFetchRequest::default().with_group_id(GroupId(sb(group))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(name("gr-topic")).with_partition_indexes(vec![0, 1]),
        ]))
    };
    let r = s.call(v, &req);
    let ans = reply(&r, |r| {
        let mut items = vec![format!("top {}", e(r.error_code))];
        for g in &r.groups {
            items.push(format!("group {}: {}", g.group_id.as_str(), e(g.error_code)));
            for tp in &g.topics {
                for p in &tp.partitions {
                    items.push(format!(
                        "{}/{}: {} offset={} epoch={} meta={:?}",
                        tp.name.as_str(),
                        p.partition_index,
                        e(p.error_code),
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref().map(|m| m.to_string())
                    ));
                }
            }
        }
        for tp in &r.topics {
            for p in &tp.partitions {
                items.push(format!(
                    "{}/{}: {} offset={}",
                    tp.name.as_str(),
                    p.partition_index,
                    e(p.error_code),
                    p.committed_offset
                ));
            }
        }
        items.join(", ")
    });
    t.step(format!("OffsetFetch v{v} {group} gr-topic [0, 1]"), ans);
}

fn group_flow(s: &mut Side, t: &mut T) {
    ensure(s, "gr-topic", 1);
    let g = "gr-flow";
    find(s, t, g, 0, s.ver(ApiKey::FindCoordinator, 6));
    heartbeat(s, t, g, 1, "nobody", "unknown group, unknown member");
    offset_fetch(s, t, g);
    let (ans, _, mid) = join(s, g, "");
    t.step("JoinGroup gr-flow (empty member id)", ans);
    let (ans, generation, mid2) = join(s, g, &mid);
    t.step("JoinGroup gr-flow (member id from the first answer)", ans);
    let mid = if mid2.is_empty() { mid } else { mid2 };
    sync(s, t, g, generation + 5, &mid, "wrong generation");
    sync(s, t, g, generation, "unknown-member", "unknown member");
    sync(s, t, g, generation, &mid, "leader, right generation");
    heartbeat(s, t, g, generation, &mid, "right generation");
    heartbeat(s, t, g, generation + 5, &mid, "wrong generation");
    heartbeat(s, t, g, generation, "unknown-member", "unknown member");
    commit(s, t, g, generation + 5, &mid, "wrong generation");
    commit(s, t, g, generation, "unknown-member", "unknown member");
    commit(s, t, g, -1, "", "generation -1, empty member (admin commit) on an active group");
    commit(s, t, g, generation, &mid, "right generation");
    offset_fetch(s, t, g);
    commit(s, t, "gr-simple", -1, "", "generation -1, empty member, no group");
    offset_fetch(s, t, "gr-simple");
}

fn describe_groups(s: &mut Side, t: &mut T) {
    let g = "gr-desc";
    find(s, t, g, 0, s.ver(ApiKey::FindCoordinator, 6));
    let (_, _, mid) = join(s, g, "");
    let (ans, generation, _) = join(s, g, &mid);
    t.step("JoinGroup gr-desc", ans);
    let _ = generation;
    let (min, max) = s.common.get(&(ApiKey::DescribeGroups as i16)).copied().expect("DescribeGroups served by both");
    for v in [min.max(3), max] {
        for inc in [true, false] {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(sb(g)), GroupId(sb("gr-desc-unknown"))])
                .with_include_authorized_operations(inc);
            let r = s.call(v, &req);
            let ans = reply(&r, |r| {
                let items: Vec<String> = r
                    .groups
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: {} state={} protocol_type={:?} protocol={:?} members={} ops={}",
                            d.group_id.as_str(),
                            e(d.error_code),
                            d.group_state.as_str(),
                            d.protocol_type.as_str(),
                            d.protocol_data.as_str(),
                            d.members.len(),
                            ops(d.authorized_operations)
                        )
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            });
            t.step(format!("DescribeGroups v{v} [gr-desc, gr-desc-unknown] include_authorized_operations={inc}"), ans);
        }
    }
}
