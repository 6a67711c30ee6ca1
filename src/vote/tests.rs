//! The voting rules, step by step on explicit instants, and gobearmon's scenarios S2, S3 and S9
//! on a small simulated cluster.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::model::{CheckId, CheckStatus, NodeId};

use CheckStatus::{Offline, Online};

fn node(name: &str) -> NodeId {
    NodeId(name.to_string())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn def(id: i64, interval: u64, delay: u32, status: CheckStatus) -> CheckDef {
    CheckDef {
        id: CheckId(id),
        interval: secs(interval),
        delay,
        status,
        confirmations: None,
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// An engine with live workers, driven step by step.
struct Bench {
    e: Engine,
    t0: Instant,
}

impl Bench {
    fn new(confirmations: u32, workers: &[&str]) -> Bench {
        let t0 = Instant::now();
        let mut e = Engine::new(VoteConfig {
            confirmations,
            assignment_timeout: TIMEOUT,
            distinct_locations: false,
        });
        for w in workers {
            e.worker_up(&node(w), t0);
        }
        Bench { e, t0 }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn add(&mut self, def: CheckDef) {
        let t0 = self.t0;
        self.e.upsert_check(&def, t0);
    }

    fn due(&mut self, d: Duration) -> Vec<Assignment> {
        let now = self.at(d);
        self.e.due(now)
    }

    /// The single assignment `due` hands out at `d`.
    fn one(&mut self, d: Duration) -> Assignment {
        let mut v = self.due(d);
        assert_eq!(
            v.len(),
            1,
            "expected exactly one assignment at {d:?}: {v:?}"
        );
        v.pop().unwrap()
    }

    fn answer(&mut self, a: &Assignment, outcome: Outcome, d: Duration) -> Effect {
        let now = self.at(d);
        self.e.result(&a.node, a.check, a.ticket, outcome, now)
    }

    fn view(&self, id: i64) -> CheckView {
        self.e.check(CheckId(id)).expect("check is known")
    }
}

fn round_names(view: &CheckView) -> Vec<&str> {
    view.round.iter().map(|n| n.0.as_str()).collect()
}

/// One delivered result, as the simulation saw it.
#[derive(Debug, Clone)]
struct Delivered {
    at: Instant,
    assignment: Assignment,
    outcome: Outcome,
    effect: Effect,
}

/// A cluster where every assignment is answered `latency` after it was handed out; the
/// target's answer is decided when the result is delivered (the moment it is "requested").
struct Sim {
    e: Engine,
    t0: Instant,
    now: Instant,
    latency: Duration,
    step: Duration,
    pending: VecDeque<(Instant, Assignment)>,
    handed: Vec<(Instant, Assignment)>,
    delivered: Vec<Delivered>,
}

impl Sim {
    fn new(config: VoteConfig, workers: &[&str]) -> Sim {
        let t0 = Instant::now();
        let mut e = Engine::new(config);
        for w in workers {
            e.worker_up(&node(w), t0);
        }
        Sim {
            e,
            t0,
            now: t0,
            latency: millis(500),
            step: millis(100),
            pending: VecDeque::new(),
            handed: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Runs until `until` after the start; `target` answers each delivered run.
    fn run(&mut self, until: Duration, target: &mut dyn FnMut(&Assignment) -> Outcome) {
        let end = self.t0 + until;
        while self.now <= end {
            while let Some((at, _)) = self.pending.front()
                && *at <= self.now
            {
                let (_, a) = self.pending.pop_front().unwrap();
                let outcome = target(&a);
                let effect = self.e.result(&a.node, a.check, a.ticket, outcome, self.now);
                self.delivered.push(Delivered {
                    at: self.now,
                    assignment: a,
                    outcome,
                    effect,
                });
            }
            for a in self.e.due(self.now) {
                self.pending.push_back((self.now + self.latency, a.clone()));
                self.handed.push((self.now, a));
            }
            self.now += self.step;
        }
    }

    fn flips(&self) -> Vec<(Instant, Flip)> {
        self.delivered
            .iter()
            .filter_map(|d| match &d.effect {
                Effect::Flip(f) => Some((d.at, f.clone())),
                _ => None,
            })
            .collect()
    }
}

fn config(confirmations: u32) -> VoteConfig {
    VoteConfig {
        confirmations,
        assignment_timeout: TIMEOUT,
        distinct_locations: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios S2, S3, S9
// ---------------------------------------------------------------------------------------------

/// S2: confirmations 2, delay 2, interval 5; the target fails forever. The flip comes with the
/// 6th request exactly, no earlier than 2 intervals after the first, and only once.
#[test]
fn s2_flip_after_exactly_six_differing_results() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3"]);
    sim.e.upsert_check(&def(2, 5, 2, Online), sim.t0);
    let mut requests = 0u32;
    let mut requests_at_flip = None;
    let mut target = |_: &Assignment| {
        requests += 1;
        Outcome::Offline
    };
    sim.run(secs(60), &mut target);

    let flips = sim.flips();
    assert_eq!(flips.len(), 1, "one flip and no more: {flips:?}");
    let (flip_at, flip) = &flips[0];
    assert_eq!((flip.from, flip.to), (Online, Offline));
    assert_eq!(flip.confirmed_by.len(), 2);
    for (i, d) in sim.delivered.iter().enumerate() {
        if matches!(d.effect, Effect::Flip(_)) {
            requests_at_flip = Some(i + 1);
        }
    }
    assert_eq!(requests_at_flip, Some(6), "the 6th request flips it");
    let first = sim.delivered[0].at;
    assert!(
        *flip_at >= first + secs(10),
        "flip {:?} after the first result, want >= 10 s",
        *flip_at - first
    );
    // Rounds: 5 results before the flip, 2 per round, and each round's first run is regular.
    let effects: Vec<&Effect> = sim.delivered[..5].iter().map(|d| &d.effect).collect();
    assert!(matches!(
        effects[1],
        Effect::RoundComplete {
            rounds: 1,
            needed: 3
        }
    ));
    assert!(matches!(
        effects[3],
        Effect::RoundComplete {
            rounds: 2,
            needed: 3
        }
    ));
    let kinds: Vec<Kind> = sim.delivered[..6]
        .iter()
        .map(|d| d.assignment.kind)
        .collect();
    use Kind::{Confirmation, Regular};
    assert_eq!(
        kinds,
        [
            Regular,
            Confirmation,
            Regular,
            Confirmation,
            Regular,
            Confirmation
        ]
    );
    assert_eq!(sim.e.status(CheckId(2)), Some(Offline));
    assert!(requests > 6, "the check keeps running after the flip");
}

/// S2 variant: 5 failing requests, then healthy: never a flip.
#[test]
fn s2_five_bad_then_good_never_flips() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3"]);
    sim.e.upsert_check(&def(2, 5, 2, Online), sim.t0);
    let mut requests = 0u32;
    let mut target = |_: &Assignment| {
        requests += 1;
        if requests <= 5 {
            Outcome::Offline
        } else {
            Outcome::Online
        }
    };
    sim.run(secs(120), &mut target);
    assert!(sim.flips().is_empty());
    assert_eq!(sim.e.status(CheckId(2)), Some(Online));
    // The 5th result had brought it to 2 complete rounds and an open one; the 6th cleared it.
    assert!(matches!(
        sim.delivered[4].effect,
        Effect::Voted {
            votes: 1,
            needed: 2,
            quorum: true
        }
    ));
    assert_eq!(sim.delivered[5].effect, Effect::Agreed { cleared: true });
    let view = sim.e.check(CheckId(2)).unwrap();
    assert_eq!(view.rounds_completed, 0);
    assert!(view.round.is_empty());
}

/// S3: the target alternates failing and healthy per request: never a flip.
#[test]
fn s3_alternating_results_never_flip() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3"]);
    sim.e.upsert_check(&def(2, 5, 2, Online), sim.t0);
    let mut requests = 0u32;
    let mut target = |_: &Assignment| {
        requests += 1;
        if requests % 2 == 1 {
            Outcome::Offline
        } else {
            Outcome::Online
        }
    };
    sim.run(secs(120), &mut target);
    assert!(requests >= 40, "it kept running: {requests} requests");
    assert!(sim.flips().is_empty());
    // Every failing answer opens a round, and every healthy one clears it.
    for d in &sim.delivered {
        match d.outcome {
            Outcome::Offline => {
                assert!(matches!(d.effect, Effect::Voted { votes: 1, .. }), "{d:?}")
            }
            _ => assert_eq!(d.effect, Effect::Agreed { cleared: true }, "{d:?}"),
        }
    }
    assert_eq!(sim.e.status(CheckId(2)), Some(Online));
}

/// S9: a healthy check inserted as offline flips online once, after the full count.
#[test]
fn s9_initial_offline_status_flips_online_once() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3"]);
    sim.e.upsert_check(&def(9, 5, 1, Offline), sim.t0);
    sim.run(secs(60), &mut |_| Outcome::Online);
    let flips = sim.flips();
    assert_eq!(flips.len(), 1);
    assert_eq!((flips[0].1.from, flips[0].1.to), (Offline, Online));
    let position = sim
        .delivered
        .iter()
        .position(|d| matches!(d.effect, Effect::Flip(_)));
    assert_eq!(
        position,
        Some(3),
        "2 confirmations x 2 rounds = the 4th result"
    );
}

// ---------------------------------------------------------------------------------------------
// Rounds and flips
// ---------------------------------------------------------------------------------------------

/// After a flip the count starts from zero: the way back needs the full count again, not one
/// round (gobearmon's [BUG] 4).
#[test]
fn flip_back_needs_the_full_count_again() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3"]);
    sim.e.upsert_check(&def(1, 5, 2, Online), sim.t0);
    let mut down = true;
    let mut requests_after = 0u32;
    let mut flipped_back_after = None;
    // Down until the first flip, then healthy; count healthy requests until the flip back.
    let mut target = |_: &Assignment| {
        if down {
            Outcome::Offline
        } else {
            requests_after += 1;
            Outcome::Online
        }
    };
    while sim.flips().is_empty() {
        let until = sim.now - sim.t0 + sim.step;
        sim.run(until, &mut target);
    }
    down = false;
    let mut target = |_: &Assignment| {
        if down {
            Outcome::Offline
        } else {
            requests_after += 1;
            Outcome::Online
        }
    };
    let start = sim.delivered.len();
    sim.run(secs(120), &mut target);
    for (i, d) in sim.delivered[start..].iter().enumerate() {
        if matches!(d.effect, Effect::Flip(_)) && flipped_back_after.is_none() {
            flipped_back_after = Some(i + 1);
        }
    }
    assert_eq!(
        flipped_back_after,
        Some(6),
        "the flip back takes 6 results again"
    );
    assert_eq!(sim.flips().len(), 2);
    assert_eq!(sim.e.status(CheckId(1)), Some(Online));
    assert!(requests_after > 6);
}

#[test]
fn round_state_step_by_step() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 1, Online));
    let r = b.one(secs(0));
    assert_eq!(r.kind, Kind::Regular);
    assert_eq!(
        b.answer(&r, Outcome::Offline, secs(1)),
        Effect::Voted {
            votes: 1,
            needed: 2,
            quorum: true
        }
    );
    assert_eq!(round_names(&b.view(1)), [r.node.0.as_str()]);
    let c = b.one(secs(1));
    assert_eq!(c.kind, Kind::Confirmation);
    assert_ne!(c.node, r.node);
    assert_eq!(
        b.answer(&c, Outcome::Offline, secs(2)),
        Effect::RoundComplete {
            rounds: 1,
            needed: 2
        }
    );
    let v = b.view(1);
    assert_eq!(v.rounds_completed, 1);
    assert!(v.round.is_empty());
    assert_eq!(
        v.next_due,
        Some(b.at(secs(12))),
        "next round is one interval on"
    );
    assert!(b.due(secs(11)).is_empty(), "not before the interval");

    // An agreeing result clears the count.
    let r2 = b.one(secs(12));
    assert_eq!(r2.kind, Kind::Regular);
    assert_eq!(
        b.answer(&r2, Outcome::Online, secs(13)),
        Effect::Agreed { cleared: true }
    );
    assert_eq!(b.view(1).rounds_completed, 0);

    // Two full rounds now flip it.
    let mut effects = Vec::new();
    let mut t = 23;
    for _ in 0..2 {
        let r = b.one(secs(t));
        effects.push(b.answer(&r, Outcome::Offline, secs(t)));
        let c = b.one(secs(t));
        effects.push(b.answer(&c, Outcome::Offline, secs(t + 1)));
        t += 11;
    }
    assert!(matches!(
        effects[1],
        Effect::RoundComplete { rounds: 1, .. }
    ));
    match &effects[3] {
        Effect::Flip(f) => {
            assert_eq!((f.check, f.from, f.to), (CheckId(1), Online, Offline));
            assert_eq!(f.confirmed_by.len(), 2);
        }
        other => panic!("expected a flip, got {other:?}"),
    }
    let v = b.view(1);
    assert_eq!((v.status, v.rounds_completed), (Offline, 0));
    assert_eq!(b.e.stats().flips, 1);
}

