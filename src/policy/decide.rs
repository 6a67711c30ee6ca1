//! Why a flip's notice is not sent (issue 14, item 8): for each contact of the latest flip
//! whose notice is neither written nor due now ([`super::due`]), whether it is *held* (and by
//! what: maintenance, a dependency, flapping, a pending escalation) or *dropped* for good
//! (acknowledged first, or a recovery of an outage the contact was never told of). The policy
//! task writes these as outbox rows in state `held` or `dropped` with the reason, so every
//! notification that was not sent still has a row saying why.

use std::collections::HashSet;

use super::{CheckState, Send, in_maintenance};
use crate::model::ContactId;

/// Why a notice waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Maintenance,
    /// A check it depends on is offline.
    Dependency,
    /// The check is flapping: held until stable for the flap window.
    Flapping,
    /// `alerts.after`: sent if still offline at `due_at`.
    Escalation {
        due_at: i64,
    },
    /// In the dependency graph: waits for a parent's flip until `due_at`.
    Grace {
        due_at: i64,
    },
}

/// Why a notice is never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The incident was acknowledged before the notice was due.
    Acknowledged,
    /// A recovery, to a contact never told of the outage.
    NotToldOfOutage,
}

/// What became of one unsent notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Held(Hold),
    Dropped(Dropped),
}

impl Verdict {
    /// The row's `state`.
    pub fn state(self) -> &'static str {
        match self {
            Verdict::Held(_) => "held",
            Verdict::Dropped(_) => "dropped",
        }
    }

    /// The row's `reason`; `time` formats an instant (ms).
    pub fn reason(self, time: impl Fn(i64) -> String) -> String {
        match self {
            Verdict::Held(Hold::Maintenance) => "maintenance: held until the window ends".into(),
            Verdict::Held(Hold::Dependency) => {
                "dependency: a check it depends on is offline".into()
            }
            Verdict::Held(Hold::Flapping) => {
                "flapping: held until the check is stable for the flap window".into()
            }
            Verdict::Held(Hold::Escalation { due_at }) => {
                format!(
                    "escalation pending: sent if still offline at {}",
                    time(due_at)
                )
            }
            Verdict::Held(Hold::Grace { due_at }) => format!(
                "dependency: waiting for a parent's flip until {}",
                time(due_at)
            ),
            Verdict::Dropped(Dropped::Acknowledged) => {
                "acknowledged before it was due: not sent".into()
            }
            Verdict::Dropped(Dropped::NotToldOfOutage) => {
                "not sent: the contact was not told of the outage (escalation or alert type)".into()
            }
        }
    }
}

/// One unsent notice of the latest flip (slot 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub send: Send,
    pub verdict: Verdict,
}

