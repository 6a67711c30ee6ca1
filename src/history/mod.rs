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

pub mod histogram;
pub mod rollup;
pub mod uptime;
pub mod window;