/// An agreeing confirmation ends the round; the other confirmation still out is withdrawn, so
/// its differing answer cannot open a round off schedule.
#[test]
fn agreeing_confirmation_clears_round_and_withdraws_the_rest() {
    let mut b = Bench::new(3, &["a", "b", "c", "d"]);
    b.add(def(1, 10, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(1));
    let confs = b.due(secs(1));
    assert_eq!(confs.len(), 2);
    assert_eq!(
        b.answer(&confs[0], Outcome::Online, secs(2)),
        Effect::Agreed { cleared: true }
    );
    assert_eq!(
        b.answer(&confs[1], Outcome::Offline, secs(2)),
        Effect::Stale
    );
    let v = b.view(1);
    assert!(v.round.is_empty() && v.in_flight.is_empty());
    assert_eq!(v.next_due, Some(b.at(secs(12))));
    assert!(b.due(secs(11)).is_empty());
    assert_eq!(b.e.stats().withdrawn, 1);
}

#[test]
fn delay_zero_flips_after_one_round() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    assert!(matches!(
        b.answer(&c, Outcome::Offline, secs(1)),
        Effect::Flip(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Confirmations
// ---------------------------------------------------------------------------------------------

/// All `confirmations - 1` runs go out in the same step as the differing result, to distinct
/// workers other than the reporter, and the round completes one latency later (not
/// `confirmations - 1` latencies, as gobearmon's sequential asking would).
#[test]
fn confirmations_are_asked_at_once_in_parallel() {
    let mut sim = Sim::new(config(3), &["w1", "w2", "w3", "w4", "w5"]);
    sim.e.upsert_check(&def(1, 30, 0, Online), sim.t0);
    sim.run(secs(5), &mut |_| Outcome::Offline);
    let first = &sim.delivered[0];
    let confs: Vec<&(Instant, Assignment)> = sim
        .handed
        .iter()
        .filter(|(_, a)| a.kind == Kind::Confirmation)
        .collect();
    assert_eq!(confs.len(), 2);
    assert!(confs.iter().all(|(at, _)| *at == first.at));
    assert_ne!(confs[0].1.node, confs[1].1.node);
    assert!(confs.iter().all(|(_, a)| a.node != first.assignment.node));
    let flip_at = sim.flips()[0].0;
    assert_eq!(flip_at, first.at + sim.latency);
}

/// Whom to ask: live workers not in the round and not holding the check.
#[test]
fn confirmations_skip_round_members_holders_and_down_workers() {
    let mut b = Bench::new(3, &["a", "b", "c", "d", "e"]);
    b.e.worker_down(&node("e"), b.t0);
    b.add(def(1, 10, 5, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let confs = b.due(secs(0));
    assert_eq!(confs.len(), 2);
    // One confirmation agrees with the reporter; the other is still out.
    b.answer(&confs[0], Outcome::Offline, secs(1));
    let mut asked: Vec<&str> = vec![r.node.0.as_str(), confs[0].node.0.as_str()];
    asked.push(confs[1].node.0.as_str());
    asked.sort();
    assert!(!asked.contains(&"e"));
    // Nobody else is asked while the third worker is out: the round needs only one more.
    assert!(b.due(secs(1)).is_empty());
    let v = b.view(1);
    assert_eq!(v.round.len(), 2);
    assert_eq!(v.in_flight.len(), 1);
}

/// A `fail` counts neither way: the round keeps its votes, and another worker is asked.
#[test]
fn fail_does_not_vote_and_another_worker_is_asked() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 1, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c1 = b.one(secs(0));
    assert_eq!(b.answer(&c1, Outcome::Fail, secs(1)), Effect::Failed);
    let v = b.view(1);
    assert_eq!(v.round.len(), 1);
    assert_eq!(v.rounds_completed, 0);
    let c2 = b.one(secs(1));
    assert_eq!(c2.kind, Kind::Confirmation);
    assert!(c2.node != r.node && c2.node != c1.node);
    assert!(matches!(
        b.answer(&c2, Outcome::Offline, secs(2)),
        Effect::RoundComplete { rounds: 1, .. }
    ));
    assert_eq!(b.e.stats().fails, 1);
}

/// A fail in an agreeing streak does not clear anything either.
#[test]
fn fail_does_not_clear_a_count() {
    let mut b = Bench::new(1, &["a", "b"]);
    b.add(def(1, 10, 2, Online));
    let r = b.one(secs(0));
    assert!(matches!(
        b.answer(&r, Outcome::Offline, secs(0)),
        Effect::RoundComplete { rounds: 1, .. }
    ));
    let r = b.one(secs(10));
    assert_eq!(b.answer(&r, Outcome::Fail, secs(10)), Effect::Failed);
    assert_eq!(b.view(1).rounds_completed, 1);
}

/// When the only other worker failed the confirmation, the round waits for the next regular
/// due time and then asks it again (no busy loop).
#[test]
fn stalled_round_retries_at_the_next_due_time() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.answer(&c, Outcome::Fail, secs(1));
    assert!(b.due(secs(1)).is_empty());
    assert!(b.due(secs(9)).is_empty());
    assert_eq!(b.e.next_wake(), Some(b.at(secs(10))));
    let again = b.one(secs(10));
    assert_eq!((again.kind, &again.node), (Kind::Confirmation, &c.node));
    assert!(matches!(
        b.answer(&again, Outcome::Offline, secs(11)),
        Effect::Flip(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Regular runs: rotation, spreading, single worker
// ---------------------------------------------------------------------------------------------

#[test]
fn new_check_is_due_at_once_to_one_worker() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 60, 1, Online));
    assert_eq!(b.e.next_wake(), Some(b.t0));
    let a = b.one(secs(0));
    assert_eq!((a.check, a.kind), (CheckId(1), Kind::Regular));
    assert!(
        b.due(TIMEOUT - millis(1)).is_empty(),
        "nothing else while it runs"
    );
    assert_eq!(b.view(1).next_due, None);
}

/// Interval is measured from the result, and the next regular run never goes to the worker
/// that ran it last while another is live.
#[test]
fn regular_runs_rotate_and_follow_the_interval() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 60, 1, Online));
    let mut t = 0;
    let mut last: Option<NodeId> = None;
    let mut counts: HashMap<NodeId, u32> = HashMap::new();
    for _ in 0..30 {
        if t > 0 {
            assert!(
                b.due(secs(t) - millis(1)).is_empty(),
                "not before the interval"
            );
        }
        let a = b.one(secs(t));
        assert_eq!(a.kind, Kind::Regular);
        assert_ne!(Some(&a.node), last.as_ref(), "never the last worker");
        assert_eq!(
            b.answer(&a, Outcome::Online, secs(t + 2)),
            Effect::Agreed { cleared: false }
        );
        *counts.entry(a.node.clone()).or_default() += 1;
        last = Some(a.node);
        t += 62;
    }
    assert_eq!(counts.len(), 3);
    assert!(
        counts.values().all(|&n| n == 10),
        "spread evenly: {counts:?}"
    );
}

#[test]
fn two_workers_alternate() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 5, 1, Online));
    let mut seen = Vec::new();
    for i in 0..6 {
        let a = b.one(secs(i * 5));
        b.answer(&a, Outcome::Online, secs(i * 5));
        seen.push(a.node.0);
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
}

