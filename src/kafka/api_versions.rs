//! ApiVersions: advertises exactly the APIs and versions kopd serves.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterConfigsRequest, AlterPartitionReassignmentsRequest, DescribeClientQuotasRequest,
    DescribeLogDirsRequest, DescribeProducersRequest, DescribeUserScramCredentialsRequest, ElectLeadersRequest,
    IncrementalAlterConfigsRequest, ListConfigResourcesRequest, ListPartitionReassignmentsRequest,
    OffsetForLeaderEpochRequest,
};
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
use kafka_protocol::protocol::{Encodable, Message, StrBytes, VersionRange};

use crate::net::frame::{finish_frame, start_frame};

/// Every API kopd serves, with the versions served: the codec's full range for each.
pub const SUPPORTED_APIS: &[(ApiKey, VersionRange)] = &[
    (ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS),
    (ApiKey::Metadata, MetadataRequest::VERSIONS),
    (ApiKey::CreateTopics, CreateTopicsRequest::VERSIONS),
    (ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS),
    (ApiKey::CreatePartitions, CreatePartitionsRequest::VERSIONS),
    (ApiKey::DescribeConfigs, DescribeConfigsRequest::VERSIONS),
    (ApiKey::IncrementalAlterConfigs, IncrementalAlterConfigsRequest::VERSIONS),
    (ApiKey::AlterConfigs, AlterConfigsRequest::VERSIONS),
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
    (ApiKey::AlterPartitionReassignments, AlterPartitionReassignmentsRequest::VERSIONS),
    (ApiKey::ListPartitionReassignments, ListPartitionReassignmentsRequest::VERSIONS),
    (ApiKey::ElectLeaders, ElectLeadersRequest::VERSIONS),
    (ApiKey::DescribeLogDirs, DescribeLogDirsRequest::VERSIONS),
    (ApiKey::OffsetForLeaderEpoch, OffsetForLeaderEpochRequest::VERSIONS),
    (ApiKey::DescribeClientQuotas, DescribeClientQuotasRequest::VERSIONS),
    (ApiKey::AlterClientQuotas, AlterClientQuotasRequest::VERSIONS),
    (ApiKey::DescribeUserScramCredentials, DescribeUserScramCredentialsRequest::VERSIONS),
    (ApiKey::DescribeProducers, DescribeProducersRequest::VERSIONS),
    (ApiKey::ListConfigResources, ListConfigResourcesRequest::VERSIONS),
];

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, r)| ApiVersion::default().with_api_key(*k as i16).with_min_version(r.min).with_max_version(r.max))
        .collect()
}

/// The features (KIP-584) kopd reports: (name, highest level it supports, level in force).
/// `metadata.version` is Kafka 4.4's (the release whose protocol kopd is checked against);
/// the others stay at 0 until kopd has them (KIP-848 groups, transactions v2, share and
/// streams groups, eligible leader replicas, a KRaft quorum).
const FEATURES: &[(&str, i16, i16)] = &[
    ("metadata.version", 33, 33),
    ("kraft.version", 0, 0),
    ("group.version", 0, 0),
    ("transaction.version", 0, 0),
    ("share.version", 0, 0),
    ("streams.version", 0, 0),
    ("eligible.leader.replicas.version", 0, 0),
];
/// Lowest `metadata.version` a Kafka 4.x cluster can run (3.3-IV3).
const MIN_METADATA_VERSION: i16 = 7;

/// KIP-511's rule for client software names and versions.
fn valid_software_field(v: &str) -> bool {
    let b = v.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.';
    !b.is_empty() && b.first().is_some_and(edge) && b.last().is_some_and(edge) && b.iter().all(inner)
}

pub fn handle(req: ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    if version >= 3
        && !(valid_software_field(&req.client_software_name) && valid_software_field(&req.client_software_version))
    {
        return ApiVersionsResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    let supported = FEATURES
        .iter()
        .map(|(name, max, _)| {
            let min = if *name == "metadata.version" { MIN_METADATA_VERSION } else { 0 };
            SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version(min)
                .with_max_version(*max)
        })
        .collect();
    // Kafka lists only features finalized above level 0.
    let finalized = FEATURES
        .iter()
        .filter(|(_, _, level)| *level > 0)
        .map(|(name, _, level)| {
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version_level(*level)
                .with_max_version_level(*level)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_api_keys(api_keys())
        .with_supported_features(supported)
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(0)
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
    finish_frame(out, at, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn client_software_fields_follow_kip_511() {
        for ok in ["a", "kopd", "ok.name-2", "1.0-x", "librdkafka"] {
            assert!(valid_software_field(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", ".", "a_b", "é"] {
            assert!(!valid_software_field(bad), "{bad}");
        }
    }

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
