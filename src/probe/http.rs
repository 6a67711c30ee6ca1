//! The `http` check: one request with reqwest over rustls (ring).
//!
//! Like gobearmon: User-Agent `gobearmon` (a header may override it), `Accept-Encoding: gzip`
//! with transparent decoding, no proxy from the environment, a fresh connection per run (no
//! idle connections are kept), up to 10 redirects, the status checked before the body, and
//! without expectations any HTTP answer is online. Fixed: the body goes out with
//! `Content-Length`, a `Host` header overrides the host whatever its case, the body read for
//! `expect_substring` is capped at [`BODY_CAP`], and `follow_redirects: false` judges the
//! first answer. With `insecure`, any certificate is accepted (X.509 v1 included) but the
//! handshake is still authenticated against the presented key (`anycert.rs`). An https
//! answer reports its leaf certificate's expiry, names and issuer in the details, and every
//! answer the run's phases (`details.timing`, marked by the client's hooks in `timing.rs`).

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;
use tokio::time::{Instant, timeout_at};

use super::addrs;
use super::addrs::IpFamily;
use super::net::{deadline_in, io_text};
use super::outcome::{Details, Finding, ProbeError, is_local_exhaustion, online_within};
use super::timing::{self, TimedConnectLayer, TimedResolver, TlsStartMark};
use crate::notify::redact;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::addrs::IpPolicy;
use super::gojson::Fields;
use super::json::JsonCondition;
use super::params::{
    clamp_response_ms, clamp_timeout, clamp_timeout_secs, ip_policy, max_response_ms,
};

/// `http`: one request; see `http.rs` for how it is sent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSpec {
    pub url: String,
    /// `GET`, or `POST` when a body is set and no method is given.
    pub method: String,
    /// Sent (with `Content-Length`) when not empty.
    pub body: String,
    /// Request headers in order; names are unique case-insensitively (a later key replaced
    /// an earlier one, like Go's `Header.Set`). `Host` overrides the request's host.
    pub headers: Vec<(String, String)>,
    /// Whole exchange (connect, TLS, redirects, headers, body), clamped 3..=30 s.
    pub timeout_secs: u64,
    /// Accept any certificate.
    pub insecure: bool,
    /// Basic auth when not empty; it replaces an `Authorization` header.
    pub username: String,
    pub password: String,
    /// When not 0, the final status must equal it.
    pub expect_status: i64,
    /// When not empty, the (capped) body must contain it.
    pub expect_substring: String,
    /// Follow up to 10 redirects (default); `false` judges the first answer.
    pub follow_redirects: bool,
    /// Which of the URL host's addresses are requested (`ip_policy`).
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// `expect_json`: conditions on the JSON body, all of which must hold.
    #[serde(default)]
    pub expect_json: Vec<JsonCondition>,
    /// When set, response headers (after any redirects) later than this many ms fail.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
    /// `url` and `method` parsed once, by [`HttpSpec::validate`], which every definition
    /// goes through (a row parsed, a spec a peer sent). Not sent: a peer's copy parses its own.
    #[serde(skip)]
    target: Target,
}

/// What a run requests, parsed from `url` and `method` when the spec is loaded. A URL or
/// method that cannot be used still loads: each run reports it (Go's wording), as before.
#[derive(Clone, Debug, Default)]
enum Target {
    /// Not parsed yet: a spec built without [`HttpSpec::validate`]; runs parse it themselves.
    #[default]
    Unparsed,
    Parsed(Result<(reqwest::Url, reqwest::Method), String>),
}

/// A target is a function of `url` and `method`, which [`HttpSpec`]'s equality compares.
impl PartialEq for Target {
    fn eq(&self, _: &Target) -> bool {
        true
    }
}

/// The URL and method of a request, or the message of a request that cannot be made
/// (Go's wording).
fn parse_target(url: &str, method: &str) -> Result<(reqwest::Url, reqwest::Method), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!(
            "error creating HTTP request: parse \"{}\": {e}",
            redact::message_url(url)
        )
    })?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
        format!("error creating HTTP request: net/http: invalid method \"{method}\"")
    })?;
    Ok((parsed, method))
}

