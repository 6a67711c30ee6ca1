//! The durable notification outbox (`notification_outbox`): the dispatcher's rules. Its SQL
//! lives in [`crate::store::outbox`].
//!
//! A flip writes one row per (event, contact) with [`enqueue`], inside the flip's fenced
//! transaction: the flip and its notifications are stored together or not at all, and a
//! repeated enqueue of the same event adds nothing (`UNIQUE(event_id, contact_id)`).
//!
//! The controller runs one [`Dispatcher`] per epoch. It looks for due rows without a
//! transaction and, only when there are some, claims them in a fenced transaction
//! (`claimed_by`, `claimed_until`, a fresh `claim_token`, `attempts + 1`), so a deposed
//! controller can neither claim nor record and an idle one never locks the fence; delivers
//! each in its own task with the delivery timeout, at most `delivery_concurrency` at once; and records the outcome in another fenced transaction:
//! only while the row is still held under its claim token, as `sent` (with `sent_at`, and a
//! `charges` row for Twilio, unique by SID), `pending` again after an
//! exponential backoff (`delivery_backoff` doubling up to `delivery_backoff_max`), or `failed`
//! (a final error, or `delivery_attempts` used up). Failed rows are listed to the admin in one
//! rate-limited mail and marked `admin_notified`.
//!
//! How the controller uses it:
//!
//! ```text
//! // once per epoch, after fence::raise:
//! let dispatcher = Dispatcher::new(store.clone(), epoch, node.clone(), delivery_config,
//!                                  Arc::new(Channels::new(&smtp, &twilio, timeout)?), admin);
//! let wake = dispatcher.waker();
//! let task = tokio::spawn(dispatcher.run(shutdown.child_token()));
//!
//! // flips, with their outbox rows, in one fenced transaction (store::flips calls enqueue):
//! store::flips::record(&store, epoch, &node, &flips, flap).await?;
//! wake.wake();
//! ```
//!
//! `run` returns `Err(StoreError::Fenced)` when a newer epoch took over: the node must stop
//! acting as controller.
//!
//! Delivery is at-least-once with a window of one send per row: a dispatcher that dies during
//! a send leaves the row claimed; once the claim runs out (twice the delivery timeout plus a
//! second), whichever dispatcher runs next sends it again. Every other row is sent once. A
//! dispatcher whose claim ran out before it could record (a slow database) has sent once
//! more than needed, but records nothing over the new claim ([`DispatcherStats::taken_over`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::admin::{AdminKind, AdminNotifier, AdminOutcome};
use super::{Delivered, Deliverer, DeliveryError, Notification, Retry};
use crate::config::DeliveryConfig;
use crate::model::{CheckId, Epoch, NodeId};
use crate::store::outbox::{self as rows, Attempt, AttemptRecord, ClaimToken, ClaimedRow};
use crate::store::storm as storm_rows;
use crate::store::{Store, StoreError};

pub use crate::store::outbox::{enqueue, load_contact, record_charge};

/// Failed rows listed in one admin mail; the rest follow in the next.
const ADMIN_LIST_LIMIT: usize = 50;

/// Wakes a [`Dispatcher`] at once (after a flip's transaction committed) instead of at its
/// next poll. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WakeHandle(Arc<Notify>);

impl WakeHandle {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Counters of one [`Dispatcher`], readable while it runs.
#[derive(Debug, Default)]
pub struct DispatcherStats {
    /// Attempts not recorded because another dispatcher had claimed the row meanwhile (this
    /// one's claim ran out during a slow database call).
    pub taken_over: AtomicU64,
}

/// Delivers the outbox for one epoch; see the module documentation.
pub struct Dispatcher {
    store: Store,
    epoch: Epoch,
    node: NodeId,
    config: DeliveryConfig,
    deliverer: Arc<dyn Deliverer>,
    admin: Arc<AdminNotifier>,
    wake: Arc<Notify>,
    poll: Duration,
    stats: Arc<DispatcherStats>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("epoch", &self.epoch)
            .field("node", &self.node)
            .field("config", &self.config)
            .finish()
    }
}

/// What one delivery attempt came to.
struct Outcome {
    id: i64,
    claim: ClaimToken,
    check_id: CheckId,
    attempts: u32,
    result: Result<Delivered, DeliveryError>,
}

/// How far an admin pass over the failed rows got.
enum AdminPass {
    /// Every failed row has been reported.
    Done,
    /// More than one mail's worth: go on when the rate limit allows.
    More,
    /// A notice of this kind went out recently: wait for the rate limit.
    Suppressed,
    /// The mail was not accepted: try again after a backoff.
    SendFailed,
    /// Nothing can be sent: stop trying.
    NotConfigured,
}

