//! State-machine tests of the classic protocol, driven synchronously with explicit clocks.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::GroupError;
use super::membership::{JoinRequest, JoinStep, join_step, on_tick};
use super::records::OffsetValue;
use super::state::{Group, GroupState};
use crate::config::{ConfigSources, GroupSettings};

fn settings(initial_delay_ms: u64) -> GroupSettings {
    let mut s = ConfigSources::new().resolve(1).expect("defaults resolve").groups;
    s.initial_rebalance_delay_ms = initial_delay_ms;
    s
}

fn req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        client_id: "c".into(),
        client_host: String::new(),
        require_known_member_id: true,
        supports_skip_assignment: true,
    }
}

/// Joins a dynamic member through MEMBER_ID_REQUIRED; returns its id.
fn join_new(g: &mut Group, s: &GroupSettings) -> String {
    let JoinStep::Done(o) = join_step(g, s, &req("", None)) else { panic!("expected MEMBER_ID_REQUIRED") };
    assert_eq!(o.error, Some(GroupError::MemberIdRequired));
    assert!(g.pending.contains_key(&o.member_id));
    let JoinStep::Wait(id) = join_step(g, s, &req(&o.member_id, None)) else { panic!("expected a wait") };
    id
}

fn make_stable(g: &mut Group) {
    g.set_state(GroupState::Stable, 0);
    for m in g.members.values_mut() {
        m.join_result = None;
        m.synced = true;
    }
    g.sync_deadline = None;
}

#[test]
fn single_member_completes_at_once_without_initial_delay() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    let id = join_new(&mut g, &s);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert_eq!(g.generation, 1);
    let o = g.members[&id].join_result.clone().expect("answered");
    assert_eq!(o.leader, id);
    assert_eq!(o.members.len(), 1);
    assert_eq!(g.protocol.as_deref(), Some("range"));
}

#[test]
fn initial_delay_holds_a_new_group_and_extends_for_newcomers() {
    let s = settings(100);
    let mut g = Group::new("g", 0, 0);
    let a = join_new(&mut g, &s);
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let t0 = Instant::now();
    assert!(!on_tick(&mut g, &s, t0));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let b = join_new(&mut g, &s);
    // The delay ends with a newcomer: it is extended once more.
    on_tick(&mut g, &s, t0 + Duration::from_millis(150));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    on_tick(&mut g, &s, t0 + Duration::from_millis(400));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert!(g.members[&a].join_result.is_some() && g.members[&b].join_result.is_some());
}

#[test]
fn expired_member_empties_the_group_and_is_persisted() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    join_new(&mut g, &s);
    make_stable(&mut g);
    let later = Instant::now() + Duration::from_secs(11);
    assert!(on_tick(&mut g, &s, later), "an emptied group is written");
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.members.is_empty());
    assert_eq!(g.generation, 2);
}

#[test]
fn members_that_never_sync_are_removed_at_the_sync_deadline() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    join_new(&mut g, &s);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    for m in g.members.values_mut() {
        m.join_result = None;
    }
    on_tick(&mut g, &s, Instant::now() + Duration::from_secs(31));
    assert_eq!(g.state, GroupState::Empty);
}

#[test]
fn follower_rejoin_in_stable_needs_no_rebalance_but_the_leader_triggers_one() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    let a = join_new(&mut g, &s);
    make_stable(&mut g);
    let b = join_new(&mut g, &s);
    let JoinStep::Wait(_) = join_step(&mut g, &s, &req(&a, None)) else { panic!("leader must rejoin") };
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert_eq!(g.generation, 2);
    make_stable(&mut g);
    let JoinStep::Done(o) = join_step(&mut g, &s, &req(&b, None)) else { panic!("follower answered at once") };
    assert_eq!((o.error, o.generation), (None, 2));
    assert_eq!(g.state, GroupState::Stable);
    let JoinStep::Wait(_) = join_step(&mut g, &s, &req(&a, None)) else { panic!("leader rejoin rebalances") };
    assert_eq!(g.state, GroupState::PreparingRebalance);
}

