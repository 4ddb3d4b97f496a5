//! Group offset and administration APIs: OffsetCommit, OffsetFetch (one or many groups),
//! OffsetDelete, DescribeGroups, ListGroups, DeleteGroups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::groups::{code, error_code, s};
use crate::broker::Broker;
use crate::group::GroupError;
use crate::group::offsets::{CommitRequest, FetchedOffsets};
use crate::group::records::OffsetValue;

fn tname(t: &str) -> TopicName {
    TopicName(s(t))
}

pub async fn offset_commit(broker: &Broker, req: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let offsets = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect();
    let r = CommitRequest {
        group_id: req.group_id.to_string(),
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        retention_ms: if (2..=4).contains(&version) { req.retention_time_ms } else { -1 },
        offsets,
    };
    let n = r.offsets.len();
    let results = match broker.groups.commit(broker, r).await {
        Ok(r) => r,
        Err(e) => vec![Err(e); n],
    };
    let mut results = results.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = results.next().unwrap_or(Err(GroupError::CoordinatorNotAvailable));
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error_code(r))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's offsets; a group-level error is returned separately.
fn fetch_group(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (FetchedOffsets, Result<(), GroupError>) {
    match broker.groups.fetch_offsets(broker, group, topics.clone()) {
        Ok(f) => (f, Ok(())),
        Err(e) => {
            let empty =
                topics.unwrap_or_default().into_iter().map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()));
            (empty.collect(), Err(e))
        }
    }
}

fn committed(v: &Option<OffsetValue>) -> (i64, i32, String) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, v.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

pub fn offset_fetch(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let topics = g
                    .topics
                    .as_ref()
                    .map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
                let (fetched, err) = fetch_group(broker, g.group_id.as_str(), topics);
                let topics = fetched
                    .into_iter()
                    .map(|(t, ps)| {
                        let partitions = ps
                            .iter()
                            .map(|(p, v)| {
                                let (offset, epoch, metadata) = committed(v);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(s(&metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(tname(&t)).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(error_code(err))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics =
        req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
    let (fetched, err) = fetch_group(broker, req.group_id.as_str(), topics);
    // v1 has no top-level error code: the group's error goes on every partition.
    let partition_err = if version < 2 { error_code(err) } else { 0 };
    let topics = fetched
        .into_iter()
        .map(|(t, ps)| {
            let partitions = ps
                .iter()
                .map(|(p, v)| {
                    let (offset, epoch, metadata) = committed(v);
                    let r = OffsetFetchResponsePartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(s(&metadata)))
                        .with_error_code(partition_err);
                    if version >= 5 { r.with_committed_leader_epoch(epoch) } else { r }
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(tname(&t)).with_partitions(partitions)
        })
        .collect();
    let resp = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 { resp.with_error_code(error_code(err)) } else { resp }
}

pub async fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    match broker.groups.delete_offsets(broker, req.group_id.as_str(), topics).await {
        Err(e) => OffsetDeleteResponse::default().with_error_code(code(e).code()),
        Ok(results) => OffsetDeleteResponse::default().with_topics(
            results
                .into_iter()
                .map(|(t, ps)| {
                    OffsetDeleteResponseTopic::default().with_name(tname(&t)).with_partitions(
                        ps.into_iter()
                            .map(|(p, r)| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(error_code(r))
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

pub fn describe_groups(broker: &Broker, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let base = DescribedGroup::default().with_group_id(id.clone());
            match broker.groups.describe(broker, id.as_str()) {
                Err(e) => base.with_error_code(code(e).code()).with_group_state(s("")),
                // Kafka describes an unknown group as Dead (with GROUP_ID_NOT_FOUND from v6).
                Ok(None) => {
                    let b = base.with_group_state(s("Dead"));
                    if version >= 6 {
                        b.with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(s(&format!("Group {} not found.", id.as_str()))))
                    } else {
                        b
                    }
                }
                Ok(Some(d)) => base
                    .with_group_state(s(d.state))
                    .with_protocol_type(s(&d.protocol_type))
                    .with_protocol_data(s(&d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let dm = DescribedGroupMember::default()
                                    .with_member_id(s(&m.member_id))
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if version >= 4 { dm.with_group_instance_id(m.instance_id.map(|i| s(&i))) } else { dm }
                            })
                            .collect(),
                    ),
            }
        })
        .map(|g: DescribedGroup| {
            // Kafka fills in what the client may do with the groups it described without error.
            if version >= 3 && req.include_authorized_operations && g.error_code == 0 {
                g.with_authorized_operations(super::acl::GROUP_OPERATIONS)
            } else {
                g.with_authorized_operations(super::acl::NOT_REQUESTED)
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn list_groups(broker: &Broker, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    // Every kopd group is a classic group.
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return ListGroupsResponse::default();
    }
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        .map(|(id, ptype, state)| {
            let g = ListedGroup::default().with_group_id(GroupId(s(&id))).with_protocol_type(s(&ptype));
            let g = if version >= 4 { g.with_group_state(s(state)) } else { g };
            if version >= 5 { g.with_group_type(s("classic")) } else { g }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let r = broker.groups.delete_group(broker, g.as_str()).await;
        results.push(DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(error_code(r)));
    }
    DeleteGroupsResponse::default().with_results(results)
}
