//! A worker node: membership (heartbeats and lease), acting as controller while it holds the
//! lease, hand-over on `SIGUSR1` / a signed `POST /disconnect` (`gobearmon disconnect`), and
//! its HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::canaries::Canaries;
use super::controller::{ControllerError, ControllerHost, ControllerSlot};
use super::membership::{Membership, wall_ms};
use super::runner::Runner;
use crate::api::{ListenerMetrics, NodeListener, Sample, metrics_response, ready_response, serve};
use crate::config::{Config, ControllerConfig, Role, Secret, WorkerConfig};
use crate::lease::{Action, Fence, FenceReading, Inputs, Supervisor};
use crate::notify::admin::Admin;
use crate::probe::ProbeContext;
use crate::rpc::sign::Signer;
use crate::rpc::{Allow, RpcClient, SignedRoutes};

/// Why a worker could not start or stopped serving. Each ends the node (`main` exits 70);
/// none is worth retrying in place.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config given to [`run`] is a viewserver's.
    #[error("not a worker config")]
    NotWorkerConfig,
    /// The RPC client could not be built (`[tls]` files, TLS setup).
    #[error("{0}")]
    Client(String),
    /// The worker listener has no local address.
    #[error("{0}")]
    Listener(#[source] std::io::Error),
    /// The controller host (store, delivery channels) could not be set up.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// Serving `[worker] addr` failed.
    #[error("{0}")]
    Serve(#[source] std::io::Error),
}

/// The listeners a worker serves, bound by the caller.
pub struct Listeners {
    /// `[worker] addr`: `/ready`, `/metrics`, `/disconnect`.
    pub worker: NodeListener,
    /// `[controller] addr`, for a controller-capable worker.
    pub controller: Option<NodeListener>,
    /// `[web] addr`, for a controller-capable worker that serves the JSON API.
    pub web: Option<NodeListener>,
}

struct Node {
    membership: Arc<Membership>,
    /// The controller host of a controller-capable worker.
    host: Option<Arc<ControllerHost>>,
    runner: Arc<Runner>,
    num_threads: usize,
    slot: ControllerSlot,
    disconnect: Arc<Notify>,
    disconnect_pause: Duration,
    /// The connection counters of this node's listeners.
    listeners: ListenerMetrics,
}

/// Runs a worker until `shutdown`. `disconnect` is notified by `SIGUSR1`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    disconnect: Arc<Notify>,
    admin: Admin,
) -> Result<(), WorkerError> {
    let Role::Worker { worker, controller } = &config.role else {
        return Err(WorkerError::NotWorkerConfig);
    };
    let signer = node_signer(&config, worker, controller.as_ref())?;
    let client = RpcClient::new(signer.clone(), config.tls.as_ref())
        .map_err(|e| WorkerError::Client(e.to_string()))?;
    let membership = Membership::new(
        worker.id.0.clone(),
        controller.as_ref().map(|c| c.advertise_addr.clone()),
        worker.view_addr.clone(),
        worker.heartbeat_interval,
        worker.lease,
        client.clone(),
    );
    log_listening(worker, &listeners)?;
    let listener_metrics = listener_metrics(&listeners);
    let tasks = Tasks {
        tracker: TaskTracker::new(),
        shutdown,
    };
    tasks.spawn(membership.clone().run(tasks.shutdown.clone()));
    let parts = Parts {
        signer,
        client,
        membership,
        slot: ControllerSlot::default(),
    };
    let runner = start_runner(&config, worker, &listeners, &parts, &tasks);
    // Results are sent until the very end: the sender stops after the poller.
    let runs_done = CancellationToken::new();
    tasks.spawn(runner.clone().poll_loop(tasks.shutdown.clone()));
    tasks.spawn(runner.clone().send_loop(runs_done.clone()));
    let host = match (controller, listeners.controller) {
        (Some(ccfg), Some(listener)) => Some(start_controller(
            &config,
            ccfg,
            listener,
            listeners.web,
            &parts,
            admin,
            &tasks,
        )?),
        _ => None,
    };
    tasks.spawn(handover(
        parts.membership.clone(),
        disconnect.clone(),
        worker.disconnect_pause,
        tasks.shutdown.clone(),
    ));
    let node = Arc::new(Node {
        membership: parts.membership.clone(),
        host,
        runner: runner.clone(),
        num_threads: worker.num_threads,
        slot: parts.slot.clone(),
        disconnect,
        disconnect_pause: worker.disconnect_pause,
        listeners: listener_metrics,
    });
    let router = worker_router(node, parts.signer.clone(), worker.metrics_token.as_ref());
    let served = serve(listeners.worker, router, tasks.shutdown.clone()).await;
    drain(&runner, worker.num_threads).await;
    runs_done.cancel();
    tasks.tracker.close();
    tasks.tracker.wait().await;
    served.map_err(WorkerError::Serve)
}

