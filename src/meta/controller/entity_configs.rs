//! The controller's entity-config alterations: client quotas (AlterClientQuotas) and dynamic
//! broker configs (AlterConfigs of broker resources). Each is applied to the entity's configs
//! as the catalog holds them when the change is made and committed like topic admin.

use std::collections::BTreeMap;

use super::{AdminError, CatalogPublisher, Committed, Controller};
use crate::meta::broker_config::{self, DynamicLayers};
use crate::meta::catalog::Catalog;
use crate::meta::client_quotas::{self, QuotaAlteration};
use crate::meta::topic_config::ConfigChange;

/// A change of one broker's dynamic configs (`broker: None`: the cluster default).
#[derive(Debug, Clone)]
pub struct BrokerConfigAlteration {
    pub broker: Option<i32>,
    pub changes: Vec<ConfigChange>,
    /// Legacy AlterConfigs: the sets are the entity's whole new set.
    pub replace: bool,
}

/// The entity an alteration changes, and its configs after it (or why it is refused), from
/// the catalog as it is now.
type Plan<'a, A> = dyn Fn(&A, &Catalog) -> (String, Result<BTreeMap<String, String>, AdminError>) + 'a;

impl Controller {
    /// Applies client quota alterations (each entity once: a later alteration of the same
    /// entity is refused, as Kafka does) and commits them as one change.
    pub(super) async fn client_quotas(
        &mut self,
        alterations: &[QuotaAlteration],
        validate_only: bool,
        publish: &CatalogPublisher,
    ) -> Vec<Result<(), AdminError>> {
        let plan = |(entity, ops): &QuotaAlteration, cat: &Catalog| {
            let key = client_quotas::key_of(entity);
            let current = cat.entity_configs.get(&key).map(client_quotas::from_config).unwrap_or_default();
            let quotas = client_quotas::alter(entity, &current, ops).map_err(AdminError::Quota);
            (key, quotas.map(|q| client_quotas::to_config(&q)))
        };
        let duplicate =
            AdminError::Quota(client_quotas::QuotaError::InvalidRequest("Ignoring duplicate entity".into()));
        self.alter_entities(alterations, &plan, duplicate, validate_only, publish).await
    }

    /// Applies changes of dynamic broker configs and commits them as one change.
    pub(super) async fn broker_configs(
        &mut self,
        alterations: &[BrokerConfigAlteration],
        validate_only: bool,
        publish: &CatalogPublisher,
    ) -> Vec<Result<(), AdminError>> {
        let defaults = self.topic_defaults.clone();
        let plan = |a: &BrokerConfigAlteration, cat: &Catalog| {
            let (key, below) = match a.broker {
                Some(id) => (broker_config::entity_key(id), DynamicLayers::of(cat, None)),
                None => (broker_config::DEFAULT_ENTITY.to_string(), DynamicLayers::empty()),
            };
            let current = cat.entity_configs.get(&key).cloned().unwrap_or_default();
            let base =
                |k: &str| below.get(k).map(str::to_string).unwrap_or_else(|| broker_config::static_value(k, &defaults));
            let next =
                broker_config::apply_changes(&current, &a.changes, a.replace, base).map_err(AdminError::InvalidConfig);
            (key, next)
        };
        let duplicate = AdminError::InvalidConfig("Each resource must appear at most once.".into());
        self.alter_entities(alterations, &plan, duplicate, validate_only, publish).await
    }

    /// Plans every alteration against the current catalog (an entity named twice gets
    /// `duplicate`) and commits the changed entities as one catalog change.
    async fn alter_entities<A>(
        &mut self,
        alterations: &[A],
        plan: &Plan<'_, A>,
        duplicate: AdminError,
        validate_only: bool,
        publish: &CatalogPublisher,
    ) -> Vec<Result<(), AdminError>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(e) = self.ensure_fresh(publish).await {
                return alterations.iter().map(|_| Err(e.clone())).collect();
            }
            let mut next = (*self.catalog).clone();
            let mut store_ops = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let results: Vec<Result<(), AdminError>> = alterations
                .iter()
                .map(|a| {
                    let (key, config) = plan(a, &next);
                    if !seen.insert(key.clone()) {
                        return Err(duplicate.clone());
                    }
                    let config = config?;
                    let unchanged = next.entity_configs.get(&key).map_or(config.is_empty(), |c| *c == config);
                    if !validate_only && !unchanged {
                        store_ops.push(next.set_entity_config(&key, config));
                    }
                    Ok(())
                })
                .collect();
            if store_ops.is_empty() {
                return results;
            }
            let err = match self.commit_next(next, store_ops, attempt, publish).await {
                Committed::Yes => return results,
                Committed::Retry => continue,
                Committed::No(err) => err,
            };
            return results.into_iter().map(|r| r.and(Err(err.clone()))).collect();
        }
    }
}
