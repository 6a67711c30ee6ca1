//! Hostile clients against a node's listeners, for the edge tests and `scripts/bench-edges`:
//! many connections from stranger addresses (127.0.0.2 and up; the nodes use 127.0.0.1),
//! each behaving badly in one of the ways of [`Kind`], and each re-opened shortly after the
//! server drops it, so the pressure stays for as long as the flood runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How one hostile connection behaves once connected.
#[derive(Clone)]
pub enum Kind {
    /// Sends nothing (on a TLS listener: a handshake that never starts).
    Idle,
    /// Sends a request head one byte a second, never finishing it.
    SlowHead,
    /// Sends a POST head with `Content-Length: 1000000`, then a byte a second.
    SlowBody,
    /// Sends the HTTP/2 preface and an empty SETTINGS frame, then nothing.
    IdleHttp2,
    /// Sends the first bytes of a TLS ClientHello, then nothing.
    PartialTls,
    /// Finishes a TLS handshake (no client certificate), then sends nothing.
    TlsIdle(Arc<rustls::ClientConfig>),
}

/// What to open against each target.
#[derive(Clone)]
pub struct Plan {
    /// Connections held against each target.
    pub per_target: usize,
    /// Source addresses, used in turn (each a loopback address of its own).
    pub sources: Vec<Ipv4Addr>,
    /// Behaviours, used in turn.
    pub kinds: Vec<Kind>,
    /// Wait before re-opening a dropped connection (and between failed connects).
    pub reopen_after: Duration,
}

impl Plan {
    /// `per_target` connections from `sources` stranger addresses (127.0.0.2 and up), all of
    /// one `kind`.
    pub fn new(per_target: usize, sources: u8, kinds: Vec<Kind>) -> Plan {
        Plan {
            per_target,
            sources: (0..sources)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
                .collect(),
            kinds,
            reopen_after: Duration::from_millis(500),
        }
    }
}

/// Counters of a running flood.
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections opened in all.
    pub opened: AtomicU64,
    /// Connections the server closed.
    pub dropped: AtomicU64,
}

/// A running flood; dropping it closes every connection.
pub struct Flood {
    tasks: JoinSet<()>,
    pub stats: Arc<FloodStats>,
}

impl Flood {
    /// Starts `plan` against every target, on the current tokio runtime.
    pub fn start(targets: &[SocketAddr], plan: &Plan) -> Flood {
        raise_fd_limit();
        let stats = Arc::new(FloodStats::default());
        let mut tasks = JoinSet::new();
        for target in targets {
            for i in 0..plan.per_target {
                let source = plan.sources[i % plan.sources.len()];
                let kind = plan.kinds[i % plan.kinds.len()].clone();
                let (stats, target, reopen) = (stats.clone(), *target, plan.reopen_after);
                tasks.spawn(hold(target, source, kind, reopen, stats));
            }
        }
        Flood { tasks, stats }
    }

    /// Closes every connection.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Keeps one hostile connection open, re-opening it whenever the server drops it.
async fn hold(
    target: SocketAddr,
    source: Ipv4Addr,
    kind: Kind,
    reopen: Duration,
    stats: Arc<FloodStats>,
) {
    loop {
        if let Ok(stream) = connect_from(source, target).await {
            stats.opened.fetch_add(1, Ordering::Relaxed);
            stats.open.fetch_add(1, Ordering::Relaxed);
            behave(stream, &kind, target).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(reopen).await;
    }
}

async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(target).await
}

/// Misbehaves on `stream` until the server closes it.
async fn behave(mut stream: TcpStream, kind: &Kind, target: SocketAddr) {
    let drip: &[u8] = match kind {
        Kind::Idle => b"",
        Kind::SlowHead => {
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        }
        Kind::SlowBody => {
            let head =
                b"POST /api/v1/push/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            &[b'a'; 1000]
        }
        Kind::IdleHttp2 => {
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
            if stream.write_all(preface).await.is_err() {
                return;
            }
            b""
        }
        // A handshake record header and the start of a ClientHello.
        Kind::PartialTls => {
            if stream
                .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                .await
                .is_err()
            {
                return;
            }
            b""
        }
        Kind::TlsIdle(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
            let Ok(mut tls) = connector.connect(name, stream).await else {
                return;
            };
            return until_closed(&mut tls, b"").await;
        }
    };
    until_closed(&mut stream, drip).await
}

/// Sends `drip` a byte a second (nothing when empty) until the server closes the connection.
async fn until_closed<S>(stream: &mut S, drip: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = [0u8; 4096];
    let mut next = drip.iter();
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if !drip.is_empty() => {
                let Some(b) = next.next() else { continue };
                if stream.write_all(&[*b]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A TLS client config trusting the PEM CA at `ca` (no client certificate: a stranger).
pub fn tls_client(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    gobearmon::tlsutil::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA");
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Raises this process's open-file limit to the hard limit; a flood holds thousands.
pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0
        }
    };
    assert!(
        ok && l.rlim_cur >= 16_384,
        "a flood needs 16384 open files; the hard limit is {}",
        l.rlim_max
    );
}