/// Many checks due at once are spread over the workers by load.
#[test]
fn load_is_spread_over_workers() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    for id in 0..30 {
        b.add(def(id, 60, 1, Online));
    }
    let all = b.due(secs(0));
    assert_eq!(all.len(), 30);
    for w in b.e.workers() {
        assert_eq!(w.in_flight.len(), 10, "{w:?}");
    }
}

/// A single worker still runs every check every interval (gobearmon froze here), even when
/// the global confirmations leave it without quorum.
#[test]
fn single_worker_runs_every_interval() {
    let mut b = Bench::new(2, &["solo"]);
    b.add(def(1, 10, 0, Online));
    b.add(def(2, 10, 0, Online));
    let mut t = 0;
    for _ in 0..20 {
        let runs = b.due(secs(t));
        assert_eq!(runs.len(), 2, "at {t}");
        for a in &runs {
            assert_eq!(a.node, node("solo"));
            let outcome = if a.check == CheckId(1) {
                Outcome::Online
            } else {
                Outcome::Offline
            };
            b.answer(a, outcome, secs(t + 1));
        }
        assert!(b.due(secs(t + 10)).is_empty());
        t += 11;
    }
    // Without quorum, the failing one never flips.
    assert_eq!(b.e.status(CheckId(2)), Some(Online));
    assert_eq!(b.e.insufficient_quorum(), [CheckId(1), CheckId(2)]);
}

