//! The rules of the module documentation, one test or more each, on explicit instants.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

const BEAT: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(3);

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Inputs of a node named for `epoch` whose last answered heartbeat was sent at `acked`.
fn leased(epoch: u64, acked: Instant, now: Instant) -> Inputs {
    Inputs {
        lease: (now < acked + LEASE).then_some(Lease {
            epoch,
            until: acked + LEASE,
        }),
        view_epoch: epoch,
        named: true,
        ..Inputs::default()
    }
}

/// Inputs of a node named for `epoch` by the last view, the group unreachable since then, that
/// may act alone from `alone_at`.
fn group_down(epoch: u64, alone_at: Instant) -> Inputs {
    Inputs {
        view_epoch: epoch,
        named: true,
        fence_alone_at: Some(alone_at),
        ..Inputs::default()
    }
}

fn starts(actions: &[Action]) -> Vec<(u64, Mode)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { epoch, mode } => Some((*epoch, *mode)),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<(u64, StopReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { epoch, reason, .. } => Some((*epoch, *reason)),
            _ => None,
        })
        .collect()
}

fn wake(actions: &[Action]) -> Option<Instant> {
    actions.iter().find_map(|a| match a {
        Action::WakeAt(t) => Some(*t),
        _ => None,
    })
}

fn reads(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::ReadFence { epoch } => Some(*epoch),
        _ => None,
    })
}

#[test]
fn a_lease_starts_a_term_and_its_end_stops_it() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    let a = s.step(&leased(4, t0, t0), None, t0);
    assert_eq!(starts(&a), vec![(4, Mode::Lease)]);
    assert_eq!(wake(&a), Some(at(t0, 3000)), "woken at the lease's end");
    // Still held: nothing to do.
    let a = s.step(&leased(4, t0, at(t0, 2000)), None, at(t0, 2000));
    assert!(starts(&a).is_empty() && stops(&a).is_empty(), "{a:?}");
    // The lease's end, no answer meanwhile.
    let end = at(t0, 3000);
    let a = s.step(&leased(4, t0, end), None, end);
    assert_eq!(stops(&a), vec![(4, StopReason::LeaseExpired)]);
    assert!(a.contains(&Action::Stop {
        epoch: 4,
        reason: StopReason::LeaseExpired,
        lease_end: end
    }));
    assert_eq!(s.acting(), None);
}

#[test]
fn a_renewed_lease_keeps_the_term_and_moves_the_wake() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let now = at(t0, 1000);
    let a = s.step(&leased(4, now, now), None, now);
    assert!(starts(&a).is_empty() && stops(&a).is_empty(), "{a:?}");
    assert_eq!(wake(&a), Some(at(t0, 4000)));
}

#[test]
fn the_lease_end_logged_is_when_the_lease_ran_out_not_when_the_step_ran() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    // Woken late (a busy runtime): the lease had ended before.
    let late = at(t0, 3400);
    let a = s.step(&leased(4, t0, late), None, late);
    assert!(a.contains(&Action::Stop {
        epoch: 4,
        reason: StopReason::LeaseExpired,
        lease_end: at(t0, 3000)
    }));
}

#[test]
fn stepping_down_or_another_controller_stops_the_term() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let now = at(t0, 500);
    let mut i = leased(4, t0, now);
    i.lease = None;
    i.stepping_down = true;
    let a = s.step(&i, None, now);
    assert_eq!(stops(&a), vec![(4, StopReason::SteppingDown)]);
    assert!(a.contains(&Action::Stop {
        epoch: 4,
        reason: StopReason::SteppingDown,
        lease_end: now
    }));

    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let i = Inputs {
        view_epoch: 5,
        named: false,
        ..Inputs::default()
    };
    let a = s.step(&i, None, now);
    assert_eq!(stops(&a), vec![(4, StopReason::OtherController)]);
    assert!(starts(&a).is_empty());
}

#[test]
fn a_newer_view_naming_this_node_stops_the_old_term_before_starting_the_new() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let now = at(t0, 800);
    let a = s.step(&leased(6, now, now), None, now);
    let order: Vec<&str> = a
        .iter()
        .filter_map(|x| match x {
            Action::Stop { epoch: 4, .. } => Some("stop 4"),
            Action::Start { epoch: 6, .. } => Some("start 6"),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["stop 4", "start 6"]);
    assert_eq!(stops(&a), vec![(4, StopReason::NewerView)]);
    assert_eq!(s.acting(), Some((6, Mode::Lease)));
}

