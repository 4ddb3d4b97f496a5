//! Durable cursors (Pulsar subscriptions) on a managed ledger.
//!
//! A cursor's mark-delete position is the last entry it has consumed entirely: every entry up
//! to and including it may go, nothing after it. kopd keeps one per consumer group per
//! partition, mirrored from the group's committed Kafka offset. The cursor node is Pulsar's
//! `ManagedCursorInfo` (MLDataFormats.proto) with the position inline (`cursorsLedgerId = -1`),
//! stored as a child of the managed ledger's path, as Pulsar's managed-ledger store keeps it.
//! The committed offset rides along as a long property, because a Kafka offset can point into
//! the middle of an entry (a batch) while a position names whole entries.

use prost::Message;

use super::managed_ledger::ManagedLedger;
use super::offset_index::OffsetIndex;
use crate::meta::store::StoreOp;
use crate::storage::LedgerId;

/// The long property holding the Kafka offset the position was derived from.
pub const KAFKA_OFFSET_PROPERTY: &str = "kafka.committed.offset";

#[derive(Clone, PartialEq, Message)]
pub struct LongProperty {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(int64, required, tag = "2")]
    pub value: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ManagedCursorInfo {
    /// -1: the position is the inline snapshot below (no cursor ledger).
    #[prost(int64, required, tag = "1")]
    pub cursors_ledger_id: i64,
    #[prost(int64, optional, tag = "2")]
    pub mark_delete_ledger_id: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    pub mark_delete_entry_id: Option<i64>,
    #[prost(message, repeated, tag = "5")]
    pub properties: Vec<LongProperty>,
    #[prost(int64, optional, tag = "6")]
    pub last_active: Option<i64>,
}

/// A position in a managed ledger: (ledger id, entry id). Entry -1 is "before the ledger's
/// first entry", as in Pulsar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub ledger: i64,
    pub entry: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ledger, self.entry)
    }
}

/// One durable cursor of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The subscription name: the consumer group id.
    pub name: String,
    pub mark_delete: Position,
    /// The committed Kafka offset: the next offset the group will read.
    pub offset: i64,
    /// When the group last committed (ms since the epoch).
    pub last_active: i64,
}

impl Cursor {
    pub fn to_bytes(&self) -> Vec<u8> {
        ManagedCursorInfo {
            cursors_ledger_id: -1,
            mark_delete_ledger_id: Some(self.mark_delete.ledger),
            mark_delete_entry_id: Some(self.mark_delete.entry),
            properties: vec![LongProperty { name: KAFKA_OFFSET_PROPERTY.into(), value: self.offset }],
            last_active: Some(self.last_active),
        }
        .encode_to_vec()
    }

    pub fn from_bytes(name: String, b: &[u8]) -> Result<Self, prost::DecodeError> {
        let info = ManagedCursorInfo::decode(b)?;
        let mark_delete = Position {
            ledger: info.mark_delete_ledger_id.unwrap_or(-1),
            entry: info.mark_delete_entry_id.unwrap_or(-1),
        };
        let offset = info.properties.iter().find(|p| p.name == KAFKA_OFFSET_PROPERTY).map_or(0, |p| p.value);
        Ok(Cursor { name, mark_delete, offset, last_active: info.last_active.unwrap_or(0) })
    }
}

/// The mark-delete position for a committed offset: the entry before the one holding
/// `offset` (that entry is not consumed entirely), the last entry when `offset` is at or past
/// the end, and "before the first entry" of the first (or `current`) ledger when nothing is.
pub fn mark_delete_for(index: &OffsetIndex, offset: i64, current: Option<LedgerId>) -> Position {
    let before = |ledger: LedgerId, entry: u64| Position { ledger: ledger as i64, entry: entry as i64 - 1 };
    match index.position_from(offset) {
        Some(0) => index.first().map_or(Position { ledger: -1, entry: -1 }, |e| before(e.ledger, e.entry)),
        // Across a ledger boundary too: the previous ledger's last entry is the last consumed.
        Some(i) => index.get(i - 1).map_or(Position { ledger: -1, entry: -1 }, |p| Position {
            ledger: p.ledger as i64,
            entry: p.entry as i64,
        }),
        None => match index.last() {
            Some(l) => Position { ledger: l.ledger as i64, entry: l.entry as i64 },
            None => Position { ledger: current.map_or(-1, |c| c as i64), entry: -1 },
        },
    }
}

/// A change to one durable cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorChange {
    /// Create or move the cursor to a committed offset (committed at `at_ms`).
    Set {
        name: String,
        offset: i64,
        at_ms: i64,
    },
    Remove {
        name: String,
    },
}

