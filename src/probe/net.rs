//! Socket helpers the tcp, tls, dns and http checks share: resolving `host:port` within a
//! deadline, connecting (optionally to one pinned address), Go-like error text, and bounded
//! deadlines.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::addrs::IpFamily;
use super::outcome::is_local_exhaustion;

/// `now + after`, without the panic of an overflowing addition: at most a day ahead.
/// Validated definitions ([`CheckSpec::validated`]) never come near that.
pub(crate) fn deadline_in(after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(24 * 3600);
    Instant::now() + after.min(FAR)
}

pub(crate) fn timeout_error() -> io::Error {
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
