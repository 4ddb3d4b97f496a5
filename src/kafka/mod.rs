//! Kafka request handling: header parsing, version checks, dispatch to one handler per API
//! family, response encoding.
//!
//! Unknown API keys, versions kopd does not serve (other than ApiVersions) and undecodable
//! requests close the connection, as Kafka brokers do; ApiVersions at an unsupported version
//! gets a v0 response carrying UNSUPPORTED_VERSION and the supported ranges.

mod acl;
mod alter_configs;
mod api_versions;
mod client_quotas;
mod cluster;
mod configs;
mod delete_records;
mod errors;
mod fetch;
mod group_admin;
mod groups;
mod leader_epochs;
mod list_offsets;
mod metadata;
mod partition;
mod produce;
mod producer_id;
mod producers;
mod reassignments;
mod scram;
mod splice;
mod topics;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};
use thiserror::Error;

use crate::broker::Broker;
use crate::net::frame::{finish_frame, start_frame};

pub use api_versions::SUPPORTED_APIS;
pub use producer_id::ProducerIdBlock;
pub use splice::ResponseBuf;

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("request of {0} bytes is shorter than a request header")]
    Truncated(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
    #[error("cannot encode response to {api:?} v{version}: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
}

/// The versions kopd serves of `api`, if any.
pub fn supported_versions(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED_APIS.iter().find(|(k, _)| *k == api).map(|(_, r)| *r)
}

/// Decodes with the codec, turning a panic on hostile input into an error.
fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked".into()),
    }
}

/// A request frame decoded.
struct Decoded {
    api: ApiKey,
    version: i16,
    header: RequestHeader,
    request: RequestKind,
}

/// Decodes a request frame. `Ok(None)`: answered already (ApiVersions at a version kopd does
/// not serve gets a v0 response carrying UNSUPPORTED_VERSION and the supported ranges).
fn decode(mut frame: Bytes, out: &mut ResponseBuf) -> Result<Option<Decoded>, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Truncated(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApiKey(key))?;
    let supported = supported_versions(api);
    let in_range = supported.is_some_and(|r| version >= r.min && version <= r.max);
    if !in_range {
        if api == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            api_versions::unsupported_version(correlation_id, &mut out.bytes);
            return Ok(None);
        }
        return Err(ProtocolError::UnsupportedVersion { api, version });
    }
    let malformed = |reason: String| ProtocolError::Malformed { api, version, reason };
    let header_version = api.request_header_version(version);
    let header = guarded(|| RequestHeader::decode(&mut frame, header_version)).map_err(malformed)?;
    let request = guarded(|| RequestKind::decode(api, &mut frame, version)).map_err(malformed)?;
    if frame.has_remaining() {
        tracing::debug!(?api, version, extra = frame.remaining(), "request has trailing bytes");
    }
    Ok(Some(Decoded { api, version, header, request }))
}

/// Handles one request frame, appending its response frame (if any) to `out`.
/// `client_host` is the peer's address as Kafka reports it ("/127.0.0.1").
pub async fn handle_request(
    broker: &Broker,
    frame: Bytes,
    out: &mut ResponseBuf,
    client_host: &str,
) -> Result<(), ProtocolError> {
    let arrived = std::time::Instant::now();
    let Some(Decoded { api, version, header, request }) = decode(frame, out)? else {
        return Ok(());
    };
    // acks=0: the producer expects no response at all.
    let silent = matches!(&request, RequestKind::Produce(p) if p.acks == 0);
    let mut splices = splice::Splices::default();
    let response = match request {
        RequestKind::Fetch(r) => {
            let (resp, s) = fetch::handle(broker, r, version, true).await;
            splices = s;
            Some(ResponseKind::Fetch(resp))
        }
        request => dispatch(broker, &header, request, client_host).await,
    };
    let response = response.ok_or(ProtocolError::UnsupportedVersion { api, version })?;
    if silent {
        return Ok(());
    }
    let at = start_frame(&mut out.bytes);
    let spliced_before = out.spliced_len();
    let encode_err = |e: anyhow::Error| ProtocolError::Encode { api, version, reason: e.to_string() };
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out.bytes, api.response_header_version(version))
        .map_err(encode_err)?;
    match &response {
        ResponseKind::Fetch(fetch) if !splices.is_empty() => {
            let mut buf = splice::SplicingBuf::new(out, splices);
            fetch.encode(&mut buf, version).map_err(encode_err)?;
            buf.finish().map_err(|reason| ProtocolError::Encode { api, version, reason })?;
        }
        _ => response.encode(&mut out.bytes, version).map_err(encode_err)?,
    }
    let spliced = out.spliced_len() - spliced_before;
    finish_frame(&mut out.bytes, at, spliced);
    crate::metrics::with(|m| m.request(api as i16, arrived.elapsed()));
    Ok(())
}

