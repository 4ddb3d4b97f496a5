//! DescribeConfigs for topic and broker resources.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::list_config_resources_response;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, ListConfigResourcesRequest, ListConfigResourcesResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::config::KEYS;
use crate::meta::broker_config::{self, DynamicLayers, Layer};
use crate::meta::catalog::{Catalog, TopicEntry};
use crate::meta::topic_config::{self, TOPIC_CONFIGS, TopicConfigDef};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource codes.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;

fn source_code(layer: Layer) -> i8 {
    match layer {
        Layer::DynamicBroker => 2,
        Layer::DynamicDefault => 3,
        Layer::Static => 4,
        Layer::Default => 5,
    }
}

/// One topic config's effective value and where it came from.
pub struct TopicConfigEntry {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: i8,
    /// The broker key's values below the topic's own (Kafka's synonyms), highest first.
    pub inherited: Vec<(i8, String)>,
}

/// Every topic config of `topic` (or the defaults, for `None`), as this broker sees them: a
/// config the topic does not override has its broker key's value here (dynamic, static or
/// default), and that value's source.
pub fn topic_config_entries(broker: &Broker, topic: Option<&TopicEntry>) -> Vec<TopicConfigEntry> {
    let catalog = broker.catalog();
    let layers = DynamicLayers::of(&catalog, Some(broker.id));
    let defaults = broker.logs.defaults();
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let default = || topic_config::default_value(def, &defaults);
            let inherited: Vec<(i8, String)> = match def.broker_key {
                "" => vec![(source_code(Layer::Default), default())],
                key => {
                    layers.values(key, &broker.config, default).into_iter().map(|(l, v)| (source_code(l), v)).collect()
                }
            };
            match topic.and_then(|t| t.configs.get(def.name)) {
                Some(v) => TopicConfigEntry { def, value: v.clone(), source: SOURCE_DYNAMIC_TOPIC, inherited },
                None => {
                    let (source, value) = inherited[0].clone();
                    TopicConfigEntry { def, value, source, inherited }
                }
            }
        })
        .collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default().with_name(s(name)).with_value(Some(s(value))).with_source(source)
}

fn wanted(keys: &Option<Vec<StrBytes>>, name: &str) -> bool {
    keys.as_ref().is_none_or(|k| k.iter().any(|k| k.as_str() == name))
}

