//! The controller host's own health on `/metrics`, acting or not: meta-alert deliveries, the
//! result history's losses and failing rounds, and bad rows. Each fault counted here also
//! raises a meta-alert (once); the series let a scraper see it without mail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::Sample;
use crate::notify::meta_delivery::MetaStats;

/// Counters the host's tasks bump and `/metrics` reads.
#[derive(Debug, Default)]
pub struct HostStats {
    /// This node's meta-alert deliveries.
    pub meta: Arc<MetaStats>,
    /// Check results dropped from the result history (the buffer was full).
    pub history_dropped: AtomicU64,
    /// Result history write rounds that failed.
    pub history_write_failures: AtomicU64,
    /// Result history roll-up and prune rounds that failed.
    pub history_upkeep_failures: AtomicU64,
    /// Rows of `canaries` and `contacts` that cannot be used as written, as last read by the
    /// acting controller on this node.
    pub bad_rows: AtomicU64,
}

impl HostStats {
    /// The series, named without the `gobearmon_` prefix.
    pub fn samples(&self) -> Vec<Sample> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Sample::Counter(
                "meta_alerts_delivered",
                "Meta-alert deliveries (one per channel) this node made.",
                get(&self.meta.delivered),
            ),
            Sample::Counter(
                "meta_alert_attempts_failed",
                "Meta-alert delivery attempts that failed on this node (retried or given up).",
                get(&self.meta.attempts_failed),
            ),
            Sample::Counter(
                "meta_alert_deliveries_failed",
                "Meta-alert deliveries this node gave up (delivery_attempts used up).",
                get(&self.meta.failed),
            ),
            Sample::Counter(
                "history_results_dropped",
                "Check results dropped from the result history: its buffer was full.",
                get(&self.history_dropped),
            ),
            Sample::Counter(
                "history_write_failures",
                "Result history write rounds that failed.",
                get(&self.history_write_failures),
            ),
            Sample::Counter(
                "history_upkeep_failures",
                "Result history roll-up and prune rounds that failed.",
                get(&self.history_upkeep_failures),
            ),
            Sample::Gauge(
                "bad_rows",
                "Rows of canaries and contacts that cannot be used as written (as last read \
                 while acting).",
                get(&self.bad_rows) as f64,
            ),
        ]
    }
}
