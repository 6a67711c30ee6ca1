//! Certificates made with stock `openssl` commands, as a new user (or an appliance, or an old
//! internal CA) would make them: a CA from `openssl req -x509`, and leaves issued by
//! `openssl ca` with or without an extensions section (v3 or X.509 v1).

use std::path::Path;
use std::process::Command;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use super::certs::ServerCert;

/// The leaf's key type.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    Rsa,
    Ecdsa,
}

/// The leaf's certificate version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertVersion {
    /// No extensions section: `openssl ca` issues X.509 v1.
    V1,
    /// `subjectAltName` for the CN, `localhost` and `127.0.0.1`.
    V3,
}

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("this test needs `openssl` (apt-get install -y openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_args(kind: KeyKind) -> [&'static str; 4] {
    match kind {
        KeyKind::Rsa => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeyKind::Ecdsa => ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    }
}

/// `openssl ca`'s date format.
fn ca_date(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A leaf for `cn` issued by a fresh CA with `openssl ca`, valid from `not_before` to
/// `not_after`; the chain holds the leaf only.
pub fn issue(
    kind: KeyKind,
    version: CertVersion,
    cn: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> ServerCert {
    super::require_tool("openssl", "openssl");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let extensions = match version {
        CertVersion::V1 => String::new(),
        CertVersion::V3 => format!(
            "x509_extensions = leaf_ext\n\n[leaf_ext]\nbasicConstraints = CA:FALSE\n\
             subjectAltName = DNS:{cn},DNS:localhost,IP:127.0.0.1\n"
        ),
    };
    let config = format!(
        "[ca]\ndefault_ca = test_ca\n\n[test_ca]\ndir = {d}\ndatabase = {d}/index.txt\n\
         new_certs_dir = {d}\ncertificate = {d}/ca.pem\nprivate_key = {d}/ca.key\n\
         serial = {d}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         {extensions}\n[any]\ncommonName = supplied\n",
        d = dir.display()
    );
    std::fs::write(dir.join("ca.cnf"), config).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Stock OpenSSL CA",
            "-days",
            "3650",
        ],
    );
    let mut genkey = vec!["genpkey"];
    genkey.extend(key_args(kind));
    genkey.extend(["-out", "leaf.key"]);
    openssl(dir, &genkey);
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", &subj, "-out", "leaf.csr",
        ],
    );
    let (start, end) = (ca_date(not_before), ca_date(not_after));
    openssl(
        dir,
        &[
            "ca",
            "-config",
            "ca.cnf",
            "-batch",
            "-notext",
            "-startdate",
            &start,
            "-enddate",
            &end,
            "-in",
            "leaf.csr",
            "-out",
            "leaf.pem",
        ],
    );
    let pem = std::fs::read(dir.join("leaf.pem")).unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).expect("leaf key PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let want = match version {
        CertVersion::V1 => x509_parser::x509::X509Version::V1,
        CertVersion::V3 => x509_parser::x509::X509Version::V3,
    };
    assert_eq!(parsed.version(), want, "openssl made the wrong version");
    ServerCert { chain, key }
}
