//! The flip writer: one task per term that records flips in the order the engine decided
//! them, a batch per fenced transaction ([`crate::store::flips::record`]).
//!
//! - Order: a flip is written only after every earlier one, so two flips of one check can
//!   never land reversed (a retried "offline" after the "online" that followed it).
//! - A failed batch is tried again flip by flip, so one flip the database refuses cannot
//!   hold back the others. A flip is retried with a growing wait while the error may pass;
//!   after [`GIVE_UP_AFTER`] of failures, or at once for an error that cannot pass, it is
//!   given up: the check goes back to its stored status (so the change is detected and
//!   recorded again, and the engine never disagrees with the database), later flips of the
//!   same check decided before that are dropped, and the admin is told.
//! - While the store is away (no database node answers: [`crate::store::nodes`]), nothing
//!   is given up: flips wait in order, up to [`KEPT_WHILE_AWAY`], and are written and
//!   notified once a node answers; the admin hears of the outage from
//!   [`super::dbwatch`]. Beyond that bound the oldest is given up as above.
//! - A flip the database finds already recorded, or whose basis is gone (the stored status is
//!   not its `from`), writes nothing; the check takes the stored status.
//! - A fenced write ends the term.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::owner::{Msg, PendingFlip};
use super::term::TermHandle;
use crate::model::CheckId;
use crate::notify::admin::AdminKind;
use crate::notify::outbox::WakeHandle;
use crate::store::StoreError;
use crate::store::flips::{self, FlipRecorded, FlipWrite};

/// Flips per transaction.
const BATCH: usize = 100;
/// A flip that could not be written for this long is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Flips kept while the store is away (about 1 KB each): far more than an outage of the
/// database decides, yet a bound on memory.
const KEPT_WHILE_AWAY: usize = 100_000;

/// Records the flips the owner sends until the term ends.
pub(super) async fn run(
    term: TermHandle,
    mut inbox: mpsc::UnboundedReceiver<PendingFlip>,
    outbox: WakeHandle,
) {
    let mut queue: VecDeque<PendingFlip> = VecDeque::new();
    // Checks whose flip was given up, with its generation: later flips of that generation
    // were decided on a status the database never got, and are dropped as they arrive.
    let mut given_up: HashMap<CheckId, u32> = HashMap::new();
    let mut retry = Retry::default();
    loop {
        match gather(&term, &mut inbox, &mut queue, &given_up).await {
            Next::Stop => return,
            Next::Again => continue,
            Next::Write => {}
        }
        let n = if retry.single { 1 } else { batch_len(&queue) };
        let batch: Vec<FlipWrite> = queue.iter().take(n).map(|p| p.write.clone()).collect();
        let host = term.host();
        match flips::record(
            &host.store,
            term.epoch,
            &host.node,
            &batch,
            host.config.flap,
        )
        .await
        {
            Ok(outcomes) => {
                let done: Vec<PendingFlip> = queue.drain(..n).collect();
                for (flip, outcome) in done.into_iter().zip(outcomes) {
                    recorded(&term, flip, outcome).await;
                }
                retry = Retry::default();
                outbox.wake();
            }
            Err(StoreError::Fenced { ours, stored }) => {
                tracing::error!(%ours, %stored, "flip fenced: a newer controller took over; stopping");
                term.host().membership.report_fenced_out(ours.0, stored.0);
                term.token.cancel();
                return;
            }
            Err(e) if n > 1 => {
                tracing::warn!(flips = n, error = %e, "cannot record flips; trying them one by one");
                retry.single = true;
            }
            Err(e) => {
                let failed = failed_one(&term, &mut queue, &mut given_up, &mut retry, &e);
                if failed.await.is_break() {
                    return;
                }
            }
        }
    }
}

/// After a failed batch: one flip at a time until the failing one is written or given up.
#[derive(Default)]
struct Retry {
    single: bool,
    failing_since: Option<Instant>,
    attempts: u32,
}

/// What the writer does next.
enum Next {
    /// The term ended or the owner is gone.
    Stop,
    /// Nothing to write yet: look again.
    Again,
    /// Write the queue's front.
    Write,
}

/// Waits for flips while the queue is empty, takes every flip waiting, and holds off while
/// the lease lapsed (the supervisor ends the term; nothing is written meanwhile).
async fn gather(
    term: &TermHandle,
    inbox: &mut mpsc::UnboundedReceiver<PendingFlip>,
    queue: &mut VecDeque<PendingFlip>,
    given_up: &HashMap<CheckId, u32>,
) -> Next {
    if queue.is_empty() {
        tokio::select! {
            _ = term.token.cancelled() => return Next::Stop,
            next = inbox.recv() => match next {
                Some(f) => admit(queue, given_up, f),
                None => return Next::Stop,
            },
        }
    }
    while let Ok(f) = inbox.try_recv() {
        admit(queue, given_up, f);
    }
    if queue.is_empty() {
        return Next::Again;
    }
    if term.token.is_cancelled() {
        return Next::Stop;
    }
    if !term.may_act() {
        tokio::select! {
            _ = term.token.cancelled() => return Next::Stop,
            _ = tokio::time::sleep(Duration::from_millis(100)) => return Next::Again,
        }
    }
    Next::Write
}

