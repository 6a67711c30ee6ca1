//! Real servers and network fixtures for `tests/in_process/probes.rs`: HTTP and HTTPS (axum, rustls,
//! rcgen certificates), TCP dialogue servers, dnsmasq and hostile UDP DNS servers, and network
//! namespaces with nftables packet loss, and a namespace whose system resolver is dnsmasq. Every fixture stops (or is removed) on drop; a
//! missing tool fails the test with a message naming the Debian package.

pub mod certs;
pub mod dns;
pub mod http;
pub mod netns;
pub mod openssl;
pub mod resolver;
pub mod tcp;

use std::process::Command;
use std::time::Duration;

use gobearmon::model::CheckStatus;
use gobearmon::probe::{self, CheckSpec, ProbeContext, ProbeOutcome};

/// Parses and runs one check with `ctx`; a `ProbeError` fails the test.
pub async fn probe_with(ctx: &ProbeContext, check_type: &str, data: &str) -> ProbeOutcome {
    let spec = CheckSpec::parse(check_type, data);
    probe::run(&spec, ctx)
        .await
        .unwrap_or_else(|e| panic!("{check_type} {data}: the worker could not run it: {e}"))
}

/// Runs one check with a fresh default context.
pub async fn probe(check_type: &str, data: &str) -> ProbeOutcome {
    probe_with(&ProbeContext::default(), check_type, data).await
}

#[track_caller]
pub fn assert_online(out: &ProbeOutcome) {
    assert_eq!(out.status, CheckStatus::Online, "expected online: {out:?}");
    assert_eq!(out.message, "", "{out:?}");
}

#[track_caller]
pub fn assert_offline(out: &ProbeOutcome, message: &str) {
    assert_eq!(
        out.status,
        CheckStatus::Offline,
        "expected offline: {out:?}"
    );
    assert_eq!(out.message, message, "{out:?}");
}

#[track_caller]
pub fn assert_offline_prefix(out: &ProbeOutcome, prefix: &str) {
    assert_eq!(
        out.status,
        CheckStatus::Offline,
        "expected offline: {out:?}"
    );
    assert!(
        out.message.starts_with(prefix),
        "message should start with {prefix:?}: {out:?}"
    );
}

/// Polls `cond` every 20 ms until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails loudly when `program` is missing, naming the Debian package that has it.
#[track_caller]
pub fn require_tool(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {program} || test -x /usr/sbin/{program}"
        ))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{program}`: apt-get install -y --no-install-recommends {package} \
         (scripts/test.sh installs it)"
    );
}

/// Fails loudly unless the tests run as root (ICMP raw sockets, network namespaces).
#[track_caller]
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root for {why} (CI runs as root)");
}