/// The notices of the latest flip that are neither written nor due at `now`, with why;
/// `due_now` is what [`due`] gave for the same state and instant.
pub fn unsent(state: &CheckState, now: i64, due_now: &[Send]) -> Vec<Decision> {
    let Some(latest) = state.latest else {
        return Vec::new();
    };
    let due_now: HashSet<ContactId> = due_now
        .iter()
        .filter(|s| s.event == latest.id && s.slot == 0)
        .map(|s| s.contact)
        .collect();
    let grace = if state.deps.grace {
        super::deps::GRACE_MS
    } else {
        0
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for alert in &state.alerts {
        let contact = alert.contact;
        if !seen.insert(contact)
            || due_now.contains(&contact)
            || state.written.contains(&(latest.id, contact, 0))
        {
            continue;
        }
        let selected = if latest.offline {
            alert.selects.offline()
        } else {
            alert.selects.online()
        };
        let verdict = if state.flap.latest.is_some() {
            // A flapping check's contacts are all told its state once it is stable.
            Verdict::Held(Hold::Flapping)
        } else if !selected {
            continue;
        } else if state.deps.parent_offline {
            Verdict::Held(Hold::Dependency)
        } else if in_maintenance(&state.maintenance, now) {
            Verdict::Held(Hold::Maintenance)
        } else if !latest.offline {
            Verdict::Dropped(Dropped::NotToldOfOutage)
        } else if state.acked {
            Verdict::Dropped(Dropped::Acknowledged)
        } else {
            let after = alert.after_ms.unwrap_or(0);
            let due_at = latest.time_ms + after.max(grace);
            if now >= due_at {
                continue;
            }
            if after >= grace {
                Verdict::Held(Hold::Escalation { due_at })
            } else {
                Verdict::Held(Hold::Grace { due_at })
            }
        };
        out.push(Decision {
            send: Send {
                event: latest.id,
                contact,
                slot: 0,
            },
            verdict,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Alert, Dependency, Event, Flapping, Selects, due, flap};
    use super::*;

    const S: i64 = 1000;

    fn alert(c: i64, selects: Selects, after: Option<i64>) -> Alert {
        Alert {
            contact: ContactId(c),
            selects,
            after_ms: after,
            remind_every_ms: None,
        }
    }

    fn offline_at(t: i64, alerts: Vec<Alert>) -> CheckState {
        CheckState {
            latest: Some(Event {
                id: 10,
                offline: true,
                time_ms: t,
            }),
            alerts,
            ..Default::default()
        }
    }

    fn verdicts(st: &CheckState, now: i64) -> Vec<(i64, Verdict)> {
        unsent(st, now, &due(st, now))
            .into_iter()
            .map(|d| (d.send.contact.0, d.verdict))
            .collect()
    }

    #[test]
    fn a_notice_due_or_written_has_no_decision() {
        let st = offline_at(0, vec![alert(1, Selects::Both, None)]);
        assert!(
            unsent(&st, 0, &due(&st, 0)).is_empty(),
            "due now: the outbox row says sent"
        );
        let mut st = st;
        st.written.insert((10, ContactId(1), 0));
        assert!(unsent(&st, 5 * S, &due(&st, 5 * S)).is_empty());
    }

    #[test]
    fn an_escalation_is_held_until_due_and_an_ack_drops_it() {
        let mut st = offline_at(0, vec![alert(1, Selects::Both, Some(30 * S))]);
        assert_eq!(
            verdicts(&st, 10 * S),
            vec![(1, Verdict::Held(Hold::Escalation { due_at: 30 * S }))]
        );
        assert!(
            unsent(&st, 30 * S, &due(&st, 30 * S)).is_empty(),
            "due at 30 s"
        );
        st.acked = true;
        assert_eq!(
            verdicts(&st, 31 * S),
            vec![(1, Verdict::Dropped(Dropped::Acknowledged))]
        );
    }

    #[test]
    fn maintenance_dependency_and_flapping_hold_in_that_order_of_precedence() {
        let mut st = offline_at(0, vec![alert(1, Selects::Both, None)]);
        st.maintenance = vec![(0, 60 * S)];
        assert_eq!(
            verdicts(&st, S),
            vec![(1, Verdict::Held(Hold::Maintenance))]
        );
        st.deps = Dependency {
            grace: true,
            parent_offline: true,
        };
        assert_eq!(verdicts(&st, S), vec![(1, Verdict::Held(Hold::Dependency))]);
        st.flap = Flapping {
            latest: Some(flap::Episode {
                trigger: Some(9),
                stable_at: 3600 * S,
            }),
            previous: true,
        };
        assert_eq!(verdicts(&st, S), vec![(1, Verdict::Held(Hold::Flapping))]);
    }

    #[test]
    fn the_dependency_grace_holds_a_child_briefly() {
        let mut st = offline_at(0, vec![alert(1, Selects::Both, None)]);
        st.deps.grace = true;
        assert_eq!(
            verdicts(&st, S),
            vec![(
                1,
                Verdict::Held(Hold::Grace {
                    due_at: super::super::deps::GRACE_MS
                })
            )]
        );
    }

    #[test]
    fn a_recovery_never_told_of_the_outage_is_dropped_and_unselected_contacts_are_skipped() {
        let mut st = offline_at(
            0,
            vec![
                alert(1, Selects::Both, Some(30 * S)),
                alert(2, Selects::Offline, None),
            ],
        );
        st.written.insert((10, ContactId(2), 0));
        st.previous = st.latest;
        st.latest = Some(Event {
            id: 11,
            offline: false,
            time_ms: 5 * S,
        });
        assert_eq!(
            verdicts(&st, 5 * S),
            vec![(1, Verdict::Dropped(Dropped::NotToldOfOutage))],
            "contact 2 selects offline only: no recovery row at all"
        );
    }

    #[test]
    fn reasons_name_the_rule() {
        let t = |ms: i64| format!("t{ms}");
        assert_eq!(
            Verdict::Held(Hold::Escalation { due_at: 5 }).reason(t),
            "escalation pending: sent if still offline at t5"
        );
        assert!(
            Verdict::Held(Hold::Maintenance)
                .reason(t)
                .starts_with("maintenance")
        );
        assert_eq!(Verdict::Dropped(Dropped::Acknowledged).state(), "dropped");
    }
}
