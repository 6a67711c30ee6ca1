//! Which stored rows answer a question about a window of time: whole UTC days from daily
//! rollups, whole hours from hourly rollups, and the rest (the window's ragged edges, and the
//! hours not rolled up yet) from raw results. Pure: the caller reads what the plan names.

use super::rollup::{DAY, HOUR, Period};

/// Half-open ranges of Unix seconds, each read from one kind of row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Daily rollups with `period_start` in these ranges.
    pub days: Vec<(i64, i64)>,
    /// Hourly rollups with `period_start` in these ranges.
    pub hours: Vec<(i64, i64)>,
    /// Raw results with their time in these ranges.
    pub raw: Vec<(i64, i64)>,
}

fn ceil(t: i64, p: Period) -> i64 {
    let s = p.start_of(t);
    if s == t { s } else { s + p.seconds() }
}

fn push(v: &mut Vec<(i64, i64)>, from: i64, to: i64) {
    if from < to {
        v.push((from, to));
    }
}

/// The plan for `[from, to)` when every hour before `rolled_to` is rolled up (a day is rolled
/// up once its last hour is).
pub fn plan(from: i64, to: i64, rolled_to: i64) -> Plan {
    let mut p = Plan::default();
    if from >= to {
        return p;
    }
    let h0 = ceil(from, Period::Hour);
    let h1 = Period::Hour.start_of(to.min(rolled_to));
    if h0 >= h1 {
        push(&mut p.raw, from, to);
        return p;
    }
    push(&mut p.raw, from, h0);
    let d0 = ceil(h0, Period::Day);
    let d1 = Period::Day.start_of(h1);
    if d0 < d1 {
        push(&mut p.hours, h0, d0);
        push(&mut p.days, d0, d1);
        push(&mut p.hours, d1, h1);
    } else {
        push(&mut p.hours, h0, h1);
    }
    push(&mut p.raw, h1, to);
    debug_assert!(h0 - from < HOUR && d0 - h0 < DAY);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 1_767_571_200; // a UTC midnight

    /// Every second of the window is covered once.
    fn covered(p: &Plan) -> i64 {
        p.days
            .iter()
            .chain(&p.hours)
            .chain(&p.raw)
            .map(|(a, b)| b - a)
            .sum()
    }

    #[test]
    fn ragged_edges_are_raw_whole_hours_and_days_are_rollups() {
        let from = D + 1800; // 00:30
        let to = D + 2 * DAY + 5 * HOUR + 60; // two days later, 05:01
        let p = plan(from, to, to + DAY);
        assert_eq!(p.raw, vec![(from, D + HOUR), (D + 2 * DAY + 5 * HOUR, to)]);
        assert_eq!(
            p.hours,
            vec![(D + HOUR, D + DAY), (D + 2 * DAY, D + 2 * DAY + 5 * HOUR)]
        );
        assert_eq!(p.days, vec![(D + DAY, D + 2 * DAY)]);
        assert_eq!(covered(&p), to - from);
    }

    #[test]
    fn hours_not_rolled_up_are_read_raw() {
        let p = plan(D, D + 10 * HOUR, D + 4 * HOUR + 10);
        assert_eq!(p.hours, vec![(D, D + 4 * HOUR)]);
        assert_eq!(p.raw, vec![(D + 4 * HOUR, D + 10 * HOUR)]);
        assert!(p.days.is_empty());
        let nothing_rolled = plan(D, D + 10 * HOUR, 0);
        assert_eq!(nothing_rolled.raw, vec![(D, D + 10 * HOUR)]);
    }

    #[test]
    fn aligned_windows_have_no_raw_part_and_empty_windows_nothing() {
        let p = plan(D, D + 3 * DAY, D + 30 * DAY);
        assert_eq!(p.days, vec![(D, D + 3 * DAY)]);
        assert!(p.hours.is_empty() && p.raw.is_empty());
        assert_eq!(plan(D, D, D + DAY), Plan::default());
        let inside_an_hour = plan(D + 10, D + 20, D + DAY);
        assert_eq!(inside_an_hour.raw, vec![(D + 10, D + 20)]);
    }
}
