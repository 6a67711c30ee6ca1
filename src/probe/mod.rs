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
mod dns;
mod gojson;
mod http;
mod icmp;
mod json;
mod spec;
mod tcp;
mod timing;
mod tls;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::model::CheckStatus;

pub use addrs::{IpPolicy, MAX_ADDRESSES};
pub use http::BODY_CAP;
pub use icmp::{PACKET_INTERVAL, PACKET_TIMEOUT, RUN_DEADLINE as ICMP_RUN_DEADLINE};
pub use json::{JsonCondition, JsonMatch, JsonOp};
pub use spec::{
    CheckSpec, DnsRecordType, DnsSpec, HttpSpec, IcmpSpec, IpFamily, LossRule, MAX_PING_COUNT,
    PUSH_NOT_PROBED, PushSpec, TcpSpec, TlsSpec, TlsVersion, clamp_timeout, push_token_problem,
};
pub use timing::Timing;

/// What one run found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub status: CheckStatus,
    /// Empty when online; gobearmon's text when offline.
    pub message: String,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: u64,
    #[serde(default)]
    pub details: Details,
}

/// Measurements a run reports beside its verdict; which fields are set depends on the check
/// type. Absent fields are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// The IP address the check talked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// http: the final response's status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// icmp: echo requests sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_sent: Option<u32>,
    /// icmp: echo replies received in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_received: Option<u32>,
    /// icmp: lost packets in percent of those sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<f64>,
    /// icmp: round trip of the replies, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_min_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_avg_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_max_ms: Option<f64>,
    /// ssl_expire: whole days until the earliest expiry (negative once expired). The
    /// certificate fields below are also set by https checks, for their leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_remaining: Option<i64>,
    /// ssl_expire: that certificate's `notAfter`, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// ssl_expire: that certificate's subject common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// ssl_expire: its position in the presented chain (0 is the leaf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_position: Option<usize>,
    /// ssl_expire: that certificate's issuer, as `CN=..., O=...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// ssl_expire: the DNS names and IP addresses it covers (its common name when it has no
    /// subject alternative names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
    /// ssl_expire: its serial number, hex bytes separated by `:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// ssl_expire: the TLS version negotiated (`1.2`, `1.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// ssl_expire: the cipher suite negotiated (rustls's name, `TLS13_AES_256_GCM_SHA384`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    /// ssl_expire: certificates the server presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<usize>,
    /// dns: the response code (`NOERROR`, `NXDOMAIN`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// dns: the answer section, one presentation line per record
    /// (`name\tTTL\tIN\tTYPE\trdata`), at most 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    /// dns: `udp`, or `tcp` after a truncated UDP answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// http: when each phase of the (final) request ended; set once a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// Why this worker could not run a check. None of these is the target's doing, so none of
/// them votes. Retrying on another worker is the right reaction; retrying here only helps for
/// [`ProbeError::Resources`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Opening an ICMP socket failed (raw sockets need root or CAP_NET_RAW, datagram ICMP
    /// needs `net.ipv4.ping_group_range`).
    #[error("cannot open ICMP socket: {0}")]
    IcmpSocket(io::Error),
    /// The worker ran out of something local: file descriptors, buffers, ephemeral ports.
    #[error("worker out of resources: {0}")]
    Resources(io::Error),
    /// A client could not be built (for example the system certificate store is unreadable).
    #[error("cannot set up the {what} client: {message}")]
    Setup { what: &'static str, message: String },
    /// A bug: the check panicked. The panic was contained.
    #[error("check panicked: {0}")]
    Panicked(String),
}

/// What a check type's runner decides; [`run`] adds the duration.
pub(crate) struct Finding {
    status: CheckStatus,
    message: String,
    details: Details,
}

impl Finding {
    pub(crate) fn online(details: Details) -> Finding {
        Finding {
            status: CheckStatus::Online,
            message: String::new(),
            details,
        }
    }

    /// An offline finding; the message is cut to [`MESSAGE_CAP`] here, so no check type can
    /// report more (a 60 KB answer quoted in a mismatch would otherwise travel to the
    /// controller, into `check_results`, the outbox payload and every notification).
    pub(crate) fn offline(message: impl Into<String>, details: Details) -> Finding {
        let mut message = message.into();
        if message.len() > MESSAGE_CAP {
            message = cut_text(&message, MESSAGE_CAP).into_owned();
        }
        Finding {
            status: CheckStatus::Offline,
            message,
            details,
        }
    }
}

/// The `max_response_ms` rule for a run that found nothing else wrong: online, unless the
/// response took longer than `limit` (whole milliseconds, truncated).
pub(crate) fn online_within(limit: Option<u64>, took: Duration, details: Details) -> Finding {
    let ms = took.as_millis().min(u128::from(u64::MAX)) as u64;
    match limit {
        Some(max) if ms > max => Finding::offline(
            format!("response took {ms} ms, over the limit of {max} ms"),
            details,
        ),
        _ => Finding::online(details),
    }
}

/// Longest message a run reports, in bytes, the cut mark included. It fits
/// `check_results.message` (`VARCHAR(1024)`, counted in characters) whatever the text.
pub const MESSAGE_CAP: usize = 1024;

