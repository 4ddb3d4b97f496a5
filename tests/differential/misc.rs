//! ApiVersions, DescribeCluster, unknown APIs, unsupported versions and malformed bodies.

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest};
use kafka_protocol::protocol::Decodable;

use crate::norm::{e, ops, reply, s as st};
use crate::peers::{Side, api_versions_req, framed, raw_header};
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("api_versions.ranges", api_ranges),
    ("api_versions.client_software", api_client_software),
    ("api_versions.features", api_features),
    ("api_versions.unsupported_version", api_unsupported),
    ("describe_cluster.authorized_operations", describe_cluster),
    ("malformed.unknown_api_key", unknown_api),
    ("malformed.unsupported_version", unsupported_version),
    ("malformed.absurd_array_count", absurd_counts),
    ("malformed.truncated_body", truncated_body),
];

fn api_ranges(s: &mut Side, t: &mut T) {
    let r: ApiVersionsResponse = s.call(3, &api_versions_req()).expect("ApiVersions v3");
    let mut keys: Vec<_> = r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
    keys.sort();
    for key in 0..100i16 {
        let name = ApiKey::try_from(key).map(|k| format!("{k:?}")).unwrap_or_else(|_| "?".into());
        let ans = match keys.iter().find(|k| k.0 == key) {
            Some((_, min, max)) => format!("v{min}..v{max}"),
            None => "absent".into(),
        };
        t.step(format!("ApiVersions v3: api key {key} ({name})"), ans);
    }
}

/// KIP-511: v3+ carries the client's software name and version, which must match
/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
fn api_client_software(s: &mut Side, t: &mut T) {
    let v = s.ver(ApiKey::ApiVersions, 4);
    let cases =
        [("", "1.0"), ("kopd-test", ""), ("-bad", "1.0"), ("ok.name-2", "1.0-x"), ("bad name", "1"), ("a", "b")];
    for (name, version) in cases {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(st_new(name))
            .with_client_software_version(st_new(version));
        let r = s.call(v, &req);
        t.step(
            format!("ApiVersions v{v} client_software_name={name:?} version={version:?}"),
            // Which APIs are listed is api_versions.ranges' business; here only whether.
            reply(&r, |r| {
                format!("{} api_keys={}", e(r.error_code), if r.api_keys.is_empty() { "none" } else { "listed" })
            }),
        );
    }
}

fn st_new(v: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(v.to_string())
}

fn api_features(s: &mut Side, t: &mut T) {
    let v = s.ver(ApiKey::ApiVersions, 4);
    let r = s.call(v, &api_versions_req());
    t.step(
        format!("ApiVersions v{v} supported_features"),
        reply(&r, |r| {
            let mut f: Vec<String> = r
                .supported_features
                .iter()
                .map(|f| format!("{} {}..{}", st(&f.name), f.min_version, f.max_version))
                .collect();
            f.sort();
            format!("{} [{}]", e(r.error_code), f.join(", "))
        }),
    );
    t.step(
        format!("ApiVersions v{v} finalized_features"),
        reply(&r, |r| {
            let mut f: Vec<String> = r
                .finalized_features
                .iter()
                .map(|f| format!("{} {}..{}", st(&f.name), f.min_version_level, f.max_version_level))
                .collect();
            f.sort();
            // The epoch is the metadata offset of the last feature change: a per-cluster value.
            let epoch = if r.finalized_features_epoch >= 0 {
                "set".to_string()
            } else {
                r.finalized_features_epoch.to_string()
            };
            format!("epoch={epoch} [{}] zk_migration_ready={}", f.join(", "), r.zk_migration_ready)
        }),
    );
}

/// A request at a version the broker does not serve, decoded as Kafka answers it (v0 body).
/// Only versions neither broker serves: a version one of them serves is a different request.
fn api_unsupported(s: &mut Side, t: &mut T) {
    for ver in [99i16, -1] {
        let mut b = raw_header(18, ver);
        b.extend_from_slice(&[0]); // would-be tagged fields; ignored by a v0-style parser
        let r = s.raw(&framed(&b));
        let ans = reply(&r, |f| {
            let mut f = f.clone();
            let corr = i32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            bytes::Buf::advance(&mut f, 4);
            match ApiVersionsResponse::decode(&mut f, 0) {
                Ok(r) => format!(
                    "correlation={corr} v0 body: {} api_keys={}",
                    e(r.error_code),
                    if r.api_keys.is_empty() { "empty" } else { "listed" }
                ),
                Err(x) => format!("undecodable v0 body: {x}"),
            }
        });
        t.step(format!("ApiVersions v{ver} (raw)"), ans);
        s.reconnect();
    }
}

