//! Dynamic broker configs: set per broker and at the cluster default (`--entity-default`),
//! described with their sources and synonyms, seen through the topics that inherit them, and
//! refused where Kafka refuses them. Every case removes what it set.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiKey, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
};
use kafka_protocol::protocol::StrBytes;

use crate::norm::{e, reply};
use crate::peers::Side;
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("broker_configs.default_and_per_broker", default_and_per_broker),
    ("broker_configs.refusals", refusals),
    ("broker_configs.legacy_alter", legacy_alter),
];

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;

fn st(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn alter(s: &mut Side, t: &mut T, what: &str, broker: &str, ops: &[(&str, i8, Option<&str>)], validate_only: bool) {
    let v = s.ver(ApiKey::IncrementalAlterConfigs, 1);
    let configs = ops
        .iter()
        .map(|(k, op, val)| {
            AlterableConfig::default().with_name(st(k)).with_config_operation(*op).with_value(val.map(st))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(BROKER)
                .with_resource_name(st(broker))
                .with_configs(configs),
        ])
        .with_validate_only(validate_only);
    let r = s.call(v, &req);
    let who = if broker.is_empty() { "default".to_string() } else { s.node(broker.parse().unwrap_or(-1)) };
    t.step(
        format!("IncrementalAlterConfigs v{v} broker {who}: {what} validate_only={validate_only}"),
        reply(&r, |r| r.responses.iter().map(|x| e(x.error_code)).collect::<Vec<_>>().join(", ")),
    );
    // Kafka applies the change after it answers: give it time before the next describe.
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// The broker's (or, for "", the cluster default's) configs among `keys` (all for `None`):
/// name=value, source and, with `synonyms`, each synonym's source and value.
fn describe(s: &mut Side, t: &mut T, kind: i8, name: &str, keys: Option<&[&str]>, synonyms: bool) {
    let v = s.ver(ApiKey::DescribeConfigs, 4);
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(st(name))
                .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| st(k)).collect())),
        ])
        .with_include_synonyms(synonyms);
    let r = s.call(v, &req);
    let who = match (kind, name) {
        (BROKER, "") => "default".to_string(),
        (BROKER, id) => format!("broker {}", s.node(id.parse().unwrap_or(-1))),
        (_, n) => n.to_string(),
    };
    t.step(
        format!("DescribeConfigs v{v} {who} {keys:?} synonyms={synonyms}"),
        reply(&r, |r| {
            let res = &r.results[0];
            let mut items: Vec<String> = res
                .configs
                .iter()
                // kopd's own keys are not Kafka's; with every key asked, compare only the
                // dynamic ones (the static sets differ).
                .filter(|c| keys.is_some() || c.config_source <= 3)
                // Kafka 4's storage format sets min.insync.replicas at the cluster default
                // (KIP-966); kopd has no replicas.
                .filter(|c| c.name.as_str() != "min.insync.replicas")
                .map(|c| {
                    let syn: Vec<String> = c
                        .synonyms
                        .iter()
                        .map(|y| format!("{}@{}={}", y.name.as_str(), y.source, y.value.as_ref().map_or("null", |v| v)))
                        .collect();
                    format!(
                        "{}={} src={} ro={} [{}]",
                        c.name.as_str(),
                        c.value.as_ref().map_or("null", |v| v.as_str()),
                        c.config_source,
                        c.read_only,
                        syn.join(" ")
                    )
                })
                .collect();
            items.sort();
            format!("{} [{}]", e(res.error_code), items.join(", "))
        }),
    );
}

