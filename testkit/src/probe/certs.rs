//! Certificates made with rcgen for the HTTPS and ssl_expire tests.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// What a TLS server presents: its chain (leaf first) and the leaf's key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A CA that signs leaves and intermediates.
pub struct Ca {
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn params(
    cn: &str,
    sans: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("certificate params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

fn ca_params(cn: &str, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = params(
        cn,
        &[],
        OffsetDateTime::now_utc() - Duration::days(1),
        not_after,
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl Ca {
    /// A root CA valid for ten years.
    pub fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let p = ca_params(cn, OffsetDateTime::now_utc() + Duration::days(3650));
        let cert = p.self_signed(&key).expect("self-sign CA");
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    /// An intermediate CA signed by this one, expiring at `not_after`.
    pub fn intermediate(&self, cn: &str, not_after: OffsetDateTime) -> Ca {
        let key = KeyPair::generate().expect("key");
        let p = ca_params(cn, not_after);
        let cert = p.signed_by(&key, &self.issuer).expect("sign intermediate");
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `cn` (also a SAN) plus `localhost` and `127.0.0.1`, valid in the given
    /// window. The chain holds only the leaf; add intermediates with [`ServerCert::with`].
    pub fn leaf(
        &self,
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> ServerCert {
        let key = KeyPair::generate().expect("key");
        let p = params(cn, &[cn, "localhost", "127.0.0.1"], not_before, not_after);
        let cert = p.signed_by(&key, &self.issuer).expect("sign leaf");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: key_der(&key),
        }
    }
}

impl ServerCert {
    /// A self-signed leaf for `cn`, `localhost` and `127.0.0.1`, expiring at `not_after`.
    pub fn self_signed(cn: &str, not_after: OffsetDateTime) -> ServerCert {
        let key = KeyPair::generate().expect("key");
        let p = params(
            cn,
            &[cn, "localhost", "127.0.0.1"],
            OffsetDateTime::now_utc() - Duration::days(1),
            not_after,
        );
        let cert = p.self_signed(&key).expect("self-sign");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: key_der(&key),
        }
    }

    /// The same leaf presenting `ca` after it in the chain.
    pub fn with(mut self, ca: &Ca) -> ServerCert {
        self.chain.push(ca.der.clone());
        self
    }
}

/// Now plus a number of hours (negative for the past).
pub fn hours_from_now(h: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::hours(h)
}
