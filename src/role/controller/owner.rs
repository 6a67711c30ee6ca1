//! The owner of a term's state: the voting engine, the catalog, the worker table and the
//! latest results live in one task, [`Owner::run`]. Handlers, the reload and flush loops and
//! the flip writer send it a [`Msg`] and await the reply; nothing else touches the state, so
//! there is no lock and no lock order.
//!
//! The owner never awaits IO: it answers from memory, hands flips to the writer
//! ([`super::flips`]) through an unbounded queue, and wakes itself when runs fall due.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ControllerHost;
use super::status::{self, StatusAnswer};
use super::watch::WorkerHealth;
use crate::canary::CanaryReport;
use crate::model::{CheckId, CheckStatus, Epoch, NodeId};
use crate::notify::admin::AdminKind;
use crate::notify::{EventId, Notification, unix_ms};
use crate::rpc::work::{ResultsReply, RunStatus, WorkItem, WorkResult};
use crate::store::catalog::{Catalog, Fetched, Plan};
use crate::store::flips::FlipWrite;
use crate::store::history::RawResult;
use crate::store::results::{LatestResult, probe_columns};
use crate::vote::{CheckDef, Effect, Engine, Flip, Outcome, Ticket, VoteConfig};

/// A worker that has not polled for this long is taken as gone; its runs are handed out again.
const WORKER_TIMEOUT: Duration = Duration::from_secs(6);
/// Quorum notices are held back this long after a term starts, while workers connect.
const QUORUM_GRACE: Duration = Duration::from_secs(10);
/// The owner looks at the clock at least this often (liveness, quorum notices).
const TICK: Duration = Duration::from_secs(1);
/// Results held for the history writer while it is busy (a slow database); two minutes of
/// 100,000 checks at 60 s.
pub(super) const HISTORY_BUFFER: usize = 200_000;

/// A request to the owner.
pub(super) enum Msg {
    /// A worker polls: it is alive; take up to `capacity` of its queued runs.
    Poll {
        node: NodeId,
        location: String,
        capacity: usize,
        /// The worker's canary report, `None` when it runs none.
        canaries: Option<CanaryReport>,
        reply: oneshot::Sender<Taken>,
    },
    /// Every worker's liveness and canaries, for the meta-alerts.
    Workers {
        reply: oneshot::Sender<Vec<WorkerHealth>>,
    },
    /// A worker's results.
    Results {
        node: NodeId,
        results: Vec<WorkResult>,
        reply: oneshot::Sender<ResultsReply>,
    },
    /// The answer behind `gobearmon status`.
    Status {
        reply: oneshot::Sender<StatusAnswer>,
    },
    /// The cluster in brief, for the dashboard.
    Summary {
        reply: oneshot::Sender<status::ClusterSummary>,
    },
    /// One check's live state (its open round, runs in flight, latest results).
    CheckStatus {
        id: CheckId,
        reply: oneshot::Sender<Option<status::CheckStatusView>>,
    },
    /// Every check's confirmed status and whether it is in insufficient quorum, for
    /// `/metrics`.
    Live {
        reply: oneshot::Sender<Vec<LiveCheck>>,
    },
    /// How many checks there are, and how many are in insufficient quorum.
    Quorum {
        reply: oneshot::Sender<(usize, usize)>,
    },
    /// What the next reload must read.
    Plan { reply: oneshot::Sender<Plan> },
    /// What a reload read.
    Apply { fetched: Fetched },
    /// The latest results gathered since the last call.
    TakeLatest {
        reply: oneshot::Sender<Vec<LatestResult>>,
    },
    /// The results for history gathered since the last call, and how many were dropped
    /// because nobody took them in time.
    TakeHistory {
        reply: oneshot::Sender<(Vec<RawResult>, u64)>,
    },
    /// A read of what push checks' jobs pushed, begun at `read_at` (`push.rs`).
    Pushes {
        rows: Vec<crate::push::PushRow>,
        read_at: Instant,
    },
    /// The writer could not record a flip (or found another status stored): the check goes
    /// back to `status`, unless it has been reset since (`generation`).
    NotRecorded {
        check: CheckId,
        status: CheckStatus,
        generation: u32,
    },
}

/// A check's state as the acting controller holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveCheck {
    pub id: CheckId,
    pub status: CheckStatus,
    pub insufficient_quorum: bool,
}

/// The runs a poll took, and what wakes the poller when more are queued.
pub(super) struct Taken {
    pub items: Vec<WorkItem>,
    pub wake: Arc<Notify>,
}

