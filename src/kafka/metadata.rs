//! Metadata: brokers (one per core of every live node) and topics, each partition led by its
//! owner broker (none while the owner's node is gone and the partition is being moved).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName as KafkaTopicName};
use kafka_protocol::protocol::StrBytes;

use super::acl;
use crate::broker::Broker;
use crate::cluster::ClusterView;
use crate::meta::catalog::TopicEntry;
use crate::meta::controller::{AdminError, AdminOp};
use crate::meta::topic_name::TopicName;

pub fn brokers(broker: &Broker) -> Vec<(i32, String, i32)> {
    broker.cluster().brokers()
}

fn topic_response(view: &ClusterView, kafka_name: &str, topic: &TopicEntry) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, owner)| {
            let p = MetadataResponsePartition::default().with_partition_index(i as i32).with_leader_epoch(owner.epoch);
            let replica = BrokerId(owner.broker as i32);
            if view.is_live(owner.broker) {
                p.with_leader_id(replica).with_replica_nodes(vec![replica]).with_isr_nodes(vec![replica])
            } else {
                // As Kafka answers for an offline leader: none, until the partition has moved.
                p.with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_replica_nodes(vec![replica])
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(KafkaTopicName(StrBytes::from_string(kafka_name.to_string()))))
        .with_topic_id(topic.id)
        .with_is_internal(kafka_name == crate::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
        .with_topic_authorized_operations(acl::NOT_REQUESTED)
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, e: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_name(name.map(|n| KafkaTopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_topic_authorized_operations(acl::NOT_REQUESTED)
}

/// What became of one requested topic before auto-creation.
enum Lookup {
    Found(String, Arc<TopicEntry>),
    Missing(String, TopicName),
    Failed(MetadataResponseTopic),
}

pub async fn handle(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let catalog = broker.catalog();
    let view = broker.cluster();
    // v0 lists all topics with an empty array; v1+ with a null one.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => catalog.topics().map(|t| topic_response(&view, &broker.kafka_name(&t.name), t)).collect(),
        Some(mut requested) => {
            // A topic named twice is answered once, as Kafka does.
            let mut seen = std::collections::HashSet::new();
            requested.retain(|t| match &t.name {
                Some(n) => seen.insert(n.to_string()),
                None => seen.insert(format!("id:{}", t.topic_id)),
            });
            let lookups: Vec<Lookup> = requested
                .into_iter()
                .map(|rt| match rt.name {
                    Some(n) => match broker.topic_name(n.as_str()) {
                        Err(_) => Lookup::Failed(error_topic(
                            Some(n.as_str()),
                            uuid::Uuid::nil(),
                            ResponseError::InvalidTopicException,
                        )),
                        Ok(name) => match catalog.get(&name) {
                            Some(t) => Lookup::Found(n.to_string(), t.clone()),
                            None => Lookup::Missing(n.to_string(), name),
                        },
                    },
                    None => match catalog.get_by_id(&rt.topic_id) {
                        Some(t) => Lookup::Found(broker.kafka_name(&t.name), t.clone()),
                        None => Lookup::Failed(error_topic(None, rt.topic_id, ResponseError::UnknownTopicId)),
                    },
                })
                .collect();
            // Kafka clients before v4 could not say no to auto-creation.
            let allow_create = broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            let created = if allow_create { auto_create(broker, &lookups).await } else { BTreeMap::new() };
            lookups
                .into_iter()
                .map(|l| match l {
                    Lookup::Found(kname, t) => topic_response(&view, &kname, &t),
                    Lookup::Failed(resp) => resp,
                    Lookup::Missing(kname, name) => match created.get(&name) {
                        Some(Ok(t)) => topic_response(&view, &kname, t),
                        Some(Err(AdminError::InvalidConfig(_) | AdminError::InvalidPartitions(_))) => {
                            error_topic(Some(&kname), uuid::Uuid::nil(), ResponseError::InvalidRequest)
                        }
                        Some(Err(_)) => error_topic(Some(&kname), uuid::Uuid::nil(), ResponseError::LeaderNotAvailable),
                        None => error_topic(Some(&kname), uuid::Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                    },
                })
                .collect()
        }
    };
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if version >= 8 && req.include_topic_authorized_operations {
        for t in &mut topics {
            t.topic_authorized_operations = acl::TOPIC_OPERATIONS;
        }
    }
    // v8-v10 carry the cluster's operations here; later versions moved them to DescribeCluster.
    let cluster_operations = if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        acl::CLUSTER_OPERATIONS
    } else {
        acl::NOT_REQUESTED
    };
    MetadataResponse::default()
        .with_brokers(
            view.brokers()
                .into_iter()
                .map(|(id, host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(catalog.cluster_id.clone())))
        .with_controller_id(BrokerId(view.controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations)
}

/// Creates the missing topics with the default partition count, through the controller.
async fn auto_create(broker: &Broker, lookups: &[Lookup]) -> BTreeMap<TopicName, Result<Arc<TopicEntry>, AdminError>> {
    let mut missing: Vec<TopicName> = lookups
        .iter()
        .filter_map(|l| match l {
            Lookup::Missing(_, n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return BTreeMap::new();
    }
    let ops = missing
        .iter()
        .map(|name| AdminOp::CreateTopic {
            name: name.clone(),
            partitions: broker.config.num_partitions,
            owners: None,
            configs: BTreeMap::new(),
            validate_only: false,
        })
        .collect();
    let results = broker.controller.submit(ops).await;
    let catalog = broker.catalog();
    missing
        .into_iter()
        .zip(results)
        .map(|(name, r)| {
            // Another client may have created it first: that is as good.
            let r = match r {
                Err(AdminError::TopicExists(_)) => catalog.get(&name).cloned().ok_or(AdminError::UnknownTopic),
                other => other,
            };
            (name, r)
        })
        .collect()
}
