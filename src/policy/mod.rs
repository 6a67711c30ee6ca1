//! Alert policy between the flip and the outbox, as pure rules on explicit time (no IO, no
//! clock reads): maintenance windows, escalation (`alerts.after`), reminders
//! (`alerts.remind_every`), acknowledgements and check dependencies ([`deps`]).
//!
//! The controller's policy task ([`crate::store::policy`], `role/controller/policy.rs`) feeds
//! [`due`] the durable state of each check that has policy rows (its last two `check_events`,
//! its alerts, the maintenance intervals around now, the incident's acknowledgement, and the
//! outbox rows already written for those events) and writes what it returns as outbox rows
//! under the fence. Every send has a unique key (event, contact, slot): slot 0 is the flip's
//! notice (held by maintenance or escalation, sent at most once), slot k >= 1 the k-th
//! reminder. A second controller computing the same sends after a failover therefore writes
//! nothing twice, and nothing pending lives only in memory.
//!
//! Later rules (issue 14, items 6 and 7) fit as further inputs of [`CheckState`] and further
//! reasons to hold a send, as dependencies do ([`Dependency`]): flapping (hold flip notices,
//! one "flapping" send in its own slot range), storm control (fold sends into digests per
//! contact, a pass over the output of [`due`] for all checks together).

pub mod decide;
pub mod deps;
pub mod flap;
pub mod storm;
pub mod windows;

use std::collections::HashSet;

use crate::model::ContactId;

/// One `check_events` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub offline: bool,
    pub time_ms: i64,
}

/// Which flips an alert selects (`alerts.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selects {
    Online,
    Offline,
    Both,
}

impl Selects {
    pub fn parse(s: &str) -> Selects {
        match s {
            "online" => Selects::Online,
            "offline" => Selects::Offline,
            _ => Selects::Both,
        }
    }
    fn offline(self) -> bool {
        self != Selects::Online
    }
    fn online(self) -> bool {
        self != Selects::Offline
    }
}

/// One enabled alert of the check, with its policy columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub contact: ContactId,
    pub selects: Selects,
    /// `alerts.after`: notify an outage only if still offline this long after the flip.
    pub after_ms: Option<i64>,
    /// `alerts.remind_every`: tell again this often while offline and unacknowledged.
    pub remind_every_ms: Option<i64>,
}

/// What [`due`] needs to know about one check.
#[derive(Debug, Clone, Default)]
pub struct CheckState {
    /// The latest flip; `None` if the check never flipped.
    pub latest: Option<Event>,
    /// The flip before it (the outage a recovery ends).
    pub previous: Option<Event>,
    pub alerts: Vec<Alert>,
    /// Maintenance intervals `[start, end)` covering the check, in ms (any that overlap the
    /// events and now).
    pub maintenance: Vec<(i64, i64)>,
    /// The latest event is acknowledged (only meaningful for an offline one).
    pub acked: bool,
    /// Outbox rows that exist: (event, contact, slot).
    pub written: HashSet<(i64, ContactId, u32)>,
    /// Where the check stands in `check_dependencies` ([`deps`]).
    pub deps: Dependency,
    /// Flapping ([`flap`]).
    pub flap: Flapping,
}

/// The check's flapping, as [`due`] needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flapping {
    /// The latest flip is suppressed: the run it belongs to.
    pub latest: Option<flap::Episode>,
    /// The flip before the latest was suppressed (its contacts were told it was flapping).
    pub previous: bool,
}

/// The check's place in the dependency graph, as [`due`] needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dependency {
    /// The check has accepted `check_dependencies` rows (as a child or a parent): its offline
    /// notice waits [`deps::GRACE_MS`] after the flip.
    pub grace: bool,
    /// A check it depends on is offline now: its notifications are held.
    pub parent_offline: bool,
}

/// A notification to enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub event: i64,
    pub contact: ContactId,
    /// 0: the flip's notice; k >= 1: the k-th reminder.
    pub slot: u32,
}

/// Whether `t` falls in one of `windows`.
pub fn in_maintenance(windows: &[(i64, i64)], t: i64) -> bool {
    windows.iter().any(|&(s, e)| s <= t && t < e)
}

