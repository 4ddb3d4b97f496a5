//! Pins: a writer's hold on one node of a store it shares with other writers.
//!
//! The ZooKeeper store sets a node's data only at the version its cache last saw, and it
//! re-reads paths (after a refused or an outcome-unknown commit, on request), taking their
//! current versions. For most nodes that is what callers want. For a partition's ledger list
//! it is not: a managed ledger that lost its partition (its node was paused past the session
//! timeout, another node took over and wrote a new list) must never get to write over the new
//! owner's list just because some re-read brought the newer version into the cache. A pinned
//! node is written only over the version it was pinned at and then over the versions this
//! store's own writes gave it; any other writer's change turns every later put into a
//! conflict, which fences the managed ledger (Pulsar's managed ledger keeps the version of its
//! own info node the same way).

use std::collections::BTreeMap;

use super::StoreError;

#[derive(Debug, Clone, PartialEq)]
enum Pin {
    /// Puts go over this version (`None`: the node is only ever created, never set).
    At(Option<i32>),
    /// A put was sent over `before` and its outcome is unknown: if it applied, the node is at
    /// `after` and holds `attempted`.
    Unsure { before: Option<i32>, after: i32, attempted: Vec<u8> },
    /// Another writer changed the node, or the holder let go of it: every put conflicts.
    Lost,
}

/// What a put to a path must go over.
#[derive(Debug, PartialEq)]
pub(super) enum Expected {
    /// Not pinned: the cache's version.
    Cached,
    /// Pinned: exactly this version (`None`: the node must not exist yet).
    Version(Option<i32>),
}

#[derive(Debug, Default)]
pub(super) struct Pins {
    map: BTreeMap<String, Pin>,
}

fn lost(path: &str) -> StoreError {
    StoreError::Conflict(format!("`{path}` was changed by another writer since this one took it"))
}

impl Pins {
    /// Pins `path` at `version` (its version now; `None`: it does not exist).
    pub fn pin(&mut self, path: &str, version: Option<i32>) {
        self.map.insert(path.to_string(), Pin::At(version));
    }

    /// The holder lets go: puts conflict until the path is pinned again.
    pub fn release(&mut self, path: &str) {
        if let Some(p) = self.map.get_mut(path) {
            *p = Pin::Lost;
        }
    }

    pub fn expected(&self, path: &str) -> Result<Expected, StoreError> {
        match self.map.get(path) {
            None => Ok(Expected::Cached),
            Some(Pin::At(v)) => Ok(Expected::Version(*v)),
            // Settled (`settle`) before any plan; still unsure means it could not be read.
            Some(Pin::Unsure { .. } | Pin::Lost) => Err(lost(path)),
        }
    }

    /// A commit applied: pinned nodes it set are now at `versions`; pinned nodes it deleted
    /// are no longer anyone's.
    pub fn applied<'a>(&mut self, versions: &BTreeMap<String, i32>, deleted: impl Iterator<Item = &'a String>) {
        for d in deleted {
            self.map.remove(d);
        }
        for (path, pin) in self.map.iter_mut() {
            if let (Pin::At(_), Some(v)) = (&*pin, versions.get(path)) {
                *pin = Pin::At(Some(*v));
            }
        }
    }

    /// A commit's outcome is unknown. `puts` gives each pinned path's last value in it, and
    /// `versions` the versions the commit would have given.
    pub fn unknown<'a>(
        &mut self,
        puts: impl Iterator<Item = (&'a String, &'a Vec<u8>)>,
        versions: &BTreeMap<String, i32>,
    ) {
        for (path, value) in puts {
            let Some(pin) = self.map.get_mut(path) else { continue };
            *pin = match (&*pin, versions.get(path)) {
                (Pin::At(before), Some(after)) => {
                    Pin::Unsure { before: *before, after: *after, attempted: value.clone() }
                }
                _ => Pin::Lost,
            };
        }
    }

    /// Decides every unsure pin from the node as just re-read (`now`: its version, or `None`
    /// if it does not exist, and its value): still at `before` — the put did not apply; at
    /// `after` holding what was put — it did; anything else is another writer's.
    pub fn settle<'a>(&mut self, now: impl Fn(&str) -> (Option<i32>, Option<&'a [u8]>)) {
        for (path, pin) in self.map.iter_mut() {
            let Pin::Unsure { before, after, attempted } = &*pin else { continue };
            let (version, value) = now(path);
            *pin = if version == *before {
                Pin::At(*before)
            } else if version == Some(*after) && value == Some(attempted.as_slice()) {
                Pin::At(Some(*after))
            } else {
                Pin::Lost
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/managed-ledgers/t/n/persistent/x-partition-0";

    fn versions(v: i32) -> BTreeMap<String, i32> {
        BTreeMap::from([(P.to_string(), v)])
    }

    #[test]
    fn a_pinned_node_follows_only_its_own_writes() {
        let mut pins = Pins::default();
        assert_eq!(pins.expected(P).unwrap(), Expected::Cached);
        pins.pin(P, Some(3));
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(Some(3)));
        pins.applied(&versions(4), std::iter::empty());
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(Some(4)));
        // Another path's version does not move the pin.
        pins.applied(&BTreeMap::from([("/kopd/x".to_string(), 9)]), std::iter::empty());
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(Some(4)));
        pins.release(P);
        assert!(matches!(pins.expected(P), Err(StoreError::Conflict(_))));
        pins.pin(P, Some(7));
        pins.applied(&BTreeMap::new(), [P.to_string()].iter());
        assert_eq!(pins.expected(P).unwrap(), Expected::Cached, "deleted: no longer pinned");
    }

    #[test]
    fn an_unknown_outcome_is_settled_by_what_the_node_holds() {
        let value = b"mine".to_vec();
        let setup = || {
            let mut pins = Pins::default();
            pins.pin(P, Some(3));
            let v = value.clone();
            let path = P.to_string();
            pins.unknown([(&path, &v)].into_iter(), &versions(4));
            assert!(pins.expected(P).is_err(), "unsure until settled");
            pins
        };
        // Not applied.
        let mut pins = setup();
        pins.settle(|_| (Some(3), Some(b"old".as_slice())));
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(Some(3)));
        // Applied.
        let mut pins = setup();
        pins.settle(|_| (Some(4), Some(value.as_slice())));
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(Some(4)));
        // Another writer's value, at the version this one's would have had, or later.
        for (v, val) in [(Some(4), b"theirs".as_slice()), (Some(5), value.as_slice()), (None, value.as_slice())] {
            let mut pins = setup();
            pins.settle(|_| (v, Some(val)));
            assert!(pins.expected(P).is_err(), "{v:?}");
        }
        // A node pinned absent whose create's outcome is unknown.
        let mut pins = Pins::default();
        pins.pin(P, None);
        let path = P.to_string();
        pins.unknown([(&path, &value)].into_iter(), &versions(0));
        pins.settle(|_| (None, None));
        assert_eq!(pins.expected(P).unwrap(), Expected::Version(None));
    }
}
