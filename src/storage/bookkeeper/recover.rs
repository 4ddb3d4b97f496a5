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
        let (last, length) = replay(ctx, id, &meta, &digester, lac).await?;
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
            Bytes::new(),
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

/// Reads forward from `lac + 1`, re-adding every entry found; returns (last entry, length).
async fn replay(
    ctx: &Rc<Ctx>,
    id: u64,
    meta: &LedgerMetadata,
    digester: &Digester,
    lac: i64,
) -> Result<(i64, i64), StorageError> {
    let (wq, qa) = (meta.write_quorum, meta.ack_quorum);
    // The length of the ledger up to the LAC is in the LAC entry's header.
    let mut length = 0;
    if lac >= 0 {
        let (s, _) =
            read_entry(ctx, id, meta.ensemble_for(lac), wq, digester, lac).await.map_err(|f| lost(id, lac, f))?;
        length = s.length;
    }
    let mut last = lac;
    loop {
        let first = last + 1;
        let reads = join_all(
            (first..first + WINDOW as i64).map(|e| read_entry(ctx, id, meta.ensemble_for(e), wq, digester, e)),
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
                Err(f) => return Err(lost(id, e, f)),
            }
        }
        let adds =
            join_all(found.iter().map(|(e, (s, payload))| recovery_add(ctx, meta, digester, *e, s, payload.clone())))
                .await;
        for ((e, (s, _)), ok) in found.iter().zip(adds) {
            ok?;
            last = *e;
            length = s.length;
        }
        if end {
            return Ok((last, length));
        }
    }
}

fn lost(id: u64, entry: i64, f: ReadFailure) -> StorageError {
    StorageError::Unavailable(format!("ledger {id}: entry {entry} could not be read during recovery: {f:?}"))
}

/// Writes one entry again to its write set with RECOVERY_ADD (accepted by fenced bookies).
async fn recovery_add(
    ctx: &Rc<Ctx>,
    meta: &LedgerMetadata,
    digester: &Digester,
    entry: i64,
    s: &super::digest::StoredEntry,
    payload: Bytes,
) -> Result<(), StorageError> {
    let prefix = digester.entry_prefix(s.ledger, s.entry, s.lac, s.length, &payload);
    let mut head = BytesMut::with_capacity(protocol::ADD_PREFIX_LEN + prefix.len());
    head.extend_from_slice(&protocol::add_prefix(
        protocol::FLAG_RECOVERY_ADD,
        &ctx.master_key,
        prefix.len() + payload.len(),
    ));
    head.extend_from_slice(&prefix);
    let head = head.freeze();
    let ensemble = meta.ensemble_for(entry);
    let answers = join_all(write_set(entry, ensemble.len(), meta.write_quorum).map(|i| {
        let (tx, rx) = super::oneshot::channel();
        ctx.bookie(&ensemble[i]).send(
            (OP_ADD, s.ledger, entry),
            head.clone(),
            payload.clone(),
            ctx.config.add_timeout,
            Box::new(move |r: Result<protocol::Response, BookieError>| tx.send(r)),
        );
        rx
    }))
    .await;
    let acks = answers.iter().filter(|a| matches!(a, Some(Ok(r)) if r.rc == rc::EOK)).count();
    if acks < meta.ack_quorum {
        return Err(StorageError::Unavailable(format!(
            "ledger {}: recovery add of entry {entry} reached {acks} of {} bookies",
            s.ledger, meta.ack_quorum
        )));
    }
    Ok(())
}