/// The queue's front flip failed alone: given up when the error is not worth retrying or it
/// has failed for [`GIVE_UP_AFTER`], else retried after a backoff. `Break` when the term
/// ends meanwhile.
async fn failed_one(
    term: &TermHandle,
    queue: &mut VecDeque<PendingFlip>,
    given_up: &mut HashMap<CheckId, u32>,
    retry: &mut Retry,
    e: &StoreError,
) -> ControlFlow<()> {
    retry.attempts += 1;
    let attempts = retry.attempts;
    let since = *retry.failing_since.get_or_insert_with(Instant::now);
    let away = term
        .host()
        .store
        .nodes()
        .unreachable_for(std::time::Instant::now())
        .is_some();
    let kept = away && queue.len() <= KEPT_WHILE_AWAY;
    if !e.is_retryable() || (since.elapsed() >= GIVE_UP_AFTER && !kept) {
        if let Some(flip) = queue.pop_front() {
            given_up.insert(flip.write.check, flip.generation);
            give_up(term, queue, flip, e, attempts).await;
        }
        *retry = Retry::default();
        return ControlFlow::Continue(());
    }
    let check = queue.front().map(|f| f.write.check);
    tracing::warn!(?check, error = %e, attempts, "cannot record flip yet");
    let wait = (Duration::from_millis(200) * attempts).min(MAX_BACKOFF);
    tokio::select! {
        _ = term.token.cancelled() => ControlFlow::Break(()),
        _ = tokio::time::sleep(wait) => ControlFlow::Continue(()),
    }
}

/// Queues a flip unless a flip of the same check and generation was given up.
fn admit(queue: &mut VecDeque<PendingFlip>, given_up: &HashMap<CheckId, u32>, f: PendingFlip) {
    if given_up.get(&f.write.check) == Some(&f.generation) {
        tracing::info!(check = %f.write.check, "flip dropped: an earlier flip of the check was given up");
        return;
    }
    queue.push_back(f);
}

/// How many flips from the front go in the next batch: up to [`BATCH`], and never two of one
/// check, so that after a commit whose outcome is unknown each flip's `from` tells whether it
/// was written (its stored status is then its `to`).
fn batch_len(queue: &VecDeque<PendingFlip>) -> usize {
    let mut seen = std::collections::HashSet::new();
    queue
        .iter()
        .take(BATCH)
        .take_while(|p| seen.insert(p.write.check))
        .count()
        .max(1)
}

async fn recorded(term: &TermHandle, flip: PendingFlip, outcome: FlipRecorded) {
    let w = &flip.write;
    match outcome {
        FlipRecorded::Recorded { event } => tracing::info!(
            check = %w.check, from = %w.from, to = %w.to, event,
            confirmed_by = ?w.notification.confirmed_by, "flip recorded"
        ),
        FlipRecorded::Deleted => tracing::debug!(check = %w.check, "flip of a deleted check"),
        FlipRecorded::Skipped { stored } if stored == w.to => {
            // Recorded already (by an earlier term): recording it again would notify twice.
            tracing::info!(check = %w.check, to = %w.to, "flip already recorded");
        }
        FlipRecorded::Skipped { stored } => {
            tracing::warn!(check = %w.check, from = %w.from, to = %w.to, %stored,
                "flip not recorded: the stored status is another; going back to it");
            back_to_stored(term, w.check, stored, flip.generation).await;
        }
    }
}

/// Gives up `flip`: the check goes back to the status it flipped from (what the database
/// holds, every earlier flip having been written), later flips of it decided before are
/// dropped, and the admin is told.
async fn give_up(
    term: &TermHandle,
    queue: &mut VecDeque<PendingFlip>,
    flip: PendingFlip,
    error: &StoreError,
    attempts: u32,
) {
    let w = &flip.write;
    let check = w.check;
    queue.retain(|p| !(p.write.check == check && p.generation == flip.generation));
    tracing::error!(%check, from = %w.from, to = %w.to, error = %error, attempts,
        "flip not recorded; the check goes back to its stored status and the change will be detected again");
    term.host().tell_admin(
        AdminKind::FlipNotRecorded,
        format!(
            "Check {check} ({}) went {} -> {}, but the change could not be written after {attempts} \
             attempt(s): {error}\nNobody has been notified of it yet. The check went back to {} \
             and the change will be recorded and notified when the workers confirm it again.\n",
            w.notification.name, w.from, w.to, w.from
        ),
    );
    back_to_stored(term, check, w.from, flip.generation).await;
}

async fn back_to_stored(
    term: &TermHandle,
    check: CheckId,
    status: crate::model::CheckStatus,
    generation: u32,
) {
    term.tell(Msg::NotRecorded {
        check,
        status,
        generation,
    })
    .await;
}
