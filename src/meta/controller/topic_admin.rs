//! The controller's topic operations (AdminOp): each applied to the next catalog, with the
//! store ops that persist it.

use std::sync::Arc;

use uuid::Uuid;

use super::{AdminError, AdminOp, AdminResult, Controller, TopicRef, hash};
use crate::meta::assignment::{self, PartitionOwner};
use crate::meta::catalog::{Catalog, TopicEntry};
use crate::meta::store::StoreOp;
use crate::meta::topic_config;
use crate::meta::topic_name::TopicName;

impl Controller {
    pub(super) fn apply(&self, cat: &mut Catalog, op: &AdminOp, store_ops: &mut Vec<StoreOp>) -> AdminResult {
        match op {
            AdminOp::CreateTopic { name, partitions, owners, configs, validate_only } => {
                if cat.get(name).is_some() {
                    return Err(AdminError::TopicExists(name.to_string()));
                }
                if let Some(other) = colliding(cat, name) {
                    return Err(AdminError::TopicCollision(name.local.clone(), other));
                }
                if *partitions < 1 || *partitions > self.max_partitions {
                    return Err(AdminError::InvalidPartitions(format!(
                        "Number of partitions must be between 1 and {}",
                        self.max_partitions
                    )));
                }
                self.check_owners(owners, *partitions as usize)?;
                topic_config::validate_all(configs).map_err(AdminError::InvalidConfig)?;
                // An operator's explicit assignment stays where it was put (as in Kafka): the
                // leader's balancing moves it only off a broker that left.
                let pinned = owners.is_some();
                let brokers = match owners {
                    Some(o) => o.clone(),
                    None => {
                        let start = hash(&name.to_string()) as usize;
                        assignment::place_on(
                            &self.brokers,
                            cat.owners(),
                            std::iter::empty(),
                            *partitions as usize,
                            start,
                        )
                    }
                };
                let topic = TopicEntry {
                    name: name.clone(),
                    id: Uuid::new_v4(),
                    partitions: brokers
                        .into_iter()
                        .map(|b| PartitionOwner { pinned, ..PartitionOwner::new(b) })
                        .collect(),
                    configs: configs.clone(),
                };
                if !validate_only {
                    store_ops.extend(Catalog::put_ops(&topic));
                    cat.insert(topic.clone());
                }
                Ok(Arc::new(topic))
            }
            AdminOp::Reassign { name, partition, broker } => {
                let mut topic = (**cat.get(name).ok_or(AdminError::UnknownTopic)?).clone();
                let owner = usize::try_from(*partition)
                    .ok()
                    .and_then(|p| topic.partitions.get_mut(p))
                    .ok_or(AdminError::UnknownTopic)?;
                if self.brokers.binary_search(broker).is_err() {
                    return Err(AdminError::InvalidReplicaAssignment(format!("broker {broker} does not exist")));
                }
                if owner.broker != *broker {
                    *owner = PartitionOwner { broker: *broker, epoch: owner.epoch + 1, pinned: true };
                } else if owner.pinned {
                    return Ok(Arc::new(topic));
                } else {
                    owner.pinned = true;
                }
                store_ops.extend(Catalog::put_ops(&topic));
                cat.insert(topic.clone());
                Ok(Arc::new(topic))
            }
            AdminOp::AlterTopicConfigs { name, changes, replace, validate_only } => {
                let current = cat.get(name).ok_or(AdminError::UnknownTopic)?;
                let configs = topic_config::apply_changes(&current.configs, changes, *replace, &self.topic_defaults)
                    .map_err(AdminError::InvalidConfig)?;
                let changed = configs != current.configs;
                let topic = TopicEntry { configs, ..(**current).clone() };
                if !validate_only && changed {
                    store_ops.extend(Catalog::put_ops(&topic));
                    cat.insert(topic.clone());
                }
                Ok(Arc::new(topic))
            }
            AdminOp::DeleteTopic(r) => {
                let name = match r {
                    TopicRef::Name(n) => cat.get(n).ok_or(AdminError::UnknownTopic)?.name.clone(),
                    TopicRef::Id(id) => cat.get_by_id(id).ok_or(AdminError::UnknownTopicId)?.name.clone(),
                };
                store_ops.extend(Catalog::delete_ops(&name));
                cat.remove(&name).ok_or(AdminError::UnknownTopic)
            }
            AdminOp::CreatePartitions { name, total, owners, validate_only } => {
                let existing = cat.get(name).ok_or(AdminError::UnknownTopic)?;
                let current = existing.partitions.len() as i32;
                if *total <= current {
                    return Err(AdminError::InvalidPartitions(format!(
                        "Topic currently has {current} partitions, which is higher than the requested {total}."
                    )));
                }
                if *total > self.max_partitions {
                    return Err(AdminError::InvalidPartitions(format!(
                        "Number of partitions must be at most {}",
                        self.max_partitions
                    )));
                }
                let added = (*total - current) as usize;
                self.check_owners(owners, added)?;
                let pinned = owners.is_some();
                let new_brokers = match owners {
                    Some(o) => o.clone(),
                    None => assignment::place_on(
                        &self.brokers,
                        cat.owners(),
                        existing.partitions.iter().map(|o| o.broker),
                        added,
                        current as usize,
                    ),
                };
                let mut topic = (**existing).clone();
                topic
                    .partitions
                    .extend(new_brokers.into_iter().map(|b| PartitionOwner { pinned, ..PartitionOwner::new(b) }));
                if !validate_only {
                    store_ops.extend(Catalog::put_ops(&topic));
                    cat.insert(topic.clone());
                }
                Ok(Arc::new(topic))
            }
        }
    }
}

impl AdminOp {
    pub(super) fn validate_only(&self) -> bool {
        match self {
            AdminOp::CreateTopic { validate_only, .. }
            | AdminOp::CreatePartitions { validate_only, .. }
            | AdminOp::AlterTopicConfigs { validate_only, .. } => *validate_only,
            AdminOp::DeleteTopic(_) | AdminOp::Reassign { .. } => false,
        }
    }
}

/// An existing topic of the same namespace whose name equals `name`'s once '.' and '_' are
/// taken as one character (Kafka's rule).
fn colliding(cat: &Catalog, name: &TopicName) -> Option<String> {
    if !name.local.contains(['.', '_']) {
        return None;
    }
    let unify = |s: &str| s.replace('.', "_");
    let key = unify(&name.local);
    cat.topics()
        .map(|t| &t.name)
        .find(|t| t.tenant == name.tenant && t.namespace == name.namespace && unify(&t.local) == key)
        .map(|t| t.local.clone())
}
