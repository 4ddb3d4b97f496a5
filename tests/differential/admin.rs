//! The admin and client APIs an operator's tools reach for besides configs:
//! OffsetForLeaderEpoch, DescribeProducers, ListConfigResources.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, ApiKey, BrokerId, DescribeClientQuotasRequest, DescribeProducersRequest,
    ListConfigResourcesRequest, OffsetForLeaderEpochRequest, alter_client_quotas_request,
    describe_client_quotas_request,
};
use kafka_protocol::records::Compression;

use crate::common::{batch, name};
use crate::norm::{e, reply};
use crate::peers::Side;
use crate::produce::{batch_with, init_pid, produce};
use crate::topics::ensure;
use crate::{CaseFn, T};

pub const CASES: &[(&str, CaseFn)] = &[
    ("offset_for_leader_epoch", offset_for_leader_epoch),
    ("describe_producers", describe_producers),
    ("list_config_resources", list_config_resources),
    ("client_quotas", client_quotas),
    ("describe_user_scram_credentials", describe_scram),
];

/// (topic, partition, current leader epoch, requested epoch)
fn ole(s: &mut Side, t: &mut T, version: i16, replica: i32, parts: &[(&str, i32, i32, i32)]) {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for (tn, p, current, epoch) in parts {
        let lp = OffsetForLeaderPartition::default()
            .with_partition(*p)
            .with_current_leader_epoch(*current)
            .with_leader_epoch(*epoch);
        match topics.iter_mut().find(|x| x.topic.as_str() == *tn) {
            Some(x) => x.partitions.push(lp),
            None => topics.push(OffsetForLeaderTopic::default().with_topic(name(tn)).with_partitions(vec![lp])),
        }
    }
    let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(replica)).with_topics(topics);
    let r = s.call(version, &req);
    t.step(
        format!("OffsetForLeaderEpoch v{version} replica={replica} {parts:?}"),
        reply(&r, |r| {
            let items: Vec<String> = r
                .topics
                .iter()
                .flat_map(|tr| {
                    tr.partitions.iter().map(move |p| {
                        format!(
                            "{}/{}: {} epoch={} end={}",
                            tr.topic.as_str(),
                            p.partition,
                            e(p.error_code),
                            p.leader_epoch,
                            p.end_offset
                        )
                    })
                })
                .collect();
            format!("[{}]", items.join(", "))
        }),
    );
}

fn offset_for_leader_epoch(s: &mut Side, t: &mut T) {
    ensure(s, "ole", 2);
    produce(s, t, "3 records", &[("ole", 0, Some(batch(3, Compression::None)))]);
    for v in 2..=4 {
        if !s.both_serve(ApiKey::OffsetForLeaderEpoch, v) {
            continue;
        }
        let replica = if v >= 3 { -1 } else { 0 };
        ole(s, t, v, replica, &[("ole", 0, -1, 0), ("ole", 1, -1, 0)]);
        ole(s, t, v, replica, &[("ole", 0, 0, 0), ("ole", 0, -1, -1), ("ole", 0, -1, 5)]);
        ole(s, t, v, replica, &[("ole", 0, 1, 0), ("ole", 0, 7, 3)]);
        ole(s, t, v, replica, &[("ole", 9, -1, 0), ("ole-missing", 0, -1, 0)]);
    }
    let v = s.ver(ApiKey::OffsetForLeaderEpoch, 4);
    ole(s, t, v, -2, &[("ole", 0, -1, 0)]);
}

