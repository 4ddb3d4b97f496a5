//! Client quotas (DescribeClientQuotas / AlterClientQuotas, `kafka-configs.sh --entity-type
//! users|clients|ips`): which entities exist, which quota keys each takes, how filters match,
//! following Kafka's rules. The quotas are stored as entity configs in the catalog (see
//! [`super::catalog`]); enforcing them comes with the security work.
//!
//! An entity is a set of (type, name) pairs, a `None` name being the type's default entity
//! (`--entity-default`). Valid entities: a user, a client id, a user with a client id, or an IP.

use std::collections::BTreeMap;

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// The catalog key prefix of quota entities.
pub const PATH: &str = "quotas/";

/// A quota entity, sorted by type (so equal entities compare equal).
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// One entity's alteration: its ops, (key, `None` to remove it or the new value).
pub type QuotaAlteration = (QuotaEntity, Vec<(String, Option<f64>)>);

/// Kafka's INVALID_REQUEST or UNSUPPORTED_VERSION, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    InvalidRequest(String),
    UnsupportedVersion(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Long,
    Int,
    Double,
}

/// The keys a user or client-id entity takes.
const USER_CLIENT_KEYS: &[(&str, KeyType)] = &[
    ("producer_byte_rate", KeyType::Long),
    ("consumer_byte_rate", KeyType::Long),
    ("request_percentage", KeyType::Double),
    ("controller_mutation_rate", KeyType::Double),
];
const IP_KEYS: &[(&str, KeyType)] = &[("connection_creation_rate", KeyType::Int)];

fn invalid(m: impl Into<String>) -> QuotaError {
    QuotaError::InvalidRequest(m.into())
}

/// The entity of a request's (type, name) list, as Kafka reads it (a type named twice keeps
/// its last name).
pub fn entity_of(pairs: impl IntoIterator<Item = (String, Option<String>)>) -> QuotaEntity {
    let map: BTreeMap<String, Option<String>> = pairs.into_iter().collect();
    map.into_iter().collect()
}

fn name_of<'a>(entity: &'a QuotaEntity, ty: &str) -> Option<&'a Option<String>> {
    entity.iter().find(|(t, _)| t == ty).map(|(_, n)| n)
}

/// The quota keys `entity` takes, or why it is not a valid entity.
fn keys_for(entity: &QuotaEntity) -> Result<&'static [(&'static str, KeyType)], QuotaError> {
    if entity.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    for (ty, name) in entity {
        if ![USER, CLIENT_ID, IP].contains(&ty.as_str()) {
            return Err(invalid(format!("Unhandled client quota entity type: {ty}")));
        }
        if name.as_deref() == Some("") {
            return Err(invalid(format!("Empty {ty} not supported")));
        }
    }
    match name_of(entity, IP) {
        Some(_) if entity.len() > 1 => {
            Err(invalid("Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId"))
        }
        Some(Some(ip)) if ip.parse::<std::net::IpAddr>().is_err() => {
            Err(invalid(format!("{ip} is not a valid IP or resolvable host.")))
        }
        Some(_) => Ok(IP_KEYS),
        None => Ok(USER_CLIENT_KEYS),
    }
}

fn check_value(keys: &[(&str, KeyType)], key: &str, value: f64) -> Result<(), QuotaError> {
    let ty = keys
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, t)| *t)
        .ok_or_else(|| invalid(format!("Invalid configuration key {key}")))?;
    if value.is_nan() || value <= 0.0 {
        return Err(invalid(format!("Quota {key} must be greater than 0")));
    }
    let integral = |max: f64, name: &str| {
        if value > max {
            Err(invalid(format!("Proposed value for {key} is too large for {name}.")))
        } else if (value % 1.0).abs() > 1e-6 {
            Err(invalid(format!("{key} cannot be a fractional value.")))
        } else {
            Ok(())
        }
    };
    match ty {
        KeyType::Double => Ok(()),
        KeyType::Int => integral(i32::MAX as f64, "an INT"),
        KeyType::Long => integral(i64::MAX as f64, "a LONG"),
    }
}