#[test]
fn single_worker_flips_with_confirmations_one() {
    let mut b = Bench::new(1, &["solo"]);
    b.add(def(1, 10, 1, Online));
    let a = b.one(secs(0));
    assert_eq!(
        b.answer(&a, Outcome::Offline, secs(1)),
        Effect::RoundComplete {
            rounds: 1,
            needed: 2
        }
    );
    assert!(b.due(secs(10)).is_empty());
    let a = b.one(secs(11));
    assert_eq!(a.node, node("solo"));
    match b.answer(&a, Outcome::Offline, secs(12)) {
        Effect::Flip(f) => assert_eq!(f.confirmed_by, [node("solo")]),
        other => panic!("expected a flip, got {other:?}"),
    }
    assert!(b.e.insufficient_quorum().is_empty());
}

/// A failed regular run goes to another worker at once; when every live worker failed it,
/// the run waits one interval instead of bouncing.
#[test]
fn failed_regular_run_is_handed_elsewhere_then_waits() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 1, Online));
    let first = b.one(secs(0));
    assert_eq!(b.answer(&first, Outcome::Fail, secs(1)), Effect::Failed);
    let second = b.one(secs(1));
    assert_ne!(second.node, first.node);
    assert_eq!(second.kind, Kind::Regular);
    assert_eq!(b.answer(&second, Outcome::Fail, secs(2)), Effect::Failed);
    assert!(b.due(secs(2)).is_empty());
    assert_eq!(b.view(1).next_due, Some(b.at(secs(12))));
    b.one(secs(12));
}

// ---------------------------------------------------------------------------------------------
// Quorum
// ---------------------------------------------------------------------------------------------

#[test]
fn insufficient_quorum_keeps_status_and_resumes() {
    let mut b = Bench::new(3, &["a", "b", "c"]);
    b.add(def(1, 10, 0, Online));
    b.add(def(2, 10, 0, Online));
    assert_eq!(b.e.take_quorum_changes(), None);
    b.e.worker_down(&node("c"), b.t0);
    let change = b.e.take_quorum_changes().expect("a change");
    assert_eq!(change.live_workers, 2);
    assert_eq!(change.lost, [CheckId(1), CheckId(2)]);
    assert!(change.restored.is_empty());
    assert_eq!(b.e.take_quorum_changes(), None, "reported once");
    assert_eq!(b.e.insufficient_quorum(), [CheckId(1), CheckId(2)]);
    assert!(b.view(1).insufficient_quorum);

    // Check 1 fails for a minute: it keeps running on the two live workers, never flips.
    let mut t = 0;
    let mut votes = Vec::new();
    while t < 60 {
        for a in b.due(secs(t)) {
            let outcome = if a.check == CheckId(1) {
                Outcome::Offline
            } else {
                Outcome::Online
            };
            let e = b.answer(&a, outcome, secs(t));
            if a.check == CheckId(1) {
                votes.push(e);
            }
        }
        t += 1;
    }
    assert!(votes.len() >= 6, "it kept running: {votes:?}");
    assert!(votes.iter().all(|e| matches!(
        e,
        Effect::Voted {
            needed: 3,
            quorum: false,
            ..
        }
    )));
    assert_eq!(b.e.status(CheckId(1)), Some(Online));
    assert_eq!(b.view(1).round.len(), 2);

    // The third worker comes back: it is asked at once and its vote completes the round.
    b.e.worker_up(&node("c"), b.at(secs(60)));
    let change = b.e.take_quorum_changes().expect("a change");
    assert_eq!(change.restored, [CheckId(1), CheckId(2)]);
    assert!(b.e.insufficient_quorum().is_empty());
    let mut runs = b.due(secs(60));
    runs.retain(|a| a.check == CheckId(1));
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].kind, &runs[0].node),
        (Kind::Confirmation, &node("c"))
    );
    assert!(matches!(
        b.answer(&runs[0], Outcome::Offline, secs(61)),
        Effect::Flip(_)
    ));
}

/// A worker that goes down and comes back before the change is taken is no change at all.
#[test]
fn quorum_flap_between_takes_is_no_change() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    b.e.worker_down(&node("a"), b.t0);
    b.e.worker_up(&node("a"), b.t0);
    assert_eq!(b.e.take_quorum_changes(), None);
    b.e.worker_down(&node("b"), b.t0);
    b.e.worker_down(&node("b"), b.t0);
    let change = b.e.take_quorum_changes().unwrap();
    assert_eq!(change.lost, [CheckId(1)]);
    assert_eq!(change.live_workers, 1);
    // And the other way round: back and gone again is no change either.
    b.e.worker_up(&node("b"), b.t0);
    b.e.worker_down(&node("b"), b.t0);
    assert_eq!(b.e.take_quorum_changes(), None);
    b.e.worker_up(&node("b"), b.t0);
    assert_eq!(b.e.take_quorum_changes().unwrap().restored, [CheckId(1)]);
}

/// A check added while workers are short is reported; so is one whose override is raised.
#[test]
fn quorum_follows_additions_and_overrides() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let mut big = def(2, 10, 0, Online);
    big.confirmations = Some(3);
    b.add(big.clone());
    assert_eq!(b.e.take_quorum_changes().unwrap().lost, [CheckId(2)]);
    let mut raised = def(1, 10, 0, Online);
    raised.confirmations = Some(5);
    b.e.upsert_check(&raised, b.t0);
    assert_eq!(b.e.take_quorum_changes().unwrap().lost, [CheckId(1)]);
    big.confirmations = Some(2);
    b.e.upsert_check(&big, b.t0);
    assert_eq!(b.e.take_quorum_changes().unwrap().restored, [CheckId(2)]);
    assert_eq!(b.e.insufficient_quorum(), [CheckId(1)]);
}

// ---------------------------------------------------------------------------------------------
// Per-check override
// ---------------------------------------------------------------------------------------------

#[test]
fn per_check_confirmations_override_the_global_value() {
    let mut sim = Sim::new(config(2), &["w1", "w2", "w3", "w4"]);
    let mut one = def(1, 5, 1, Online);
    one.confirmations = Some(1);
    let mut three = def(3, 5, 1, Online);
    three.confirmations = Some(3);
    sim.e.upsert_check(&one, sim.t0);
    sim.e.upsert_check(&def(2, 5, 1, Online), sim.t0);
    sim.e.upsert_check(&three, sim.t0);
    let mut per_check: HashMap<CheckId, u32> = HashMap::new();
    let mut counted = HashMap::new();
    sim.run(secs(30), &mut |a| {
        *per_check.entry(a.check).or_default() += 1;
        Outcome::Offline
    });
    for (i, d) in sim.delivered.iter().enumerate() {
        if matches!(d.effect, Effect::Flip(_)) {
            let n = sim.delivered[..=i]
                .iter()
                .filter(|x| x.assignment.check == d.assignment.check)
                .count();
            counted.insert(d.assignment.check, n);
        }
    }
    assert_eq!(counted[&CheckId(1)], 2, "1 x 2 rounds");
    assert_eq!(counted[&CheckId(2)], 4, "2 x 2 rounds");
    assert_eq!(counted[&CheckId(3)], 6, "3 x 2 rounds");
    assert_eq!(b_view_conf(&sim.e, 3), 3);
    assert_eq!(b_view_conf(&sim.e, 2), 2);
}

fn b_view_conf(e: &Engine, id: i64) -> u32 {
    e.check(CheckId(id)).unwrap().confirmations
}

