//! Storm control and per-contact caps (issue 14, item 7), decided when the dispatcher is
//! about to claim due outbox rows: a pure plan over the fresh due rows (never attempted)
//! grouped by contact, on explicit time.
//!
//! - **Storm**: more than `storm_flips` flips (all checks) within `storm_window` ending now.
//!   During a storm each contact gets one message per window: its due rows fold into one
//!   digest (the oldest row carries it), and rows due less than a window after the contact's
//!   last message wait for the next digest.
//! - **Gathering** (`storm_wait`, default 0): a contact's rows wait this long after the oldest
//!   of them, so the first flips of a storm are folded with the rest instead of sent one by
//!   one before the storm is recognised. 0 sends at once, as before storm control.
//! - **Caps** (`sms` and `voice` contacts: `contacts.max_per_hour`, else `[twilio]
//!   max_per_hour`): at most that many messages in any hour. The last allowed message carries
//!   every row beyond it (folded); with none allowed the rows wait until the oldest message
//!   of the hour ages out, then go as one.
//!
//! # Decisions
//! - Rows that failed an attempt already are retried as they are, not folded (their text may
//!   have reached the contact).
//! - A digest or a folded message counts as one message against a cap.
//! - A contact with one due row during a storm still waits for its window: "one message per
//!   window" holds whatever the number of rows.
//! - A `max_per_hour` of 0 or less is a bad row, not "never": the contact gets the default cap
//!   ([`cap_of`]) and the admin is told once (a meta-alert of the acting controller).

use std::collections::HashSet;

use crate::model::ContactId;

/// One hour, the cap's period.
pub const HOUR_MS: i64 = 3_600_000;

/// `[controller] storm_flips`, `storm_window`, `storm_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormRule {
    /// More flips than this within `window_ms` is a storm.
    pub flips: u32,
    pub window_ms: i64,
    /// How long a contact's rows wait for more to fold with them (0: not at all).
    pub wait_ms: i64,
}

/// The declared defaults of `[controller]` ([`crate::config::ControllerKeys`]).
impl Default for StormRule {
    fn default() -> Self {
        let k = crate::config::ControllerKeys::default();
        StormRule {
            flips: k.storm_flips,
            window_ms: k.storm_window.as_millis() as i64,
            wait_ms: k.storm_wait.as_millis() as i64,
        }
    }
}

/// One due outbox row never attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    /// When the row became due (created, or released by the policy task), ms.
    pub due_ms: i64,
}

/// A contact with due rows, and what the rules need of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub contact: ContactId,
    /// Messages per hour, for paid channels (`sms`, `voice`); `None`: no cap.
    pub cap: Option<u32>,
    /// When its messages of the last hour were sent, oldest first.
    pub sent_last_hour: Vec<i64>,
    /// Its due rows, oldest first (not empty).
    pub rows: Vec<Row>,
    /// When the oldest of its rows still held for later became due: rows due since then
    /// gather with it rather than start a gathering of their own.
    pub waiting_since: Option<i64>,
}

/// Why rows wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `storm_wait`: gathering rows that may fold together.
    Gathering,
    /// A storm: the contact had a message less than a window ago.
    Storm,
    /// The contact's hourly cap is used up.
    Cap,
}

/// Why rows fold into one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// One digest per contact during a storm.
    Digest,
    /// Past the contact's hourly cap.
    Cap,
}

/// What to do with due rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send each as it is.
    Send(Vec<i64>),
    /// Send `carrier`, made to list `folded` as well; the folded rows are not sent.
    Fold {
        carrier: i64,
        folded: Vec<i64>,
        why: Fold,
    },
    /// Not before `until_ms`.
    Defer {
        rows: Vec<i64>,
        until_ms: i64,
        why: Wait,
    },
}

