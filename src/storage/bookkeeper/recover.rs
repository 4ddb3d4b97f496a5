//! Recovery of a ledger another writer (or an earlier run) left open, as BookKeeper does it:
//! mark it IN_RECOVERY, fence it on the last ensemble (a read of entry -1 with DO_FENCING and
//! the master key, after which bookies refuse the old writer's adds), take the highest LAC the
//! bookies report, read forward from LAC+1 re-adding each entry found with RECOVERY_ADD until
//! an entry is missing, and close the ledger there.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use tracing::info;

use super::Ctx;
use super::bookie::BookieError;
use super::digest::Digester;
use super::ensemble::{pick_replacements, with_segment};
use super::metadata::{LedgerMetadata, LedgerState, ledger_path};
use super::protocol::{self, LAST_ADD_CONFIRMED, OP_ADD, OP_READ, rc};
use super::read::{ReadFailure, read_entry};
use super::write::zk_error;
use super::write_set;
use crate::storage::StorageError;
use crate::zookeeper::ZkError;

/// Entries read and re-added concurrently during recovery.
const WINDOW: usize = 32;
/// Metadata races tolerated before giving up.
const ATTEMPTS: usize = 5;

/// Recovers ledger `id` if needed; returns its closed metadata.
pub(crate) async fn recover(ctx: &Rc<Ctx>, id: u64) -> Result<LedgerMetadata, StorageError> {
    let path = ledger_path(&ctx.root, id);
    for _ in 0..ATTEMPTS {
        let Some((data, stat)) = ctx.zk.get(&path).await.map_err(zk_error)? else {
            return Err(StorageError::NoSuchLedger(id));
        };
        let mut meta = LedgerMetadata::decode(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let mut version = stat.version;
        match meta.state {
            LedgerState::Closed => return Ok(meta),
            LedgerState::Open => {
                meta.state = LedgerState::InRecovery;
                match ctx.zk.set(&path, meta.encode(), Some(version)).await {
                    Ok(s) => version = s.version,
                    Err(ZkError::BadVersion) => continue,
                    Err(e) => return Err(zk_error(e)),
                }
            }
            // A recovery that did not finish (ours or another's): recovering again is safe.
            LedgerState::InRecovery => {}
        }
        let digester = Digester::new(meta.digest, &meta.password);
        let lac = fence(ctx, id, &meta, &digester).await?;
        let mut target = Target { meta: meta.clone(), version, path: path.clone() };
        let (last, length) = match replay(ctx, id, &meta, &digester, lac, &mut target).await {
            Ok(done) => done,
            Err(Replay::Raced) => continue,
            Err(Replay::Failed(e)) => return Err(e),
        };
        (meta, version) = (target.meta, target.version);
        meta.state = LedgerState::Closed;
        meta.last_entry = last;
        meta.length = length;
        match ctx.zk.set(&path, meta.encode(), Some(version)).await {
            Ok(_) => {
                info!(ledger = id, last_entry = last, "ledger recovered and closed");
                return Ok(meta);
            }
            Err(ZkError::BadVersion) => continue,
            Err(e) => return Err(zk_error(e)),
        }
    }
    Err(StorageError::Unavailable(format!("ledger {id}: metadata kept changing during recovery")))
}

/// Fences the last ensemble and returns the highest LAC its bookies report.
async fn fence(ctx: &Rc<Ctx>, id: u64, meta: &LedgerMetadata, digester: &Digester) -> Result<i64, StorageError> {
    let Some(last) = meta.segments.last() else {
        return Err(StorageError::Corrupt(format!("ledger {id} has no ensemble")));
    };
    let frame = Bytes::from(protocol::read_request(id as i64, LAST_ADD_CONFIRMED, Some(&ctx.master_key)));
    let answers = join_all(last.ensemble.iter().map(|b| {
        let bookie = ctx.bookie(b);
        let (tx, rx) = super::oneshot::channel();
        bookie.send(
            (OP_READ, id as i64, LAST_ADD_CONFIRMED),
            frame.clone(),
            Default::default(),
            ctx.config.read_timeout,
            Box::new(move |r: Result<protocol::Response, BookieError>| tx.send(r)),
        );
        rx
    }))
    .await;
    let (mut lac, mut answered, mut last_err) = (-1i64, 0usize, String::new());
    for a in answers {
        match a {
            Some(Ok(r)) if r.rc == rc::EOK => match digester.verify(&r.body) {
                Ok(s) => {
                    lac = lac.max(s.lac);
                    answered += 1;
                }
                Err(e) => last_err = e.to_string(),
            },
            Some(Ok(r)) if r.rc == rc::ENOENTRY || r.rc == rc::ENOLEDGER => answered += 1,
            Some(Ok(r)) if r.rc == rc::EUA => {
                return Err(StorageError::Unavailable(format!(
                    "ledger {id}: bookie refused the master key (wrong password)"
                )));
            }
            Some(Ok(r)) => last_err = format!("bookie answered {}", rc::name(r.rc)),
            Some(Err(e)) => last_err = e.to_string(),
            None => last_err = "no answer".into(),
        }
    }
    // Fenced on at least E - Qa + 1 bookies, no ack quorum is left to the old writer, and
    // every entry it had acknowledged is on one of the bookies that answered.
    let needed = meta.ensemble_size - meta.ack_quorum + 1;
    if answered < needed {
        return Err(StorageError::Unavailable(format!(
            "ledger {id}: fenced on {answered} bookies, {needed} needed: {last_err}"
        )));
    }
    Ok(lac)
}

/// Where recovery adds go: the ledger's metadata as recovery changes it (a failed bookie of the
/// last ensemble replaced, as BookKeeper's recovery does), with its node version.
struct Target {
    meta: LedgerMetadata,
    version: i32,
    path: String,
}

enum Replay {
    /// The metadata changed under us: start the recovery over.
    Raced,
    Failed(StorageError),
}

impl From<StorageError> for Replay {
    fn from(e: StorageError) -> Self {
        Replay::Failed(e)
    }
}

/// Ensemble changes one recovery makes before it gives up.
const CHANGES: usize = 3;

/// Reads forward from `lac + 1` (from the ensembles in `read`, where the entries are), re-adding
/// every entry found to `target`'s ensemble; returns (last entry, length).
async fn replay(
    ctx: &Rc<Ctx>,
    id: u64,
    read: &LedgerMetadata,
    digester: &Digester,
    lac: i64,
    target: &mut Target,
) -> Result<(i64, i64), Replay> {
    let (wq, qa) = (read.write_quorum, read.ack_quorum);
    // The length of the ledger up to the LAC is in the LAC entry's header.
    let mut length = 0;
    if lac >= 0 {
        let (s, _) =
            read_entry(ctx, id, read.ensemble_for(lac), wq, digester, lac).await.map_err(|f| lost(id, lac, f))?;
        length = s.length;
    }
    let mut last = lac;
    let mut changes = 0;
    loop {
        let first = last + 1;
        let reads = join_all(
            (first..first + WINDOW as i64).map(|e| read_entry(ctx, id, read.ensemble_for(e), wq, digester, e)),
        )
        .await;
        let mut found = Vec::new();
        let mut end = false;
        for (k, r) in reads.into_iter().enumerate() {
            let e = first + k as i64;
            match r {
                Ok(x) => found.push((e, x)),
                // Fewer than Qa copies can exist: the entry was never acknowledged. The ledger ends before it.
                Err(ReadFailure::NotFound { missing, .. }) if missing > wq - qa => {
                    end = true;
                    break;
                }
                Err(f) => return Err(lost(id, e, f).into()),
            }
        }
        let mut todo: &[(i64, _)] = &found;
        while !todo.is_empty() {
            let adds = join_all(
                todo.iter().map(|(e, (s, payload))| recovery_add(ctx, &target.meta, digester, *e, s, payload.clone())),
            )
            .await;
            // Entries count only up to the first one short of its ack quorum; from that one on,
            // they go again to an ensemble with the failed bookies replaced.
            let mut failed_from = None;
            for ((e, (s, _)), r) in todo.iter().zip(adds) {
                match r {
                    Ok(()) if failed_from.is_none() => (last, length) = (*e, s.length),
                    Ok(()) => {}
                    Err(positions) => {
                        let (at, all) = failed_from.get_or_insert((*e, Vec::new()));
                        debug_assert!(*at <= *e);
                        all.extend(positions);
                    }
                }
            }
            let Some((at, mut positions)) = failed_from else { break };
            positions.sort_unstable();
            positions.dedup();
            changes += 1;
            if changes > CHANGES {
                return Err(Replay::Failed(StorageError::Unavailable(format!(
                    "ledger {id}: recovery add of entry {at} reached too few bookies, {CHANGES} ensemble changes tried"
                ))));
            }
            change_ensemble(ctx, id, target, at, &positions).await?;
            todo = &todo[todo.iter().position(|(e, _)| *e == at).unwrap_or(todo.len())..];
        }
        if end {
            return Ok((last, length));
        }
    }
}

/// Replaces the bookies at `positions` of the ensemble recovery writes entry `at` to with
/// writable bookies outside it, in a new segment from `at` (BookKeeper lets recovery change the
/// ensemble of a ledger IN_RECOVERY).
async fn change_ensemble(
    ctx: &Rc<Ctx>,
    id: u64,
    target: &mut Target,
    at: i64,
    positions: &[usize],
) -> Result<(), Replay> {
    let current = target.meta.ensemble_for(at).to_vec();
    let Some(replacements) = pick_replacements(ctx, &current, positions.len()).await else {
        return Err(Replay::Failed(StorageError::Unavailable(format!(
            "ledger {id}: recovery add of entry {at} failed at ensemble positions {positions:?} and no writable bookie is left to replace them"
        ))));
    };
    if target.meta.segments.last().is_some_and(|l| l.first_entry > at) {
        // An earlier recovery's segment starts after this entry: only a fresh start sorts that out.
        return Err(Replay::Raced);
    }
    let meta = with_segment(&target.meta, at, &current, positions, &replacements);
    match ctx.zk.set(&target.path, meta.encode(), Some(target.version)).await {
        Ok(stat) => {
            info!(ledger = id, from_entry = at, ?positions, new = ?replacements, "ensemble changed during recovery");
            target.version = stat.version;
            target.meta = meta;
            Ok(())
        }
        Err(ZkError::BadVersion) => Err(Replay::Raced),
        Err(e) => Err(Replay::Failed(zk_error(e))),
    }
}

fn lost(id: u64, entry: i64, f: ReadFailure) -> StorageError {
    StorageError::Unavailable(format!("ledger {id}: entry {entry} could not be read during recovery: {f:?}"))
}

/// Writes one entry again to its write set with RECOVERY_ADD (accepted by fenced bookies);
/// short of the ack quorum, the ensemble positions that did not take it.
async fn recovery_add(
    ctx: &Rc<Ctx>,
    meta: &LedgerMetadata,
    digester: &Digester,
    entry: i64,
    s: &super::digest::StoredEntry,
    payload: Bytes,
) -> Result<(), Vec<usize>> {
    let prefix = digester.entry_prefix(s.ledger, s.entry, s.lac, s.length, &[&payload]);
    let mut head = BytesMut::with_capacity(protocol::ADD_PREFIX_LEN + prefix.len());
    head.extend_from_slice(&protocol::add_prefix(
        protocol::FLAG_RECOVERY_ADD,
        &ctx.master_key,
        prefix.len() + payload.len(),
    ));
    head.extend_from_slice(&prefix);
    let head = head.freeze();
    let ensemble = meta.ensemble_for(entry);
    let positions: Vec<usize> = write_set(entry, ensemble.len(), meta.write_quorum).collect();
    let answers = join_all(positions.iter().map(|&i| {
        let (tx, rx) = super::oneshot::channel();
        ctx.bookie(&ensemble[i]).send(
            (OP_ADD, s.ledger, entry),
            head.clone(),
            payload.clone().into(),
            ctx.config.add_timeout,
            Box::new(move |r: Result<protocol::Response, BookieError>| tx.send(r)),
        );
        rx
    }))
    .await;
    let failed: Vec<usize> = positions
        .iter()
        .zip(&answers)
        .filter(|(_, a)| !matches!(a, Some(Ok(r)) if r.rc == rc::EOK))
        .map(|(&i, _)| i)
        .collect();
    if positions.len() - failed.len() < meta.ack_quorum {
        tracing::warn!(ledger = s.ledger, entry, ?failed, "recovery add short of the ack quorum");
        return Err(failed);
    }
    Ok(())
}