pub fn describe_configs(broker: &Broker, req: DescribeConfigsRequest, _version: i16) -> DescribeConfigsResponse {
    let catalog = broker.catalog();
    let flags = (req.include_synonyms, req.include_documentation);
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let fail = |e: ResponseError, msg: String| {
                base.clone().with_error_code(e.code()).with_error_message(Some(s(&msg)))
            };
            match res.resource_type {
                RESOURCE_TOPIC => {
                    let name = match broker.topic_name(res.resource_name.as_str()) {
                        Ok(n) => n,
                        Err(e) => return fail(ResponseError::InvalidTopicException, e.to_string()),
                    };
                    let Some(topic) = catalog.get(&name) else {
                        return fail(
                            ResponseError::UnknownTopicOrPartition,
                            format!("Topic {} does not exist", res.resource_name.as_str()),
                        );
                    };
                    let configs = topic_config_entries(broker, Some(topic))
                        .into_iter()
                        .filter(|e| wanted(&res.configuration_keys, e.def.name))
                        .map(|e| {
                            let mut synonyms = Vec::new();
                            if req.include_synonyms {
                                if e.source == SOURCE_DYNAMIC_TOPIC {
                                    synonyms.push(synonym(e.def.name, &e.value, SOURCE_DYNAMIC_TOPIC));
                                }
                                if !e.def.broker_key.is_empty() {
                                    synonyms
                                        .extend(e.inherited.iter().map(|(src, v)| synonym(e.def.broker_key, v, *src)));
                                }
                            }
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(e.def.name))
                                .with_value(Some(s(&e.value)))
                                .with_read_only(!e.def.honoured)
                                .with_config_source(e.source)
                                .with_config_type(e.def.ty.kafka_code())
                                .with_synonyms(synonyms)
                                .with_documentation(
                                    req.include_documentation.then(|| StrBytes::from_static_str(e.def.doc)),
                                )
                        })
                        .collect();
                    base.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let id = res.resource_name.as_str();
                    if id.is_empty() {
                        return base.with_configs(default_broker_configs(&catalog, &res.configuration_keys, flags));
                    }
                    if id.parse::<i32>().ok() != Some(broker.id) {
                        return fail(ResponseError::InvalidRequest, format!("Unexpected broker id {id}"));
                    }
                    base.with_configs(broker_configs(broker, &catalog, &res.configuration_keys, flags))
                }
                other => fail(ResponseError::InvalidRequest, format!("Unsupported resource type {other}")),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A broker's configs: every setting, with its dynamic values over the static ones. Keys that
/// change at run time are not read-only.
fn broker_configs(
    broker: &Broker,
    catalog: &Catalog,
    keys: &Option<Vec<StrBytes>>,
    (synonyms, docs): (bool, bool),
) -> Vec<DescribeConfigsResourceResult> {
    let layers = DynamicLayers::of(catalog, Some(broker.id));
    broker
        .config
        .settings
        .iter()
        .filter(|st| wanted(keys, &st.key))
        .map(|st| {
            let values = layers.values(&st.key, &broker.config, || st.value.clone());
            let (layer, value) = values[0].clone();
            DescribeConfigsResourceResult::default()
                .with_name(s(&st.key))
                .with_value(Some(s(&value)))
                .with_read_only(!broker_config::is_dynamic(&st.key))
                .with_config_source(source_code(layer))
                .with_config_type(broker_config::config_type(&st.key).map_or(2, |t| t.kafka_code()))
                .with_synonyms(if synonyms {
                    values.iter().map(|(l, v)| synonym(&st.key, v, source_code(*l))).collect()
                } else {
                    vec![]
                })
                .with_documentation(docs.then(|| s(st.doc)))
        })
        .chain(
            layers
                .unknown_entries()
                .filter(|(k, _, _)| wanted(keys, k))
                .map(|(k, v, layer)| unknown_or_dynamic(k, v, source_code(layer), (synonyms, docs))),
        )
        .collect()
}

/// The cluster default resource (`--entity-default`): only the keys set there, as on Kafka.
fn default_broker_configs(
    catalog: &Catalog,
    keys: &Option<Vec<StrBytes>>,
    (synonyms, docs): (bool, bool),
) -> Vec<DescribeConfigsResourceResult> {
    let source = source_code(Layer::DynamicDefault);
    DynamicLayers::of(catalog, None)
        .default_entries()
        .filter(|(k, _)| wanted(keys, k))
        .map(|(k, v)| unknown_or_dynamic(k, v, source, (synonyms, docs)))
        .collect()
}

/// A dynamic entry as its layer lists it. A key kopd does not know is read-only with its
/// value hidden (it may be a secret), as Kafka lists keys it does not know.
fn unknown_or_dynamic(
    key: &str,
    value: &str,
    source: i8,
    (synonyms, docs): (bool, bool),
) -> DescribeConfigsResourceResult {
    let known = broker_config::is_known(key);
    let value = known.then(|| s(value));
    let doc = KEYS.iter().find(|(k, _, _)| *k == key).map_or("", |(_, _, d)| d);
    DescribeConfigsResourceResult::default()
        .with_name(s(key))
        .with_value(value.clone())
        .with_read_only(!known)
        .with_config_source(source)
        .with_config_type(broker_config::config_type(key).map_or(if known { 2 } else { 0 }, |t| t.kafka_code()))
        .with_synonyms(if synonyms {
            vec![DescribeConfigsSynonym::default().with_name(s(key)).with_value(value).with_source(source)]
        } else {
            vec![]
        })
        .with_documentation(docs.then(|| s(doc)))
}

/// Kafka's config resource types that ListConfigResources (KIP-1142) lists from v1.
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_CLIENT_METRICS: i8 = 16;
const RESOURCE_GROUP: i8 = 32;
const LISTABLE: [i8; 5] =
    [RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_CLIENT_METRICS, RESOURCE_GROUP];

/// ListConfigResources: v0 (KIP-714's ListClientMetricsResources) lists client-metrics
/// subscriptions only; v1 the types asked for (all of them if none), in Kafka's order: groups
/// with configs, client-metrics subscriptions, brokers as loggers, brokers, topics. kopd has
/// neither group configs nor client-metrics subscriptions, so those types list nothing. A type
/// outside the listable ones fails the whole request with UNSUPPORTED_VERSION, as on Kafka.
pub fn list_config_resources(
    broker: &Broker,
    req: ListConfigResourcesRequest,
    version: i16,
) -> ListConfigResourcesResponse {
    if version >= 1 && req.resource_types.iter().any(|t| !LISTABLE.contains(t)) {
        return ListConfigResourcesResponse::default().with_error_code(ResponseError::UnsupportedVersion.code());
    }
    let wants = |t: i8| match version {
        0 => t == RESOURCE_CLIENT_METRICS,
        _ => req.resource_types.is_empty() || req.resource_types.contains(&t),
    };
    let resource = |t: i8, name: String| {
        list_config_resources_response::ConfigResource::default()
            .with_resource_type(t)
            .with_resource_name(StrBytes::from_string(name))
    };
    let mut out = Vec::new();
    let mut broker_ids: Vec<i32> = super::metadata::brokers(broker).into_iter().map(|(id, _, _)| id).collect();
    broker_ids.sort_unstable();
    for t in [RESOURCE_BROKER_LOGGER, RESOURCE_BROKER] {
        if wants(t) {
            out.extend(broker_ids.iter().map(|id| resource(t, id.to_string())));
        }
    }
    if wants(RESOURCE_TOPIC) {
        let catalog = broker.catalog();
        let mut names: Vec<String> = catalog.topics().map(|t| broker.kafka_name(&t.name)).collect();
        names.sort_unstable();
        out.extend(names.into_iter().map(|n| resource(RESOURCE_TOPIC, n)));
    }
    ListConfigResourcesResponse::default().with_config_resources(out)
}
