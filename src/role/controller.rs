//! The controller, hosted by a controller-capable worker while it holds the lease.
//!
//! [`ControllerHost`] holds what survives between terms (config, database pools, signer,
//! delivery channels); [`ControllerSlot`] holds the running [`Term`], if any. A term:
//!
//! 1. raises the epoch fence in MySQL (a term that finds a newer epoch does nothing);
//! 2. loads checks, contacts and alerts, and feeds the voting engine ([`crate::vote`]);
//! 3. hands runs to workers over the work protocol ([`crate::rpc::work`]), counts their
//!    results, and records each flip in one fenced transaction with its outbox rows;
//! 4. runs the outbox dispatcher, follows edits every `reload_period`, and tells the admin
//!    once when checks lose their quorum.
//!
//! It stops the moment the lease lapses (the supervisor in `worker.rs` cancels it), and any
//! fenced write that finds a newer epoch stops it too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use mysql_async::prelude::Queryable;
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::membership::{Membership, wall_ms};
use crate::config::{Config, ControllerConfig};
use crate::model::{CheckId, CheckStatus, ContactId, Epoch, NodeId};
use crate::notify::admin::{AdminKind, AdminNotifier};
use crate::notify::outbox::{self, Dispatcher, WakeHandle};
use crate::notify::{Channels, EventId, Notification, unix_ms};
use crate::rpc::sign::Signer;
use crate::rpc::work::{
    PATH_POLL, PATH_RESULTS, PollReply, PollRequest, ResultsReply, ResultsRequest, RunStatus,
    WorkItem, WrongEpoch,
};
use crate::rpc::{Sender, SignedRoutes};
use crate::store::catalog::Catalog;
use crate::store::fence::{self, FencedTx, Raise};
use crate::store::{Store, StoreError};
use crate::vote::{CheckDef, Effect, Engine, Flip, Outcome, Ticket, VoteConfig};

/// Longest a poll is held when nothing is due.
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);
/// A worker that has not polled for this long is taken as gone; its runs are handed out again.
const WORKER_TIMEOUT: Duration = Duration::from_secs(6);
/// Quorum notices are held back this long after a term starts, while workers connect.
const QUORUM_GRACE: Duration = Duration::from_secs(10);
/// A full reload of the tables at least this often, whatever the change log says.
const FULL_RELOAD: Duration = Duration::from_secs(600);

/// What a controller-capable worker keeps across terms.
pub struct ControllerHost {
    pub node: NodeId,
    pub config: ControllerConfig,
    pub store: Store,
    pub signer: Arc<Signer>,
    pub membership: Arc<Membership>,
    channels: Arc<Channels>,
    admin_mail: Arc<AdminNotifier>,
    admin: mpsc::UnboundedSender<(String, String)>,
}

impl ControllerHost {
    pub fn new(
        config: &Config,
        controller: ControllerConfig,
        signer: Arc<Signer>,
        membership: Arc<Membership>,
        admin: mpsc::UnboundedSender<(String, String)>,
    ) -> Result<Arc<ControllerHost>, String> {
        let store = Store::new(&controller.database).map_err(|e| e.to_string())?;
        let channels = Channels::new(&config.smtp, &config.twilio, controller.delivery.timeout)
            .map_err(|e| e.to_string())?;
        let admin_mail = AdminNotifier::new(&config.smtp, controller.delivery.admin_interval)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(ControllerHost {
            node: NodeId(signer.node().to_string()),
            config: controller,
            store,
            signer,
            membership,
            channels: Arc::new(channels),
            admin_mail: Arc::new(admin_mail),
            admin,
        }))
    }

    /// The controller API, served whether or not this node is the controller (it answers 503
    /// when it is not).
    pub fn router(self: &Arc<Self>, slot: ControllerSlot) -> Router {
        Router::new()
            .route(PATH_POLL, post(poll))
            .route(PATH_RESULTS, post(results))
            .route("/status", get(status))
            .signed(self.signer.clone())
            .with_state(slot)
    }
}

