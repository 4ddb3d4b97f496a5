//! Kafka topic names and the Pulsar topics they map to.
//!
//! A plain Kafka name `t` lives at `persistent://{kafka.tenant}/{kafka.namespace}/t`; a client
//! may also name a Pulsar topic in full (`persistent://a/b/t` or `a/b/t`). Partition `i` of a
//! topic is the Pulsar topic `...t-partition-i`.

use std::fmt;

use thiserror::Error;

/// Kafka's limit on a topic name (249 = 255 minus room for a partition suffix on disk).
pub const MAX_KAFKA_NAME_LEN: usize = 249;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name cannot be `.` or `..`")]
    Dots,
    #[error("topic name is longer than {MAX_KAFKA_NAME_LEN} characters")]
    TooLong,
    #[error("topic name `{0}` has characters other than ASCII letters, digits, `.`, `_` and `-`")]
    IllegalCharacter(String),
    #[error("`{0}` is not a Pulsar topic name of the form persistent://tenant/namespace/topic")]
    BadPulsarName(String),
}

/// A topic's place in Pulsar's namespace. The catalog key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName {
    pub tenant: String,
    pub namespace: String,
    pub local: String,
}

fn check_segment(s: &str) -> Result<(), TopicNameError> {
    if s.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if s == "." || s == ".." {
        return Err(TopicNameError::Dots);
    }
    if s.len() > MAX_KAFKA_NAME_LEN {
        return Err(TopicNameError::TooLong);
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(TopicNameError::IllegalCharacter(s.to_string()));
    }
    Ok(())
}

impl TopicName {
    /// Parses what a Kafka client sent as a topic name.
    pub fn parse(kafka_name: &str, default_tenant: &str, default_namespace: &str) -> Result<Self, TopicNameError> {
        let rest = kafka_name.strip_prefix("persistent://");
        if rest.is_none() && !kafka_name.contains('/') {
            check_segment(kafka_name)?;
            return Ok(TopicName {
                tenant: default_tenant.to_string(),
                namespace: default_namespace.to_string(),
                local: kafka_name.to_string(),
            });
        }
        let path = rest.unwrap_or(kafka_name);
        let parts: Vec<&str> = path.split('/').collect();
        let [tenant, namespace, local] = parts.as_slice() else {
            return Err(TopicNameError::BadPulsarName(kafka_name.to_string()));
        };
        for s in [tenant, namespace, local] {
            check_segment(s).map_err(|_| TopicNameError::BadPulsarName(kafka_name.to_string()))?;
        }
        Ok(TopicName { tenant: tenant.to_string(), namespace: namespace.to_string(), local: local.to_string() })
    }

    /// The name Kafka clients see when listing: short in the default namespace, full elsewhere.
    pub fn kafka_name(&self, default_tenant: &str, default_namespace: &str) -> String {
        if self.tenant == default_tenant && self.namespace == default_namespace {
            self.local.clone()
        } else {
            self.to_string()
        }
    }

    /// Pulsar's name of one partition.
    pub fn partition(&self, index: i32) -> String {
        format!("{self}-partition-{index}")
    }

    /// `tenant/namespace/persistent/topic`, the tail of Pulsar's metadata paths.
    pub fn metadata_path(&self) -> String {
        format!("{}/{}/persistent/{}", self.tenant, self.namespace, self.local)
    }

    pub fn from_metadata_path(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [tenant, namespace, "persistent", local] => Some(TopicName {
                tenant: tenant.to_string(),
                namespace: namespace.to_string(),
                local: local.to_string(),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "persistent://{}/{}/{}", self.tenant, self.namespace, self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_names() {
        let t = TopicName::parse("orders", "public", "default").unwrap();
        assert_eq!(t.to_string(), "persistent://public/default/orders");
        assert_eq!(t.partition(3), "persistent://public/default/orders-partition-3");
        assert_eq!(t.kafka_name("public", "default"), "orders");
        let full = TopicName::parse("persistent://acme/prod/orders", "public", "default").unwrap();
        assert_eq!(full, TopicName::parse("acme/prod/orders", "public", "default").unwrap());
        assert_eq!(full.kafka_name("public", "default"), "persistent://acme/prod/orders");
        assert_eq!(TopicName::from_metadata_path(&full.metadata_path()), Some(full));
    }

    #[test]
    fn invalid_names() {
        assert_eq!(TopicName::parse("", "p", "d"), Err(TopicNameError::Empty));
        assert_eq!(TopicName::parse("..", "p", "d"), Err(TopicNameError::Dots));
        assert!(matches!(TopicName::parse("a b", "p", "d"), Err(TopicNameError::IllegalCharacter(_))));
        assert_eq!(TopicName::parse(&"x".repeat(250), "p", "d"), Err(TopicNameError::TooLong));
        assert!(TopicName::parse("a/b", "p", "d").is_err());
        assert!(TopicName::parse("persistent://a//t", "p", "d").is_err());
        assert!(TopicName::parse("persistent://a/b/c/d", "p", "d").is_err());
    }
}
