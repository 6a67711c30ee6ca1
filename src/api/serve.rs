//! The accept loop of every node listener: plain HTTP or TLS, one task per connection, and
//! the limits that keep hostile clients from starving the others:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once per listener (beyond, the kernel's
//!   backlog holds new ones until a slot frees);
//! - a TLS handshake bounded by a timeout, run in the connection's own task;
//! - request headers read within [`HEADER_TIMEOUT`] (hyper's `header_read_timeout`), so a
//!   client sending a byte a second is dropped; header size capped at [`MAX_HEADER_BYTES`];
//! - bodies are read only by handlers and [`crate::rpc::verify_layer`], which authenticates
//!   the headers first and bounds the body by size and time.
//!
//! On shutdown, accepting stops, every connection finishes its in-flight requests
//! (`graceful_shutdown`), and the loop waits at most [`DRAIN_TIMEOUT`] for them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::NodeListener;

/// Connections one listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) read.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for open connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long accepting pauses after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

pub(crate) async fn serve_with_handshake_timeout(
    listener: NodeListener,
    router: Router,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);
    let acceptor = listener.tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept a connection; pausing accepts for 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            Conn {
                builder: builder.clone(),
                router: router.clone(),
                peer,
                shutdown: shutdown.clone(),
                _slot: slot,
            },
            stream,
            acceptor.clone(),
            handshake_timeout,
        ));
    }
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// What one connection's task holds.
struct Conn {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    peer: SocketAddr,
    shutdown: CancellationToken,
    /// Released when the connection ends.
    _slot: OwnedSemaphorePermit,
}

async fn connection(
    conn: Conn,
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
) {
    let Some(acceptor) = acceptor else {
        return http(conn, stream).await;
    };
    let peer = conn.peer;
    let handshake = tokio::select! {
        _ = conn.shutdown.cancelled() => return,
        h = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => h,
    };
    match handshake {
        Ok(Ok(tls)) => http(conn, tls).await,
        // rustls reports protocol and certificate problems as InvalidData: a client speaking
        // plain HTTP, or one whose certificate the CA did not sign. Worth an operator's look.
        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
        }
        // Closed or reset before finishing: port scanners and TCP health checks.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake abandoned"),
        Err(_) => tracing::debug!(%peer, timeout = ?handshake_timeout, "TLS handshake timed out"),
    }
}

async fn http<IO>(conn: Conn, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let router = conn.router.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let served = conn
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = conn.shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and garbage: the client's problem, not the node's.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
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

    use crate::api::NodeListener;
    use rustls::ServerConfig;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

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
