//! Configs of a kopd cluster: client quotas and dynamic broker configs are catalog entity
//! configs, so one node commits an alteration and every core of every node follows the
//! catalog (a ZooKeeper watch) and answers describes with it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Conn;
use common::cluster::{CORES, Cluster};
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::protocol::StrBytes;

#[test]
fn client_quotas_set_through_one_node_are_described_by_every_node() {
    // Quotas live in the catalog: the node that takes the alteration commits it, the others
    // follow the catalog (a ZooKeeper watch), and each of their cores answers describes.
    use kafka_protocol::messages::{
        AlterClientQuotasRequest, DescribeClientQuotasRequest, alter_client_quotas_request as alter,
    };
    let cluster = Cluster::start("quotas", 2);
    let entity = vec![
        alter::EntityData::default()
            .with_entity_type(StrBytes::from_static_str("user"))
            .with_entity_name(Some(StrBytes::from_static_str("alice"))),
    ];
    let set = |value: f64, remove: bool| {
        AlterClientQuotasRequest::default().with_entries(vec![
            alter::EntryData::default().with_entity(entity.clone()).with_ops(vec![
                alter::OpData::default()
                    .with_key(StrBytes::from_static_str("producer_byte_rate"))
                    .with_value(value)
                    .with_remove(remove),
            ]),
        ])
    };
    // What a broker (port) says alice's producer_byte_rate is.
    let described = |port: u16| -> Option<f64> {
        let mut c = Conn::connect(SocketAddr::from(([127, 0, 0, 1], port)));
        let r = c.send(1, &DescribeClientQuotasRequest::default()).expect("DescribeClientQuotas");
        assert_eq!(r.error_code, 0);
        r.entries.unwrap_or_default().iter().find_map(|e| e.values.first().map(|v| v.value))
    };
    let wait_all = |want: Option<f64>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &cluster.nodes {
            for core in 0..CORES {
                while described(n.port + core) != want {
                    assert!(
                        Instant::now() < deadline,
                        "port {}: {:?}, not {want:?}",
                        n.port + core,
                        described(n.port + core)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    };
    let r = cluster.conn(0).send(1, &set(1024.0, false)).expect("AlterClientQuotas");
    assert_eq!(r.entries[0].error_code, 0, "{r:?}");
    wait_all(Some(1024.0));
    let r = cluster.conn(1).send(1, &set(0.0, true)).expect("AlterClientQuotas");
    assert_eq!(r.entries[0].error_code, 0, "{r:?}");
    wait_all(None);
}

/// The broker id a core's listener belongs to (from its own Metadata).
fn broker_id(port: u16) -> i32 {
    let mut c = Conn::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let m = c.send(12, &MetadataRequest::default().with_topics(Some(vec![]))).expect("Metadata");
    m.brokers.iter().find(|b| b.port == port as i32).map(|b| b.node_id.0).expect("its own broker in Metadata")
}

#[test]
fn dynamic_broker_configs_set_through_one_node_apply_on_every_node() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
    let cluster = Cluster::start("brokercfg", 2);
    let ports: Vec<u16> = cluster.nodes.iter().flat_map(|n| (0..CORES).map(move |c| n.port + c)).collect();
    let ids: Vec<i32> = ports.iter().map(|p| broker_id(*p)).collect();
    // Sets (or, for None, deletes) message.max.bytes of broker `id` ("" = the cluster
    // default), sent to `port`.
    let alter = |port: u16, id: &str, value: Option<&str>| {
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("message.max.bytes"))
            .with_config_operation(if value.is_some() { 0 } else { 1 })
            .with_value(value.map(|v| StrBytes::from_string(v.to_string())));
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_string(id.to_string()))
                .with_configs(vec![config]),
        ]);
        let mut c = Conn::connect(SocketAddr::from(([127, 0, 0, 1], port)));
        let r = c.send(1, &req).expect("IncrementalAlterConfigs");
        assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    };
    // (value, source) of message.max.bytes as the broker on `port` describes itself.
    let described = |port: u16, id: i32| -> (String, i8) {
        let mut c = Conn::connect(SocketAddr::from(([127, 0, 0, 1], port)));
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_string(id.to_string()))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str("message.max.bytes")])),
        ]);
        let r = c.send(4, &req).expect("DescribeConfigs");
        let e = &r.results[0].configs[0];
        (e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), e.config_source)
    };
    let wait_all = |want: &dyn Fn(i32) -> (String, i8)| {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (port, id) in ports.iter().zip(&ids) {
            while described(*port, *id) != want(*id) {
                assert!(Instant::now() < deadline, "broker {id}: {:?}, not {:?}", described(*port, *id), want(*id));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    // The cluster default, set through node 0: every broker of both nodes takes it.
    alter(cluster.nodes[0].port, "", Some("2048"));
    wait_all(&|_| ("2048".into(), 3));
    // One broker of node 1, set through that broker: only it differs.
    let (port1, id1) = (ports[CORES as usize], ids[CORES as usize]);
    alter(port1, &id1.to_string(), Some("4096"));
    wait_all(&|id| if id == id1 { ("4096".into(), 2) } else { ("2048".into(), 3) });
    alter(port1, &id1.to_string(), None);
    alter(cluster.nodes[1].port, "", None);
    wait_all(&|_| ("1048588".into(), 5));
}
