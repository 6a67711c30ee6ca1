//! Node-to-node HTTP: every request signed with the sender's own key and every reply signed
//! under the requester's key ([`sign`]), JSON bodies, bounded by timeouts and sizes.
//! [`RpcClient`] sends and refuses replies that do not verify; [`SignedRoutes::signed`] puts
//! [`verify_layer`] on the axum routes of every role that take signed requests, with the
//! [`Allow`] rule of who may call them.
//!
//! Each path has one body limit, [`body_limit`], the same in the client (which refuses to
//! send more) and the server (which refuses to read more).

pub mod sign;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use sign::Sender;
use sign::{
    HEADER_CONTENT, HEADER_KEY, HEADER_NODE, HEADER_NONCE, HEADER_REPLY_NODE,
    HEADER_REPLY_SIGNATURE, HEADER_SIGNATURE, HEADER_TIMESTAMP, KeyKind, SignError, Signed, Signer,
};

/// Largest request body a node accepts, on the paths that carry batches (Raft entries and
/// snapshots, result batches).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest request body on every other path (heartbeats, polls, votes, commands).
pub const SMALL_BODY: usize = 64 * 1024;
/// Largest reply body a client reads; a longer one is refused before its signature is
/// checked (the signature covers the whole body, so it must be read first). Larger than
/// [`MAX_BODY`]: a status or poll answer lists every check.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// Longest a client may take to send a body once its headers are accepted.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The body limit of a path, the same on both sides.
pub fn body_limit(path: &str) -> usize {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        crate::view::network::PATH_APPEND
        | crate::view::network::PATH_SNAPSHOT
        | work::PATH_RESULTS => MAX_BODY,
        _ => SMALL_BODY,
    }
}

/// Who may call a group of signed routes.
#[derive(Debug, Clone)]
pub enum Allow {
    /// Any node whose signature verifies, with its cluster key or its own node key.
    Any,
    /// Only nodes holding the cluster secret.
    Trusted,
    /// Only these node ids, signed with the cluster key (the viewserver members).
    Members(Arc<[String]>),
    /// Only this node itself (its operator, signing with this node's own configuration).
    Own,
}

impl Allow {
    fn permits(&self, sender: &Sender, own: &str) -> bool {
        match self {
            Allow::Any => true,
            Allow::Trusted => sender.trusted,
            Allow::Members(ids) => sender.trusted && ids.contains(&sender.node),
            Allow::Own => sender.node == own,
        }
    }
}

/// Routes that take only signed requests.
pub trait SignedRoutes {
    /// Every route added so far refuses with 401 a request whose signature does not verify or
    /// whose sender `allow` does not admit ([`verify_layer`]), and signs its replies. Serve
    /// with [`crate::api::serve`] so refusals name the peer.
    fn signed(self, signer: Arc<Signer>, allow: Allow) -> Self;
}

/// The state of [`verify_layer`].
#[derive(Clone)]
pub struct Guard {
    signer: Arc<Signer>,
    allow: Allow,
}

impl<S: Clone + Send + Sync + 'static> SignedRoutes for Router<S> {
    fn signed(self, signer: Arc<Signer>, allow: Allow) -> Self {
        // `verify_layer` enforces the per-path limit; the extractors must not refuse less.
        self.layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(
                Guard { signer, allow },
                verify_layer,
            ))
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
    /// The node answered with an error status; 401 means the keys differ, the clocks are far
    /// apart, or this node may not make that call.
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: StatusCode,
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("{addr} sent an unreadable answer: {message}")]
    Decode { addr: String, message: String },
    /// The answer was not signed under this node's key: not from a node holding it, or
    /// altered on the way. Nothing of it is used.
    #[error("{addr} sent a reply that is not signed under this node's key ({why})")]
    Unauthentic { addr: String, why: &'static str },
    /// The reply was larger than [`MAX_REPLY`]; nothing of it is used, and reading stopped
    /// at the limit.
    #[error("{addr} sent a reply over the limit of {limit} bytes")]
    ReplyTooLarge { addr: String, limit: usize },
    /// The request is larger than its path accepts; not sent.
    #[error("request to {addr}{path} of {len} bytes is over the path's limit of {limit}")]
    TooLarge {
        addr: String,
        path: String,
        len: usize,
        limit: usize,
    },
}

impl RpcError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RpcError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Signs and sends JSON requests to other nodes, and checks their replies. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    signer: Arc<Signer>,
    scheme: &'static str,
}

/// Why an [`RpcClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Tls(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

