//! [`ProbeContext`]: what a worker's check runs share (clients, sockets, defaults).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls_pki_types::CertificateDer;

use super::{http, icmp, tls};

/// What a worker shares between check runs: the `[dns] server` default, extra trusted CA
/// certificates, and lazily built HTTP clients, TLS config and ICMP sockets.
///
/// Cheap to clone (clones share the clients). The ICMP sockets' receive tasks run on the tokio
/// runtime that first uses them, so keep one context per runtime.
#[derive(Clone, Default)]
pub struct ProbeContext {
    /// The nameserver of dns checks that name none (`[dns] server`); `None` means the local
    /// host, port 53, as in gobearmon.
    pub dns_server: Option<String>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    http: http::Clients,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    icmp: icmp::Pingers,
}

impl ProbeContext {
    /// A context whose dns checks default to `dns_server` (`[dns] server`).
    pub fn new(dns_server: Option<String>) -> ProbeContext {
        ProbeContext {
            dns_server,
            shared: Arc::default(),
        }
    }

    /// Also trust these CA certificates (DER) for http checks, beside the system store.
    /// Returns a context with fresh clients.
    pub fn with_extra_roots(self, roots: Vec<CertificateDer<'static>>) -> ProbeContext {
        let own = self.shared.http.own.clone();
        self.fresh(roots, own)
    }

    /// Never follow an http check's redirect to these listeners of this node (a redirect to
    /// `127.0.0.1:<worker port>/disconnect`, say). Returns a context with fresh clients.
    pub fn with_own_listeners(self, own: Vec<SocketAddr>) -> ProbeContext {
        let roots = self.shared.http.extra_roots.clone();
        self.fresh(roots, own)
    }

    fn fresh(
        self,
        extra_roots: Vec<CertificateDer<'static>>,
        own: Vec<SocketAddr>,
    ) -> ProbeContext {
        ProbeContext {
            dns_server: self.dns_server,
            shared: Arc::new(Shared {
                http: http::Clients::new(extra_roots, own),
                ..Shared::default()
            }),
        }
    }

    pub(super) fn http_clients(&self) -> &http::Clients {
        &self.shared.http
    }

    pub(super) fn tls_config(&self) -> &Arc<rustls::ClientConfig> {
        self.shared.tls.get_or_init(tls::client_config)
    }

    pub(super) fn pingers(&self) -> &icmp::Pingers {
        &self.shared.icmp
    }
}

impl fmt::Debug for ProbeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeContext")
            .field("dns_server", &self.dns_server)
            .field("extra_roots", &self.shared.http.extra_roots.len())
            .finish_non_exhaustive()
    }
}
