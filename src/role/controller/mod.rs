//! The controller, hosted by a controller-capable worker while the supervisor
//! ([`crate::lease`]) says it may act.
//!
//! This file owns what lives between terms: [`ControllerHost`] (config, database pools,
//! signer, delivery channels) and [`ControllerSlot`] (the running term, if any, started and
//! stopped by the supervisor in `worker.rs`). A term is made of:
//!
//! - [`term`]: one term's life: raise the fence, load the catalog, start its tasks (all
//!   tracked, all ending with the term), publish a handle, wait for the end.
//! - [`owner`]: the one task that owns a term's state (voting engine, catalog, worker table,
//!   latest results); everything else talks to it by message.
//! - [`flips`]: the task that records flips, in the order they happened.
//! - [`history`]: the tasks that write result history and roll it up and prune it.
//! - [`push`]: the task that reads what push checks' jobs pushed, for the owner to judge.
//! - [`api`]: the HTTP handlers (`poll`, `results`, `status`), which only send messages.
//! - [`status`]: the JSON answer behind `gobearmon status`.
//! - [`metrics`]: the per-check series of `/metrics`, acting or not.

mod api;
pub mod beat;
pub mod dbwatch;
mod flips;
mod history;
pub mod metrics;
mod owner;
mod policy;
mod push;
mod rate;
pub mod stats;
pub mod status;
mod term;
pub mod watch;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::membership::{Membership, wall_ms};
use crate::config::{Config, ControllerConfig, HistoryConfig};
use crate::model::{Epoch, NodeId};
use crate::notify::Channels;
use crate::notify::admin::{Admin, AdminKind, AdminNotifier};
use crate::rpc::sign::Signer;
use crate::rpc::work::{PATH_POLL, PATH_RESULTS};
use crate::rpc::{Allow, SignedRoutes};
use crate::store::Store;
use term::TermHandle;

