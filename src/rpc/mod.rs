//! Node-to-node HTTP: every request signed with the cluster secret ([`sign`]), JSON bodies,
//! bounded by timeouts. [`RpcClient`] sends; [`SignedRoutes::signed`] puts [`verify_layer`]
//! on the axum routes of every role that take signed requests.
//!
//! One body limit, [`MAX_BODY`], holds on both sides: `verify_layer` reads up to it, the
//! routes' JSON extractors accept up to it (axum's own default is 2 MB), and senders split
//! what they send to fit under it.

pub mod sign;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use sign::{
    HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignError, Signed, Signer,
};

/// Largest request body a node accepts, on every signed route.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Routes that take only signed requests.
pub trait SignedRoutes {
    /// Every route added so far refuses with 401 a request whose signature does not verify
    /// ([`verify_layer`]), and its extractors accept bodies up to [`MAX_BODY`], the size
    /// `verify_layer` reads: a body it let through is never refused afterwards as too large.
    /// Serve with `into_make_service_with_connect_info::<SocketAddr>()` (as
    /// [`crate::api::serve`] does) so refusals name the peer.
    fn signed(self, signer: Arc<Signer>) -> Self;
}

impl<S: Clone + Send + Sync + 'static> SignedRoutes for Router<S> {
    fn signed(self, signer: Arc<Signer>) -> Self {
        self.layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(signer, verify_layer))
    }
}

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Nothing answered (connection refused, unreachable, DNS). Retry elsewhere or later.
    #[error("{addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// No answer in time. Retry later.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The node answered with an error status; 401 means the secrets differ or the clocks are
    /// far apart.
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: StatusCode,
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("{addr} sent an unreadable answer: {message}")]
    Decode { addr: String, message: String },
}

impl RpcError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RpcError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Signs and sends JSON requests to other nodes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    signer: Arc<Signer>,
    scheme: &'static str,
}

impl RpcClient {
    /// A client signing as `signer`. With `tls`, requests use https, trust only `[tls] ca`,
    /// and present this node's certificate.
    pub fn new(
        signer: Arc<Signer>,
        tls: Option<&crate::config::TlsConfig>,
    ) -> Result<RpcClient, String> {
        let tls = tls
            .map(crate::tlsutil::NodeTls::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        RpcClient::with_tls(signer, tls.as_ref())
    }

    /// Like [`RpcClient::new`] with the `[tls]` files already read.
    pub fn with_tls(
        signer: Arc<Signer>,
        tls: Option<&crate::tlsutil::NodeTls>,
    ) -> Result<RpcClient, String> {
        crate::tlsutil::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .user_agent(concat!("gobearmon/", env!("CARGO_PKG_VERSION")));
        let scheme = if let Some(tls) = tls {
            let roots = tls
                .ca
                .iter()
                .map(|c| reqwest::Certificate::from_der(c.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("[tls] ca: {e}"))?;
            let identity = reqwest::Identity::from_pem(&tls.identity_pem())
                .map_err(|e| format!("[tls] cert and key as a client identity: {e}"))?;
            builder = builder.tls_certs_only(roots).identity(identity);
            "https"
        } else {
            "http"
        };
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(RpcClient {
            http,
            signer,
            scheme,
        })
    }

    pub fn node(&self) -> &str {
        self.signer.node()
    }

    /// POSTs `body` as JSON to `http(s)://addr/path` and decodes the JSON answer.
    pub async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let bytes = serde_json::to_vec(body).map_err(|e| RpcError::Decode {
            addr: addr.to_string(),
            message: format!("cannot encode request: {e}"),
        })?;
        self.post_bytes(addr, path, bytes, timeout).await
    }

    /// GETs `http(s)://addr/path` (signed) and decodes the JSON answer.
    pub async fn get<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        self.send("GET", addr, path, Vec::new(), timeout).await
    }

    /// Like [`RpcClient::post`] with a body already encoded.
    pub async fn post_bytes<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        self.send("POST", addr, path, bytes, timeout).await
    }

    async fn send<Resp: DeserializeOwned>(
        &self,
        method: &'static str,
        addr: &str,
        path: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let signed = self.signer.sign(method, path, &bytes);
        let url = format!("{}://{addr}{path}", self.scheme);
        let request = if method == "GET" {
            self.http.get(&url)
        } else {
            self.http.post(&url)
        };
        let sent = request
            .timeout(timeout)
            .header("content-type", "application/json")
            .header(HEADER_NODE, &signed.node)
            .header(HEADER_TIMESTAMP, signed.timestamp_ms.to_string())
            .header(HEADER_NONCE, &signed.nonce)
            .header(HEADER_SIGNATURE, &signed.signature)
            .body(bytes)
            .send()
            .await;
        let response = sent.map_err(|e| classify(addr, timeout, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| classify(addr, timeout, &e))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(RpcError::Status {
                addr: addr.to_string(),
                status,
                body: text,
            });
        }
        serde_json::from_slice(&body).map_err(|e| RpcError::Decode {
            addr: addr.to_string(),
            message: e.to_string(),
        })
    }
}

