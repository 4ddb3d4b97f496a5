//! Normalisation, in one place: how answers are printed so that equal behaviour prints equal.
//!
//! Left out on purpose, because they legitimately differ between two clusters:
//! - node/broker ids: Kafka's node is 1, kopd's single core is broker 0 -> `Side::node` prints
//!   the broker's own id as "self";
//! - hosts and ports (different listeners), cluster ids (random per cluster);
//! - topic ids (random per topic): printed only as "id" (non-zero) or "zero";
//! - throttle_time_ms (quota bookkeeping, no quotas configured on either broker);
//! - error_message strings (free text; the error code is what clients act on);
//! - log_append_time (only meaningful with LogAppendTime topics; printed as set/-1);
//! - producer ids (allocated per cluster): printed as "pid" (>= 0) or the negative value.

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::peers::Reply;

/// An error code with its name.
pub fn e(code: i16) -> String {
    if code == 0 {
        return "0".into();
    }
    match ResponseError::try_from_code(code) {
        Some(r) => format!("{code} {r:?}"),
        None => format!("{code}"),
    }
}

/// A reply: the formatted response, or what happened to the connection.
pub fn reply<R>(r: &Reply<R>, f: impl FnOnce(&R) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => e.clone(),
    }
}

pub fn id_set(u: uuid::Uuid) -> &'static str {
    if u.is_nil() { "zero" } else { "id" }
}

pub fn pid(p: i64) -> String {
    if p >= 0 { "pid".into() } else { p.to_string() }
}

pub fn s(x: &StrBytes) -> String {
    x.as_str().to_string()
}

/// An authorized-operations bit set, with the AclOperation names of its bits.
pub fn ops(bits: i32) -> String {
    if bits == i32::MIN {
        return "-2147483648 (not requested/omitted)".into();
    }
    const NAMES: [&str; 16] = [
        "UNKNOWN",
        "ANY",
        "ALL",
        "READ",
        "WRITE",
        "CREATE",
        "DELETE",
        "ALTER",
        "DESCRIBE",
        "CLUSTER_ACTION",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE",
        "CREATE_TOKENS",
        "DESCRIBE_TOKENS",
        "TWO_PHASE_COMMIT",
    ];
    let names: Vec<&str> = (0..16).filter(|b| bits & (1 << b) != 0).map(|b| NAMES[b as usize]).collect();
    format!("{bits} ({})", names.join("|"))
}
