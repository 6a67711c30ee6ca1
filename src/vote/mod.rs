//! The controller's scheduling and voting rules (DESIGN 3) as a pure state machine: which
//! worker runs which check when, and when `confirmations` workers agreeing for `delay + 1`
//! rounds flip a check. No IO, no clock reads: every input carries the time, so tests drive it
//! with explicit instants.
//!
//! # The rules
//!
//! - **Regular run.** A check is due `interval` after its last online/offline result; a new
//!   check is due at once, except the checks a new term loads: their first runs are spread
//!   over their interval ([`Engine::upsert_check_due`]), so a failover is no thundering herd. The run goes to one live worker: not one that could not run it
//!   since its last due time (a `fail` or a timeout) when another is live; not the one whose
//!   result came last when another is available; then the least loaded (fewest runs in flight,
//!   then fewest handed so far). A single live worker gets every run, every interval.
//! - **Round.** A result that differs from the current status opens a round (or joins the
//!   open one) and, in the same step, `confirmations - 1` other workers are asked in
//!   parallel: live workers not in the round, not holding the check, and not among those that
//!   just failed it. A round completes when `confirmations` distinct workers reported the
//!   differing status. Any result that agrees with the status clears the round and the count.
//!   A `fail` counts neither way; its run is handed to another worker (a regular run) or
//!   another worker is asked (a confirmation).
//! - **Flip** after `delay + 1` complete rounds. Each round after the first starts with the
//!   next regular run, `interval` after the round completed, so a flip takes
//!   `confirmations x (delay + 1)` differing results and at least `delay x interval`. On a flip
//!   the count restarts from zero (gobearmon's [BUG] 4).
//! - **Quorum.** A check whose confirmations exceed the live workers has *insufficient
//!   quorum*: no round completes, so it keeps its status and never flips. Its regular runs go
//!   on (an agreeing result still clears its count), differing results still join the open
//!   round, and the round completes by itself once enough workers are live again.
//!   [`Engine::insufficient_quorum`] lists such checks; [`Engine::take_quorum_changes`]
//!   reports the checks that lost or regained their quorum, once per change.
//! - **Impaired workers** ([`Engine::set_impaired`], from their canaries): live but not
//!   counted. They are handed no regular run and no confirmation, what they held is handed to
//!   others at once, their results are `fail`, and the checks that needed them lose their
//!   quorum until they recover. Their votes already in open rounds stay, as a down worker's do.
//! - **Confirmations** come from the check's own column, else from `[controller]`.
//!
//! # Decisions where DESIGN is silent
//!
//! - Every assignment carries a [`Ticket`] that the worker sends back. A result counts only
//!   from the worker holding that very assignment; anything else (a late answer after an
//!   assignment timeout, an answer to a withdrawn assignment, one from a worker marked down)
//!   is [`Effect::Stale`] and changes nothing. A late answer is not accepted because its run
//!   was already handed to another worker, whose answer is the one that counts.
//! - An assignment not answered within [`VoteConfig::assignment_timeout`] is released and
//!   treated like a `fail` of that worker: the run is handed to another worker at once.
//! - When a round completes or is cleared, the runs still out for it are withdrawn: a stray
//!   confirmation must not open the next round before the interval.
//! - A worker that goes down loses its assignments (handed to others at once) but its votes
//!   in open rounds stay counted: it did see the check fail, and the node id identifies it
//!   when it comes back, so it is not counted twice.
//! - A worker that failed or timed out on a check is not asked for it again until the
//!   check's next regular due time, unless no other worker is live. A regular run that every
//!   live worker failed waits one interval.
//! - A changed definition keeps the round state. A new `checks.status` that differs both from
//!   the one loaded before and from the engine's own is an operator's edit: the check takes
//!   that status and its voting starts afresh. The status written by our own flip arrives as
//!   the status the engine already has and changes nothing.
//! - A lowered `confirmations` that the open round already meets completes it with the next
//!   differing vote, not on the edit itself.
//!
//! # Cost
//!
//! Per check: a hash-map entry, one due-queue entry while idle, one deadline entry per
//! assignment in flight, about 200 bytes plus the round and the last results. [`Engine::due`]
//! touches only the timeouts and the due checks (ordered sets), never the whole table.

mod engine;
mod quorum;
mod types;
mod workers;

#[cfg(test)]
mod tests;

pub use engine::Engine;
pub use types::{
    Assignment, CheckDef, CheckView, Effect, Flip, InFlightView, Kind, LAST_RESULTS_KEPT,
    LastResult, MIN_INTERVAL, Outcome, QuorumChange, Snapshot, Stats, Ticket, VoteConfig,
    WorkerView,
};
