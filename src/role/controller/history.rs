//! The acting controller's history tasks, off the path that hands out work (the owner only
//! appends each result to a list):
//!
//! - [`write_loop`]: every [`WRITE_EVERY`], takes the results gathered by the owner and
//!   writes them as raw rows, 2,000 per fenced transaction. A batch that cannot be written is
//!   kept and tried again with the next one, up to [`super::owner::HISTORY_BUFFER`] rows (the
//!   oldest are dropped beyond, and counted in a warning; the owner itself drops new results
//!   while it holds that many untaken).
//! - [`upkeep_loop`]: every [`UPKEEP_EVERY`], rolls up the hours that are complete, then
//!   prunes raw rows past `[history] raw_retention` and rollups past `rollup_retention`, a
//!   small batch per transaction with a pause between batches.
//!
//! A fenced write ends the term, as for flips.

use std::time::{Duration, SystemTime};

use super::owner::{HISTORY_BUFFER, Msg};
use super::term::TermHandle;
use crate::history::rollup::Period;
use crate::notify::unix_ms;
use crate::store::StoreError;
use crate::store::history::{self, PRUNE_BATCH, RawResult};

/// How often raw results are written.
const WRITE_EVERY: Duration = Duration::from_secs(5);
/// How often the roll-up and pruning run.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
/// Hours rolled up per upkeep round at most (a controller catching up after a long absence
/// spreads the work over several rounds).
const HOURS_PER_ROUND: u32 = 24;
/// Pruning batches per upkeep round at most, and the pause between two.
const PRUNE_BATCHES_PER_ROUND: u32 = 200;
const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// Writes the owner's results as raw history until the term ends.
pub(super) async fn write_loop(term: TermHandle) {
    let mut pending: Vec<RawResult> = Vec::new();
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(WRITE_EVERY) => {}
        }
        let Some((batch, dropped)) = term.ask(|reply| Msg::TakeHistory { reply }).await else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(dropped, "history results dropped: the writer fell behind");
        }
        pending.extend(batch);
        if pending.len() > HISTORY_BUFFER {
            let excess = pending.len() - HISTORY_BUFFER;
            pending.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "history results dropped: the database is away"
            );
        }
        if pending.is_empty() || !term.may_act() {
            continue;
        }
        let host = term.host();
        match history::write_raw(&host.store, term.epoch, &host.node, &pending).await {
            Ok(()) => pending = Vec::new(),
            Err(e) => {
                if fenced(&term, &e) {
                    return;
                }
                tracing::warn!(error = %e, rows = pending.len(), "cannot write result history yet");
            }
        }
    }
}

/// Rolls up and prunes until the term ends.
pub(super) async fn upkeep_loop(term: TermHandle) {
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_EVERY) => {}
        }
        if !term.may_act() {
            continue;
        }
        if let Err(e) = upkeep(&term).await {
            if fenced(&term, &e) {
                return;
            }
            tracing::warn!(error = %e, "history upkeep failed; trying again later");
        }
    }
}

async fn upkeep(term: &TermHandle) -> Result<(), StoreError> {
    let host = term.host();
    let (store, epoch, node) = (&host.store, term.epoch, &host.node);
    let now_ms = unix_ms(SystemTime::now());
    let rolled = history::roll_up(store, epoch, node, now_ms / 1000, HOURS_PER_ROUND).await?;
    if rolled.hours > 0 {
        tracing::info!(
            hours = rolled.hours,
            days = rolled.days,
            rows = rolled.rows,
            cursor = rolled.cursor,
            "result history rolled up"
        );
    }
    let raw_before = now_ms - host.history.raw_retention.as_millis() as i64;
    let mut deleted = 0;
    for _ in 0..PRUNE_BATCHES_PER_ROUND {
        if term.token.is_cancelled() {
            return Ok(());
        }
        let n = history::prune_raw(store, epoch, node, raw_before).await?;
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
        tokio::time::sleep(PRUNE_PAUSE).await;
    }
    if let Some(keep) = host.history.rollup_retention {
        let before = now_ms / 1000 - keep.as_secs() as i64;
        for period in [Period::Hour, Period::Day] {
            while history::prune_rollups(store, epoch, node, period, before).await?
                >= PRUNE_BATCH as u64
            {
                if term.token.is_cancelled() {
                    return Ok(());
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
    }
    if deleted > 0 {
        tracing::debug!(deleted, "raw result history pruned");
    }
    Ok(())
}

/// Ends the term on a fenced write; true when it did.
fn fenced(term: &TermHandle, e: &StoreError) -> bool {
    let StoreError::Fenced { ours, stored } = e else {
        return false;
    };
    tracing::error!(%ours, %stored, "history write fenced: a newer controller took over; stopping");
    term.host().membership.report_fenced_out(ours.0, stored.0);
    term.token.cancel();
    true
}
