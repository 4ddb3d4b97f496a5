//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup as Kafka's classic protocol runs them, and
//! the state transitions they (and the timers) cause.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::GroupError;
use super::coordinator::GroupCoordinator;
use super::state::{Group, GroupState, InitialDelay, JoinOutcome, Member};
use crate::broker::Broker;
use crate::config::GroupSettings;
use crate::log::managed_ledger::now_ms;

/// What a JoinGroup asks for.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
    /// v9+: a rejoining static leader gets the members with skip_assignment instead of a rebalance.
    pub supports_skip_assignment: bool,
}

pub struct SyncRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// Successful SyncGroup: protocol type and name, and the member's assignment.
pub type SyncOutcome = (Option<String>, Option<String>, Bytes);

/// Slack on top of the rebalance timeout before a waiting request gives up on its own (the
/// periodic task answers it at the deadline; this only bounds a stuck wait).
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// Starts a join phase (Kafka's prepareRebalance).
pub(super) fn prepare_rebalance(g: &mut Group, s: &GroupSettings, now: Instant) {
    if g.state == GroupState::CompletingRebalance {
        for m in g.members.values_mut().filter(|m| m.awaiting_sync) {
            m.awaiting_sync = false;
            m.sync_result = Some(Err(GroupError::RebalanceInProgress));
        }
    }
    let was_empty = g.state == GroupState::Empty;
    let max = g.max_rebalance_timeout_ms();
    g.set_state(GroupState::PreparingRebalance, now_ms());
    crate::metrics::with(|m| crate::metrics::inc(&m.rebalances));
    g.sync_deadline = None;
    g.rebalance_deadline = Some(now + Duration::from_millis(max));
    g.initial_delay = None;
    if was_empty && s.initial_rebalance_delay_ms > 0 {
        let delay = s.initial_rebalance_delay_ms.min(max);
        g.initial_delay = Some(InitialDelay {
            until: now + Duration::from_millis(delay),
            remaining_ms: max - delay,
            members_at_start: g.members.len(),
        });
    }
}

/// Ends the join phase if it may end now. Returns true if the group's metadata must be
/// written (it became Empty).
pub(super) fn maybe_complete_join(g: &mut Group, now: Instant) -> bool {
    if g.state != GroupState::PreparingRebalance || g.initial_delay.is_some() {
        return false;
    }
    if !g.all_joined() && g.rebalance_deadline.is_some_and(|d| now < d) {
        return false;
    }
    // Members that did not rejoin in time are out (Kafka removes static ones too).
    let gone: Vec<String> = g.members.values().filter(|m| !m.awaiting_join).map(|m| m.id.clone()).collect();
    for id in gone {
        g.remove_member(&id);
    }
    g.pending.clear();
    g.rebalance_deadline = None;
    g.generation = g.generation.wrapping_add(1);
    if g.members.is_empty() {
        g.protocol = None;
        g.leader = None;
        g.set_state(GroupState::Empty, now_ms());
        return true;
    }
    g.protocol = g.select_protocol();
    if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
        g.leader = g.members.keys().next().cloned();
    }
    g.set_state(GroupState::CompletingRebalance, now_ms());
    g.sync_deadline = Some(now + Duration::from_millis(g.max_rebalance_timeout_ms()));
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        let outcome = g.join_outcome(&id, false);
        if let Some(m) = g.members.get_mut(&id) {
            m.awaiting_join = false;
            m.synced = false;
            m.last_heartbeat = now;
            m.join_result = Some(outcome);
        }
    }
    false
}

/// A member left or expired. Returns true if the group's metadata must be written.
pub(super) fn member_gone(g: &mut Group, id: &str, s: &GroupSettings, now: Instant) -> bool {
    if g.remove_member(id).is_none() {
        return false;
    }
    if matches!(g.state, GroupState::Stable | GroupState::CompletingRebalance) {
        prepare_rebalance(g, s, now);
    }
    maybe_complete_join(g, now)
}