/// The sends due at `now` for one check that are not written yet.
///
/// - Offline: the notice goes to each offline-selecting contact once `after` has passed since
///   the flip, outside maintenance, unless acknowledged first (a notice held by maintenance is
///   sent when the window ends, if the check is still offline). Reminders follow every
///   `remind_every` after the notice's due time while offline, unacknowledged and outside
///   maintenance; only the latest due one is written (no burst after a window).
/// - Online: the recovery goes to each online-selecting contact outside maintenance, if the
///   contact was told of the outage (an offline-only contact never is, and an online-only
///   contact is told unless the outage began inside maintenance).
/// - Flapping ([`flap`]): while the latest flip is suppressed, only the "flapping" message;
///   once stable, one message with the current state.
/// - Dependencies: while a check it depends on is offline, nothing is sent for the check (it
///   is listed in the parent's message instead); once the parent recovers, what is due then
///   goes out. A check in the graph sends its offline notice [`deps::GRACE_MS`] after the
///   flip at the earliest (or `after`, if later).
pub fn due(state: &CheckState, now: i64) -> Vec<Send> {
    let Some(latest) = state.latest else {
        return Vec::new();
    };
    if in_maintenance(&state.maintenance, now) || state.deps.parent_offline {
        return Vec::new();
    }
    if let Some(episode) = state.flap.latest {
        return flapping(state, latest, episode, now);
    }
    let grace = if state.deps.grace { deps::GRACE_MS } else { 0 };
    let mut out = Vec::new();
    let push = |out: &mut Vec<Send>, contact: ContactId, slot: u32| {
        push_new(state, out, latest.id, contact, slot);
    };
    let mut seen: HashSet<ContactId> = HashSet::new();
    for alert in &state.alerts {
        if !seen.insert(alert.contact) {
            continue;
        }
        if latest.offline {
            if !alert.selects.offline() {
                continue;
            }
            let due_at = latest.time_ms + alert.after_ms.unwrap_or(0).max(grace);
            if now < due_at {
                continue;
            }
            let told = state.written.contains(&(latest.id, alert.contact, 0));
            if !told {
                if !state.acked {
                    push(&mut out, alert.contact, 0);
                }
                continue;
            }
            if let Some(every) = alert.remind_every_ms.filter(|&e| e > 0)
                && !state.acked
            {
                let k = ((now - due_at) / every) as u32;
                if k >= 1 {
                    push(&mut out, alert.contact, k);
                }
            }
        } else {
            if !alert.selects.online() {
                continue;
            }
            let told_of_outage = match state.previous {
                None => true,
                Some(_) if state.flap.previous => true,
                Some(p) if alert.selects.offline() => {
                    state.written.contains(&(p.id, alert.contact, 0))
                }
                Some(p) => !in_maintenance(&state.maintenance, p.time_ms),
            };
            if told_of_outage {
                push(&mut out, alert.contact, 0);
            }
        }
    }
    out
}

/// Adds the send (event, contact, slot) unless it is written.
fn push_new(state: &CheckState, out: &mut Vec<Send>, event: i64, contact: ContactId, slot: u32) {
    if !state.written.contains(&(event, contact, slot)) {
        out.push(Send {
            event,
            contact,
            slot,
        });
    }
}

