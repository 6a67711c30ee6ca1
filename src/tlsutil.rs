//! The build's single crypto provider (rustls with ring, installed once per process so every
//! library that asks rustls for the default provider — reqwest, mysql_async, lettre — gets the
//! same one), and the `[tls]` files of a node: its certificate chain, its key and the CA that
//! signs every node, read once and turned into the server and client sides of node-to-node TLS.
//!
//! Every error names the key and the file, so a node with an unusable `[tls]` section stops at
//! start with a message the operator can act on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The provider every TLS config in this crate is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider. Safe to call many times; only the
/// first call installs.
pub fn install_default_provider() {
    // Err means a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the `[tls]` files cannot be used. Never worth retrying: the files must be fixed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read at all.
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but does not hold what the key needs.
    #[error("{key} {path}: {message}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The PEM certificates in `path` (at least one), read for the config key `key`.
pub fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            path,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
        ));
    }
    Ok(certs)
}

/// The PEM private key in `path` (PKCS#8, PKCS#1 or SEC1), read for `[tls] key`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const KEY: &str = "[tls] key";
    let pem = read(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            KEY,
            path,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

/// The node's `[tls]` files, read and checked: the chain it presents, its key (matching the
/// chain's first certificate) and the CA that signs every node.
pub struct NodeTls {
    /// `[tls] cert`, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// `[tls] key`.
    pub key: PrivateKeyDer<'static>,
    /// `[tls] ca`: the only roots trusted for other nodes.
    pub roots: Arc<RootCertStore>,
    /// The `[tls] ca` certificates as read, for clients built elsewhere (reqwest).
    pub ca: Vec<CertificateDer<'static>>,
    paths: TlsConfig,
}

impl NodeTls {
    /// Reads and checks the files `tls` names.
    pub fn load(tls: &TlsConfig) -> Result<NodeTls, TlsError> {
        let chain = read_certs("[tls] cert", &tls.cert)?;
        let key = read_key(&tls.key)?;
        let ca = read_certs("[tls] ca", &tls.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in &ca {
            roots
                .add(cert.clone())
                .map_err(|e| invalid("[tls] ca", &tls.ca, format!("unusable CA: {e}")))?;
        }
        let node = NodeTls {
            chain,
            key,
            roots: Arc::new(roots),
            ca,
            paths: tls.clone(),
        };
        // Checks that the key is one rustls can use and that it matches the certificate.
        node.server_config()?;
        Ok(node)
    }

    /// The listener side: presents the chain; a client certificate is not required (health
    /// checks and Prometheus connect with the CA alone, and node-to-node requests are
    /// authenticated by their signature), but one that is presented must be signed by the CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid("[tls] ca", &self.paths.ca, e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("[tls] cert", &self.paths.cert, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                invalid(
                    "[tls] key",
                    &self.paths.key,
                    format!(
                        "unusable with [tls] cert {}: {e}",
                        self.paths.cert.display()
                    ),
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The chain and key as one PEM document, the form reqwest takes a client identity in.
    /// Re-encoded from what [`NodeTls::load`] accepted, so the client presents exactly the
    /// certificate and key the listener serves.
    pub fn identity_pem(&self) -> Vec<u8> {
        let mut out = String::new();
        for cert in &self.chain {
            pem_block(&mut out, "CERTIFICATE", cert.as_ref());
        }
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_block(&mut out, label, self.key.secret_der());
        out.into_bytes()
    }
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
}

/// Test certificates made with rcgen, for the unit tests of the modules that serve or dial
/// TLS.
#[cfg(test)]
pub(crate) mod testing {
    use super::TlsConfig;

    /// A CA, a node certificate it signed for `127.0.0.1`, and the `[tls]` paths to them.
    pub struct Files {
        pub dir: tempfile::TempDir,
        pub tls: TlsConfig,
        pub ca_pem: String,
    }

    pub fn files() -> Files {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        super::install_default_provider();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsConfig {
            cert: dir.path().join("node.crt"),
            key: dir.path().join("node.key"),
            ca: dir.path().join("ca.crt"),
        };
        std::fs::write(&tls.cert, leaf.pem()).unwrap();
        std::fs::write(&tls.key, key.serialize_pem()).unwrap();
        std::fs::write(&tls.ca, ca_cert.pem()).unwrap();
        Files {
            dir,
            tls,
            ca_pem: ca_cert.pem(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::files;
    use super::*;

    #[test]
    fn good_files_load_and_identity_round_trips() {
        let f = files();
        let node = NodeTls::load(&f.tls).unwrap();
        assert_eq!(node.chain.len(), 1);
        let pem = node.identity_pem();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs, node.chain);
        let key = PrivateKeyDer::from_pem_slice(&pem).unwrap();
        assert_eq!(key.secret_der(), node.key.secret_der());
    }

    #[test]
    fn every_bad_file_is_named() {
        let f = files();
        let garbage = f.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key at all\n").unwrap();
        let missing = f.dir.path().join("missing.pem");
        let cases = [
            (
                TlsConfig {
                    key: garbage.clone(),
                    ..f.tls.clone()
                },
                "[tls] key",
                &garbage,
            ),
            (
                TlsConfig {
                    cert: missing.clone(),
                    ..f.tls.clone()
                },
                "[tls] cert",
                &missing,
            ),
            (
                TlsConfig {
                    ca: garbage.clone(),
                    ..f.tls.clone()
                },
                "[tls] ca",
                &garbage,
            ),
        ];
        for (tls, key, path) in cases {
            let e = NodeTls::load(&tls).err().expect("refused").to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let f = files();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&f.tls.key, other.serialize_pem()).unwrap();
        let e = NodeTls::load(&f.tls).err().expect("refused").to_string();
        assert!(e.contains("[tls] key"), "{e}");
        assert!(e.contains(&f.tls.cert.display().to_string()), "{e}");
    }
}
