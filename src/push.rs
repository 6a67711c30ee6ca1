//! Push checks (`type = 'push'`): the rules that turn what a job pushed into flips. Pure: no
//! IO, no clock reads; every input carries the time.
//!
//! A push check is online while its job calls the push URL at least every
//! `check_interval + grace` seconds, and offline once a push is overdue or the job pushed
//! `status=fail`. There is no voting (a push has one source), and no `delay`: the acting
//! controller decides at once.
//!
//! # Rules
//!
//! 1. The controller reads `check_pushes` over and over ([`PushBook::observe`]). Each read
//!    says, per check, how many pushes and failures arrived ever, whether the latest was a
//!    success, and how long before the read it arrived. Only reads move time forward: a
//!    deadline passes when a read *made after it* still shows no newer push, so while the
//!    database cannot be read nothing goes offline for want of pushes.
//! 2. New pushes whose latest is a success make the check online, unless that push is
//!    itself overdue by the time of the read. If failures arrived since the last read and the
//!    check was online, it flips offline and back online, so the failure is told.
//! 3. New pushes whose latest is a failure make the check offline with the job's message.
//! 4. An online check with no push for `check_interval + grace` goes offline, once.
//! 5. A check never pushed to is watched from when the book first saw it (a new term, or the
//!    check's creation): it goes offline after `check_interval + grace` from then.
//!
//! # Decisions where the issue is silent
//!
//! - After a failover the new controller knows the counts from its first read only; a failure
//!   followed by a success that both arrived in the gap is not told (the check is online).
//! - The status set by hand (`UPDATE checks SET status`) is taken as the check's status; the
//!   next read decides from there.
//!
//! # Cost
//!
//! One small entry per push check; a read costs one map lookup per row read plus one pass
//! over the push checks for deadlines.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{CheckId, CheckStatus};

/// What `check_pushes` holds for one check, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRow {
    pub check: CheckId,
    /// Pushes received, ever.
    pub pushes: u64,
    /// Failures among them (`status=fail`).
    pub fails: u64,
    /// Whether the latest push reported success.
    pub last_ok: bool,
    /// The message of the latest failure.
    pub fail_message: String,
    /// How long before the read the latest push arrived, in milliseconds (database clock).
    pub age_ms: u64,
    /// When it arrived, Unix milliseconds of the database's clock (a cursor for the next read).
    pub last_ms: i64,
}

/// A decided flip of a push check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFlip {
    pub check: CheckId,
    pub from: CheckStatus,
    pub to: CheckStatus,
    /// Why (empty for online): the job's failure message, or the overdue notice.
    pub message: String,
}

#[derive(Debug)]
struct Watched {
    status: CheckStatus,
    interval: Duration,
    grace: Duration,
    /// When the book began watching the check (the clock of rule 5).
    since: Instant,
    /// The latest push, on the controller's clock.
    last_push: Option<Instant>,
    /// (pushes, fails) of the latest read.
    counts: Option<(u64, u64)>,
}

impl Watched {
    fn allowed(&self) -> Duration {
        self.interval.saturating_add(self.grace)
    }

    fn deadline(&self) -> Instant {
        self.last_push.unwrap_or(self.since) + self.allowed()
    }

    fn flip(&mut self, check: CheckId, to: CheckStatus, message: String) -> Option<PushFlip> {
        if self.status == to {
            return None;
        }
        let from = std::mem::replace(&mut self.status, to);
        Some(PushFlip {
            check,
            from,
            to,
            message,
        })
    }
}

/// The push checks of a term and what is known of their pushes.
#[derive(Debug, Default)]
pub struct PushBook {
    checks: HashMap<CheckId, Watched>,
}

fn fail_message(message: &str) -> String {
    if message.is_empty() {
        "the job pushed status=fail".to_owned()
    } else {
        format!("the job pushed status=fail: {message}")
    }
}

impl PushBook {
    /// Adds a push check, or updates its interval, grace and status (an edited row).
    pub fn upsert(
        &mut self,
        check: CheckId,
        interval: Duration,
        grace: Duration,
        status: CheckStatus,
        now: Instant,
    ) {
        let w = self.checks.entry(check).or_insert(Watched {
            status,
            interval,
            grace,
            since: now,
            last_push: None,
            counts: None,
        });
        w.status = status;
        w.interval = interval;
        w.grace = grace;
    }

