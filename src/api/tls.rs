//! An axum [`Listener`] that serves TLS on a bound TCP listener. Handshakes run in tasks of
//! their own, each bounded by a timeout, so a slow, silent or garbage client never holds up
//! another connection; a handshake that fails is logged with the peer's address and dropped.
//! Only finished handshakes are handed to axum.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Handshakes in flight at once; beyond this the listener stops accepting (the kernel's
/// backlog holds the rest) until one finishes or times out.
const MAX_HANDSHAKES: usize = 1024;

/// How long accepting pauses after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// Accepts TCP connections and yields them once their TLS handshake has completed.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    /// In-flight handshakes; dropping the listener aborts them.
    handshakes: JoinSet<Handshake>,
    /// Set after an accept error: no accepting until then.
    paused_until: Option<Instant>,
}

impl TlsListener {
    /// Serves `config` on `tcp`, giving every handshake at most `timeout`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>, timeout: Duration) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            timeout,
            handshakes: JoinSet::new(),
            paused_until: None,
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Cancel-safe, as axum needs when shutdown interrupts it: `TcpListener::accept` and
        // `JoinSet::join_next` lose nothing when dropped, and a spawned handshake keeps going.
        loop {
            let paused_until = self.paused_until;
            let may_accept = paused_until.is_none() && self.handshakes.len() < MAX_HANDSHAKES;
            let busy = !self.handshakes.is_empty();
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if busy => {
                    // Err: the task panicked or was aborted; None: the failure was logged.
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                accepted = self.tcp.accept(), if may_accept => match accepted {
                    Ok((stream, peer)) => {
                        self.handshakes.spawn(handshake(
                            self.acceptor.clone(),
                            stream,
                            peer,
                            self.timeout,
                        ));
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot accept a connection; pausing accepts for 1 s");
                        self.paused_until = Some(Instant::now() + ACCEPT_ERROR_PAUSE);
                    }
                },
                _ = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)),
                    if paused_until.is_some() =>
                {
                    self.paused_until = None;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Handshake {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        // rustls reports protocol and certificate problems as InvalidData: a client speaking
        // plain HTTP, or one whose certificate the CA did not sign. Worth an operator's look.
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            None
        }
        // Closed or reset before finishing: port scanners and TCP health checks.
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake abandoned");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            None
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use crate::api::{NodeListener, serve_with_handshake_timeout};

    struct Pki {
        server: Arc<ServerConfig>,
        ca_pem: String,
        _files: crate::tlsutil::testing::Files,
    }

    fn pki() -> Pki {
        let files = crate::tlsutil::testing::files();
        let node = crate::tlsutil::NodeTls::load(&files.tls).unwrap();
        Pki {
            server: node.server_config().unwrap(),
            ca_pem: files.ca_pem.clone(),
            _files: files,
        }
    }

    async fn start(pki: &Pki, timeout: Duration) -> (SocketAddr, CancellationToken) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let shutdown = CancellationToken::new();
        let listener = NodeListener::new(tcp, Some(pki.server.clone()));
        tokio::spawn(serve_with_handshake_timeout(
            listener,
            router,
            shutdown.clone(),
            timeout,
        ));
        (addr, shutdown)
    }

    fn client(pki: &Pki) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn silent_and_garbage_clients_do_not_block_others() {
        let pki = pki();
        let (addr, shutdown) = start(&pki, Duration::from_secs(30)).await;
        // One client that connects and says nothing, one that speaks plain HTTP.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let http = client(&pki);
        let answer = http
            .get(format!("https://{addr}/peer"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // ConnectInfo carries the client's address through the TLS listener.
        let peer: SocketAddr = answer.parse().unwrap();
        assert!(
            peer.ip().is_loopback() && peer.port() != addr.port(),
            "{answer}"
        );
        // The plain-HTTP client gets no HTTP answer: its connection is closed.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
            .await
            .expect("the plain client is dropped");
        assert!(!buf.starts_with(b"HTTP/"), "{buf:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_stalled_handshake_is_dropped_after_the_timeout() {
        let pki = pki();
        let (addr, shutdown) = start(&pki, Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("the server closes a silent connection after the handshake timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // And it still serves.
        let status = client(&pki)
            .get(format!("https://{addr}/peer"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        shutdown.cancel();
    }
}