// ---------------------------------------------------------------------------------------------
// Stale results, timeouts, workers going down
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_results_are_ignored() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 0, Online));
    let a = b.one(secs(0));
    let other = ["a", "b", "c"]
        .into_iter()
        .map(node)
        .find(|n| *n != a.node)
        .unwrap();
    // From a worker that holds nothing, with a ticket that is not its own, for an unknown
    // check, from an unknown worker.
    let now = b.at(secs(1));
    assert_eq!(
        b.e.result(&other, a.check, a.ticket, Outcome::Offline, now),
        Effect::Stale
    );
    assert_eq!(
        b.e.result(
            &a.node,
            a.check,
            Ticket(a.ticket.0 + 100),
            Outcome::Offline,
            now
        ),
        Effect::Stale
    );
    assert_eq!(
        b.e.result(&a.node, CheckId(99), a.ticket, Outcome::Offline, now),
        Effect::UnknownCheck
    );
    assert_eq!(
        b.e.result(&node("zz"), a.check, a.ticket, Outcome::Offline, now),
        Effect::Stale
    );
    let v = b.view(1);
    assert!(v.round.is_empty());
    assert_eq!(v.in_flight.len(), 1);
    assert!(v.last_results.is_empty());
    // The holder's answer counts, once.
    assert!(matches!(
        b.answer(&a, Outcome::Offline, secs(1)),
        Effect::Voted { .. }
    ));
    assert_eq!(b.answer(&a, Outcome::Offline, secs(1)), Effect::Stale);
    assert_eq!(b.view(1).round.len(), 1);
    let s = b.e.stats();
    assert_eq!((s.stale_results, s.unknown_results, s.results), (4, 1, 1));
}

/// An assignment not answered in time is handed to another worker; the late answer is stale.
#[test]
fn assignment_timeout_rehands_the_run() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 60, 0, Online));
    let first = b.one(secs(0));
    assert_eq!(b.e.next_wake(), Some(b.at(TIMEOUT)));
    assert!(b.due(TIMEOUT - millis(1)).is_empty());
    let second = b.one(TIMEOUT);
    assert_eq!(second.kind, Kind::Regular);
    assert_ne!(second.node, first.node);
    assert_eq!(
        b.answer(&first, Outcome::Offline, TIMEOUT + secs(1)),
        Effect::Stale
    );
    assert_eq!(
        b.answer(&second, Outcome::Online, TIMEOUT + secs(1)),
        Effect::Agreed { cleared: false }
    );
    assert_eq!(b.e.stats().timeouts, 1);
}

#[test]
fn confirmation_timeout_asks_another_worker() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 300, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c1 = b.one(secs(0));
    let c2 = b.one(TIMEOUT);
    assert_eq!(c2.kind, Kind::Confirmation);
    assert!(c2.node != c1.node && c2.node != r.node);
    assert_eq!(
        b.answer(&c1, Outcome::Offline, TIMEOUT + secs(1)),
        Effect::Stale
    );
    assert!(matches!(
        b.answer(&c2, Outcome::Offline, TIMEOUT + secs(1)),
        Effect::Flip(_)
    ));
}

/// A worker going down gives its runs to others at once; its late answers are stale.
#[test]
fn worker_down_rehands_its_runs() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    for id in 0..6 {
        b.add(def(id, 60, 0, Online));
    }
    let runs = b.due(secs(0));
    let lost: Vec<Assignment> = runs.into_iter().filter(|a| a.node.0 == "a").collect();
    assert_eq!(lost.len(), 2);
    b.e.worker_down(&node("a"), b.at(secs(3)));
    let again = b.due(secs(3));
    assert_eq!(again.len(), 2);
    assert!(
        again
            .iter()
            .all(|a| a.node.0 != "a" && a.kind == Kind::Regular)
    );
    let mut ids: Vec<CheckId> = again.iter().map(|a| a.check).collect();
    ids.sort();
    let mut want: Vec<CheckId> = lost.iter().map(|a| a.check).collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(b.answer(&lost[0], Outcome::Online, secs(4)), Effect::Stale);
    let view = b.e.workers();
    assert!(!view[0].live && view[0].in_flight.is_empty());
}