#[test]
fn a_term_that_ended_by_itself_is_ruled_out_only_by_a_newer_fence() {
    let t0 = Instant::now();
    // The fence holds a newer epoch: stopped, and the same epoch never again.
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let now = at(t0, 500);
    let mut i = leased(4, t0, now);
    i.term_ended = true;
    let a = s.step(&i, None, now);
    assert_eq!(reads(&a), Some(4), "the fence is read first: {a:?}");
    assert!(stops(&a).is_empty());
    let a = s.step(
        &i,
        Some(FenceReading {
            epoch: 4,
            fence: Fence::Newer,
        }),
        now,
    );
    assert_eq!(stops(&a), vec![(4, StopReason::NewerFence)]);
    assert!(starts(&a).is_empty(), "a superseded epoch is not restarted");
    assert_eq!(s.superseded(), 4);
    let later = at(t0, 900);
    let a = s.step(&leased(4, later, later), None, later);
    assert!(starts(&a).is_empty(), "{a:?}");

    // Not newer (the database was lost): stopped and started again under the same lease.
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let a = s.step(
        &i,
        Some(FenceReading {
            epoch: 4,
            fence: Fence::NotNewer,
        }),
        now,
    );
    assert_eq!(stops(&a), vec![(4, StopReason::StoppedItself)]);
    assert_eq!(starts(&a), vec![(4, Mode::Lease)]);
}

#[test]
fn a_cut_off_node_waits_for_fence_alone_at_then_reads_the_fence() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    // The lease runs out while no member answers: stop, and wait.
    let end = at(t0, 3000);
    let a = s.step(&group_down(4, alone_at), None, end);
    assert_eq!(stops(&a), vec![(4, StopReason::LeaseExpired)]);
    assert_eq!(wake(&a), Some(alone_at));
    // Before the wait is over: no read, no start.
    let a = s.step(&group_down(4, alone_at), None, at(t0, 8999));
    assert!(reads(&a).is_none() && starts(&a).is_empty(), "{a:?}");
    // Then: read the fence. A successor raised it: never act for this epoch.
    let a = s.step(&group_down(4, alone_at), None, alone_at);
    assert_eq!(reads(&a), Some(4));
    let newer = FenceReading {
        epoch: 4,
        fence: Fence::Newer,
    };
    let a = s.step(&group_down(4, alone_at), Some(newer), alone_at);
    assert_eq!(a, vec![Action::NotActing { epoch: 4 }]);
    let a = s.step(&group_down(4, alone_at), None, at(t0, 20_000));
    assert!(a.is_empty(), "reported once, then quiet: {a:?}");
}

#[test]
fn the_group_down_and_the_fence_still_ours_acts_alone_and_rereads_each_beat() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    let i = group_down(4, alone_at);
    let ours = FenceReading {
        epoch: 4,
        fence: Fence::NotNewer,
    };
    assert_eq!(reads(&s.step(&i, None, alone_at)), Some(4));
    let a = s.step(&i, Some(ours), alone_at);
    assert_eq!(starts(&a), vec![(4, Mode::FenceAlone)]);
    assert_eq!(wake(&a), Some(at(t0, 10_000)), "a heartbeat later");
    // Each beat: read again; still ours: keep going.
    let beat = at(t0, 10_000);
    assert_eq!(reads(&s.step(&i, None, beat)), Some(4));
    let a = s.step(&i, Some(ours), beat);
    assert!(starts(&a).is_empty() && stops(&a).is_empty(), "{a:?}");
    // Unreadable: keep going, read again later.
    let unreadable = FenceReading {
        epoch: 4,
        fence: Fence::Unreadable,
    };
    let a = s.step(&i, Some(unreadable), at(t0, 11_000));
    assert!(stops(&a).is_empty(), "{a:?}");
    assert_eq!(wake(&a), Some(at(t0, 12_000)));
    // A successor raised it: stop, and never act for it again.
    let newer = FenceReading {
        epoch: 4,
        fence: Fence::Newer,
    };
    let a = s.step(&i, Some(newer), at(t0, 12_000));
    assert_eq!(stops(&a), vec![(4, StopReason::NewerFence)]);
    let a = s.step(&i, None, at(t0, 13_000));
    assert!(starts(&a).is_empty() && reads(&a).is_none(), "{a:?}");
}

#[test]
fn an_unreadable_fence_before_acting_alone_starts_nothing() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    let i = group_down(4, alone_at);
    let a = s.step(
        &i,
        Some(FenceReading {
            epoch: 4,
            fence: Fence::Unreadable,
        }),
        alone_at,
    );
    assert!(starts(&a).is_empty(), "{a:?}");
    assert_eq!(wake(&a), Some(at(t0, 10_000)));
}