impl HttpSpec {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<HttpSpec, String> {
        let url = f.string("url")?.unwrap_or_default();
        let method = f.string("method")?.unwrap_or_default();
        let body = f.string("body")?.unwrap_or_default();
        let raw_headers = f.string_map("headers")?.unwrap_or_default();
        let timeout = f.int("timeout")?.unwrap_or(0);
        let insecure = f.bool("insecure")?.unwrap_or(false);
        let username = f.string("username")?.unwrap_or_default();
        let password = f.string("password")?.unwrap_or_default();
        let expect_status = f.int("expect_status")?.unwrap_or(0);
        let expect_substring = f.string("expect_substring")?.unwrap_or_default();
        let follow_redirects = f.bool("follow_redirects")?.unwrap_or(true);
        let ip_policy = ip_policy(f)?;
        let expect_json = match f.raw("expect_json") {
            Some(v) => super::json::parse_conditions(v)?,
            None => Vec::new(),
        };
        let max_response_ms = max_response_ms(f)?;

        let mut headers: Vec<(String, String)> = Vec::with_capacity(raw_headers.len());
        for (k, v) in raw_headers {
            match headers
                .iter_mut()
                .find(|(name, _)| name.eq_ignore_ascii_case(&k))
            {
                Some(slot) => *slot = (k, v),
                None => headers.push((k, v)),
            }
        }
        let method = if !method.is_empty() {
            method
        } else if body.is_empty() {
            "GET".to_owned()
        } else {
            "POST".to_owned()
        };
        Ok(HttpSpec {
            url,
            method,
            body,
            headers,
            timeout_secs: clamp_timeout(timeout),
            insecure,
            username,
            password,
            expect_status,
            expect_substring,
            follow_redirects,
            ip_policy,
            expect_json,
            max_response_ms,
            target: Target::Unparsed,
        })
    }

    pub(crate) fn validate(&mut self) -> Result<(), String> {
        self.timeout_secs = clamp_timeout_secs(self.timeout_secs);
        self.max_response_ms = clamp_response_ms(self.max_response_ms);
        self.target = Target::Parsed(parse_target(&self.url, &self.method));
        Ok(())
    }

    /// The request's URL and method, parsed when the spec was loaded; or the message a run
    /// reports when they cannot be used.
    fn target(&self) -> std::borrow::Cow<'_, Result<(reqwest::Url, reqwest::Method), String>> {
        match &self.target {
            Target::Parsed(parsed) => std::borrow::Cow::Borrowed(parsed),
            Target::Unparsed => std::borrow::Cow::Owned(parse_target(&self.url, &self.method)),
        }
    }
}

impl fmt::Debug for HttpSpec {
    /// The check with its secrets masked by the notification rules ([`redact`]): no body,
    /// no password, only harmless header values, no secret query values in the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |v: &str| if v.is_empty() { "" } else { redact::REDACTED };
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if redact::is_harmless_header(k) {
                    v.as_str()
                } else {
                    masked(v)
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpSpec")
            .field("url", &redact::data_url(&self.url))
            .field("method", &self.method)
            .field("body", &masked(&self.body))
            .field("headers", &headers)
            .field("timeout_secs", &self.timeout_secs)
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("expect_status", &self.expect_status)
            .field("expect_substring", &self.expect_substring)
            .field("follow_redirects", &self.follow_redirects)
            .field("ip_policy", &self.ip_policy)
            .field("expect_json", &self.expect_json)
            .field("max_response_ms", &self.max_response_ms)
            .finish()
    }
}

/// At most this many bytes of the (decoded) body are read to look for `expect_substring`
/// (1 MiB). A substring beyond it counts as not found; with `expect_json` a longer body is
/// offline (a cut document cannot be parsed).
pub const BODY_CAP: usize = 1 << 20;

/// Redirects followed before the request fails (Go's default policy).
const MAX_REDIRECTS: usize = 10;

/// The shared http clients of a [`super::ProbeContext`], built on first use, one per
/// combination of `insecure` and `follow_redirects`.
#[derive(Default)]
pub(crate) struct Clients {
    /// CA certificates trusted by http checks in addition to the system store.
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    /// This node's own listeners, which http checks never follow a redirect to.
    pub(crate) own: Vec<SocketAddr>,
    /// Indexed by `insecure as usize * 2 + follow_redirects as usize`.
    built: [OnceLock<reqwest::Client>; 4],
}

impl Clients {
    pub(crate) fn new(extra_roots: Vec<CertificateDer<'static>>, own: Vec<SocketAddr>) -> Clients {
        Clients {
            extra_roots,
            own,
            built: Default::default(),
        }
    }