fn describe_producers(s: &mut Side, t: &mut T) {
    ensure(s, "dp", 2);
    let (pid, epoch) = init_pid(s, t);
    produce(s, t, "idempotent seq 0..2", &[("dp", 0, Some(batch_with(3, pid, epoch, 0, false, false, 2)))]);
    produce(s, t, "idempotent seq 3..4", &[("dp", 0, Some(batch_with(2, pid, epoch, 3, false, false, 2)))]);
    produce(s, t, "plain", &[("dp", 1, Some(batch(2, Compression::None)))]);
    let v = s.ver(ApiKey::DescribeProducers, 0);
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default().with_name(name("dp")).with_partition_indexes(vec![0, 1, 4]),
        TopicRequest::default().with_name(name("dp-missing")).with_partition_indexes(vec![0]),
    ]);
    let r = s.call(v, &req);
    t.step(
        format!("DescribeProducers v{v} dp/0,1,4 dp-missing/0"),
        reply(&r, |r| {
            let items: Vec<String> = r
                .topics
                .iter()
                .flat_map(|tr| {
                    tr.partitions.iter().map(move |p| {
                        let producers: Vec<String> = p
                            .active_producers
                            .iter()
                            .map(|x| {
                                format!(
                                    "{} epoch={} last_seq={} last_ts={} coordinator_epoch={} txn_start={}",
                                    crate::norm::pid(x.producer_id.0),
                                    x.producer_epoch,
                                    x.last_sequence,
                                    x.last_timestamp,
                                    x.coordinator_epoch,
                                    x.current_txn_start_offset
                                )
                            })
                            .collect();
                        format!(
                            "{}/{}: {} {:?} [{}]",
                            tr.name.as_str(),
                            p.partition_index,
                            e(p.error_code),
                            p.error_message.as_ref().map(|m| m.to_string()),
                            producers.join("; ")
                        )
                    })
                })
                .collect();
            format!("[{}]", items.join(", "))
        }),
    );
}

fn list_config_resources(s: &mut Side, t: &mut T) {
    ensure(s, "lcr-topic", 1);
    let types: &[&[i8]] = &[&[], &[2], &[4, 8], &[8], &[16], &[32], &[2, 2], &[64], &[2, 3], &[0], &[1]];
    for v in 0..=1 {
        if !s.both_serve(ApiKey::ListConfigResources, v) {
            continue;
        }
        for ty in types {
            if v == 0 && !ty.is_empty() {
                continue;
            }
            let r = s.call(v, &ListConfigResourcesRequest::default().with_resource_types(ty.to_vec()));
            let node = |n: &str| n.parse::<i32>().map(|id| s.node(id)).unwrap_or_else(|_| n.to_string());
            t.step(
                format!("ListConfigResources v{v} types={ty:?}"),
                reply(&r, |r| {
                    // Topics other cases made differ in timing only; this case's own topic and
                    // every non-topic resource are compared, in the order given.
                    let items: Vec<String> = r
                        .config_resources
                        .iter()
                        .filter(|c| c.resource_type != 2 || c.resource_name.starts_with("lcr-"))
                        .map(|c| format!("{}:{}", c.resource_type, node(c.resource_name.as_str())))
                        .collect();
                    let topics = r.config_resources.iter().filter(|c| c.resource_type == 2).count();
                    format!("{} [{}] topics>1={}", e(r.error_code), items.join(", "), topics > 1)
                }),
            );
        }
    }
}

