//! The `ssl_expire` check: a TLS handshake that reads the certificates the server presents.
//!
//! As in gobearmon: the chain, the host name and the dates are not verified (only the
//! handshake's signatures are), SNI is the host part of `address` (none for IP literals),
//! connect plus handshake are bounded by 15 s, `days_remaining = trunc((notAfter - now) /
//! 24h)`, and the check fails iff `days_remaining <= days` with the message `certificate (CN)
//! expires in N days`. Fixed: every presented certificate is read and the one that expires
//! first is reported (an intermediate that expires before the leaf is caught), and the
//! connection is closed with a close_notify.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use super::spec::{IpFamily, TlsSpec};
use super::tcp::{connect_pinned, io_text, resolve};
use super::{Details, Finding, ProbeContext, ProbeError, is_local_exhaustion};

/// Bound on connect plus handshake (gobearmon's dialer timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on sending close_notify before the socket is dropped anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// A client config that accepts any certificate but still checks handshake signatures, and
/// never resumes a session (every run must see the certificates).
pub(crate) fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = crate::tlsutil::provider();
    let verifier = AcceptAnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    };
    let builder =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions();
    let mut config = match builder {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
        // The ring provider supports the default versions; this arm cannot run, but if it did
        // the check would still work with rustls' own defaults.
        Err(_) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

pub(crate) async fn run(spec: &TlsSpec, ctx: &ProbeContext) -> Result<Finding, ProbeError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let lookup = resolve(&spec.address, IpFamily::Any, deadline);
    super::addrs::each(spec.ip_policy, lookup, |pin| {
        run_at(spec, ctx, pin, deadline)
    })
    .await
}

/// One handshake; with `pin`, with that address only (SNI is still `address`'s host).
async fn run_at(
    spec: &TlsSpec,
    ctx: &ProbeContext,
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

    let connector = TlsConnector::from(ctx.tls_config());
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
    let certs: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    // Close politely but never wait long for it.
    let _ = timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
    drop(stream);

    if certs.is_empty() {
        return Ok(Finding::offline("no peer certificates found", details));
    }
    details.certificates = Some(certs.len());
    let Some(earliest) = earliest_expiry(&certs) else {
        return Ok(Finding::offline(
            "failed to parse the peer certificates",
            details,
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days_remaining = days_remaining(earliest.not_after, now);
    details.days_remaining = Some(days_remaining);
    details.not_after = rfc3339(earliest.not_after);
    details.common_name = Some(earliest.common_name.clone());
    details.chain_position = Some(earliest.position);

    if days_remaining <= spec.days {
        Ok(Finding::offline(
            format!(
                "certificate ({}) expires in {days_remaining} days",
                earliest.common_name
            ),
            details,
        ))
    } else {
        Ok(Finding::online(details))
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
        });
    }
    best
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

/// Accepts any certificate (gobearmon's `InsecureSkipVerify`): an expiry check must see
/// expired, self-signed and misnamed certificates. Handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
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
    fn rfc3339_format() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
    }
}
