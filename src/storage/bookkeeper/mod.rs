//! The `bookkeeper` ledger store: a per-core BookKeeper client speaking the v2 wire protocol to
//! real bookies, with ledger metadata in ZooKeeper in BookKeeper's own format, so BookKeeper's
//! and Pulsar's tools can read what kopd writes.
//!
//! - `protocol`, `digest`, `metadata`: pure codecs (frames, entry digests, the metadata value).
//! - `bookie`: one core's pipelined connection to one bookie.
//! - `write`: a ledger this core writes (quorums, contiguous LAC, close); `ensemble`: replacing
//!   a failed bookie; `read`: reads with fallback and speculative reads; `recover`: fencing and
//!   recovery of another writer's ledger; `store`: the `LedgerStore` implementation.

pub mod bookie;
pub mod digest;
mod ensemble;
pub mod metadata;
pub mod oneshot;
pub mod protocol;
mod read;
mod recover;
mod store;
mod write;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub use digest::DigestType;
pub use store::BookKeeperStore;

use bookie::{Bookie, ConnConfig};
use metadata::BookieId;

use crate::zookeeper::{SessionState, ZooKeeper};

/// Everything the BookKeeper backend is configured with.
#[derive(Debug, Clone)]
pub struct BookKeeperConfig {
    /// `zk+hierarchical://host:port[;host:port...]/ledgers`; the path is the ledgers root.
    pub metadata_service_uri: String,
    pub ensemble: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub digest: DigestType,
    pub password: Vec<u8>,
    /// Per core: bytes of appends handed to bookies and not yet acknowledged.
    pub max_inflight_add_bytes: usize,
    /// An add not acknowledged by a bookie within this counts as that bookie failing
    /// (BookKeeper's `addEntryTimeoutSec`, 10 s).
    pub add_timeout: Duration,
    /// A read answered by no bookie within this fails (`readEntryTimeoutSec`, 10 s).
    pub read_timeout: Duration,
    /// A read not answered within this is also sent to the next bookie of the write set
    /// (`speculativeReadTimeout`, 2 s; zero turns speculative reads off).
    pub speculative_read_timeout: Duration,
    /// `connectTimeoutMillis`, 10 s.
    pub connect_timeout: Duration,
    /// Requests outstanding to one bookie from one core.
    pub max_pending_per_bookie: usize,
    /// How often the writable-bookie list is re-read from ZooKeeper.
    pub bookie_refresh_interval: Duration,
}

impl Default for BookKeeperConfig {
    fn default() -> Self {
        BookKeeperConfig {
            metadata_service_uri: "zk+hierarchical://127.0.0.1:2181/ledgers".into(),
            ensemble: 2,
            write_quorum: 2,
            ack_quorum: 2,
            digest: DigestType::Crc32c,
            password: Vec::new(),
            max_inflight_add_bytes: 64 << 20,
            add_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            speculative_read_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            max_pending_per_bookie: 200_000,
            bookie_refresh_interval: Duration::from_secs(1),
        }
    }
}

