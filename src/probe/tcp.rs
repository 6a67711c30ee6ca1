//! The `tcp` check: connect, send `payload + "\n"` when a payload is set, and when `expect` is
//! set read one line and look for it.
//!
//! Fixed from gobearmon: `timeout` bounds the whole exchange (a server that accepts and never
//! answers cannot hold the check), and the payload is sent whenever it is set. The line read
//! is capped at [`MAX_LINE`] bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::addrs::IpFamily;
use super::addrs::IpPolicy;
use super::gojson::Fields;
use super::net::{connect_pinned, deadline_in, io_text, resolve, timeout_error};
use super::outcome::{Details, Finding, ProbeError, is_local_exhaustion, online_within};
use super::params::{
    clamp_response_ms, clamp_timeout, clamp_timeout_secs, ip_policy, max_response_ms,
};
use serde::{Deserialize, Serialize};

/// `tcp`: connect, optionally send a line and read one back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
    /// Bounds the whole exchange (connect, send, read), clamped 3..=30 s.
    pub timeout_secs: u64,
    pub force_ip: IpFamily,
    /// Sent as `payload + "\n"` when not empty.
    pub payload: String,
    /// When not empty, the first line read must contain it.
    pub expect: String,
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// When set, an exchange (connect, send, read) longer than this many ms fails.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
}

impl TcpSpec {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<TcpSpec, String> {
        Ok(TcpSpec {
            address: f.string("address")?.unwrap_or_default(),
            timeout_secs: clamp_timeout(f.int("timeout")?.unwrap_or(0)),
            force_ip: IpFamily::from_force_ip(f.int("force_ip")?.unwrap_or(0)),
            payload: f.string("payload")?.unwrap_or_default(),
            expect: f.string("expect")?.unwrap_or_default(),
            ip_policy: ip_policy(f)?,
            max_response_ms: max_response_ms(f)?,
        })
    }

    pub(crate) fn validate(&mut self) -> Result<(), String> {
        self.timeout_secs = clamp_timeout_secs(self.timeout_secs);
        self.max_response_ms = clamp_response_ms(self.max_response_ms);
        Ok(())
    }
}

/// Longest response line read when `expect` is set (64 KiB).
pub const MAX_LINE: u64 = 64 * 1024;

pub(crate) async fn run(spec: &TcpSpec) -> Result<Finding, ProbeError> {
    let deadline = deadline_in(Duration::from_secs(spec.timeout_secs));
    let lookup = resolve(&spec.address, spec.force_ip, deadline);
    super::addrs::each(spec.ip_policy, lookup, |pin| run_at(spec, pin, deadline)).await
}

/// One exchange; with `pin`, with that address only.
async fn run_at(
    spec: &TcpSpec,
    pin: Option<SocketAddr>,
    deadline: Instant,
) -> Result<Finding, ProbeError> {
    let started = Instant::now();
    let mut details = Details::default();
    let network = network_name(spec.force_ip);

    let mut stream = match connect_pinned(&spec.address, pin, spec.force_ip, deadline).await {
        Ok(s) => s,
        Err(e) => {
            if is_local_exhaustion(&e) {
                return Err(ProbeError::Resources(e));
            }
            return Ok(Finding::offline(
                format!(
                    "TCP connection error: dial {network} {}: {}",
                    spec.address,
                    io_text(&e)
                ),
                details,
            ));
        }
    };
    if let Ok(peer) = stream.peer_addr() {
        details.address = Some(peer.ip().to_string());
    }

    if let Err(why) = send_payload(&mut stream, &spec.payload, deadline).await {
        return Ok(Finding::offline(why, details));
    }
    if spec.expect.is_empty() {
        return Ok(online_within(
            spec.max_response_ms,
            started.elapsed(),
            details,
        ));
    }
    let line = match read_line(&mut stream, deadline).await {
        Ok(line) => line,
        Err(why) => return Ok(Finding::offline(why, details)),
    };
    let text = String::from_utf8_lossy(&line);
    if text.contains(spec.expect.as_str()) {
        Ok(online_within(
            spec.max_response_ms,
            started.elapsed(),
            details,
        ))
    } else {
        Ok(Finding::offline(
            format!(
                "response mismatch, expected [{}] but got [{}]",
                spec.expect,
                text.trim()
            ),
            details,
        ))
    }
}

/// Sends `payload` and a newline (nothing when `payload` is empty); the error is the
/// finding's message.
async fn send_payload(
    stream: &mut TcpStream,
    payload: &str,
    deadline: Instant,
) -> Result<(), String> {
    if payload.is_empty() {
        return Ok(());
    }
    let mut line = Vec::with_capacity(payload.len() + 1);
    line.extend_from_slice(payload.as_bytes());
    line.push(b'\n');
    match timeout_at(deadline, stream.write_all(&line)).await {
        Ok(r) => r,
        Err(_) => Err(timeout_error()),
    }
    .map_err(|e| format!("failed to send payload: {}", io_text(&e)))
}

/// Reads one response line of at most [`MAX_LINE`] bytes; the error is the finding's message.
async fn read_line(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    let mut line = Vec::new();
    let read = match timeout_at(deadline, reader.read_until(b'\n', &mut line)).await {
        Ok(r) => r,
        Err(_) => Err(timeout_error()),
    };
    match read {
        Err(e) => Err(format!("failed to read response: {}", io_text(&e))),
        Ok(_) if line.last() != Some(&b'\n') => {
            // Like Go's bufio.ReadString: a line that ends without "\n" is an error, even
            // when the expected text arrived.
            let why = if line.len() as u64 >= MAX_LINE {
                format!("line longer than {MAX_LINE} bytes")
            } else {
                "EOF".to_owned()
            };
            Err(format!("failed to read response: {why}"))
        }
        Ok(_) => Ok(line),
    }
}

fn network_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::Any => "tcp",
        IpFamily::V4 => "tcp4",
        IpFamily::V6 => "tcp6",
    }
}
