//! A viewserver node: wiring of the group member ([`crate::view::group`]) to its HTTP
//! endpoints, and its loops.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ListenerMetrics, NodeListener, Sample, metrics_response, ready_response, serve};
use crate::config::{Config, Role};
use crate::rpc::sign::Signer;
use crate::rpc::{Allow, RpcClient, Sender, SignedRoutes};
use crate::view::View;
use crate::view::group::{Heartbeat, PATH_HEARTBEAT, PATH_NOTICE, PATH_STATE, ViewGroup};
use crate::view::network::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::view::types::NoticeRequest;
use crate::view::types::TypeConfig;

type Shared = Arc<Node>;

struct Node {
    group: Arc<ViewGroup>,
    signer: Arc<Signer>,
    /// The members' node ids.
    members: Arc<[String]>,
    /// The member listener's connection counters.
    listeners: ListenerMetrics,
}

/// The node id a member signs with.
pub fn member_id(id: u64) -> String {
    format!("vs{id}")
}

/// Why a viewserver member could not start or stopped serving. Each ends the node (`main`
/// exits 70); none is worth retrying in place.
#[derive(Debug, thiserror::Error)]
pub enum ViewserverError {
    /// The config given to [`run`] is a worker's.
    #[error("not a viewserver config")]
    NotViewserverConfig,
    /// A member must hold the cluster secret (`[default] password`).
    #[error("a viewserver member needs the cluster secret, [default] password")]
    NoClusterSecret,
    /// The RPC client could not be built (`[tls]` files, TLS setup).
    #[error("{0}")]
    Client(String),
    /// The group member could not start (`data_dir`, its log or state, Raft).
    #[error("{0}")]
    Group(String),
    /// The listener has no local address.
    #[error("{0}")]
    Listener(#[source] std::io::Error),
    /// Serving `addr` failed.
    #[error("{0}")]
    Serve(#[source] std::io::Error),
}

/// Runs a viewserver member on `listener` until `shutdown`. `admin` receives admin notices.
pub async fn run(
    config: Config,
    listener: NodeListener,
    shutdown: CancellationToken,
    admin: mpsc::UnboundedSender<(String, String)>,
) -> Result<(), ViewserverError> {
    let Role::Viewserver(vs) = &config.role else {
        return Err(ViewserverError::NotViewserverConfig);
    };
    let Some(secret) = &config.default.password else {
        return Err(ViewserverError::NoClusterSecret);
    };
    // Members answer to the address the group knows them by and the one they listen on.
    let own = [vs.peers[(vs.id - 1) as usize].clone(), vs.addr.to_string()];
    let signer = Arc::new(Signer::cluster(secret, member_id(vs.id)).answering_to(&own));
    let members: Arc<[String]> = (1..=vs.peers.len() as u64).map(member_id).collect();
    let client = RpcClient::new(signer.clone(), config.tls.as_ref())
        .map_err(|e| ViewserverError::Client(e.to_string()))?;
    let group = ViewGroup::start(vs.clone(), client, admin)
        .await
        .map_err(ViewserverError::Group)?;
    tracing::info!(
        id = vs.id,
        addr = %listener.local_addr().map_err(ViewserverError::Listener)?,
        tls = listener.is_tls(),
        peers = ?vs.peers,
        data_dir = %vs.data_dir.display(),
        "viewserver member listening"
    );
    let tasks = TaskTracker::new();
    tasks.spawn(group.clone().bootstrap(shutdown.clone()));
    tasks.spawn(group.clone().run_elections(shutdown.clone()));
    let mut views = group.subscribe();
    let log_shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = log_shutdown.cancelled() => return,
                changed = views.changed() => if changed.is_err() { return },
            }
            let v = views.borrow_and_update().clone();
            tracing::info!(view = %v, "view applied");
        }
    });
    let mut listeners = ListenerMetrics::default();
    listeners.add("viewserver", &listener);
    let node = Arc::new(Node {
        group: group.clone(),
        signer: signer.clone(),
        members: members.clone(),
        listeners,
    });
    let raft = Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_STATE, post(member_state))
        .signed(signer.clone(), Allow::Members(members.clone()));
    // Group notices: only holders of the cluster secret (controller-capable workers, and
    // members forwarding to the leader).
    let notices = Router::new()
        .route(PATH_NOTICE, post(notice))
        .signed(signer.clone(), Allow::Trusted);
    let heartbeats = Router::new()
        .route(PATH_HEARTBEAT, post(heartbeat))
        .route(PATH_VIEW, get(view))
        .signed(signer, Allow::Any);
    let router = Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/view", get(view))
        .merge(raft)
        .merge(notices)
        .merge(heartbeats)
        .with_state(node);
    let served = serve(listener, router, shutdown.clone()).await;
    tasks.close();
    tasks.wait().await;
    if let Err(e) = group.raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    served.map_err(ViewserverError::Serve)
}