/// A flip on its way to the writer, with the check's reset generation when it happened.
pub(super) struct PendingFlip {
    pub write: FlipWrite,
    pub generation: u32,
}

/// A worker as the controller sees it.
pub(super) struct WorkerSlot {
    /// Runs handed to it and not yet polled. Only ids: the definition is copied into the
    /// [`WorkItem`] when the worker takes the run, so that a due burst (every check of a new
    /// term is due at once) does not queue a copy of every definition.
    pub queue: VecDeque<Queued>,
    pub wake: Arc<Notify>,
    pub last_seen: Instant,
    pub location: String,
    pub live: bool,
    /// Results it reported over the last minute.
    pub rate: super::rate::RunRate,
    /// Its latest canary report (`None`: it runs no canaries). Impaired: handed nothing,
    /// its results count as `fail`.
    pub canaries: Option<CanaryReport>,
}

/// A run waiting in a worker's queue.
#[derive(Clone, Copy)]
pub(super) struct Queued {
    check: CheckId,
    ticket: u64,
}

/// The latest result of a check from one worker, as `check_results` stores it. Only what is
/// written is kept: a [`WorkResult`] is about eight times larger (the run's details), and the
/// map holds one per check and worker between two writes.
struct Latest {
    status: RunStatus,
    message: String,
    duration_ms: u64,
    http_status: Option<u16>,
    cert_expiry: Option<i64>,
    timing: Option<String>,
}

/// A term's state; see the module documentation.
pub(super) struct Owner {
    epoch: Epoch,
    host: Arc<ControllerHost>,
    started: Instant,
    engine: Engine,
    catalog: Catalog,
    workers: HashMap<NodeId, WorkerSlot>,
    latest: HashMap<(CheckId, NodeId), Latest>,
    /// Results for history (`[history] enabled`), taken by the history writer every few
    /// seconds; at most [`HISTORY_BUFFER`], newer ones are dropped and counted.
    history: Option<Vec<RawResult>>,
    history_dropped: u64,
    /// Checks whose status was reset after a write that failed, with how often: a flip
    /// carries the generation it was decided in, and a report on an older one is ignored.
    generations: HashMap<CheckId, u32>,
    flips: mpsc::UnboundedSender<PendingFlip>,
    /// Push checks, judged from their pushes instead of by the engine.
    pushes: crate::push::PushBook,
}

impl Owner {
    /// The state of a new term over `catalog`; every check's first run is spread over its
    /// interval, so a new controller does not send every check out at once.
    pub fn new(
        host: Arc<ControllerHost>,
        epoch: Epoch,
        catalog: Catalog,
        flips: mpsc::UnboundedSender<PendingFlip>,
        now: Instant,
    ) -> Owner {
        let mut engine = Engine::new(VoteConfig {
            confirmations: host.config.confirmations,
            assignment_timeout: host.config.assignment_timeout,
            distinct_locations: host.config.distinct_locations,
        });
        let history_on = host.history.enabled;
        let n = catalog.check_count().max(1);
        let mut pushes = crate::push::PushBook::default();
        for (i, row) in catalog.checks().enumerate() {
            if super::push::is_push(row) {
                super::push::watch(&mut pushes, row, now);
                continue;
            }
            let def = CheckDef::from_row(row);
            let first_due = now + def.interval.mul_f64(i as f64 / n as f64);
            engine.upsert_check_due(&def, now, first_due);
        }
        Owner {
            epoch,
            host,
            started: now,
            engine,
            catalog,
            workers: HashMap::new(),
            latest: HashMap::new(),
            history: history_on.then(Vec::new),
            history_dropped: 0,
            generations: HashMap::new(),
            flips,
            pushes,
        }
    }

