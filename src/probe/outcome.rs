//! What a run reports: [`ProbeOutcome`] and its [`Details`], the internal [`Finding`] a check
//! type returns, [`ProbeError`] (the worker could not run the check), and message caps.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::timing::Timing;
use crate::model::CheckStatus;

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
    pub(crate) status: CheckStatus,
    pub(crate) message: String,
    pub(crate) details: Details,
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
