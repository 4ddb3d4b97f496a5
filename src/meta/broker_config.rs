//! Dynamic broker configs (`kafka-configs.sh --entity-type brokers`): the keys kopd can change
//! while it runs, set for one broker (a core) or for every broker (the cluster default,
//! `--entity-default`), and how the layers stack.
//!
//! They are catalog entity configs (`brokers/<default>`, `brokers/{id}`), committed by the
//! controller like topic changes, so every core of every node gets them with the catalog and
//! they survive restarts. A broker's value of a key is, highest first: its own dynamic value,
//! the cluster default's, the static one (file, environment, flag), kopd's default: the order
//! of Kafka's DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG, STATIC_BROKER_CONFIG and
//! DEFAULT_CONFIG.

use std::collections::BTreeMap;

use super::catalog::Catalog;
use super::topic_config::{self, ConfigChange, ConfigType, TOPIC_CONFIGS, TopicConfigDef};
use crate::config::{Config, KEYS, TopicDefaults};

/// Entity key of the cluster default in the catalog's entity configs.
pub const DEFAULT_ENTITY: &str = "brokers/<default>";

/// The entity key of one broker's dynamic configs.
pub fn entity_key(broker: i32) -> String {
    format!("brokers/{broker}")
}

/// kopd's keys that change at run time beyond the topic defaults.
const TAIL_CACHE_BYTES: &str = "log.tail.cache.bytes";

/// Where a broker's value of a key comes from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    DynamicBroker,
    DynamicDefault,
    Static,
    Default,
}

/// The topic config a dynamic broker key is the default of.
fn topic_default_of(key: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.honoured && d.broker_key == key)
}

/// Whether `key` is one of kopd's settings.
pub fn is_known(key: &str) -> bool {
    KEYS.iter().any(|(k, _, _)| *k == key)
}

/// Whether kopd applies a change of `key` at run time.
pub fn is_dynamic(key: &str) -> bool {
    key == TAIL_CACHE_BYTES || (topic_default_of(key).is_some() && is_known(key))
}

/// Whether a dynamic change of `key` is refused: one of kopd's settings that only a restart
/// changes. A key kopd does not know is stored and listed (with its value hidden), as Kafka
/// stores keys it does not know; it changes nothing.
pub fn is_static(key: &str) -> bool {
    is_known(key) && !is_dynamic(key)
}

/// The Kafka config type of a dynamic key.
pub fn config_type(key: &str) -> Option<ConfigType> {
    match key {
        TAIL_CACHE_BYTES => Some(ConfigType::Long),
        _ => topic_default_of(key).map(|d| d.ty),
    }
}

/// Checks a value for a dynamic key; the message is the client's.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    if !is_known(key) {
        return Ok(());
    }
    if !is_dynamic(key) {
        return Err(format!("Cannot update these configs dynamically: Set({key})"));
    }
    if key == TAIL_CACHE_BYTES {
        return match value.trim().parse::<u64>() {
            Ok(v) if v <= 1 << 40 => Ok(()),
            _ => Err(format!("Invalid value {value} for configuration {key}: must be between 0 and 2^40")),
        };
    }
    let def = topic_default_of(key).ok_or_else(|| format!("Cannot update these configs dynamically: Set({key})"))?;
    // The same rules as the topic config it is the default of, told under the broker's name.
    topic_config::validate(def.name, value)
        .map_err(|m| m.replacen(&format!("configuration {}", def.name), &format!("configuration {key}"), 1))
}

/// A list key's value below the dynamic layers (the static topic defaults).
pub fn static_value(key: &str, defaults: &TopicDefaults) -> String {
    topic_default_of(key).map(|d| topic_config::default_value(d, defaults)).unwrap_or_default()
}

/// One entity's dynamic configs after `changes` (`replace`: a legacy AlterConfigs). List keys
/// start from `base` (the broker's value below this layer). Errors are INVALID_CONFIG texts.
pub fn apply_changes(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
    base: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, String> {
    let next = topic_config::edit(current, changes, replace, |key| {
        config_type(key).map(|ty| (ty, base(key))).ok_or_else(|| format!("Unknown broker config name: {key}"))
    })?;
    next.iter().try_for_each(|(k, v)| validate(k, v))?;
    Ok(next)
}

/// One broker's dynamic layers, read from a catalog.
pub struct DynamicLayers<'a> {
    broker: Option<&'a BTreeMap<String, String>>,
    default: Option<&'a BTreeMap<String, String>>,
}

impl<'a> DynamicLayers<'a> {
    /// Broker `broker`'s layers; `None`: only the cluster default (the `--entity-default`
    /// resource itself).
    pub fn of(catalog: &'a Catalog, broker: Option<i32>) -> Self {
        DynamicLayers {
            broker: broker.and_then(|b| catalog.entity_configs.get(&entity_key(b))),
            default: catalog.entity_configs.get(DEFAULT_ENTITY),
        }
    }

    /// No dynamic layers (what the cluster default stands on).
    pub fn empty() -> Self {
        DynamicLayers { broker: None, default: None }
    }