/// The dispatcher's bookkeeping of admin reports on failed rows.
struct AdminReports {
    /// Raised every time rows become failed.
    failures: u64,
    /// The value of `failures` when the last complete pass started.
    reported: u64,
    /// `failures` when the running pass started.
    running: Option<(u64, JoinHandle<Result<AdminPass, StoreError>>)>,
    /// No new pass before this (after a mail was not accepted).
    retry_at: Option<tokio::time::Instant>,
    /// Mails not accepted in a row, for the backoff.
    send_failures: u32,
    /// Notices cannot be sent at all.
    disabled: bool,
}

impl Drop for AdminReports {
    /// A dispatcher that stops on an error does not leave its report running.
    fn drop(&mut self) {
        if let Some((_, task)) = &self.running {
            task.abort();
        }
    }
}

/// What one [`Dispatcher::run`] keeps between its steps.
struct Running {
    concurrency: usize,
    /// The sends in flight.
    tasks: JoinSet<Outcome>,
    /// Finished sends not yet recorded.
    unrecorded: Vec<Outcome>,
    reports: AdminReports,
    /// Look for due rows at the next step.
    claim_now: bool,
    /// Shutting down: no more claims or reports.
    draining: bool,
}

impl Running {
    fn collect(&mut self, joined: Result<Outcome, tokio::task::JoinError>) {
        match joined {
            Ok(outcome) => self.unrecorded.push(outcome),
            // The row stays claimed and is tried again when the claim runs out.
            Err(e) => tracing::error!(error = %e, "an outbox delivery task died"),
        }
    }
}

impl AdminReports {
    /// Books the end of the running report pass. Only a fenced store ends the run.
    fn pass_ended(
        &mut self,
        pass: Result<Result<AdminPass, StoreError>, tokio::task::JoinError>,
        config: &DeliveryConfig,
    ) -> Result<(), StoreError> {
        let started_at = self.running.take().map_or(0, |(g, _)| g);
        if !matches!(pass, Ok(Ok(AdminPass::SendFailed))) {
            self.send_failures = 0;
            self.retry_at = None;
        }
        match pass {
            // Rows that failed while the pass ran are reported by the next.
            Ok(Ok(AdminPass::Done)) => self.reported = started_at,
            Ok(Ok(AdminPass::More | AdminPass::Suppressed)) => {}
            Ok(Ok(AdminPass::SendFailed)) => {
                self.send_failures += 1;
                let wait = Dispatcher::backoff(config, self.send_failures);
                self.retry_at = Some(tokio::time::Instant::now() + wait);
            }
            Ok(Ok(AdminPass::NotConfigured)) => self.disabled = true,
            Ok(Err(e @ StoreError::Fenced { .. })) => return Err(e),
            Ok(Err(e)) => tracing::warn!(error = %e, "reporting failed notifications"),
            Err(e) => tracing::error!(error = %e, "the admin report task died"),
        }
        Ok(())
    }
}

impl Dispatcher {
    /// A dispatcher acting for `epoch` as `node`. `admin` receives the failed rows.
    pub fn new(
        store: Store,
        epoch: Epoch,
        node: NodeId,
        config: DeliveryConfig,
        deliverer: Arc<dyn Deliverer>,
        admin: Arc<AdminNotifier>,
    ) -> Dispatcher {
        let poll = config
            .backoff
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        Dispatcher {
            store,
            epoch,
            node,
            config,
            deliverer,
            admin,
            wake: Arc::new(Notify::new()),
            poll,
            stats: Arc::default(),
        }
    }

