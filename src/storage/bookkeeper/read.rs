//! Reading one entry: from the first bookie of its write set, falling back to the next on an
//! error or a missing entry, and also asking the next one when the answer is slow (a
//! speculative read). The stored entry's digest is verified; the payload is a slice of the
//! response buffer.

use std::rc::Rc;

use bytes::Bytes;

use super::Ctx;
use super::bookie::BookieError;
use super::digest::{Digester, StoredEntry};
use super::metadata::BookieId;
use super::protocol::{self, OP_READ, rc};
use super::write_set;

/// Why a read found no entry.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// Every bookie of the write set was asked; `missing` said they have no such entry, the
    /// others failed (`error` is the last failure).
    NotFound { missing: usize, error: Option<String> },
}

enum Outcome {
    Found(StoredEntry, Bytes),
    Missing,
    Error(String),
}

/// Reads `entry` of `ledger` from `ensemble` (the segment's ensemble holding it).
pub(crate) async fn read_entry(
    ctx: &Rc<Ctx>,
    ledger: u64,
    ensemble: &[BookieId],
    write_quorum: usize,
    digester: &Digester,
    entry: i64,
) -> Result<(StoredEntry, Bytes), ReadFailure> {
    let targets: Vec<BookieId> = write_set(entry, ensemble.len(), write_quorum).map(|i| ensemble[i].clone()).collect();
    let (tx, rx) = async_channel::bounded::<Outcome>(targets.len().max(1));
    let launch = |i: usize| {
        let bookie = ctx.bookie(&targets[i]);
        let tx = tx.clone();
        let digester = digester.clone();
        let frame = Bytes::from(protocol::read_request(ledger as i64, entry, None));
        bookie.send(
            (OP_READ, ledger as i64, entry),
            frame,
            Default::default(),
            ctx.config.read_timeout,
            Box::new(move |res: Result<protocol::Response, BookieError>| {
                let outcome = match res {
                    Ok(r) if r.rc == rc::EOK => match digester.verify(&r.body) {
                        Ok(s) if s.ledger == ledger as i64 && s.entry == entry => {
                            let payload = r.body.slice(s.payload_offset..);
                            Outcome::Found(s, payload)
                        }
                        Ok(_) => Outcome::Error("bookie returned another entry".into()),
                        Err(e) => Outcome::Error(e.to_string()),
                    },
                    Ok(r) if r.rc == rc::ENOENTRY || r.rc == rc::ENOLEDGER => Outcome::Missing,
                    Ok(r) => Outcome::Error(format!("bookie answered {}", rc::name(r.rc))),
                    Err(e) => Outcome::Error(e.to_string()),
                };
                let _ = tx.try_send(outcome);
            }),
        );
    };
    let speculative = ctx.config.speculative_read_timeout;
    let (mut next, mut outstanding, mut missing, mut last_err) = (0usize, 0usize, 0usize, None);
    launch(next);
    next += 1;
    outstanding += 1;
    loop {
        let got = if next < targets.len() && !speculative.is_zero() {
            crate::runtime::timeout(speculative, rx.recv()).await
        } else {
            Some(rx.recv().await)
        };
        match got {
            None => {
                // Slow answer: ask the next bookie too; the first good answer wins.
                launch(next);
                next += 1;
                outstanding += 1;
                continue;
            }
            Some(Err(_)) => return Err(ReadFailure::NotFound { missing, error: Some("read abandoned".into()) }),
            Some(Ok(outcome)) => {
                outstanding -= 1;
                match outcome {
                    Outcome::Found(s, payload) => return Ok((s, payload)),
                    Outcome::Missing => missing += 1,
                    Outcome::Error(e) => last_err = Some(e),
                }
            }
        }
        if next < targets.len() {
            launch(next);
            next += 1;
            outstanding += 1;
        } else if outstanding == 0 {
            return Err(ReadFailure::NotFound { missing, error: last_err });
        }
    }
}