    /// Answers messages and hands out due runs until `token` is cancelled.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<Msg>, token: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            let next = self.schedule(&token);
            tokio::select! {
                _ = token.cancelled() => return,
                msg = inbox.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => return,
                },
                _ = sleep_until_opt(next) => {}
                _ = tick.tick() => {
                    self.liveness(Instant::now());
                    self.quorum_notices();
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Poll {
                node,
                location,
                capacity,
                canaries,
                reply,
            } => {
                // Before `seen`: an impaired worker must not count as live for a moment.
                self.canaries(&node, canaries.as_ref());
                let wake = self.seen(&node, Some(location));
                if let Some(w) = self.workers.get_mut(&node) {
                    w.canaries = canaries;
                }
                if capacity == 0 {
                    self.bounce(&node);
                }
                let items = self.take(&node, capacity);
                let _ = reply.send(Taken { items, wake });
            }
            Msg::Results {
                node,
                results,
                reply,
            } => {
                let _ = reply.send(self.results(&node, results));
            }
            Msg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Msg::Summary { reply } => {
                let _ = reply.send(status::summary(
                    self.epoch,
                    &self.host,
                    &self.engine,
                    &self.workers,
                ));
            }
            Msg::CheckStatus { id, reply } => {
                let view = self
                    .engine
                    .check(id)
                    .map(|c| status::check_view(&c, &self.catalog, Instant::now()));
                let _ = reply.send(view);
            }
            Msg::Live { reply } => {
                let _ = reply.send(self.live());
            }
            Msg::Workers { reply } => {
                let now = Instant::now();
                let health = self
                    .workers
                    .iter()
                    .map(|(node, w)| WorkerHealth {
                        node: node.clone(),
                        since_seen: now.saturating_duration_since(w.last_seen),
                        live: w.live,
                        canaries: w.canaries.clone(),
                    })
                    .collect();
                let _ = reply.send(health);
            }
            Msg::Quorum { reply } => {
                let _ = reply.send((
                    self.engine.check_count(),
                    self.engine.insufficient_quorum().len(),
                ));
            }
            Msg::Plan { reply } => {
                let _ = reply.send(self.catalog.plan());
            }
            Msg::Apply { fetched } => self.apply(fetched),
            Msg::TakeLatest { reply } => {
                // Taken whole, not drained: the map grows to a due burst and would keep that
                // capacity.
                let workers = &self.workers;
                let batch = std::mem::take(&mut self.latest)
                    .into_iter()
                    .map(|((check, node), l)| LatestResult {
                        check,
                        location: location_of(workers, &node),
                        node,
                        status: run_status(l.status),
                        message: l.message,
                        duration_ms: l.duration_ms,
                        http_status: l.http_status,
                        cert_expiry: l.cert_expiry,
                        timing: l.timing,
                    })
                    .collect();
                let _ = reply.send(batch);
            }
            Msg::TakeHistory { reply } => {
                let batch = self
                    .history
                    .as_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                let _ = reply.send((batch, std::mem::take(&mut self.history_dropped)));
            }
            Msg::Pushes { rows, read_at } => {
                for f in self.pushes.observe(&rows, read_at) {
                    let flip = Flip {
                        check: f.check,
                        from: f.from,
                        to: f.to,
                        confirmed_by: Vec::new(),
                    };
                    self.flipped(flip, &f.message);
                }
            }
            Msg::NotRecorded {
                check,
                status,
                generation,
            } => {
                let current = self.generations.get(&check).copied().unwrap_or(0);
                if generation == current {
                    self.generations.insert(check, current.wrapping_add(1));
                    self.engine.reset_status(check, status, Instant::now());
                    self.pushes.reset_status(check, status);
                }
            }
        }
    }

    /// Whether this term may still act: the lease (or the fence alone) holds for its epoch.
    fn may_act(&self, token: &CancellationToken) -> bool {
        !token.is_cancelled() && self.host.membership.may_act(self.epoch.0)
    }

    /// Hands due runs to the workers' queues; returns when to look again.
    fn schedule(&mut self, token: &CancellationToken) -> Option<Instant> {
        let now = Instant::now();
        let due = self.engine.due(now);
        if !due.is_empty() && self.may_act(token) {
            for a in due {
                let (Some(_), Some(w)) =
                    (self.catalog.check(a.check), self.workers.get_mut(&a.node))
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
        self.engine.next_wake()
    }

    fn seen(&mut self, node: &NodeId, location: Option<String>) -> Arc<Notify> {
        let now = Instant::now();
        let w = self
            .workers
            .entry(node.clone())
            .or_insert_with(|| WorkerSlot {
                queue: VecDeque::new(),
                wake: Arc::new(Notify::new()),
                last_seen: now,
                location: String::new(),
                live: false,
                rate: Default::default(),
                canaries: None,
            });
        w.last_seen = now;
        let mut moved = false;
        if let Some(l) = location
            && l != w.location
        {
            w.location = l;
            moved = true;
        }
        let wake = w.wake.clone();
        if !w.live {
            w.live = true;
            tracing::info!(%node, location = %w.location, "worker connected");
            self.engine.worker_up_at(node, &w.location, now);
        } else if moved {
            self.engine.worker_up_at(node, &w.location, now);
        }
        wake
    }

    /// A worker's canary report: a worker that turns impaired loses its queued runs and is
    /// handed nothing until it recovers (the engine's rule); the meta-alert task tells the
    /// admin.
    fn canaries(&mut self, node: &NodeId, report: Option<&CanaryReport>) {
        let impaired = report.is_some_and(|r| r.impaired);
        let was = self
            .workers
            .get(node)
            .and_then(|w| w.canaries.as_ref())
            .is_some_and(|r| r.impaired);
        if impaired == was {
            return;
        }
        if impaired {
            tracing::warn!(%node, "worker impaired: its canaries fail; its results count as fail");
            if let Some(w) = self.workers.get_mut(node) {
                w.queue.clear();
            }
        } else {
            tracing::info!(%node, "worker recovered: its canaries pass");
        }
        self.engine.set_impaired(node, impaired, Instant::now());
    }

    /// Up to `n` of the worker's queued runs. A run the engine no longer holds for it (timed
    /// out, withdrawn, its check removed) is dropped on the way, not handed out.
    fn take(&mut self, node: &NodeId, n: usize) -> Vec<WorkItem> {
        let Some(w) = self.workers.get_mut(node) else {
            return Vec::new();
        };
        let (engine, catalog, epoch) = (&self.engine, &self.catalog, self.epoch.0);
        let mut items = Vec::with_capacity(n.min(w.queue.len()));
        while items.len() < n {
            let Some(q) = w.queue.pop_front() else { break };
            if !engine.holds(node, q.check, Ticket(q.ticket)) {
                continue;
            }
            if let Some(spec) = catalog.spec(q.check) {
                items.push(WorkItem {
                    check: q.check,
                    ticket: q.ticket,
                    epoch,
                    spec: spec.clone(),
                });
            }
        }
        items
    }

    /// A worker with no free slot (it polled for 0 runs): the runs queued for it go back to the
    /// engine as runs it could not do, so they are handed to others at once instead of
    /// waiting out the assignment timeout.
    fn bounce(&mut self, node: &NodeId) {
        let Some(w) = self.workers.get_mut(node) else {
            return;
        };
        if w.queue.is_empty() {
            return;
        }
        let queued: Vec<Queued> = w.queue.drain(..).collect();
        let now = Instant::now();
        for q in queued {
            self.engine
                .result(node, q.check, Ticket(q.ticket), Outcome::Fail, now);
        }
    }

    fn results(&mut self, node: &NodeId, results: Vec<WorkResult>) -> ResultsReply {
        self.seen(node, None);
        let now = Instant::now();
        let at_ms = unix_ms(SystemTime::now());
        let mut reply = ResultsReply::default();
        for r in results {
            if r.epoch != self.epoch.0 {
                reply.ignored += 1;
                continue;
            }
            let outcome = match r.status {
                RunStatus::Online => Outcome::Online,
                RunStatus::Offline => Outcome::Offline,
                RunStatus::Fail => Outcome::Fail,
            };
            let effect = self
                .engine
                .result(node, r.check, Ticket(r.ticket), outcome, now);
            match &effect {
                Effect::UnknownCheck | Effect::Stale => reply.ignored += 1,
                _ => reply.accepted += 1,
            }
            if let Effect::Flip(flip) = effect {
                self.flipped(flip, &r.message);
            }
            self.keep_history(node, &r, outcome, at_ms);
            let (http_status, cert_expiry, timing) = probe_columns(&r.details);
            self.latest.insert(
                (r.check, node.clone()),
                Latest {
                    status: r.status,
                    message: r.message,
                    duration_ms: r.duration_ms,
                    http_status,
                    cert_expiry,
                    timing,
                },
            );
        }
        if let Some(slot) = self.workers.get_mut(node) {
            slot.rate.add(now, u64::from(reply.accepted));
        }
        reply
    }

    /// Keeps a result for the history writer.
    fn keep_history(&mut self, node: &NodeId, r: &WorkResult, outcome: Outcome, at_ms: i64) {
        let Some(history) = self.history.as_mut() else {
            return;
        };
        if history.len() >= HISTORY_BUFFER {
            self.history_dropped += 1;
            return;
        }
        let location = location_of(&self.workers, node);
        history.push(RawResult {
            check: r.check,
            at_ms,
            node: node.clone(),
            location,
            outcome,
            duration_ms: r.duration_ms,
            message: if r.status == RunStatus::Online {
                String::new()
            } else {
                r.message.clone()
            },
        });
    }

    /// Hands a flip to the writer, with what its notification needs from the catalog now.
    fn flipped(&mut self, flip: Flip, message: &str) {
        let Some(row) = self.catalog.check(flip.check) else {
            return; // deleted meanwhile
        };
        let contacts = self
            .catalog
            .contacts_for_flip(flip.check, flip.to)
            .iter()
            .map(|c| c.id)
            .collect();
        let notification = Notification {
            event_id: EventId(0),
            check_id: flip.check,
            name: row.name.clone(),
            check_type: row.check_type.clone(),
            data: row.data.clone(),
            old_status: flip.from,
            new_status: flip.to,
            // Cut here too: a worker of an older version may send any length.
            message: if flip.to == CheckStatus::Online {
                String::new()
            } else {
                crate::probe::cut_text(message, crate::probe::MESSAGE_CAP).into_owned()
            },
            time_ms: unix_ms(SystemTime::now()),
            confirmed_by: flip.confirmed_by,
            test: false,
            reminder: 0,
            folded: Vec::new(),
        };
        let generation = self.generations.get(&flip.check).copied().unwrap_or(0);
        let _ = self.flips.send(PendingFlip {
            write: FlipWrite {
                check: flip.check,
                from: flip.from,
                to: flip.to,
                notification,
                contacts,
            },
            generation,
        });
    }

    fn apply(&mut self, fetched: Fetched) {
        let changes = self.catalog.apply(fetched);
        if changes.is_empty() {
            return;
        }
        let now = Instant::now();
        for id in &changes.checks_upserted {
            if let Some(row) = self.catalog.check(*id) {
                if super::push::is_push(row) {
                    self.engine.remove_check(*id);
                    super::push::watch(&mut self.pushes, row, now);
                } else {
                    self.pushes.remove(*id);
                    self.engine.upsert_check(&CheckDef::from_row(row), now);
                }
            }
        }
        for id in &changes.checks_removed {
            self.engine.remove_check(*id);
            self.pushes.remove(*id);
        }
        tracing::info!(
            upserted = changes.checks_upserted.len(),
            removed = changes.checks_removed.len(),
            contacts = changes.contacts_changed,
            alerts = changes.alerts_changed,
            "reloaded"
        );
    }

    /// Marks workers that stopped polling as gone.
    fn liveness(&mut self, now: Instant) {
        for (node, w) in self.workers.iter_mut() {
            if w.live && now.duration_since(w.last_seen) > WORKER_TIMEOUT {
                w.live = false;
                w.queue.clear();
                tracing::warn!(%node, "worker silent; its runs go to others");
                self.engine.worker_down(node, now);
            }
        }
    }

    fn quorum_notices(&mut self) {
        if self.started.elapsed() < QUORUM_GRACE {
            return;
        }
        let Some(change) = self.engine.take_quorum_changes() else {
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
        let list: Vec<String> = change
            .lost
            .iter()
            .take(50)
            .map(|id| format!("  {id} {}", self.catalog.check(*id).map_or("", |r| &r.name)))
            .collect();
        let body = format!(
            "{} check(s) have fewer live workers ({}) than their confirmations; they keep their \
             status and cannot flip until workers come back:\n{}\n",
            change.lost.len(),
            change.live_workers,
            list.join("\n")
        );
        self.host.tell_admin(AdminKind::InsufficientQuorum, body);
    }

    fn live(&self) -> Vec<LiveCheck> {
        let short: std::collections::HashSet<CheckId> =
            self.engine.insufficient_quorum().into_iter().collect();
        self.catalog
            .checks()
            .filter_map(|row| {
                let status = self.engine.status(row.id)?;
                Some(LiveCheck {
                    id: row.id,
                    status,
                    insufficient_quorum: short.contains(&row.id),
                })
            })
            .collect()
    }

    fn status(&self) -> StatusAnswer {
        status::answer(
            self.epoch,
            &self.host,
            &self.engine,
            &self.catalog,
            &self.workers,
        )
    }
}

/// A worker's location for history, its node id when it has none.
fn location_of(workers: &HashMap<NodeId, WorkerSlot>, node: &NodeId) -> String {
    match workers.get(node) {
        Some(w) if !w.location.is_empty() => w.location.clone(),
        _ => node.0.clone(),
    }
}

/// `check_results.status` of a run.
fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Online => "online",
        RunStatus::Offline => "offline",
        RunStatus::Fail => "fail",
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
