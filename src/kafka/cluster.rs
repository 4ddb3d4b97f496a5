//! DescribeCluster: the cluster id, the controller and every live broker (one per core of
//! every node).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::brokers;
use crate::broker::Broker;

/// Endpoint type 1 = brokers; 2 = controllers (KIP-919), which kopd does not expose apart.
const ENDPOINT_BROKERS: i8 = 1;

pub fn describe_cluster(broker: &Broker, req: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
    let resp = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(StrBytes::from_string(broker.catalog().cluster_id.clone()))
        .with_controller_id(BrokerId(broker.cluster().controller))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            super::acl::CLUSTER_OPERATIONS
        } else {
            super::acl::NOT_REQUESTED
        });
    if version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        return resp
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str("kopd serves only broker endpoints")));
    }
    resp.with_brokers(
        brokers(broker)
            .into_iter()
            .map(|(id, host, port)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
            })
            .collect(),
    )
}
