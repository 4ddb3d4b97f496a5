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
    /// Whether kopd acts on the config. Kafka configs it does not act on (replication
    /// throttles, remote storage, index tuning...) are still accepted when a topic is created,
    /// so applications that set them work, and listed read-only; a change is refused.
    pub honoured: bool,
    /// Kafka's default, for configs whose default is not a kopd setting.
    pub kafka_default: &'static str,
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
            honoured: true,
            kafka_default: "",
        }
    };
}

/// A Kafka topic config kopd accepts and lists but does not act on: (name, broker synonym or
/// "", type, smallest value, Kafka's default).
macro_rules! not_acted_on {
    ($name:literal, $broker:literal, $ty:ident, $min:expr, $default:literal) => {
        TopicConfigDef {
            name: $name,
            broker_key: $broker,
            ty: ConfigType::$ty,
            doc: concat!("Kafka's ", $name, "; kopd does not act on it, so it is read-only here"),
            allowed: NO_ENUM,
            min: $min,
            honoured: false,
            kafka_default: $default,
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
    not_acted_on!("compression.gzip.level", "compression.gzip.level", Int, -1, "-1"),
    not_acted_on!("compression.lz4.level", "compression.lz4.level", Int, 1, "9"),
    def!(
        "compression.type",
        "compression.type",
        String,
        0,
        &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        "batches are stored as the producer compressed them"
    ),
    not_acted_on!("compression.zstd.level", "compression.zstd.level", Int, -131072, "3"),
    def!(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        Long,
        0,
        NO_ENUM,
        "how long delete tombstones are kept on compacted topics"
    ),
    not_acted_on!("errors.deadletterqueue.group.enable", "errors.deadletterqueue.group.enable", Boolean, 0, "false"),
    not_acted_on!("file.delete.delay.ms", "log.segment.delete.delay.ms", Long, 0, "60000"),
    def!("flush.messages", "log.flush.interval.messages", Long, 1, NO_ENUM, "records between forced flushes"),
    def!("flush.ms", "log.flush.interval.ms", Long, 0, NO_ENUM, "time between forced flushes"),
    not_acted_on!("follower.replication.throttled.replicas", "", List, 0, ""),
    not_acted_on!("index.interval.bytes", "log.index.interval.bytes", Int, 0, "4096"),
    not_acted_on!("leader.replication.throttled.replicas", "", List, 0, ""),
    not_acted_on!("local.retention.bytes", "log.local.retention.bytes", Long, -2, "-2"),
    not_acted_on!("local.retention.ms", "log.local.retention.ms", Long, -2, "-2"),
    def!(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        Long,
        1,
        NO_ENUM,
        "longest a record stays uncompacted"
    ),
    not_acted_on!("max.decompressed.message.bytes", "", Int, 0, "2147483639"),
    def!("max.message.bytes", "message.max.bytes", Int, 0, NO_ENUM, "largest record batch accepted"),
    not_acted_on!("message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms", Long, 0, "3600000"),
    not_acted_on!(
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        Long,
        0,
        "9223372036854775807"
    ),
    def!(
        "message.timestamp.type",
        "log.message.timestamp.type",
        String,
        0,
        &["CreateTime", "LogAppendTime"],
        "which timestamp records carry"
    ),
    not_acted_on!("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", Double, 0, "0.5"),
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
    not_acted_on!("preallocate", "log.preallocate", Boolean, 0, "false"),
    not_acted_on!("remote.copy.lag.bytes", "", Long, -1, "-1"),
    not_acted_on!("remote.copy.lag.ms", "", Long, 0, "0"),
    not_acted_on!("remote.log.copy.disable", "", Boolean, 0, "false"),
    not_acted_on!("remote.log.delete.on.disable", "", Boolean, 0, "false"),
    not_acted_on!("remote.storage.enable", "", Boolean, 0, "false"),
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
    not_acted_on!("segment.index.bytes", "log.index.size.max.bytes", Int, 4, "10485760"),
    not_acted_on!("segment.jitter.ms", "log.roll.jitter.ms", Long, 0, "0"),
    def!("segment.ms", "log.roll.ms", Long, 1, NO_ENUM, "ledger rollover age"),
    not_acted_on!("unclean.leader.election.enable", "unclean.leader.election.enable", Boolean, 0, "false"),
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
        _ => def.kafka_default.to_string(),
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
        ConfigType::Double => {
            let v: f64 = value.trim().parse().map_err(|_| format!("{}: Not a number of type DOUBLE", invalid()))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{}: value must be between 0 and 1", invalid()));
            }
        }
        ConfigType::List if def.allowed.is_empty() => {}
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

/// A set of config overrides after `changes` (`replace`: the sets are the whole new set),
/// unvalidated. `def_of(name)` gives a list config's type and its value when not overridden
/// (APPEND and SUBTRACT start from it), or the error for an unknown name.
pub fn edit(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
    def_of: impl Fn(&str) -> Result<(ConfigType, String), String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut next = if replace { BTreeMap::new() } else { current.clone() };
    for c in changes {
        let name = c.name();
        let list = |op: &str| -> Result<Vec<String>, String> {
            let (ty, default) = def_of(name)?;
            if ty != ConfigType::List {
                return Err(format!("Can't {op} to key {name} because its type is not LIST."));
            }
            let now = next.get(name).cloned().unwrap_or(default);
            Ok(now.split(',').map(str::trim).filter(|i| !i.is_empty()).map(String::from).collect())
        };
        match c {
            ConfigChange::Set(_, v) => {
                next.insert(name.to_string(), v.clone());
            }
            ConfigChange::Delete(_) => {
                next.remove(name);
            }
            ConfigChange::Append(_, v) => {
                let mut items = list("APPEND")?;
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                next.insert(name.to_string(), items.join(","));
            }
            ConfigChange::Subtract(_, v) => {
                let mut items = list("SUBTRACT")?;
                let gone: Vec<&str> = v.split(',').map(str::trim).collect();
                items.retain(|i| !gone.contains(&i.as_str()));
                next.insert(name.to_string(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// A topic's overrides after `changes` (`replace`: a legacy AlterConfigs, whose sets are the
/// whole new override set). Errors are Kafka's INVALID_CONFIG messages.
pub fn apply_changes(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
    defaults: &TopicDefaults,
) -> Result<BTreeMap<String, String>, String> {
    let next = edit(current, changes, replace, |name| {
        lookup(name)
            .map(|d| (d.ty, default_value(d, defaults)))
            .ok_or_else(|| format!("Unknown topic config name: {name}"))
    })?;
    validate_all(&next)?;
    // A legacy replace may drop an override without naming it: every key is compared.
    for name in current.keys().chain(next.keys()) {
        if lookup(name).is_some_and(|d| !d.honoured) && next.get(name) != current.get(name) {
            return Err(format!("Cannot change {name}: kopd does not act on it, so it is read-only here"));
        }
    }
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
    fn configs_kopd_does_not_act_on_are_taken_at_creation_but_not_changed() {
        let mut created = BTreeMap::new();
        created.insert("unclean.leader.election.enable".to_string(), "false".to_string());
        created.insert("min.cleanable.dirty.ratio".to_string(), "0.3".to_string());
        assert!(validate_all(&created).is_ok(), "a topic may be created with them");
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err(), "still validated");
        assert!(validate("leader.replication.throttled.replicas", "0:1,1:2").is_ok());
        let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
        let same = apply_changes(&created, &[set("unclean.leader.election.enable", "false")], false, &defaults());
        assert_eq!(same.as_ref(), Ok(&created), "setting the value it has is no change");
        for change in [
            set("unclean.leader.election.enable", "true"),
            ConfigChange::Delete("min.cleanable.dirty.ratio".into()),
            set("remote.storage.enable", "true"),
        ] {
            let r = apply_changes(&created, std::slice::from_ref(&change), false, &defaults());
            assert!(r.as_ref().is_err_and(|e| e.contains("read-only")), "{change:?}: {r:?}");
        }
        // A legacy replace that leaves one out drops it: a change too.
        let r = apply_changes(&created, &[set("retention.ms", "1000")], true, &defaults());
        assert!(r.is_err(), "{r:?}");
        assert!(lookup("segment.index.bytes").is_some_and(|d| !d.honoured && d.kafka_default == "10485760"));
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