/// Whether a request frame is a Produce (see [`begin_produce`]).
pub fn is_produce(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Produce as i16
}

/// A produce taken but not yet answered: resolves to its response frame (`None` for acks=0).
pub type ProduceInFlight<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<BytesMut>, ProtocolError>> + 'a>>;

/// The first half of handling a Produce frame (offsets assigned, entries queued, in the
/// order produces are begun); the returned future is the rest. A connection may begin its next
/// produce before this one's answer, so durability is awaited for several at once.
/// `allocation`: the size of the buffer `frame` is a slice of (see [`produce::begin`]).
pub async fn begin_produce(
    broker: &Broker,
    frame: Bytes,
    allocation: usize,
) -> Result<ProduceInFlight<'_>, ProtocolError> {
    let arrived = std::time::Instant::now();
    let mut unused = ResponseBuf::default();
    let decoded = decode(frame, &mut unused)?;
    let Some(Decoded { api: ApiKey::Produce, version, header, request: RequestKind::Produce(req) }) = decoded else {
        return Err(ProtocolError::Malformed {
            api: ApiKey::Produce,
            version: -1,
            reason: "not a produce request".into(),
        });
    };
    let silent = req.acks == 0;
    // Not the header itself: its client id is a slice of the connection's read buffer.
    let correlation_id = header.correlation_id;
    drop(header);
    let in_flight = produce::begin(broker, req, version, allocation).await;
    Ok(Box::pin(async move {
        let response = in_flight.finish(broker).await;
        crate::metrics::with(|m| m.request(ApiKey::Produce as i16, arrived.elapsed()));
        if silent {
            return Ok(None);
        }
        let encode_err =
            |e: anyhow::Error| ProtocolError::Encode { api: ApiKey::Produce, version, reason: e.to_string() };
        let mut bytes = BytesMut::new();
        let at = start_frame(&mut bytes);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut bytes, ApiKey::Produce.response_header_version(version))
            .map_err(encode_err)?;
        response.encode(&mut bytes, version).map_err(encode_err)?;
        finish_frame(&mut bytes, at, 0);
        Ok(Some(bytes))
    }))
}

/// `None` for an API without a handler (kept in step with SUPPORTED_APIS by a test).
async fn dispatch(
    broker: &Broker,
    header: &RequestHeader,
    request: RequestKind,
    client_host: &str,
) -> Option<ResponseKind> {
    let v = header.request_api_version;
    Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(r, v)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, r, v).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(topics::create_topics(broker, r, v).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(topics::delete_topics(broker, r, v).await),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(broker, r, v).await)
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(configs::describe_configs(broker, r, v)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(alter_configs::incremental(broker, r).await)
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(alter_configs::legacy(broker, r).await),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(cluster::describe_cluster(broker, r, v)),
        RequestKind::Produce(r) => ResponseKind::Produce(produce::handle(broker, r, v).await),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r, v, false).await.0),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(broker, r, v).await),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(producer_id::handle(broker, r, v).await),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records::handle(broker, r, v).await),
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v)),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(broker, header, client_host, r, v).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(broker, r, v).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(broker, r, v).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(group_admin::offset_commit(broker, r, v).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(group_admin::offset_fetch(broker, r, v)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(group_admin::offset_delete(broker, r).await),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(group_admin::describe_groups(broker, r, v)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(group_admin::list_groups(broker, r, v)),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(group_admin::delete_groups(broker, r).await),
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(broker, r, v).await)
        }
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(reassignments::list(r)),
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(reassignments::elect(broker, r)),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(reassignments::describe_log_dirs(broker, r).await)
        }
        RequestKind::DescribeClientQuotas(r) => ResponseKind::DescribeClientQuotas(client_quotas::describe(broker, r)),
        RequestKind::AlterClientQuotas(r) => ResponseKind::AlterClientQuotas(client_quotas::alter(broker, r).await),
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(scram::describe(r)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(leader_epochs::handle(broker, r).await)
        }
        RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(producers::handle(broker, r).await),
        RequestKind::ListConfigResources(r) => {
            ResponseKind::ListConfigResources(configs::list_config_resources(broker, r, v))
        }
        _ => return None,
    })
}
