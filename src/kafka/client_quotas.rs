//! DescribeClientQuotas and AlterClientQuotas (`kafka-configs.sh --entity-type users|clients|ips`):
//! quotas stored in the catalog through the controller, described from a core's replica. Kafka's
//! validation and filter rules live in `meta::client_quotas`; enforcement comes with security.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
    alter_client_quotas_response, describe_client_quotas_response,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::KafkaError;
use crate::broker::Broker;
use crate::meta::client_quotas::{self, Match, QuotaAlteration, QuotaEntity, QuotaError};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn describe(broker: &Broker, req: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    let mut components = Vec::with_capacity(req.components.len());
    for c in &req.components {
        let m = match c.match_type {
            MATCH_EXACT => match &c._match {
                Some(m) => Match::Exact(Some(m.to_string())),
                // The default entity is asked for with MATCH_DEFAULT; Kafka refuses this.
                None => {
                    let m = format!("Invalid empty match for entity type {}", c.entity_type.as_str());
                    return refused(QuotaError::InvalidRequest(m));
                }
            },
            MATCH_DEFAULT => Match::Exact(None),
            MATCH_SPECIFIED => Match::Any,
            other => {
                return refused(QuotaError::InvalidRequest(format!("Unexpected match type: {other}")));
            }
        };
        components.push((c.entity_type.to_string(), m));
    }
    if let Err(e) = client_quotas::check_filter(&components) {
        return refused(e);
    }
    let catalog = broker.catalog();
    let entries = catalog
        .entity_configs
        .iter()
        .filter_map(|(key, config)| Some((client_quotas::entity_of_key(key)?, config)))
        .filter(|(entity, _)| client_quotas::matches(entity, &components, req.strict))
        .map(|(entity, config)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .into_iter()
                        .map(|(t, n)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(text(&t))
                                .with_entity_name(n.as_deref().map(text))
                        })
                        .collect(),
                )
                .with_values(
                    client_quotas::from_config(config)
                        .into_iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default().with_key(text(&k)).with_value(v)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

fn refused(e: QuotaError) -> DescribeClientQuotasResponse {
    let k = KafkaError::from(&crate::meta::controller::AdminError::Quota(e));
    DescribeClientQuotasResponse::default().with_error_code(k.code).with_error_message(k.message).with_entries(None)
}

pub async fn alter(broker: &Broker, req: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    // Kafka reads each entity as a map (a type named twice keeps its last name) and each op's
    // removal as a null value.
    let alterations: Vec<QuotaAlteration> = req
        .entries
        .iter()
        .map(|e| {
            let entity = client_quotas::entity_of(
                e.entity.iter().map(|d| (d.entity_type.to_string(), d.entity_name.as_ref().map(|n| n.to_string()))),
            );
            let ops = e.ops.iter().map(|o| (o.key.to_string(), (!o.remove).then_some(o.value))).collect();
            (entity, ops)
        })
        .collect();
    let results = broker.controller.alter_client_quotas(alterations.clone(), req.validate_only).await;
    // One answer per entity, as Kafka gives (a repeated entity's later refusal replaces it).
    let mut answers: BTreeMap<QuotaEntity, Result<(), KafkaError>> = BTreeMap::new();
    for ((entity, _), r) in alterations.into_iter().zip(results) {
        let r = r.map_err(|e| match &e {
            crate::meta::controller::AdminError::Quota(_) => KafkaError::from(&e),
            other => KafkaError::new(ResponseError::UnknownServerError, other.to_string()),
        });
        answers.insert(entity, r);
    }
    let entries = answers
        .into_iter()
        .map(|(entity, r)| {
            let base = alter_client_quotas_response::EntryData::default().with_entity(
                entity
                    .into_iter()
                    .map(|(t, n)| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(text(&t))
                            .with_entity_name(n.as_deref().map(text))
                    })
                    .collect(),
            );
            match r {
                Ok(()) => base,
                Err(k) => base.with_error_code(k.code).with_error_message(k.message),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
