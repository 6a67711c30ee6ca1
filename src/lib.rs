//! gobearmon: a distributed uptime monitor.
//!
//! # Layout
//!
//! Concept modules (no knowledge of roles):
//!
//! - [`config`]: the per-node TOML file, read and validated into typed sections.
//! - [`model`]: pure domain types (ids, statuses, the operator's rows).
//! - [`probe`]: the check types (http, tcp, icmp, ssl_expire, dns) that workers run.
//! - [`canary`]: worker canaries: URLs parsed into probe specs, and the impaired rule.
//! - [`vote`]: the controller's scheduling and voting rules (confirmations, delay, quorum) as
//!   a pure state machine driven with explicit time.
//! - [`policy`]: alert policy between the flip and the outbox (maintenance, escalation,
//!   reminders, dependencies, flapping, storm control and caps, why a notice was not sent),
//!   pure rules on explicit time.
//! - [`push`]: push checks' rules (online while the job calls in), a pure state machine
//!   driven with explicit time.
//! - [`lease`]: when a controller-capable worker acts as controller (the lease and the epoch
//!   fence), as a pure state machine driven with explicit time.
//! - [`store`]: MySQL/MariaDB access for the controller: loading, change tracking, the epoch
//!   fence.
//! - [`history`]: result history as arithmetic: the mergeable latency histogram, hourly and
//!   daily rollups, uptime and incidents from the flip history.
//! - [`notify`]: the durable outbox and delivery (email, Twilio, webhooks), admin notices.
//! - [`view`]: the viewserver group on openraft: storage, network, elections.
//! - [`rpc`]: signed node-to-node HTTP and the work protocol's wire types.
//! - [`api`]: serving routers, `/ready` and `/metrics` helpers.
//! - [`report`]: what `gobearmon history` and `gobearmon uptime` print.
//! - [`web`]: the read-only JSON API v1 (`[web] addr`), read from MySQL, and the push
//!   endpoints of push checks.
//! - [`tlsutil`]: the one rustls crypto provider (ring) the whole build uses.
//!
//! Roles ([`role`]): wiring and loops only: `viewserver`, `worker` (membership, lease,
//! runner, hand-over), `controller` (one term per epoch).
//!
//! [`cli`]: every subcommand of `gobearmon`, its output and its exit code; the binary
//! (`src/main.rs`) only parses the command line and calls [`cli::execute`].

pub mod api;
pub mod canary;
pub mod cli;
pub mod config;
pub mod history;
pub mod lease;
pub mod model;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod push;
pub mod report;
pub mod role;
pub mod rpc;
pub mod store;
pub mod tlsutil;
pub mod view;
pub mod vote;
pub mod web;