/// Applies one entity's ops (`None`: remove the key) to its current quotas; the quotas it
/// has after, or why the alteration is refused (then nothing of it applies).
pub fn alter(
    entity: &QuotaEntity,
    current: &BTreeMap<String, f64>,
    ops: &[(String, Option<f64>)],
) -> Result<BTreeMap<String, f64>, QuotaError> {
    let mut seen = std::collections::HashSet::new();
    if ops.iter().any(|(k, _)| !seen.insert(k.as_str())) {
        // Kafka reports a key named twice as the entity named twice.
        return Err(invalid(format!("Ignoring duplicate entity {}", describe(entity))));
    }
    let keys = keys_for(entity)?;
    let mut next = current.clone();
    for (key, value) in ops {
        match value {
            None => {
                next.remove(key);
            }
            Some(v) => {
                check_value(keys, key, *v)?;
                next.insert(key.clone(), *v);
            }
        }
    }
    Ok(next)
}

fn describe(entity: &QuotaEntity) -> String {
    let parts: Vec<String> =
        entity.iter().map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>"))).collect();
    format!("ClientQuotaEntity(entries={{{}}})", parts.join(", "))
}

/// How a describe filter component matches an entity's name for its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// This name (`None`: the default entity).
    Exact(Option<String>),
    /// Any entity of the type.
    Any,
}

/// A DescribeClientQuotas filter checked as Kafka checks it: (type, match) per component.
pub fn check_filter(components: &[(String, Match)]) -> Result<(), QuotaError> {
    let mut seen = std::collections::HashSet::new();
    for (ty, _) in components {
        if ty.is_empty() {
            return Err(invalid("Invalid empty entity type."));
        }
        if !seen.insert(ty.as_str()) {
            return Err(invalid(format!("Entity type {ty} cannot appear more than once in the filter.")));
        }
        if ![USER, CLIENT_ID, IP].contains(&ty.as_str()) {
            return Err(QuotaError::UnsupportedVersion(format!("Unsupported entity type {ty}")));
        }
    }
    if seen.contains(IP) && (seen.contains(USER) || seen.contains(CLIENT_ID)) {
        return Err(invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or \
             clientId filter component.",
        ));
    }
    Ok(())
}

/// Whether `entity` passes a checked filter; `strict`: it has no types besides the filter's.
pub fn matches(entity: &QuotaEntity, components: &[(String, Match)], strict: bool) -> bool {
    if strict && entity.len() != components.len() {
        return false;
    }
    components.iter().all(|(ty, m)| match (name_of(entity, ty), m) {
        (None, _) => false,
        (Some(_), Match::Any) => true,
        (Some(name), Match::Exact(want)) => name == want,
    })
}

