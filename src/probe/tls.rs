//! The `ssl_expire` check: a TLS handshake that reads the certificates the server presents.
//!
//! As in gobearmon: the chain, the host name and the dates are not verified (only the
//! handshake's signatures are), SNI is the host part of `address` (none for IP literals),
//! connect plus handshake are bounded by 15 s, `days_remaining = trunc((notAfter - now) /
//! 24h)`, and the check fails iff `days_remaining <= days` with the message `certificate (CN)
//! expires in N days`. Fixed: every presented certificate is read and the one that expires
//! first is reported (an intermediate that expires before the leaf is caught), and the
//! connection is closed with a close_notify. Any certificate the server presents is read
//! (X.509 v1 included; see `anycert.rs`), and the handshake is still authenticated.
//!
//! Added: `min_tls_version` (the negotiated version must be at least it) and `expect_name`
//! (the leaf's subject alternative names, or its common name when it has none, must cover the
//! name). They are judged before the expiry, in that order.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use super::addrs::IpFamily;
use super::addrs::IpPolicy;
use super::gojson::Fields;
use super::net::{connect_pinned, io_text, resolve};
use super::outcome::{Details, Finding, ProbeError, is_local_exhaustion};
use super::params::ip_policy;
use serde::{Deserialize, Serialize};

/// `ssl_expire`: the earliest expiry among the certificates a TLS server presents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// `host:port` (no default port).
    pub address: String,
    /// Fails when the days remaining are at most this.
    pub days: i64,
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// When set, a lower negotiated TLS version fails.
    #[serde(default)]
    pub min_tls_version: Option<TlsVersion>,
    /// When not empty, a host name or IP address the leaf certificate must cover.
    #[serde(default)]
    pub expect_name: String,
}

impl TlsSpec {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<TlsSpec, String> {
        let min_tls_version = match f.string("min_tls_version")?.unwrap_or_default().as_str() {
            "" => None,
            "1.2" => Some(TlsVersion::V1_2),
            "1.3" => Some(TlsVersion::V1_3),
            other => {
                return Err(format!(
                    "invalid min_tls_version: {other} (expected \"1.2\" or \"1.3\")"
                ));
            }
        };
        Ok(TlsSpec {
            address: f.string("address")?.unwrap_or_default(),
            days: f.int("days")?.unwrap_or(0),
            ip_policy: ip_policy(f)?,
            min_tls_version,
            expect_name: f.string("expect_name")?.unwrap_or_default(),
        })
    }
}

/// A TLS protocol version this build can negotiate, ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    /// `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// The version rustls negotiated; `None` for versions below 1.2.
    pub(crate) fn from_rustls(v: rustls::ProtocolVersion) -> Option<TlsVersion> {
        match v {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::V1_2),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::V1_3),
            _ => None,
        }
    }
}

/// Bound on connect plus handshake (gobearmon's dialer timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on sending close_notify before the socket is dropped anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// The `ssl_expire` client config: any certificate accepted, handshake signatures checked
/// against the presented key ([`super::anycert`]), no ALPN, no session resumption.
pub(crate) fn client_config() -> Arc<rustls::ClientConfig> {
    Arc::new(super::anycert::client_config(&[]))
}

pub(crate) async fn run(
    spec: &TlsSpec,
    config: &Arc<rustls::ClientConfig>,
) -> Result<Finding, ProbeError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let lookup = resolve(&spec.address, IpFamily::Any, deadline);
    super::addrs::each(spec.ip_policy, lookup, |pin| {
        run_at(spec, config, pin, deadline)
    })
    .await
}