/// The connection counters of the worker's listeners, by name.
fn listener_metrics(listeners: &Listeners) -> ListenerMetrics {
    let mut m = ListenerMetrics::default();
    m.add("worker", &listeners.worker);
    if let Some(l) = &listeners.controller {
        m.add("controller", l);
    }
    if let Some(l) = &listeners.web {
        m.add("web", l);
    }
    m
}

/// The node's tasks and the token that stops them.
struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Serves `router` on `listener` until shutdown; a failure is logged as `what` stopped.
    fn serve(&self, what: &'static str, listener: NodeListener, router: Router) {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            if let Err(e) = serve(listener, router, shutdown).await {
                tracing::error!(error = %e, "{what} stopped");
            }
        });
    }
}

/// What a worker's runner, controller host and endpoints share.
struct Parts {
    signer: Arc<Signer>,
    client: RpcClient,
    membership: Arc<Membership>,
    slot: ControllerSlot,
}

/// One signer for both of this node's listeners: it answers to each of their addresses.
fn node_signer(
    config: &Config,
    worker: &WorkerConfig,
    controller: Option<&ControllerConfig>,
) -> Result<Arc<Signer>, WorkerError> {
    let mut own = vec![worker.addr.to_string()];
    if let Some(c) = controller {
        own.extend([c.addr.to_string(), c.advertise_addr.clone()]);
    }
    let signer = config
        .signer(worker.id.as_str())
        .map_err(|e| WorkerError::Client(format!("worker.key: {e}")))?
        .answering_to(&own);
    if controller.is_some() && !signer.holds_cluster_secret() {
        tracing::warn!(
            "this worker holds only its node key (worker.key), not the cluster secret: it can never be named controller, so its [controller] section has no effect"
        );
    }
    Ok(Arc::new(signer))
}

fn log_listening(worker: &WorkerConfig, listeners: &Listeners) -> Result<(), WorkerError> {
    tracing::info!(
        node = %worker.id,
        addr = %listeners.worker.local_addr().map_err(WorkerError::Listener)?,
        controller_addr = ?listeners.controller.as_ref().and_then(|l| l.local_addr().ok()),
        viewservers = ?worker.view_addr,
        tls = listeners.worker.is_tls(),
        "worker listening"
    );
    Ok(())
}

/// The canaries and the runner, whose probes know this node's own listeners.
fn start_runner(
    config: &Config,
    worker: &WorkerConfig,
    listeners: &Listeners,
    parts: &Parts,
    tasks: &Tasks,
) -> Arc<Runner> {
    let own_listeners: Vec<std::net::SocketAddr> = std::iter::once(&listeners.worker)
        .chain(listeners.controller.as_ref())
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let probe_ctx = ProbeContext::new(config.dns.server.clone()).with_own_listeners(own_listeners);
    let canaries = Arc::new(Canaries::new(
        worker.id.as_str(),
        worker.canaries.clone(),
        worker.canary_interval,
    ));
    tasks.spawn(
        canaries
            .clone()
            .run(probe_ctx.clone(), tasks.shutdown.clone()),
    );
    Runner::new(
        parts.membership.clone(),
        parts.client.clone(),
        probe_ctx,
        worker.location.clone(),
        worker.num_threads,
        worker.result_buffer,
        canaries,
    )
}

/// The controller host of a controller-capable worker: its supervisor, the no-controller
/// watch, the controller API and, when `[web] addr` is set, the JSON API.
fn start_controller(
    config: &Config,
    ccfg: &ControllerConfig,
    listener: NodeListener,
    web: Option<NodeListener>,
    parts: &Parts,
    admin: Admin,
    tasks: &Tasks,
) -> Result<Arc<ControllerHost>, WorkerError> {
    let host = ControllerHost::new(
        config,
        ccfg.clone(),
        parts.signer.clone(),
        parts.membership.clone(),
        admin,
    )?;
    // Which database node to use, and whether any answers (see `store::nodes`).
    host.store.watch(tasks.shutdown.clone());
    tasks.spawn(supervise(
        parts.membership.clone(),
        host.clone(),
        parts.slot.clone(),
        tasks.shutdown.clone(),
    ));
    tasks.spawn(super::controller::dbwatch::run(
        host.clone(),
        parts.slot.clone(),
        tasks.shutdown.clone(),
    ));
    tasks.spawn(super::controller::watch::no_controller_loop(
        host.clone(),
        parts.slot.clone(),
        tasks.shutdown.clone(),
    ));
    tasks.spawn(host.clone().deliver_meta_alerts(tasks.shutdown.clone()));
    if let Some(listener) = web {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving the JSON API");
        let web = crate::web::router(
            crate::web::Web::new(host.web_store.clone(), &config.web.api_tokens)
                .with_live(live_check(parts.client.clone(), parts.membership.clone()))
                .with_cluster(cluster(parts.client.clone(), parts.membership.clone()))
                .with_secure_cookies(listener.is_tls())
                .with_deliverer(host.channels()),
        );
        tasks.serve("web API", listener, web);
    }
    tasks.serve("controller API", listener, host.router(parts.slot.clone()));
    Ok(host)
}

