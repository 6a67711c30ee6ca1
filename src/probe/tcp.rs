//! The `tcp` check: connect, send `payload + "\n"` when a payload is set, and when `expect` is
//! set read one line and look for it.
//!
//! Fixed from gobearmon: `timeout` bounds the whole exchange (a server that accepts and never
//! answers cannot hold the check), and the payload is sent whenever it is set. The line read
//! is capped at [`MAX_LINE`] bytes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::spec::{IpFamily, TcpSpec};
use super::{Details, Finding, ProbeError, is_local_exhaustion, online_within};

/// Longest response line read when `expect` is set (64 KiB).
pub const MAX_LINE: u64 = 64 * 1024;

pub(crate) async fn run(spec: &TcpSpec) -> Result<Finding, ProbeError> {
    let deadline = super::deadline_in(Duration::from_secs(spec.timeout_secs));
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

    if !spec.payload.is_empty() {
        let mut line = Vec::with_capacity(spec.payload.len() + 1);
        line.extend_from_slice(spec.payload.as_bytes());
        line.push(b'\n');
        let sent = match timeout_at(deadline, stream.write_all(&line)).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error()),
        };
        if let Err(e) = sent {
            return Ok(Finding::offline(
                format!("failed to send payload: {}", io_text(&e)),
                details,
            ));
        }
    }

    if spec.expect.is_empty() {
        return Ok(online_within(
            spec.max_response_ms,
            started.elapsed(),
            details,
        ));
    }

    let mut reader = BufReader::new((&mut stream).take(MAX_LINE));
    let mut line = Vec::new();
    let read = match timeout_at(deadline, reader.read_until(b'\n', &mut line)).await {
        Ok(r) => r,
        Err(_) => Err(timeout_error()),
    };
    match read {
        Err(e) => {
            return Ok(Finding::offline(
                format!("failed to read response: {}", io_text(&e)),
                details,
            ));
        }
        Ok(_) if line.last() != Some(&b'\n') => {
            // Like Go's bufio.ReadString: a line that ends without "\n" is an error, even
            // when the expected text arrived.
            let why = if line.len() as u64 >= MAX_LINE {
                format!("line longer than {MAX_LINE} bytes")
            } else {
                "EOF".to_owned()
            };
            return Ok(Finding::offline(
                format!("failed to read response: {why}"),
                details,
            ));
        }
        Ok(_) => {}
    }
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

fn network_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::Any => "tcp",
        IpFamily::V4 => "tcp4",
        IpFamily::V6 => "tcp6",
    }
}

fn timeout_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "i/o timeout")
}

/// Go-like error text: the OS message without Rust's ` (os error N)` suffix.
pub(crate) fn io_text(e: &io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        // An error this crate or a library made with its own text.
        return inner.to_string();
    }
    if e.kind() == io::ErrorKind::TimedOut {
        return "i/o timeout".to_owned();
    }
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

/// Resolves `address` (`host:port`), keeps the addresses `family` allows, and connects to them
/// in turn until one answers or the deadline passes.
pub(crate) async fn connect(
    address: &str,
    family: IpFamily,
    deadline: Instant,
) -> io::Result<TcpStream> {
    let addrs = resolve(address, family, deadline).await?;
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                if is_local_exhaustion(&e) {
                    return Err(e);
                }
                last = Some(e);
            }
            Err(_) => return Err(timeout_error()),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no suitable address")))
}

/// [`connect`], or with `pin` a connection to that address alone.
pub(crate) async fn connect_pinned(
    address: &str,
    pin: Option<SocketAddr>,
    family: IpFamily,
    deadline: Instant,
) -> io::Result<TcpStream> {
    match pin {
        None => connect(address, family, deadline).await,
        Some(addr) => match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error()),
        },
    }
}

/// `host:port` to socket addresses of the allowed family, bounded by the deadline.
pub(crate) async fn resolve(
    address: &str,
    family: IpFamily,
    deadline: Instant,
) -> io::Result<Vec<SocketAddr>> {
    if address.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "missing address",
        ));
    }
    if !has_port(address) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address {address}: missing port in address"),
        ));
    }
    let found: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => match timeout_at(deadline, tokio::net::lookup_host(address)).await {
            Ok(r) => r
                .map_err(|e| io::Error::new(e.kind(), format!("lookup {address}: {e}")))?
                .collect(),
            Err(_) => return Err(timeout_error()),
        },
    };
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| family.allows(a.ip()))
        .collect();
    if allowed.is_empty() {
        let which = match family {
            IpFamily::V4 => "IPv4 ",
            IpFamily::V6 => "IPv6 ",
            IpFamily::Any => "",
        };
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no suitable {which}address found"),
        ));
    }
    Ok(allowed)
}

/// Whether `host:port` has a port: a final `:` outside brackets, as Go's SplitHostPort needs.
fn has_port(address: &str) -> bool {
    match address.rfind(':') {
        None => false,
        Some(i) => {
            let host = &address[..i];
            // A bare IPv6 literal (`::1`) has colons but no port.
            !host.contains(':') || host.starts_with('[')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert!(has_port("127.0.0.1:80"));
        assert!(has_port("[::1]:80"));
        assert!(has_port("host:80"));
        assert!(!has_port("host"));
        assert!(!has_port("::1"));
    }

    #[test]
    fn error_text() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_text(&e), "connection refused");
        assert_eq!(io_text(&timeout_error()), "i/o timeout");
    }
}
