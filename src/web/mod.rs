//! The web face of a controller-capable worker (`[web] addr`): the dashboard and public status
//! pages (`dash/`, README "Dashboard and public status pages"), the read-only JSON API v1,
//! described by `openapi.v1.json` at the repository root, and the push endpoints of push
//! checks (`push.rs`, `/push/{token}`, where the token is the credential).
//!
//! - Every request needs `Authorization: Bearer TOKEN` with one of `[web] api_tokens`; the
//!   token is compared in constant time (SHA-256 digests, `subtle`), and a missing or wrong
//!   one gets 401. Tokens never appear in logs or answers.
//! - Everything is read from MySQL (`store/timeline.rs`), so any controller-capable worker
//!   answers, acting or not; one check's answer adds its live state (open round, runs in
//!   flight) from the acting controller when it answers within a second.
//! - Times are RFC 3339 (UTC), durations seconds; errors are `{"error": "..."}`; lists are
//!   paged with an opaque `cursor` (`next_cursor` in the answer, `null` on the last page).
//!
//! The API never reads `checks.data` or `contacts.data`, so no secret of a check or a
//! contact can reach an answer. (The push endpoints read the `data` of push checks for their
//! tokens, and answer with nothing of it.)

pub mod dash;
mod push;
mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::store::{Store, StoreError};

/// Asks the acting controller for one check's live state (its open round, runs in flight);
/// `None` when no controller answers in time.
pub type LiveCheck = Arc<
    dyn Fn(
            i64,
        ) -> futures_util::future::BoxFuture<
            'static,
            Option<crate::role::controller::status::CheckStatusView>,
        > + Send
        + Sync,
>;

/// Asks the acting controller for the cluster in brief (workers, checks short of quorum);
/// `None` when no controller answers in time.
pub type ClusterAsk = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<
            'static,
            Option<crate::role::controller::status::ClusterSummary>,
        > + Send
        + Sync,
>;

/// What the dashboard knows of the cluster besides MySQL.
#[derive(Clone)]
pub struct Cluster {
    /// The viewserver group's members, as this node's configuration names them.
    pub viewservers: Vec<String>,
    pub ask: ClusterAsk,
}

/// What the handlers share.
#[derive(Clone)]
pub struct Web {
    store: Store,
    /// SHA-256 of every accepted token.
    tokens: Arc<Vec<[u8; 32]>>,
    /// Live state from the acting controller, for one check's answer.
    live: Option<LiveCheck>,
    /// The acting controller's view of the cluster.
    cluster: Option<Cluster>,
    /// Push checks' tokens and rate limits.
    push: Arc<push::PushDesk>,
    /// Dashboard login attempts per address and per (user, address).
    limiter: Arc<dash::auth::LoginLimiter>,
    /// Bounds the password hashes running at once.
    hashes: Arc<dash::auth::HashGate>,
    /// Sends the dashboard's test notifications (the controller's channels).
    deliverer: Option<Arc<dyn crate::notify::Deliverer>>,
    /// Badges made in the last minute.
    badges: Arc<dash::public::PublicCache>,
    /// Status pages made in the last [`dash::public::STATUS_TTL`].
    status_pages: Arc<dash::public::PublicCache>,
    /// Session cookies carry `Secure` (the listener serves HTTPS).
    secure_cookies: bool,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Web {
    pub fn new(store: Store, tokens: &[Secret]) -> Web {
        Web {
            store,
            tokens: Arc::new(
                tokens
                    .iter()
                    .map(|t| sha256(t.expose().as_bytes()))
                    .collect(),
            ),
            live: None,
            cluster: None,
            push: Arc::new(push::PushDesk::new()),
            limiter: Arc::new(dash::auth::LoginLimiter::default()),
            hashes: Arc::new(dash::auth::HashGate::default()),
            secure_cookies: false,
            badges: Arc::new(dash::public::PublicCache::new(dash::public::BADGE_TTL)),
            status_pages: Arc::new(dash::public::PublicCache::new(dash::public::STATUS_TTL)),
            deliverer: None,
        }
    }

    /// Lets operators send test notifications from the dashboard through `deliverer`.
    pub fn with_deliverer(mut self, deliverer: Arc<dyn crate::notify::Deliverer>) -> Web {
        self.deliverer = Some(deliverer);
        self
    }

    /// Marks session cookies `Secure`: for a listener under `[tls]`.
    pub fn with_secure_cookies(mut self, secure: bool) -> Web {
        self.secure_cookies = secure;
        self
    }

    /// Adds live state from the acting controller to one check's answer.
    pub fn with_live(mut self, live: LiveCheck) -> Web {
        self.live = Some(live);
        self
    }

    /// Lets the dashboard show the viewserver group and the acting controller's view of the
    /// workers and of quorum.
    pub fn with_cluster(mut self, cluster: Cluster) -> Web {
        self.cluster = Some(cluster);
        self
    }

    /// Whether `presented` is one of the tokens. Every configured token is compared, each in
    /// constant time, so the time taken says nothing about which or how much matched.
    fn accepts(&self, presented: &str) -> bool {
        let digest = sha256(presented.as_bytes());
        let mut ok = subtle::Choice::from(0);
        for t in self.tokens.iter() {
            ok |= t.ct_eq(&digest);
        }
        ok.into()
    }
}

/// The web router: the API, every route behind the bearer token; the push endpoints, whose
/// token is in the path; the dashboard (`dash`), behind its login session.
pub fn router(web: Web) -> Router {
    let api = v1::routes()
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(web.clone(), authorize));
    push::routes()
        .merge(dash::routes())
        .merge(api)
        .with_state(web)
}

/// The token of the request's `Authorization: Bearer` header.
fn bearer_of(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn authorize(State(web): State<Web>, request: Request, next: Next) -> Response {
    match bearer_of(&request) {
        Some(token) if web.accepts(token) => next.run(request).await,
        Some(_) => ApiError::unauthorized("the bearer token is not valid"),
        None => ApiError::unauthorized("an Authorization: Bearer token is required"),
    }
}

/// One optional bearer token in front of some routes (`/metrics` under `[worker]
/// metrics_token`), compared in constant time; without a token every request passes.
#[derive(Clone)]
pub struct BearerGate {
    token: Option<Arc<[u8; 32]>>,
}

impl BearerGate {
    /// `router`'s routes behind `token` (401 without it), or as they are for `None`.
    pub fn around<S: Clone + Send + Sync + 'static>(
        router: Router<S>,
        token: Option<&Secret>,
    ) -> Router<S> {
        let gate = BearerGate {
            token: token.map(|t| Arc::new(sha256(t.expose().as_bytes()))),
        };
        router.route_layer(axum::middleware::from_fn_with_state(gate, bearer_gate))
    }
}

async fn bearer_gate(State(gate): State<BearerGate>, request: Request, next: Next) -> Response {
    let Some(want) = &gate.token else {
        return next.run(request).await;
    };
    match bearer_of(&request) {
        Some(t) if bool::from(sha256(t.as_bytes()).ct_eq(&**want)) => next.run(request).await,
        _ => ApiError::unauthorized("an Authorization: Bearer token is required"),
    }
}

/// An error answer: a status and `{"error": message}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Response {
        ApiError::new(StatusCode::NOT_FOUND, message).into_response()
    }

    fn unauthorized(message: &str) -> Response {
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::warn!(error = %e, "API request failed on the database");
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, "the database could not answer; try again")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