/// The hourly cap of an `sms` or `voice` contact: its `contacts.max_per_hour`, else
/// `default` (`[twilio] max_per_hour`). A value of 0 or less is a bad row (the acting
/// controller tells the admin of it): it would hold every message forever, so the default
/// applies.
pub fn cap_of(max_per_hour: Option<i32>, default: u32) -> u32 {
    match max_per_hour {
        Some(m) if m > 0 => m as u32,
        _ => default,
    }
}

/// Whether `flips_in_window` (flips within the window ending now) make a storm.
pub fn is_storm(rule: StormRule, flips_in_window: u64) -> bool {
    flips_in_window > u64::from(rule.flips)
}

/// The plan for the due rows of `contacts` at `now`; `flips_in_window` counts the flips of
/// every check within `rule.window_ms` before `now`.
pub fn plan(rule: StormRule, now: i64, flips_in_window: u64, contacts: &[Contact]) -> Vec<Action> {
    let storm = is_storm(rule, flips_in_window);
    let mut out = Vec::new();
    for c in contacts {
        plan_contact(rule, now, storm, c, &mut out);
    }
    out
}

fn plan_contact(rule: StormRule, now: i64, storm: bool, c: &Contact, out: &mut Vec<Action>) {
    let Some(oldest) = c.rows.first() else {
        return;
    };
    let ids: Vec<i64> = c.rows.iter().map(|r| r.id).collect();
    let defer = |until_ms: i64, why: Wait| Action::Defer {
        rows: ids.clone(),
        until_ms,
        why,
    };
    let since = c
        .waiting_since
        .map_or(oldest.due_ms, |w| w.min(oldest.due_ms));
    if rule.wait_ms > 0 && now < since + rule.wait_ms {
        out.push(defer(since + rule.wait_ms, Wait::Gathering));
        return;
    }
    let recent: Vec<i64> = c
        .sent_last_hour
        .iter()
        .copied()
        .filter(|&t| t > now - HOUR_MS)
        .collect();
    let allowed = match c.cap {
        None => usize::MAX,
        Some(cap) => (cap as usize).saturating_sub(recent.len()),
    };
    if allowed == 0 {
        let until = recent.first().map_or(now, |&t| t + HOUR_MS);
        out.push(defer(until, Wait::Cap));
        return;
    }
    if storm {
        if let Some(&last) = recent.last()
            && now < last + rule.window_ms
        {
            out.push(defer(last + rule.window_ms, Wait::Storm));
            return;
        }
        out.push(fold(&ids, Fold::Digest));
        return;
    }
    if ids.len() > allowed {
        let (single, rest) = ids.split_at(allowed - 1);
        if !single.is_empty() {
            out.push(Action::Send(single.to_vec()));
        }
        out.push(fold(rest, Fold::Cap));
        return;
    }
    out.push(Action::Send(ids));
}

/// `ids[0]` carrying the rest (a lone row is folded with nothing: still one message).
fn fold(ids: &[i64], why: Fold) -> Action {
    Action::Fold {
        carrier: ids[0],
        folded: ids[1..].to_vec(),
        why,
    }
}

