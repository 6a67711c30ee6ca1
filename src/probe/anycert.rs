//! Accepting whatever certificate a server presents while still authenticating the handshake,
//! for `ssl_expire` and for `http` with `insecure` (gobearmon's `InsecureSkipVerify`).
//!
//! webpki cannot read every certificate found in the field (X.509 v1 certificates issued by
//! `openssl ca` without extensions, unusual signature algorithms), and rustls's signature
//! helpers parse the end-entity certificate with webpki. So the handshake signatures are
//! checked here with the `SubjectPublicKeyInfo` that x509-parser reads and ring's algorithms:
//! the peer must still hold the private key of the certificate it presented. Nothing about the
//! certificate itself (chain, dates, names, its own signature) is verified.

use std::sync::Arc;

use ring::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, Error, PeerIncompatible, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// A client config with [`AcceptAnyCertificate`], the safe default protocol versions, the
/// given ALPN protocols, and no session resumption (every run must see the certificates).
pub(crate) fn client_config(alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = crate::tlsutil::provider();
    let verifier = Arc::new(AcceptAnyCertificate);
    let builder =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions();
    let mut config = match builder {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
        // The ring provider supports the default versions; this arm cannot run, but if it did
        // the check would still work with rustls' own defaults.
        Err(_) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Accepts any certificate; verifies TLS 1.2 and 1.3 handshake signatures against the public
/// key the certificate carries.
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate;

/// The schemes offered, strongest first. SHA-1 is offered for TLS 1.2 servers (old appliances)
/// and refused in TLS 1.3, as the RFC requires.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA1,
];

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

/// The ring algorithms that may verify `scheme` with a key of algorithm `key_oid`; in TLS 1.3
/// an ECDSA scheme names its curve, in TLS 1.2 only its hash.
fn algorithms(
    scheme: SignatureScheme,
    key_oid: &str,
    tls13: bool,
) -> Vec<&'static dyn VerificationAlgorithm> {
    use SignatureScheme as S;
    let rsa_key = key_oid == OID_RSA || key_oid == OID_RSA_PSS;
    match scheme {
        S::ECDSA_NISTP256_SHA256 if key_oid == OID_EC && tls13 => {
            vec![&sig::ECDSA_P256_SHA256_ASN1]
        }
        S::ECDSA_NISTP384_SHA384 if key_oid == OID_EC && tls13 => {
            vec![&sig::ECDSA_P384_SHA384_ASN1]
        }
        S::ECDSA_NISTP256_SHA256 if key_oid == OID_EC => {
            vec![&sig::ECDSA_P256_SHA256_ASN1, &sig::ECDSA_P384_SHA256_ASN1]
        }
        S::ECDSA_NISTP384_SHA384 if key_oid == OID_EC => {
            vec![&sig::ECDSA_P384_SHA384_ASN1, &sig::ECDSA_P256_SHA384_ASN1]
        }
        S::ED25519 if key_oid == OID_ED25519 => vec![&sig::ED25519],
        S::RSA_PSS_SHA256 if rsa_key => vec![&sig::RSA_PSS_2048_8192_SHA256],
        S::RSA_PSS_SHA384 if rsa_key => vec![&sig::RSA_PSS_2048_8192_SHA384],
        S::RSA_PSS_SHA512 if rsa_key => vec![&sig::RSA_PSS_2048_8192_SHA512],
        // PKCS#1 v1.5 is TLS 1.2 only. 1024-bit keys are still found on appliances.
        S::RSA_PKCS1_SHA256 if rsa_key && !tls13 => {
            vec![&sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY]
        }
        S::RSA_PKCS1_SHA384 if rsa_key && !tls13 => vec![&sig::RSA_PKCS1_2048_8192_SHA384],
        S::RSA_PKCS1_SHA512 if rsa_key && !tls13 => {
            vec![&sig::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY]
        }
        S::RSA_PKCS1_SHA1 if rsa_key && !tls13 => {
            vec![&sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY]
        }
        _ => vec![],
    }
}

/// Verifies `dss` over `message` with the key in `cert`.
fn verify(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    tls13: bool,
) -> Result<HandshakeSignatureValid, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let spki = parsed.public_key();
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let candidates = algorithms(dss.scheme, &key_oid, tls13);
    if candidates.is_empty() {
        return Err(PeerIncompatible::NoSignatureSchemesInCommon.into());
    }
    let key = spki.subject_public_key.data.as_ref();
    let valid = candidates.iter().any(|alg| {
        UnparsedPublicKey::new(*alg, key)
            .verify(message, dss.signature())
            .is_ok()
    });
    if valid {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(Error::InvalidCertificate(
            rustls::CertificateError::BadSignature,
        ))
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_follow_the_key_and_the_version() {
        use SignatureScheme as S;
        assert_eq!(algorithms(S::RSA_PKCS1_SHA256, OID_RSA, false).len(), 1);
        assert!(algorithms(S::RSA_PKCS1_SHA256, OID_RSA, true).is_empty());
        assert!(algorithms(S::RSA_PKCS1_SHA1, OID_RSA, true).is_empty());
        assert!(algorithms(S::ECDSA_NISTP256_SHA256, OID_RSA, false).is_empty());
        assert_eq!(algorithms(S::ECDSA_NISTP256_SHA256, OID_EC, true).len(), 1);
        assert_eq!(algorithms(S::ECDSA_NISTP256_SHA256, OID_EC, false).len(), 2);
        assert!(algorithms(S::RSA_PSS_SHA256, OID_EC, true).is_empty());
        assert_eq!(algorithms(S::ED25519, OID_ED25519, true).len(), 1);
    }
}
