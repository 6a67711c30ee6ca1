//! Integration tests that run real `gobearmon` processes: local clusters of viewserver members
//! and workers (`testkit::cluster`), and the command line against a real database. One binary
//! for all of them, so the crate is linked once for the lot.
//!
//! Cluster tests start up to six processes each and measure nothing but still depend on
//! timing (leases, heartbeats, elections), so each holds `testkit::cluster::serial()` for its
//! whole run: in this binary's parallel test threads, one cluster runs at a time, as when
//! every file was a binary of its own (cargo runs binaries one after another). Tests that
//! start no cluster do not take the lock.

/// The binary under test, as cargo built it for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_gobearmon");

mod busy_worker;
mod cli;
mod cluster;
mod dashboard;
mod e2e;
mod edges;
mod history_e2e;
mod identity;
mod policy_e2e;
mod push_e2e;
mod tls;
mod vantage;
mod web_edges;
