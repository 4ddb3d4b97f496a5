//! Topic admin: CreateTopics, DeleteTopics, CreatePartitions. Validation that needs only the
//! request happens here; everything that touches the catalog goes to the controller.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName as KafkaTopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::configs::topic_config_entries;
use super::errors::KafkaError;
use crate::broker::Broker;
use crate::meta::controller::{AdminOp, AdminResult, TopicRef};

pub(super) fn kname(s: &str) -> KafkaTopicName {
    KafkaTopicName(StrBytes::from_string(s.to_string()))
}

/// `__consumer_offsets` holds the group coordinators' state: clients may not delete or grow it.
fn is_internal(broker: &Broker, name: &crate::meta::topic_name::TopicName) -> bool {
    *name == crate::group::offsets_topic_name(&broker.config)
}

fn internal_topic_error() -> KafkaError {
    KafkaError::new(ResponseError::InvalidRequest, "internal topics cannot be deleted or given partitions")
}

/// Names that appear more than once in one request; Kafka rejects each such entry.
fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in names {
        *seen.entry(n).or_default() += 1;
    }
    seen.retain(|_, c| *c > 1);
    seen
}

/// Request-only checks of one CreatableTopic, yielding the controller op.
fn creation_op(broker: &Broker, t: &CreatableTopic, validate_only: bool) -> Result<AdminOp, KafkaError> {
    let name = broker.topic_name(t.name.as_str()).map_err(|e| KafkaError::from(&e))?;
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let value = c.value.as_ref().ok_or_else(|| {
            KafkaError::new(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic config {}", c.name.as_str()),
            )
        })?;
        configs.insert(c.name.to_string(), value.to_string());
    }
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(KafkaError::new(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let mut owners = vec![None; t.assignments.len()];
        for a in &t.assignments {
            let slot = usize::try_from(a.partition_index).ok().and_then(|i| owners.get_mut(i));
            let (Some(slot), Some(first)) = (slot, a.broker_ids.first()) else {
                return Err(KafkaError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence, each with at least one replica",
                ));
            };
            *slot = u32::try_from(first.0).ok();
        }
        let owners: Option<Vec<u32>> = owners.into_iter().collect();
        let owners = owners
            .ok_or_else(|| KafkaError::new(ResponseError::InvalidReplicaAssignment, "Invalid replica assignment"))?;
        return Ok(AdminOp::CreateTopic {
            name,
            partitions: owners.len() as i32,
            owners: Some(owners),
            configs,
            validate_only,
        });
    }
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err(KafkaError::new(
            ResponseError::InvalidReplicationFactor,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ));
    }
    // Replicas are the ledger store's business, but a factor no Kafka cluster of this many
    // brokers could meet is refused as Kafka refuses it.
    if t.replication_factor > 0 && t.replication_factor as usize > broker.config.cores {
        return Err(KafkaError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {} time(s): The target replication factor of {} cannot be reached because only {} broker(s) are registered.",
                t.replication_factor, t.replication_factor, broker.config.cores
            ),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => broker.config.num_partitions,
        n if n < 1 => {
            return Err(KafkaError::new(
                ResponseError::InvalidPartitions,
                "Number of partitions must be larger than 0, or -1 to use the default value.",
            ));
        }
        n => n,
    };
    Ok(AdminOp::CreateTopic { name, partitions, owners: None, configs, validate_only })
}

/// Runs per-entry results through the controller: entries that passed local checks are
/// submitted in one batch (one store commit); the rest keep their error.
async fn submit(broker: &Broker, checked: Vec<Result<AdminOp, KafkaError>>) -> Vec<Result<AdminResult, KafkaError>> {
    let ops: Vec<AdminOp> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let mut results = broker.controller.submit(ops).await.into_iter();
    checked
        .into_iter()
        .map(|c| c.map(|_| results.next().unwrap_or(Err(crate::meta::controller::AdminError::ControllerUnavailable))))
        .collect()
}