async fn append(
    State(n): State<Shared>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    Json(n.group.raft.append_entries(req).await).into_response()
}

async fn vote(State(n): State<Shared>, Json(req): Json<VoteRequest<u64>>) -> Response {
    if !n.group.accepts_votes() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up after losing its data dir; not voting",
        )
            .into_response();
    }
    Json(n.group.raft.vote(req).await).into_response()
}

async fn snapshot(
    State(n): State<Shared>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    Json(n.group.raft.install_snapshot(req).await).into_response()
}

async fn member_state(State(n): State<Shared>) -> Response {
    Json(n.group.member_state()).into_response()
}

async fn heartbeat(
    State(n): State<Shared>,
    Extension(sender): Extension<Sender>,
    Json(hb): Json<Heartbeat>,
) -> Response {
    // A worker speaks only as itself; a member forwarding a worker's heartbeat to the leader
    // vouches for the worker it came from and for how that worker signed.
    let from_member = sender.trusted && n.members.contains(&sender.node);
    let hb = if from_member && hb.forwarded {
        hb
    } else if hb.node != sender.node {
        return (
            StatusCode::UNAUTHORIZED,
            format!(
                "signed by {:?}, but the heartbeat names {:?}\n",
                sender.node, hb.node
            ),
        )
            .into_response();
    } else {
        hb.from_sender(&sender)
    };
    match n.group.heartbeat(hb).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn notice(State(n): State<Shared>, Json(req): Json<NoticeRequest>) -> Response {
    match n.group.notice(req).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn ready(State(n): State<Shared>) -> Response {
    ready_response(n.group.ready(), "no Raft leader known")
}

/// `GET /view` (public) and [`PATH_VIEW`] (signed): this member's view of the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewAnswer {
    pub member: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub view: View,
}

/// The signed form of `GET /view`, for clients that must trust the answer.
pub const PATH_VIEW: &str = "/view/current";

async fn view(State(n): State<Shared>) -> Response {
    Json(ViewAnswer {
        member: n.group.id(),
        term: n.group.term(),
        leader: n.group.leader(),
        view: n.group.view(),
    })
    .into_response()
}

async fn metrics(State(n): State<Shared>) -> Response {
    let g = &n.group;
    let view = g.view();
    metrics_response(
        vec![
            Sample::Gauge(
                "raft_term",
                "Current Raft term of this member.",
                g.term() as f64,
            ),
            Sample::Gauge(
                "raft_leader",
                "Member id of the Raft leader (0: none known).",
                g.leader().unwrap_or(0) as f64,
            ),
            Sample::Gauge(
                "raft_is_leader",
                "1 when this member leads the group.",
                f64::from(u8::from(g.leader() == Some(g.id()))),
            ),
            Sample::Gauge(
                "view_epoch",
                "Epoch of the applied view.",
                view.epoch as f64,
            ),
            Sample::Gauge(
                "view_has_controller",
                "1 when the applied view names a controller.",
                f64::from(u8::from(view.controller.is_some())),
            ),
            Sample::Counter(
                "heartbeats_served",
                "Worker heartbeats answered as leader.",
                g.stats.heartbeats.load(Ordering::Relaxed),
            ),
            Sample::Counter(
                "views_committed",
                "New views this member committed as leader.",
                g.stats.views_committed.load(Ordering::Relaxed),
            ),
            Sample::Counter(
                "requests_refused",
                "Requests refused for a bad signature, stale timestamp or replayed nonce.",
                n.signer.refused(),
            ),
        ],
        vec![Box::new(n.listeners.clone())],
    )
}
