//! ApiVersions: advertises exactly the APIs and versions kopd serves.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Encodable, Message, VersionRange};

use crate::net::frame::{finish_frame, start_frame};

/// Every API kopd serves, with the versions served: the codec's full range for each.
pub const SUPPORTED_APIS: &[(ApiKey, VersionRange)] = &[
    (ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS),
    (ApiKey::Metadata, MetadataRequest::VERSIONS),
    (ApiKey::CreateTopics, CreateTopicsRequest::VERSIONS),
    (ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS),
    (ApiKey::CreatePartitions, CreatePartitionsRequest::VERSIONS),
    (ApiKey::DescribeConfigs, DescribeConfigsRequest::VERSIONS),
    (ApiKey::DescribeCluster, DescribeClusterRequest::VERSIONS),
    (ApiKey::Produce, ProduceRequest::VERSIONS),
    (ApiKey::Fetch, FetchRequest::VERSIONS),
    (ApiKey::ListOffsets, ListOffsetsRequest::VERSIONS),
    (ApiKey::InitProducerId, InitProducerIdRequest::VERSIONS),
    (ApiKey::DeleteRecords, DeleteRecordsRequest::VERSIONS),
    (ApiKey::FindCoordinator, FindCoordinatorRequest::VERSIONS),
    (ApiKey::JoinGroup, JoinGroupRequest::VERSIONS),
    (ApiKey::SyncGroup, SyncGroupRequest::VERSIONS),
    (ApiKey::Heartbeat, HeartbeatRequest::VERSIONS),
    (ApiKey::LeaveGroup, LeaveGroupRequest::VERSIONS),
    (ApiKey::OffsetCommit, OffsetCommitRequest::VERSIONS),
    (ApiKey::OffsetFetch, OffsetFetchRequest::VERSIONS),
    (ApiKey::OffsetDelete, OffsetDeleteRequest::VERSIONS),
    (ApiKey::DescribeGroups, DescribeGroupsRequest::VERSIONS),
    (ApiKey::ListGroups, ListGroupsRequest::VERSIONS),
    (ApiKey::DeleteGroups, DeleteGroupsRequest::VERSIONS),
];

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, r)| ApiVersion::default().with_api_key(*k as i16).with_min_version(r.min).with_max_version(r.max))
        .collect()
}

pub fn handle(_req: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys()).with_finalized_features_epoch(-1)
}

/// The v0 response Kafka sends when a client asks for an ApiVersions version it lacks, so
/// the client can retry at a version both sides know.
pub fn unsupported_version(correlation_id: i32, out: &mut BytesMut) {
    let at = start_frame(out);
    out.extend_from_slice(&correlation_id.to_be_bytes());
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    if resp.encode(out, 0).is_err() {
        // v0 has only fixed-size fields; encoding cannot fail. Keep the frame well-formed anyway.
        out.truncate(at + 8);
    }
    finish_frame(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn unsupported_version_response_is_v0() {
        let mut out = BytesMut::new();
        unsupported_version(42, &mut out);
        let mut body = out.split_off(8).freeze();
        assert_eq!(&out[4..8], &42i32.to_be_bytes());
        let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert_eq!(resp.api_keys.len(), SUPPORTED_APIS.len());
    }
}
