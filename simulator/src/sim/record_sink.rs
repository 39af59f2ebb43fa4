//! The in-process MTA's accounting records, taken off the simulation's thread: written to
//! acct.csv and tallied for the expectations in the engine's order.

use mta::acct::{Accounting, Record};
use std::sync::Arc;
use std::time::Duration;

/// The in-process MTA's records on their way to acct.csv and the expectations' tally, on a
/// thread of their own (the second core): both are pure sinks, fed in the engine's order through
/// the tap, so the accounting log is the same byte for byte.
pub(super) struct RecordSink {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(crate::tally::Tally, Option<String>)>,
    acct: Arc<Accounting>,
}

/// Spent records handed back to the engine at once.
const SPENT_BATCH: usize = 256;

/// Lines the accounting file may hold back (a full disk) before the run gives up writing it:
/// the accounting keeps unwritten lines for a retry, which must not grow without bound.
const ACCT_BACKLOG_LIMIT: usize = mta::acct::DEFAULT_BACKLOG_LIMIT;

impl RecordSink {
    pub(super) fn start(
        mut tap: tokio::sync::mpsc::UnboundedReceiver<Box<Record>>,
        acct: Accounting,
        mut tally: crate::tally::Tally,
        monitor: Arc<mta::mgmt::Monitor>,
        pool: Arc<mta::acct::RecordPool>,
    ) -> RecordSink {
        use std::sync::atomic::Ordering;
        use tokio::sync::mpsc::error::TryRecvError;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acct = Arc::new(acct);
        let (stop, out) = (done.clone(), acct.clone());
        // Polled rather than woken: a waiting receiver would cost the engine a futex wake per
        // record; a sleeping one costs nothing, and a millisecond of lag does not matter.
        let thread = std::thread::spawn(move || {
            let mut given_up: Option<String> = None;
            let mut n: u64 = 0;
            // Spent records go back to the engine in batches, to be built anew from.
            let mut spent = Vec::with_capacity(SPENT_BATCH);
            let mut take = |r: Box<Record>| {
                monitor.observe(&r);
                if given_up.is_none() {
                    out.log(&r);
                    n += 1;
                    if n.is_multiple_of(4096) && out.pending() > ACCT_BACKLOG_LIMIT {
                        given_up = out.failure().or_else(|| Some("write failed".into()));
                    }
                }
                tally.add(&crate::tally::RecordView::of(&r));
                spent.push(r);
                if spent.len() == SPENT_BATCH {
                    pool.give_back(&mut spent);
                }
            };
            loop {
                match tap.try_recv() {
                    Ok(r) => take(r),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if stop.load(Ordering::Acquire) => {
                        // Everything sent before `done` was set is visible now: take it, stop.
                        while let Ok(r) = tap.try_recv() {
                            take(r);
                        }
                        break;
                    }
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            (tally, given_up)
        });
        RecordSink { done, thread, acct }
    }

    /// Takes the records logged so far, writes the accounting file out and returns the tally;
    /// an error if acct.csv could not be written in full.
    pub(super) fn finish(self, now_ms: i64) -> Result<crate::tally::Tally, String> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        let (tally, given_up) = self
            .thread
            .join()
            .map_err(|_| "the accounting thread panicked".to_string())?;
        if let Some(err) = given_up {
            return Err(format!(
                "the accounting log could not be written ({err}); gave up after {ACCT_BACKLOG_LIMIT} unwritten lines"
            ));
        }
        self.acct.flush(now_ms);
        match self.acct.failure() {
            Some(err) => Err(format!("the accounting log could not be written: {err}")),
            None => Ok(tally),
        }
    }
}