/// One handshake; with `pin`, with that address only (SNI is still `address`'s host).
async fn run_at(
    spec: &TlsSpec,
    config: &Arc<rustls::ClientConfig>,
    pin: Option<std::net::SocketAddr>,
    deadline: Instant,
) -> Result<Finding, ProbeError> {
    let mut details = Details::default();
    let tcp = match connect_pinned(&spec.address, pin, IpFamily::Any, deadline).await {
        Ok(s) => s,
        Err(e) if is_local_exhaustion(&e) => return Err(ProbeError::Resources(e)),
        Err(e) => {
            return Ok(Finding::offline(
                format!("dial tcp {}: {}", spec.address, io_text(&e)),
                details,
            ));
        }
    };
    let peer_ip = tcp.peer_addr().map(|a| a.ip()).ok();
    details.address = peer_ip.map(|ip| ip.to_string());
    let server_name = server_name(&spec.address, peer_ip);

    let connector = TlsConnector::from(config.clone());
    let mut stream = match timeout_at(deadline, connector.connect(server_name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ok(Finding::offline(format!("tls: {e}"), details)),
        Err(_) => {
            return Ok(Finding::offline(
                format!("dial tcp {}: i/o timeout", spec.address),
                details,
            ));
        }
    };
    let conn = stream.get_ref().1;
    let certs: Vec<CertificateDer<'static>> = conn
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let version = conn.protocol_version().and_then(TlsVersion::from_rustls);
    details.tls_version = version.map(|v| v.as_str().to_owned());
    details.cipher_suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map(str::to_owned);
    // Close politely but never wait long for it.
    let _ = timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
    drop(stream);
    Ok(judge(spec, &certs, version, details))
}

/// The verdict on a completed handshake: the TLS version, then the name, then the expiry.
fn judge(
    spec: &TlsSpec,
    certs: &[CertificateDer<'_>],
    version: Option<TlsVersion>,
    mut details: Details,
) -> Finding {
    if certs.is_empty() {
        return Finding::offline("no peer certificates found", details);
    }
    details.certificates = Some(certs.len());
    let Some(earliest) = earliest_expiry(certs) else {
        return Finding::offline("failed to parse the peer certificates", details);
    };
    let days_remaining = describe(&earliest, &mut details);

    if let Some(min) = spec.min_tls_version
        && version.is_none_or(|v| v < min)
    {
        let got = version.map_or("an unknown TLS version".to_owned(), |v| {
            format!("TLS {}", v.as_str())
        });
        return Finding::offline(
            format!("{got} negotiated, below min_tls_version {}", min.as_str()),
            details,
        );
    }
    if !spec.expect_name.is_empty() {
        // The name is the leaf's business, whichever certificate expires first.
        let leaf = x509_parser::parse_x509_certificate(certs[0].as_ref()).ok();
        let names = leaf.as_ref().map(|(_, c)| names_of(c)).unwrap_or_default();
        if !name_covered(&names, &spec.expect_name) {
            return Finding::offline(
                format!(
                    "certificate is valid for {}, not {}",
                    if names.is_empty() {
                        "no names".to_owned()
                    } else {
                        names.join(", ")
                    },
                    spec.expect_name
                ),
                details,
            );
        }
    }
    if days_remaining <= spec.days {
        Finding::offline(
            format!(
                "certificate ({}) expires in {days_remaining} days",
                earliest.common_name
            ),
            details,
        )
    } else {
        Finding::online(details)
    }
}

/// Fills the certificate fields of `details` from `cert`; returns its days remaining.
fn describe(cert: &Expiry, details: &mut Details) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days_remaining = days_remaining(cert.not_after, now);
    details.days_remaining = Some(days_remaining);
    details.not_after = rfc3339(cert.not_after);
    details.common_name = Some(cert.common_name.clone());
    details.chain_position = Some(cert.position);
    details.issuer = Some(cert.issuer.clone());
    details.subject_alt_names = Some(cert.names.clone());
    details.serial = Some(cert.serial.clone());
    days_remaining
}

/// The certificate fields of `details` for an https leaf (http checks), when it parses.
pub(crate) fn describe_leaf(der: &[u8], details: &mut Details) {
    if let Some(leaf) = earliest_expiry(&[CertificateDer::from(der)]) {
        describe(&leaf, details);
    }
}

/// Go's `int(NotAfter.Sub(now).Hours() / 24)`: whole days, truncated toward zero.
pub(crate) fn days_remaining(not_after: i64, now: i64) -> i64 {
    (not_after - now) / SECONDS_PER_DAY
}

struct Expiry {
    not_after: i64,
    common_name: String,
    position: usize,
    issuer: String,
    /// The subject alternative names, or the common name when there are none.
    names: Vec<String>,
    serial: String,
}

/// The parseable certificate with the earliest `notAfter` (the first one on a tie).
fn earliest_expiry(certs: &[CertificateDer<'_>]) -> Option<Expiry> {
    let mut best: Option<Expiry> = None;
    for (position, der) in certs.iter().enumerate() {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            continue;
        };
        let not_after = cert.validity().not_after.timestamp();
        if best.as_ref().is_some_and(|b| b.not_after <= not_after) {
            continue;
        }
        // Go's Subject.CommonName is the last CN attribute.
        let common_name = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .last()
            .unwrap_or("")
            .to_owned();
        best = Some(Expiry {
            not_after,
            common_name,
            position,
            issuer: cert.issuer().to_string(),
            names: names_of(&cert),
            serial: cert.raw_serial_as_string(),
        });
    }
    best
}

/// The DNS names and IP addresses a certificate covers: its subject alternative names, or its
/// last common name when it has none (X.509 v1 certificates cannot carry the extension).
fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                GeneralName::IPAddress(b) => ip_text(b),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return sans;
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()
        .map(|cn| vec![cn.to_owned()])
        .unwrap_or_default()
}