struct Running {
    epoch: u64,
    token: CancellationToken,
    task: JoinHandle<()>,
    term: Arc<Mutex<Option<Arc<Term>>>>,
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

    /// The term, once it has loaded and can serve workers.
    fn term(&self) -> Option<Arc<Term>> {
        let running = self.lock();
        let r = running.as_ref()?;
        r.term.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The running term if it acts for `epoch`; otherwise the answer a worker gets (503 when
    /// this node is not the controller, 409 with our epoch when the epochs differ).
    // The error is the response itself, returned straight to axum on a cold path.
    #[allow(clippy::result_large_err)]
    fn term_for(&self, epoch: u64) -> Result<Arc<Term>, Response> {
        let term = self.term().ok_or_else(not_controller)?;
        if term.epoch.0 != epoch {
            return Err(wrong_epoch(&term));
        }
        Ok(term)
    }

    /// Starts a term for `epoch`.
    pub fn start(&self, host: Arc<ControllerHost>, epoch: u64) {
        let token = CancellationToken::new();
        let term = Arc::new(Mutex::new(None));
        let task = tokio::spawn(act(host, Epoch(epoch), token.clone(), term.clone()));
        let mut slot = self.lock();
        if let Some(old) = slot.take() {
            // Only a term that has ended on its own is replaced; its end is logged here.
            old.token.cancel();
            log_release(old.epoch, "the term stopped itself", wall_ms());
        }
        *slot = Some(Running {
            epoch,
            token,
            task,
            term,
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

/// The line that closes a term (tests read `at_ms` and `lease_end_ms` from it to compare lease
/// intervals across nodes).
fn log_release(epoch: u64, why: &str, lease_end_ms: u64) {
    tracing::info!(
        epoch,
        at_ms = wall_ms(),
        lease_end_ms,
        reason = why,
        "lease released; stopped acting as controller"
    );
}

/// A worker as the controller sees it.
struct WorkerSlot {
    /// Runs handed to it and not yet polled. Only ids: the definition is copied into the
    /// [`WorkItem`] when the worker takes the run, so that a due burst (every check of a new
    /// term is due at once) does not queue a copy of every definition.
    queue: VecDeque<Queued>,
    wake: Arc<Notify>,
    last_seen: Instant,
    location: String,
    live: bool,
}

/// A run waiting in a worker's queue.
#[derive(Clone, Copy)]
struct Queued {
    check: CheckId,
    ticket: u64,
}

/// The latest result of a check from one worker, as `check_results` stores it. Only what is
/// written is kept: a [`crate::rpc::work::WorkResult`] is about eight times larger (the run's
/// details), and the map holds one per check and worker between two writes.
struct Latest {
    status: RunStatus,
    message: String,
    duration_ms: u64,
}

/// One controller term.
struct Term {
    epoch: Epoch,
    host: Arc<ControllerHost>,
    token: CancellationToken,
    started: Instant,
    engine: Mutex<Engine>,
    /// The rows and their parsed definitions. Held only briefly: a reload reads the database
    /// without it and applies what it read under it.
    catalog: Mutex<Catalog>,
    workers: Mutex<HashMap<NodeId, WorkerSlot>>,
    /// Wakes the scheduling loop (a result arrived, a worker came or went).
    schedule: Notify,
    /// Latest results waiting to be written to `check_results`.
    latest: Mutex<HashMap<(CheckId, NodeId), Latest>>,
    outbox: WakeHandle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One controller term: raise the fence, load, then run until cancelled.
async fn act(
    host: Arc<ControllerHost>,
    epoch: Epoch,
    token: CancellationToken,
    published: Arc<Mutex<Option<Arc<Term>>>>,
) {
    let raised = tokio::select! {
        _ = token.cancelled() => return,
        r = raise_fence(&host, epoch, &token) => r,
    };
    if !raised {
        return;
    }
    let catalog = loop {
        match Catalog::load(&host.store, FULL_RELOAD).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(%epoch, error = %e, "cannot load checks yet");
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let dispatcher = Dispatcher::new(
        host.store.clone(),
        epoch,
        host.node.clone(),
        host.config.delivery.clone(),
        host.channels.clone(),
        host.admin_mail.clone(),
    );
    let now = Instant::now();
    let mut engine = Engine::new(VoteConfig {
        confirmations: host.config.confirmations,
        assignment_timeout: host.config.assignment_timeout,
    });
    for row in catalog.checks() {
        engine.upsert_check(&CheckDef::from_row(row), now);
    }
    let checks = catalog.check_count();
    let term = Arc::new(Term {
        epoch,
        host: host.clone(),
        token: token.clone(),
        started: now,
        engine: Mutex::new(engine),
        catalog: Mutex::new(catalog),
        workers: Mutex::new(HashMap::new()),
        schedule: Notify::new(),
        latest: Mutex::new(HashMap::new()),
        outbox: dispatcher.waker(),
    });
    tracing::info!(%epoch, checks, "controller term started");
    let tasks = TaskTracker::new();
    let t = term.clone();
    tasks.spawn(async move {
        match dispatcher.run(t.token.child_token()).await {
            Err(StoreError::Fenced { ours, stored }) => {
                tracing::error!(%ours, %stored, "outbox fenced: a newer controller took over");
                t.token.cancel();
            }
            Err(e) => tracing::error!(error = %e, "outbox dispatcher stopped"),
            Ok(()) => {}
        }
    });
    tasks.spawn(term.clone().schedule_loop());
    tasks.spawn(term.clone().reload_loop());
    tasks.spawn(term.clone().liveness_loop());
    tasks.spawn(term.clone().flush_loop());
    *lock(&published) = Some(term.clone());
    token.cancelled().await;
    *lock(&published) = None;
    tasks.close();
    tasks.wait().await;
    tracing::info!(%epoch, "controller term ended");
}

/// Raises the fence, retrying while the database is unreachable. False when a newer epoch
/// holds it (this term must not act).
async fn raise_fence(host: &ControllerHost, epoch: Epoch, token: &CancellationToken) -> bool {
    loop {
        match fence::raise(&host.store, epoch, &host.node).await {
            Ok(Raise::Raised | Raise::AlreadyHeld) => return true,
            Ok(Raise::Superseded { stored }) => {
                tracing::error!(%epoch, %stored, "a newer controller epoch holds the fence; not acting");
                return false;
            }
            Err(e) => {
                tracing::warn!(%epoch, error = %e, "cannot raise the epoch fence yet");
                tokio::select! {
                    _ = token.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

impl Term {
    /// Whether this term may still act: not cancelled, and the lease is held for its epoch.
    fn may_act(&self) -> bool {
        !self.token.is_cancelled() && self.host.membership.may_act(self.epoch.0)
    }

    /// Hands due runs to the workers' queues, whenever something may have become due.
    async fn schedule_loop(self: Arc<Self>) {
        loop {
            let (due, next) = {
                let mut engine = lock(&self.engine);
                let now = Instant::now();
                (engine.due(now), engine.next_wake())
            };
            if !due.is_empty() && self.may_act() {
                let catalog = lock(&self.catalog);
                let mut workers = lock(&self.workers);
                for a in due {
                    let (Some(_), Some(w)) = (catalog.check(a.check), workers.get_mut(&a.node))
                    else {
                        continue; // the engine times the run out and hands it elsewhere
                    };
                    w.queue.push_back(Queued {
                        check: a.check,
                        ticket: a.ticket.0,
                    });
                    w.wake.notify_one();
                }
            }
            self.quorum_notices();
            let wake = next
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
                .min(Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = self.schedule.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn quorum_notices(&self) {
        if self.started.elapsed() < QUORUM_GRACE {
            return;
        }
        let Some(change) = lock(&self.engine).take_quorum_changes() else {
            return;
        };
        if change.lost.is_empty() {
            if !change.restored.is_empty() {
                tracing::info!(
                    checks = change.restored.len(),
                    live = change.live_workers,
                    "quorum restored"
                );
            }
            return;
        }
        tracing::warn!(
            checks = change.lost.len(),
            live = change.live_workers,
            "insufficient quorum"
        );
        let list: Vec<String> = {
            let catalog = lock(&self.catalog);
            change
                .lost
                .iter()
                .take(50)
                .map(|id| format!("  {id} {}", catalog.check(*id).map_or("", |r| &r.name)))
                .collect()
        };
        let body = format!(
            "{} check(s) have fewer live workers ({}) than their confirmations; they keep their \
             status and cannot flip until workers come back:\n{}\n",
            change.lost.len(),
            change.live_workers,
            list.join("\n")
        );
        let _ = self
            .host
            .admin
            .send((AdminKind::InsufficientQuorum.subject().to_string(), body));
    }

    /// Follows edits to checks, contacts and alerts.
    async fn reload_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(self.host.config.reload_period) => {}
            }
            let plan = lock(&self.catalog).plan();
            let fetched = match Catalog::fetch(&self.host.store, plan).await {
                Ok(f) => {
                    failures = 0;
                    f
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "reload failed");
                    if failures.is_multiple_of(10) {
                        let _ = self.host.admin.send((
                            AdminKind::ReloadErrors.subject().to_string(),
                            format!("Got {failures} successive reload errors! Last: {e}"),
                        ));
                    }
                    continue;
                }
            };
            let mut catalog = lock(&self.catalog);
            let changes = catalog.apply(fetched);
            if changes.is_empty() {
                continue;
            }
            let now = Instant::now();
            let mut engine = lock(&self.engine);
            for id in &changes.checks_upserted {
                if let Some(row) = catalog.check(*id) {
                    engine.upsert_check(&CheckDef::from_row(row), now);
                }
            }
            for id in &changes.checks_removed {
                engine.remove_check(*id);
            }
            drop((engine, catalog));
            tracing::info!(
                upserted = changes.checks_upserted.len(),
                removed = changes.checks_removed.len(),
                contacts = changes.contacts_changed,
                alerts = changes.alerts_changed,
                "reloaded"
            );
            self.schedule.notify_one();
        }
    }

    /// Marks workers that stopped polling as gone.
    async fn liveness_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = Instant::now();
            let gone: Vec<NodeId> = {
                let mut workers = lock(&self.workers);
                workers
                    .iter_mut()
                    .filter(|(_, w)| w.live && now.duration_since(w.last_seen) > WORKER_TIMEOUT)
                    .map(|(n, w)| {
                        w.live = false;
                        w.queue.clear();
                        n.clone()
                    })
                    .collect()
            };
            if gone.is_empty() {
                continue;
            }
            let mut engine = lock(&self.engine);
            for node in &gone {
                tracing::warn!(%node, "worker silent; its runs go to others");
                engine.worker_down(node, now);
            }
            drop(engine);
            self.schedule.notify_one();
        }
    }

    /// Writes the latest result per check and worker every few seconds (one statement).
    async fn flush_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            // Taken whole, not drained: the map grows to a due burst and would keep that capacity.
            let batch: Vec<((CheckId, NodeId), Latest)> = std::mem::take(&mut *lock(&self.latest))
                .into_iter()
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = write_latest(&self.host.store, self.epoch, &batch).await {
                tracing::debug!(error = %e, "could not store latest results");
            }
        }
    }

    fn seen(&self, node: &NodeId, location: Option<&str>) -> Arc<Notify> {
        let now = Instant::now();
        let mut workers = lock(&self.workers);
        let w = workers.entry(node.clone()).or_insert_with(|| WorkerSlot {
            queue: VecDeque::new(),
            wake: Arc::new(Notify::new()),
            last_seen: now,
            location: String::new(),
            live: false,
        });
        w.last_seen = now;
        if let Some(l) = location {
            w.location = l.to_string();
        }
        let wake = w.wake.clone();
        if !w.live {
            w.live = true;
            drop(workers);
            tracing::info!(%node, "worker connected");
            lock(&self.engine).worker_up(node, now);
            self.schedule.notify_one();
        }
        wake
    }

    fn take(&self, node: &NodeId, n: usize) -> Vec<WorkItem> {
        let queued: Vec<Queued> = {
            let mut workers = lock(&self.workers);
            match workers.get_mut(node) {
                Some(w) => {
                    let n = n.min(w.queue.len());
                    w.queue.drain(..n).collect()
                }
                None => return Vec::new(),
            }
        };
        // A check removed since it was queued is skipped: the engine withdrew its runs.
        let catalog = lock(&self.catalog);
        queued
            .into_iter()
            .filter_map(|q| {
                Some(WorkItem {
                    check: q.check,
                    ticket: q.ticket,
                    epoch: self.epoch.0,
                    spec: catalog.spec(q.check)?.clone(),
                })
            })
            .collect()
    }

    /// Records a flip: status, history and outbox rows in one fenced transaction.
    async fn record_flip(self: Arc<Self>, flip: Flip, message: String) {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.try_record(&flip, &message).await {
                Ok(Some(event)) => {
                    tracing::info!(check = %flip.check, from = %flip.from, to = %flip.to, event, confirmed_by = ?flip.confirmed_by, "flip recorded");
                    self.outbox.wake();
                    return;
                }
                Ok(None) => return,
                Err(StoreError::Fenced { ours, stored }) => {
                    tracing::error!(%ours, %stored, "flip fenced: a newer controller took over; stopping");
                    lock(&self.engine).reset_status(flip.check, flip.from, Instant::now());
                    self.token.cancel();
                    return;
                }
                Err(e) if attempt < 5 && !self.token.is_cancelled() => {
                    tracing::warn!(check = %flip.check, error = %e, attempt, "cannot record flip yet");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    // Nothing was written: go back to the stored status, so the change is
                    // detected and recorded again later rather than lost.
                    tracing::error!(check = %flip.check, error = %e, "flip not recorded; it will be detected again");
                    lock(&self.engine).reset_status(flip.check, flip.from, Instant::now());
                    return;
                }
            }
        }
    }

    async fn try_record(&self, flip: &Flip, message: &str) -> Result<Option<i64>, StoreError> {
        let (row, contacts) = {
            let catalog = lock(&self.catalog);
            let Some(row) = catalog.check(flip.check).cloned() else {
                return Ok(None); // deleted meanwhile
            };
            let contacts: Vec<ContactId> = catalog
                .contacts_for_flip(flip.check, flip.to)
                .iter()
                .map(|c| c.id)
                .collect();
            (row, contacts)
        };
        if !self.may_act() {
            return Err(StoreError::Fenced {
                ours: self.epoch,
                stored: self.epoch,
            });
        }
        let mut tx = FencedTx::begin(&self.host.store, self.epoch).await?;
        let stored: Option<Option<String>> = tx
            .tx()
            .exec_first(
                "SELECT status FROM checks WHERE id = ? FOR UPDATE",
                (flip.check.0,),
            )
            .await?;
        let Some(stored) = stored else {
            tx.rollback().await?;
            return Ok(None);
        };
        let stored = stored
            .as_deref()
            .and_then(CheckStatus::parse)
            .unwrap_or(CheckStatus::Online);
        if stored == flip.to {
            // Already recorded (by an earlier term): recording it again would notify twice.
            tx.rollback().await?;
            return Ok(None);
        }
        tx.tx()
            .exec_drop(
                "UPDATE checks SET status = ? WHERE id = ?",
                (flip.to.as_str(), flip.check.0),
            )
            .await?;
        tx.tx()
            .exec_drop(
                "INSERT INTO check_events (check_id, type) VALUES (?, ?)",
                (flip.check.0, flip.to.as_str()),
            )
            .await?;
        let event = tx.tx().last_insert_id().unwrap_or(0) as i64;
        let notification = Notification {
            event_id: EventId(event),
            check_id: flip.check,
            name: row.name.clone(),
            check_type: row.check_type.clone(),
            data: row.data.clone(),
            old_status: flip.from,
            new_status: flip.to,
            message: if flip.to == CheckStatus::Online {
                String::new()
            } else {
                message.to_string()
            },
            time_ms: unix_ms(SystemTime::now()),
            confirmed_by: flip.confirmed_by.clone(),
            test: false,
        };
        outbox::enqueue(&mut tx, &notification, &contacts).await?;
        tx.commit().await?;
        Ok(Some(event))
    }
}

async fn write_latest(
    store: &Store,
    epoch: Epoch,
    batch: &[((CheckId, NodeId), Latest)],
) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    for chunk in batch.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO check_results (check_id, node_id, status, message, duration_ms, epoch) VALUES ",
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 6);
        for (i, ((check, node), r)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?)");
            let status = match r.status {
                RunStatus::Online => "online",
                RunStatus::Offline => "offline",
                RunStatus::Fail => "fail",
            };
            let message: String = r.message.chars().take(1024).collect();
            params.extend([
                check.0.into(),
                node.0.clone().into(),
                status.into(),
                message.into(),
                r.duration_ms.min(i32::MAX as u64).into(),
                epoch.0.into(),
            ]);
        }
        sql.push_str(
            " ON DUPLICATE KEY UPDATE status = VALUES(status), message = VALUES(message), \
             duration_ms = VALUES(duration_ms), epoch = VALUES(epoch), updated_at = CURRENT_TIMESTAMP(3)",
        );
        conn.exec_drop(sql, mysql_async::Params::Positional(params))
            .await?;
    }
    Ok(())
}

fn not_controller() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "not the controller\n").into_response()
}

fn wrong_epoch(term: &Term) -> Response {
    (
        StatusCode::CONFLICT,
        Json(WrongEpoch {
            controller_epoch: term.epoch.0,
        }),
    )
        .into_response()
}

async fn poll(
    State(slot): State<ControllerSlot>,
    Extension(sender): Extension<Sender>,
    Json(req): Json<PollRequest>,
) -> Response {
    let term = match slot.term_for(req.epoch) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    let node = NodeId(sender.0);
    let wake = term.seen(&node, Some(&req.location));
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_POLL_WAIT);
    let capacity = req.capacity as usize;
    loop {
        let items = term.take(&node, capacity);
        if !items.is_empty() || Instant::now() >= deadline || !term.may_act() {
            term.seen(&node, None);
            return Json(PollReply {
                epoch: term.epoch.0,
                assignments: if term.may_act() { items } else { Vec::new() },
            })
            .into_response();
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = term.token.cancelled() => {}
        }
    }
}

