//! IncrementalAlterConfigs and AlterConfigs of topics, read back with DescribeConfigs.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, DescribeConfigsRequest, IncrementalAlterConfigsRequest, alter_configs_request,
    incremental_alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;

use crate::norm::{e, reply};
use crate::peers::Side;
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("incremental_alter_configs.topic", incremental_topic),
    ("incremental_alter_configs.refusals", incremental_refusals),
    ("alter_configs.topic_replaces_overrides", legacy_topic),
    ("describe_configs.every_topic_config", every_topic_config),
];

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn st(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// (name, op, value) -> one resource of an IncrementalAlterConfigs.
fn resource(
    kind: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> incremental_alter_configs_request::AlterConfigsResource {
    incremental_alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(st(name))
        .with_configs(
            ops.iter()
                .map(|(k, op, v)| {
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(st(k))
                        .with_config_operation(*op)
                        .with_value(v.map(st))
                })
                .collect(),
        )
}

fn incremental(
    s: &mut Side,
    t: &mut T,
    what: &str,
    resources: Vec<incremental_alter_configs_request::AlterConfigsResource>,
    validate_only: bool,
) {
    let v = s.ver(ApiKey::IncrementalAlterConfigs, 1);
    let req = IncrementalAlterConfigsRequest::default().with_resources(resources).with_validate_only(validate_only);
    let r = s.call(v, &req);
    t.step(
        format!("IncrementalAlterConfigs v{v} {what} validate_only={validate_only}"),
        reply(&r, |r| {
            let items: Vec<String> = r
                .responses
                .iter()
                .map(|x| format!("{}/{}: {}", x.resource_type, x.resource_name.as_str(), e(x.error_code)))
                .collect();
            format!("[{}]", items.join(", "))
        }),
    );
    // Kafka answers before its brokers' metadata has the change (see legacy_topic).
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// The topic's overrides (DYNAMIC_TOPIC_CONFIG entries) among `keys`.
fn overrides(s: &mut Side, t: &mut T, topic: &str, keys: &[&str]) {
    let v = s.ver(ApiKey::DescribeConfigs, 4);
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(st(topic))
            .with_configuration_keys(Some(keys.iter().map(|k| st(k)).collect())),
    ]);
    let r = s.call(v, &req);
    t.step(
        format!("DescribeConfigs v{v} {topic} {keys:?}"),
        reply(&r, |r| {
            let mut items: Vec<String> = r.results[0]
                .configs
                .iter()
                .filter(|c| c.config_source == 1)
                .map(|c| format!("{}={}", c.name.as_str(), c.value.as_ref().map_or("null", |v| v.as_str())))
                .collect();
            items.sort();
            format!("{} [{}]", e(r.results[0].error_code), items.join(", "))
        }),
    );
}

const KEYS: &[&str] = &["retention.ms", "max.message.bytes", "cleanup.policy", "segment.ms"];

fn incremental_topic(s: &mut Side, t: &mut T) {
    let n = "iac-topic";
    ensure(s, n, 1);
    let set = |k, v| (k, 0i8, Some(v));
    incremental(
        s,
        t,
        "set two",
        vec![resource(TOPIC, n, &[set("retention.ms", "3600000"), set("max.message.bytes", "2048")])],
        false,
    );
    overrides(s, t, n, KEYS);
    incremental(s, t, "validate only", vec![resource(TOPIC, n, &[set("segment.ms", "60000")])], true);
    overrides(s, t, n, KEYS);
    incremental(s, t, "delete one", vec![resource(TOPIC, n, &[("max.message.bytes", 1, None)])], false);
    incremental(s, t, "delete unset", vec![resource(TOPIC, n, &[("segment.ms", 1, None)])], false);
    incremental(s, t, "append", vec![resource(TOPIC, n, &[("cleanup.policy", 2, Some("compact"))])], false);
    overrides(s, t, n, KEYS);
    incremental(s, t, "subtract", vec![resource(TOPIC, n, &[("cleanup.policy", 3, Some("delete"))])], false);
    overrides(s, t, n, KEYS);
}

fn incremental_refusals(s: &mut Side, t: &mut T) {
    let n = "iac-refused";
    ensure(s, n, 1);
    let set = |k, v| (k, 0i8, Some(v));
    for (what, ops) in [
        ("bad number", vec![set("retention.ms", "soon")]),
        ("below minimum", vec![set("retention.ms", "-7")]),
        ("unknown key", vec![set("no.such.config", "1")]),
        ("bad enum", vec![set("message.timestamp.type", "Sometime")]),
        ("append to a long", vec![("retention.ms", 2, Some("5"))]),
        ("subtract from a long", vec![("retention.ms", 3, Some("5"))]),
        ("duplicate keys", vec![set("retention.ms", "1"), set("retention.ms", "2")]),
        ("null set", vec![("retention.ms", 0, None)]),
        ("unknown op", vec![("retention.ms", 9, Some("5"))]),
    ] {
        incremental(s, t, what, vec![resource(TOPIC, n, &ops)], false);
    }
    overrides(s, t, n, KEYS);
    incremental(s, t, "unknown topic", vec![resource(TOPIC, "iac-no-such-topic", &[set("retention.ms", "1")])], false);
    incremental(s, t, "empty topic name", vec![resource(TOPIC, "", &[set("retention.ms", "1")])], false);
    incremental(
        s,
        t,
        "same resource twice",
        vec![resource(TOPIC, n, &[set("retention.ms", "1")]), resource(TOPIC, n, &[set("segment.ms", "1000")])],
        false,
    );
    incremental(s, t, "unknown resource type", vec![resource(99, n, &[set("retention.ms", "1")])], false);
    incremental(s, t, "broker, no change", vec![resource(BROKER, "", &[])], false);
    overrides(s, t, n, KEYS);
}

fn legacy_topic(s: &mut Side, t: &mut T) {
    let n = "ac-topic";
    ensure(s, n, 1);
    for (what, entries) in [
        ("two", vec![("retention.ms", "3600000"), ("segment.ms", "60000")]),
        ("replace with one", vec![("max.message.bytes", "2048")]),
        ("bad value", vec![("retention.ms", "soon")]),
    ] {
        legacy_alter(s, t, TOPIC, n, what, &entries);
        // Kafka answers before its brokers' metadata has the change: a describe at once may
        // still see the old overrides.
        std::thread::sleep(std::time::Duration::from_millis(500));
        overrides(s, t, n, KEYS);
    }
}

/// A legacy AlterConfigs of one resource (its whole new set of `entries`).
pub fn legacy_alter(s: &mut Side, t: &mut T, kind: i8, name: &str, what: &str, entries: &[(&str, &str)]) {
    let v = s.ver(ApiKey::AlterConfigs, 2);
    let configs = entries
        .iter()
        .map(|(k, val)| alter_configs_request::AlterableConfig::default().with_name(st(k)).with_value(Some(st(val))))
        .collect();
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(st(name))
            .with_configs(configs),
    ]);
    let r = s.call(v, &req);
    t.step(
        format!("AlterConfigs v{v} {what}"),
        reply(&r, |r| r.responses.iter().map(|x| e(x.error_code)).collect::<Vec<_>>().join(", ")),
    );
}

