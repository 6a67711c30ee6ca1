//! The [`Engine`]: per-check voting state, the due queue, and the assignments in flight.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use thin_vec::ThinVec;
use tokio::time::Instant;

use super::quorum::ByConfirmations;
use super::types::{
    Assignment, CheckDef, CheckView, Effect, Flip, InFlightView, Kind, LAST_RESULTS_KEPT,
    LastResult, Outcome, QuorumChange, Snapshot, Stats, Ticket, VoteConfig, WorkerView,
};
use super::workers::{Slot, Workers};
use crate::model::{CheckId, CheckStatus, NodeId};

/// One assignment in flight.
#[derive(Debug, Clone, Copy)]
struct Held {
    worker: Slot,
    ticket: Ticket,
    kind: Kind,
    since: Instant,
    /// `since + assignment_timeout`, the key in [`Core::deadlines`].
    deadline: Instant,
}

/// One worker's latest result for a check: 16 bytes, since every check keeps up to
/// [`LAST_RESULTS_KEPT`] of them.
#[derive(Debug, Clone, Copy)]
struct Recent {
    worker: Slot,
    outcome: Outcome,
    /// Milliseconds after [`Core::origin`].
    at_ms: u64,
}

/// Everything the controller knows about one check. Kept small: 100,000 of these must fit in
/// well under 100 MB (see the `state_is_small` test). The short lists are `ThinVec`s (one
/// pointer each, length and capacity live in the allocation), since most are empty most of
/// the time and a `Vec` would spend three words on each in every check.
#[derive(Debug)]
struct CheckState {
    interval: Duration,
    delay: u32,
    /// The row's override; `None` uses the global value.
    confirmations: Option<u32>,
    /// `checks.status` as last loaded: an operator edit is a change of this value.
    def_status: CheckStatus,
    /// The status the engine votes against.
    status: CheckStatus,
    /// Distinct workers that reported `status.opposite()` in the open round, in vote order.
    round: ThinVec<Slot>,
    /// Completed rounds since the last agreeing result or flip.
    rounds: u32,
    /// The worker whose online/offline result arrived last.
    last_worker: Option<Slot>,
    last_result_at: Option<Instant>,
    /// When the next regular run is due.
    due_at: Instant,
    /// Whether `(due_at, id)` is in [`Core::queue`].
    queued: bool,
    in_flight: ThinVec<Held>,
    /// Workers that could not run this check (fail or timeout) since the last regular due
    /// time: not asked again until then unless nobody else is live.
    avoid: ThinVec<Slot>,
    /// Latest result per worker, newest first.
    recent: ThinVec<Recent>,
}

impl CheckState {
    fn holds(&self, worker: Slot) -> bool {
        self.in_flight.iter().any(|h| h.worker == worker)
    }

    fn record(&mut self, worker: Slot, outcome: Outcome, at_ms: u64) {
        self.recent.retain(|r| r.worker != worker);
        if self.recent.len() >= LAST_RESULTS_KEPT {
            self.recent.truncate(LAST_RESULTS_KEPT - 1);
        } else if self.recent.len() == self.recent.capacity() {
            // One more slot, not twice as many: this is kept for every check.
            self.recent.reserve_exact(1);
        }
        self.recent.insert(
            0,
            Recent {
                worker,
                outcome,
                at_ms,
            },
        );
    }

    /// Frees the short vectors that are empty. Most of the time a check has nothing in
    /// flight, no open round and nobody to avoid, and a cleared `Vec` would keep its
    /// allocation for each of 100,000 checks.
    fn free_empty(&mut self) {
        fn free<T>(v: &mut ThinVec<T>) {
            if v.is_empty() && v.capacity() > 0 {
                *v = ThinVec::new();
            }
        }
        free(&mut self.in_flight);
        free(&mut self.round);
        free(&mut self.avoid);
    }
}

