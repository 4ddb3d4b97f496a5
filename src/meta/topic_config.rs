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
            let kind = if def.ty == ConfigType::Int { "INT" } else { "LONG" };
            let v: i64 = value.trim().parse().map_err(|_| format!("{}: Not a number of type {kind}", invalid()))?;
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

/// One change of an IncrementalAlterConfigs (or a legacy AlterConfigs, which is a set of
/// `Set`s replacing every override).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    /// Back to the broker default.
    Delete(String),
    /// List configs: items added (those not there yet), in order.
    Append(String, String),
    /// List configs: items removed.
    Subtract(String, String),
}

impl ConfigChange {
    fn name(&self) -> &str {
        match self {
            ConfigChange::Set(n, _)
            | ConfigChange::Delete(n)
            | ConfigChange::Append(n, _)
            | ConfigChange::Subtract(n, _) => n,
        }
    }
}

/// A topic's overrides after `changes` (`replace`: a legacy AlterConfigs, whose sets are the
/// whole new override set). Errors are Kafka's INVALID_CONFIG messages.
pub fn apply_changes(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
    defaults: &TopicDefaults,
) -> Result<BTreeMap<String, String>, String> {
    let mut next = if replace { BTreeMap::new() } else { current.clone() };
    for c in changes {
        let name = c.name();
        let list = |op: &str| -> Result<(&'static TopicConfigDef, Vec<String>), String> {
            let def = lookup(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
            if def.ty != ConfigType::List {
                return Err(format!("Can't {op} to key {name} because its type is not LIST."));
            }
            let now = next.get(name).cloned().unwrap_or_else(|| default_value(def, defaults));
            Ok((def, now.split(',').map(str::trim).filter(|i| !i.is_empty()).map(String::from).collect()))
        };
        match c {
            ConfigChange::Set(_, v) => {
                next.insert(name.to_string(), v.clone());
            }
            ConfigChange::Delete(_) => {
                next.remove(name);
            }
            ConfigChange::Append(_, v) => {
                let (_, mut items) = list("APPEND")?;
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                next.insert(name.to_string(), items.join(","));
            }
            ConfigChange::Subtract(_, v) => {
                let (_, mut items) = list("SUBTRACT")?;
                let gone: Vec<&str> = v.split(',').map(str::trim).collect();
                items.retain(|i| !gone.contains(&i.as_str()));
                next.insert(name.to_string(), items.join(","));
            }
        }
    }
    validate_all(&next)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        TopicDefaults {
            retention_ms: 604_800_000,
            retention_bytes: -1,
            cleanup_policy: "delete".into(),
            max_message_bytes: 1_048_588,
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            message_timestamp_type: "CreateTime".into(),
            keep_unconsumed: false,
        }
    }

    #[test]
    fn changes_apply_as_kafka_applies_them() {
        let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
        let current = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let d = defaults();
        let next = apply_changes(&current, &[set("segment.ms", "60000")], false, &d).unwrap();
        assert_eq!(next.len(), 2);
        let next = apply_changes(&current, &[ConfigChange::Delete("retention.ms".into())], false, &d).unwrap();
        assert!(next.is_empty());
        // Deleting what is not overridden is no change; a legacy alter replaces everything.
        assert_eq!(apply_changes(&current, &[ConfigChange::Delete("segment.ms".into())], false, &d).unwrap(), current);
        let next = apply_changes(&current, &[set("segment.ms", "60000")], true, &d).unwrap();
        assert_eq!(next.keys().collect::<Vec<_>>(), ["segment.ms"]);
        // Lists start from the effective value (the default, if not overridden).
        let next =
            apply_changes(&current, &[ConfigChange::Append("cleanup.policy".into(), "compact".into())], false, &d)
                .unwrap();
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = apply_changes(&next, &[ConfigChange::Subtract("cleanup.policy".into(), "delete".into())], false, &d)
            .unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
        let e = apply_changes(&current, &[ConfigChange::Append("retention.ms".into(), "5".into())], false, &d);
        assert_eq!(e.unwrap_err(), "Can't APPEND to key retention.ms because its type is not LIST.");
        assert!(
            apply_changes(&current, &[set("retention.ms", "-5")], false, &d)
                .unwrap_err()
                .starts_with("Invalid value -5")
        );
        assert!(
            apply_changes(&current, &[set("no.such", "1")], false, &d).unwrap_err().contains("Unknown topic config")
        );
    }

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
