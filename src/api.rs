//! HTTP plumbing shared by every role: serving an axum router on a listener the caller bound,
//! plain or with TLS (`[tls]`), with graceful shutdown, and rendering `/metrics` in the
//! Prometheus text format.

mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use serve::serve_with_handshake_timeout;
pub use serve::{HEADER_TIMEOUT, MAX_CONNECTIONS};

/// Bound on one TLS handshake on a node listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener the caller bound, and the TLS it serves: HTTPS with a server config, plain HTTP
/// without one.
pub struct NodeListener {
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl NodeListener {
    /// Serves HTTPS with `tls`, or plain HTTP when it is `None`.
    pub fn new(tcp: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> NodeListener {
        NodeListener { tcp, tls }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl From<TcpListener> for NodeListener {
    /// A plain-HTTP listener.
    fn from(tcp: TcpListener) -> NodeListener {
        NodeListener::new(tcp, None)
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish. Handlers can read the peer address (`ConnectInfo<SocketAddr>`), with or without
/// TLS.
pub async fn serve(
    listener: impl Into<NodeListener>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_handshake_timeout(listener.into(), router, shutdown, HANDSHAKE_TIMEOUT).await
}

/// One value for `/metrics`.
pub enum Sample {
    /// A value that goes up and down.
    Gauge(&'static str, &'static str, f64),
    /// A count that only grows.
    Counter(&'static str, &'static str, u64),
}

/// Renders samples as a Prometheus text exposition, their names prefixed with `gobearmon_`,
/// followed by what `more` collects (named in full).
pub fn metrics_response(
    samples: Vec<Sample>,
    more: Option<Box<dyn prometheus_client::collector::Collector>>,
) -> Response {
    let mut root = Registry::default();
    if let Some(more) = more {
        root.register_collector(more);
    }
    let registry = root.sub_registry_with_prefix("gobearmon");
    for s in samples {
        match s {
            Sample::Gauge(name, help, v) => {
                let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
                g.set(v);
                registry.register(name, help, g);
            }
            Sample::Counter(name, help, v) => {
                let c: Counter = Counter::default();
                c.inc_by(v);
                registry.register(name, help, c);
            }
        }
    }
    let mut text = String::new();
    match encode(&mut text, &root) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/ready`: 200 when `ready`, 503 otherwise, with a one-line reason.
pub fn ready_response(ready: bool, why: &str) -> Response {
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}