/// The controller-side voting and scheduling state machine (DESIGN 3). Pure: it reads no
/// clock and does no IO; every input carries the time.
///
/// How the controller drives it:
/// - feed it the catalog ([`upsert_check`](Engine::upsert_check),
///   [`remove_check`](Engine::remove_check)), liveness ([`worker_up`](Engine::worker_up),
///   [`worker_down`](Engine::worker_down)) and results ([`result`](Engine::result));
/// - after any of those, and whenever [`next_wake`](Engine::next_wake) comes, call
///   [`due`](Engine::due) and send each [`Assignment`] to its worker, ticket included;
/// - record and notify every [`Effect::Flip`] that `result` returns;
/// - send one admin notice per non-empty [`take_quorum_changes`](Engine::take_quorum_changes).
#[derive(Debug)]
pub struct Engine {
    checks: HashMap<CheckId, CheckState>,
    core: Core,
    /// Checks by effective confirmations: which checks lose or regain their quorum when the
    /// live count changes, without a scan.
    by_confirmations: ByConfirmations,
    /// Net quorum changes not yet taken.
    lost: BTreeSet<CheckId>,
    restored: BTreeSet<CheckId>,
}

/// The engine minus the check map, so a check can be borrowed mutably beside it.
#[derive(Debug)]
struct Core {
    config: VoteConfig,
    /// The first time the engine was given (result times are kept as milliseconds after it).
    origin: Option<Instant>,
    workers: Workers,
    /// `(due_at, id)` of every check with nothing in flight.
    queue: BTreeSet<(Instant, CheckId)>,
    /// `(deadline, id, ticket)` of every assignment in flight.
    deadlines: BTreeSet<(Instant, CheckId, Ticket)>,
    /// Checks whose open round wants more confirmations than there were eligible workers.
    starved: HashSet<CheckId>,
    /// Assignments made but not yet returned by [`Engine::due`].
    ready: Vec<Assignment>,
    ready_at: Option<Instant>,
    next_ticket: u64,
    stats: Stats,
}

impl Core {
    fn millis(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_millis() as u64
    }

    /// The instant `ms` after the origin; `None` before any time was kept (no result has
    /// been recorded then, so nothing asks).
    fn instant(&self, ms: u64) -> Option<Instant> {
        Some(self.origin? + Duration::from_millis(ms))
    }

    fn confirmations(&self, override_: Option<u32>) -> u32 {
        override_.unwrap_or(self.config.confirmations).max(1)
    }

    fn has_quorum(&self, confirmations: u32) -> bool {
        self.workers.live_count() >= confirmations as usize
    }

    fn hand(&mut self, id: CheckId, c: &mut CheckState, worker: Slot, kind: Kind, now: Instant) {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        let deadline = now + self.config.assignment_timeout;
        c.in_flight.push(Held {
            worker,
            ticket,
            kind,
            since: now,
            deadline,
        });
        self.deadlines.insert((deadline, id, ticket));
        self.workers.hold(worker, id);
        self.ready.push(Assignment {
            check: id,
            node: self.workers.node(worker).clone(),
            kind,
            ticket,
        });
        self.ready_at.get_or_insert(now);
        self.stats.assignments += 1;
    }

    fn release(&mut self, id: CheckId, held: &Held) {
        self.deadlines.remove(&(held.deadline, id, held.ticket));
        self.workers.release(held.worker, id);
    }

    /// Takes back every assignment in flight: their results will be [`Effect::Stale`].
    fn withdraw_all(&mut self, id: CheckId, c: &mut CheckState) {
        for held in std::mem::take(&mut c.in_flight) {
            self.release(id, &held);
            self.stats.withdrawn += 1;
        }
    }

    /// A worker could not run the check (fail or timeout): keep it off this check until the
    /// next regular due time. When that leaves nobody for a regular run, the run waits for the
    /// interval instead of bouncing between failing workers.
    fn give_up(&mut self, c: &mut CheckState, worker: Slot, kind: Kind, now: Instant) {
        if !c.avoid.contains(&worker) {
            c.avoid.push(worker);
        }
        if kind == Kind::Regular && !self.workers.any_live_except(&c.avoid) {
            c.avoid.clear();
            c.due_at = now + c.interval;
        }
    }