impl RpcClient {
    /// A client signing as `signer`. With `tls`, requests use https, trust only `[tls] ca`,
    /// and present this node's certificate.
    pub fn new(
        signer: Arc<Signer>,
        tls: Option<&crate::config::TlsConfig>,
    ) -> Result<RpcClient, ClientError> {
        let tls = tls
            .map(crate::tlsutil::NodeTls::load)
            .transpose()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        RpcClient::with_tls(signer, tls.as_ref())
    }

    /// Like [`RpcClient::new`] with the `[tls]` files already read.
    pub fn with_tls(
        signer: Arc<Signer>,
        tls: Option<&crate::tlsutil::NodeTls>,
    ) -> Result<RpcClient, ClientError> {
        crate::tlsutil::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gobearmon/", env!("CARGO_PKG_VERSION")));
        let scheme = if let Some(tls) = tls {
            let roots = tls
                .ca
                .iter()
                .map(|c| reqwest::Certificate::from_der(c.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(format!("[tls] ca: {e}")))?;
            let identity = reqwest::Identity::from_pem(&tls.identity_pem()).map_err(|e| {
                ClientError::Tls(format!("[tls] cert and key as a client identity: {e}"))
            })?;
            builder = builder.tls_certs_only(roots).identity(identity);
            "https"
        } else {
            "http"
        };
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(RpcClient {
            http,
            signer,
            scheme,
        })
    }

    pub fn node(&self) -> &str {
        self.signer.node()
    }

    /// The key this client signs with.
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
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
        let limit = body_limit(path);
        if bytes.len() > limit {
            return Err(RpcError::TooLarge {
                addr: addr.to_string(),
                path: path.to_string(),
                len: bytes.len(),
                limit,
            });
        }
        let signed = self.signer.sign(method, addr, path, &bytes);
        let url = format!("{}://{addr}{path}", self.scheme);
        let request = if method == "GET" {
            self.http.get(&url)
        } else {
            self.http.post(&url)
        };
        let mut request = request
            .timeout(timeout)
            .header("content-type", "application/json");
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let sent = request.body(bytes).send().await;
        let response = sent.map_err(|e| classify(addr, timeout, &e))?;
        let status = response.status();
        let responder = header(response.headers(), HEADER_REPLY_NODE)
            .unwrap_or("")
            .to_string();
        let tag = header(response.headers(), HEADER_REPLY_SIGNATURE).map(str::to_string);
        let body = read_capped(response, MAX_REPLY, addr, timeout).await?;
        let reply = Reply {
            status,
            responder,
            tag,
            body,
        };
        self.judge_reply(&signed, addr, path, &reply)
    }

    /// A reply as the caller sees it: refused unless signed by the node asked, then its
    /// status, then its body decoded.
    fn judge_reply<Resp: DeserializeOwned>(
        &self,
        signed: &Signed,
        addr: &str,
        path: &str,
        reply: &Reply,
    ) -> Result<Resp, RpcError> {
        let (status, responder, body) = (reply.status, reply.responder.as_str(), &reply.body[..]);
        let tag = reply.tag.as_deref();
        let authentic = tag.is_some_and(|t| {
            self.signer
                .reply_is_authentic(signed, status.as_u16(), responder, body, t)
        });
        if !authentic {
            // A refusal before the request was authenticated cannot be signed; it is passed
            // on as a refusal, with nothing of its body acted on.
            if matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::PAYLOAD_TOO_LARGE
            ) {
                return Err(RpcError::Status {
                    addr: addr.to_string(),
                    status,
                    body: text_of(body),
                });
            }
            let why = if tag.is_none() {
                "unsigned"
            } else {
                "bad signature"
            };
            self.signer.note_refused_reply(addr, path, why);
            return Err(RpcError::Unauthentic {
                addr: addr.to_string(),
                why,
            });
        }
        if !status.is_success() {
            return Err(RpcError::Status {
                addr: addr.to_string(),
                status,
                body: text_of(body),
            });
        }
        serde_json::from_slice(body).map_err(|e| RpcError::Decode {
            addr: addr.to_string(),
            message: e.to_string(),
        })
    }
}

/// What came back for a request, before it is judged.
struct Reply {
    status: StatusCode,
    /// `HEADER_REPLY_NODE`: who says it answered.
    responder: String,
    /// `HEADER_REPLY_SIGNATURE`, if any.
    tag: Option<String>,
    body: Bytes,
}