    /// The highest dynamic value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.broker.and_then(|m| m.get(key)).or_else(|| self.default.and_then(|m| m.get(key))).map(String::as_str)
    }

    /// The cluster default's entries.
    pub fn default_entries(&self) -> impl Iterator<Item = (&'a String, &'a String)> {
        self.default.into_iter().flatten()
    }

    /// Keys kopd does not know, set in these layers: (key, value, the highest layer's source).
    pub fn unknown_entries(&self) -> impl Iterator<Item = (&'a String, &'a String, Layer)> {
        let broker = self.broker.into_iter().flatten().map(|(k, v)| (k, v, Layer::DynamicBroker));
        let default = self
            .default
            .into_iter()
            .flatten()
            .filter(|(k, _)| self.broker.is_none_or(|b| !b.contains_key(*k)))
            .map(|(k, v)| (k, v, Layer::DynamicDefault));
        broker.chain(default).filter(|(k, _, _)| !is_known(k))
    }

    /// Every value of `key`, highest precedence first (Kafka's synonyms of one name). A key
    /// kopd has no setting for gets `fallback` as its default.
    pub fn values(&self, key: &str, config: &Config, fallback: impl FnOnce() -> String) -> Vec<(Layer, String)> {
        let mut out = Vec::new();
        if let Some(v) = self.broker.and_then(|m| m.get(key)) {
            out.push((Layer::DynamicBroker, v.clone()));
        }
        if let Some(v) = self.default.and_then(|m| m.get(key)) {
            out.push((Layer::DynamicDefault, v.clone()));
        }
        match config.settings.iter().find(|s| s.key == key) {
            Some(s) => {
                if s.explicit {
                    out.push((Layer::Static, s.value.clone()));
                }
                let default = KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| d.to_string());
                out.push((Layer::Default, default.unwrap_or_default()));
            }
            None => out.push((Layer::Default, fallback())),
        }
        out
    }

    /// The topic defaults of this broker: the static ones with the dynamic values over them.
    pub fn topic_defaults(&self, base: &TopicDefaults) -> TopicDefaults {
        let mut d = base.clone();
        let int = |key: &str, now: i64| self.get(key).and_then(|v| v.trim().parse().ok()).unwrap_or(now);
        let text = |key: &str, now: &str| self.get(key).unwrap_or(now).to_string();
        d.retention_ms = int("log.retention.ms", d.retention_ms);
        d.retention_bytes = int("log.retention.bytes", d.retention_bytes);
        d.max_message_bytes = int("message.max.bytes", d.max_message_bytes);
        d.segment_bytes = int("log.segment.bytes", d.segment_bytes);
        d.segment_ms = int("log.roll.ms", d.segment_ms);
        d.cleanup_policy = text("log.cleanup.policy", &d.cleanup_policy);
        d.message_timestamp_type = text("log.message.timestamp.type", &d.message_timestamp_type);
        if let Some(v) = self.get("log.retention.keep.unconsumed") {
            d.keep_unconsumed = v == "true";
        }
        d
    }

    /// This broker's tail-cache budget.
    pub fn tail_cache_bytes(&self, base: usize) -> usize {
        self.get(TAIL_CACHE_BYTES).and_then(|v| v.trim().parse().ok()).unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_keys_are_the_topic_defaults_and_the_tail_cache() {
        for key in ["log.retention.ms", "message.max.bytes", "log.cleanup.policy", "log.tail.cache.bytes"] {
            assert!(is_dynamic(key), "{key}");
        }
        for key in ["auto.create.topics.enable", "flush", "num.partitions"] {
            assert!(is_static(key), "{key}");
            assert!(validate(key, "1").unwrap_err().starts_with("Cannot update these configs dynamically"));
        }
        // Keys kopd does not know are kept, as Kafka keeps them.
        for key in ["log.index.size.max.bytes", "no.such.key"] {
            assert!(!is_dynamic(key) && !is_static(key) && validate(key, "x").is_ok(), "{key}");
        }
        assert_eq!(
            validate("log.retention.ms", "soon").unwrap_err(),
            "Invalid value soon for configuration log.retention.ms: Not a number of type LONG"
        );
        assert!(validate("message.max.bytes", "-5").is_err());
        assert!(validate("log.message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("log.tail.cache.bytes", "-1").is_err());
    }

    #[test]
    fn lists_start_from_the_value_below() {
        let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
        let base = |_: &str| "delete".to_string();
        let next = apply_changes(
            &BTreeMap::new(),
            &[ConfigChange::Append("log.cleanup.policy".into(), "compact".into())],
            false,
            base,
        )
        .unwrap();
        assert_eq!(next["log.cleanup.policy"], "delete,compact");
        let e = apply_changes(&next, &[ConfigChange::Append("log.retention.ms".into(), "5".into())], false, base);
        assert!(e.unwrap_err().contains("not LIST"));
        let replaced = apply_changes(&next, &[set("log.retention.ms", "1000")], true, base).unwrap();
        assert_eq!(replaced.keys().collect::<Vec<_>>(), ["log.retention.ms"]);
    }

    #[test]
    fn a_broker_value_beats_the_default_which_beats_the_static_one() {
        let mut catalog = Catalog::default();
        let entry = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        catalog
            .entity_configs
            .insert(DEFAULT_ENTITY.into(), entry(&[("message.max.bytes", "2000"), ("log.retention.ms", "9")]));
        catalog.entity_configs.insert(entity_key(1), entry(&[("message.max.bytes", "3000")]));
        let config = crate::config::ConfigSources::new().resolve(1).unwrap();
        let base = &config.topic_defaults;
        assert_eq!(DynamicLayers::of(&catalog, Some(1)).topic_defaults(base).max_message_bytes, 3000);
        assert_eq!(DynamicLayers::of(&catalog, Some(0)).topic_defaults(base).max_message_bytes, 2000);
        assert_eq!(DynamicLayers::of(&catalog, Some(0)).topic_defaults(base).retention_ms, 9);
        let layers = DynamicLayers::of(&catalog, Some(1)).values("message.max.bytes", &config, String::new);
        let sources: Vec<Layer> = layers.iter().map(|(l, _)| *l).collect();
        assert_eq!(sources, [Layer::DynamicBroker, Layer::DynamicDefault, Layer::Default]);
        assert_eq!(DynamicLayers::of(&catalog, None).get("message.max.bytes"), Some("2000"));
    }
}
