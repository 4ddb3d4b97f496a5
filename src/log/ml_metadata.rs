//! Managed-ledger metadata in Pulsar's layout (MLDataFormats.proto `ManagedLedgerInfo`), kept
//! at `/managed-ledgers/{tenant}/{ns}/persistent/{topic}-partition-{i}` so Pulsar's tools can
//! read which ledgers make up a partition.

use prost::Message;

use crate::meta::topic_name::TopicName;
use crate::storage::LedgerId;

pub const ML_PREFIX: &str = "/managed-ledgers/";
/// Property holding the Kafka log start offset (moved by DeleteRecords and retention).
pub const LOG_START_OFFSET_PROPERTY: &str = "kafka.log.start.offset";

#[derive(Clone, PartialEq, Message)]
pub struct LedgerInfo {
    #[prost(int64, required, tag = "1")]
    pub ledger_id: i64,
    #[prost(int64, optional, tag = "2")]
    pub entries: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    pub size: Option<i64>,
    #[prost(int64, optional, tag = "4")]
    pub timestamp: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ManagedLedgerInfo {
    #[prost(message, repeated, tag = "1")]
    pub ledger_info: Vec<LedgerInfo>,
    #[prost(message, repeated, tag = "3")]
    pub properties: Vec<KeyValue>,
}

impl ManagedLedgerInfo {
    pub fn ledger_ids(&self) -> impl Iterator<Item = LedgerId> + '_ {
        self.ledger_info.iter().map(|l| l.ledger_id as LedgerId)
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().find(|p| p.key == key).map(|p| p.value.as_str())
    }

    pub fn set_property(&mut self, key: &str, value: String) {
        match self.properties.iter_mut().find(|p| p.key == key) {
            Some(p) => p.value = value,
            None => self.properties.push(KeyValue { key: key.to_string(), value }),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(b)
    }
}

/// The metadata path of one partition's managed ledger.
pub fn ml_path(topic: &TopicName, partition: i32) -> String {
    format!("{ML_PREFIX}{}/{}/persistent/{}-partition-{partition}", topic.tenant, topic.namespace, topic.local)
}

/// Parses a managed-ledger path back into (topic, partition).
pub fn parse_ml_path(path: &str) -> Option<(TopicName, i32)> {
    let rest = path.strip_prefix(ML_PREFIX)?;
    let (tenant, rest) = rest.split_once('/')?;
    let (namespace, rest) = rest.split_once('/')?;
    let local_part = rest.strip_prefix("persistent/")?;
    // Deeper paths are a managed ledger's cursors (Pulsar keeps them as children).
    if local_part.contains('/') {
        return None;
    }
    let (local, partition) = local_part.rsplit_once("-partition-")?;
    Some((
        TopicName { tenant: tenant.into(), namespace: namespace.into(), local: local.into() },
        partition.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let t = TopicName { tenant: "public".into(), namespace: "default".into(), local: "a-partition-b".into() };
        let p = ml_path(&t, 3);
        assert_eq!(p, "/managed-ledgers/public/default/persistent/a-partition-b-partition-3");
        assert_eq!(parse_ml_path(&p), Some((t, 3)));
        assert_eq!(parse_ml_path(&format!("{p}/my-group-partition-1")), None, "a cursor is not a ledger");
    }

    #[test]
    fn info_round_trips() {
        let mut info = ManagedLedgerInfo::default();
        info.ledger_info.push(LedgerInfo { ledger_id: 5, entries: Some(10), size: Some(100), timestamp: None });
        info.set_property(LOG_START_OFFSET_PROPERTY, "7".into());
        let back = ManagedLedgerInfo::from_bytes(&info.to_bytes()).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.property(LOG_START_OFFSET_PROPERTY), Some("7"));
    }
}