    fn get(&self, insecure: bool, follow_redirects: bool) -> Result<&reqwest::Client, ProbeError> {
        let slot = &self.built[insecure as usize * 2 + follow_redirects as usize];
        if let Some(c) = slot.get() {
            return Ok(c);
        }
        let client = build_client(insecure, follow_redirects, &self.extra_roots, &self.own)?;
        // Two runs may build at once; either client will do.
        Ok(slot.get_or_init(|| client))
    }
}

fn build_client(
    insecure: bool,
    follow_redirects: bool,
    extra_roots: &[CertificateDer<'static>],
    own: &[SocketAddr],
) -> Result<reqwest::Client, ProbeError> {
    client_builder(insecure, follow_redirects, extra_roots, own)?
        .build()
        .map_err(|e| ProbeError::Setup {
            what: "HTTP",
            message: error_chain(&e),
        })
}

/// Whether `url` points at one of this node's own listeners (`own`): a loopback or
/// unspecified address, or a listener's own address, on a listener's port; `localhost` names
/// count as loopback. Other names are not resolved here (a redirect policy cannot wait), which
/// is why node listeners also require signed requests for anything that changes state.
pub fn is_own_listener(url: &url::Url, own: &[SocketAddr]) -> bool {
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            } else {
                None
            }
        }
        None => None,
    };
    let Some(ip) = ip else {
        return false;
    };
    own.iter()
        .any(|l| l.port() == port && (ip.is_loopback() || ip.is_unspecified() || ip == l.ip()))
}

