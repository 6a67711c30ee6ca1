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
//!
//! Losses and failures reach the admin once each, as meta-alerts ([`Losses`], [`Failing`]):
//! results dropped from the buffer (`history_dropped`, opened at the first drop, resolved
//! once a write succeeds without drops), and a round that failed [`FAIL_ALERT_AFTER`] times
//! in a row (`history_failing`, subject `write` or `upkeep`, resolved by its next success).
//! Both are counted on `/metrics`.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::ControllerHost;
use super::owner::{HISTORY_BUFFER, Msg};
use super::term::TermHandle;
use super::watch::{Wanted, open_alert, resolve_alert};
use crate::history::rollup::Period;
use crate::notify::meta::AlertKind;
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
/// Failed rounds in a row before the admin is told: a round or two can fail on a database
/// hiccup that the next round mends; three writes (15 s) or three upkeeps (3 min) cannot.
const FAIL_ALERT_AFTER: u32 = 3;

/// Results dropped from the history since the last clean write, and whether the admin has
/// been told (the alert is open).
#[derive(Debug, Default)]
struct Losses {
    dropped: u64,
    since_ms: i64,
    told: bool,
}

impl Losses {
    /// Counts `n` dropped results and opens the alert if it is not open yet (tried again each
    /// round while the database does not answer).
    async fn dropped(&mut self, host: &ControllerHost, n: u64) {
        if n == 0 && (self.dropped == 0 || self.told) {
            return;
        }
        if self.dropped == 0 {
            self.since_ms = unix_ms(SystemTime::now());
        }
        self.dropped += n;
        host.stats.history_dropped.fetch_add(n, Ordering::Relaxed);
        if !self.told {
            let w = Wanted {
                started_ms: self.since_ms,
                message: crate::notify::text::history_dropped(self.dropped, self.since_ms),
                detail: None,
            };
            self.told = open_alert(host, AlertKind::HistoryDropped, "", &w).await;
        }
    }

    /// A write went through with nothing dropped since the last round: the loss is over.
    async fn clean(&mut self, host: &ControllerHost) {
        if self.told {
            resolve_alert(host, AlertKind::HistoryDropped, "").await;
        }
        *self = Losses::default();
    }
}

/// A history round (`write`, `upkeep`) that may keep failing.
#[derive(Debug)]
struct Failing {
    round: &'static str,
    failures: u32,
    since_ms: i64,
    told: bool,
}

impl Failing {
    fn new(round: &'static str) -> Failing {
        Failing {
            round,
            failures: 0,
            since_ms: 0,
            told: false,
        }
    }

    /// One more failure; the admin is told at [`FAIL_ALERT_AFTER`]: by a meta-alert, or by
    /// the rate-limited notice when the database cannot take one.
    async fn failed(&mut self, host: &ControllerHost, error: &StoreError) {
        if self.failures == 0 {
            self.since_ms = unix_ms(SystemTime::now());
        }
        self.failures += 1;
        let counter = match self.round {
            "write" => &host.stats.history_write_failures,
            _ => &host.stats.history_upkeep_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.told || self.failures < FAIL_ALERT_AFTER {
            return;
        }
        let message =
            crate::notify::text::history_failing(self.round, self.failures, &error.to_string());
        let w = Wanted {
            started_ms: self.since_ms,
            message,
            detail: None,
        };
        if !open_alert(host, AlertKind::HistoryFailing, self.round, &w).await {
            host.tell_admin_subject(
                AlertKind::HistoryFailing.subject(self.round, false),
                w.message,
            );
        }
        self.told = true;
    }

    async fn succeeded(&mut self, host: &ControllerHost) {
        if self.told {
            resolve_alert(host, AlertKind::HistoryFailing, self.round).await;
        }
        *self = Failing::new(self.round);
    }
}

/// Writes the owner's results as raw history until the term ends.
pub(super) async fn write_loop(term: TermHandle) {
    let mut pending: Vec<RawResult> = Vec::new();
    let mut losses = Losses::default();
    let mut failing = Failing::new("write");
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(WRITE_EVERY) => {}
        }
        let Some((batch, mut dropped)) = term.ask(|reply| Msg::TakeHistory { reply }).await else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(dropped, "history results dropped: the writer fell behind");
        }
        pending.extend(batch);
        if pending.len() > HISTORY_BUFFER {
            let excess = pending.len() - HISTORY_BUFFER;
            pending.drain(..excess);
            dropped += excess as u64;
            tracing::warn!(
                dropped = excess,
                "history results dropped: the database is away"
            );
        }
        let host = term.host();
        losses.dropped(host, dropped).await;
        if pending.is_empty() || !term.may_act() {
            continue;
        }
        match history::write_raw(&host.store, term.epoch, &host.node, &pending).await {
            Ok(()) => {
                pending = Vec::new();
                failing.succeeded(host).await;
                if dropped == 0 {
                    losses.clean(host).await;
                }
            }
            Err(e) => {
                if fenced(&term, &e) {
                    return;
                }
                tracing::warn!(error = %e, rows = pending.len(), "cannot write result history yet");
                failing.failed(host, &e).await;
            }
        }
    }
}

/// Rolls up and prunes until the term ends.
pub(super) async fn upkeep_loop(term: TermHandle) {
    let mut failing = Failing::new("upkeep");
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_EVERY) => {}
        }
        if !term.may_act() {
            continue;
        }
        match upkeep(&term).await {
            Ok(()) => failing.succeeded(term.host()).await,
            Err(e) => {
                if fenced(&term, &e) {
                    return;
                }
                tracing::warn!(error = %e, "history upkeep failed; trying again later");
                failing.failed(term.host(), &e).await;
            }
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