#[test]
fn static_member_replacement_is_quiet_and_fences_the_old_id() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    let JoinStep::Wait(old) = join_step(&mut g, &s, &req("", Some("i"))) else { panic!("static joins at once") };
    make_stable(&mut g);
    let JoinStep::PersistThen(o) = join_step(&mut g, &s, &req("", Some("i"))) else { panic!("quiet replace") };
    assert_eq!((o.error, o.generation), (None, 1));
    assert!(o.skip_assignment, "the static leader keeps the assignment");
    assert_ne!(o.member_id, old);
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.check_member(&old, Some("i")).err(), Some(GroupError::FencedInstanceId));
    assert!(g.check_member(&o.member_id, Some("i")).is_ok());
}

#[test]
fn static_rejoin_with_new_subscription_bytes_is_quiet_unless_the_protocol_changes() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    let JoinStep::Wait(_) = join_step(&mut g, &s, &req("", Some("i"))) else { panic!("static joins at once") };
    make_stable(&mut g);
    // A restarted consumer's subscription differs (generation, owned partitions); the
    // selected protocol does not, so Kafka keeps the generation.
    let mut restarted = req("", Some("i"));
    restarted.protocols = vec![("range".into(), Bytes::from_static(b"other meta"))];
    let JoinStep::PersistThen(o) = join_step(&mut g, &s, &restarted) else { panic!("quiet replace") };
    assert_eq!((o.error, o.generation), (None, 1));
    assert_eq!(g.members[&o.member_id].protocols, restarted.protocols, "the new subscription is kept");
    // The member now prefers the other protocol it offers: the group's choice changes, so it
    // rebalances.
    let both = |first: &str, second: &str| vec![(first.to_string(), Bytes::new()), (second.to_string(), Bytes::new())];
    let mut g = Group::new("g2", 0, 0);
    let mut first = req("", Some("j"));
    first.protocols = both("range", "roundrobin");
    let JoinStep::Wait(_) = join_step(&mut g, &s, &first) else { panic!("static joins at once") };
    make_stable(&mut g);
    assert_eq!(g.protocol.as_deref(), Some("range"));
    let mut switched = req("", Some("j"));
    switched.protocols = both("roundrobin", "range");
    let JoinStep::Wait(_) = join_step(&mut g, &s, &switched) else { panic!("a changed protocol rebalances") };
    // The only member has joined, so the new generation is formed at once.
    assert_eq!(
        (g.state, g.generation, g.protocol.as_deref()),
        (GroupState::CompletingRebalance, 2, Some("roundrobin"))
    );
}

#[test]
fn inconsistent_protocols_and_unknown_members_are_refused() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 0);
    join_new(&mut g, &s);
    let mut other = req("", None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    let JoinStep::Done(o) = join_step(&mut g, &s, &other) else { panic!() };
    assert_eq!(o.error, Some(GroupError::InconsistentGroupProtocol));
    let JoinStep::Done(o) = join_step(&mut g, &s, &req("ghost", None)) else { panic!() };
    assert_eq!(o.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn only_empty_groups_lose_offsets_after_retention() {
    let s = settings(0);
    let mut g = Group::new("g", 0, 1_000);
    let v = |ts: i64, expire: i64| OffsetValue {
        offset: 1,
        commit_timestamp: ts,
        expire_timestamp: expire,
        ..Default::default()
    };
    g.offsets.insert(("t".into(), 0), v(1_000, -1));
    g.offsets.insert(("t".into(), 1), v(5_000, -1));
    g.offsets.insert(("t".into(), 2), v(1_000, 2_000));
    assert_eq!(g.expired_offsets(1_500, 1_000), vec![]);
    let mut expired = g.expired_offsets(2_500, 1_000);
    expired.sort();
    assert_eq!(expired, vec![("t".to_string(), 0), ("t".to_string(), 2)]);
    assert_eq!(g.expired_offsets(6_000, 1_000).len(), 3);
    // A group with members keeps its offsets, however old.
    join_new(&mut g, &s);
    assert!(g.expired_offsets(1_000_000, 1_000).is_empty());
}