/// The contacts whose cap held or folded rows in `actions` (the admin is told of them), in
/// the order of `contacts`.
pub fn capped(contacts: &[Contact], actions: &[Action]) -> Vec<ContactId> {
    let rows: HashSet<i64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Defer {
                rows,
                why: Wait::Cap,
                ..
            } => rows.first().copied(),
            Action::Fold {
                carrier,
                why: Fold::Cap,
                ..
            } => Some(*carrier),
            _ => None,
        })
        .collect();
    contacts
        .iter()
        .filter(|c| c.rows.iter().any(|r| rows.contains(&r.id)))
        .map(|c| c.contact)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn rule() -> StormRule {
        StormRule {
            flips: 20,
            window_ms: 60 * S,
            wait_ms: 0,
        }
    }

    fn contact(id: i64, cap: Option<u32>, sent: &[i64], rows: &[(i64, i64)]) -> Contact {
        Contact {
            contact: ContactId(id),
            cap,
            sent_last_hour: sent.to_vec(),
            rows: rows
                .iter()
                .map(|&(id, due_ms)| Row { id, due_ms })
                .collect(),
            waiting_since: None,
        }
    }

    #[test]
    fn a_cap_of_zero_or_less_is_the_default_cap() {
        assert_eq!(cap_of(None, 30), 30);
        assert_eq!(cap_of(Some(0), 30), 30);
        assert_eq!(cap_of(Some(-5), 30), 30);
        assert_eq!(cap_of(Some(1), 30), 1);
        assert_eq!(cap_of(Some(100), 30), 100);
        // The default cap lets a contact's first message go at once.
        let c = contact(1, Some(cap_of(Some(0), 30)), &[], &[(1, 0)]);
        assert_eq!(plan(rule(), 10 * S, 0, &[c]), vec![Action::Send(vec![1])]);
    }

    fn rows(n: i64, first_id: i64, due_ms: i64) -> Vec<(i64, i64)> {
        (0..n).map(|i| (first_id + i, due_ms)).collect()
    }

    #[test]
    fn no_storm_no_cap_sends_each_row_at_once() {
        let c = contact(1, None, &[], &rows(3, 10, 0));
        assert_eq!(
            plan(rule(), 0, 20, &[c]),
            vec![Action::Send(vec![10, 11, 12])]
        );
    }

    #[test]
    fn a_storm_folds_each_contacts_rows_into_one_digest() {
        let a = contact(1, None, &[], &rows(40, 100, 0));
        let b = contact(2, Some(30), &[], &rows(40, 200, 0));
        let p = plan(rule(), 0, 40, &[a, b]);
        assert_eq!(
            p,
            vec![
                Action::Fold {
                    carrier: 100,
                    folded: (101..140).collect(),
                    why: Fold::Digest
                },
                Action::Fold {
                    carrier: 200,
                    folded: (201..240).collect(),
                    why: Fold::Digest
                },
            ]
        );
    }

    #[test]
    fn a_storm_is_more_than_storm_flips() {
        assert!(!is_storm(rule(), 20));
        assert!(is_storm(rule(), 21));
    }

    #[test]
    fn during_a_storm_a_contact_gets_one_message_per_window() {
        // Told 10 s ago: the next digest waits until a window after that.
        let c = contact(1, None, &[-10 * S], &rows(5, 10, 0));
        assert_eq!(
            plan(rule(), 0, 30, &[c]),
            vec![Action::Defer {
                rows: (10..15).collect(),
                until_ms: 50 * S,
                why: Wait::Storm
            }]
        );
        let c = contact(1, None, &[-10 * S], &rows(1, 10, 0));
        assert!(matches!(
            plan(rule(), 50 * S, 30, &[c])[..],
            [Action::Fold { carrier: 10, .. }]
        ));
    }

    #[test]
    fn gathering_waits_from_the_oldest_row_so_a_stream_cannot_starve_it() {
        let r = StormRule {
            wait_ms: 5 * S,
            ..rule()
        };
        let c = contact(1, None, &[], &[(10, 0), (11, 4 * S)]);
        assert_eq!(
            plan(r, 4 * S, 2, std::slice::from_ref(&c)),
            vec![Action::Defer {
                rows: vec![10, 11],
                until_ms: 5 * S,
                why: Wait::Gathering
            }]
        );
        // A row due later joins the rows already waiting instead of waiting on its own.
        let later = Contact {
            rows: vec![Row {
                id: 12,
                due_ms: 4 * S,
            }],
            waiting_since: Some(0),
            ..c.clone()
        };
        assert_eq!(
            plan(r, 4 * S, 2, &[later]),
            vec![Action::Defer {
                rows: vec![12],
                until_ms: 5 * S,
                why: Wait::Gathering
            }]
        );
        // At its end, no storm: each row as it is; a storm: one digest.
        assert_eq!(
            plan(r, 5 * S, 2, std::slice::from_ref(&c)),
            vec![Action::Send(vec![10, 11])]
        );
        assert!(matches!(
            plan(r, 5 * S, 21, &[c])[..],
            [Action::Fold {
                why: Fold::Digest,
                ..
            }]
        ));
    }

    #[test]
    fn past_the_cap_the_last_allowed_message_carries_the_rest() {
        // Cap 3, one sent this hour: two allowed; four rows: one alone, three folded in one.
        let c = contact(1, Some(3), &[-30 * 60 * S], &rows(4, 10, 0));
        let p = plan(rule(), 0, 4, std::slice::from_ref(&c));
        assert_eq!(
            p,
            vec![
                Action::Send(vec![10]),
                Action::Fold {
                    carrier: 11,
                    folded: vec![12, 13],
                    why: Fold::Cap
                }
            ]
        );
        assert_eq!(capped(&[c], &p), vec![ContactId(1)]);
    }

    #[test]
    fn a_used_up_cap_waits_until_the_oldest_message_of_the_hour_ages_out() {
        let sent = [-50 * 60 * S, -40 * 60 * S];
        let c = contact(1, Some(2), &sent, &rows(2, 10, 0));
        let p = plan(rule(), 0, 2, std::slice::from_ref(&c));
        assert_eq!(
            p,
            vec![Action::Defer {
                rows: vec![10, 11],
                until_ms: 10 * 60 * S,
                why: Wait::Cap
            }]
        );
        assert_eq!(capped(std::slice::from_ref(&c), &p), vec![ContactId(1)]);
        // Ten minutes on, the first message is over an hour old: one message with both.
        assert_eq!(
            plan(rule(), 10 * 60 * S, 2, &[c]),
            vec![Action::Fold {
                carrier: 10,
                folded: vec![11],
                why: Fold::Cap
            }]
        );
    }

    #[test]
    fn the_cap_binds_during_a_storm_too() {
        let sent: Vec<i64> = (0..30).map(|i| -(i + 2) * 60 * S).rev().collect();
        let c = contact(1, Some(30), &sent, &rows(40, 10, 0));
        assert!(matches!(
            plan(rule(), 0, 40, &[c])[..],
            [Action::Defer { why: Wait::Cap, .. }]
        ));
    }

    #[test]
    fn uncapped_contacts_are_not_reported() {
        let c = contact(1, None, &[], &rows(40, 10, 0));
        let p = plan(rule(), 0, 40, std::slice::from_ref(&c));
        assert!(capped(&[c], &p).is_empty());
    }

    /// The policy's output feeds the plan like any flip's notice: during a storm the
    /// "flapping" message of a flapping check folds into the digest with the others.
    #[test]
    fn a_storm_that_includes_a_flapping_check_folds_its_message_too() {
        use crate::policy::{Alert, CheckState, Event, Flapping, Selects, due, flap};
        let flapping = CheckState {
            latest: Some(Event {
                id: 30,
                offline: true,
                time_ms: 0,
            }),
            alerts: vec![Alert {
                contact: ContactId(1),
                selects: Selects::Both,
                after_ms: None,
                remind_every_ms: None,
            }],
            flap: Flapping {
                latest: Some(flap::Episode {
                    trigger: Some(29),
                    stable_at: 3600 * S,
                }),
                previous: true,
            },
            ..Default::default()
        };
        let sends = due(&flapping, S);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].slot, flap::FLAP_SLOT);
        // Its row (id 50) is due with 24 flip notices of other checks for the same contact.
        let mut rows: Vec<(i64, i64)> = (1..=24).map(|i| (i, 0)).collect();
        rows.push((50, S));
        let c = contact(1, None, &[], &rows);
        let p = plan(rule(), S, 25, &[c]);
        match &p[..] {
            [
                Action::Fold {
                    carrier: 1,
                    folded,
                    why: Fold::Digest,
                },
            ] => assert!(folded.contains(&50) && folded.len() == 24, "{folded:?}"),
            other => panic!("{other:?}"),
        }
    }
}
