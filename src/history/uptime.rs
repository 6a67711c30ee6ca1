//! Uptime and incidents from a check's flip history (`check_events`): pure functions of the
//! flips and the window, times in Unix seconds.
//!
//! # The method
//!
//! - A check is **down** from an `offline` flip until the next `online` flip, and up
//!   otherwise: the confirmed status, as the voting rules decided it (one flaky worker never
//!   counts). Uptime is up seconds over covered seconds, to the second.
//! - Between two flips the check keeps its status, whatever happened meanwhile: with
//!   insufficient quorum a check keeps its last status, so that time counts as that status.
//! - Before the first flip the check had the opposite of that flip's status; a check that
//!   never flipped has had its current status all along.
//! - **Coverage.** Nothing is known before the check's history began (its first flip or first
//!   stored result, whichever is earlier) or after now. The covered part of a window is
//!   reported; a window that starts before the history says so (`complete` is false) and its
//!   uptime is over the covered part only; a window with nothing covered has no uptime. No
//!   data is invented.
//! - An **incident** is an offline period: from an `offline` flip to the next `online` one
//!   (open while there is none). A second `offline` flip inside an incident (written by hand)
//!   does not start another.

use crate::model::CheckStatus;

/// One flip: at Unix second `at` the check became `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlipAt {
    pub at: i64,
    pub to: CheckStatus,
}

/// The uptime of one check over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Uptime {
    /// The window asked for.
    pub from: i64,
    pub to: i64,
    /// The part of it history covers (`None`: nothing).
    pub covered: Option<(i64, i64)>,
    pub up_seconds: i64,
    pub down_seconds: i64,
    /// `up / (up + down)`; `None` when nothing is covered.
    pub ratio: Option<f64>,
    /// Whether the covered part is the whole window.
    pub complete: bool,
    /// Covered seconds inside maintenance windows.
    pub maintenance_seconds: i64,
    /// The SLA figure: `up / (up + down)` outside maintenance windows; `None` when nothing
    /// outside them is covered.
    pub sla: Option<f64>,
}

/// The uptime over `[from, to)`. `flips` are the check's flips in time order (all of them up
/// to `to` at least; earlier ones decide the status at `from`), `history_start` when its
/// history began (`None`: no history at all), `current` its status now (for a check that
/// never flipped), `now` the present.
pub fn uptime(
    from: i64,
    to: i64,
    flips: &[FlipAt],
    history_start: Option<i64>,
    current: CheckStatus,
    now: i64,
) -> Uptime {
    uptime_with_maintenance(from, to, flips, history_start, current, now, &[])
}

/// Like [`uptime`], with the maintenance windows `[start, end)` (Unix seconds) that the
/// `sla` figure leaves out.
pub fn uptime_with_maintenance(
    from: i64,
    to: i64,
    flips: &[FlipAt],
    history_start: Option<i64>,
    current: CheckStatus,
    now: i64,
    maintenance: &[(i64, i64)],
) -> Uptime {
    let mut out = Uptime {
        from,
        to,
        covered: None,
        up_seconds: 0,
        down_seconds: 0,
        ratio: None,
        complete: false,
        maintenance_seconds: 0,
        sla: None,
    };
    let mut sla_up = 0i64;
    let mut sla_down = 0i64;
    let mut segment = |out: &mut Uptime, status: CheckStatus, a: i64, b: i64| {
        add(out, status, b - a);
        let held = overlap(maintenance, a, b);
        out.maintenance_seconds += held;
        match status {
            CheckStatus::Online => sla_up += b - a - held,
            CheckStatus::Offline => sla_down += b - a - held,
        }
    };
    let Some(began) = history_start else {
        return out;
    };
    let start = from.max(began);
    let end = to.min(now);
    if start >= end {
        return out;
    }
    let mut status = status_at(flips, start, current);
    let mut t = start;
    for f in flips.iter().filter(|f| f.at > start && f.at < end) {
        segment(&mut out, status, t, f.at);
        t = f.at;
        status = f.to;
    }
    segment(&mut out, status, t, end);
    out.covered = Some((start, end));
    out.complete = start == from && end == to;
    let total = out.up_seconds + out.down_seconds;
    out.ratio = (total > 0).then(|| out.up_seconds as f64 / total as f64);
    let sla_total = sla_up + sla_down;
    out.sla = (sla_total > 0).then(|| sla_up as f64 / sla_total as f64);
    out
}