/// Timers of one group. Returns true if the group's metadata must be written.
pub(super) fn on_tick(g: &mut Group, s: &GroupSettings, now: Instant) -> bool {
    let mut persist = false;
    let pending_before = g.pending.len();
    g.pending.retain(|_, until| *until > now);
    let expired: Vec<String> = g
        .members
        .values()
        .filter(|m| !m.awaiting_join && !m.awaiting_sync)
        .filter(|m| {
            now.saturating_duration_since(m.last_heartbeat) > Duration::from_millis(m.session_timeout_ms as u64)
        })
        .map(|m| m.id.clone())
        .collect();
    for id in &expired {
        tracing::info!(group = %g.id, member = %id, "member session expired");
        persist |= member_gone(g, id, s, now);
    }
    match g.state {
        GroupState::PreparingRebalance => {
            if let Some(d) = g.initial_delay
                && now >= d.until
            {
                g.initial_delay = None;
                if g.members.len() > d.members_at_start && d.remaining_ms > 0 {
                    let ext = s.initial_rebalance_delay_ms.min(d.remaining_ms);
                    g.initial_delay = Some(InitialDelay {
                        until: now + Duration::from_millis(ext),
                        remaining_ms: d.remaining_ms - ext,
                        members_at_start: g.members.len(),
                    });
                }
            }
            persist |= maybe_complete_join(g, now);
        }
        GroupState::CompletingRebalance if g.sync_deadline.is_some_and(|d| now >= d) => {
            let unsynced: Vec<String> = g.members.values().filter(|m| !m.synced).map(|m| m.id.clone()).collect();
            for id in unsynced {
                g.remove_member(&id);
            }
            prepare_rebalance(g, s, now);
            persist |= maybe_complete_join(g, now);
        }
        _ if pending_before != g.pending.len() => persist |= maybe_complete_join(g, now),
        _ => {}
    }
    persist
}

