//! A worker node: membership (heartbeats and lease), acting as controller while it holds the
//! lease, hand-over on `SIGUSR1` / `POST /disconnect`, and its HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::controller::{ControllerHost, ControllerSlot};
use super::membership::{Membership, wall_ms};
use super::runner::Runner;
use crate::api::{NodeListener, Sample, metrics_response, ready_response, serve};
use crate::config::{Config, Role};
use crate::probe::ProbeContext;
use crate::rpc::RpcClient;
use crate::rpc::sign::Signer;

/// The listeners a worker serves, bound by the caller.
pub struct Listeners {
    /// `[worker] addr`: `/ready`, `/metrics`, `/disconnect`.
    pub worker: NodeListener,
    /// `[controller] addr`, for a controller-capable worker.
    pub controller: Option<NodeListener>,
}

struct Node {
    membership: Arc<Membership>,
    runner: Arc<Runner>,
    num_threads: usize,
    slot: ControllerSlot,
    disconnect: Arc<Notify>,
}

/// Runs a worker until `shutdown`. `disconnect` is notified by `SIGUSR1`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    disconnect: Arc<Notify>,
    admin: mpsc::UnboundedSender<(String, String)>,
) -> Result<(), String> {
    let Role::Worker { worker, controller } = &config.role else {
        return Err("not a worker config".into());
    };
    let signer = Arc::new(Signer::new(&config.default.password, worker.id.clone()));
    let client = RpcClient::new(signer.clone(), config.tls.as_ref())?;
    let membership = Membership::new(
        worker.id.clone(),
        controller.as_ref().map(|c| c.advertise_addr.clone()),
        worker.view_addr.clone(),
        worker.heartbeat_interval,
        worker.lease,
        client.clone(),
    );
    tracing::info!(
        node = %worker.id,
        addr = %listeners.worker.local_addr().map_err(|e| e.to_string())?,
        controller_addr = ?listeners.controller.as_ref().and_then(|l| l.local_addr().ok()),
        viewservers = ?worker.view_addr,
        tls = listeners.worker.is_tls(),
        "worker listening"
    );
    let tasks = TaskTracker::new();
    tasks.spawn(membership.clone().run(shutdown.clone()));
    let runner = Runner::new(
        membership.clone(),
        client.clone(),
        ProbeContext::new(config.dns.server.clone()),
        worker.location.clone(),
        worker.num_threads,
        worker.result_buffer,
    );
    // Results are sent until the very end: the sender stops after the poller.
    let runs_done = CancellationToken::new();
    tasks.spawn(runner.clone().poll_loop(shutdown.clone()));
    tasks.spawn(runner.clone().send_loop(runs_done.clone()));
    let slot = ControllerSlot::default();
    if let (Some(ccfg), Some(listener)) = (controller, listeners.controller) {
        let host = ControllerHost::new(
            &config,
            ccfg.clone(),
            signer.clone(),
            membership.clone(),
            admin.clone(),
        )?;
        tasks.spawn(supervise(
            membership.clone(),
            host.clone(),
            slot.clone(),
            shutdown.clone(),
        ));
        let router = host.router(slot.clone());
        let s = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = serve(listener, router, s).await {
                tracing::error!(error = %e, "controller API stopped");
            }
        });
    }
    let node = Arc::new(Node {
        membership: membership.clone(),
        runner: runner.clone(),
        num_threads: worker.num_threads,
        slot: slot.clone(),
        disconnect: disconnect.clone(),
    });
    tasks.spawn(handover(
        membership.clone(),
        disconnect,
        worker.disconnect_pause,
        shutdown.clone(),
    ));
    let router = Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/disconnect", post(disconnect_now))
        .with_state(node);
    let served = serve(listeners.worker, router, shutdown.clone()).await;
    // Drain: let running checks finish (each is bounded by its timeout), send their results.
    let drain_deadline = Instant::now() + Duration::from_secs(35);
    while runner.running(worker.num_threads) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runs_done.cancel();
    tasks.close();
    tasks.wait().await;
    served.map_err(|e| e.to_string())
}