/// Seconds of `[a, b)` inside the union of `windows`.
fn overlap(windows: &[(i64, i64)], a: i64, b: i64) -> i64 {
    let mut cut: Vec<(i64, i64)> = windows
        .iter()
        .map(|&(s, e)| (s.max(a), e.min(b)))
        .filter(|(s, e)| s < e)
        .collect();
    cut.sort_unstable();
    let mut total = 0;
    let mut reach = a;
    for (s, e) in cut {
        let s = s.max(reach);
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    total
}

fn add(out: &mut Uptime, status: CheckStatus, seconds: i64) {
    match status {
        CheckStatus::Online => out.up_seconds += seconds,
        CheckStatus::Offline => out.down_seconds += seconds,
    }
}

/// The status at second `t`: that of the last flip at or before it, else the opposite of the
/// first flip after it, else `current`.
pub fn status_at(flips: &[FlipAt], t: i64, current: CheckStatus) -> CheckStatus {
    match flips.iter().rev().find(|f| f.at <= t) {
        Some(f) => f.to,
        None => flips.first().map_or(current, |f| f.to.opposite()),
    }
}

/// An offline period, as indices into the flips it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The `offline` flip that started it.
    pub start: usize,
    /// The `online` flip that ended it; `None` while it is open.
    pub end: Option<usize>,
}

/// The offline periods of a check, oldest first.
pub fn incidents(flips: &[FlipAt]) -> Vec<Period> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, f) in flips.iter().enumerate() {
        match (f.to, open) {
            (CheckStatus::Offline, None) => open = Some(i),
            (CheckStatus::Online, Some(start)) => {
                out.push(Period {
                    start,
                    end: Some(i),
                });
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        out.push(Period { start, end: None });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckStatus::{Offline, Online};

    fn f(at: i64, to: CheckStatus) -> FlipAt {
        FlipAt { at, to }
    }

    #[test]
    fn down_periods_are_counted_to_the_second() {
        let flips = [
            f(100, Offline),
            f(130, Online),
            f(200, Offline),
            f(245, Online),
        ];
        let u = uptime(0, 1000, &flips, Some(0), Online, 5000);
        assert_eq!((u.up_seconds, u.down_seconds), (925, 75));
        assert!(u.complete);
        assert_eq!(u.ratio, Some(0.925));
    }

    #[test]
    fn a_window_inside_an_incident_is_all_down() {
        let flips = [f(100, Offline), f(500, Online)];
        let u = uptime(200, 300, &flips, Some(0), Online, 5000);
        assert_eq!((u.up_seconds, u.down_seconds), (0, 100));
        assert_eq!(u.ratio, Some(0.0));
    }

    #[test]
    fn before_history_and_after_now_are_not_covered() {
        let flips = [f(1000, Offline)];
        let u = uptime(0, 5000, &flips, Some(800), Offline, 3000);
        assert_eq!(u.covered, Some((800, 3000)));
        assert!(!u.complete);
        // 800..1000 up (before the first offline flip), 1000..3000 down.
        assert_eq!((u.up_seconds, u.down_seconds), (200, 2000));
        let none = uptime(0, 500, &flips, Some(800), Offline, 3000);
        assert_eq!(
            (none.covered, none.ratio, none.complete),
            (None, None, false)
        );
        let no_history = uptime(0, 500, &[], None, Online, 3000);
        assert_eq!(no_history.covered, None);
    }

    #[test]
    fn a_check_that_never_flipped_has_its_current_status() {
        let u = uptime(0, 100, &[], Some(0), Offline, 1000);
        assert_eq!((u.up_seconds, u.down_seconds), (0, 100));
        assert_eq!(status_at(&[f(50, Online)], 10, Online), Offline);
    }

    #[test]
    fn incidents_pair_offline_with_the_next_online() {
        let flips = [
            f(1, Online), // an online flip with no incident before it
            f(10, Offline),
            f(12, Offline), // written by hand inside the incident
            f(20, Online),
            f(30, Offline),
        ];
        let got = incidents(&flips);
        assert_eq!(
            got,
            vec![
                Period {
                    start: 1,
                    end: Some(3)
                },
                Period {
                    start: 4,
                    end: None
                }
            ]
        );
    }

    #[test]
    fn sla_leaves_out_maintenance() {
        let flips = [
            FlipAt {
                at: 100,
                to: CheckStatus::Offline,
            },
            FlipAt {
                at: 200,
                to: CheckStatus::Online,
            },
        ];
        // Down 100..200 of 0..1000; a window 50..150 (overlapping twice) holds 50 s of it.
        let u = uptime_with_maintenance(
            0,
            1000,
            &flips,
            Some(0),
            CheckStatus::Online,
            1000,
            &[(50, 150), (60, 120)],
        );
        assert_eq!((u.up_seconds, u.down_seconds), (900, 100));
        assert_eq!(u.maintenance_seconds, 100);
        assert_eq!(u.sla, Some(850.0 / 900.0));
        assert_eq!(u.ratio, Some(0.9));
        let plain = uptime(0, 1000, &flips, Some(0), CheckStatus::Online, 1000);
        assert_eq!(plain.sla, plain.ratio);
    }
}