    /// Forgets a check (deleted, disabled, or no longer a push check).
    pub fn remove(&mut self, check: CheckId) -> bool {
        self.checks.remove(&check).is_some()
    }

    pub fn contains(&self, check: CheckId) -> bool {
        self.checks.contains_key(&check)
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// A flip could not be recorded (or another status was stored): the check is `status`.
    pub fn reset_status(&mut self, check: CheckId, status: CheckStatus) -> bool {
        match self.checks.get_mut(&check) {
            Some(w) => {
                w.status = status;
                true
            }
            None => false,
        }
    }

    /// Applies a read of `check_pushes` begun at `read_at`: `rows` are the rows read (a
    /// partial read, of recently pushed rows only, is fine: an absent row is unchanged).
    /// Returns the flips, in order.
    pub fn observe(&mut self, rows: &[PushRow], read_at: Instant) -> Vec<PushFlip> {
        let mut flips = Vec::new();
        for row in rows {
            let Some(w) = self.checks.get_mut(&row.check) else {
                continue;
            };
            let counts = (row.pushes, row.fails);
            let failed_since = match w.counts {
                Some(_) if Some(counts) == w.counts => continue,
                Some((_, fails)) => row.fails > fails,
                None => false,
            };
            w.counts = Some(counts);
            let pushed = read_at
                .checked_sub(Duration::from_millis(row.age_ms))
                .unwrap_or(read_at);
            w.last_push = Some(w.last_push.map_or(pushed, |p| p.max(pushed)));
            if !row.last_ok {
                flips.extend(w.flip(
                    row.check,
                    CheckStatus::Offline,
                    fail_message(&row.fail_message),
                ));
                continue;
            }
            if failed_since && w.status == CheckStatus::Online {
                flips.extend(w.flip(
                    row.check,
                    CheckStatus::Offline,
                    fail_message(&row.fail_message),
                ));
            }
            if w.deadline() >= read_at {
                flips.extend(w.flip(row.check, CheckStatus::Online, String::new()));
            }
        }
        for (check, w) in self.checks.iter_mut() {
            if w.status == CheckStatus::Online && read_at > w.deadline() {
                let message = match w.last_push {
                    Some(p) => format!(
                        "no push for {} s; one was due at least every {} s (check_interval {} s + grace {} s)",
                        read_at.saturating_duration_since(p).as_secs(),
                        w.allowed().as_secs(),
                        w.interval.as_secs(),
                        w.grace.as_secs()
                    ),
                    None => format!(
                        "no push received in {} s of watching; one is due at least every {} s (check_interval {} s + grace {} s)",
                        read_at.saturating_duration_since(w.since).as_secs(),
                        w.allowed().as_secs(),
                        w.interval.as_secs(),
                        w.grace.as_secs()
                    ),
                };
                flips.extend(w.flip(*check, CheckStatus::Offline, message));
            }
        }
        flips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckStatus::{Offline, Online};

    const C: CheckId = CheckId(7);

    fn row(pushes: u64, fails: u64, last_ok: bool, age_ms: u64) -> PushRow {
        PushRow {
            check: C,
            pushes,
            fails,
            last_ok,
            fail_message: if fails > 0 {
                "disk full".into()
            } else {
                String::new()
            },
            age_ms,
            last_ms: 0,
        }
    }

    /// A book with check C, interval 5 s, grace 2 s, online, watched from `t0`.
    fn book(t0: Instant) -> PushBook {
        let mut b = PushBook::default();
        b.upsert(
            C,
            Duration::from_secs(5),
            Duration::from_secs(2),
            Online,
            t0,
        );
        b
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    fn tos(flips: &[PushFlip]) -> Vec<CheckStatus> {
        flips.iter().map(|f| f.to).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn regular_pushes_keep_it_online_and_silence_flips_it_once() {
        let t0 = Instant::now();
        let mut b = book(t0);
        // A push every 2 s, read every second.
        let mut n = 0;
        for s in 1..=20u64 {
            if s % 2 == 0 {
                n += 1;
            }
            let age = if n == 0 { 0 } else { (s % 2) * 1000 };
            let rows = if n == 0 {
                vec![]
            } else {
                vec![row(n, 0, true, age)]
            };
            assert!(b.observe(&rows, secs(t0, s as f64)).is_empty(), "at {s} s");
        }
        // The last push was at 20 s: nothing until 27 s, then one offline flip, never two.
        assert!(b.observe(&[], secs(t0, 27.0)).is_empty());
        let f = b.observe(&[], secs(t0, 27.5));
        assert_eq!(tos(&f), vec![Offline]);
        assert_eq!(
            f[0].message,
            "no push for 7 s; one was due at least every 7 s (check_interval 5 s + grace 2 s)"
        );
        assert!(b.observe(&[], secs(t0, 40.0)).is_empty());
        // The job comes back: online at once.
        assert_eq!(
            tos(&b.observe(&[row(11, 0, true, 0)], secs(t0, 41.0))),
            vec![Online]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fail_push_flips_at_once_and_a_success_recovers() {
        let t0 = Instant::now();
        let mut b = book(t0);
        assert!(b.observe(&[row(1, 0, true, 0)], secs(t0, 1.0)).is_empty());
        let f = b.observe(&[row(2, 1, false, 0)], secs(t0, 2.0));
        assert_eq!(tos(&f), vec![Offline]);
        assert_eq!(f[0].message, "the job pushed status=fail: disk full");
        // The same row read again changes nothing; nor does more failing.
        assert!(b.observe(&[row(2, 1, false, 0)], secs(t0, 3.0)).is_empty());
        assert!(b.observe(&[row(3, 2, false, 0)], secs(t0, 4.0)).is_empty());
        assert_eq!(
            tos(&b.observe(&[row(4, 2, true, 0)], secs(t0, 5.0))),
            vec![Online]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_between_two_reads_is_told_even_when_a_success_followed() {
        let t0 = Instant::now();
        let mut b = book(t0);
        b.observe(&[row(1, 0, true, 0)], secs(t0, 1.0));
        let f = b.observe(&[row(3, 1, true, 0)], secs(t0, 2.0));
        assert_eq!(tos(&f), vec![Offline, Online]);
        assert_eq!(f[0].message, "the job pushed status=fail: disk full");
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_never_pushed_goes_offline_after_interval_and_grace() {
        let t0 = Instant::now();
        let mut b = book(t0);
        assert!(b.observe(&[], secs(t0, 7.0)).is_empty());
        let f = b.observe(&[], secs(t0, 7.1));
        assert_eq!(tos(&f), vec![Offline]);
        assert!(
            f[0].message
                .starts_with("no push received in 7 s of watching")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_reads_nothing_goes_offline() {
        // The deadline is judged only by a read made after it: a long gap without reads (the
        // database away) followed by a read that shows a recent push flips nothing.
        let t0 = Instant::now();
        let mut b = book(t0);
        b.observe(&[row(1, 0, true, 0)], secs(t0, 1.0));
        assert!(
            b.observe(&[row(9, 0, true, 1000)], secs(t0, 60.0))
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_success_seen_at_term_start_does_not_flip_an_offline_check_online() {
        let t0 = Instant::now();
        let mut b = PushBook::default();
        b.upsert(
            C,
            Duration::from_secs(5),
            Duration::from_secs(2),
            Offline,
            t0,
        );
        // The latest push is 30 s old: still offline, and no flip.
        assert!(
            b.observe(&[row(4, 0, true, 30_000)], secs(t0, 1.0))
                .is_empty()
        );
        // A fresh one flips it online.
        assert_eq!(
            tos(&b.observe(&[row(5, 0, true, 0)], secs(t0, 2.0))),
            vec![Online]
        );
        // An online check whose latest push is old goes offline at the first read.
        let mut b = book(t0);
        assert_eq!(
            tos(&b.observe(&[row(4, 0, true, 30_000)], secs(t0, 1.0))),
            vec![Offline]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reset_and_remove() {
        let t0 = Instant::now();
        let mut b = book(t0);
        assert!(b.reset_status(C, Offline));
        assert!(
            b.observe(&[], secs(t0, 100.0)).is_empty(),
            "offline already"
        );
        assert!(b.remove(C));
        assert!(!b.reset_status(C, Online));
        assert!(
            b.observe(&[row(1, 1, false, 0)], secs(t0, 101.0))
                .is_empty()
        );
        assert!(b.is_empty());
    }
}
