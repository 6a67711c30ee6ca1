//! A fixed-bucket latency histogram that merges exactly: two histograms of the same buckets add
//! bucket by bucket, so hours add up to days and days to any window, with the same counts as
//! one histogram of all the samples.
//!
//! # Buckets
//!
//! Milliseconds 0, 1, 2 and 3 have a bucket each. Above that, every octave `[2^k, 2^(k+1))`
//! (k from 2 to 16) is cut into four equal buckets, so a bucket is at most a quarter of its
//! lower bound wide. Everything from 131,072 ms (2^17) up is one overflow bucket. That is
//! [`BUCKETS`] = 65 buckets; a percentile read from them is within 12.5 % of a sample of the
//! same bucket (it reports the bucket's middle), and is clamped to the exact minimum and
//! maximum kept beside the histogram by [`super::rollup::Latency`].
//!
//! # Stored form
//!
//! Sparse text, ascending bucket index: `"5:12,9:3"` (bucket 5 has 12 samples, bucket 9 has
//! 3). At most 65 pairs of at most 2 + 1 + 20 characters: under 1,600 characters, usually a
//! dozen pairs.

use std::fmt::Write as _;

/// Number of buckets, the overflow bucket included.
pub const BUCKETS: usize = 65;

/// The first value of the overflow bucket (2^17 ms).
const OVERFLOW_FROM: u64 = 1 << 17;

/// The bucket of a latency in milliseconds.
pub fn bucket_of(ms: u64) -> usize {
    if ms < 4 {
        return ms as usize;
    }
    if ms >= OVERFLOW_FROM {
        return BUCKETS - 1;
    }
    let k = 63 - ms.leading_zeros() as usize; // 2..=16
    let sub = ((ms >> (k - 2)) & 3) as usize;
    4 + (k - 2) * 4 + sub
}

/// The values `[low, high)` a bucket holds; the overflow bucket's `high` is `u64::MAX`.
pub fn bucket_range(i: usize) -> (u64, u64) {
    if i < 4 {
        return (i as u64, i as u64 + 1);
    }
    if i >= BUCKETS - 1 {
        return (OVERFLOW_FROM, u64::MAX);
    }
    let k = (i - 4) / 4 + 2;
    let sub = ((i - 4) % 4) as u64;
    ((4 + sub) << (k - 2), (5 + sub) << (k - 2))
}

/// Sample counts per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: [0; BUCKETS],
        }
    }
}

/// Why a stored histogram could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable histogram {0:?}: expected pairs like \"5:12,9:3\" with buckets 0 to 64")]
pub struct HistogramError(pub String);

impl Histogram {
    /// Counts one sample.
    pub fn record(&mut self, ms: u64) {
        self.counts[bucket_of(ms)] += 1;
    }

    /// Adds every bucket of `other` to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// All samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The count of bucket `i`.
    pub fn count(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// The `q` quantile (0 < q <= 1): the middle of the bucket that holds the sample of rank
    /// `ceil(q * total)`, exact for the single-value buckets below 4 ms. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bucket_range(i);
                return Some(if high - low <= 1 || high == u64::MAX {
                    low
                } else {
                    low + (high - low) / 2
                });
            }
        }
        None // unreachable: the last bucket brings `seen` to `total`
    }

    /// The stored form (see the module documentation).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{i}:{c}");
        }
        out
    }

    /// Reads the stored form; the empty string is an empty histogram.
    pub fn decode(text: &str) -> Result<Histogram, HistogramError> {
        let mut h = Histogram::default();
        let bad = || HistogramError(text.chars().take(80).collect());
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (i, c) = pair.split_once(':').ok_or_else(bad)?;
            let i: usize = i.trim().parse().map_err(|_| bad())?;
            let c: u64 = c.trim().parse().map_err(|_| bad())?;
            *h.counts.get_mut(i).ok_or_else(bad)? += c;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_once_in_order() {
        let mut expected_low = 0;
        for i in 0..BUCKETS {
            let (low, high) = bucket_range(i);
            assert_eq!(low, expected_low, "bucket {i} starts where {} ended", i - 1);
            assert!(high > low);
            assert_eq!(bucket_of(low), i);
            if high != u64::MAX {
                assert_eq!(bucket_of(high - 1), i);
                assert!(high - low <= (low / 4).max(1), "bucket {i} too wide");
            }
            expected_low = high;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(131_071), BUCKETS - 2);
    }

    #[test]
    fn quantiles_land_in_the_true_sample_bucket() {
        let mut h = Histogram::default();
        let samples: Vec<u64> = (1..=1000).map(|i| i * 7 % 997 + 3).collect();
        for s in &samples {
            h.record(*s);
        }
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.95, 0.99] {
            let rank = (q * sorted.len() as f64).ceil() as usize;
            let truth = sorted[rank - 1];
            let got = h.quantile(q).unwrap();
            assert_eq!(bucket_of(got), bucket_of(truth), "q {q}: {got} vs {truth}");
            let err = (got as f64 - truth as f64).abs() / truth as f64;
            assert!(err <= 0.125, "q {q}: {got} vs {truth}");
        }
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in [0, 1, 1, 2, 3, 3, 3] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(2));
        assert_eq!(h.quantile(1.0), Some(3));
        assert_eq!(h.quantile(0.01), Some(0));
    }

    #[test]
    fn merge_equals_one_histogram_of_all_samples() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..500u64 {
            let ms = v * v % 40_000;
            if v % 3 == 0 { &mut a } else { &mut b }.record(ms);
            all.record(ms);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.total(), 500);
    }

    #[test]
    fn encode_decode_round_trip_and_errors() {
        let mut h = Histogram::default();
        for v in [5, 5, 900, 200_000] {
            h.record(v);
        }
        let text = h.encode();
        assert_eq!(text, format!("5:2,{}:1,64:1", bucket_of(900)));
        assert_eq!(Histogram::decode(&text).unwrap(), h);
        assert_eq!(Histogram::decode("").unwrap(), Histogram::default());
        assert!(Histogram::decode("65:1").is_err());
        assert!(Histogram::decode("x").is_err());
        assert!(Histogram::decode("1:-2").is_err());
    }
}
