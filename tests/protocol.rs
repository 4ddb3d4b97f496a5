//! Framing and request handling seen from a raw client: version negotiation, pipelining,
//! advertised brokers, shutdown and config errors.

mod common;

use std::io::Write;
use std::process::Command;

use bytes::Buf;
use common::{Conn, Kopd, kopd_bin, temp_dir};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafka_protocol::protocol::{Decodable, StrBytes};

#[test]
fn api_versions_advertises_only_served_apis() {
    let dir = temp_dir("apiversions");
    let kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    let v = c.send(3, &common::api_versions_request()).unwrap();
    let keys: Vec<i16> = v.api_keys.iter().map(|k| k.api_key).collect();
    // ApiVersions, Metadata, CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
    // DescribeCluster, Produce, Fetch, ListOffsets, InitProducerId, DeleteRecords; the group
    // APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
    // OffsetFetch, OffsetDelete, DescribeGroups, ListGroups, DeleteGroups; reassignment:
    // AlterPartitionReassignments, ListPartitionReassignments, ElectLeaders, DescribeLogDirs;
    // IncrementalAlterConfigs, AlterConfigs; OffsetForLeaderEpoch, DescribeProducers,
    // ListConfigResources.
    for k in [
        18, 3, 19, 20, 37, 32, 60, 0, 1, 2, 22, 21, 10, 11, 14, 12, 13, 8, 9, 47, 15, 16, 42, 45, 46, 43, 35, 44, 33,
        23, 61, 74,
    ] {
        assert!(keys.contains(&k), "API {k} advertised");
    }
    assert!(!keys.contains(&68), "ConsumerGroupHeartbeat (KIP-848) is not implemented");
    assert_eq!(keys.len(), 35);
}

#[test]
fn api_versions_at_unknown_version_answers_v0_with_unsupported_version() {
    let dir = temp_dir("apiversions-v99");
    let kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&77i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    c.stream.write_all(&frame).unwrap();
    let mut resp = c.read_frame().unwrap();
    assert_eq!(resp.get_i32(), 77);
    let v = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(v.error_code, 35);
    assert!(v.api_keys.iter().any(|k| k.api_key == 18 && k.max_version >= 3));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = temp_dir("pipeline");
    let kopd = Kopd::start(&dir, 2, &[]);
    let mut c = Conn::connect(kopd.addr(1));
    let mut all = Vec::new();
    for i in 0..100 {
        if i % 2 == 0 {
            all.extend(Conn::frame(1000 + i, 3, &common::api_versions_request()));
        } else {
            all.extend(Conn::frame(1000 + i, 1, &MetadataRequest::default()));
        }
    }
    c.stream.write_all(&all).unwrap();
    for i in 0..100 {
        let mut f = c.read_frame().unwrap();
        assert_eq!(f.get_i32(), 1000 + i);
    }
}

#[test]
fn every_core_is_a_broker_on_its_own_port() {
    let dir = temp_dir("brokers");
    let kopd = Kopd::start(&dir, 2, &[]);
    for core in 0..2 {
        let mut c = Conn::connect(kopd.addr(core));
        let m = c.send(12, &MetadataRequest::default()).unwrap();
        let mut brokers: Vec<(i32, i32)> = m.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
        brokers.sort();
        assert_eq!(brokers, vec![(0, kopd.port as i32), (1, kopd.port as i32 + 1)]);
        assert_eq!(m.controller_id.0, 0);
        assert_eq!(m.cluster_id.as_ref().map(|s| s.len()), Some(22));
    }
}

#[test]
fn sigterm_exits_zero() {
    let dir = temp_dir("sigterm");
    let mut kopd = Kopd::start(&dir, 2, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    c.send(3, &common::api_versions_request()).unwrap();
    assert!(kopd.stop().success());
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = temp_dir("badconfig");
    let out = Command::new(kopd_bin()).args(["serve", "--cores", "many", "--data-dir"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("cores"), "{err}");

    let cfg = dir.join("kopd.toml");
    std::fs::write(&cfg, "num.partitions = -4\n").unwrap();
    let out = Command::new(kopd_bin()).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("num.partitions"));

    let out = Command::new(kopd_bin())
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .env("KOPD_AUTO_CREATE_TOPICS_ENABLE", "perhaps")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto.create.topics.enable"));
}

#[test]
fn version_flag() {
    let out = Command::new(kopd_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kopd "));
}

#[test]
fn api_versions_checks_the_client_software_fields() {
    let dir = temp_dir("apiversions-kip511");
    let kopd = Kopd::start(&dir, 1, &[]);
    let mut c = Conn::connect(kopd.addr(0));
    // KIP-511: from v3 the name and version must be non-empty, alphanumeric with inner '-' and '.'.
    for (name, version) in [("", "1"), ("x", ""), ("bad name", "1"), ("-x", "1")] {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(name))
            .with_client_software_version(StrBytes::from_static_str(version));
        let v = c.send(3, &req).unwrap();
        assert_eq!(v.error_code, 42, "{name:?} {version:?}");
        assert!(v.api_keys.is_empty());
    }
    // The connection stays usable, and v0-v2 carry no such fields.
    assert_eq!(c.send(3, &common::api_versions_request()).unwrap().error_code, 0);
    assert_eq!(c.send(2, &ApiVersionsRequest::default()).unwrap().error_code, 0);
}
