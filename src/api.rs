//! HTTP plumbing shared by every role: serving an axum router on a listener the caller bound,
//! plain or with TLS (`[tls]`), with graceful shutdown, and rendering `/metrics` in the
//! Prometheus text format.

mod admit;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::config::ListenConfig;

pub use admit::{ListenerStats, NODE_IDLE_TIMEOUT};
pub use serve::{BodyTimeout, ConnMark, MAX_HEADER_BYTES};

/// A listener the caller bound, the TLS it serves (HTTPS with a server config, plain HTTP
/// without one) and what it admits (`[listen]`).
pub struct NodeListener {
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenConfig,
    stats: Arc<ListenerStats>,
    /// What the listener serves, for the admin notice ("the controller API").
    name: String,
    /// Where connection pressure is reported to the admin.
    notices: Option<UnboundedSender<(String, String)>>,
}

impl NodeListener {
    /// Serves HTTPS with `tls`, or plain HTTP when it is `None`, with the default `[listen]`
    /// limits.
    pub fn new(tcp: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> NodeListener {
        NodeListener {
            tcp,
            tls,
            limits: ListenConfig::default(),
            stats: Arc::default(),
            name: "a listener".into(),
            notices: None,
        }
    }

    /// Admits connections by `limits`.
    pub fn with_limits(mut self, limits: ListenConfig) -> NodeListener {
        self.limits = limits;
        self
    }

    /// Names the listener `name` and reports connection pressure on `notices` (the node's
    /// admin notices).
    pub fn reporting(
        mut self,
        name: &str,
        notices: UnboundedSender<(String, String)>,
    ) -> NodeListener {
        self.name = name.to_string();
        self.notices = Some(notices);
        self
    }

    /// The listener's connection counters (for `/metrics`).
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
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
/// finish. Handlers can read the peer address (`ConnectInfo<SocketAddr>`) and the
/// connection's [`ConnMark`], with or without TLS.
pub async fn serve(
    listener: impl Into<NodeListener>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve_listener(listener.into(), router, shutdown).await
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
    more: Vec<Box<dyn prometheus_client::collector::Collector>>,
) -> Response {
    let mut root = Registry::default();
    for more in more {
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

/// The connection counters of a node's listeners, as `gobearmon_listener_*` series labelled
/// with the listener's name.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics(pub Vec<(String, Arc<ListenerStats>)>);

impl ListenerMetrics {
    /// Adds `listener`'s counters under `name`.
    pub fn add(&mut self, name: &str, listener: &NodeListener) {
        self.0.push((name.to_string(), listener.stats()));
    }
}

impl prometheus_client::collector::Collector for ListenerMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use std::sync::atomic::Ordering::Relaxed;
        if self.0.is_empty() {
            return Ok(());
        }
        type Read = fn(&ListenerStats) -> u64;
        let counters: [(&str, &str, Read); 5] = [
            (
                "gobearmon_listener_refused",
                "Connections closed at once: their source address held [listen] max_per_source unauthenticated connections.",
                |s| s.refused_source.load(Relaxed),
            ),
            (
                "gobearmon_listener_shed",
                "Unauthenticated connections closed to make room for a newcomer ([listen] max_connections, or out of descriptors).",
                |s| s.shed.load(Relaxed),
            ),
            (
                "gobearmon_listener_head_timeouts",
                "Connections closed for sending no complete request head within [listen] head_timeout.",
                |s| s.head_timeouts.load(Relaxed),
            ),
            (
                "gobearmon_listener_idle_closed",
                "Connections closed for idling, or making no progress, beyond their idle limit.",
                |s| s.idle_closed.load(Relaxed),
            ),
            (
                "gobearmon_listener_node_connections",
                "Connections that proved they are a node's (signed request or CA-signed client certificate).",
                |s| s.nodes.load(Relaxed),
            ),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (listener, stats) in &self.0 {
                let labels = [("listener", listener.as_str())];
                ConstCounter::new(read(stats)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut open = encoder.encode_descriptor(
            "gobearmon_listener_open_connections",
            "Open connections, by whether they proved they are a node's.",
            None,
            MetricType::Gauge,
        )?;
        for (listener, stats) in &self.0 {
            for (kind, n) in [
                ("unauthenticated", stats.open_unauthenticated.load(Relaxed)),
                ("node", stats.open_nodes.load(Relaxed)),
            ] {
                let labels = [("listener", listener.as_str()), ("kind", kind)];
                ConstGauge::new(n as i64).encode(open.encode_family(&labels)?)?;
            }
        }
        Ok(())
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