/// `/ready`, `/metrics` and `/disconnect`. A hand-over only from this node's operator: a
/// request signed with this worker's own key, never a bare loopback request (a probe's
/// redirect could make one). `/metrics` behind `[worker] metrics_token` when set.
fn worker_router(node: Arc<Node>, signer: Arc<Signer>, metrics_token: Option<&Secret>) -> Router {
    let own_only = Router::new()
        .route(PATH_DISCONNECT, post(disconnect_now))
        .signed(signer, Allow::Own);
    let scrape = crate::web::BearerGate::around(
        Router::new().route("/metrics", get(metrics)),
        metrics_token,
    );
    Router::new()
        .route("/ready", get(ready))
        .merge(scrape)
        .merge(own_only)
        .with_state(node)
}

/// Lets running checks finish (each is bounded by its timeout) so their results are sent.
async fn drain(runner: &Runner, num_threads: usize) {
    let drain_deadline = Instant::now() + Duration::from_secs(35);
    while runner.running(num_threads) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acts as controller exactly while [`Supervisor`] says so: observes the membership and the
/// running term, steps the supervisor, and carries out its actions (start or stop a term,
/// read the fence, sleep until the next wake).
async fn supervise(
    membership: Arc<Membership>,
    host: Arc<ControllerHost>,
    slot: ControllerSlot,
    shutdown: CancellationToken,
) {
    let mut standing = membership.subscribe();
    let mut supervisor = Supervisor::new(membership.interval);
    let mut reading = None;
    loop {
        let now = Instant::now();
        let inputs = observe(&membership, &slot, shutdown.is_cancelled(), now);
        let mut wake = None;
        for action in supervisor.step(&inputs, reading.take(), now) {
            match action {
                Action::Start { epoch, mode } => {
                    tracing::info!(
                        epoch,
                        at_ms = wall_ms(),
                        lease_event = "start",
                        mode = mode.as_str(),
                        "acting as controller"
                    );
                    slot.start(host.clone(), epoch);
                }
                Action::Stop {
                    epoch,
                    reason,
                    lease_end,
                } => {
                    let lease_end_ms =
                        wall_ms().saturating_sub(
                            now.saturating_duration_since(lease_end).as_millis() as u64,
                        );
                    slot.stop(epoch, reason.as_str(), lease_end_ms).await;
                }
                Action::ReadFence { epoch } => {
                    reading = Some(FenceReading {
                        epoch,
                        fence: read_fence(&host, epoch).await,
                    });
                }
                Action::NotActing { epoch } => {
                    tracing::warn!(
                        epoch,
                        lease_event = "not_acting",
                        "a newer epoch holds the fence: not acting"
                    );
                    membership.report_fenced_out(epoch, membership.fence_seen().max(epoch));
                }
                Action::WakeAt(at) => wake = Some(at),
            }
        }
        if reading.is_some() {
            continue; // step again at once with the answer
        }
        if inputs.shutdown {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            changed = standing.changed() => if changed.is_err() { return },
            _ = sleep_until_opt(wake) => {}
        }
    }
}

/// What the supervisor needs to know now.
fn observe(membership: &Membership, slot: &ControllerSlot, shutdown: bool, now: Instant) -> Inputs {
    let standing = membership.standing();
    let stepping_down = membership.stepping_down.load(Ordering::Relaxed);
    Inputs {
        lease: standing.lease(&membership.node, membership.lease, stepping_down, now),
        view_epoch: standing.view.epoch,
        named: standing
            .view
            .controller
            .as_ref()
            .is_some_and(|c| c.node == membership.node),
        stepping_down,
        fence_alone_at: standing.fence_alone_at(
            &membership.node,
            stepping_down,
            membership.interval,
        ),
        term_ended: slot.ended().is_some(),
        shutdown,
    }
}

/// Whether the fence holds an epoch newer than `epoch`, read within a heartbeat interval (at
/// least a second: a black-holed database must not hold up the supervisor).
async fn read_fence(host: &ControllerHost, epoch: u64) -> Fence {
    let limit = host.membership.interval.max(Duration::from_secs(1));
    match tokio::time::timeout(limit, crate::store::fence::current(&host.store)).await {
        Ok(Ok(stored)) if stored.0 > epoch => {
            // If the view still names this node for `epoch`, the group must hear of it.
            host.membership.report_fenced_out(epoch, stored.0);
            Fence::Newer
        }
        Ok(Ok(_)) => Fence::NotNewer,
        Ok(Err(e)) => {
            tracing::warn!(epoch, error = %e, "cannot read the epoch fence");
            Fence::Unreadable
        }
        Err(_) => {
            tracing::warn!(epoch, "cannot read the epoch fence: timed out");
            Fence::Unreadable
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

/// A signed GET of the controller the view names (this node or another), over the controller
/// API; `None` when it does not answer within a second.
fn controller_get<T: serde::de::DeserializeOwned + Send + 'static>(
    client: &RpcClient,
    membership: &Membership,
    path: String,
) -> futures_util::future::BoxFuture<'static, Option<T>> {
    let client = client.clone();
    let controller = membership.standing().view.controller.map(|c| c.addr);
    Box::pin(async move {
        client
            .get(&controller?, &path, Duration::from_secs(1))
            .await
            .ok()
    })
}

/// One check's live state from the acting controller.
fn live_check(client: RpcClient, membership: Arc<Membership>) -> crate::web::LiveCheck {
    Arc::new(move |id| {
        let path =
            crate::role::controller::status::PATH_CHECK_STATUS.replace("{id}", &id.to_string());
        controller_get(&client, &membership, path)
    })
}

/// The viewserver group as configured, and the acting controller's brief view of the cluster.
fn cluster(client: RpcClient, membership: Arc<Membership>) -> crate::web::Cluster {
    crate::web::Cluster {
        viewservers: membership.view_addrs.clone(),
        ask: Arc::new(move || {
            let path = crate::role::controller::status::PATH_SUMMARY.to_string();
            controller_get(&client, &membership, path)
        }),
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

/// The signed hand-over request of `gobearmon disconnect`.
pub const PATH_DISCONNECT: &str = "/disconnect";

/// The answer to [`PATH_DISCONNECT`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Disconnecting {
    pub node: String,
    pub pause_ms: u64,
}

async fn disconnect_now(State(n): State<Arc<Node>>) -> Response {
    n.disconnect.notify_one();
    (
        StatusCode::ACCEPTED,
        axum::Json(Disconnecting {
            node: n.membership.node.clone(),
            pause_ms: n.disconnect_pause.as_millis() as u64,
        }),
    )
        .into_response()
}

/// How long a scrape waits for the per-check series.
const CHECK_METRICS_WAIT: Duration = Duration::from_secs(3);

async fn metrics(State(n): State<Arc<Node>>) -> Response {
    let (more, check_metrics_up) = check_metrics(&n).await;
    metrics_response(
        node_samples(&n)
            .into_iter()
            .chain(check_metrics_up.map(|v| {
                Sample::Gauge(
                    "check_metrics_up",
                    "1 when the per-check series could be read from MySQL for this scrape, 0 when not.",
                    v,
                )
            }))
            .collect(),
        more.into_iter()
            .chain([Box::new(n.listeners.clone()) as Box<dyn prometheus_client::collector::Collector>])
            .collect(),
    )
}

/// The per-check series of a controller-capable worker (from MySQL, and live state when it
/// acts), and `check_metrics_up`; a database that does not answer costs those series, not
/// the node's own.
async fn check_metrics(
    n: &Node,
) -> (
    Option<Box<dyn prometheus_client::collector::Collector>>,
    Option<f64>,
) {
    let Some(host) = &n.host else {
        return (None, None);
    };
    // Bounded well inside a scrape timeout: a hung database costs the per-check series,
    // never the node's own.
    let gathering = crate::role::controller::metrics::gather(host, &n.slot);
    match tokio::time::timeout(CHECK_METRICS_WAIT, gathering).await {
        Ok(Ok(m)) => (Some(Box::new(m)), Some(1.0)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "per-check metrics unavailable");
            (None, Some(0.0))
        }
        Err(_) => {
            tracing::warn!("per-check metrics unavailable: the database took over 3 s");
            (None, Some(0.0))
        }
    }
}

/// The node's own series: view, lease, runner and heartbeats, and the controller host's
/// health on a controller-capable worker.
fn node_samples(n: &Node) -> Vec<Sample> {
    let mut samples = own_samples(n);
    if let Some(host) = &n.host {
        samples.extend(host.stats.samples());
    }
    samples
}

fn own_samples(n: &Node) -> Vec<Sample> {
    let m = &n.membership;
    let standing = m.standing();
    let lease_left = m.current_lease().map_or(0.0, |l| {
        l.until
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    });
    vec![
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
            "heartbeat_rtt_microseconds",
            "Round trips of the answered heartbeats, summed; over heartbeats_answered, the mean.",
            m.stats.answered_rtt_us.load(Ordering::Relaxed),
        ),
        Sample::Counter(
            "heartbeats_failed",
            "Heartbeats refused or unanswered.",
            m.stats.failed.load(Ordering::Relaxed),
        ),
    ]
}
