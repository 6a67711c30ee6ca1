//! How many results a worker reported per second over the last minute, for the dashboard's
//! workers page and `gobearmon status`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window the rate is taken over.
const WINDOW: Duration = Duration::from_secs(60);
/// Reports within one slot of this length are counted together, so a worker reporting many
/// times a second keeps at most 60 entries.
const SLOT: Duration = Duration::from_secs(1);

/// Results counted per one-second slot, the oldest first.
#[derive(Debug, Default)]
pub(super) struct RunRate {
    slots: VecDeque<(Instant, u64)>,
}

impl RunRate {
    /// Counts `n` results reported at `now`.
    pub fn add(&mut self, now: Instant, n: u64) {
        if n == 0 {
            return;
        }
        self.forget(now);
        match self.slots.back_mut() {
            Some((start, count)) if now.saturating_duration_since(*start) < SLOT => *count += n,
            _ => self.slots.push_back((now, n)),
        }
    }

    /// Results per second over the last [`WINDOW`].
    pub fn per_second(&self, now: Instant) -> f64 {
        let total: u64 = self
            .slots
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) < WINDOW)
            .map(|(_, n)| n)
            .sum();
        total as f64 / WINDOW.as_secs_f64()
    }

    fn forget(&mut self, now: Instant) {
        while self
            .slots
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.slots.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let t0 = Instant::now();
        let mut r = RunRate::default();
        assert_eq!(r.per_second(t0), 0.0);
        // 120 results over the first 30 s: 2 per second of the window's 60.
        for s in 0..30 {
            r.add(t0 + Duration::from_secs(s), 4);
        }
        assert_eq!(r.per_second(t0 + Duration::from_secs(30)), 2.0);
        // 70 s in, the reports of seconds 0 to 10 (44 results) have left the window.
        assert_eq!(r.per_second(t0 + Duration::from_secs(70)), 76.0 / 60.0);
        // Nothing for a minute: nothing left.
        assert_eq!(r.per_second(t0 + Duration::from_secs(100)), 0.0);
        r.add(t0 + Duration::from_secs(100), 6);
        assert_eq!(r.slots.len(), 1, "slots out of the window are forgotten");
        assert_eq!(r.per_second(t0 + Duration::from_secs(100)), 0.1);
    }

    #[test]
    fn reports_in_one_second_share_a_slot() {
        let t0 = Instant::now();
        let mut r = RunRate::default();
        for ms in 0..1000 {
            r.add(t0 + Duration::from_millis(ms), 1);
        }
        r.add(t0 + Duration::from_millis(1000), 0);
        assert_eq!(r.slots.len(), 1);
        assert_eq!(
            r.per_second(t0 + Duration::from_millis(1500)),
            1000.0 / 60.0
        );
    }
}
