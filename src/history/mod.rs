//! Result history as arithmetic: no IO, no clock reads, every input carries its time.
//!
//! - [`histogram`]: the fixed-bucket latency histogram that merges exactly.
//! - [`rollup`]: counts and latency of a set of results (an hour, a day, any window), and the
//!   UTC periods they are kept for.
//! - [`uptime`]: uptime over a window and incidents, from the flip history.
//! - [`window`]: which rows (daily, hourly, raw) answer a question about a window.
//!
//! The store (`store/history.rs`) keeps raw results and rollups in MySQL; the acting
//! controller writes them (`role/controller/history.rs`).
//!
//! # Cost
//!
//! A [`rollup::Rollup`] is 65 counters and a few totals (about 600 bytes in memory); the
//! controller holds one per check and location only while it rolls an hour up, a chunk of
//! checks at a time. Stored, a rollup row is a few dozen bytes plus its sparse histogram
//! (usually a dozen pairs).

/// Unix milliseconds as RFC 3339 in UTC (`2026-01-05T10:00:00.25Z`), as history is shown.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Unix seconds as RFC 3339 in UTC.
pub fn rfc3339(s: i64) -> String {
    rfc3339_ms(s.saturating_mul(1000))
}

pub mod histogram;
pub mod rollup;
pub mod uptime;
pub mod window;