async fn results(
    State(slot): State<ControllerSlot>,
    Extension(sender): Extension<Sender>,
    Json(req): Json<ResultsRequest>,
) -> Response {
    let term = match slot.term_for(req.epoch) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    let node = NodeId(sender.0);
    term.seen(&node, None);
    let now = Instant::now();
    let mut reply = ResultsReply::default();
    let mut flips = Vec::new();
    {
        let mut engine = lock(&term.engine);
        let mut latest = lock(&term.latest);
        for r in req.results {
            if r.epoch != term.epoch.0 {
                reply.ignored += 1;
                continue;
            }
            let outcome = match r.status {
                RunStatus::Online => Outcome::Online,
                RunStatus::Offline => Outcome::Offline,
                RunStatus::Fail => Outcome::Fail,
            };
            let effect = engine.result(&node, r.check, Ticket(r.ticket), outcome, now);
            match &effect {
                Effect::UnknownCheck | Effect::Stale => reply.ignored += 1,
                _ => reply.accepted += 1,
            }
            if let Effect::Flip(flip) = effect {
                flips.push((flip, r.message.clone()));
            }
            latest.insert(
                (r.check, node.clone()),
                Latest {
                    status: r.status,
                    message: r.message,
                    duration_ms: r.duration_ms,
                },
            );
        }
    }
    for (flip, message) in flips {
        tokio::spawn(term.clone().record_flip(flip, message));
    }
    term.schedule.notify_one();
    Json(reply).into_response()
}

