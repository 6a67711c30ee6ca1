//! Ports for test servers, taken from below the kernel's ephemeral range (32768 and up), so
//! that an outgoing connection or a `bind(0)` cannot take one between the pick and the bind of
//! the server it is for.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The next port in `low..low + span` that can be bound now, walking from an offset chosen by
/// the process id so that test binaries run one after another do not reuse ports that may
/// still be held by a previous binary's children. This file is loaded by both support modules
/// (each with its own counter), so each caller keeps to its own range.
pub fn low_range_port(low: u32, span: u32) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert_below_ephemeral(low + span);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (low + (start + i) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {}", low + span);
}

/// Fails loudly when the kernel hands out ephemeral ports below `high`: the ranges above would
/// then race with outgoing connections again.
fn assert_below_ephemeral(high: u32) {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let Ok(text) = std::fs::read_to_string(path) else {
        return; // not Linux: nothing to compare with
    };
    let first: u32 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {path}: {text:?}"));
    assert!(
        high <= first,
        "test ports up to {high} overlap the ephemeral range starting at {first} ({path}); \
         raise its start or lower the test ranges in tests/support/ports.rs"
    );
}