fn describe_cluster(s: &mut Side, t: &mut T) {
    let (min, max) = s.common.get(&(ApiKey::DescribeCluster as i16)).copied().expect("DescribeCluster served by both");
    for v in min..=max {
        for inc in [true, false] {
            let r = s.call(v, &DescribeClusterRequest::default().with_include_cluster_authorized_operations(inc));
            let ans = reply(&r, |r| {
                let brokers: Vec<String> =
                    r.brokers.iter().map(|b| format!("{} fenced={}", s.node(b.broker_id.0), b.is_fenced)).collect();
                format!(
                    "{} endpoint_type={} controller={} brokers={brokers:?} ops={}",
                    e(r.error_code),
                    r.endpoint_type,
                    s.node(r.controller_id.0),
                    ops(r.cluster_authorized_operations)
                )
            });
            t.step(format!("DescribeCluster v{v} include_cluster_authorized_operations={inc}"), ans);
        }
    }
}

/// The answer to a raw frame, then whether the connection still serves ApiVersions.
fn raw_then_alive(s: &mut Side, t: &mut T, label: &str, frame: &[u8]) {
    let r = s.raw(frame);
    let ans = match &r {
        Ok(f) => format!("a {}-byte response", f.len()),
        Err(e) => e.clone(),
    };
    let which = if r.is_ok() { "the same" } else { "a new" };
    let alive = s.call(0, &ApiVersionsRequest::default()).map(|r| e(r.error_code)).unwrap_or_else(|e| e);
    t.step(label.to_string(), format!("{ans}; then ApiVersions on {which} connection: {alive}"));
    s.reconnect();
}

fn unknown_api(s: &mut Side, t: &mut T) {
    for key in [9999i16, 1000, -1] {
        raw_then_alive(s, t, &format!("api key {key} v0, empty body"), &framed(&raw_header(key, 0)));
    }
}

fn unsupported_version(s: &mut Side, t: &mut T) {
    for (api, v) in [(ApiKey::Metadata, 99i16), (ApiKey::Produce, 0), (ApiKey::Fetch, 0), (ApiKey::ListOffsets, 0)] {
        raw_then_alive(s, t, &format!("{api:?} v{v} (raw, empty body)"), &framed(&raw_header(api as i16, v)));
    }
}

fn absurd_counts(s: &mut Side, t: &mut T) {
    // Metadata v4 (not flexible): topics array with 2^31-1 entries, then nothing.
    let mv = s.ver(ApiKey::Metadata, 8).min(8);
    let mut b = raw_header(3, mv);
    b.extend_from_slice(&i32::MAX.to_be_bytes());
    raw_then_alive(s, t, &format!("Metadata v{mv} with a topic count of 2^31-1"), &framed(&b));
    // Produce v7 (not flexible): acks, timeout, null transactional id, 2^31-1 topics.
    let mut b = raw_header(0, 7);
    b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    b.extend_from_slice(&(-1i16).to_be_bytes()); // acks
    b.extend_from_slice(&1000i32.to_be_bytes()); // timeout
    b.extend_from_slice(&i32::MAX.to_be_bytes());
    raw_then_alive(s, t, "Produce v7 with a topic count of 2^31-1", &framed(&b));
    // Metadata v4 with a negative count other than -1 (null).
    let mut b = raw_header(3, mv);
    b.extend_from_slice(&(-5i32).to_be_bytes());
    raw_then_alive(s, t, &format!("Metadata v{mv} with a topic count of -5"), &framed(&b));
}

fn truncated_body(s: &mut Side, t: &mut T) {
    let mv = s.ver(ApiKey::Metadata, 8).min(8);
    let mut b = raw_header(3, mv);
    b.extend_from_slice(&1i32.to_be_bytes()); // one topic
    b.extend_from_slice(&10i16.to_be_bytes()); // a 10-byte name ...
    b.extend_from_slice(b"abc"); // ... of which 3 bytes arrive
    raw_then_alive(s, t, &format!("Metadata v{mv} whose topic name runs past the frame"), &framed(&b));
}