    /// How often an idle dispatcher looks for due rows (default: `delivery_backoff`, between
    /// 10 ms and 1 s). A [`WakeHandle`] makes it look at once.
    pub fn with_poll_interval(mut self, poll: Duration) -> Dispatcher {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// The dispatcher's counters.
    pub fn stats(&self) -> Arc<DispatcherStats> {
        self.stats.clone()
    }

    /// A handle that makes the dispatcher look for due rows now.
    pub fn waker(&self) -> WakeHandle {
        WakeHandle(self.wake.clone())
    }

    /// How long a claim keeps other dispatchers off a row: longer than any one attempt.
    fn lease(&self) -> Duration {
        self.config.timeout * 2 + Duration::from_secs(1)
    }

    /// The wait after the `attempts`-th failed attempt.
    pub fn backoff(config: &DeliveryConfig, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        config
            .backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(config.backoff_max)
    }

    /// Delivers until `shutdown` is cancelled, then stops claiming, waits for the sends in
    /// flight (each bounded by the delivery timeout) and records them. Returns
    /// `Err(StoreError::Fenced)` as soon as another epoch holds the fence (sends in flight are
    /// abandoned: their rows stay claimed and are retried by the new controller). Other
    /// database errors are logged and retried; they end the run only while shutting down.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let mut run = Running {
            concurrency: self.config.concurrency.max(1),
            tasks: JoinSet::new(),
            unrecorded: Vec::new(),
            // Start with one pass: earlier controllers may have left failed rows unreported.
            reports: AdminReports {
                failures: 1,
                reported: 0,
                running: None,
                retry_at: None,
                send_failures: 0,
                disabled: !self.admin.is_configured(),
            },
            claim_now: true,
            draining: false,
        };
        tracing::info!(epoch = %self.epoch, node = %self.node, "outbox dispatcher started");
        let ended = self.steps(&mut run, &shutdown).await;
        if ended.is_err() {
            run.tasks.abort_all();
        }
        ended
    }

    /// The dispatcher's loop: record, claim, report, then wait for the next thing to happen.
    /// An error ends the run (the caller abandons the sends in flight).
    async fn steps(
        &self,
        run: &mut Running,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        loop {
            self.record_outcomes(run).await?;
            self.claim_more(run).await?;
            self.start_report(run);
            if run.draining && run.tasks.is_empty() && run.unrecorded.is_empty() {
                if let Some((_, task)) = run.reports.running.take() {
                    let _ = task.await;
                }
                tracing::info!(epoch = %self.epoch, "outbox dispatcher stopped");
                return Ok(());
            }
            self.wait(run, shutdown).await?;
        }
    }

    /// Records the outcomes of finished sends. A failure is retried on the next step, except
    /// when fenced or shutting down.
    async fn record_outcomes(&self, run: &mut Running) -> Result<(), StoreError> {
        if run.unrecorded.is_empty() {
            return Ok(());
        }
        match self.record(&run.unrecorded).await {
            Ok(any_failed) => {
                run.unrecorded.clear();
                if any_failed {
                    run.reports.failures += 1;
                }
                run.claim_now = true;
                Ok(())
            }
            Err(e @ StoreError::Fenced { .. }) => Err(e),
            Err(e) if run.draining => {
                tracing::warn!(error = %e, rows = run.unrecorded.len(), "outbox results not recorded at shutdown; the rows will be sent again");
                Err(e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording outbox results failed; retrying");
                Ok(())
            }
        }
    }

    /// Claims due rows up to the free concurrency, when asked to and everything earlier is
    /// recorded, and starts sending them.
    async fn claim_more(&self, run: &mut Running) -> Result<(), StoreError> {
        if run.draining
            || !run.claim_now
            || !run.unrecorded.is_empty()
            || run.tasks.len() >= run.concurrency
        {
            return Ok(());
        }
        run.claim_now = false;
        match self.claim(run.concurrency - run.tasks.len()).await {
            Ok(rows) => {
                for row in rows {
                    run.tasks
                        .spawn(deliver(self.deliverer.clone(), row, self.config.timeout));
                }
            }
            Err(e @ StoreError::Fenced { .. }) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "claiming outbox rows failed; retrying"),
        }
        Ok(())
    }

    /// Starts a report pass on failed rows when there are new ones and the admin notifier
    /// can and may send.
    fn start_report(&self, run: &mut Running) {
        let reports = &run.reports;
        if reports.failures > reports.reported
            && !reports.disabled
            && !run.draining
            && reports.running.is_none()
            && reports
                .retry_at
                .is_none_or(|t| t <= tokio::time::Instant::now())
            && self.admin.is_due(AdminKind::FailedDeliveries)
        {
            let task = tokio::spawn(report_failed(
                self.store.clone(),
                self.epoch,
                self.node.clone(),
                self.admin.clone(),
            ));
            run.reports.running = Some((run.reports.failures, task));
        }
    }

    /// Waits for shutdown, finished sends, the end of a report pass, a wake or the poll
    /// interval.
    async fn wait(
        &self,
        run: &mut Running,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        tokio::select! {
            _ = shutdown.cancelled(), if !run.draining => run.draining = true,
            Some(joined) = run.tasks.join_next(), if !run.tasks.is_empty() => {
                run.collect(joined);
                while let Some(j) = run.tasks.try_join_next() {
                    run.collect(j);
                }
                run.claim_now = true;
            }
            pass = async {
                match run.reports.running.as_mut() {
                    Some((_, task)) => task.await,
                    None => std::future::pending().await,
                }
            }, if run.reports.running.is_some() => {
                run.reports.pass_ended(pass, &self.config)?;
            }
            _ = self.wake.notified() => run.claim_now = true,
            _ = tokio::time::sleep(self.poll) => run.claim_now = true,
        }
        Ok(())
    }

    /// Claims up to `limit` due rows for this node, with their contacts, after storm control
    /// and the caps had their say over the fresh ones ([`Dispatcher::fold_and_hold`]).
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedRow>, StoreError> {
        let upto = match self.fold_and_hold().await {
            Ok(upto) => upto,
            Err(e @ StoreError::Fenced { .. }) => return Err(e),
            Err(e) => {
                // Delivery goes on without storm control rather than not at all.
                tracing::warn!(error = %e, "storm control failed; sending rows as they are");
                if self.admin.is_due(AdminKind::ReloadErrors) {
                    let admin = self.admin.clone();
                    let body = format!(
                        "Storm control and the hourly caps could not run: {e}\n\
                         Notifications are sent one by one, without digests or caps, until \
                         it works again (is install.sql applied to this database?).\n"
                    );
                    tokio::spawn(async move { admin.notify(AdminKind::ReloadErrors, &body).await });
                }
                i64::MAX
            }
        };
        rows::claim_due_upto(
            &self.store,
            self.epoch,
            &self.node,
            limit,
            self.lease(),
            upto,
        )
        .await
    }

    /// Storm control and per-contact caps ([`crate::policy::storm`]) over the fresh due rows:
    /// folds them into digests or holds them, and tells the admin of capped contacts.
    /// Returns the newest row it planned for.
    async fn fold_and_hold(&self) -> Result<i64, StoreError> {
        let rule = self.config.storm;
        let inputs = storm_rows::inputs(&self.store, rule, self.config.paid_max_per_hour).await?;
        if inputs.contacts.is_empty() {
            return Ok(inputs.upto);
        }
        let actions = storm_rows::plan(rule, &inputs);
        let applied =
            storm_rows::apply(&self.store, self.epoch, &self.node, &inputs, &actions).await?;
        if applied != storm_rows::Applied::default() {
            tracing::info!(
                held = applied.held,
                folded = applied.folded,
                storm = crate::policy::storm::is_storm(rule, inputs.flips_in_window),
                "storm control folded or held notifications"
            );
        }
        let capped = crate::policy::storm::capped(&inputs.contacts, &actions);
        if !capped.is_empty() && self.admin.is_due(AdminKind::CapReached) {
            let list: Vec<String> = capped.iter().map(|c| c.to_string()).collect();
            let body = format!(
                "These sms/voice contacts reached their messages per hour \
                 (contacts.max_per_hour, else [twilio] max_per_hour = {}): {}.\n\
                 Their further notifications are folded into the next message allowed; \
                 nothing is lost. See notification_outbox (state 'held' or 'folded', column \
                 reason).\n",
                self.config.paid_max_per_hour,
                list.join(", ")
            );
            let admin = self.admin.clone();
            tokio::spawn(async move { admin.notify(AdminKind::CapReached, &body).await });
        }
        Ok(inputs.upto)
    }

    /// Writes the outcomes; true when a row became `failed`.
    async fn record(&self, outcomes: &[Outcome]) -> Result<bool, StoreError> {
        let records: Vec<AttemptRecord> = outcomes
            .iter()
            .map(|o| AttemptRecord {
                id: o.id,
                claim: o.claim,
                check_id: o.check_id,
                attempt: self.judge(o),
            })
            .collect();
        let recorded = rows::record(&self.store, self.epoch, &self.node, &records).await?;
        let mut any_failed = false;
        for (o, r) in outcomes.iter().zip(&records) {
            if recorded.taken_over.contains(&o.id) {
                self.stats.taken_over.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(row = o.id, check_id = %o.check_id, attempts = o.attempts, "outbox row claimed by another dispatcher before this attempt was recorded; its outcome is not recorded");
                continue;
            }
            match &r.attempt {
                Attempt::Sent { .. } => {
                    tracing::debug!(row = o.id, check_id = %o.check_id, "notification sent")
                }
                Attempt::Retry { wait, error } => {
                    tracing::info!(row = o.id, check_id = %o.check_id, attempts = o.attempts, retry_in = ?wait, error = %error, "notification not delivered; will retry")
                }
                Attempt::Failed { error } => {
                    any_failed = true;
                    tracing::warn!(row = o.id, check_id = %o.check_id, attempts = o.attempts, error = %error, "notification failed for good")
                }
            }
        }
        Ok(any_failed)
    }

    /// What an attempt's result means for its row: sent, retried after the backoff, or failed
    /// (a final error, or the last attempt used).
    fn judge(&self, o: &Outcome) -> Attempt {
        match &o.result {
            Ok(delivered) => Attempt::Sent {
                charge: delivered.charge.clone(),
            },
            Err(e) if e.retry == Retry::Later && o.attempts < self.config.attempts => {
                Attempt::Retry {
                    wait: Dispatcher::backoff(&self.config, o.attempts),
                    error: e.message.clone(),
                }
            }
            Err(e) if e.retry == Retry::Later => Attempt::Failed {
                error: format!("gave up after {} attempts: {}", o.attempts, e.message),
            },
            Err(e) => Attempt::Failed {
                error: e.message.clone(),
            },
        }
    }
}

