//! The harness of gobearmon's integration tests (`tests/`) and benchmark drivers
//! (`examples/`), one crate so that both start nodes, pick ports and make databases the same
//! way. Not published; a dev-dependency of the main crate.
//!
//! - [`ports`]: the one port allocator (below the ephemeral range).
//! - [`config`]: node config files as typed values, serialized.
//! - [`cluster`]: a local cluster of real `gobearmon` processes ([`cluster::Cluster::builder`]).
//! - [`partition`]: cutting a node process off from chosen ports (cgroup + nftables).
//! - [`db`]: a fresh MariaDB database per test.
//! - [`galera`]: a three-node MariaDB Galera cluster on loopback.
//! - [`flood`]: hostile clients holding many bad connections against node listeners.
//! - [`notify`]: the notification tests' servers (SMTP capture, HTTP receivers, a test CA).
//! - [`probe`]: the probe tests' servers and network fixtures (HTTP/TLS, TCP, DNS, netns).

pub mod cluster;
pub mod config;
pub mod db;
pub mod flood;
pub mod galera;
pub mod notify;
pub mod partition;
pub mod ports;
pub mod probe;
