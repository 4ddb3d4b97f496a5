//! The controller's client-quota alterations (AlterClientQuotas): applied to the quotas the
//! catalog holds when the change is made, committed like topic admin.

use super::{AdminError, CatalogPublisher, Committed, Controller};
use crate::meta::client_quotas::{self, QuotaAlteration};

impl Controller {
    /// Applies client quota alterations (each entity once: a later alteration of the same
    /// entity is refused, as Kafka does) and commits them as one change.
    pub(super) async fn client_quotas(
        &mut self,
        alterations: &[QuotaAlteration],
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
                .map(|(entity, ops)| {
                    if !seen.insert(entity.clone()) {
                        return Err(AdminError::Quota(client_quotas::QuotaError::InvalidRequest(
                            "Ignoring duplicate entity".into(),
                        )));
                    }
                    let key = client_quotas::key_of(entity);
                    let current = next.entity_configs.get(&key).map(client_quotas::from_config).unwrap_or_default();
                    let quotas = client_quotas::alter(entity, &current, ops).map_err(AdminError::Quota)?;
                    if !validate_only && quotas != current {
                        store_ops.push(next.set_entity_config(&key, client_quotas::to_config(&quotas)));
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
