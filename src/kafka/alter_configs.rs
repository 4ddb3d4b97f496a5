//! IncrementalAlterConfigs and the legacy AlterConfigs: topic overrides and dynamic broker
//! configs (one broker's, or the cluster default's) changed through the controller, persisted
//! in the catalog and applied by each core when the new catalog reaches it.

use std::collections::{BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::KafkaError;
use crate::broker::Broker;
use crate::meta::broker_config;
use crate::meta::controller::BrokerConfigAlteration;
use crate::meta::controller::{AdminError, AdminOp};
use crate::meta::topic_config::ConfigChange;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// One resource of either request, reduced to what both have.
struct Resource {
    kind: i8,
    name: StrBytes,
    /// (name, operation, value); the legacy request's entries are all SET (0).
    configs: Vec<(StrBytes, i8, Option<StrBytes>)>,
}

type Outcome = Result<(), KafkaError>;

fn invalid_request(msg: impl Into<String>) -> KafkaError {
    KafkaError::new(ResponseError::InvalidRequest, msg)
}

/// The checks Kafka's broker makes before a change goes to its controller.
fn preprocess(broker: &Broker, r: &Resource, incremental: bool) -> Result<Vec<ConfigChange>, KafkaError> {
    let mut seen = BTreeSet::new();
    if !r.configs.iter().all(|(name, _, _)| seen.insert(name.as_str())) {
        return Err(invalid_request("Error due to duplicate config keys"));
    }
    let nulls: Vec<&str> = r
        .configs
        .iter()
        .filter(|(_, op, value)| value.is_none() && !(incremental && *op == 1))
        .map(|(name, _, _)| name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(invalid_request(format!("Null value not supported for : {}", nulls.join(", "))));
    }
    if r.kind == RESOURCE_BROKER {
        let id = r.name.as_str();
        if !id.is_empty() {
            let n: i32 =
                id.parse().map_err(|_| invalid_request(format!("Node id must be an integer, but it is: {id}")))?;
            if n != broker.id {
                return Err(invalid_request(format!(
                    "Unexpected broker id, expected {}, but received {id}",
                    broker.id
                )));
            }
        }
        // Checked here, as Kafka's broker checks them before its controller: INVALID_REQUEST.
        let fixed: Vec<&str> =
            r.configs.iter().map(|(n, _, _)| n.as_str()).filter(|n| broker_config::is_static(n)).collect();
        if !fixed.is_empty() {
            return Err(invalid_request(format!("Cannot update these configs dynamically: Set({})", fixed.join(", "))));
        }
        for (name, op, value) in &r.configs {
            if let (0, Some(v)) = (op, value) {
                broker_config::validate(name.as_str(), v.as_str()).map_err(invalid_request)?;
            }
        }
        return changes(r);
    }
    if r.kind != RESOURCE_TOPIC {
        return Err(invalid_request(format!("Unknown resource type {}", r.kind)));
    }
    changes(r)
}

fn changes(r: &Resource) -> Result<Vec<ConfigChange>, KafkaError> {
    r.configs
        .iter()
        .map(|(name, op, value)| {
            let (name, value) = (name.to_string(), value.as_ref().map(|v| v.to_string()).unwrap_or_default());
            Ok(match op {
                0 => ConfigChange::Set(name, value),
                1 => ConfigChange::Delete(name),
                2 => ConfigChange::Append(name, value),
                3 => ConfigChange::Subtract(name, value),
                // Kafka 4.4 answers UNKNOWN_SERVER_ERROR here (its broker fails on the unknown
                // type rather than refusing it); clients see the same.
                other => {
                    return Err(KafkaError::new(
                        ResponseError::UnknownServerError,
                        format!("Unknown operation type {other}"),
                    ));
                }
            })
        })
        .collect()
}

fn no_such_topic(r: &Resource) -> KafkaError {
    KafkaError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{}' does not exist.", r.name.as_str()))
}

/// Applies every resource's changes; the outcome of each, in request order.
async fn alter(broker: &Broker, resources: &[Resource], incremental: bool, validate_only: bool) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = resources.iter().map(|_| None).collect();
    let mut count: HashMap<(i8, &str), usize> = HashMap::new();
    for r in resources {
        *count.entry((r.kind, r.name.as_str())).or_default() += 1;
    }
    // Resources that passed the checks, as (index, change): topics committed as one change,
    // brokers as another.
    let (mut ops, mut brokers) = (Vec::new(), Vec::new());
    for (i, r) in resources.iter().enumerate() {
        if count[&(r.kind, r.name.as_str())] > 1 {
            outcomes[i] = Some(Err(invalid_request("Each resource must appear at most once.")));
            continue;
        }
        let changes = match preprocess(broker, r, incremental) {
            Ok(c) => c,
            Err(e) => {
                outcomes[i] = Some(Err(e));
                continue;
            }
        };
        if r.kind == RESOURCE_BROKER {
            // preprocess has checked the id: empty (the cluster default) or this broker's.
            let broker = r.name.as_str().parse().ok();
            brokers.push((i, BrokerConfigAlteration { broker, changes, replace: !incremental }));
            continue;
        }
        if r.name.is_empty() {
            outcomes[i] = Some(Err(invalid_request("Default topic resources are not allowed.")));
            continue;
        }
        match broker.topic_name(r.name.as_str()) {
            Ok(name) => {
                ops.push((i, AdminOp::AlterTopicConfigs { name, changes, replace: !incremental, validate_only }))
            }
            Err(_) => outcomes[i] = Some(Err(no_such_topic(r))),
        }
    }
    let (indices, alterations): (Vec<usize>, Vec<BrokerConfigAlteration>) = brokers.into_iter().unzip();
    if !alterations.is_empty() {
        let results = broker.controller.alter_broker_configs(alterations, validate_only).await;
        for (i, result) in indices.into_iter().zip(results) {
            outcomes[i] = Some(result.map_err(|e| KafkaError::from(&e)));
        }
    }
    let (indices, ops): (Vec<usize>, Vec<AdminOp>) = ops.into_iter().unzip();
    let results = if ops.is_empty() { Vec::new() } else { broker.controller.submit(ops).await };
    for (i, result) in indices.into_iter().zip(results) {
        outcomes[i] = Some(match result {
            Ok(_) => Ok(()),
            Err(AdminError::UnknownTopic) => Err(no_such_topic(&resources[i])),
            Err(e) => Err(KafkaError::from(&e)),
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(KafkaError::new(ResponseError::UnknownServerError, ""))))
        .collect()
}

/// Each resource's answer, built by `make(type, name, error code, message)`.
fn answers<R>(
    resources: Vec<Resource>,
    outcomes: Vec<Outcome>,
    make: impl Fn(i8, StrBytes, i16, Option<StrBytes>) -> R,
) -> Vec<R> {
    resources
        .into_iter()
        .zip(outcomes)
        .map(|(r, o)| match o {
            Ok(()) => make(r.kind, r.name, 0, None),
            Err(e) => make(r.kind, r.name, e.code, e.message),
        })
        .collect()
}

pub async fn incremental(broker: &Broker, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let resources: Vec<Resource> = req
        .resources
        .into_iter()
        .map(|r| Resource {
            kind: r.resource_type,
            name: r.resource_name,
            configs: r.configs.into_iter().map(|c| (c.name, c.config_operation, c.value)).collect(),
        })
        .collect();
    let outcomes = alter(broker, &resources, true, req.validate_only).await;
    IncrementalAlterConfigsResponse::default().with_responses(answers(resources, outcomes, |kind, name, code, msg| {
        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(kind)
            .with_resource_name(name)
            .with_error_code(code)
            .with_error_message(msg)
    }))
}

pub async fn legacy(broker: &Broker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources: Vec<Resource> = req
        .resources
        .into_iter()
        .map(|r| Resource {
            kind: r.resource_type,
            name: r.resource_name,
            configs: r.configs.into_iter().map(|c| (c.name, 0, c.value)).collect(),
        })
        .collect();
    let outcomes = alter(broker, &resources, false, req.validate_only).await;
    AlterConfigsResponse::default().with_responses(answers(resources, outcomes, |kind, name, code, msg| {
        alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(kind)
            .with_resource_name(name)
            .with_error_code(code)
            .with_error_message(msg)
    }))
}