fn classify(addr: &str, timeout: Duration, e: &reqwest::Error) -> RpcError {
    if e.is_timeout() {
        RpcError::Timeout {
            addr: addr.to_string(),
            timeout,
        }
    } else {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RpcError::Unreachable {
            addr: addr.to_string(),
            message,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

fn signed_from(headers: &HeaderMap) -> Option<Signed> {
    Some(Signed {
        node: header(headers, HEADER_NODE)?.to_string(),
        timestamp_ms: header(headers, HEADER_TIMESTAMP)?.parse().ok()?,
        nonce: header(headers, HEADER_NONCE)?.to_string(),
        signature: header(headers, HEADER_SIGNATURE)?.to_string(),
    })
}

/// The sender of a verified request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Sender(pub String);

/// axum middleware: refuses with 401 any request whose signature does not verify, logging the
/// peer's address, and with 413 a body over [`MAX_BODY`]. Put it on routes with
/// [`SignedRoutes::signed`], which also lets their extractors take bodies up to `MAX_BODY`.
pub async fn verify_layer(
    State(signer): State<Arc<Signer>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let (mut parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str())
        .to_string();
    let verdict = match signed_from(&parts.headers) {
        None => {
            signer.note_refused();
            Err(SignError::Malformed)
        }
        Some(signed) => signer
            .verify(parts.method.as_str(), &path, &bytes, &signed)
            .map(|()| signed.node),
    };
    match verdict {
        Ok(node) => {
            parts.extensions.insert(Sender(node));
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(why) => {
            tracing::warn!(%peer, path = %path, reason = %why, "refused an unsigned or badly signed request");
            (StatusCode::UNAUTHORIZED, why.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::tlsutil::{NodeTls, provider, testing};
    use axum::routing::{get, post};
    use axum::{Extension, Json, Router};
    use rustls::server::WebPkiClientVerifier;

    /// A node's client against a listener that requires a client certificate from the CA:
    /// the client trusts the CA, presents its own certificate and signs its requests.
    #[tokio::test]
    async fn a_tls_client_presents_its_certificate_and_signs() {
        let files = testing::files();
        let node = NodeTls::load(&files.tls).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(node.roots.clone(), provider())
            .build()
            .unwrap();
        let strict = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(node.chain.clone(), node.key.clone_key())
            .unwrap();
        let secret = Secret::new("a-secret-of-some-length");
        let server_signer = Arc::new(Signer::new(&secret, "server"));
        let router = Router::new()
            .route(
                "/who",
                get(|Extension(Sender(who)): Extension<Sender>| async move { Json(who) }),
            )
            .signed(server_signer);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, Some(Arc::new(strict)));
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));

        let client =
            RpcClient::with_tls(Arc::new(Signer::new(&secret, "n1")), Some(&node)).unwrap();
        let who: String = client
            .get(&addr, "/who", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(who, "n1");
        // Without `[tls]` the same client speaks plain HTTP, which the listener refuses.
        let plain = RpcClient::with_tls(Arc::new(Signer::new(&secret, "n1")), None).unwrap();
        let err = plain
            .get::<String>(&addr, "/who", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
        shutdown.cancel();
    }

    /// A signed JSON route takes bodies up to `MAX_BODY`, above axum's 2 MB default, and
    /// refuses larger ones with 413 (what a sender splits its batches by).
    #[tokio::test]
    async fn signed_routes_take_json_bodies_up_to_max_body() {
        let secret = Secret::new("a-secret-of-some-length");
        let router = Router::new()
            .route(
                "/len",
                post(|Json(v): Json<Vec<String>>| async move {
                    Json(v.iter().map(String::len).sum::<usize>())
                }),
            )
            .signed(Arc::new(Signer::new(&secret, "server")));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, None);
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));
        let client = RpcClient::with_tls(Arc::new(Signer::new(&secret, "n1")), None).unwrap();
        let t = Duration::from_secs(30);

        // 3 MiB: over the 2 MB an unconfigured `Json` takes.
        let body = vec!["x".repeat(1024 * 1024); 3];
        let len: usize = client.post(&addr, "/len", &body, t).await.unwrap();
        assert_eq!(len, 3 * 1024 * 1024);
        // Just under the limit once encoded (`["` and `"]`).
        let body = vec!["y".repeat(MAX_BODY - 4)];
        let len: usize = client.post(&addr, "/len", &body, t).await.unwrap();
        assert_eq!(len, MAX_BODY - 4);
        // One byte over.
        let body = vec!["z".repeat(MAX_BODY - 3)];
        let err = client
            .post::<_, usize>(&addr, "/len", &body, t)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE), "{err}");
        shutdown.cancel();
    }
}