/// A name in a catalog key: every byte outside [A-Za-z0-9._-] percent-encoded; the default
/// entity is `<default>` (which no encoded name can be).
fn encode(name: &Option<String>) -> String {
    let Some(n) = name else { return "<default>".into() };
    let mut out = String::with_capacity(n.len());
    for b in n.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<Option<String>> {
    if s == "<default>" {
        return Some(None);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Some)
}

/// The catalog key of an entity's quotas: `quotas/user=<name>,client-id=<name>`.
pub fn key_of(entity: &QuotaEntity) -> String {
    let parts: Vec<String> = entity.iter().map(|(t, n)| format!("{t}={}", encode(n))).collect();
    format!("{PATH}{}", parts.join(","))
}

/// The entity a catalog key names, if it is a quota key.
pub fn entity_of_key(key: &str) -> Option<QuotaEntity> {
    let rest = key.strip_prefix(PATH)?;
    rest.split(',')
        .map(|part| {
            let (t, n) = part.split_once('=')?;
            Some((t.to_string(), decode(n)?))
        })
        .collect()
}

/// Quotas as entity configs store them (strings) and back.
pub fn to_config(quotas: &BTreeMap<String, f64>) -> BTreeMap<String, String> {
    quotas.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

pub fn from_config(config: &BTreeMap<String, String>) -> BTreeMap<String, f64> {
    config.iter().filter_map(|(k, v)| v.parse().ok().map(|v| (k.clone(), v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pairs: &[(&str, Option<&str>)]) -> QuotaEntity {
        entity_of(pairs.iter().map(|(t, n)| (t.to_string(), n.map(String::from))))
    }

    #[test]
    fn entities_and_values_are_checked_as_kafka_checks_them() {
        let none = BTreeMap::new();
        let set = |k: &str, v: f64| vec![(k.to_string(), Some(v))];
        let ok = |r: Result<BTreeMap<String, f64>, QuotaError>| r.is_ok();
        assert!(ok(alter(&e(&[(USER, Some("alice"))]), &none, &set("producer_byte_rate", 1024.0))));
        assert!(ok(alter(&e(&[(USER, None), (CLIENT_ID, Some("c"))]), &none, &set("request_percentage", 0.5))));
        assert!(ok(alter(&e(&[(IP, Some("127.0.0.1"))]), &none, &set("connection_creation_rate", 10.0))));
        let refused = |entity: QuotaEntity, ops: Vec<(String, Option<f64>)>| alter(&entity, &none, &ops).unwrap_err();
        assert_eq!(refused(e(&[]), set("producer_byte_rate", 1.0)), invalid("Invalid empty client quota entity"));
        assert!(
            matches!(refused(e(&[("group", Some("g"))]), set("producer_byte_rate", 1.0)), QuotaError::InvalidRequest(m) if m.contains("Unhandled"))
        );
        assert!(
            matches!(refused(e(&[(USER, Some(""))]), set("producer_byte_rate", 1.0)), QuotaError::InvalidRequest(m) if m == "Empty user not supported")
        );
        assert!(
            matches!(refused(e(&[(IP, Some("1.2.3.4")), (USER, Some("u"))]), set("connection_creation_rate", 1.0)), QuotaError::InvalidRequest(m) if m.contains("combination"))
        );
        assert!(
            matches!(refused(e(&[(IP, Some("not an ip"))]), set("connection_creation_rate", 1.0)), QuotaError::InvalidRequest(m) if m.contains("not a valid IP"))
        );
        assert!(
            matches!(refused(e(&[(USER, Some("u"))]), set("connection_creation_rate", 1.0)), QuotaError::InvalidRequest(m) if m.contains("Invalid configuration key"))
        );
        assert!(
            matches!(refused(e(&[(USER, Some("u"))]), set("producer_byte_rate", 0.0)), QuotaError::InvalidRequest(m) if m.contains("greater than 0"))
        );
        assert!(
            matches!(refused(e(&[(USER, Some("u"))]), set("producer_byte_rate", 1.5)), QuotaError::InvalidRequest(m) if m.contains("fractional"))
        );
        let twice = vec![("producer_byte_rate".to_string(), Some(1.0)), ("producer_byte_rate".to_string(), None)];
        assert!(
            matches!(refused(e(&[(USER, Some("u"))]), twice), QuotaError::InvalidRequest(m) if m.contains("duplicate"))
        );
        // Removing a key the entity does not have is no error.
        let current: BTreeMap<String, f64> = [("consumer_byte_rate".to_string(), 5.0)].into();
        let r = alter(&e(&[(USER, Some("u"))]), &current, &[("producer_byte_rate".into(), None)]);
        assert_eq!(r, Ok(current));
    }

    #[test]
    fn keys_round_trip_any_name() {
        for entity in [
            e(&[(USER, Some("alice"))]),
            e(&[(USER, None), (CLIENT_ID, Some("a,b=c/%<default>"))]),
            e(&[(IP, None)]),
            e(&[(CLIENT_ID, Some("ünï"))]),
        ] {
            let key = key_of(&entity);
            assert!(!key[PATH.len()..].contains('/'), "{key}");
            assert_eq!(entity_of_key(&key), Some(entity), "{key}");
        }
    }

    #[test]
    fn filters_match_as_kafka_matches_them() {
        let alice = e(&[(USER, Some("alice"))]);
        let alice_c = e(&[(USER, Some("alice")), (CLIENT_ID, Some("c"))]);
        let default_user = e(&[(USER, None)]);
        let f = |c: &[(&str, Match)]| c.iter().map(|(t, m)| (t.to_string(), m.clone())).collect::<Vec<_>>();
        let exact = |n: &str| Match::Exact(Some(n.into()));
        assert!(matches(&alice, &f(&[(USER, exact("alice"))]), true));
        assert!(matches(&alice_c, &f(&[(USER, exact("alice"))]), false));
        assert!(!matches(&alice_c, &f(&[(USER, exact("alice"))]), true));
        assert!(matches(&default_user, &f(&[(USER, Match::Exact(None))]), true));
        assert!(!matches(&alice, &f(&[(USER, Match::Exact(None))]), false));
        assert!(matches(&default_user, &f(&[(USER, Match::Any)]), false));
        assert!(matches(&alice_c, &f(&[]), false));
        assert!(!matches(&alice_c, &f(&[]), true));
        assert!(check_filter(&f(&[(USER, Match::Any), (USER, Match::Any)])).is_err());
        assert!(matches!(check_filter(&f(&[("group", Match::Any)])), Err(QuotaError::UnsupportedVersion(_))));
        assert!(check_filter(&f(&[(IP, Match::Any), (CLIENT_ID, Match::Any)])).is_err());
    }
}