#[derive(Serialize)]
struct WorkerStatus {
    id: String,
    location: String,
    last_seen_ms_ago: u64,
    stale: bool,
    checks_in_flight: usize,
    queued: usize,
}

#[derive(Serialize)]
struct LastResultStatus {
    worker: String,
    result: &'static str,
    ms_ago: u64,
}

#[derive(Serialize)]
struct CheckStatusView {
    id: CheckId,
    name: String,
    status: CheckStatus,
    confirmations: u32,
    open_round: Vec<String>,
    rounds_completed: u32,
    insufficient_quorum: bool,
    in_flight: Vec<String>,
    last_results: Vec<LastResultStatus>,
}

#[derive(Serialize)]
struct StatusAnswer {
    epoch: u64,
    controller: String,
    viewserver_leader: Option<String>,
    live_workers: usize,
    workers: Vec<WorkerStatus>,
    checks: Vec<CheckStatusView>,
}

async fn status(State(slot): State<ControllerSlot>) -> Response {
    let Some(term) = slot.term() else {
        return not_controller();
    };
    let now = Instant::now();
    let snapshot = lock(&term.engine).snapshot();
    let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
    let workers = {
        let slots = lock(&term.workers);
        snapshot
            .workers
            .iter()
            .map(|w| {
                let s = slots.get(&w.node);
                WorkerStatus {
                    id: w.node.0.clone(),
                    location: s.map(|s| s.location.clone()).unwrap_or_default(),
                    last_seen_ms_ago: s.map_or(u64::MAX, |s| ago(s.last_seen)),
                    stale: !w.live,
                    checks_in_flight: w.in_flight.len(),
                    queued: s.map_or(0, |s| s.queue.len()),
                }
            })
            .collect()
    };
    // Names only, under a short lock: the catalog is what hands out work.
    let names: Vec<String> = {
        let catalog = lock(&term.catalog);
        snapshot
            .checks
            .iter()
            .map(|c| {
                catalog
                    .check(c.id)
                    .map(|r| r.name.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let checks = snapshot
        .checks
        .iter()
        .zip(names)
        .map(|(c, name)| CheckStatusView {
            id: c.id,
            name,
            status: c.status,
            confirmations: c.confirmations,
            open_round: c.round.iter().map(|n| n.0.clone()).collect(),
            rounds_completed: c.rounds_completed,
            insufficient_quorum: c.insufficient_quorum,
            in_flight: c.in_flight.iter().map(|f| f.node.0.clone()).collect(),
            last_results: c
                .last_results
                .iter()
                .map(|r| LastResultStatus {
                    worker: r.node.0.clone(),
                    result: r.outcome.as_str(),
                    ms_ago: ago(r.at),
                })
                .collect(),
        })
        .collect();
    Json(StatusAnswer {
        epoch: term.epoch.0,
        controller: term.host.node.0.clone(),
        viewserver_leader: term.host.membership.standing().leader_addr,
        live_workers: snapshot.live_workers,
        workers,
        checks,
    })
    .into_response()
}
