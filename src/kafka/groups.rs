//! Group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//! The protocol lives in `crate::group`; this file translates requests and maps `GroupError`
//! to Kafka error codes.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, RequestHeader, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::group::membership::{JoinRequest, SyncRequest};
use crate::group::{GroupCoordinator, GroupError};

pub fn code(e: GroupError) -> ResponseError {
    match e {
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::CoordinatorNotAvailable | GroupError::StoreFailed => ResponseError::CoordinatorNotAvailable,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::InvalidCommitOffsetSize => ResponseError::InvalidCommitOffsetSize,
    }
}

pub fn error_code(r: Result<(), GroupError>) -> i16 {
    r.err().map_or(0, |e| code(e).code())
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One FindCoordinator key: the core owning the group's `__consumer_offsets` partition.
fn coordinator_for(broker: &Broker, key: &str, key_type: i8) -> Coordinator {
    let base = Coordinator::default().with_key(s(key)).with_node_id(BrokerId(-1)).with_port(-1);
    let fail = |e: ResponseError, msg: &str| base.clone().with_error_code(e.code()).with_error_message(Some(s(msg)));
    match key_type {
        0 => {}
        // kopd has no transaction coordinator yet. A retriable error would keep transactional
        // clients retrying for minutes; this one fails them at once (every client treats it as
        // fatal) and the message says why.
        1 => {
            return fail(
                ResponseError::TransactionalIdAuthorizationFailed,
                "kopd does not support transactions yet (transactional.id cannot be used)",
            );
        }
        _ => return fail(ResponseError::InvalidRequest, "unsupported key type"),
    }
    // Kafka answers an empty group id with its coordinator (the group itself is then refused
    // by the group APIs with INVALID_GROUP_ID).
    let coordinator = GroupCoordinator::coordinator_of(broker, key);
    match coordinator.and_then(|b| Some((b, broker.cluster().endpoint(u32::try_from(b).ok()?)?))) {
        Some((id, (host, port))) => base.with_node_id(BrokerId(id)).with_host(s(&host)).with_port(port),
        // The owner's node has left; the cluster's leader is moving its partitions.
        None if coordinator.is_some() => fail(ResponseError::CoordinatorNotAvailable, "the coordinator is moving"),
        None => fail(ResponseError::CoordinatorNotAvailable, "__consumer_offsets is not available"),
    }
}

pub fn find_coordinator(broker: &Broker, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators =
            req.coordinator_keys.iter().map(|k| coordinator_for(broker, k.as_str(), req.key_type)).collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinator_for(broker, req.key.as_str(), req.key_type);
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}

pub async fn join_group(
    broker: &Broker,
    header: &RequestHeader,
    client_host: &str,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let r = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves for both, as in Kafka.
        rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: client_host.to_string(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let o = broker.groups.join(broker, r).await;
    let members = o
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let m = JoinGroupResponseMember::default().with_member_id(s(&id)).with_metadata(metadata);
            if version >= 5 { m.with_group_instance_id(instance.map(|i| s(&i))) } else { m }
        })
        .collect();
    // Before v7 the protocol name is not nullable.
    let protocol_name = match o.protocol {
        Some(p) => Some(s(&p)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(o.error.map_or(0, |e| code(e).code()))
        .with_generation_id(o.generation)
        .with_protocol_name(protocol_name)
        .with_leader(s(&o.leader))
        .with_member_id(s(&o.member_id))
        .with_members(members);
    if version >= 7 {
        resp = resp.with_protocol_type(o.protocol_type.map(|p| s(&p)));
    }
    if version >= 9 {
        resp = resp.with_skip_assignment(o.skip_assignment);
    }
    resp
}

pub async fn sync_group(broker: &Broker, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let r = SyncRequest {
        group_id: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    match broker.groups.sync(broker, r).await {
        Ok((ptype, pname, assignment)) => {
            let resp = SyncGroupResponse::default().with_assignment(assignment);
            if version >= 5 {
                resp.with_protocol_type(ptype.map(|p| s(&p))).with_protocol_name(pname.map(|p| s(&p)))
            } else {
                resp
            }
        }
        Err(e) => SyncGroupResponse::default().with_error_code(code(e).code()),
    }
}

pub fn heartbeat(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = broker.groups.heartbeat(
        broker,
        req.group_id.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|i| i.as_str()),
    );
    HeartbeatResponse::default().with_error_code(error_code(r))
}

pub async fn leave_group(broker: &Broker, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match broker.groups.leave(broker, req.group_id.as_str(), &members).await {
        Err(e) => LeaveGroupResponse::default().with_error_code(code(e).code()),
        Ok(results) if version < 3 => {
            LeaveGroupResponse::default().with_error_code(results.into_iter().next().map_or(0, error_code))
        }
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(s(&id))
                        .with_group_instance_id(instance.map(|i| s(&i)))
                        .with_error_code(error_code(r))
                })
                .collect(),
        ),
    }
}