/// The reply body, read no further than `limit` bytes: a declared length over it is
/// refused before any of the body is read, a longer stream once it passes the limit.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    addr: &str,
    timeout: Duration,
) -> Result<Bytes, RpcError> {
    let too_large = || RpcError::ReplyTooLarge {
        addr: addr.to_string(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(addr, timeout, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

fn text_of(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
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
        kind: header(headers, HEADER_KEY).and_then(KeyKind::parse)?,
        timestamp_ms: header(headers, HEADER_TIMESTAMP)?.parse().ok()?,
        nonce: header(headers, HEADER_NONCE)?.to_string(),
        content: header(headers, HEADER_CONTENT)?.to_string(),
        signature: header(headers, HEADER_SIGNATURE)?.to_string(),
    })
}

/// The `host:port` a request was addressed to: the Host header (HTTP/1.1), or the URI's
/// authority (HTTP/2).
fn destination(parts: &axum::http::request::Parts) -> Option<String> {
    header(&parts.headers, header::HOST.as_str())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
}

/// axum middleware on signed routes. From the headers alone, before reading the body, it
/// refuses with 401 a request that is unsigned, stale, addressed to another node, signed by a
/// key it cannot know or badly signed, or from a sender the routes' [`Allow`] does not admit;
/// with 413 a body declared over the path's [`body_limit`]. It then reads the body (bounded by
/// the limit and [`BODY_TIMEOUT`]), checks it against its signed digest, hands the request on
/// with its [`Sender`], and signs the reply under the requester's key.
pub async fn verify_layer(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str())
        .to_string();
    let signer = &guard.signer;
    let refuse = |why: &dyn std::fmt::Display| {
        signer.note_refused(peer, &path, why);
        (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
    };
    let Some(signed) = signed_from(&parts.headers) else {
        return refuse(&SignError::Malformed);
    };
    let Some(host) = destination(&parts) else {
        return refuse(&SignError::Malformed);
    };
    let auth = match signer.authenticate(parts.method.as_str(), &host, &path, &signed) {
        Ok(a) => a,
        Err(why) => return refuse(&why),
    };
    if !guard.allow.permits(&auth.sender, signer.node()) {
        return refuse(&format_args!(
            "{} {:?} may not call this path",
            if auth.sender.trusted {
                "node"
            } else {
                "node key of"
            },
            auth.sender.node
        ));
    }
    let responder = signer.node().to_string();
    let signed_reply = |status: StatusCode, body: Bytes| -> Response {
        let tag = auth.sign_reply(status.as_u16(), &responder, &body);
        let mut response = (status, body).into_response();
        insert_reply_headers(response.headers_mut(), &responder, &tag);
        response
    };
    let bytes = match read_body(&parts, body, |why| signer.note_refused(peer, &path, &why)).await {
        Ok(b) => b,
        Err((status, text)) => return signed_reply(status, text),
    };
    if let Err(why) = auth.check_body(&bytes) {
        return refuse(&why);
    }
    // A node proved itself on this connection: admission never sheds it
    // (`crate::api::admit`, rule 2).
    if let Some(mark) = parts.extensions.get::<crate::api::ConnMark>() {
        mark.mark_node();
    }
    parts.extensions.insert(auth.sender.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (mut head, body) = response.into_parts();
    // Replies are this node's own, bounded by what its handlers produce.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(path = %path, error = %e, "cannot read a reply to sign it");
            return signed_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(b"reply could not be signed\n"),
            );
        }
    };
    let tag = auth.sign_reply(head.status.as_u16(), &responder, &body);
    insert_reply_headers(&mut head.headers, &responder, &tag);
    Response::from_parts(head, Body::from(body))
}

/// The body of a request, within its path's [`body_limit`] and [`BODY_TIMEOUT`]; or the
/// refusal to sign and send, after telling `refused` why.
async fn read_body(
    parts: &axum::http::request::Parts,
    body: Body,
    refused: impl Fn(&'static str),
) -> Result<Bytes, (StatusCode, Bytes)> {
    let limit = body_limit(parts.uri.path());
    let over = || {
        refused("body over the path's limit");
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Bytes::from(format!("body over this path's limit of {limit} bytes\n")),
        )
    };
    let declared =
        header(&parts.headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(over());
    }
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(over()),
        Err(_) => {
            refused("body not sent in time");
            Err((
                StatusCode::REQUEST_TIMEOUT,
                Bytes::from_static(b"body not sent in time\n"),
            ))
        }
    }
}