fn default_and_per_broker(s: &mut Side, t: &mut T) {
    let me = s.node_id.to_string();
    let topic = "bc-inherits";
    ensure(s, topic, 1);
    describe(s, t, BROKER, "", None, false);
    alter(
        s,
        t,
        "set two defaults",
        "",
        &[("log.retention.ms", SET, Some("3600000")), ("message.max.bytes", SET, Some("2000000"))],
        false,
    );
    describe(s, t, BROKER, "", None, true);
    describe(s, t, BROKER, "", None, false);
    let keys: &[&str] = &["message.max.bytes", "log.segment.bytes", "log.cleanup.policy"];
    describe(s, t, BROKER, &me, Some(keys), true);
    // Kafka's retention synonyms include log.retention.hours/minutes, which kopd does not
    // have: compared without synonyms.
    describe(s, t, BROKER, &me, Some(&["log.retention.ms"]), false);
    describe(s, t, TOPIC, topic, Some(&["max.message.bytes", "segment.bytes"]), true);
    describe(s, t, TOPIC, topic, Some(&["retention.ms"]), false);
    alter(s, t, "set one for this broker", &me, &[("message.max.bytes", SET, Some("3000000"))], false);
    describe(s, t, BROKER, &me, Some(&["message.max.bytes"]), true);
    describe(s, t, BROKER, "", None, false);
    describe(s, t, TOPIC, topic, Some(&["max.message.bytes"]), true);
    alter(s, t, "append a cleanup policy", "", &[("log.cleanup.policy", 2, Some("compact"))], false);
    describe(s, t, BROKER, "", Some(&["log.cleanup.policy"]), false);
    alter(s, t, "delete this broker's", &me, &[("message.max.bytes", DELETE, None)], false);
    describe(s, t, BROKER, &me, Some(&["message.max.bytes"]), true);
    alter(
        s,
        t,
        "delete the defaults",
        "",
        &[
            ("log.retention.ms", DELETE, None),
            ("message.max.bytes", DELETE, None),
            ("log.cleanup.policy", DELETE, None),
        ],
        false,
    );
    describe(s, t, BROKER, "", None, false);
    describe(s, t, TOPIC, topic, Some(&["max.message.bytes"]), true);
}

fn refusals(s: &mut Side, t: &mut T) {
    let me = s.node_id.to_string();
    let set = |k, v| (k, SET, Some(v));
    for (what, broker, ops) in [
        ("not a number", "", vec![set("log.retention.ms", "soon")]),
        ("below the minimum", "", vec![set("message.max.bytes", "-5")]),
        ("bad enum", "", vec![set("log.message.timestamp.type", "Sometime")]),
        ("not dynamic", "", vec![set("auto.create.topics.enable", "false")]),
        ("unknown key", "", vec![set("no.such.config", "1")]),
        ("unknown key, per broker", me.as_str(), vec![set("no.such.config", "1")]),
        ("not dynamic, per broker", me.as_str(), vec![set("auto.create.topics.enable", "false")]),
        ("duplicate keys", "", vec![set("log.retention.ms", "1000"), set("log.retention.ms", "2000")]),
        ("null value", "", vec![("log.retention.ms", SET, None)]),
        ("another broker", "7", vec![set("log.retention.ms", "1000")]),
        ("not an id", "abc", vec![set("log.retention.ms", "1000")]),
        ("append to a long", "", vec![("log.retention.ms", 2, Some("5"))]),
        ("delete unset", "", vec![("log.retention.bytes", DELETE, None)]),
    ] {
        alter(s, t, what, broker, &ops, false);
    }
    alter(s, t, "validate only", "", &[set("log.retention.ms", "1000")], true);
    describe(s, t, BROKER, "", None, false);
    alter(s, t, "delete the unknown key", "", &[("no.such.config", DELETE, None)], false);
    alter(s, t, "delete the unknown key, per broker", &me, &[("no.such.config", DELETE, None)], false);
    describe(s, t, BROKER, "7", None, false);
    describe(s, t, BROKER, "abc", None, false);
}

fn legacy_alter(s: &mut Side, t: &mut T) {
    let me = s.node_id.to_string();
    // Kafka refuses a legacy alter of the cluster default, which would drop the
    // min.insync.replicas its storage format set there: only a broker's are compared.
    for (what, entries) in [
        ("two", vec![("log.retention.bytes", "1000000000"), ("log.segment.bytes", "100000000")]),
        ("replace with one", vec![("log.segment.bytes", "200000000")]),
        ("bad value", vec![("log.segment.bytes", "big")]),
        ("not dynamic", vec![("auto.create.topics.enable", "false")]),
        ("clear", vec![]),
    ] {
        crate::configs::legacy_alter(s, t, BROKER, &me, what, &entries);
        std::thread::sleep(std::time::Duration::from_millis(500));
        describe(s, t, BROKER, "", None, false);
        describe(s, t, BROKER, &me, Some(&["log.retention.bytes", "log.segment.bytes"]), false);
    }
}
