//! The accept loop of every node listener: plain HTTP or TLS, one task per connection, and
//! the limits that keep hostile clients from starving the others ([`super::admit`] decides
//! who gets a slot; this module enforces the deadlines):
//!
//! - every connection is accepted and admitted at once, or closed at once (its source is at
//!   its cap); a full listener sheds its least recently active unauthenticated connection;
//! - from accept to a complete first request head (TLS handshake, HTTP/1-or-2 sniff,
//!   headers) at most `[listen] head_timeout`; after that, a connection with no request in
//!   flight for `idle_timeout` (nodes: [`super::admit::NODE_IDLE_TIMEOUT`]), or a request
//!   making no progress in either direction for as long, is closed. One watchdog per
//!   connection enforces both, for HTTP/1 and HTTP/2 alike;
//! - every request body is read within `body_timeout` ([`Deadline`]), whichever handler
//!   reads it; header size is capped at [`MAX_HEADER_BYTES`];
//! - a TLS client certificate signed by the cluster CA, or a request whose node signature
//!   verifies ([`ConnMark::mark_node`], called by [`crate::rpc::verify_layer`]), makes the
//!   connection a node's: never shed, outside the unauthenticated counts;
//! - running out of file descriptors sheds an unauthenticated connection instead of pausing
//!   the listener;
//! - shedding and refusals are counted ([`ListenerStats`]) and reach the admin as a notice.
//!
//! On shutdown, accepting stops, every connection finishes its in-flight requests
//! (`graceful_shutdown`), and the loop waits at most [`DRAIN_TIMEOUT`] for them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::NodeListener;
use super::admit::{Admission, ConnState, InFlight, Verdict};
use crate::config::ListenConfig;

/// Largest request head (request line and headers) read.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for open connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection closed by its watchdog may take to say goodbye (an HTTP/2 GOAWAY).
const GOODBYE: Duration = Duration::from_secs(1);
/// How long accepting pauses after an error such as running out of file descriptors, when
/// no connection could be shed to free one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Shortest time between two admin notices of one listener about connection pressure (the
/// notifier itself rate-limits per subject by `admin_interval`).
const PRESSURE_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// A handle on the connection a request came on, in the request's extensions: a handler that
/// authenticates a node (the RPC signature check) marks the connection as a node's.
#[derive(Clone)]
pub struct ConnMark(Arc<ConnState>);

impl ConnMark {
    /// The request came from a node: its connection is never shed and may idle longer.
    pub fn mark_node(&self) {
        self.0.mark_node();
    }
}

/// What every connection task of one listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    limits: ListenConfig,
    acceptor: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    pressure: Pressure,
}

pub(crate) async fn serve_listener(
    listener: NodeListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let limits = listener.limits;
    let admission = Admission::with_stats(limits, listener.stats.clone());
    let pressure = Pressure::new(&listener);
    let shared = Arc::new(Shared {
        builder: builder(),
        router,
        limits,
        acceptor: listener.tls.map(TlsAcceptor::from),
        shutdown: shutdown.clone(),
        pressure,
    });
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, most likely: free one from an unauthenticated client
                // rather than stop serving the nodes.
                if admission.shed_least_active() {
                    shared.pressure.noticed(&admission);
                    continue;
                }
                tracing::error!(error = %e, "cannot accept a connection; pausing accepts");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(_) => {
                // Dropped: closed at once. The source can only crowd itself out.
                shared.pressure.noticed(&admission);
                continue;
            }
        };
        if admission.stats.shed.load(Ordering::Relaxed) > 0 {
            shared.pressure.noticed(&admission);
        }
        let _ = stream.set_nodelay(true);
        let state = ticket.state().clone();
        let io = Tracked {
            inner: stream,
            state: state.clone(),
        };
        let shared = shared.clone();
        connections.spawn(async move {
            connection(&shared, &state, peer, io).await;
            drop(ticket);
        });
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

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Hyper's own header timeout is off: the connection's watchdog bounds the head, from the
    // accept on, for both protocols.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(64);
    builder
}

/// One connection, from accept to close: the TLS handshake (if any), then HTTP, each raced
/// against the watchdog, the shed signal and shutdown.
async fn connection(shared: &Shared, state: &Arc<ConnState>, peer: SocketAddr, io: Tracked) {
    let Some(acceptor) = &shared.acceptor else {
        return http(shared, state, peer, io).await;
    };
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = state.shed().cancelled() => return,
        v = watch(state, &shared.limits) => return closed(state, v, peer),
        h = acceptor.accept(io) => h,
    };
    match handshake {
        Ok(tls) => {
            // The server config verifies client certificates against the cluster CA: one
            // that is present was signed by it, so this is a node.
            if tls.get_ref().1.peer_certificates().is_some() {
                state.mark_node();
            }
            http(shared, state, peer, tls).await
        }
        // rustls reports protocol and certificate problems as InvalidData: a client speaking
        // plain HTTP, or one whose certificate the CA did not sign. Worth an operator's look.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
        }
        // Closed or reset before finishing: port scanners and TCP health checks.
        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake abandoned"),
    }
}