type Entity<'a> = &'a [(&'a str, Option<&'a str>)];
/// (key, value, remove)
type Ops<'a> = &'a [(&'a str, f64, bool)];

fn entity_text<'a>(pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut v: Vec<String> = pairs.map(|(t, n)| format!("{t}={}", n.unwrap_or("<default>"))).collect();
    v.sort();
    v.join(",")
}

/// One AlterClientQuotas: per entry the entity and its ops (key, value, remove).
fn alter_quotas(s: &mut Side, t: &mut T, what: &str, entries: &[(Entity, Ops)], validate_only: bool) {
    let v = s.ver(ApiKey::AlterClientQuotas, 1);
    let req = AlterClientQuotasRequest::default().with_validate_only(validate_only).with_entries(
        entries
            .iter()
            .map(|(entity, ops)| {
                alter_client_quotas_request::EntryData::default()
                    .with_entity(
                        entity
                            .iter()
                            .map(|(ty, n)| {
                                alter_client_quotas_request::EntityData::default()
                                    .with_entity_type(kafka_protocol::protocol::StrBytes::from_string(ty.to_string()))
                                    .with_entity_name(
                                        n.map(|n| kafka_protocol::protocol::StrBytes::from_string(n.to_string())),
                                    )
                            })
                            .collect(),
                    )
                    .with_ops(
                        ops.iter()
                            .map(|(k, val, remove)| {
                                alter_client_quotas_request::OpData::default()
                                    .with_key(kafka_protocol::protocol::StrBytes::from_string(k.to_string()))
                                    .with_value(*val)
                                    .with_remove(*remove)
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    let r = s.call(v, &req);
    t.step(
        format!("AlterClientQuotas v{v} {what} validate_only={validate_only}"),
        reply(&r, |r| {
            let mut items: Vec<String> = r
                .entries
                .iter()
                .map(|e| {
                    let ent = entity_text(e.entity.iter().map(|d| (d.entity_type.as_str(), d.entity_name.as_deref())));
                    format!("[{ent}]: {}", crate::norm::e(e.error_code))
                })
                .collect();
            items.sort();
            items.join("; ")
        }),
    );
    // Kafka answers before its brokers' metadata has the change (see configs.rs).
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// One DescribeClientQuotas: components (type, match type, match).
fn describe_quotas(s: &mut Side, t: &mut T, components: &[(&str, i8, Option<&str>)], strict: bool) {
    let v = s.ver(ApiKey::DescribeClientQuotas, 1);
    let req = DescribeClientQuotasRequest::default().with_strict(strict).with_components(
        components
            .iter()
            .map(|(ty, m, name)| {
                describe_client_quotas_request::ComponentData::default()
                    .with_entity_type(kafka_protocol::protocol::StrBytes::from_string(ty.to_string()))
                    .with_match_type(*m)
                    .with_match(name.map(|n| kafka_protocol::protocol::StrBytes::from_string(n.to_string())))
            })
            .collect(),
    );
    let r = s.call(v, &req);
    t.step(
        format!("DescribeClientQuotas v{v} {components:?} strict={strict}"),
        reply(&r, |r| {
            let entries = r.entries.as_ref().map(|es| {
                let mut items: Vec<String> = es
                    .iter()
                    .map(|e| {
                        let ent =
                            entity_text(e.entity.iter().map(|d| (d.entity_type.as_str(), d.entity_name.as_deref())));
                        let mut vals: Vec<String> =
                            e.values.iter().map(|x| format!("{}={}", x.key.as_str(), x.value)).collect();
                        vals.sort();
                        format!("[{ent}] {}", vals.join(" "))
                    })
                    .collect();
                items.sort();
                items.join("; ")
            });
            format!("{} {entries:?}", e(r.error_code))
        }),
    );
}

fn client_quotas(s: &mut Side, t: &mut T) {
    const U: &str = "user";
    const C: &str = "client-id";
    const I: &str = "ip";
    describe_quotas(s, t, &[], false);
    alter_quotas(
        s,
        t,
        "valid entities",
        &[
            (&[(U, Some("alice"))], &[("producer_byte_rate", 1024.0, false), ("consumer_byte_rate", 2048.0, false)]),
            (&[(U, None)], &[("request_percentage", 50.5, false)]),
            (&[(U, Some("alice")), (C, Some("c1"))], &[("producer_byte_rate", 100.0, false)]),
            (&[(C, Some("c2"))], &[("controller_mutation_rate", 3.0, false)]),
            (&[(I, Some("127.0.0.1"))], &[("connection_creation_rate", 10.0, false)]),
            (&[(I, None)], &[("connection_creation_rate", 5.0, false)]),
        ],
        false,
    );
    let one =
        |e: Entity<'static>, k: &'static str, v: f64| -> (Entity<'static>, &'static [(&'static str, f64, bool)]) {
            (e, Box::leak(Box::new([(k, v, false)])))
        };
    for (what, entry) in [
        ("empty entity", one(&[], "producer_byte_rate", 1.0)),
        ("unknown type", one(&[("group", Some("g"))], "producer_byte_rate", 1.0)),
        ("empty user name", one(&[(U, Some(""))], "producer_byte_rate", 1.0)),
        ("ip with user", one(&[(I, Some("127.0.0.1")), (U, Some("u"))], "connection_creation_rate", 1.0)),
        ("bad ip", one(&[(I, Some("not an ip!"))], "connection_creation_rate", 1.0)),
        ("ip key on a user", one(&[(U, Some("u"))], "connection_creation_rate", 1.0)),
        ("unknown key", one(&[(U, Some("u"))], "bogus_rate", 1.0)),
        ("zero", one(&[(U, Some("u"))], "producer_byte_rate", 0.0)),
        ("negative", one(&[(U, Some("u"))], "request_percentage", -1.0)),
        ("fractional long", one(&[(U, Some("u"))], "producer_byte_rate", 1.5)),
        ("fractional int", one(&[(I, Some("10.0.0.1"))], "connection_creation_rate", 2.5)),
    ] {
        alter_quotas(s, t, what, &[entry], false);
    }
    alter_quotas(
        s,
        t,
        "duplicate key; duplicate entity",
        &[
            (&[(U, Some("dupkey"))], &[("producer_byte_rate", 1.0, false), ("producer_byte_rate", 2.0, false)]),
            (&[(U, Some("bob"))], &[("producer_byte_rate", 1.0, false)]),
            (&[(U, Some("bob"))], &[("consumer_byte_rate", 1.0, false)]),
        ],
        false,
    );
    alter_quotas(s, t, "carol", &[(&[(U, Some("carol"))], &[("producer_byte_rate", 7.0, false)])], true);
    describe_quotas(s, t, &[], false);
    describe_quotas(s, t, &[], true);
    for strict in [false, true] {
        describe_quotas(s, t, &[(U, 0, Some("alice"))], strict);
        describe_quotas(s, t, &[(U, 1, None)], strict);
        describe_quotas(s, t, &[(U, 2, None)], strict);
        describe_quotas(s, t, &[(C, 2, None)], strict);
        describe_quotas(s, t, &[(U, 0, Some("alice")), (C, 2, None)], strict);
        describe_quotas(s, t, &[(I, 2, None)], strict);
        describe_quotas(s, t, &[(I, 0, Some("127.0.0.1"))], strict);
        describe_quotas(s, t, &[(U, 0, None)], strict);
    }
    describe_quotas(s, t, &[(U, 2, None), (U, 0, Some("a"))], false);
    describe_quotas(s, t, &[("group", 2, None)], false);
    describe_quotas(s, t, &[(I, 2, None), (U, 2, None)], false);
    describe_quotas(s, t, &[("", 2, None)], false);
    alter_quotas(
        s,
        t,
        "removals",
        &[
            (&[(U, Some("alice"))], &[("producer_byte_rate", 0.0, true), ("request_percentage", 0.0, true)]),
            (&[(U, None)], &[("request_percentage", 0.0, true)]),
            (&[(U, Some("nobody"))], &[("bogus_key", 0.0, true)]),
        ],
        false,
    );
    describe_quotas(s, t, &[], false);
}

fn describe_scram(s: &mut Side, t: &mut T) {
    use kafka_protocol::messages::DescribeUserScramCredentialsRequest;
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    let v = s.ver(ApiKey::DescribeUserScramCredentials, 0);
    for users in [None, Some(vec!["alice"]), Some(vec!["alice", "alice", "bob"]), Some(vec![])] {
        let req = DescribeUserScramCredentialsRequest::default().with_users(users.as_ref().map(|u| {
            u.iter()
                .map(|n| UserName::default().with_name(kafka_protocol::protocol::StrBytes::from_string(n.to_string())))
                .collect()
        }));
        let r = s.call(v, &req);
        t.step(
            format!("DescribeUserScramCredentials v{v} {users:?}"),
            reply(&r, |r| {
                let mut items: Vec<String> = r
                    .results
                    .iter()
                    .map(|x| format!("{}: {} {}", x.user.as_str(), e(x.error_code), x.credential_infos.len()))
                    .collect();
                items.sort();
                format!("{} [{}]", e(r.error_code), items.join(", "))
            }),
        );
    }
}