/// The sends of a flapping check: the trigger's "flapping" message to every contact while
/// it flaps, then, once stable for a window, the latest flip's notice to every contact (an
/// offline one unless acknowledged).
fn flapping(state: &CheckState, latest: Event, episode: flap::Episode, now: i64) -> Vec<Send> {
    let mut out = Vec::new();
    let mut seen: HashSet<ContactId> = HashSet::new();
    for alert in &state.alerts {
        if !seen.insert(alert.contact) {
            continue;
        }
        if now < episode.stable_at {
            if let Some(trigger) = episode.trigger {
                push_new(state, &mut out, trigger, alert.contact, flap::FLAP_SLOT);
            }
        } else if !(latest.offline && state.acked) {
            push_new(state, &mut out, latest.id, alert.contact, 0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn alert(c: i64) -> Alert {
        Alert {
            contact: ContactId(c),
            selects: Selects::Both,
            after_ms: None,
            remind_every_ms: None,
        }
    }

    fn offline_at(t: i64) -> CheckState {
        CheckState {
            latest: Some(Event {
                id: 10,
                offline: true,
                time_ms: t,
            }),
            alerts: vec![alert(1)],
            ..Default::default()
        }
    }

    fn recovered(st: &mut CheckState, t: i64) {
        st.previous = st.latest;
        st.latest = Some(Event {
            id: 11,
            offline: false,
            time_ms: t,
        });
    }

    fn write(st: &mut CheckState, sends: &[Send]) {
        for s in sends {
            st.written.insert((s.event, s.contact, s.slot));
        }
    }

    fn send(event: i64, c: i64, slot: u32) -> Send {
        Send {
            event,
            contact: ContactId(c),
            slot,
        }
    }

    /// The offline notice is due at `at`, once (written, nothing more a second later).
    fn released_once(st: &mut CheckState, at: i64) {
        let d = due(st, at);
        assert_eq!(d, vec![send(10, 1, 0)]);
        write(st, &d);
        assert!(due(st, at + S).is_empty());
    }

    /// The offline notice is due at `at` (and written), the recovery at `back`.
    fn tell_then_recover(st: &mut CheckState, at: i64, back: i64) {
        let d = due(st, at);
        assert_eq!(d, vec![send(10, 1, 0)]);
        write(st, &d);
        recovered(st, back);
        assert_eq!(due(st, back), vec![send(11, 1, 0)]);
    }

    #[test]
    fn no_policy_sends_the_flip_once() {
        let mut st = offline_at(0);
        let d = due(&st, 0);
        assert_eq!(d, vec![send(10, 1, 0)]);
        write(&mut st, &d);
        assert!(due(&st, 3600 * S).is_empty());
        recovered(&mut st, 10 * S);
        let d = due(&st, 10 * S);
        assert_eq!(d, vec![send(11, 1, 0)]);
    }

    #[test]
    fn maintenance_holds_and_releases_once_at_its_end() {
        let mut st = offline_at(5 * S);
        st.maintenance = vec![(0, 20 * S)];
        assert!(due(&st, 5 * S).is_empty());
        assert!(due(&st, 19 * S).is_empty());
        released_once(&mut st, 20 * S);
    }

    #[test]
    fn recovery_inside_maintenance_sends_nothing() {
        let mut st = offline_at(5 * S);
        st.maintenance = vec![(0, 20 * S)];
        recovered(&mut st, 10 * S);
        assert!(due(&st, 10 * S).is_empty());
        assert!(due(&st, 30 * S).is_empty());
        // An online-only contact is not told of a recovery from an outage it began inside.
        st.alerts[0].selects = Selects::Online;
        assert!(due(&st, 30 * S).is_empty());
    }

    #[test]
    fn recovery_notified_before_maintenance_is_sent_at_its_end() {
        let mut st = offline_at(0);
        let d = due(&st, 0);
        write(&mut st, &d);
        st.maintenance = vec![(5 * S, 20 * S)];
        recovered(&mut st, 10 * S);
        assert!(due(&st, 10 * S).is_empty());
        assert_eq!(due(&st, 20 * S), vec![send(11, 1, 0)]);
    }

    #[test]
    fn escalation_waits_and_a_short_outage_sends_nothing() {
        let mut st = offline_at(0);
        st.alerts[0].after_ms = Some(30 * S);
        assert!(due(&st, 29 * S).is_empty());
        let mut short = st.clone();
        recovered(&mut short, 5 * S);
        assert!(due(&short, 5 * S).is_empty());
        assert!(due(&short, 60 * S).is_empty());
        tell_then_recover(&mut st, 30 * S, 40 * S);
    }

    #[test]
    fn escalation_only_for_the_escalated_contact() {
        let mut st = offline_at(0);
        st.alerts.push(Alert {
            after_ms: Some(30 * S),
            ..alert(2)
        });
        assert_eq!(due(&st, 0), vec![send(10, 1, 0)]);
        assert_eq!(due(&st, 31 * S), vec![send(10, 1, 0), send(10, 2, 0)]);
    }

    #[test]
    fn ack_stops_a_pending_escalation_and_reminders() {
        let mut st = offline_at(0);
        st.alerts[0].after_ms = Some(30 * S);
        st.acked = true;
        assert!(due(&st, 31 * S).is_empty());
        let mut st = offline_at(0);
        st.alerts[0].remind_every_ms = Some(10 * S);
        let d = due(&st, 0);
        write(&mut st, &d);
        assert_eq!(due(&st, 10 * S), vec![send(10, 1, 1)]);
        st.acked = true;
        assert!(due(&st, 20 * S).is_empty());
    }

    #[test]
    fn reminders_repeat_until_recovery_without_bursts() {
        let mut st = offline_at(0);
        st.alerts[0].remind_every_ms = Some(10 * S);
        let d = due(&st, 0);
        write(&mut st, &d);
        assert!(due(&st, 9 * S).is_empty());
        for k in 1..=3u32 {
            let d = due(&st, i64::from(k) * 10 * S + 1);
            assert_eq!(d, vec![send(10, 1, k)]);
            write(&mut st, &d);
            assert!(due(&st, i64::from(k) * 10 * S + 2).is_empty());
        }
        // After a long gap only the latest reminder is due.
        assert_eq!(due(&st, 95 * S), vec![send(10, 1, 9)]);
        recovered(&mut st, 96 * S);
        assert_eq!(due(&st, 200 * S), vec![send(11, 1, 0)]);
    }

    #[test]
    fn reminders_pause_in_maintenance_and_follow_escalation() {
        let mut st = offline_at(0);
        st.alerts[0].remind_every_ms = Some(10 * S);
        st.alerts[0].after_ms = Some(5 * S);
        assert!(due(&st, 4 * S).is_empty());
        let d = due(&st, 5 * S);
        write(&mut st, &d);
        assert!(due(&st, 14 * S).is_empty());
        st.maintenance = vec![(12 * S, 40 * S)];
        assert!(due(&st, 20 * S).is_empty());
        assert_eq!(due(&st, 40 * S), vec![send(10, 1, 3)]);
    }

    #[test]
    fn offline_only_contact_hears_no_recovery_and_online_only_no_outage() {
        let mut st = offline_at(0);
        st.alerts = vec![
            Alert {
                selects: Selects::Offline,
                ..alert(1)
            },
            Alert {
                selects: Selects::Online,
                ..alert(2)
            },
        ];
        let d = due(&st, 0);
        assert_eq!(d, vec![send(10, 1, 0)]);
        write(&mut st, &d);
        recovered(&mut st, 5 * S);
        assert_eq!(due(&st, 5 * S), vec![send(11, 2, 0)]);
    }

    fn child_at(t: i64) -> CheckState {
        let mut st = offline_at(t);
        st.deps = Dependency {
            grace: true,
            parent_offline: false,
        };
        st
    }

    #[test]
    fn a_check_in_the_graph_waits_the_grace_before_its_offline_notice() {
        let mut st = child_at(0);
        assert!(due(&st, deps::GRACE_MS - 1).is_empty());
        // The recovery is not delayed.
        tell_then_recover(&mut st, deps::GRACE_MS, 20 * S);
    }

    #[test]
    fn a_child_is_held_while_its_parent_is_offline_and_told_when_it_recovers() {
        let mut st = child_at(0);
        st.deps.parent_offline = true;
        assert!(due(&st, 5 * S).is_empty());
        assert!(due(&st, 300 * S).is_empty());
        // The parent recovers, the child is still down: notified then, once.
        st.deps.parent_offline = false;
        released_once(&mut st, 301 * S);
    }

    #[test]
    fn a_child_that_recovers_under_its_offline_parent_sends_nothing() {
        let mut st = child_at(0);
        st.deps.parent_offline = true;
        recovered(&mut st, 30 * S);
        assert!(due(&st, 30 * S).is_empty());
        st.deps.parent_offline = false;
        assert!(due(&st, 60 * S).is_empty(), "never told of the outage");
    }

    #[test]
    fn an_escalation_of_a_dependent_check_waits_for_both() {
        // Parent down from 5 s to 60 s: the escalated notice (after 30 s) waits for it.
        let mut st = child_at(0);
        st.alerts[0].after_ms = Some(30 * S);
        st.deps.parent_offline = true;
        assert!(due(&st, 31 * S).is_empty());
        st.deps.parent_offline = false;
        assert_eq!(due(&st, 60 * S), vec![send(10, 1, 0)]);
        // Parent back at 10 s: the escalation still applies.
        let st = CheckState {
            deps: Dependency {
                grace: true,
                parent_offline: false,
            },
            ..st
        };
        assert!(due(&st, 29 * S).is_empty());
        assert_eq!(due(&st, 30 * S), vec![send(10, 1, 0)]);
    }

    #[test]
    fn maintenance_on_the_parent_holds_it_and_its_children_until_the_end() {
        let mut parent = child_at(5 * S);
        parent.maintenance = vec![(0, 60 * S)];
        let mut child = child_at(6 * S);
        child.deps.parent_offline = true;
        assert!(due(&parent, 30 * S).is_empty());
        assert!(due(&child, 30 * S).is_empty());
        // The window ends with both still down: the parent's message goes (the store lists
        // the child in it), the child stays held behind its offline parent.
        assert_eq!(due(&parent, 60 * S), vec![send(10, 1, 0)]);
        assert!(due(&child, 60 * S).is_empty());
    }

    #[test]
    fn reminders_of_a_held_child_wait_for_its_parent() {
        let mut st = child_at(0);
        st.alerts[0].remind_every_ms = Some(10 * S);
        let d = due(&st, deps::GRACE_MS);
        write(&mut st, &d);
        // The parent falls after the child's notice: reminders stop while it is offline.
        st.deps.parent_offline = true;
        assert!(due(&st, 40 * S).is_empty());
        st.deps.parent_offline = false;
        assert_eq!(due(&st, 40 * S), vec![send(10, 1, 3)]);
    }

    const FLAP: flap::FlapRule = flap::FlapRule {
        flips: 3,
        window_ms: 20 * S,
    };

    /// Runs the rules once a second from 0 to `until` s over flips at `times` (s; offline
    /// first, alternating), and returns every send with when it was written (s).
    fn simulate(times: &[i64], until: i64, maintenance: Vec<(i64, i64)>) -> Vec<(i64, Send)> {
        let events: Vec<Event> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| Event {
                id: 100 + i as i64,
                offline: i % 2 == 0,
                time_ms: t * S,
            })
            .collect();
        let mut st = CheckState {
            alerts: vec![alert(1)],
            maintenance,
            ..Default::default()
        };
        let mut log = Vec::new();
        for now in 0..=until {
            let seen: Vec<Event> = events
                .iter()
                .copied()
                .filter(|e| e.time_ms <= now * S)
                .collect();
            let flags = flap::suppressed(&seen, FLAP, false);
            st.latest = seen.last().copied();
            st.previous = seen.len().checked_sub(2).map(|i| seen[i]);
            st.flap = Flapping {
                latest: flap::episode(&seen, FLAP, false),
                previous: flags.len() >= 2 && flags[flags.len() - 2],
            };
            let d = due(&st, now * S);
            write(&mut st, &d);
            log.extend(d.into_iter().map(|s| (now, s)));
        }
        log
    }

    #[test]
    fn a_storm_of_flips_sends_the_first_flips_one_flapping_message_then_the_state_once() {
        // 40 flips, one a second from 10 s, then stable (the last, at 49 s, is online).
        let times: Vec<i64> = (10..50).collect();
        let log = simulate(&times, 120, Vec::new());
        assert_eq!(
            log,
            vec![
                (10, send(100, 1, 0)),
                (11, send(101, 1, 0)),
                (12, send(102, 1, 0)),
                (13, send(103, 1, flap::FLAP_SLOT)),
                (69, send(139, 1, 0)),
            ]
        );
    }

    #[test]
    fn after_flapping_the_next_flip_is_notified_as_usual() {
        let log = simulate(&[0, 1, 2, 3, 4, 40], 60, Vec::new());
        let last: Vec<&(i64, Send)> = log.iter().filter(|(t, _)| *t >= 24).collect();
        // Stable at 24 s (offline, flip 104), then the recovery at 40 s reaches the contact.
        assert_eq!(last, vec![&(24, send(104, 1, 0)), &(40, send(105, 1, 0))]);
    }

    #[test]
    fn flapping_inside_maintenance_sends_only_the_state_at_its_end() {
        // The storm falls inside a window that ends after it is stable again.
        let times: Vec<i64> = (10..20).collect();
        let log = simulate(&times, 80, vec![(5 * S, 60 * S)]);
        assert_eq!(log, vec![(60, send(109, 1, 0))]);
        // A window that ends while it still flaps: the flapping message at its end.
        let times: Vec<i64> = (10..40).collect();
        let log = simulate(&times, 80, vec![(5 * S, 20 * S)]);
        assert_eq!(
            log,
            vec![(20, send(103, 1, flap::FLAP_SLOT)), (59, send(129, 1, 0))]
        );
    }
}