/// One delivery attempt, bounded by `timeout` whatever the deliverer does.
async fn deliver(deliverer: Arc<dyn Deliverer>, row: ClaimedRow, timeout: Duration) -> Outcome {
    let result = match (
        &row.contact,
        serde_json::from_str::<Notification>(&row.payload),
    ) {
        (None, _) => Err(DeliveryError::never(format!(
            "contact {} no longer exists",
            row.contact_id
        ))),
        (_, Err(e)) => Err(DeliveryError::never(format!(
            "the stored notification cannot be read: {e}"
        ))),
        (Some(contact), Ok(n)) => {
            match tokio::time::timeout(timeout, deliverer.deliver(contact, &n)).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::later(format!(
                    "delivery timed out after {timeout:?}"
                ))),
            }
        }
    };
    Outcome {
        id: row.id,
        claim: row.claim,
        check_id: row.check_id,
        attempts: row.attempts,
        result,
    }
}

/// One admin pass: lists unreported failed rows in one mail and marks them reported.
async fn report_failed(
    store: Store,
    epoch: Epoch,
    node: NodeId,
    admin: Arc<AdminNotifier>,
) -> Result<AdminPass, StoreError> {
    let rows = rows::unreported_failed(&store, ADMIN_LIST_LIMIT + 1).await?;
    if rows.is_empty() {
        return Ok(AdminPass::Done);
    }
    let more = rows.len() > ADMIN_LIST_LIMIT;
    let listed = &rows[..rows.len().min(ADMIN_LIST_LIMIT)];
    let mut body = format!(
        "{} notification(s) could not be delivered and were given up:\n",
        listed.len()
    );
    for row in listed {
        let name = serde_json::from_str::<Notification>(&row.payload)
            .map(|n| format!("{} ({} -> {})", n.name, n.old_status, n.new_status))
            .unwrap_or_else(|_| "?".into());
        body.push_str(&format!(
            "\n- outbox row {}: event {}, check {} {name}, contact {}, {} attempt(s): {}",
            row.id,
            row.event_id,
            row.check_id,
            row.contact_id,
            row.attempts,
            row.last_error.as_deref().unwrap_or("(no error recorded)")
        ));
    }
    if more {
        body.push_str("\n\nMore failed notifications follow in the next notice.");
    }
    body.push_str(
        "\n\nSee notification_outbox (state = 'failed') for details. \
         `gobearmon contact test ID` tries a contact again.",
    );
    match admin.notify(AdminKind::FailedDeliveries, &body).await {
        AdminOutcome::Sent => {}
        AdminOutcome::NotConfigured => return Ok(AdminPass::NotConfigured),
        AdminOutcome::Suppressed => return Ok(AdminPass::Suppressed),
        AdminOutcome::Failed(_) => return Ok(AdminPass::SendFailed),
    }
    let ids: Vec<i64> = listed.iter().map(|r| r.id).collect();
    rows::mark_reported(&store, epoch, &node, &ids).await?;
    Ok(if more {
        AdminPass::More
    } else {
        AdminPass::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            attempts: 8,
            backoff: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            concurrency: 16,
            admin_interval: Duration::from_secs(3600),
            storm: crate::policy::storm::StormRule::default(),
            paid_max_per_hour: 30,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let c = config();
        let waits: Vec<u64> = (1..=6)
            .map(|a| Dispatcher::backoff(&c, a).as_secs())
            .collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(Dispatcher::backoff(&c, 1000).as_secs(), 60);
    }
}
