//! An axum HTTP server (optionally over rustls) that records every request and answers by
//! path:
//!
//! | path | answer |
//! |---|---|
//! | `/ok` | 200 `OK service healthy` |
//! | `/status/N` | status N, body `status N` |
//! | `/text/T` | 200 with body T |
//! | `/slow` | 200 after 2 s |
//! | `/hang` | never answers (120 s) |
//! | `/huge` | 200 with an endless body of `x` |
//! | `/late/N` | 200 with N KiB of `x`, then `READY` |
//! | `/json` | 200 with [`JSON_DOC`] as `application/json` |
//! | `/redirect` | 302 to `/ok`; `/redirect-503` 302 to `/status/503`; `/loop` 302 to itself |
//! | anything else | 404 |

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::certs::ServerCert;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A running server; stops on drop.
pub struct HttpServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// HTTPS only: the SNI of each completed handshake (`None` when the client sent none).
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HttpServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The last request to `path`.
    pub fn last(&self, path: &str) -> Recorded {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request to {path} recorded"))
    }
}

/// The `/json` document.
pub const JSON_DOC: &str = r#"{"status":"ok","queue":{"depth":7},"version":"1.2.3","items":[{"state":"up"},{"state":"down"}]}"#;

fn router(shared: Shared) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    shared.requests.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        body,
    });
    let redirect =
        |to: &str| (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response();
    match path.as_str() {
        "/ok" => "OK service healthy\n".into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "slow but fine\n".into_response()
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            "too late\n".into_response()
        }
        "/huge" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let body = stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            Body::from_stream(body).into_response()
        }
        "/json" => ([(header::CONTENT_TYPE, "application/json")], JSON_DOC).into_response(),
        "/redirect" => redirect("/ok"),
        "/redirect-503" => redirect("/status/503"),
        "/loop" => redirect("/loop"),
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("status {code}\n")).into_response()
        }
        p if p.starts_with("/text/") => p["/text/".len()..].to_owned().into_response(),
        p if p.starts_with("/late/") => {
            let kib: usize = p["/late/".len()..].parse().unwrap_or(0);
            let mut body = vec![b'x'; kib * 1024];
            body.extend_from_slice(b"READY");
            body.into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no route\n").into_response(),
    }
}

/// Plain HTTP on 127.0.0.1, port chosen by the OS.
pub async fn start_http() -> HttpServer {
    start_http_on("127.0.0.1:0").await
}

/// Plain HTTP on `bind` (`ip:port`).
pub async fn start_http_on(bind: &str) -> HttpServer {
    let listener = TcpListener::bind(bind).await.expect("bind http");
    let addr = listener.local_addr().unwrap();
    let shared = Shared::default();
    let requests = shared.requests.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router(shared)).await;
    });
    HttpServer {
        addr,
        requests,
        sni: Arc::default(),
        tasks: vec![task],
    }
}

/// HTTPS on 127.0.0.1 presenting `cert`; records the SNI of each handshake.
pub async fn start_https(cert: ServerCert) -> HttpServer {
    start_https_with(cert, rustls::DEFAULT_VERSIONS).await
}

/// HTTPS on `bind` (`ip:port`) presenting `cert`.
pub async fn start_https_on(bind: &str, cert: ServerCert) -> HttpServer {
    start_https_bound(bind, cert, rustls::DEFAULT_VERSIONS).await
}

/// HTTPS speaking only `versions`. The certificate is presented as it is, never parsed
/// (rustls's own key check cannot read X.509 v1), so a key that does not match it is served
/// too.
pub async fn start_https_with(
    cert: ServerCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> HttpServer {
    start_https_bound("127.0.0.1:0", cert, versions).await
}

async fn start_https_bound(
    bind: &str,
    cert: ServerCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> HttpServer {
    gobearmon::tlsutil::install_default_provider();
    let provider = gobearmon::tlsutil::provider();
    let signer = provider
        .key_provider
        .load_private_key(cert.key)
        .expect("server key");
    let certified = rustls::sign::CertifiedKey::new(cert.chain, signer);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind(bind).await.expect("bind https");
    let addr = tcp.local_addr().unwrap();
    let sni: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let (tx, rx) = mpsc::channel(64);
    let sni_log = sni.clone();
    // Handshakes run in their own tasks so a stalled client cannot block the others.
    let accept_task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let sni_log = sni_log.clone();
            tokio::spawn(async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                {
                    let name = tls.get_ref().1.server_name().map(str::to_owned);
                    sni_log.lock().unwrap().push(name);
                    let _ = tx.send((tls, peer)).await;
                }
            });
        }
    });
    let shared = Shared::default();
    let requests = shared.requests.clone();
    let serve_task = tokio::spawn(async move {
        let listener = TlsListener { rx, addr };
        let _ = axum::serve(listener, router(shared)).await;
    });
    HttpServer {
        addr,
        requests,
        sni,
        tasks: vec![accept_task, serve_task],
    }
}

struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