async fn http<IO>(shared: &Shared, state: &Arc<ConnState>, peer: SocketAddr, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = shared.router.clone();
    let conn = state.clone();
    let body_timeout = shared.limits.body_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = conn.request_started();
        let mut request = request.map(|b| Body::new(Deadline::new(Body::new(b), body_timeout)));
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ConnMark(conn.clone()));
        let answered = router.clone().oneshot(request);
        async move {
            let response = answered.await?;
            Ok::<_, std::convert::Infallible>(response.map(|b| {
                Body::new(Guarded {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let served = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = shared.shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
        _ = state.shed().cancelled() => return,
        v = watch(state, &shared.limits) => {
            closed(state, v, peer);
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GOODBYE, served).await;
            return;
        }
    };
    if let Err(e) = result {
        // Resets and garbage: the client's problem, not the node's.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves when the connection has outlived its limits.
async fn watch(state: &ConnState, limits: &ListenConfig) -> Verdict {
    loop {
        match state.verdict(limits) {
            Verdict::Keep(wait) => tokio::time::sleep(wait).await,
            v => return v,
        }
    }
}

/// Counts a connection the watchdog closes.
fn closed(state: &ConnState, verdict: Verdict, peer: SocketAddr) {
    let stats = state.stats();
    match verdict {
        Verdict::HeadTimeout => stats.head_timeouts.fetch_add(1, Ordering::Relaxed),
        Verdict::Idle | Verdict::Keep(_) => stats.idle_closed.fetch_add(1, Ordering::Relaxed),
    };
    tracing::debug!(%peer, ?verdict, "connection closed by its watchdog");
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Tells the admin, at most once per [`PRESSURE_NOTICE_EVERY`] per listener, that a
/// listener sheds or refuses connections.
struct Pressure {
    what: String,
    addr: String,
    notices: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
    last: Mutex<Option<Instant>>,
}

impl Pressure {
    fn new(listener: &NodeListener) -> Pressure {
        Pressure {
            what: listener.name.clone(),
            addr: listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            notices: listener.notices.clone(),
            last: Mutex::new(None),
        }
    }

    fn noticed(&self, admission: &Admission) {
        let Some(notices) = &self.notices else { return };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < PRESSURE_NOTICE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let s = &admission.stats;
        let l = admission.limits();
        let (subject, body) = crate::notify::text::listener_pressure(
            &self.what,
            &self.addr,
            crate::notify::text::PressureCounts {
                refused: s.refused_source.load(Ordering::Relaxed),
                shed: s.shed.load(Ordering::Relaxed),
                open: s.open_unauthenticated.load(Ordering::Relaxed),
                nodes: s.open_nodes.load(Ordering::Relaxed),
                max_connections: l.max_connections,
                max_per_source: l.max_per_source,
            },
        );
        tracing::warn!(listener = %self.what, addr = %self.addr, "{subject}");
        let _ = notices.send((subject, body));
    }
}

/// The connection's stream, noting each byte read or written as activity (for shedding the
/// least active connection, and the no-progress limit).
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error of a request body not read in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once `limit` has passed since the request arrived, whoever
/// reads it (an extractor, a form, the RPC layer).
struct Deadline {
    inner: Body,
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Body, limit: Duration) -> Deadline {
        Deadline {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`InFlight`] until it has been sent.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use crate::api::{ListenerStats, NodeListener};
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
        let limits = ListenConfig {
            head_timeout: timeout,
            ..ListenConfig::default()
        };
        let listener = NodeListener::new(tcp, Some(pki.server.clone())).with_limits(limits);
        tokio::spawn(serve_listener(listener, router, shutdown.clone()));
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

    /// A plain listener with `limits`: `/peer`, `/node` (marks its connection a node's) and
    /// `/echo` (answers the body's length).
    async fn start_plain(
        limits: ListenConfig,
    ) -> (SocketAddr, CancellationToken, Arc<ListenerStats>) {
        raise_fd_limit();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/node",
                get(
                    |axum::Extension(mark): axum::Extension<ConnMark>| async move {
                        mark.mark_node();
                        "node"
                    },
                ),
            )
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body.len().to_string() }),
            );
        let shutdown = CancellationToken::new();
        let listener = NodeListener::new(tcp, None).with_limits(limits);
        let stats = listener.stats();
        tokio::spawn(serve_listener(listener, router, shutdown.clone()));
        (addr, shutdown, stats)
    }

    fn raise_fd_limit() {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
            l.rlim_cur = l.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
        assert!(
            l.rlim_cur >= 8192,
            "the test needs 8192 open files, the hard limit is {}",
            l.rlim_cur
        );
    }

    /// A connection to `addr` from the loopback address `source`.
    async fn connect_from(source: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        socket.connect(addr).await
    }

    /// `GET path` on `stream` (HTTP/1.1, keep-alive): the response head's status line, or
    /// `None` when the server closed the connection or said nothing within 5 s.
    async fn get_on(stream: &mut TcpStream, path: &str) -> Option<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.lines()
            .next()
            .filter(|l| l.starts_with("HTTP/"))
            .map(str::to_string)
    }

    /// Waits up to `limit` for the server to close `stream`; true when it did.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let until = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    #[tokio::test]
    async fn idle_connections_beyond_a_sources_cap_do_not_freeze_the_listener() {
        let (addr, shutdown, stats) = start_plain(ListenConfig::default()).await;
        // 1,030 connections that send nothing, from a stranger's address.
        let mut idle = Vec::new();
        for _ in 0..1030 {
            idle.push(connect_from([127, 0, 0, 2], addr).await.unwrap());
        }
        // Another address is served at once, over a new connection.
        let mut other = connect_from([127, 0, 0, 1], addr).await.unwrap();
        assert_eq!(
            get_on(&mut other, "/peer").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        // The stranger's address got its cap's worth; the rest were closed at once.
        let cap = ListenConfig::default().max_per_source as u64;
        testkit_poll(|| stats.refused_source.load(Ordering::Relaxed) >= 1030 - cap).await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_full_listener_sheds_idle_strangers_and_keeps_nodes() {
        let limits = ListenConfig {
            max_connections: 64,
            ..ListenConfig::default()
        };
        let (addr, shutdown, stats) = start_plain(limits).await;
        let mut node = connect_from([127, 0, 0, 1], addr).await.unwrap();
        assert_eq!(
            get_on(&mut node, "/node").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        // 300 idle connections from ten addresses, each under its source cap.
        let mut idle = Vec::new();
        for i in 0..300 {
            let source = [127, 0, 1, 2 + (i % 10) as u8];
            idle.push(connect_from(source, addr).await.unwrap());
        }
        // A newcomer is served, and so is the node's old connection.
        let mut fresh = connect_from([127, 0, 0, 3], addr).await.unwrap();
        assert_eq!(
            get_on(&mut fresh, "/peer").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(
            get_on(&mut node, "/peer").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert!(stats.shed.load(Ordering::Relaxed) >= 300 - 64, "{stats:?}");
        // The oldest idle ones were closed.
        assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn heads_bodies_and_idle_connections_have_deadlines() {
        let limits = ListenConfig {
            head_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            body_timeout: Duration::from_millis(300),
            ..ListenConfig::default()
        };
        let (addr, shutdown, stats) = start_plain(limits).await;
        // A head sent a byte at a time, too slowly: closed at the head deadline, however
        // active.
        let mut slow_head = TcpStream::connect(addr).await.unwrap();
        let drip = async {
            for b in b"GET /peer HTTP/1.1\r\nHost: x\r\n".iter() {
                if slow_head.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drip).await;
        assert!(closed_within(&mut slow_head, Duration::from_secs(5)).await);
        // An HTTP/2 client that sends its preface and settings, then nothing.
        let mut h2 = TcpStream::connect(addr).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        assert!(closed_within(&mut h2, Duration::from_secs(5)).await);
        // A body announced and never sent: the handler's read fails, the request ends.
        let mut slow_body = TcpStream::connect(addr).await.unwrap();
        slow_body
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nab")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), slow_body.read(&mut buf))
            .await
            .expect("an answer once the body deadline passed")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 4") || head.starts_with("HTTP/1.1 5"),
            "{head}"
        );
        // Keep-alive: served, then closed after the idle limit.
        let mut keep = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            get_on(&mut keep, "/peer").await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert!(closed_within(&mut keep, Duration::from_secs(5)).await);
        assert!(
            stats.head_timeouts.load(Ordering::Relaxed) >= 2,
            "{stats:?}"
        );
        assert!(stats.idle_closed.load(Ordering::Relaxed) >= 1, "{stats:?}");
        shutdown.cancel();
    }

    /// Polls `f` every 10 ms for up to 5 s.
    async fn testkit_poll(f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met within 5 s");
    }
}