/// A down worker's vote stays in the round; the round completes with live workers' votes.
#[test]
fn votes_of_a_down_worker_stay_counted() {
    let mut b = Bench::new(3, &["a", "b", "c", "d"]);
    b.add(def(1, 60, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let confs = b.due(secs(0));
    assert_eq!(confs.len(), 2);
    b.e.worker_down(&r.node, b.at(secs(1)));
    assert!(
        b.due(secs(1)).is_empty(),
        "the round has its askees already"
    );
    assert_eq!(b.view(1).round, std::slice::from_ref(&r.node));
    b.answer(&confs[0], Outcome::Offline, secs(2));
    match b.answer(&confs[1], Outcome::Offline, secs(2)) {
        Effect::Flip(f) => {
            assert_eq!(f.confirmed_by[0], r.node);
            assert_eq!(f.confirmed_by.len(), 3);
        }
        other => panic!("expected a flip, got {other:?}"),
    }
}

/// A confirmation held by a worker that goes down is asked of another worker at once.
#[test]
fn confirmation_of_a_down_worker_goes_to_another() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 60, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.e.worker_down(&c.node, b.at(secs(1)));
    let c2 = b.one(secs(1));
    assert_eq!(c2.kind, Kind::Confirmation);
    assert!(c2.node != c.node && c2.node != r.node);
}

#[test]
fn nothing_is_handed_without_workers() {
    let mut b = Bench::new(1, &[]);
    b.add(def(1, 10, 0, Online));
    assert!(b.due(secs(0)).is_empty());
    assert_eq!(b.e.next_wake(), None, "nothing to wake for");
    b.e.worker_up(&node("late"), b.at(secs(5)));
    assert_eq!(b.e.next_wake(), Some(b.t0));
    let a = b.one(secs(5));
    assert_eq!(a.node, node("late"));
}

// ---------------------------------------------------------------------------------------------
// Definitions: removal, changes, operator edits
// ---------------------------------------------------------------------------------------------

#[test]
fn removing_a_check_mid_round_forgets_it() {
    let mut b = Bench::new(3, &["a", "b", "c"]);
    b.add(def(1, 10, 1, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let confs = b.due(secs(0));
    assert_eq!(confs.len(), 2);
    assert!(b.e.remove_check(CheckId(1)));
    assert!(!b.e.remove_check(CheckId(1)));
    assert!(b.e.check(CheckId(1)).is_none());
    assert!(b.e.workers().iter().all(|w| w.in_flight.is_empty()));
    for c in &confs {
        assert_eq!(b.answer(c, Outcome::Offline, secs(1)), Effect::UnknownCheck);
    }
    assert!(b.due(secs(100)).is_empty());
    assert_eq!(b.e.next_wake(), None);
    // Added again, it starts afresh.
    b.add(def(1, 10, 1, Online));
    let v = b.view(1);
    assert!(v.round.is_empty() && v.rounds_completed == 0);
    assert_eq!(b.due(secs(100)).len(), 1);
}

#[test]
fn operator_status_edit_resets_the_round() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 2, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.answer(&c, Outcome::Offline, secs(1));
    let r = b.one(secs(11));
    b.answer(&r, Outcome::Offline, secs(11));
    let c = b.one(secs(11));
    assert_eq!(b.view(1).rounds_completed, 1);
    assert_eq!(b.view(1).round.len(), 1);

    // The operator sets it offline: that is the status now, with nothing pending.
    b.e.upsert_check(&def(1, 10, 2, Offline), b.at(secs(11)));
    let v = b.view(1);
    assert_eq!(v.status, Offline);
    assert_eq!((v.round.len(), v.rounds_completed), (0, 0));
    assert!(v.in_flight.is_empty());
    assert_eq!(b.answer(&c, Outcome::Offline, secs(12)), Effect::Stale);
    // Its next run agrees with the new status.
    let r = b.one(secs(21));
    assert_eq!(
        b.answer(&r, Outcome::Offline, secs(21)),
        Effect::Agreed { cleared: false }
    );
    assert!(b.e.stats().flips == 0);
}

/// The status our own flip wrote comes back through the catalog as the engine's status: no
/// reset. And a reload that still shows the old status (the write not yet seen) is no edit.
#[test]
fn our_own_flip_coming_back_is_not_an_edit() {
    let mut b = Bench::new(1, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let r = b.one(secs(0));
    assert!(matches!(
        b.answer(&r, Outcome::Offline, secs(0)),
        Effect::Flip(_)
    ));
    // Old status still in the row: nothing changes.
    b.e.upsert_check(&def(1, 10, 0, Online), b.at(secs(1)));
    assert_eq!(b.e.status(CheckId(1)), Some(Offline));
    // A differing result opens a round (delay 0, confirmations 1: it flips straight back,
    // so use delay 1 for the rest).
    b.e.upsert_check(&def(1, 10, 1, Online), b.at(secs(1)));
    let r = b.one(secs(10));
    assert!(matches!(
        b.answer(&r, Outcome::Online, secs(10)),
        Effect::RoundComplete { rounds: 1, .. }
    ));
    // Now the row shows our flip: the count survives.
    b.e.upsert_check(&def(1, 10, 1, Offline), b.at(secs(11)));
    assert_eq!(b.view(1).rounds_completed, 1);
    assert_eq!(b.e.status(CheckId(1)), Some(Offline));
}

#[test]
fn reset_status_drops_the_round() {
    let mut b = Bench::new(1, &["a"]);
    b.add(def(1, 10, 3, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    assert_eq!(b.view(1).rounds_completed, 1);
    assert!(b.e.reset_status(CheckId(1), Online, b.at(secs(1))));
    assert_eq!(b.view(1).rounds_completed, 0);
    assert!(!b.e.reset_status(CheckId(7), Online, b.at(secs(1))));
}

/// A changed definition keeps the round; a new interval moves the next run.
#[test]
fn definition_change_keeps_the_round() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 3, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.answer(&c, Outcome::Offline, secs(1));
    assert_eq!(b.view(1).next_due, Some(b.at(secs(11))));
    b.e.upsert_check(&def(1, 30, 2, Online), b.at(secs(2)));
    let v = b.view(1);
    assert_eq!((v.rounds_completed, v.delay), (1, 2));
    assert_eq!(v.next_due, Some(b.at(secs(31))));
    assert!(b.due(secs(30)).is_empty());
    assert_eq!(b.due(secs(31)).len(), 1);
}

/// Raising a check's confirmations mid-round asks the extra workers at once.
#[test]
fn raised_confirmations_ask_more_at_once() {
    let mut b = Bench::new(2, &["a", "b", "c", "d"]);
    b.add(def(1, 60, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    let mut more = def(1, 60, 0, Online);
    more.confirmations = Some(4);
    b.e.upsert_check(&more, b.at(secs(1)));
    let extra = b.due(secs(1));
    assert_eq!(extra.len(), 2);
    assert!(extra.iter().all(|a| a.node != r.node && a.node != c.node));
}

#[test]
fn row_clamps() {
    let row = crate::model::CheckRow {
        id: CheckId(4),
        name: "x".into(),
        check_type: "tcp".into(),
        data: "{}".into(),
        interval_secs: 0,
        delay: -3,
        status: Offline,
        status_was_valid: true,
        confirmations: Some(0),
    };
    let d = CheckDef::from(&row);
    assert_eq!(d.interval, MIN_INTERVAL);
    assert_eq!(d.delay, 0);
    assert_eq!(d.status, Offline);
    let mut e = Engine::new(config(3));
    e.upsert_check(&d, Instant::now());
    assert_eq!(
        e.check(CheckId(4)).unwrap().confirmations,
        1,
        "0 reads as 1"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_shows_rounds_results_and_in_flight() {
    let mut b = Bench::new(3, &["a", "b", "c", "d"]);
    b.add(def(1, 60, 1, Online));
    b.add(def(2, 60, 1, Online));
    let runs = b.due(secs(0));
    let r1 = runs.iter().find(|a| a.check == CheckId(1)).unwrap().clone();
    b.answer(&r1, Outcome::Offline, secs(1));
    let confs = b.due(secs(1));
    b.answer(&confs[0], Outcome::Fail, secs(2));
    let snap = b.e.snapshot();
    assert_eq!(snap.live_workers, 4);
    assert_eq!(snap.checks.len(), 2);
    let c1 = &snap.checks[0];
    assert_eq!(c1.id, CheckId(1));
    assert_eq!(c1.round, std::slice::from_ref(&r1.node));
    assert_eq!(c1.last_worker, Some(r1.node.clone()));
    assert_eq!(c1.last_results.len(), 2);
    assert_eq!(c1.last_results[0].outcome, Outcome::Fail, "newest first");
    assert_eq!(c1.last_results[1].node, r1.node);
    // The failed confirmation was re-asked: two confirmations out.
    assert_eq!(c1.in_flight.len(), 2);
    assert!(
        c1.in_flight
            .iter()
            .all(|f| f.kind == Kind::Confirmation && f.node != confs[0].node)
    );
    assert!(!c1.insufficient_quorum);
    let in_flight: usize = snap.workers.iter().map(|w| w.in_flight.len()).sum();
    assert_eq!(
        in_flight, 3,
        "check 2's regular run and check 1's two confirmations"
    );
    assert_eq!(snap.workers[0].node, node("a"));
    assert_eq!(snap.stats.assignments, 5);
}

// ---------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------

/// 100,000 checks at a 60 s interval on 3 workers for 5 simulated minutes: every check runs
/// every interval, never twice in a row on one worker, the load is even, and the 1 % that are
/// down flip exactly once.
#[test]
fn scale_100k_checks_three_workers() {
    const CHECKS: i64 = 100_000;
    let t0 = Instant::now();
    let mut e = Engine::new(config(2));
    for w in ["w1", "w2", "w3"] {
        e.worker_up(&node(w), t0);
    }
    for id in 0..CHECKS {
        e.upsert_check(&def(id, 60, 1, Online), t0);
    }
    let down = |id: CheckId| id.0 % 100 == 0;
    let mut pending: VecDeque<(Instant, Assignment)> = VecDeque::new();
    let mut runs = vec![0u32; CHECKS as usize];
    let mut last_regular: Vec<Option<NodeId>> = vec![None; CHECKS as usize];
    let mut per_worker: HashMap<NodeId, u64> = HashMap::new();
    let mut flips = 0u64;
    let mut now = t0;
    while now <= t0 + secs(300) {
        while let Some((at, _)) = pending.front()
            && *at <= now
        {
            let (_, a) = pending.pop_front().unwrap();
            runs[a.check.0 as usize] += 1;
            let outcome = if down(a.check) {
                Outcome::Offline
            } else {
                Outcome::Online
            };
            if let Effect::Flip(_) = e.result(&a.node, a.check, a.ticket, outcome, now) {
                flips += 1;
            }
        }
        for a in e.due(now) {
            if a.kind == Kind::Regular {
                let slot = &mut last_regular[a.check.0 as usize];
                assert_ne!(slot.as_ref(), Some(&a.node), "same worker twice in a row");
                *slot = Some(a.node.clone());
            }
            *per_worker.entry(a.node.clone()).or_default() += 1;
            pending.push_back((now + secs(1), a));
        }
        now += secs(1);
    }
    // Runs at 0, 61, 122, 183, 244 s (each due 60 s after its result, answered in 1 s).
    for id in 0..CHECKS {
        if !down(CheckId(id)) {
            assert_eq!(runs[id as usize], 5, "check {id}");
        }
    }
    assert_eq!(flips, (CHECKS / 100) as u64);
    assert_eq!(e.stats().flips, flips);
    for id in (0..CHECKS).step_by(100) {
        assert_eq!(e.status(CheckId(id)), Some(Offline));
    }
    assert_eq!(e.status(CheckId(1)), Some(Online));
    let total: u64 = per_worker.values().sum();
    for (w, n) in &per_worker {
        let share = *n as f64 / total as f64;
        assert!((0.32..0.35).contains(&share), "{w}: {share}");
    }
    assert_eq!(e.check_count(), CHECKS as usize);
    assert_eq!(e.stats().stale_results, 0);
}

/// Rotation beats load: the next regular run goes to the busier worker rather than back to
/// the one that ran it last.
#[test]
fn rotation_wins_over_load() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let first = b.one(secs(0));
    assert_eq!(first.node, node("a"));
    b.answer(&first, Outcome::Online, secs(0));
    for id in 2..=5 {
        b.e.upsert_check(&def(id, 100, 0, Online), b.at(secs(1)));
    }
    for a in b.due(secs(1)) {
        if a.node == node("a") {
            b.answer(&a, Outcome::Online, secs(1));
        }
    }
    let loads: Vec<usize> = b.e.workers().iter().map(|w| w.in_flight.len()).collect();
    assert_eq!(loads, [0, 2]);
    let next = b.one(secs(10));
    assert_eq!((next.check, &next.node), (CheckId(1), &node("b")));
}

/// A down worker's vote can bring a round to `confirmations` votes, but the round does not
/// complete while the live workers are short; it completes with the next vote once they are
/// back.
#[test]
fn no_round_completes_without_quorum_even_with_enough_votes() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 0, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.e.worker_down(&r.node, b.at(secs(1)));
    assert_eq!(
        b.answer(&c, Outcome::Offline, secs(1)),
        Effect::Voted {
            votes: 2,
            needed: 2,
            quorum: false
        }
    );
    assert_eq!(b.e.status(CheckId(1)), Some(Online));
    // Only `c`'s worker is live: it keeps the regular runs, and still no flip.
    let again = b.one(secs(11));
    assert_eq!(again.node, c.node);
    assert!(matches!(
        b.answer(&again, Outcome::Offline, secs(11)),
        Effect::Voted { quorum: false, .. }
    ));
    b.e.worker_up(&r.node, b.at(secs(12)));
    assert!(b.due(secs(12)).is_empty(), "the round has its votes");
    let next = b.one(secs(21));
    assert!(matches!(
        b.answer(&next, Outcome::Offline, secs(21)),
        Effect::Flip(_)
    ));
}

/// When a round completes, a run still out for the check (here a regular run given to a
/// round member while the round waited for workers) is withdrawn: its answer cannot start the
/// next round before the interval.
#[test]
fn completing_a_round_withdraws_the_runs_still_out() {
    let mut b = Bench::new(2, &["a", "b"]);
    b.add(def(1, 10, 1, Online));
    let r = b.one(secs(0));
    assert_eq!(r.node, node("a"));
    b.answer(&r, Outcome::Offline, secs(0));
    let c = b.one(secs(0));
    b.e.worker_down(&c.node, b.at(secs(1)));
    assert!(b.due(secs(1)).is_empty());
    // The round waits; its regular run goes to the only live worker, a round member.
    let regular = b.one(secs(10));
    assert_eq!((regular.kind, &regular.node), (Kind::Regular, &node("a")));
    b.e.worker_up(&node("c"), b.at(secs(11)));
    let conf = b.one(secs(11));
    assert_eq!((conf.kind, &conf.node), (Kind::Confirmation, &node("c")));
    assert!(matches!(
        b.answer(&conf, Outcome::Offline, secs(12)),
        Effect::RoundComplete { rounds: 1, .. }
    ));
    assert_eq!(
        b.answer(&regular, Outcome::Offline, secs(12)),
        Effect::Stale
    );
    assert!(
        b.due(secs(21)).is_empty(),
        "the next round waits the interval"
    );
    assert_eq!(b.due(secs(22)).len(), 1);
}

#[test]
fn a_first_due_time_spreads_the_first_runs_and_keeps_the_schedule_after() {
    let mut b = Bench::new(1, &["w1", "w2"]);
    let t0 = b.t0;
    // Ten checks of 10 s, first due 1 s apart (what a new term does).
    for i in 0..10 {
        b.e.upsert_check_due(&def(i, 10, 0, CheckStatus::Online), t0, t0 + secs(i as u64));
    }
    for i in 0..10u64 {
        let a = b.one(secs(i));
        assert_eq!(
            a.check,
            CheckId(i as i64),
            "check {i} is due at {i} s, alone"
        );
        assert_eq!(
            b.answer(&a, Outcome::Online, secs(i) + millis(100)),
            Effect::Agreed { cleared: false }
        );
    }
    // After its first run, each keeps its own schedule: interval after its result.
    assert!(b.due(secs(10)).is_empty());
    let a = b.one(secs(10) + millis(100));
    assert_eq!(a.check, CheckId(0));
    let a = b.one(secs(11) + millis(100));
    assert_eq!(a.check, CheckId(1));
    // A known check ignores a first due time; a new check without one is due at once.
    b.e.upsert_check_due(&def(5, 10, 0, CheckStatus::Online), t0, t0 + secs(100));
    b.add(def(42, 10, 0, CheckStatus::Online));
    assert_eq!(b.one(secs(12)).check, CheckId(42));
}

// ---------------------------------------------------------------------------------------------
// distinct_locations
// ---------------------------------------------------------------------------------------------

/// An engine with `distinct_locations` and workers `(name, location)`.
fn located(confirmations: u32, distinct: bool, workers: &[(&str, &str)]) -> Bench {
    let t0 = Instant::now();
    let mut e = Engine::new(VoteConfig {
        confirmations,
        assignment_timeout: TIMEOUT,
        distinct_locations: distinct,
    });
    for (w, at) in workers {
        e.worker_up_at(&node(w), at, t0);
    }
    Bench { e, t0 }
}

fn location_of<'a>(workers: &[(&str, &'a str)], n: &NodeId) -> &'a str {
    workers
        .iter()
        .find(|(w, _)| *w == n.0)
        .map(|(_, l)| *l)
        .unwrap()
}

/// w1 and w2 in fra, w3 in ams, confirmations 2: whoever runs the check, the round's other
/// worker is from the other location. Without the setting, the least loaded worker is asked,
/// which is often the other fra one.
#[test]
fn distinct_locations_put_every_round_across_locations() {
    let workers = [("w1", "fra"), ("w2", "fra"), ("w3", "ams")];
    for distinct in [true, false] {
        let mut b = located(2, distinct, &workers);
        let mut same = 0;
        for id in 1..=30 {
            b.add(def(id, 10, 5, Online));
        }
        let regular = b.due(secs(0));
        assert_eq!(regular.len(), 30);
        for r in &regular {
            b.answer(r, Outcome::Offline, secs(0));
        }
        let confs = b.due(secs(0));
        assert_eq!(confs.len(), 30);
        for c in &confs {
            let opener = regular.iter().find(|r| r.check == c.check).unwrap();
            let (a, z) = (
                location_of(&workers, &opener.node),
                location_of(&workers, &c.node),
            );
            if a == z {
                same += 1;
            }
        }
        if distinct {
            assert_eq!(same, 0, "every round spans fra and ams");
        } else {
            assert!(same > 0, "without the setting some rounds stay in fra");
        }
    }
}

/// Where not enough locations exist, a round still gets its confirmations; apart wherever
/// possible, and workers without a location count as apart from everyone.
#[test]
fn distinct_locations_fill_from_anywhere_when_locations_run_out() {
    let workers = [
        ("a", "fra"),
        ("b", "fra"),
        ("c", "fra"),
        ("d", ""),
        ("e", "ams"),
    ];
    let mut b = located(4, true, &workers);
    b.e.worker_down(&node("e"), b.t0);
    b.add(def(1, 10, 5, Online));
    let r = b.one(secs(0));
    b.answer(&r, Outcome::Offline, secs(0));
    let confs = b.due(secs(0));
    assert_eq!(confs.len(), 3, "the round is not starved: {confs:?}");
    let mut asked: Vec<&str> = confs.iter().map(|c| c.node.0.as_str()).collect();
    asked.push(r.node.0.as_str());
    asked.sort_unstable();
    asked.dedup();
    assert_eq!(asked.len(), 4);
    assert!(
        asked.contains(&"d"),
        "the worker without a location is preferred: {asked:?}"
    );
    // With ams back, a new round asks it before a second fra worker.
    b.e.worker_up_at(&node("e"), "ams", b.at(secs(1)));
    b.add(def(2, 10, 5, Online));
    let r = b.one(secs(1));
    b.answer(&r, Outcome::Offline, secs(1));
    let mut round: Vec<String> = b.due(secs(1)).into_iter().map(|c| c.node.0).collect();
    round.push(r.node.0.clone());
    // Four of five: ams, the unlocated one, and two of the three fra workers.
    let fra = round
        .iter()
        .filter(|n| ["a", "b", "c"].contains(&n.as_str()))
        .count();
    assert!(
        round.contains(&"e".to_string()) && round.contains(&"d".to_string()),
        "{round:?}"
    );
    assert_eq!(fra, 2, "{round:?}");
}

/// An impaired worker is handed nothing (regular runs and confirmations go to the others),
/// does not count toward quorum, and counts again once it recovers.
#[test]
fn impaired_workers_get_no_runs_and_no_say() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 10, 1, Online));
    b.e.set_impaired(&node("a"), true, b.at(secs(0)));
    b.e.set_impaired(&node("b"), true, b.at(secs(0)));
    assert_eq!(b.e.live_workers(), 1);
    assert_eq!(b.e.insufficient_quorum(), vec![CheckId(1)]);
    let change = b.e.take_quorum_changes().expect("quorum lost");
    assert_eq!(change.lost, vec![CheckId(1)]);
    let views = b.e.workers();
    assert!(views[0].impaired && views[1].impaired && !views[2].impaired);
    // Every regular run goes to c; its online results keep the check online.
    for round in 0..4u64 {
        let r = b.one(secs(round * 10));
        assert_eq!(r.node, node("c"), "round {round}");
        assert!(matches!(
            b.answer(&r, Outcome::Online, secs(round * 10)),
            Effect::Agreed { .. }
        ));
    }
    // c sees it offline: no impaired worker is asked to confirm, nothing completes.
    let r = b.one(secs(40));
    assert!(matches!(
        b.answer(&r, Outcome::Offline, secs(40)),
        Effect::Voted { quorum: false, .. }
    ));
    assert!(b.due(secs(40)).is_empty(), "no healthy worker left to ask");
    // b recovers: quorum is back and b is asked for the confirmation at once.
    b.e.set_impaired(&node("b"), false, b.at(secs(41)));
    assert_eq!(b.e.live_workers(), 2);
    assert!(b.e.insufficient_quorum().is_empty());
    let c = b.one(secs(41));
    assert_eq!((c.node.clone(), c.kind), (node("b"), Kind::Confirmation));
    assert!(matches!(
        b.answer(&c, Outcome::Offline, secs(41)),
        Effect::RoundComplete { .. }
    ));
}