/// Acts as controller exactly while the lease is held: starts on acquiring it, stops the
/// moment it lapses (a timer fires at the lease's end even if no heartbeat arrives).
///
/// When the whole viewserver group stays unreachable, the node named by the last view acts
/// again under the epoch fence alone, once a working group would have replaced it
/// ([`Membership::fence_alone_at`]) and only if no newer epoch has raised the fence by then;
/// while it acts that way it reads the fence every heartbeat interval and stops as soon as a
/// successor has raised it. An epoch found superseded is never acted for again.
async fn supervise(
    membership: Arc<Membership>,
    host: Arc<ControllerHost>,
    slot: ControllerSlot,
    shutdown: CancellationToken,
) {
    let mut standing = membership.subscribe();
    // The lease of the running term, to log when it really ended.
    let mut held: Option<super::membership::Lease> = None;
    let mut superseded = 0u64;
    loop {
        let now = Instant::now();
        let end_ms = |l: Option<super::membership::Lease>| match l {
            Some(l) if l.until <= now => {
                wall_ms().saturating_sub((now - l.until).as_millis() as u64)
            }
            _ => wall_ms(),
        };
        if let Some(e) = slot.ended() {
            // The term stopped itself: a write found the fence moved, or it could no longer
            // act. Only a newer epoch in the fence rules this epoch out for good.
            let why = if newer_fence(&host, e).await == Some(true) {
                superseded = superseded.max(e);
                "a newer epoch holds the fence"
            } else {
                "the term stopped itself"
            };
            slot.stop(e, why, end_ms(held)).await;
            held = None;
        }
        let lease = membership.current_lease().filter(|l| l.epoch > superseded);
        match (lease, slot.epoch()) {
            (Some(l), Some(e)) if l.epoch == e => held = Some(l),
            (None, Some(e)) if membership.fence_only(e) => {
                // (Unreadable: the term's own writes are fenced; keep going.)
                if newer_fence(&host, e).await == Some(true) {
                    superseded = superseded.max(e);
                    slot.stop(e, "a newer epoch raised the fence", wall_ms())
                        .await;
                    held = None;
                }
            }
            (Some(l), active) => {
                if let Some(e) = active {
                    slot.stop(e, "a newer epoch names this node", end_ms(held))
                        .await;
                }
                tracing::info!(
                    epoch = l.epoch,
                    at_ms = wall_ms(),
                    "lease acquired; acting as controller"
                );
                slot.start(host.clone(), l.epoch);
                held = Some(l);
            }
            (None, Some(e)) => {
                let why = if membership.stepping_down.load(Ordering::Relaxed) {
                    "stepping down"
                } else if membership
                    .standing()
                    .view
                    .controller
                    .is_some_and(|c| c.node == membership.node)
                {
                    "lease expired"
                } else {
                    "the view names another controller"
                };
                slot.stop(e, why, end_ms(held)).await;
                held = None;
            }
            (None, None) => {
                let epoch = membership.standing().view.epoch;
                if epoch > superseded && membership.fence_only(epoch) {
                    match newer_fence(&host, epoch).await {
                        Some(true) => {
                            superseded = epoch;
                            tracing::warn!(
                                epoch,
                                "viewserver group unreachable and a newer epoch holds the \
                                 fence: not acting"
                            );
                        }
                        None => {} // tried again at the next heartbeat interval
                        // (A heartbeat answered while the fence was read: decide again.)
                        Some(false) if !membership.fence_only(epoch) => {}
                        Some(false) => {
                            tracing::warn!(
                                epoch,
                                at_ms = wall_ms(),
                                "viewserver group unreachable: acting as controller under the epoch fence"
                            );
                            slot.start(host.clone(), epoch);
                        }
                    }
                }
            }
        }
        let beat = Instant::now() + membership.interval;
        let wake = match lease {
            Some(l) => Some(l.until),
            // Under the fence alone: read it again each heartbeat interval.
            None if slot.epoch().is_some() => Some(beat),
            None => membership.fence_alone_at().map(|at| at.max(beat)),
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(e) = slot.epoch().or(slot.ended()) {
                    slot.stop(e, "shutting down", wall_ms()).await;
                }
                return;
            }
            changed = standing.changed() => if changed.is_err() { return },
            _ = sleep_until_opt(wake) => {}
        }
    }
}