fn client_builder(
    insecure: bool,
    follow_redirects: bool,
    extra_roots: &[CertificateDer<'static>],
    own: &[SocketAddr],
) -> Result<reqwest::ClientBuilder, ProbeError> {
    crate::tlsutil::install_default_provider();
    let policy = if follow_redirects {
        let own = own.to_vec();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("too many redirects (more than {MAX_REDIRECTS})"))
            } else if is_own_listener(attempt.url(), &own) {
                let to = redact::message_url(attempt.url().as_str());
                attempt.error(format!(
                    "redirected to {to}, a listener of this gobearmon node; not followed"
                ))
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut tls = if insecure {
        // Any certificate, read as `ssl_expire` reads it; reqwest's own insecure mode would
        // not check the handshake signatures at all. No resumption: every run must see the
        // certificates.
        let mut tls = super::anycert::client_config(&[b"h2", b"http/1.1"]);
        tls.resumption = rustls::client::Resumption::store(Arc::new(TlsStartMark(None)))
            .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
        tls
    } else {
        verifying_config(extra_roots)?
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let builder = reqwest::Client::builder()
        .user_agent("gobearmon")
        .no_proxy()
        .pool_max_idle_per_host(0)
        // One short exchange per connection: TCP keepalive would only cost four setsockopt
        // calls per run.
        .tcp_keepalive(None)
        .tcp_keepalive_interval(None)
        .tcp_keepalive_retries(None)
        .redirect(policy)
        // The leaf certificate, for the expiry details of https checks.
        .tls_info(true)
        // The timing phases (`timing.rs`).
        .dns_resolver(TimedResolver)
        .connector_layer(TimedConnectLayer)
        .tls_backend_preconfigured(tls);
    Ok(builder)
}

/// What reqwest builds for `tls_certs_merge` (the platform verifier, with `extra_roots`
/// trusted beside the system store, and rustls's default session cache of 256), with the
/// store wrapped to mark the start of each handshake.
fn verifying_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, ProbeError> {
    let setup = |message: String| ProbeError::Setup {
        what: "HTTP",
        message,
    };
    let provider = crate::tlsutil::provider();
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots.iter().cloned(),
        provider.clone(),
    )
    .map_err(|e| setup(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let cache = Arc::new(rustls::client::ClientSessionMemoryCache::new(256));
    tls.resumption = rustls::client::Resumption::store(Arc::new(TlsStartMark(Some(cache))));
    Ok(tls)
}

/// A client for one run that connects to `addr` for the URL's host (Host and SNI stay the
/// host's); `ip_policy` `any` and `all` use one per address.
fn pinned_client(
    spec: &HttpSpec,
    clients: &Clients,
    url: &reqwest::Url,
    addr: std::net::SocketAddr,
) -> Result<reqwest::Client, ProbeError> {
    let mut builder = client_builder(
        spec.insecure,
        spec.follow_redirects,
        &clients.extra_roots,
        &clients.own,
    )?;
    if let Some(host) = url.host_str() {
        builder = builder.resolve(host, addr);
    }
    builder.build().map_err(|e| ProbeError::Setup {
        what: "HTTP",
        message: error_chain(&e),
    })
}

pub(crate) async fn run(spec: &HttpSpec, clients: &Clients) -> Result<Finding, ProbeError> {
    let deadline = deadline_in(Duration::from_secs(spec.timeout_secs));
    let parsed = spec.target();
    let target = (*parsed)
        .as_ref()
        .ok()
        .and_then(|(u, _)| Some((u.host_str()?.to_owned(), u.port_or_known_default()?)));
    let lookup = async {
        match &target {
            Some((host, port)) => addrs::lookup(host, *port, IpFamily::Any, deadline).await,
            None => Ok(Vec::new()),
        }
    };
    let run_started = std::time::Instant::now();
    addrs::each(spec.ip_policy, lookup, |pin| {
        run_at(spec, clients, pin, run_started)
    })
    .await
}

/// One request; with `pin`, to that address only. `run_started` is the zero of the timing
/// phases.
async fn run_at(
    spec: &HttpSpec,
    clients: &Clients,
    pin: Option<std::net::SocketAddr>,
    run_started: std::time::Instant,
) -> Result<Finding, ProbeError> {
    let mut details = Details::default();
    let (url, method, headers) = match request_parts(spec) {
        Ok(parts) => parts,
        Err(message) => return Ok(Finding::offline(message, details)),
    };

    let pinned;
    let client = match pin {
        None => clients.get(spec.insecure, spec.follow_redirects)?,
        Some(addr) => {
            pinned = pinned_client(spec, clients, &url, addr)?;
            &pinned
        }
    };
    // One deadline for the whole exchange (connect, TLS, redirects, headers, body), kept here
    // rather than in reqwest so a run arms a single timer.
    let limit = Duration::from_secs(spec.timeout_secs);
    let started = Instant::now();
    let deadline = deadline_in(limit);
    let timed_out = || format!("timeout ({} s) exceeded", spec.timeout_secs);
    let mut request = client.request(method.clone(), url.clone()).headers(headers);
    if !spec.body.is_empty() {
        request = request.body(spec.body.clone());
    }
    let performing = |why: String| {
        format!(
            "error performing HTTP request: {} \"{}\": {why}",
            go_method_name(&method),
            redact::message_url(url.as_str()),
        )
    };
    let (sent, marks) = timing::marked(timeout_at(deadline, request.send())).await;
    let sent = match sent {
        Ok(r) => r,
        Err(_) => return Ok(Finding::offline(performing(timed_out()), details)),
    };
    // `max_response_ms` counts until the (final) response headers, redirects included.
    let took = started.elapsed();
    let first_byte = std::time::Instant::now();
    let response = match sent {
        Ok(r) => r,
        Err(e) => return not_sent(&e, performing(error_chain(&e)), details),
    };
    describe_response(&response, &mut details);
    let mut finding = judge(spec, response, details, deadline, took).await;
    let end = std::time::Instant::now();
    finding.details.timing = Some(marks.timing(run_started, first_byte, end));
    Ok(finding)
}

/// The URL, method and headers of the request, or the message of a request that cannot be
/// made (Go's wording).
fn request_parts(spec: &HttpSpec) -> Result<(reqwest::Url, reqwest::Method, HeaderMap), String> {
    let (url, method) = spec.target().into_owned()?;
    let headers = request_headers(spec).map_err(|e| format!("error creating HTTP request: {e}"))?;
    Ok((url, method, headers))
}

/// A request that got no response: offline with `message`, unless this machine ran out of
/// sockets or files (then the run says nothing of the target).
fn not_sent(e: &reqwest::Error, message: String, details: Details) -> Result<Finding, ProbeError> {
    if let Some(io) = io_source(e).filter(|io| is_local_exhaustion(io)) {
        return Err(ProbeError::Resources(std::io::Error::new(
            io.kind(),
            io.to_string(),
        )));
    }
    Ok(Finding::offline(message, details))
}

/// The peer address, its certificate (over TLS) and the status code.
fn describe_response(response: &reqwest::Response, details: &mut Details) {
    if let Some(addr) = response.remote_addr() {
        details.address = Some(addr.ip().to_string());
    }
    if let Some(der) = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
    {
        super::tls::describe_leaf(der, details);
    }
    details.http_status = Some(response.status().as_u16());
}

/// The verdict on a response: its status, then its body when expectations need it.
async fn judge(
    spec: &HttpSpec,
    mut response: reqwest::Response,
    details: Details,
    deadline: Instant,
    took: Duration,
) -> Finding {
    let timed_out = || format!("timeout ({} s) exceeded", spec.timeout_secs);
    let status = response.status().as_u16();

    if spec.expect_status != 0 && spec.expect_status != i64::from(status) {
        return Finding::offline(
            format!(
                "status mismatch, got {status} but expected {}",
                spec.expect_status
            ),
            details,
        );
    }
    if !spec.expect_json.is_empty() {
        if let Some(why) = judge_whole_body(spec, &mut response, deadline).await {
            return Finding::offline(why, details);
        }
    } else if !spec.expect_substring.is_empty() {
        let needle = spec.expect_substring.as_bytes();
        let found = match timeout_at(deadline, find_in_body(&mut response, needle)).await {
            Ok(r) => r.map_err(|e| error_chain(&e)),
            Err(_) => Err(timed_out()),
        };
        match found {
            Ok(true) => {}
            Ok(false) => {
                return Finding::offline(
                    format!(
                        "expected substring [{}] was not found in the response body",
                        spec.expect_substring
                    ),
                    details,
                );
            }
            Err(why) => {
                return Finding::offline(
                    format!("error reading HTTP response body: {why}"),
                    details,
                );
            }
        }
    }
    // Dropping the response closes the connection without reading the rest of the body.
    online_within(spec.max_response_ms, took, details)
}

/// Reads the body until `needle` shows up, the body ends, or [`BODY_CAP`] bytes were read.
async fn find_in_body(
    response: &mut reqwest::Response,
    needle: &[u8],
) -> Result<bool, reqwest::Error> {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < BODY_CAP {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        // Only the new bytes (and the needle's length minus one before them) can hold a
        // match that was not there before.
        let search_from = buf.len().saturating_sub(needle.len().saturating_sub(1));
        let take = chunk.len().min(BODY_CAP - buf.len());
        buf.extend_from_slice(&chunk[..take]);
        if contains(&buf[search_from..], needle) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The whole (decoded) body, or `None` when it is longer than [`BODY_CAP`].
async fn read_capped(response: &mut reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > BODY_CAP {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// Reads the body whole (bounded by [`BODY_CAP`] and `deadline`) and judges
/// `expect_substring` and `expect_json` on it: the offline message, if any.
async fn judge_whole_body(
    spec: &HttpSpec,
    response: &mut reqwest::Response,
    deadline: Instant,
) -> Option<String> {
    match timeout_at(deadline, read_capped(response)).await {
        Ok(Ok(Some(body))) => judge_body(spec, &body),
        Ok(Ok(None)) => Some(format!(
            "expect_json: the response body is larger than {BODY_CAP} bytes"
        )),
        Ok(Err(e)) => Some(format!(
            "error reading HTTP response body: {}",
            error_chain(&e)
        )),
        Err(_) => Some(format!(
            "error reading HTTP response body: timeout ({} s) exceeded",
            spec.timeout_secs
        )),
    }
}

/// `expect_substring` and `expect_json` on a body read whole: the offline message, if any.
fn judge_body(spec: &HttpSpec, body: &[u8]) -> Option<String> {
    if !contains(body, spec.expect_substring.as_bytes()) {
        return Some(format!(
            "expected substring [{}] was not found in the response body",
            spec.expect_substring
        ));
    }
    super::json::judge(&spec.expect_json, body)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The request headers: the check's `headers` in order (`Host` included, whatever its case),
/// then basic auth, which replaces an `Authorization` header as in gobearmon.
fn request_headers(spec: &HttpSpec) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in &spec.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header field name \"{k}\""))?;
        let mut value = HeaderValue::from_str(v)
            .map_err(|_| format!("invalid header field value for \"{k}\""))?;
        if !redact::is_harmless_header(k) {
            value.set_sensitive(true);
        }
        map.insert(name, value);
    }
    if !spec.username.is_empty() {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", spec.username, spec.password));
        let mut value = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| "invalid basic auth credentials".to_owned())?;
        value.set_sensitive(true);
        map.insert(AUTHORIZATION, value);
    }
    Ok(map)
}

/// Go's spelling of the method in client errors (`Get "http://..."`).
fn go_method_name(m: &reqwest::Method) -> String {
    let s = m.as_str();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The error and its sources, `: `-separated, without the URL reqwest would print (the caller
/// prints a redacted one).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io_text(io),
            None => s.to_string(),
        };
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        // No sources: reqwest's own text (builder, redirect, decode errors).
        parts.push(e.without_url_ref());
    }
    parts.join(": ")
}

fn io_source(e: &reqwest::Error) -> Option<&std::io::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// reqwest's own message without the URL part.
trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(u) => text
                .replace(&format!(" for url ({u})"), "")
                .replace(&format!(" ({u})"), ""),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(data: &str) -> HttpSpec {
        match crate::probe::CheckSpec::parse("http", data) {
            crate::probe::CheckSpec::Http(spec) => *spec,
            other => panic!("not an http spec: {other:?}"),
        }
    }

    /// URL and method are parsed when a spec is loaded, from a row or from a peer's copy;
    /// one that cannot be used still loads and keeps the message each run reports.
    #[test]
    fn url_and_method_are_parsed_once_when_loaded() {
        let ok = loaded(r#"{"url":"http://a.test:81/x","method":"PUT"}"#);
        let Target::Parsed(Ok((url, method))) = &ok.target else {
            panic!("not parsed at load: {:?}", ok.target);
        };
        assert_eq!(
            (url.as_str(), method.as_str()),
            ("http://a.test:81/x", "PUT")
        );

        let bad_url = loaded(r#"{"url":"not a url"}"#);
        let Target::Parsed(Err(message)) = &bad_url.target else {
            panic!("not parsed at load: {:?}", bad_url.target);
        };
        assert_eq!(
            message,
            "error creating HTTP request: parse \"not a url\": relative URL without a base"
        );
        let bad_method = loaded(r#"{"url":"http://a/","method":"GE T"}"#);
        assert_eq!(
            request_parts(&bad_method).err().as_deref(),
            Some("error creating HTTP request: net/http: invalid method \"GE T\"")
        );

        let sent = serde_json::to_string(&crate::probe::CheckSpec::Http(Box::new(ok))).unwrap();
        let crate::probe::CheckSpec::Http(received) = serde_json::from_str(&sent).unwrap() else {
            panic!("not an http spec: {sent}");
        };
        assert!(
            matches!(received.target, Target::Parsed(Ok(_))),
            "{:?}",
            received.target
        );
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: READY", b"READY"));
        assert!(!contains(b"NOT", b"READY"));
        assert!(contains(b"x", b""));
    }

    #[test]
    fn method_names_like_go() {
        assert_eq!(go_method_name(&reqwest::Method::GET), "Get");
        assert_eq!(go_method_name(&reqwest::Method::POST), "Post");
    }

    #[test]
    fn basic_auth_replaces_authorization_header() {
        let crate::probe::CheckSpec::Http(spec) = crate::probe::CheckSpec::parse(
            "http",
            r#"{"url":"http://x/","headers":{"authorization":"Bearer t","Host":"v.test"},
                "username":"u","password":"p"}"#,
        ) else {
            panic!()
        };
        let h = request_headers(&spec).unwrap();
        assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[AUTHORIZATION], "Basic dTpw");
        assert_eq!(h["host"], "v.test");
    }

    #[test]
    fn redirects_to_this_nodes_listeners_are_recognised() {
        let own: Vec<SocketAddr> = vec![
            "0.0.0.0:8891".parse().unwrap(),
            "10.0.0.5:8881".parse().unwrap(),
        ];
        let is_own = |u: &str| is_own_listener(&url::Url::parse(u).unwrap(), &own);
        assert!(is_own("http://127.0.0.1:8891/disconnect"));
        assert!(is_own("http://localhost:8891/disconnect"));
        assert!(is_own("http://[::1]:8891/"));
        assert!(is_own("http://0.0.0.0:8891/"));
        assert!(is_own("http://10.0.0.5:8881/status"));
        assert!(is_own("http://127.0.0.2:8881/status"));
        // Another host's port 8891 (another worker's /ready, say) is not this node.
        assert!(!is_own("http://10.0.0.6:8891/ready"));
        assert!(!is_own("http://127.0.0.1:8892/"));
        assert!(!is_own("https://example.test/"));
    }
}