impl ManagedLedger {
    /// Applies cursor changes in memory and returns the metadata ops that persist them (the
    /// caller batches the ops of many partitions into one metadata commit).
    pub fn cursor_ops(&self, changes: Vec<CursorChange>) -> Vec<StoreOp> {
        let path = self.path();
        let mut cursors = self.cursors.borrow_mut();
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                CursorChange::Set { name, offset, at_ms } => {
                    let mark_delete = self.with_index(|ix, current| mark_delete_for(ix, offset, current));
                    let c = Cursor { name, mark_delete, offset, last_active: at_ms };
                    ops.push(StoreOp::Put { path: cursor_path(&path, &c.name), value: c.to_bytes() });
                    cursors.insert(c.name.clone(), c);
                }
                CursorChange::Remove { name } => {
                    if cursors.remove(&name).is_some() {
                        ops.push(StoreOp::Delete { path: cursor_path(&path, &name) });
                    }
                }
            }
        }
        ops
    }

    /// The partition's durable cursors, by name.
    pub fn cursors(&self) -> Vec<Cursor> {
        self.cursors.borrow().values().cloned().collect()
    }

    /// The position a cursor at `offset` reads next: the entry holding `offset`, else the
    /// position after the last entry.
    pub fn read_position(&self, offset: i64) -> Position {
        self.with_index(|ix, current| match ix.position_from(offset).and_then(|i| ix.get(i)) {
            Some(e) => Position { ledger: e.ledger as i64, entry: e.entry as i64 },
            None => match ix.last() {
                Some(l) if Some(l.ledger) != current => Position { ledger: current.map_or(-1, |c| c as i64), entry: 0 },
                Some(l) => Position { ledger: l.ledger as i64, entry: l.entry as i64 + 1 },
                None => Position { ledger: current.map_or(-1, |c| c as i64), entry: 0 },
            },
        })
    }
}

/// The metadata path of a cursor: a child of its managed ledger's path, the name
/// percent-encoded (group ids may hold `/`).
pub fn cursor_path(ml_path: &str, name: &str) -> String {
    let mut p = String::with_capacity(ml_path.len() + 1 + name.len());
    p.push_str(ml_path);
    p.push('/');
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

/// Splits a cursor path into its managed ledger's path and the cursor name.
pub fn parse_cursor_path(path: &str) -> Option<(&str, String)> {
    let (ml, encoded) = path.rsplit_once('/')?;
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some((ml, String::from_utf8(out).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> OffsetIndex {
        // Ledger 7: entries 0 (offsets 0-4), 1 (5); ledger 9: entries 0 (6-9), 1 (10-19).
        let mut ix = OffsetIndex::default();
        ix.push(0, 4, 7, 0, 0, 10);
        ix.push(5, 5, 7, 1, 0, 10);
        ix.push(6, 9, 9, 0, 0, 10);
        ix.push(10, 19, 9, 1, 0, 10);
        ix
    }

    #[test]
    fn positions_follow_committed_offsets() {
        let ix = index();
        let p = |l, e| Position { ledger: l, entry: e };
        assert_eq!(mark_delete_for(&ix, 0, Some(11)), p(7, -1), "nothing consumed");
        assert_eq!(mark_delete_for(&ix, 3, Some(11)), p(7, -1), "first batch partly consumed");
        assert_eq!(mark_delete_for(&ix, 5, Some(11)), p(7, 0));
        assert_eq!(mark_delete_for(&ix, 6, Some(11)), p(7, 1), "previous ledger's last entry");
        assert_eq!(mark_delete_for(&ix, 12, Some(11)), p(9, 0));
        assert_eq!(mark_delete_for(&ix, 20, Some(11)), p(9, 1), "all consumed");
        assert_eq!(mark_delete_for(&ix, 1_000, Some(11)), p(9, 1));
        assert_eq!(mark_delete_for(&OffsetIndex::default(), 0, Some(11)), p(11, -1));
    }

    #[test]
    fn cursor_nodes_round_trip() {
        let c = Cursor {
            name: "g/1 %x".into(),
            mark_delete: Position { ledger: 3, entry: 41 },
            offset: 420,
            last_active: 9,
        };
        let back = Cursor::from_bytes(c.name.clone(), &c.to_bytes()).unwrap();
        assert_eq!(back, c);
        let ml = "/managed-ledgers/public/default/persistent/t-partition-0";
        let path = cursor_path(ml, &c.name);
        assert_eq!(path, format!("{ml}/g%2F1%20%25x"));
        assert_eq!(parse_cursor_path(&path), Some((ml, c.name.clone())));
        assert_eq!(parse_cursor_path(&format!("{ml}/bad%2")), None);
    }
}
