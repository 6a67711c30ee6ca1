//! The one port allocator of the tests and the benchmark drivers. Ports come from below the
//! kernel's ephemeral range (32768 and up), so that an outgoing connection or a `bind(0)`
//! elsewhere cannot take one between the pick and the bind of the server it is for.

use std::sync::atomic::{AtomicU32, Ordering};

/// The range handed out: `LOW..LOW + SPAN`.
const LOW: u32 = 19000;
const SPAN: u32 = 13000;

/// A TCP port on 127.0.0.1 that nothing listens on now, for a server started on it next (or
/// for an address that must refuse). One counter walks the range, from an offset chosen by the
/// process id, so that processes run one after another (test binaries, benchmark drivers) do
/// not reuse ports that may still be held by a previous one's children.
pub fn free_port() -> u16 {
    free_port_where(|_| true)
}

/// Like [`free_port`], for a port that `also` accepts too (free for UDP as well, say).
pub fn free_port_where(mut also: impl FnMut(u16) -> bool) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert_below_ephemeral(LOW + SPAN);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (start + i) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && also(port) {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// Fails loudly when the kernel hands out ephemeral ports below `high`: the range above would
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
         raise its start or lower the range in testkit/src/ports.rs"
    );
}