/// Turning impaired releases what the worker holds (handed to a healthy worker at once), and a
/// result it still sends for an assignment it holds counts as `fail`, never as a vote.
#[test]
fn an_impaired_worker_loses_its_runs_and_its_results_are_fails() {
    let mut b = Bench::new(2, &["a", "b", "c"]);
    b.add(def(1, 60, 0, Online));
    let r = b.one(secs(0));
    b.e.set_impaired(&r.node, true, b.at(secs(1)));
    let again = b.one(secs(1));
    assert_ne!(again.node, r.node);
    assert_eq!(b.answer(&r, Outcome::Offline, secs(2)), Effect::Stale);
    b.e.set_impaired(&r.node, false, b.at(secs(2)));
    // A worker that turns impaired while holding a confirmation: its late offline vote is
    // a fail.
    assert!(matches!(
        b.answer(&again, Outcome::Offline, secs(3)),
        Effect::Voted { .. }
    ));
    let conf = b.one(secs(3));
    // Impaired, then healthy again before its answer: the ticket was released, so stale.
    b.e.set_impaired(&conf.node, true, b.at(secs(4)));
    assert_eq!(b.answer(&conf, Outcome::Offline, secs(4)), Effect::Stale);
    assert!(
        round_names(&b.view(1)).len() == 1,
        "no vote from the impaired worker"
    );
    // Impaired twice, or a down impaired worker coming back, changes no counts.
    b.e.set_impaired(&conf.node, true, b.at(secs(5)));
    b.e.worker_down(&conf.node, b.at(secs(5)));
    assert_eq!(b.e.live_workers(), 2);
    b.e.worker_up(&conf.node, b.at(secs(6)));
    assert_eq!(b.e.live_workers(), 2);
    b.e.set_impaired(&conf.node, false, b.at(secs(7)));
    assert_eq!(b.e.live_workers(), 3);
}

/// A lone impaired worker is handed nothing at all (no "one worker runs everything"
/// fallback), and its answer to a run it held before is not counted.
#[test]
fn a_lone_impaired_worker_is_handed_nothing() {
    let mut b = Bench::new(1, &["a"]);
    b.add(def(1, 60, 0, Online));
    let r = b.one(secs(0));
    b.e.set_impaired(&node("a"), true, b.at(secs(1)));
    assert!(
        b.due(secs(100)).is_empty(),
        "an impaired worker is handed nothing"
    );
    assert_eq!(b.answer(&r, Outcome::Offline, secs(1)), Effect::Stale);
    assert_eq!(b.view(1).status, Online);
}
