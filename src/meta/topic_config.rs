//! Kafka topic configs: which names exist, their types, defaults and valid values.
//!
//! Topics store only their overrides; a describe fills in the broker default for the rest.

use std::collections::BTreeMap;

use crate::config::TopicDefaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

impl ConfigType {
    /// Kafka's DescribeConfigs `config_type` code.
    pub fn kafka_code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

#[derive(Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker key whose value is the default (Kafka's synonym).
    pub broker_key: &'static str,
    pub ty: ConfigType,
    pub doc: &'static str,
    /// Allowed values of an enumerated string config.
    pub allowed: &'static [&'static str],
    /// Smallest accepted integer value.
    pub min: i64,
}

const NO_ENUM: &[&str] = &[];

macro_rules! def {
    ($name:literal, $broker:literal, $ty:ident, $min:expr, $allowed:expr, $doc:literal) => {
        TopicConfigDef {
            name: $name,
            broker_key: $broker,
            ty: ConfigType::$ty,
            doc: $doc,
            allowed: $allowed,
            min: $min,
        }
    };
}

/// The topic configs kopd accepts, in the order describes list them.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def!(
        "cleanup.policy",
        "log.cleanup.policy",
        List,
        0,
        &["delete", "compact"],
        "delete old ledgers, or compact by key"
    ),
    def!(
        "compression.type",
        "compression.type",
        String,
        0,
        &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        "batches are stored as the producer compressed them"
    ),
    def!(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        Long,
        0,
        NO_ENUM,
        "how long delete tombstones are kept on compacted topics"
    ),
    def!("flush.messages", "log.flush.interval.messages", Long, 1, NO_ENUM, "records between forced flushes"),
    def!("flush.ms", "log.flush.interval.ms", Long, 0, NO_ENUM, "time between forced flushes"),
    def!(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        Long,
        1,
        NO_ENUM,
        "longest a record stays uncompacted"
    ),
    def!("max.message.bytes", "message.max.bytes", Int, 0, NO_ENUM, "largest record batch accepted"),
    def!(
        "message.timestamp.type",
        "log.message.timestamp.type",
        String,
        0,
        &["CreateTime", "LogAppendTime"],
        "which timestamp records carry"
    ),
    def!(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        Long,
        0,
        NO_ENUM,
        "shortest time a record stays uncompacted"
    ),
    def!(
        "min.insync.replicas",
        "min.insync.replicas",
        Int,
        1,
        NO_ENUM,
        "accepted for compatibility; durability comes from the ledger store"
    ),
    def!(
        "retention.bytes",
        "log.retention.bytes",
        Long,
        -1,
        NO_ENUM,
        "partition size beyond which whole ledgers are deleted (-1: no limit)"
    ),
    def!(
        "retention.ms",
        "log.retention.ms",
        Long,
        -1,
        NO_ENUM,
        "age beyond which whole ledgers are deleted (-1: no limit)"
    ),
    def!("segment.bytes", "log.segment.bytes", Int, 14, NO_ENUM, "ledger rollover size"),
    def!("segment.ms", "log.roll.ms", Long, 1, NO_ENUM, "ledger rollover age"),
    def!(
        "kopd.retention.keep.unconsumed",
        "log.retention.keep.unconsumed",
        Boolean,
        0,
        NO_ENUM,
        "retention.ms/retention.bytes spare ledgers a consumer group's durable cursor has not consumed (Pulsar's subscription backlog)"
    ),
];

pub fn lookup(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The broker default of a topic config.
pub fn default_value(def: &TopicConfigDef, d: &TopicDefaults) -> String {
    match def.name {
        "cleanup.policy" => d.cleanup_policy.clone(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => "86400000".into(),
        "flush.messages" | "flush.ms" | "max.compaction.lag.ms" => i64::MAX.to_string(),
        "max.message.bytes" => d.max_message_bytes.to_string(),
        "message.timestamp.type" => d.message_timestamp_type.clone(),
        "min.compaction.lag.ms" => "0".into(),
        "min.insync.replicas" => "1".into(),
        "retention.bytes" => d.retention_bytes.to_string(),
        "retention.ms" => d.retention_ms.to_string(),
        "segment.bytes" => d.segment_bytes.to_string(),
        "segment.ms" => d.segment_ms.to_string(),
        "kopd.retention.keep.unconsumed" => d.keep_unconsumed.to_string(),
        _ => String::new(),
    }
}

/// Checks one `name = value` override; the error text is what the client sees.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = lookup(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    let invalid = || format!("Invalid value {value} for configuration {name}");
    match def.ty {
        ConfigType::Int | ConfigType::Long => {
            let v: i64 = value.trim().parse().map_err(|_| invalid())?;
            if v < def.min || (def.ty == ConfigType::Int && v > i32::MAX as i64) {
                return Err(format!("{}: value must be at least {}", invalid(), def.min));
            }
        }
        ConfigType::Boolean if value != "true" && value != "false" => {
            return Err(format!("{}: must be true or false", invalid()));
        }
        ConfigType::String if !def.allowed.is_empty() && !def.allowed.contains(&value) => {
            return Err(format!("{}: must be one of {}", invalid(), def.allowed.join(", ")));
        }
        ConfigType::List => {
            for item in value.split(',').map(str::trim) {
                if !def.allowed.contains(&item) {
                    return Err(format!("{}: each item must be one of {}", invalid(), def.allowed.join(", ")));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Validates every override of a topic.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("max.message.bytes", "99999999999").is_err());
        assert!(validate("kopd.retention.keep.unconsumed", "true").is_ok());
        assert!(validate("kopd.retention.keep.unconsumed", "yes").is_err());
        assert!(validate("no.such.config", "1").unwrap_err().contains("Unknown"));
    }
}