impl BookKeeperConfig {
    /// E >= Qw >= Qa >= 1, at most 64 bookies (ack sets are bit masks).
    pub fn validate(&self) -> Result<(), String> {
        let (e, w, a) = (self.ensemble, self.write_quorum, self.ack_quorum);
        if !(e >= w && w >= a && a >= 1) {
            return Err(format!(
                "bookkeeper quorums need ensemble >= write quorum >= ack quorum >= 1, got {e}/{w}/{a}"
            ));
        }
        if e > 64 {
            return Err(format!("bookkeeper ensemble size {e} is above 64"));
        }
        if self.max_inflight_add_bytes == 0 {
            return Err("bookkeeper max in-flight add bytes must be positive".into());
        }
        metadata::parse_metadata_uri(&self.metadata_service_uri).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What a core's ledgers share: configuration, ZooKeeper, bookie connections, the in-flight bound.
pub(crate) struct Ctx {
    pub core: usize,
    pub config: BookKeeperConfig,
    pub zk: ZooKeeper,
    /// The ledgers root in ZooKeeper (`/ledgers`).
    pub root: String,
    pub master_key: [u8; digest::MASTER_KEY_LEN],
    bookies: RefCell<HashMap<BookieId, Rc<Bookie>>>,
    /// Writable bookies as last read from ZooKeeper.
    pub available: RefCell<Vec<BookieId>>,
    /// Whether `available` has been read at least once (before that, no failure is reported).
    pub available_known: Cell<bool>,
    pub inflight: Cell<usize>,
    /// Failure episodes so far, and whether one is going on (for `failures`/`failure`).
    pub failures: Cell<u64>,
    pub unavailable: RefCell<Option<String>>,
    /// A seed for ensemble placement.
    pub rng: Cell<u64>,
}

impl Ctx {
    pub fn bookie(&self, id: &BookieId) -> Rc<Bookie> {
        let mut map = self.bookies.borrow_mut();
        map.entry(id.clone())
            .or_insert_with(|| {
                Rc::new(Bookie::new(
                    id.clone(),
                    ConnConfig {
                        connect_timeout: self.config.connect_timeout,
                        max_pending: self.config.max_pending_per_bookie,
                        reconnect_backoff: Duration::from_secs(1),
                    },
                ))
            })
            .clone()
    }

    /// Re-reads the writable bookies: children of `<root>/available` except the `readonly`
    /// node and the bookies listed under it.
    pub async fn refresh_bookies(&self) -> Result<Vec<BookieId>, crate::zookeeper::ZkError> {
        let base = format!("{}/available", self.root);
        let all = self.zk.children(&base).await?.unwrap_or_default();
        let readonly = self.zk.children(&format!("{base}/readonly")).await?.unwrap_or_default();
        let mut list: Vec<BookieId> =
            all.into_iter().filter(|b| b != "readonly" && !readonly.contains(b)).map(BookieId).collect();
        list.sort();
        *self.available.borrow_mut() = list.clone();
        self.available_known.set(true);
        Ok(list)
    }

    /// Some(reason) while appends cannot succeed.
    pub fn check_health(&self) -> Option<String> {
        if self.zk.session_state() != SessionState::Connected {
            return Some("no ZooKeeper session".into());
        }
        let n = self.available.borrow().len();
        if self.available_known.get() && n < self.config.ensemble {
            return Some(format!("{n} writable bookies, fewer than the ensemble size {}", self.config.ensemble));
        }
        None
    }

    /// Records the start of a failure episode.
    pub fn note_failure(&self) {
        self.failures.set(self.failures.get() + 1);
    }

    /// A pseudo-random number (xorshift) for spreading ensembles over bookies.
    pub fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// Picks `n` bookies from `candidates` at random.
    pub fn pick(&self, mut candidates: Vec<BookieId>, n: usize) -> Option<Vec<BookieId>> {
        if candidates.len() < n {
            return None;
        }
        for i in 0..n {
            let j = i + (self.next_random() % (candidates.len() - i) as u64) as usize;
            candidates.swap(i, j);
        }
        candidates.truncate(n);
        Some(candidates)
    }
}

/// The write set of an entry: ensemble positions `(e + i) mod E` for `i < Qw`.
pub fn write_set(entry: i64, ensemble: usize, write_quorum: usize) -> impl Iterator<Item = usize> {
    let e = entry.rem_euclid(ensemble.max(1) as i64) as usize;
    (0..write_quorum).map(move |i| (e + i) % ensemble)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_sets_rotate_over_the_ensemble() {
        assert_eq!(write_set(0, 3, 2).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(write_set(2, 3, 2).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(write_set(7, 3, 3).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(write_set(5, 1, 1).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn quorums_are_validated() {
        let ok = BookKeeperConfig { ensemble: 3, write_quorum: 2, ack_quorum: 2, ..Default::default() };
        assert!(ok.validate().is_ok());
        for (e, w, a) in [(2, 3, 2), (3, 2, 3), (1, 1, 0), (65, 2, 2)] {
            let bad = BookKeeperConfig { ensemble: e, write_quorum: w, ack_quorum: a, ..Default::default() };
            assert!(bad.validate().is_err(), "{e}/{w}/{a}");
        }
        let uri = BookKeeperConfig { metadata_service_uri: "zk://".into(), ..Default::default() };
        assert!(uri.validate().is_err());
    }
}
