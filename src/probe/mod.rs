//! The check types workers run: `http`, `tcp`, `icmp`, `ssl_expire` and `dns`, with
//! gobearmon's parameters, defaults and messages, and its defects fixed.
//!
//! # Layout
//!
//! - `spec.rs`: [`CheckSpec`], a `checks` row parsed once (Go `encoding/json` rules from
//!   `gojson.rs`), held to the same bounds whether read from a row or received.
//! - `http.rs`, `tcp.rs`, `icmp.rs`, `tls.rs` (`ssl_expire`), `dns.rs`: one check type each.
//! - `addrs.rs`: `ip_policy` (probe the first, any or all of a name's addresses).
//! - `json.rs`: `expect_json`, conditions on an http body, parsed with the spec.
//! - `timing.rs`: the phases of an http run ([`Timing`]), marked from inside reqwest.
//! - this file: [`run`], [`ProbeContext`] (the worker's shared clients and sockets),
//!   [`ProbeOutcome`] and [`ProbeError`].
//!
//! `max_response_ms` (http, tcp, dns, icmp) turns a run that found nothing else wrong into
//! `response took N ms, over the limit of M ms` when the answer was slower than the limit.
//!
//! Every run is bounded by its check's timeouts and by [`CheckSpec::max_duration`]; how many
//! run at once is the caller's limit (the worker's `num_threads`).
//!
//! A target that is down is data: `Ok(ProbeOutcome { status: Offline, .. })`. An `Err` means
//! this worker could not run the check at all (no ICMP socket permission, out of file
//! descriptors, a bug caught as a panic): gobearmon's `fail`, which never votes.

mod addrs;
mod anycert;
mod context;
mod dns;
mod gojson;
mod http;
mod icmp;
mod json;
mod net;
mod outcome;
mod params;
mod push;
mod spec;
mod tcp;
mod timing;
mod tls;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

pub use addrs::{IpFamily, IpPolicy, MAX_ADDRESSES};
pub use context::ProbeContext;
pub use dns::{DnsRecordType, DnsSpec};
pub use http::{BODY_CAP, HttpSpec};
pub use icmp::{
    IcmpSpec, LossRule, MAX_PING_COUNT, PACKET_INTERVAL, PACKET_TIMEOUT,
    RUN_DEADLINE as ICMP_RUN_DEADLINE,
};
pub use json::{JsonCondition, JsonMatch, JsonOp};
pub use outcome::{Details, MESSAGE_CAP, ProbeError, ProbeOutcome, cut_text};
pub use params::clamp_timeout;
pub use push::{PUSH_NOT_PROBED, PushSpec, push_token_problem};
pub use spec::CheckSpec;
pub use tcp::TcpSpec;
pub use timing::Timing;
pub use tls::{TlsSpec, TlsVersion};

use outcome::Finding;

/// Runs one check now. Every run ends within [`CheckSpec::max_duration`], whatever the target
/// does; a panic inside a check is contained and reported as [`ProbeError::Panicked`].
pub async fn run(spec: &CheckSpec, ctx: &ProbeContext) -> Result<ProbeOutcome, ProbeError> {
    let started = Instant::now();
    let bound = spec.max_duration();
    let finding = bounded(bound, run_inner(spec, ctx)).await?;
    Ok(ProbeOutcome {
        status: finding.status,
        message: finding.message,
        duration_ms: started.elapsed().as_millis().min(u64::MAX as u128) as u64,
        details: finding.details,
    })
}

async fn bounded(
    bound: Duration,
    fut: impl Future<Output = Result<Finding, ProbeError>>,
) -> Result<Finding, ProbeError> {
    match tokio::time::timeout(bound, AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %what, "a check panicked; it was contained");
            Err(ProbeError::Panicked(what))
        }
        // Each check type bounds itself well inside this; reaching it means the target held
        // us longer than any of its own timeouts allowed, which is the target's failure.
        Err(_) => Ok(Finding::offline(
            format!("check timed out after {} s", bound.as_secs()),
            Details::default(),
        )),
    }
}

async fn run_inner(spec: &CheckSpec, ctx: &ProbeContext) -> Result<Finding, ProbeError> {
    match spec {
        CheckSpec::Http(s) => http::run(s, ctx.http_clients()).await,
        CheckSpec::Tcp(s) => tcp::run(s).await,
        CheckSpec::Icmp(s) => icmp::run(s, ctx.pingers()).await,
        CheckSpec::SslExpire(s) => tls::run(s, ctx.tls_config()).await,
        CheckSpec::Dns(s) => dns::run(s, ctx.dns_server.as_deref()).await,
        CheckSpec::Invalid { message } => Ok(Finding::offline(message.clone(), Details::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckStatus;

    #[tokio::test]
    async fn invalid_specs_run_offline() {
        let ctx = ProbeContext::default();
        let out = run(&CheckSpec::parse("bogus", "{}"), &ctx).await.unwrap();
        assert_eq!(out.status, CheckStatus::Offline);
        assert_eq!(out.message, "invalid check type: bogus");
    }

    #[tokio::test]
    async fn panics_are_contained() {
        let r = bounded(Duration::from_secs(1), async { panic!("boom") }).await;
        assert!(matches!(r, Err(ProbeError::Panicked(m)) if m == "boom"));
    }

    #[tokio::test]
    async fn outer_bound_holds() {
        let r = bounded(Duration::from_millis(100), std::future::pending()).await;
        let f = r.unwrap();
        assert_eq!(f.status, CheckStatus::Offline);
        assert_eq!(f.message, "check timed out after 0 s");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary_and_marked() {
        assert_eq!(cut_text("short", 10), "short");
        let long = "é".repeat(1000) + "tail";
        let cut = cut_text(&long, 64);
        assert!(cut.len() <= 64, "{} bytes", cut.len());
        assert!(cut.ends_with("… [cut, 2004 bytes in all]"), "{cut}");
        assert!(cut.starts_with("éé"), "{cut}");
        // Every width cuts on a boundary (a String could not even hold anything else).
        for max in 0..40 {
            assert!(cut_text(&long, max).len() <= max);
        }
        let f = Finding::offline("x".repeat(60_000), Details::default());
        assert!(f.message.len() <= MESSAGE_CAP);
        assert!(f.message.ends_with("… [cut, 60000 bytes in all]"));
    }

    #[test]
    fn outcome_json_shape() {
        let out = ProbeOutcome {
            status: CheckStatus::Online,
            message: String::new(),
            duration_ms: 7,
            details: Details {
                http_status: Some(200),
                ..Details::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"status":"online","message":"","duration_ms":7,"details":{"http_status":200}}"#
        );
    }
}