    /// Hands out whatever the check needs now: the missing confirmations of an open round,
    /// else its regular run once due.
    fn pump(&mut self, id: CheckId, c: &mut CheckState, now: Instant) {
        if c.round.is_empty() {
            self.starved.remove(&id);
        } else {
            let confirmations = self.confirmations(c.confirmations) as usize;
            let needed = confirmations.saturating_sub(c.round.len());
            let asked = c
                .in_flight
                .iter()
                .filter(|h| h.kind == Kind::Confirmation)
                .count();
            let want = needed.saturating_sub(asked);
            let eligible = |s| !c.round.contains(&s) && !c.holds(s) && !c.avoid.contains(&s);
            let picks = if self.config.distinct_locations {
                // Apart from the round's voters and from the workers already asked.
                let taken: Vec<Slot> = c
                    .round
                    .iter()
                    .copied()
                    .chain(
                        c.in_flight
                            .iter()
                            .filter(|h| h.kind == Kind::Confirmation)
                            .map(|h| h.worker),
                    )
                    .collect();
                self.workers.pick_many_apart(want, &taken, eligible)
            } else {
                self.workers.pick_many(want, eligible)
            };
            for &worker in &picks {
                self.hand(id, c, worker, Kind::Confirmation, now);
            }
            if picks.len() < want {
                self.starved.insert(id);
            } else {
                self.starved.remove(&id);
            }
        }
        if c.in_flight.is_empty()
            && now >= c.due_at
            && let Some(worker) = self.workers.pick_regular(c.last_worker, &c.avoid)
        {
            self.hand(id, c, worker, Kind::Regular, now);
        }
        self.settle(id, c);
    }

    /// Keeps the queue entry in step: queued at `due_at` exactly when nothing is in flight.
    fn settle(&mut self, id: CheckId, c: &mut CheckState) {
        c.free_empty();
        let want_queued = c.in_flight.is_empty();
        if c.queued {
            self.queue.remove(&(c.due_at, id));
        }
        if want_queued {
            self.queue.insert((c.due_at, id));
        }
        c.queued = want_queued;
    }

    /// Moves `due_at` (the queue is keyed on it).
    fn reschedule(&mut self, id: CheckId, c: &mut CheckState, due_at: Instant) {
        if c.queued {
            self.queue.remove(&(c.due_at, id));
            c.queued = false;
        }
        c.due_at = due_at;
        self.settle(id, c);
    }

    fn nodes(&self, slots: &[Slot]) -> Vec<NodeId> {
        slots
            .iter()
            .map(|&s| self.workers.node(s).clone())
            .collect()
    }
}