#[test]
fn a_lease_coming_back_while_acting_alone_keeps_the_term() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    let ours = FenceReading {
        epoch: 4,
        fence: Fence::NotNewer,
    };
    s.step(&group_down(4, alone_at), Some(ours), alone_at);
    assert_eq!(s.acting(), Some((4, Mode::FenceAlone)));
    let now = at(t0, 9500);
    let a = s.step(&leased(4, now, now), None, now);
    assert!(starts(&a).is_empty() && stops(&a).is_empty(), "{a:?}");
    assert_eq!(s.acting(), Some((4, Mode::Lease)));
}

#[test]
fn a_reading_for_another_epoch_is_not_taken_for_this_one() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    let stale = FenceReading {
        epoch: 3,
        fence: Fence::NotNewer,
    };
    let a = s.step(&group_down(4, alone_at), Some(stale), alone_at);
    assert_eq!(reads(&a), Some(4));
    assert!(starts(&a).is_empty());
}

#[test]
fn shutdown_stops_the_running_term() {
    let t0 = Instant::now();
    let mut s = Supervisor::new(BEAT);
    s.step(&leased(4, t0, t0), None, t0);
    let mut i = leased(4, t0, at(t0, 100));
    i.shutdown = true;
    let a = s.step(&i, None, at(t0, 100));
    assert_eq!(stops(&a), vec![(4, StopReason::ShuttingDown)]);
    assert!(starts(&a).is_empty());
}

/// A small deterministic generator, so the sequence below is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Rules 2 and 5 under arbitrary inputs: never a start while a term runs, every stop is for
/// the running term, and no epoch at or below a superseded one is ever started.
#[test]
fn never_two_terms_and_never_a_superseded_epoch_whatever_the_inputs() {
    let t0 = Instant::now();
    let mut rng = Lcg(7);
    let mut s = Supervisor::new(BEAT);
    let mut running: Option<u64> = None;
    let mut ruled_out = 0u64;
    let mut starts_seen = 0;
    let mut reading = None;
    for step in 0..20_000u64 {
        let now = at(t0, step * 137);
        let epoch = 1 + step / 400 + rng.next(3);
        let inputs = Inputs {
            lease: (rng.next(3) > 0).then_some(Lease {
                epoch,
                until: now + Duration::from_millis(rng.next(3000)),
            }),
            view_epoch: epoch,
            named: rng.next(4) > 0,
            stepping_down: rng.next(10) == 0,
            fence_alone_at: (rng.next(3) == 0).then(|| at(t0, (step * 137).saturating_sub(500))),
            term_ended: running.is_some() && rng.next(8) == 0,
            shutdown: false,
        };
        for a in s.step(&inputs, reading.take(), now) {
            match a {
                Action::Start { epoch, .. } => {
                    assert_eq!(running, None, "step {step}: a second term for {epoch}");
                    assert!(epoch > ruled_out, "step {step}: started superseded {epoch}");
                    running = Some(epoch);
                    starts_seen += 1;
                }
                Action::Stop { epoch, .. } => {
                    assert_eq!(
                        running,
                        Some(epoch),
                        "step {step}: stopped a term not running"
                    );
                    running = None;
                }
                Action::ReadFence { epoch } => {
                    let fence = match rng.next(3) {
                        0 => Fence::Newer,
                        1 => Fence::NotNewer,
                        _ => Fence::Unreadable,
                    };
                    reading = Some(FenceReading { epoch, fence });
                }
                Action::NotActing { .. } | Action::WakeAt(_) => {}
            }
        }
        ruled_out = ruled_out.max(s.superseded());
        assert_eq!(running, s.acting().map(|a| a.0), "step {step}");
    }
    assert!(
        starts_seen > 100,
        "the inputs exercised starts: {starts_seen}"
    );
    assert!(ruled_out > 0, "the inputs exercised superseded epochs");
}

#[test]
fn a_lease_for_a_superseded_epoch_is_refused_and_reported_once() {
    let t0 = Instant::now();
    let alone_at = at(t0, 9000);
    let mut s = Supervisor::new(BEAT);
    let newer = FenceReading {
        epoch: 4,
        fence: Fence::Newer,
    };
    s.step(&group_down(4, alone_at), Some(newer), alone_at);
    assert_eq!(s.superseded(), 4);
    // A group that lost its data names this node for epoch 2, then again.
    let now = at(t0, 10_000);
    let a = s.step(&leased(2, now, now), None, now);
    assert!(a.contains(&Action::NotActing { epoch: 2 }), "{a:?}");
    assert!(starts(&a).is_empty());
    let later = at(t0, 11_000);
    let a = s.step(&leased(2, later, later), None, later);
    assert!(!a.contains(&Action::NotActing { epoch: 2 }), "once: {a:?}");
    assert!(starts(&a).is_empty());
}