/// Why a controller host could not be set up. Each is a config or environment problem found
/// at start: retrying without changing the config does not help.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// `[controller] database` could not be turned into connection pools.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The contact delivery channels (SMTP, Twilio) could not be built.
    #[error("{0}")]
    Channels(#[source] crate::notify::NotifyError),
    /// The admin webhook client could not be built.
    #[error("{0}")]
    AdminWebhook(#[source] crate::notify::NotifyError),
}

/// What a controller-capable worker keeps across terms.
pub struct ControllerHost {
    pub node: NodeId,
    pub config: ControllerConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// The pools of the fence, flip, outbox and history writes.
    pub store: Store,
    /// The web listener's own small pools ([`Store::for_web`]): the dashboard, API, status
    /// pages, push endpoints and `/metrics`, never the pools above.
    pub web_store: Store,
    pub signer: Arc<Signer>,
    pub membership: Arc<Membership>,
    channels: Arc<Channels>,
    admin_mail: Arc<AdminNotifier>,
    admin: mpsc::UnboundedSender<(String, String)>,
    /// Dead man's switch beats delivered (`heartbeat_url`).
    pub beats: std::sync::atomic::AtomicU64,
    /// What the per-check `/metrics` series keep between scrapes.
    metrics: tokio::sync::Mutex<metrics::MetricsCache>,
    /// Meta-alerts to `[smtp] admin` and `admin_webhook` (one attempt each; the queue in
    /// MySQL retries).
    pub meta: Arc<crate::notify::meta::MetaNotifier>,
    /// Wakes this node's meta-alert delivery when it queued one.
    meta_wake: Arc<tokio::sync::Notify>,
    /// Counters for `/metrics`.
    pub stats: stats::HostStats,
    /// The open meta-alerts and the database's canaries, as last read.
    pub vantage: watch::VantageState,
}

impl ControllerHost {
    /// The delivery channels (`[smtp]`, `[twilio]`, HTTP), for the dashboard's test
    /// notifications.
    pub fn channels(&self) -> Arc<Channels> {
        self.channels.clone()
    }

    pub fn new(
        config: &Config,
        controller: ControllerConfig,
        signer: Arc<Signer>,
        membership: Arc<Membership>,
        admin: Admin,
    ) -> Result<Arc<ControllerHost>, ControllerError> {
        let store = Store::new(&controller.database)?;
        let web_store = Store::for_web(&controller.database)?;
        let channels = Channels::new(&config.smtp, &config.twilio, controller.delivery.timeout)
            .map_err(ControllerError::Channels)?;
        let Admin {
            notices: admin,
            mail: admin_mail,
        } = admin;
        let meta = crate::notify::meta::MetaNotifier::new(
            signer.node(),
            admin_mail.clone(),
            controller.meta.admin_webhook.clone().map(|u| {
                let secret = controller.meta.admin_webhook_secret.clone();
                (u, secret)
            }),
            controller.delivery.timeout,
        )
        .map_err(ControllerError::AdminWebhook)?;
        Ok(Arc::new(ControllerHost {
            node: NodeId(signer.node().to_string()),
            config: controller,
            history: config.history.clone(),
            store,
            web_store,
            signer,
            membership,
            channels: Arc::new(channels),
            admin_mail,
            admin,
            beats: std::sync::atomic::AtomicU64::new(0),
            metrics: Default::default(),
            meta: Arc::new(meta),
            meta_wake: Arc::default(),
            stats: stats::HostStats::default(),
            vantage: watch::VantageState::default(),
        }))
    }

    /// The controller API, served whether or not this node is the controller (it answers 503
    /// when it is not).
    pub fn router(self: &Arc<Self>, slot: ControllerSlot) -> Router {
        // Any worker may poll and report, as itself; the status (every check's parameters,
        // masked) only for holders of the cluster secret.
        let work = Router::new()
            .route(PATH_POLL, post(api::poll))
            .route(PATH_RESULTS, post(api::results))
            .signed(self.signer.clone(), Allow::Any);
        let status = Router::new()
            .route("/status", get(api::status))
            .route(status::PATH_CHECK_STATUS, get(api::check_status))
            .route(status::PATH_SUMMARY, get(api::summary))
            .signed(self.signer.clone(), Allow::Trusted);
        work.merge(status).with_state(slot)
    }

    /// Delivers the queued meta-alerts until `shutdown` (on every controller-capable worker,
    /// acting or not: see [`crate::notify::meta_delivery`]).
    pub async fn deliver_meta_alerts(self: Arc<Self>, shutdown: CancellationToken) {
        crate::notify::meta_delivery::MetaDelivery {
            store: self.store.clone(),
            node: self.node.0.clone(),
            notifier: self.meta.clone(),
            admin: self.admin_mail.clone(),
            config: self.config.delivery.clone(),
            stats: self.stats.meta.clone(),
            wake: self.meta_wake.clone(),
        }
        .run(shutdown)
        .await
    }

    /// Tells the admin (the notifier rate-limits each kind).
    fn tell_admin(&self, kind: AdminKind, body: String) {
        let _ = self.admin.send((kind.subject().to_string(), body));
    }

    /// Tells the admin under a subject of its own (one per distinct problem, so problems do
    /// not rate-limit each other).
    fn tell_admin_subject(&self, subject: String, body: String) {
        let _ = self.admin.send((subject, body));
    }
}

struct Running {
    epoch: u64,
    token: CancellationToken,
    task: JoinHandle<()>,
    /// The term's handle once it has loaded and can serve workers.
    handle: Arc<Mutex<Option<TermHandle>>>,
}

/// The running term of this node's controller, if any. Cheap to clone.
#[derive(Clone, Default)]
pub struct ControllerSlot {
    running: Arc<Mutex<Option<Running>>>,
}

impl ControllerSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch of the running term; a term that has ended on its own does not count.
    pub fn epoch(&self) -> Option<u64> {
        self.slot_epoch(false)
    }

    /// The epoch of a term that has ended on its own (a fenced write, or it could no longer
    /// act) and has not been stopped yet.
    pub fn ended(&self) -> Option<u64> {
        self.slot_epoch(true)
    }

    fn slot_epoch(&self, finished: bool) -> Option<u64> {
        self.lock()
            .as_ref()
            .filter(|t| t.task.is_finished() == finished)
            .map(|t| t.epoch)
    }

    /// The term's handle, once it has loaded and can serve workers.
    fn handle(&self) -> Option<TermHandle> {
        let running = self.lock();
        let r = running.as_ref()?;
        r.handle.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts a term for `epoch`. The supervisor stops the running term first; one that ended
    /// on its own and was not reaped yet is replaced (and its end logged).
    pub fn start(&self, host: Arc<ControllerHost>, epoch: u64) {
        let token = CancellationToken::new();
        let handle = Arc::new(Mutex::new(None));
        let task = tokio::spawn(term::act(host, Epoch(epoch), token.clone(), handle.clone()));
        let mut slot = self.lock();
        if let Some(old) = slot.take() {
            old.token.cancel();
            log_release(old.epoch, "the term stopped itself", wall_ms());
        }
        *slot = Some(Running {
            epoch,
            token,
            task,
            handle,
        });
    }

    /// Stops the term for `epoch` at once and waits for it to end. `lease_end_ms` is the
    /// wall-clock time the lease ended (logged, so lease intervals can be compared across
    /// nodes).
    pub async fn stop(&self, epoch: u64, why: &str, lease_end_ms: u64) {
        let running = {
            let mut slot = self.lock();
            match slot.as_ref() {
                Some(t) if t.epoch == epoch => slot.take(),
                _ => None,
            }
        };
        if let Some(running) = running {
            running.token.cancel();
            log_release(epoch, why, lease_end_ms);
            if let Err(e) = running.task.await {
                tracing::error!(epoch, error = %e, "controller task failed");
            }
        }
    }
}

/// The line that closes a term (tests read its `lease_event`, `at_ms` and `lease_end_ms`
/// fields to compare lease intervals across nodes).
fn log_release(epoch: u64, why: &str, lease_end_ms: u64) {
    tracing::info!(
        epoch,
        at_ms = wall_ms(),
        lease_end_ms,
        lease_event = "stop",
        reason = why,
        "stopped acting as controller"
    );
}