impl Engine {
    pub fn new(config: VoteConfig) -> Engine {
        Engine {
            checks: HashMap::new(),
            core: Core {
                config,
                origin: None,
                workers: Workers::default(),
                queue: BTreeSet::new(),
                deadlines: BTreeSet::new(),
                starved: HashSet::new(),
                ready: Vec::new(),
                ready_at: None,
                next_ticket: 0,
                stats: Stats::default(),
            },
            by_confirmations: ByConfirmations::default(),
            lost: BTreeSet::new(),
            restored: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &VoteConfig {
        &self.core.config
    }

    /// Adds a check (due at once) or applies a changed definition. A changed definition keeps
    /// the round state, except when `checks.status` was edited to something other than the
    /// engine's status: that is an operator's word and resets the check to it (see
    /// [`reset_status`](Engine::reset_status)). Our own flip, once written, arrives here as the
    /// status the engine already has and changes nothing.
    pub fn upsert_check(&mut self, def: &CheckDef, now: Instant) {
        self.upsert_check_due(def, now, now);
    }

    /// As [`upsert_check`](Engine::upsert_check), but a check new to the engine is first due at
    /// `first_due` (a new term spreads its first runs over their interval); its schedule
    /// after that first run is the usual one. A known check ignores `first_due`.
    pub fn upsert_check_due(&mut self, def: &CheckDef, now: Instant, first_due: Instant) {
        let id = def.id;
        let new_conf = self.core.confirmations(def.confirmations);
        let Some(c) = self.checks.get_mut(&id) else {
            let mut c = CheckState {
                interval: def.interval,
                delay: def.delay,
                confirmations: def.confirmations,
                def_status: def.status,
                status: def.status,
                round: ThinVec::new(),
                rounds: 0,
                last_worker: None,
                last_result_at: None,
                due_at: first_due.max(now),
                queued: false,
                in_flight: ThinVec::new(),
                avoid: ThinVec::new(),
                recent: ThinVec::new(),
            };
            self.core.settle(id, &mut c);
            self.checks.insert(id, c);
            self.by_confirmations.insert(id, new_conf);
            if !self.core.has_quorum(new_conf) {
                self.mark_lost(id);
            }
            return;
        };

        let old_conf = self.core.confirmations(c.confirmations);
        let operator_edit = def.status != c.def_status && def.status != c.status;
        c.def_status = def.status;
        c.delay = def.delay;
        c.confirmations = def.confirmations;
        if c.interval != def.interval {
            c.interval = def.interval;
            if let Some(last) = c.last_result_at {
                self.core.reschedule(id, c, last + def.interval);
            }
        }
        if operator_edit {
            Self::reset(&mut self.core, id, c, def.status);
        }
        self.core.pump(id, c, now);

        if old_conf != new_conf {
            self.by_confirmations.refile(id, old_conf, new_conf);
            match (
                self.core.has_quorum(old_conf),
                self.core.has_quorum(new_conf),
            ) {
                (true, false) => self.mark_lost(id),
                (false, true) => self.mark_restored(id),
                _ => {}
            }
        }
    }

    /// Forgets a check (deleted or disabled). Its assignments are withdrawn; late results for
    /// it are [`Effect::UnknownCheck`]. Returns whether it was known.
    pub fn remove_check(&mut self, id: CheckId) -> bool {
        let Some(mut c) = self.checks.remove(&id) else {
            return false;
        };
        self.core.withdraw_all(id, &mut c);
        if c.queued {
            self.core.queue.remove(&(c.due_at, id));
        }
        self.core.starved.remove(&id);
        let conf = self.core.confirmations(c.confirmations);
        self.by_confirmations.remove(id, conf);
        self.lost.remove(&id);
        self.restored.remove(&id);
        true
    }

    /// Sets a check's status and starts its voting afresh: the open round, the round count and
    /// the assignments in flight (which were run against the old status) are dropped. For an
    /// operator's edit (done by [`upsert_check`](Engine::upsert_check)) and for a controller that
    /// could not record a flip and must return to the stored status. Returns whether the
    /// check is known.
    pub fn reset_status(&mut self, id: CheckId, status: CheckStatus, now: Instant) -> bool {
        let Some(c) = self.checks.get_mut(&id) else {
            return false;
        };
        Self::reset(&mut self.core, id, c, status);
        self.core.pump(id, c, now);
        true
    }

    fn reset(core: &mut Core, id: CheckId, c: &mut CheckState, status: CheckStatus) {
        c.status = status;
        c.round.clear();
        c.rounds = 0;
        c.avoid.clear();
        core.withdraw_all(id, c);
        core.starved.remove(&id);
        core.settle(id, c);
    }

    /// A worker is live (the controller decides, from heartbeats or requests). A worker seen
    /// for the first time is registered; one that comes back keeps its place in open rounds.
    /// Rounds that were waiting for a worker ask it at once (see [`due`](Engine::due)).
    pub fn worker_up(&mut self, node: &NodeId, now: Instant) {
        self.worker_up_at(node, "", now);
    }

    /// Like [`worker_up`](Engine::worker_up), also recording where the worker runs (see
    /// [`VoteConfig::distinct_locations`]).
    pub fn worker_up_at(&mut self, node: &NodeId, location: &str, now: Instant) {
        let (slot, was_down) = self.core.workers.up(node);
        if !location.is_empty() {
            self.core.workers.set_location(slot, location);
        }
        if !was_down {
            return;
        }
        self.gained_a_worker(now);
    }

    /// A worker is gone. Its assignments are released and handed to other workers at once;
    /// its votes in open rounds stay counted (it did observe the result; a round still needs
    /// its confirmations from distinct workers, and only live ones are asked).
    pub fn worker_down(&mut self, node: &NodeId, now: Instant) {
        let Some(slot) = self.core.workers.slot(node) else {
            return;
        };
        if !self.core.workers.is_live(slot) {
            return;
        }
        if self.core.workers.is_impaired(slot) {
            // Not counted while impaired: only its (empty) holdings go.
            self.core.workers.down(slot);
            return;
        }
        let live_before = self.core.workers.live_count() as u32;
        let held = self.core.workers.down(slot);
        self.release_all(slot, held, now);
        self.lost_a_worker(live_before);
    }

    /// Releases what worker `slot` held of `held` (in check order) and asks again.
    fn release_all(&mut self, slot: Slot, mut held: Vec<CheckId>, now: Instant) {
        held.sort_unstable();
        for id in held {
            let Some(c) = self.checks.get_mut(&id) else {
                continue;
            };
            if let Some(pos) = c.in_flight.iter().position(|h| h.worker == slot) {
                let h = c.in_flight.swap_remove(pos);
                self.core.release(id, &h);
            }
            self.core.pump(id, c, now);
        }
    }

    /// The checks that needed exactly `live_before` workers have lost their quorum.
    fn lost_a_worker(&mut self, live_before: u32) {
        for id in self.by_confirmations.needing_exactly(live_before) {
            self.mark_lost(id);
        }
    }

    /// One more worker counts: checks that needed it regain their quorum, and rounds waiting
    /// for a worker ask at once.
    fn gained_a_worker(&mut self, now: Instant) {
        let live = self.core.workers.live_count() as u32;
        for id in self.by_confirmations.needing_exactly(live) {
            self.mark_restored(id);
        }
        let mut starved: Vec<CheckId> = self.core.starved.iter().copied().collect();
        starved.sort_unstable();
        for id in starved {
            if let Some(c) = self.checks.get_mut(&id) {
                self.core.pump(id, c, now);
            }
        }
    }

    /// A worker's canaries say it cannot judge (`true`), or that it can again. An impaired
    /// worker keeps its place but counts as not live: its assignments are released and
    /// handed to others at once, it is handed nothing, its results count as `fail`, and the
    /// checks that needed it lose their quorum until it recovers. Its votes already in open
    /// rounds stay, as a down worker's do. A worker seen for the first time is registered.
    pub fn set_impaired(&mut self, node: &NodeId, impaired: bool, now: Instant) {
        let slot = self.core.workers.register(node);
        let live_before = self.core.workers.live_count() as u32;
        let Some((counted, held)) = self.core.workers.set_impaired(slot, impaired) else {
            return;
        };
        self.release_all(slot, held, now);
        if !counted {
            return;
        }
        if impaired {
            self.lost_a_worker(live_before);
        } else {
            self.gained_a_worker(now);
        }
    }

    fn mark_lost(&mut self, id: CheckId) {
        if !self.restored.remove(&id) {
            self.lost.insert(id);
        }
    }

    fn mark_restored(&mut self, id: CheckId) {
        if !self.lost.remove(&id) {
            self.restored.insert(id);
        }
    }

    /// One result from `node` for the assignment `ticket` of `check`. Confirmations it calls
    /// for are handed out at once: the next [`due`](Engine::due) returns them, whatever its
    /// time.
    pub fn result(
        &mut self,
        node: &NodeId,
        check: CheckId,
        ticket: Ticket,
        outcome: Outcome,
        now: Instant,
    ) -> Effect {
        let core = &mut self.core;
        let Some(c) = self.checks.get_mut(&check) else {
            core.stats.unknown_results += 1;
            return Effect::UnknownCheck;
        };
        let Some(worker) = core.workers.slot(node) else {
            core.stats.stale_results += 1;
            return Effect::Stale;
        };
        let Some(pos) = c
            .in_flight
            .iter()
            .position(|h| h.worker == worker && h.ticket == ticket)
        else {
            core.stats.stale_results += 1;
            return Effect::Stale;
        };
        let held = c.in_flight.swap_remove(pos);
        core.release(check, &held);
        core.stats.results += 1;
        // An impaired worker cannot judge: whatever it saw is a `fail`.
        let outcome = if core.workers.is_impaired(worker) {
            Outcome::Fail
        } else {
            outcome
        };
        let at_ms = core.millis(now);
        c.record(worker, outcome, at_ms);

        let effect = match outcome.status() {
            None => {
                core.stats.fails += 1;
                core.give_up(c, worker, held.kind, now);
                Effect::Failed
            }
            Some(reported) => {
                c.last_worker = Some(worker);
                c.last_result_at = Some(now);
                let due_at = now + c.interval;
                core.reschedule(check, c, due_at);
                if reported == c.status {
                    let cleared = !c.round.is_empty() || c.rounds > 0;
                    c.round.clear();
                    c.rounds = 0;
                    c.avoid.clear();
                    // Runs still out belong to the round this result just ended.
                    core.withdraw_all(check, c);
                    Effect::Agreed { cleared }
                } else {
                    if !c.round.contains(&worker) {
                        c.round.push(worker);
                    }
                    let needed = core.confirmations(c.confirmations);
                    let quorum = core.has_quorum(needed);
                    if c.round.len() >= needed as usize && quorum {
                        Self::complete_round(core, check, c)
                    } else {
                        Effect::Voted {
                            votes: c.round.len() as u32,
                            needed,
                            quorum,
                        }
                    }
                }
            }
        };
        core.pump(check, c, now);
        effect
    }

    fn complete_round(core: &mut Core, id: CheckId, c: &mut CheckState) -> Effect {
        let members = std::mem::take(&mut c.round);
        c.rounds += 1;
        c.avoid.clear();
        // A round is closed: a confirmation still out must not open the next one before the
        // interval (rounds are spaced by the regular runs).
        core.withdraw_all(id, c);
        core.stats.rounds_completed += 1;
        if c.rounds > c.delay {
            let from = c.status;
            c.status = from.opposite();
            c.rounds = 0;
            core.stats.flips += 1;
            Effect::Flip(Flip {
                check: id,
                from,
                to: c.status,
                confirmed_by: core.nodes(&members),
            })
        } else {
            Effect::RoundComplete {
                rounds: c.rounds,
                needed: c.delay.saturating_add(1),
            }
        }
    }

    /// The work to hand out now: assignments made by earlier calls (confirmations, runs
    /// re-handed after a worker went down), then runs whose assignment timed out, then regular
    /// runs that are due. Call it after every input and at [`next_wake`](Engine::next_wake).
    pub fn due(&mut self, now: Instant) -> Vec<Assignment> {
        let mut expired = Vec::new();
        while let Some(&entry) = self.core.deadlines.first()
            && entry.0 <= now
        {
            self.core.deadlines.pop_first();
            expired.push(entry);
        }
        for (_, id, ticket) in expired {
            let Some(c) = self.checks.get_mut(&id) else {
                continue;
            };
            let Some(pos) = c.in_flight.iter().position(|h| h.ticket == ticket) else {
                continue;
            };
            let held = c.in_flight.swap_remove(pos);
            self.core.release(id, &held);
            self.core.stats.timeouts += 1;
            self.core.give_up(c, held.worker, held.kind, now);
            self.core.pump(id, c, now);
        }

        // With nobody live nothing can be handed; the queue waits for worker_up.
        if self.core.workers.live_count() > 0 {
            let mut due = Vec::new();
            while let Some(&entry) = self.core.queue.first()
                && entry.0 <= now
            {
                self.core.queue.pop_first();
                due.push(entry.1);
            }
            for id in due {
                let Some(c) = self.checks.get_mut(&id) else {
                    continue;
                };
                c.queued = false;
                // A new regular due time: workers that failed it get another chance.
                c.avoid.clear();
                self.core.pump(id, c, now);
            }
        }

        self.core.ready_at = None;
        std::mem::take(&mut self.core.ready)
    }

    /// When [`due`](Engine::due) has something next: the earliest of a waiting assignment, an
    /// assignment timeout and a due regular run. `None` when nothing is scheduled (or no worker
    /// is live and nothing is in flight): wait for the next input.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.core.ready_at;
        let mut consider = |t: Instant| {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        };
        if let Some(&(t, _, _)) = self.core.deadlines.first() {
            consider(t);
        }
        if self.core.workers.live_count() > 0
            && let Some(&(t, _)) = self.core.queue.first()
        {
            consider(t);
        }
        wake
    }

    /// Net quorum changes since the last call (`None` when there are none). The controller
    /// sends one admin notice per non-empty change, and should discard what it gets before the
    /// workers had time to connect after it took control.
    pub fn take_quorum_changes(&mut self) -> Option<QuorumChange> {
        if self.lost.is_empty() && self.restored.is_empty() {
            return None;
        }
        Some(QuorumChange {
            live_workers: self.core.workers.live_count(),
            lost: std::mem::take(&mut self.lost).into_iter().collect(),
            restored: std::mem::take(&mut self.restored).into_iter().collect(),
        })
    }

    /// Checks with fewer live workers than their confirmations, sorted.
    pub fn insufficient_quorum(&self) -> Vec<CheckId> {
        let live = self.core.workers.live_count() as u32;
        self.by_confirmations.short_of(live)
    }

    /// Whether `node` still holds assignment `ticket` of `check` (it has not timed out, been
    /// withdrawn or handed elsewhere).
    pub fn holds(&self, node: &NodeId, check: CheckId, ticket: Ticket) -> bool {
        let (Some(c), Some(worker)) = (self.checks.get(&check), self.core.workers.slot(node))
        else {
            return false;
        };
        c.in_flight
            .iter()
            .any(|h| h.worker == worker && h.ticket == ticket)
    }

    pub fn status(&self, id: CheckId) -> Option<CheckStatus> {
        self.checks.get(&id).map(|c| c.status)
    }

    pub fn check_count(&self) -> usize {
        self.checks.len()
    }

    pub fn live_workers(&self) -> usize {
        self.core.workers.live_count()
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// One check, for the status view.
    pub fn check(&self, id: CheckId) -> Option<CheckView> {
        let c = self.checks.get(&id)?;
        let core = &self.core;
        let confirmations = core.confirmations(c.confirmations);
        Some(CheckView {
            id,
            status: c.status,
            interval: c.interval,
            delay: c.delay,
            confirmations,
            round: core.nodes(&c.round),
            rounds_completed: c.rounds,
            last_worker: c.last_worker.map(|s| core.workers.node(s).clone()),
            last_result_at: c.last_result_at,
            next_due: c.in_flight.is_empty().then_some(c.due_at),
            in_flight: c
                .in_flight
                .iter()
                .map(|h| InFlightView {
                    node: core.workers.node(h.worker).clone(),
                    kind: h.kind,
                    ticket: h.ticket,
                    since: h.since,
                })
                .collect(),
            insufficient_quorum: !core.has_quorum(confirmations),
            last_results: c
                .recent
                .iter()
                .filter_map(|r| {
                    Some(LastResult {
                        node: core.workers.node(r.worker).clone(),
                        outcome: r.outcome,
                        at: core.instant(r.at_ms)?,
                    })
                })
                .collect(),
        })
    }

    /// The workers, sorted by node id.
    pub fn workers(&self) -> Vec<WorkerView> {
        let mut views: Vec<WorkerView> = self
            .core
            .workers
            .views()
            .map(|(node, live, impaired, holding, handed)| {
                let mut in_flight: Vec<CheckId> = holding.iter().copied().collect();
                in_flight.sort_unstable();
                WorkerView {
                    node: node.clone(),
                    live,
                    impaired,
                    in_flight,
                    handed,
                }
            })
            .collect();
        views.sort_by(|a, b| a.node.cmp(&b.node));
        views
    }

    /// Everything, for the status JSON.
    pub fn snapshot(&self) -> Snapshot {
        let mut ids: Vec<CheckId> = self.checks.keys().copied().collect();
        ids.sort_unstable();
        Snapshot {
            live_workers: self.core.workers.live_count(),
            checks: ids.into_iter().filter_map(|id| self.check(id)).collect(),
            workers: self.workers(),
            stats: self.core.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-check memory: the state itself stays small (the budget is 1 KB per check with the
    /// map, the queue entry and the short vectors).
    #[test]
    fn state_is_small() {
        let size = std::mem::size_of::<CheckState>();
        assert!(size <= 128, "CheckState is {size} bytes");
        assert!(std::mem::size_of::<Held>() <= 64);
        assert!(std::mem::size_of::<Recent>() <= 16);
    }

    /// A check between runs holds no vector allocations except its latest results, and those
    /// are sized to the workers that reported (not doubled), and the time of a result survives
    /// its compact form.
    #[test]
    fn idle_checks_keep_no_spare_capacity() {
        let t0 = Instant::now();
        let mut e = Engine::new(VoteConfig {
            confirmations: 2,
            assignment_timeout: Duration::from_secs(30),
            distinct_locations: false,
        });
        let nodes: Vec<NodeId> = (0..3).map(|i| NodeId(format!("w{i}"))).collect();
        for n in &nodes {
            e.worker_up(n, t0);
        }
        let id = CheckId(1);
        e.upsert_check(
            &CheckDef {
                id,
                interval: Duration::from_secs(10),
                delay: 0,
                status: CheckStatus::Online,
                confirmations: None,
            },
            t0,
        );
        let mut now = t0;
        // An offline result opens a round (a confirmation is asked), then the round is
        // answered online, then regular runs.
        for step in 0..6 {
            for a in e.due(now) {
                let outcome = if step == 0 {
                    Outcome::Offline
                } else {
                    Outcome::Online
                };
                e.result(
                    &a.node,
                    a.check,
                    a.ticket,
                    outcome,
                    now + Duration::from_millis(7),
                );
            }
            let c = &e.checks[&id];
            if c.in_flight.is_empty() {
                assert_eq!(c.in_flight.capacity(), 0, "step {step}");
            }
            if c.round.is_empty() {
                assert_eq!(c.round.capacity(), 0, "step {step}");
            }
            assert_eq!(c.avoid.capacity(), 0, "step {step}");
            assert_eq!(c.recent.capacity(), c.recent.len(), "step {step}");
            now += Duration::from_secs(10);
        }
        let c = &e.checks[&id];
        assert!(c.in_flight.is_empty() && c.round.is_empty());
        assert!(!c.recent.is_empty());
        let snapshot = e.snapshot();
        let last = &snapshot.checks[0].last_results[0];
        assert_eq!(last.outcome, Outcome::Online);
        assert_eq!(
            last.at,
            now - Duration::from_secs(10) + Duration::from_millis(7)
        );
    }
}