fn new_member(id: &str, r: &JoinRequest, now: Instant) -> Member {
    Member {
        id: id.to_string(),
        instance_id: r.instance_id.clone(),
        client_id: r.client_id.clone(),
        client_host: r.client_host.clone(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        protocol_type: r.protocol_type.clone(),
        protocols: r.protocols.clone(),
        assignment: Bytes::new(),
        last_heartbeat: now,
        awaiting_join: true,
        join_result: None,
        awaiting_sync: false,
        sync_result: None,
        synced: false,
    }
}

/// What the synchronous half of a join decided.
pub(super) enum JoinStep {
    Done(JoinOutcome),
    /// Answer now after writing the group's metadata (static member replaced).
    PersistThen(JoinOutcome),
    Wait(String),
}

impl GroupCoordinator {
    pub async fn join(&self, broker: &Broker, r: JoinRequest) -> JoinOutcome {
        let s = &broker.config.groups;
        if r.group_id.is_empty() {
            return JoinOutcome::error(GroupError::InvalidGroupId, &r.member_id);
        }
        let p = match self.locate(broker, &r.group_id) {
            Ok(p) => p,
            Err(e) => return JoinOutcome::error(e, &r.member_id),
        };
        if r.session_timeout_ms < s.min_session_timeout_ms || r.session_timeout_ms > s.max_session_timeout_ms {
            return JoinOutcome::error(GroupError::InvalidSessionTimeout, &r.member_id);
        }
        let step = {
            let mut groups = self.groups.borrow_mut();
            let created = !groups.contains_key(&r.group_id);
            if created && !r.member_id.is_empty() {
                return JoinOutcome::error(GroupError::UnknownMemberId, &r.member_id);
            }
            let g = groups.entry(r.group_id.clone()).or_insert_with(|| Group::new(&r.group_id, p, now_ms()));
            let step = join_step(g, s, &r);
            if created && g.members.is_empty() && g.offsets.is_empty() && g.pending.is_empty() {
                groups.remove(&r.group_id);
            }
            step
        };
        self.changed.notify(usize::MAX);
        let member_id = match step {
            JoinStep::Done(o) => return o,
            JoinStep::PersistThen(o) => {
                return match self.persist_group(broker, p, &r.group_id).await {
                    Ok(()) => o,
                    Err(e) => JoinOutcome::error(e, &r.member_id),
                };
            }
            JoinStep::Wait(id) => id,
        };
        let limit =
            Duration::from_millis(r.rebalance_timeout_ms.max(0) as u64 + s.initial_rebalance_delay_ms) + WAIT_SLACK;
        let (group_id, instance) = (r.group_id.clone(), r.instance_id.clone());
        let waited = self
            .wait_for(broker, limit, |groups| {
                let Some(g) = groups.get_mut(&group_id) else {
                    return Some(JoinOutcome::error(GroupError::UnknownMemberId, &member_id));
                };
                match g.members.get_mut(&member_id) {
                    Some(m) => m.join_result.take(),
                    None => Some(JoinOutcome::error(fenced_or_unknown(g, instance.as_deref()), &member_id)),
                }
            })
            .await;
        waited.unwrap_or_else(|| JoinOutcome::error(GroupError::RebalanceInProgress, &member_id))
    }

    pub async fn sync(&self, broker: &Broker, r: SyncRequest) -> Result<SyncOutcome, GroupError> {
        let p = self.locate(broker, &r.group_id)?;
        let now = Instant::now();
        let (leader, wait_ms) = {
            let mut groups = self.groups.borrow_mut();
            let g = groups.get_mut(&r.group_id).ok_or(GroupError::UnknownMemberId)?;
            g.check_member(&r.member_id, r.instance_id.as_deref())?;
            if r.generation != g.generation {
                return Err(GroupError::IllegalGeneration);
            }
            let mismatch = |asked: &Option<String>, have: &Option<String>| asked.is_some() && asked != have;
            if mismatch(&r.protocol_type, &g.protocol_type) || mismatch(&r.protocol_name, &g.protocol) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            let (ptype, pname) = (g.protocol_type.clone(), g.protocol.clone());
            let is_leader = g.leader.as_deref() == Some(r.member_id.as_str());
            match g.state {
                GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
                GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => {
                    let m = g.members.get_mut(&r.member_id).ok_or(GroupError::UnknownMemberId)?;
                    m.last_heartbeat = now;
                    return Ok((ptype, pname, m.assignment.clone()));
                }
                GroupState::CompletingRebalance => {}
            }
            if is_leader {
                for m in g.members.values_mut() {
                    m.assignment =
                        r.assignments.iter().find(|(id, _)| *id == m.id).map(|(_, a)| a.clone()).unwrap_or_default();
                }
            }
            let m = g.members.get_mut(&r.member_id).ok_or(GroupError::UnknownMemberId)?;
            m.last_heartbeat = now;
            m.synced = true;
            m.awaiting_sync = true;
            m.sync_result = None;
            (is_leader, m.rebalance_timeout_ms.max(0) as u64)
        };
        if leader {
            self.store_assignment(broker, p, &r.group_id, r.generation).await;
        }
        let (group_id, member_id, instance) = (r.group_id.clone(), r.member_id.clone(), r.instance_id.clone());
        let waited = self
            .wait_for(broker, Duration::from_millis(wait_ms) + WAIT_SLACK, |groups| {
                let Some(g) = groups.get_mut(&group_id) else { return Some(Err(GroupError::UnknownMemberId)) };
                let (ptype, pname) = (g.protocol_type.clone(), g.protocol.clone());
                match g.members.get_mut(&member_id) {
                    Some(m) => m.sync_result.take().map(|res| res.map(|a| (ptype, pname, a))),
                    None => Some(Err(fenced_or_unknown(g, instance.as_deref()))),
                }
            })
            .await;
        waited.unwrap_or(Err(GroupError::RebalanceInProgress))
    }

    /// The leader's assignment: write the group's metadata, then answer every waiting member.
    async fn store_assignment(&self, broker: &Broker, p: i32, group_id: &str, generation: i32) {
        let result = self.persist_group(broker, p, group_id).await;
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get_mut(group_id)
            && g.generation == generation
            && g.state == GroupState::CompletingRebalance
        {
            match result {
                Ok(()) => {
                    for m in g.members.values_mut().filter(|m| m.awaiting_sync) {
                        m.awaiting_sync = false;
                        m.sync_result = Some(Ok(m.assignment.clone()));
                    }
                    g.sync_deadline = None;
                    g.set_state(GroupState::Stable, now_ms());
                }
                Err(e) => {
                    for m in g.members.values_mut().filter(|m| m.awaiting_sync) {
                        m.awaiting_sync = false;
                        m.sync_result = Some(Err(e));
                    }
                    prepare_rebalance(g, &broker.config.groups, Instant::now());
                }
            }
        }
        drop(groups);
        self.changed.notify(usize::MAX);
    }

    pub fn heartbeat(
        &self,
        broker: &Broker,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        self.locate(broker, group_id)?;
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        g.check_member(member_id, instance_id)?;
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let state = g.state;
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Removes members (member id, group.instance.id); one result per member.
    pub async fn leave(
        &self,
        broker: &Broker,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let p = self.locate(broker, group_id)?;
        let now = Instant::now();
        let (results, persist) = {
            let mut groups = self.groups.borrow_mut();
            let g = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
            let mut persist = false;
            let results = members
                .iter()
                .map(|(member_id, instance)| {
                    let target = match instance {
                        Some(i) => match g.static_members.get(i) {
                            None => return Err(GroupError::UnknownMemberId),
                            Some(cur) if !member_id.is_empty() && cur != member_id => {
                                return Err(GroupError::FencedInstanceId);
                            }
                            Some(cur) => cur.clone(),
                        },
                        None => member_id.clone(),
                    };
                    if g.pending.remove(&target).is_some() {
                        persist |= maybe_complete_join(g, now);
                        return Ok(());
                    }
                    if !g.members.contains_key(&target) {
                        return Err(GroupError::UnknownMemberId);
                    }
                    tracing::debug!(group = %g.id, member = %target, "member left");
                    persist |= member_gone(g, &target, &broker.config.groups, now);
                    Ok(())
                })
                .collect();
            (results, persist)
        };
        self.changed.notify(usize::MAX);
        if persist {
            self.persist_group(broker, p, group_id).await?;
        }
        Ok(results)
    }
}

fn fenced_or_unknown(g: &Group, instance: Option<&str>) -> GroupError {
    if instance.is_some_and(|i| g.static_members.contains_key(i)) {
        GroupError::FencedInstanceId
    } else {
        GroupError::UnknownMemberId
    }
}

/// The synchronous half of JoinGroup (Kafka's doClassicGroupJoin).
pub(super) fn join_step(g: &mut Group, s: &GroupSettings, r: &JoinRequest) -> JoinStep {
    let now = Instant::now();
    let fail = |e| JoinStep::Done(JoinOutcome::error(e, &r.member_id));
    if g.state == GroupState::Dead {
        return fail(GroupError::CoordinatorNotAvailable);
    }
    if !g.supports(&r.protocol_type, &r.protocols) {
        return fail(GroupError::InconsistentGroupProtocol);
    }
    if r.member_id.is_empty() {
        let prefix = r.instance_id.as_deref().unwrap_or(&r.client_id);
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance) = &r.instance_id
            && let Some(old) = g.static_members.get(instance).cloned()
        {
            return replace_static(g, s, r, &old, new_id, now);
        }
        if r.instance_id.is_none() && r.require_known_member_id {
            g.pending.insert(new_id.clone(), now + Duration::from_millis(r.session_timeout_ms.max(0) as u64));
            return JoinStep::Done(JoinOutcome::error(GroupError::MemberIdRequired, &new_id));
        }
        add_member(g, s, r, &new_id, now);
        return JoinStep::Wait(new_id);
    }
    if g.pending.remove(&r.member_id).is_some() {
        add_member(g, s, r, &r.member_id, now);
        return JoinStep::Wait(r.member_id.clone());
    }
    let (is_leader, same) = match g.check_member(&r.member_id, r.instance_id.as_deref()) {
        Ok(m) => (g.leader.as_deref() == Some(m.id.as_str()), m.same_protocols(&r.protocols)),
        Err(e) => return fail(e),
    };
    match g.state {
        GroupState::Empty | GroupState::Dead => fail(GroupError::UnknownMemberId),
        GroupState::CompletingRebalance if same => JoinStep::Done(g.join_outcome(&r.member_id, false)),
        GroupState::Stable if same && !is_leader => JoinStep::Done(g.join_outcome(&r.member_id, false)),
        _ => {
            update_member(g, r, &r.member_id, now);
            if g.state != GroupState::PreparingRebalance {
                prepare_rebalance(g, s, now);
            }
            maybe_complete_join(g, now);
            JoinStep::Wait(r.member_id.clone())
        }
    }
}

fn add_member(g: &mut Group, s: &GroupSettings, r: &JoinRequest, id: &str, now: Instant) {
    if g.members.is_empty() {
        g.protocol_type = Some(r.protocol_type.clone());
    }
    g.members.insert(id.to_string(), new_member(id, r, now));
    if let Some(i) = &r.instance_id {
        g.static_members.insert(i.clone(), id.to_string());
    }
    if g.leader.is_none() {
        g.leader = Some(id.to_string());
    }
    if g.state != GroupState::PreparingRebalance {
        prepare_rebalance(g, s, now);
    }
    maybe_complete_join(g, now);
}

fn update_member(g: &mut Group, r: &JoinRequest, id: &str, now: Instant) {
    if let Some(m) = g.members.get_mut(id) {
        m.protocols = r.protocols.clone();
        m.session_timeout_ms = r.session_timeout_ms;
        m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        m.client_id = r.client_id.clone();
        m.last_heartbeat = now;
        m.awaiting_join = true;
        m.join_result = None;
    }
}

/// A static member rejoined with a new member id: it takes the old member's place (and its
/// assignment). In a Stable group with unchanged protocols that is all: no rebalance.
fn replace_static(
    g: &mut Group,
    s: &GroupSettings,
    r: &JoinRequest,
    old: &str,
    new_id: String,
    now: Instant,
) -> JoinStep {
    let Some(mut m) = g.members.remove(old) else {
        g.static_members.remove(r.instance_id.as_deref().unwrap_or_default());
        return JoinStep::Done(JoinOutcome::error(GroupError::UnknownMemberId, &r.member_id));
    };
    let was_leader = g.leader.as_deref() == Some(old);
    m.id = new_id.clone();
    // The rejoin's subscription is the member's from now on (a restarted consumer's differs in
    // its generation and owned partitions), as are its timeouts.
    m.protocols = r.protocols.clone();
    m.session_timeout_ms = r.session_timeout_ms;
    m.rebalance_timeout_ms = r.rebalance_timeout_ms;
    m.client_id = r.client_id.clone();
    m.last_heartbeat = now;
    m.awaiting_join = false;
    m.awaiting_sync = false;
    m.join_result = None;
    m.sync_result = None;
    g.members.insert(new_id.clone(), m);
    if let Some(i) = &r.instance_id {
        g.static_members.insert(i.clone(), new_id.clone());
    }
    if was_leader {
        g.leader = Some(new_id.clone());
    }
    tracing::info!(group = %g.id, old = %old, new = %new_id, "static member replaced");
    // As Kafka: no rebalance unless the protocol the group would select changes.
    let keeps_protocol = g.select_protocol().is_some() && g.select_protocol() == g.protocol;
    let quiet = g.state == GroupState::Stable && keeps_protocol && (!was_leader || r.supports_skip_assignment);
    if quiet {
        return JoinStep::PersistThen(g.join_outcome(&new_id, r.supports_skip_assignment));
    }
    update_member(g, r, &new_id, now);
    if g.state != GroupState::PreparingRebalance {
        prepare_rebalance(g, s, now);
    }
    maybe_complete_join(g, now);
    JoinStep::Wait(new_id)
}