/// `text` cut to at most `max` bytes: unchanged when it fits; otherwise cut on a character
/// boundary and ended with `… [cut, N bytes in all]` (N the length of the whole text), the
/// mark counted in `max`. Below the mark's own length the text is cut without it.
pub fn cut_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mark = format!("… [cut, {} bytes in all]", text.len());
    let room = max.checked_sub(mark.len());
    let keep = text.floor_char_boundary(room.unwrap_or(max));
    let mut out = String::with_capacity(max);
    out.push_str(&text[..keep]);
    if room.is_some() {
        out.push_str(&mark);
    }
    Cow::Owned(out)
}

/// True for socket errors that say this machine ran out of something, not that the target
/// misbehaved: those make the run a [`ProbeError::Resources`].
pub(crate) fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// What a worker shares between check runs: the `[dns] server` default, extra trusted CA
/// certificates, and lazily built HTTP clients, TLS config and ICMP sockets.
///
/// Cheap to clone (clones share the clients). The ICMP sockets' receive tasks run on the tokio
/// runtime that first uses them, so keep one context per runtime.
#[derive(Clone, Default)]
pub struct ProbeContext {
    /// The nameserver of dns checks that name none (`[dns] server`); `None` means the local
    /// host, port 53, as in gobearmon.
    pub dns_server: Option<String>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// CA certificates trusted by http checks in addition to the system store.
    extra_roots: Vec<CertificateDer<'static>>,
    /// This node's own listeners, which http checks never follow a redirect to.
    own: Vec<std::net::SocketAddr>,
    /// Indexed by `insecure as usize * 2 + follow_redirects as usize`.
    http: [OnceLock<reqwest::Client>; 4],
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    icmp_v4: tokio::sync::Mutex<Option<icmp::Pinger>>,
    icmp_v6: tokio::sync::Mutex<Option<icmp::Pinger>>,
}

impl ProbeContext {
    /// A context whose dns checks default to `dns_server` (`[dns] server`).
    pub fn new(dns_server: Option<String>) -> ProbeContext {
        ProbeContext {
            dns_server,
            shared: Arc::default(),
        }
    }

    /// Also trust these CA certificates (DER) for http checks, beside the system store.
    /// Returns a context with fresh clients.
    pub fn with_extra_roots(self, roots: Vec<CertificateDer<'static>>) -> ProbeContext {
        ProbeContext {
            dns_server: self.dns_server,
            shared: Arc::new(Shared {
                extra_roots: roots,
                own: self.shared.own.clone(),
                ..Shared::default()
            }),
        }
    }

    /// Never follow an http check's redirect to these listeners of this node (a redirect to
    /// `127.0.0.1:<worker port>/disconnect`, say). Returns a context with fresh clients.
    pub fn with_own_listeners(self, own: Vec<std::net::SocketAddr>) -> ProbeContext {
        ProbeContext {
            dns_server: self.dns_server,
            shared: Arc::new(Shared {
                extra_roots: self.shared.extra_roots.clone(),
                own,
                ..Shared::default()
            }),
        }
    }

    fn http_client(
        &self,
        insecure: bool,
        follow_redirects: bool,
    ) -> Result<&reqwest::Client, ProbeError> {
        let slot = &self.shared.http[insecure as usize * 2 + follow_redirects as usize];
        if let Some(c) = slot.get() {
            return Ok(c);
        }
        let client = http::build_client(
            insecure,
            follow_redirects,
            &self.shared.extra_roots,
            &self.shared.own,
        )?;
        // Two runs may build at once; either client will do.
        Ok(slot.get_or_init(|| client))
    }

    fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.shared.tls.get_or_init(tls::client_config).clone()
    }

    async fn pinger(&self, ip: IpAddr) -> Result<icmp::Pinger, ProbeError> {
        let slot = if ip.is_ipv4() {
            &self.shared.icmp_v4
        } else {
            &self.shared.icmp_v6
        };
        let mut guard = slot.lock().await;
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        // A failure is not cached: permissions or limits may change.
        let p = icmp::Pinger::new(ip.is_ipv6())?;
        *guard = Some(p.clone());
        Ok(p)
    }
}

impl fmt::Debug for ProbeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeContext")
            .field("dns_server", &self.dns_server)
            .field("extra_roots", &self.shared.extra_roots.len())
            .finish_non_exhaustive()
    }
}

/// `now + after`, without the panic of an overflowing addition: at most a day ahead.
/// Validated definitions ([`CheckSpec::validated`]) never come near that.
pub(crate) fn deadline_in(after: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(24 * 3600);
    tokio::time::Instant::now() + after.min(FAR)
}

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
        CheckSpec::Http(s) => http::run(s, ctx).await,
        CheckSpec::Tcp(s) => tcp::run(s).await,
        CheckSpec::Icmp(s) => icmp::run(s, ctx).await,
        CheckSpec::SslExpire(s) => tls::run(s, ctx).await,
        CheckSpec::Dns(s) => dns::run(s, ctx).await,
        CheckSpec::Invalid { message } => Ok(Finding::offline(message.clone(), Details::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