/// Every topic config Kafka lists, by name and type; the values of those kopd does not act on
/// (and so lists read-only, an intended difference not compared here) are Kafka's defaults.
fn every_topic_config(s: &mut Side, t: &mut T) {
    let n = "dc-all";
    ensure(s, n, 1);
    let v = s.ver(ApiKey::DescribeConfigs, 4);
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(st(n))
            .with_configuration_keys(None),
    ]);
    let r = s.call(v, &req);
    // kopd's own keys (kopd.*) are not Kafka's; values kopd sets from its own defaults differ.
    const KOPD_VALUES: &[&str] =
        &["max.message.bytes", "segment.bytes", "segment.ms", "retention.ms", "retention.bytes", "cleanup.policy"];
    t.step(
        format!("DescribeConfigs v{v} {n} (all)"),
        reply(&r, |r| {
            let mut items: Vec<String> = r.results[0]
                .configs
                .iter()
                .filter(|c| !c.name.starts_with("kopd."))
                .map(|c| {
                    let value = if KOPD_VALUES.contains(&c.name.as_str()) {
                        "(kopd's)".to_string()
                    } else {
                        c.value.as_ref().map_or("null".into(), |v| v.to_string())
                    };
                    format!("{}:{}={}", c.name.as_str(), c.config_type, value)
                })
                .collect();
            items.sort();
            format!("{} {} [{}]", e(r.results[0].error_code), items.len(), items.join(", "))
        }),
    );
}