/// Whether the fence holds an epoch newer than `epoch`; `None` when it cannot be read now
/// (within a heartbeat interval, at least a second: a black-holed database must not hold up
/// the supervisor).
async fn newer_fence(host: &ControllerHost, epoch: u64) -> Option<bool> {
    let limit = host.membership.interval.max(Duration::from_secs(1));
    match tokio::time::timeout(limit, crate::store::fence::current(&host.store)).await {
        Ok(Ok(stored)) => Some(stored.0 > epoch),
        Ok(Err(e)) => {
            tracing::warn!(epoch, error = %e, "cannot read the epoch fence");
            None
        }
        Err(_) => {
            tracing::warn!(epoch, "cannot read the epoch fence: timed out");
            None
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `SIGUSR1` or `POST /disconnect`: let go (a controller steps down first), stay away for
/// `pause`, come back.
async fn handover(
    membership: Arc<Membership>,
    disconnect: Arc<Notify>,
    pause: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = disconnect.notified() => {}
        }
        tracing::info!(pause = ?pause, "disconnecting for a hand-over");
        membership.set_stepping_down(true);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        membership.set_stepping_down(false);
        tracing::info!("back from the hand-over pause");
    }
}

async fn ready(State(n): State<Arc<Node>>) -> Response {
    let standing = n.membership.standing();
    let fresh = standing
        .acked_at
        .is_some_and(|t| t.elapsed() < n.membership.lease);
    if n.membership.stepping_down.load(Ordering::Relaxed) {
        return ready_response(false, "disconnected for a hand-over");
    }
    let contact_ms = n.runner.stats.last_contact_ms.load(Ordering::Relaxed);
    let connected = wall_ms().saturating_sub(contact_ms) < 10_000;
    match (&standing.view.controller, fresh) {
        (Some(_), true) if connected => ready_response(true, ""),
        (Some(_), true) => ready_response(false, "no answer from the controller yet"),
        (None, true) => ready_response(false, "the view names no controller"),
        (_, false) => ready_response(false, "no answer from the viewserver group"),
    }
}

async fn disconnect_now(
    State(n): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (StatusCode::FORBIDDEN, "only from this host\n").into_response();
    }
    n.disconnect.notify_one();
    (StatusCode::ACCEPTED, "disconnecting\n").into_response()
}

async fn metrics(State(n): State<Arc<Node>>) -> Response {
    let m = &n.membership;
    let standing = m.standing();
    let lease_left = m.current_lease().map_or(0.0, |l| {
        l.until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    });
    metrics_response(vec![
        Sample::Gauge(
            "view_epoch",
            "Epoch of the latest view received.",
            standing.view.epoch as f64,
        ),
        Sample::Gauge(
            "is_controller",
            "1 while this node acts as controller.",
            f64::from(u8::from(n.slot.epoch().is_some())),
        ),
        Sample::Gauge(
            "lease_remaining_seconds",
            "Time left on the controller lease.",
            lease_left,
        ),
        Sample::Gauge(
            "checks_running",
            "Checks running now.",
            n.runner.running(n.num_threads) as f64,
        ),
        Sample::Gauge(
            "results_buffered",
            "Results waiting for a controller.",
            n.runner.buffered() as f64,
        ),
        Sample::Counter(
            "checks_run",
            "Checks run.",
            n.runner.stats.runs.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "results_sent",
            "Results delivered to a controller.",
            n.runner.stats.results_sent.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "results_dropped",
            "Results dropped (buffer full, or their epoch ended).",
            n.runner.stats.results_dropped.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "heartbeats_sent",
            "Heartbeats sent to viewserver members.",
            m.stats.sent.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "heartbeats_answered",
            "Heartbeats answered.",
            m.stats.answered.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "heartbeats_failed",
            "Heartbeats refused or unanswered.",
            m.stats.failed.load(Ordering::Relaxed),
        ),
    ])
}