fn insert_reply_headers(headers: &mut HeaderMap, responder: &str, tag: &str) {
    if let (Ok(node), Ok(tag)) = (HeaderValue::from_str(responder), HeaderValue::from_str(tag)) {
        headers.insert(HEADER_REPLY_NODE, node);
        headers.insert(HEADER_REPLY_SIGNATURE, tag);
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
        let server_signer = Arc::new(Signer::cluster(&secret, "server"));
        let router = Router::new()
            .route(
                "/who",
                get(|Extension(who): Extension<Sender>| async move { Json(who.node) }),
            )
            .signed(server_signer, Allow::Any);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, Some(Arc::new(strict)));
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));

        let client =
            RpcClient::with_tls(Arc::new(Signer::cluster(&secret, "n1")), Some(&node)).unwrap();
        let who: String = client
            .get(&addr, "/who", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(who, "n1");
        // Without `[tls]` the same client speaks plain HTTP, which the listener refuses.
        let plain = RpcClient::with_tls(Arc::new(Signer::cluster(&secret, "n1")), None).unwrap();
        let err = plain
            .get::<String>(&addr, "/who", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
        shutdown.cancel();
    }

    /// A reply is read no further than MAX_REPLY: not a declared huge length, not an endless
    /// stream.
    #[tokio::test]
    async fn replies_over_the_limit_are_refused_before_their_signature_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A hostile server: one reply declares a huge length, the other streams without end.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for declared in [true, false] {
                let (mut s, _) = tcp.accept().await.unwrap();
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let start: &[u8] = if declared {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100000000000\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                };
                tokio::spawn(async move {
                    let _ = s.write_all(start).await;
                    let chunk = format!("100000\r\n{}\r\n", "x".repeat(0x100000));
                    while s.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        let signer = Arc::new(Signer::cluster(
            &Secret::new("a-secret-of-some-length"),
            "n1",
        ));
        let client = RpcClient::with_tls(signer, None).unwrap();
        for _ in 0..2 {
            let err = client
                .get::<serde_json::Value>(&addr, "/status", Duration::from_secs(60))
                .await
                .unwrap_err();
            assert!(
                matches!(err, RpcError::ReplyTooLarge { limit, .. } if limit == MAX_REPLY),
                "{err}"
            );
        }
    }

    /// Each path's body limit holds on both sides: a batch path takes JSON bodies up to
    /// `MAX_BODY` (above axum's 2 MB default); a client refuses to send more than a path
    /// takes, and a server refuses a larger declared body with 413 before reading it.
    #[tokio::test]
    async fn body_limits_per_path_hold_in_client_and_server() {
        let secret = Secret::new("a-secret-of-some-length");
        let len = |Json(v): Json<Vec<String>>| async move {
            Json(v.iter().map(String::len).sum::<usize>())
        };
        let router = Router::new()
            .route(work::PATH_RESULTS, post(len))
            .route("/small", post(len))
            .signed(Arc::new(Signer::cluster(&secret, "server")), Allow::Any);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, None);
        let connections = listener.stats();
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));
        let signer = Arc::new(Signer::cluster(&secret, "n1"));
        let client = RpcClient::with_tls(signer.clone(), None).unwrap();
        let t = Duration::from_secs(30);
        let path = work::PATH_RESULTS;

        // 3 MiB: over the 2 MB an unconfigured `Json` takes.
        let body = vec!["x".repeat(1024 * 1024); 3];
        let n: usize = client.post(&addr, path, &body, t).await.unwrap();
        assert_eq!(n, 3 * 1024 * 1024);
        // The verified request made its connection a node's: admission never sheds it.
        assert_eq!(
            connections.nodes.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            connections
                .open_unauthenticated
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // Just under the limit once encoded (`["` and `"]`).
        let body = vec!["y".repeat(MAX_BODY - 4)];
        let n: usize = client.post(&addr, path, &body, t).await.unwrap();
        assert_eq!(n, MAX_BODY - 4);
        // One byte over: not sent.
        let refused = async |path: &str, body: &Vec<String>, limit: usize| {
            let err = client
                .post::<_, usize>(&addr, path, body, t)
                .await
                .unwrap_err();
            assert!(
                matches!(err, RpcError::TooLarge { limit: l, .. } if l == limit),
                "{err}"
            );
        };
        refused(path, &vec!["z".repeat(MAX_BODY - 3)], MAX_BODY).await;
        let body = vec!["s".repeat(SMALL_BODY)];
        refused("/small", &body, SMALL_BODY).await;
        // A sender that ignores the limit: refused by its declared length.
        let bytes = serde_json::to_vec(&body).unwrap();
        let signed = signer.sign("POST", &addr, "/small", &bytes);
        let mut request = reqwest::Client::new().post(format!("http://{addr}/small"));
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let status = request.body(bytes).send().await.unwrap().status();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        shutdown.cancel();
    }
}