/// An IP address SAN (4 or 16 bytes) as text.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Whether `wanted` (a host name or an IP address) is one of `names`, host names compared
/// without case or trailing dot, and a `*.` name covering exactly one leftmost label.
fn name_covered(names: &[String], wanted: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    let wanted = norm(wanted);
    if let Ok(ip) = wanted.parse::<IpAddr>() {
        return names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
    }
    names
        .iter()
        .map(|n| norm(n))
        .any(|name| match name.strip_prefix("*.") {
            Some(suffix) => wanted
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => name == wanted,
        })
}

fn rfc3339(unix: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// SNI as Go sends it: the host part of `address`; none (an IP server name) for IP literals
/// and for names rustls cannot send.
fn server_name(address: &str, peer: Option<IpAddr>) -> ServerName<'static> {
    let host = match address.rfind(':') {
        Some(i) => &address[..i],
        None => address,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    match ServerName::try_from(host.to_owned()) {
        Ok(name) => name,
        Err(_) => ServerName::IpAddress(
            peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_arithmetic_truncates_toward_zero() {
        let now = 1_000_000_000;
        let h = 3600;
        assert_eq!(days_remaining(now + 132 * h, now), 5); // 5.5 days
        assert_eq!(days_remaining(now + 23 * h, now), 0);
        assert_eq!(days_remaining(now - 12 * h, now), 0); // expired 12 h ago
        assert_eq!(days_remaining(now - 36 * h, now), -1);
    }

    #[test]
    fn sni_rules() {
        assert!(matches!(
            server_name("127.0.0.1:443", None),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:443", None),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("t.test:443", None),
            ServerName::DnsName(n) if n.as_ref() == "t.test"
        ));
    }

    #[test]
    fn name_matching() {
        let names: Vec<String> = ["*.example.com", "Host.Test", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(name_covered(&names, "a.example.com"));
        assert!(name_covered(&names, "A.EXAMPLE.COM."));
        assert!(!name_covered(&names, "example.com"));
        assert!(!name_covered(&names, "a.b.example.com"));
        assert!(name_covered(&names, "host.test"));
        assert!(!name_covered(&names, "other.test"));
        assert!(name_covered(&names, "127.0.0.1"));
        assert!(!name_covered(&names, "127.0.0.2"));
        assert_eq!(ip_text(&[10, 0, 0, 1]).as_deref(), Some("10.0.0.1"));
        assert_eq!(ip_text(&[1, 2, 3]), None);
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
    }
}