pub async fn create_topics(broker: &Broker, mut req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let dups: std::collections::HashSet<String> =
        duplicates(req.topics.iter().map(|t| t.name.as_str())).into_keys().map(str::to_string).collect();
    // A name given twice gets one answer (INVALID_REQUEST), as from Kafka.
    let mut seen = std::collections::HashSet::new();
    req.topics.retain(|t| seen.insert(t.name.to_string()));
    let checked = req
        .topics
        .iter()
        .map(|t| {
            if dups.contains(t.name.as_str()) {
                return Err(KafkaError::new(
                    ResponseError::InvalidRequest,
                    "Create topics request contains multiple entries for this topic",
                ));
            }
            creation_op(broker, t, req.validate_only)
        })
        .collect();
    let results = submit(broker, checked).await;
    let topics = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let base = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            match r.and_then(|r| r.map_err(|e| KafkaError::from(&e))) {
                Err(e) => base.with_error_code(e.code).with_error_message(e.message),
                Ok(topic) => {
                    let configs = (version >= 5).then(|| {
                        topic_config_entries(broker, Some(&topic))
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_static_str(e.def.name))
                                    .with_value(Some(StrBytes::from_string(e.value)))
                                    .with_read_only(!e.def.honoured)
                                    .with_config_source(e.source)
                            })
                            .collect()
                    });
                    base.with_topic_id(if req.validate_only { uuid::Uuid::nil() } else { topic.id })
                        .with_num_partitions(topic.partitions.len() as i32)
                        .with_replication_factor(1)
                        .with_configs(configs)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub async fn delete_topics(broker: &Broker, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics`, by name or by id.
    let entries: Vec<(Option<KafkaTopicName>, uuid::Uuid)> = if version >= 6 {
        req.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        req.topic_names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect()
    };
    let catalog = broker.catalog();
    let checked = entries
        .iter()
        .map(|(name, id)| match (name, id.is_nil()) {
            (Some(_), false) | (None, true) => Err(KafkaError::new(
                ResponseError::InvalidRequest,
                "Exactly one of topic name and topic id must be set",
            )),
            (Some(n), true) => {
                broker.topic_name(n.as_str()).map(|n| AdminOp::DeleteTopic(TopicRef::Name(n))).map_err(|_| {
                    KafkaError::new(ResponseError::UnknownTopicOrPartition, "This server does not host this topic")
                })
            }
            (None, false) => Ok(AdminOp::DeleteTopic(TopicRef::Id(*id))),
        })
        .map(|op: Result<AdminOp, KafkaError>| {
            let internal = match &op {
                Ok(AdminOp::DeleteTopic(TopicRef::Name(n))) => is_internal(broker, n),
                Ok(AdminOp::DeleteTopic(TopicRef::Id(id))) => {
                    catalog.get_by_id(id).is_some_and(|t| is_internal(broker, &t.name))
                }
                _ => false,
            };
            if internal { Err(internal_topic_error()) } else { op }
        })
        .collect();
    let results = submit(broker, checked).await;
    let responses = entries
        .into_iter()
        .zip(results)
        .map(|((name, id), r)| {
            // Answer by-id deletions with the name the topic had.
            let name = name.or_else(|| catalog.get_by_id(&id).map(|t| kname(&broker.kafka_name(&t.name))));
            let base = DeletableTopicResult::default().with_name(name);
            match r.and_then(|r| r.map_err(|e| KafkaError::from(&e))) {
                Ok(t) => base.with_topic_id(t.id),
                Err(e) => base.with_topic_id(id).with_error_code(e.code).with_error_message(e.message),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let dups = duplicates(req.topics.iter().map(|t| t.name.as_str()));
    let checked = req
        .topics
        .iter()
        .map(|t| {
            if dups.contains_key(t.name.as_str()) {
                return Err(KafkaError::new(ResponseError::InvalidRequest, "Duplicate topic in request."));
            }
            let name = broker.topic_name(t.name.as_str()).map_err(|_| {
                KafkaError::new(ResponseError::UnknownTopicOrPartition, "This server does not host this topic")
            })?;
            let owners = match &t.assignments {
                None => None,
                Some(a) => Some(
                    a.iter()
                        .map(|a| a.broker_ids.first().and_then(|b| u32::try_from(b.0).ok()))
                        .collect::<Option<Vec<u32>>>()
                        .ok_or_else(|| {
                            KafkaError::new(
                                ResponseError::InvalidReplicaAssignment,
                                "Each new partition needs at least one valid broker",
                            )
                        })?,
                ),
            };
            if is_internal(broker, &name) {
                return Err(internal_topic_error());
            }
            Ok(AdminOp::CreatePartitions { name, total: t.count, owners, validate_only: req.validate_only })
        })
        .collect();
    let results = submit(broker, checked).await;
    let results = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match r.and_then(|r| r.map_err(|e| KafkaError::from(&e))) {
                Ok(_) => base,
                Err(e) => base.with_error_code(e.code).with_error_message(e.message),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
