//! Integration tests that run the library inside the test process against real servers:
//! MariaDB (store, history, API, limits), SMTP/HTTP capture servers (notifications), and
//! HTTP/TLS/TCP/DNS servers and network namespaces (probes); `harness` tests testkit itself.
//! They start no cluster, at most a short-lived `gobearmon` subcommand. One binary for all of
//! them, so the crate is linked once; each test has its own database, ports and namespaces,
//! so they run in parallel threads as they did in their own binaries.

mod api;
mod harness;
mod history;
mod limits;
mod notify;
mod probes;
mod store;
