//! Rollups: what the results of one check from one location in one hour (or day) come to.
//! Counts of online, offline and fail results, and the latency of the online ones (count,
//! sum, min, max and a [`Histogram`]). Every field adds up exactly, so a day is the merge of
//! its hours and any window the merge of its days.
//!
//! # Decisions
//!
//! - Latency is that of **online** results only: an offline result's duration is mostly a
//!   timeout or a refused connection and says nothing about how fast the target answers; a
//!   `fail` is the worker's own problem.
//! - Periods are UTC: an hour starts at a multiple of 3,600 Unix seconds, a day at a multiple
//!   of 86,400.

use super::histogram::Histogram;

/// Seconds in an hour.
pub const HOUR: i64 = 3600;
/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// The resolution of a rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    /// Its length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Period::Hour => HOUR,
            Period::Day => DAY,
        }
    }

    /// The start of the period holding Unix second `t`.
    pub fn start_of(self, t: i64) -> i64 {
        t.div_euclid(self.seconds()) * self.seconds()
    }

    /// The `result_rollups.period` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            _ => None,
        }
    }
}

/// What one result was (the voting rules' outcome: `fail` is the worker's own problem).
pub use crate::vote::Outcome;

/// The latency of the online results of a rollup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Latency {
    pub count: u64,
    pub sum_ms: u64,
    /// Meaningless while `count` is 0.
    pub min_ms: u64,
    pub max_ms: u64,
    pub histogram: Histogram,
}

impl Latency {
    pub fn record(&mut self, ms: u64) {
        if self.count == 0 {
            self.min_ms = ms;
            self.max_ms = ms;
        } else {
            self.min_ms = self.min_ms.min(ms);
            self.max_ms = self.max_ms.max(ms);
        }
        self.count += 1;
        self.sum_ms += ms;
        self.histogram.record(ms);
    }

    pub fn merge(&mut self, other: &Latency) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min_ms = other.min_ms;
            self.max_ms = other.max_ms;
        } else {
            self.min_ms = self.min_ms.min(other.min_ms);
            self.max_ms = self.max_ms.max(other.max_ms);
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
        self.histogram.merge(&other.histogram);
    }

    /// The mean in milliseconds; `None` without samples.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms as f64 / self.count as f64)
    }

    /// The `q` quantile from the histogram, clamped to the exact min and max.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        self.histogram
            .quantile(q)
            .map(|v| v.clamp(self.min_ms, self.max_ms))
    }
}

/// Counts and latency of a set of results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollup {
    pub online: u64,
    pub offline: u64,
    pub fail: u64,
    pub latency: Latency,
}

impl Rollup {
    /// Counts one result.
    pub fn record(&mut self, outcome: Outcome, duration_ms: u64) {
        match outcome {
            Outcome::Online => {
                self.online += 1;
                self.latency.record(duration_ms);
            }
            Outcome::Offline => self.offline += 1,
            Outcome::Fail => self.fail += 1,
        }
    }

    pub fn merge(&mut self, other: &Rollup) {
        self.online += other.online;
        self.offline += other.offline;
        self.fail += other.fail;
        self.latency.merge(&other.latency);
    }

    /// Every result counted, fails included.
    pub fn results(&self) -> u64 {
        self.online + self.offline + self.fail
    }

    /// Online results out of online and offline ones (fails do not count either way);
    /// `None` when there are none.
    pub fn availability(&self) -> Option<f64> {
        let voted = self.online + self.offline;
        (voted > 0).then(|| self.online as f64 / voted as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_multiples() {
        assert_eq!(Period::Hour.start_of(7199), 3600);
        assert_eq!(Period::Hour.start_of(7200), 7200);
        assert_eq!(Period::Day.start_of(86_399), 0);
        assert_eq!(Period::Day.start_of(-1), -86_400);
        assert_eq!(Period::parse(Period::Day.as_str()), Some(Period::Day));
    }

    #[test]
    fn counts_and_latency_of_online_results_only() {
        let mut r = Rollup::default();
        r.record(Outcome::Online, 20);
        r.record(Outcome::Online, 40);
        r.record(Outcome::Offline, 10_000);
        r.record(Outcome::Fail, 0);
        assert_eq!((r.online, r.offline, r.fail), (2, 1, 1));
        assert_eq!(r.latency.count, 2);
        assert_eq!(r.latency.mean_ms(), Some(30.0));
        assert_eq!((r.latency.min_ms, r.latency.max_ms), (20, 40));
        assert_eq!(r.availability(), Some(2.0 / 3.0));
        assert_eq!(r.results(), 4);
        assert_eq!(Rollup::default().availability(), None);
    }

    #[test]
    fn quantiles_are_clamped_to_the_exact_extremes() {
        let mut l = Latency::default();
        l.record(1000); // bucket [896, 1024): its middle 960 is below the only sample
        assert_eq!(l.quantile_ms(0.5), Some(1000));
        assert_eq!(Latency::default().quantile_ms(0.5), None);
    }

    #[test]
    fn a_merge_of_parts_is_the_rollup_of_the_whole() {
        let mut parts = vec![Rollup::default(); 24];
        let mut whole = Rollup::default();
        for i in 0..2400u64 {
            let outcome = match i % 7 {
                0 => Outcome::Offline,
                1 => Outcome::Fail,
                _ => Outcome::Online,
            };
            let ms = (i * 37) % 3000;
            parts[(i % 24) as usize].record(outcome, ms);
            whole.record(outcome, ms);
        }
        let mut merged = Rollup::default();
        for p in &parts {
            merged.merge(p);
        }
        assert_eq!(merged, whole);
        // An empty part merged in changes nothing, min included.
        merged.merge(&Rollup::default());
        assert_eq!(merged, whole);
    }
}
