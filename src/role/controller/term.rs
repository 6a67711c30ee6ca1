//! One controller term: raise the epoch fence, load the catalog, run the term's tasks until
//! it is cancelled, then wait for all of them. Every task the term starts is tracked here and
//! ends with it: the owner, the flip writer, the outbox dispatcher, the reload and flush
//! loops, the push reader, the alive stamp and the meta-alerts, and the history writer and
//! upkeep.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ControllerHost;
use super::owner::{Msg, Owner};
use crate::model::Epoch;
use crate::notify::admin::AdminKind;
use crate::notify::outbox::{Dispatcher, WakeHandle};
use crate::store::StoreError;
use crate::store::catalog::Catalog;
use crate::store::fence::{self, Raise};

/// A full reload of the tables at least this often, whatever the change log says.
const FULL_RELOAD: Duration = Duration::from_secs(600);
/// Messages waiting for the owner before senders wait.
const INBOX: usize = 1024;
/// The longest one read of the catalog may take (a full read of a large table included).
const CATALOG_LIMIT: Duration = Duration::from_secs(300);
/// How often the latest results are written.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// The admin is told when this many raises in a row have failed (each is bounded by the
/// store's timeouts: a few seconds against a locked row, five against a silent server).
const FENCE_ALERT_AFTER: u32 = 3;

/// How the rest of the node reaches a running term. Cheap to clone.
#[derive(Clone)]
pub(super) struct TermHandle {
    pub epoch: Epoch,
    pub token: CancellationToken,
    host: Arc<ControllerHost>,
    inbox: mpsc::Sender<Msg>,
}

impl TermHandle {
    /// Sends the owner a message and waits for its reply; `None` once the term has ended.
    pub async fn ask<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Msg) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.inbox.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Sends the owner a message that needs no reply; false once the term has ended.
    pub async fn tell(&self, msg: Msg) -> bool {
        self.inbox.send(msg).await.is_ok()
    }

    /// Whether this term may still act: not cancelled, and the lease (or the fence alone)
    /// holds for its epoch.
    pub fn may_act(&self) -> bool {
        !self.token.is_cancelled() && self.host.membership.may_act(self.epoch.0)
    }

    pub fn host(&self) -> &Arc<ControllerHost> {
        &self.host
    }
}

/// One controller term: raise the fence, load, then run until cancelled.
pub(super) async fn act(
    host: Arc<ControllerHost>,
    epoch: Epoch,
    token: CancellationToken,
    published: Arc<Mutex<Option<TermHandle>>>,
) {
    let raised = tokio::select! {
        _ = token.cancelled() => return,
        r = raise_fence(&host, epoch, &token) => r,
    };
    if !raised {
        return;
    }
    let Some(catalog) = load_catalog(&host, epoch, &token).await else {
        return;
    };
    let checks = catalog.check_count();
    let dispatcher = Dispatcher::new(
        host.store.clone(),
        epoch,
        host.node.clone(),
        host.config.delivery.clone(),
        host.channels.clone(),
        host.admin_mail.clone(),
    );
    let outbox = dispatcher.waker();
    let (inbox_tx, inbox) = mpsc::channel(INBOX);
    let (flips_tx, flips_rx) = mpsc::unbounded_channel();
    let owner = Owner::new(host.clone(), epoch, catalog, flips_tx, Instant::now());
    let handle = TermHandle {
        epoch,
        token: token.clone(),
        host: host.clone(),
        inbox: inbox_tx,
    };
    tracing::info!(%epoch, checks, "controller term started");
    let tasks = TaskTracker::new();
    tasks.spawn(ends_term(
        token.clone(),
        "owner",
        owner.run(inbox, token.clone()),
    ));
    tasks.spawn(ends_term(
        token.clone(),
        "flip writer",
        super::flips::run(handle.clone(), flips_rx, outbox.clone()),
    ));
    spawn_dispatcher(&tasks, &token, dispatcher);
    spawn_loops(&tasks, &handle, &outbox);
    *lock(&published) = Some(handle);
    token.cancelled().await;
    *lock(&published) = None;
    tasks.close();
    tasks.wait().await;
    tracing::info!(%epoch, "controller term ended");
}

/// Checks from the database, retried every second until they load or the term is cancelled
/// (`None`).
async fn load_catalog(
    host: &ControllerHost,
    epoch: Epoch,
    token: &CancellationToken,
) -> Option<Catalog> {
    loop {
        match bounded_read(Catalog::load(&host.store, FULL_RELOAD)).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(%epoch, error = %e, "cannot load checks yet");
                tokio::select! {
                    _ = token.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The term's outbox dispatcher.
fn spawn_dispatcher(tasks: &TaskTracker, token: &CancellationToken, dispatcher: Dispatcher) {
    // A dispatcher that stops on any error ends the term (through `ends_term`), so a new term
    // starts one again instead of leaving the outbox undelivered.
    let t = token.clone();
    tasks.spawn(ends_term(token.clone(), "outbox dispatcher", async move {
        match dispatcher.run(t.child_token()).await {
            Err(StoreError::Fenced { ours, stored }) => {
                tracing::error!(%ours, %stored, "outbox fenced: a newer controller took over");
                t.cancel();
            }
            Err(e) => tracing::error!(error = %e, "outbox dispatcher stopped"),
            Ok(()) => {}
        }
    }));
}

/// The term's loops beside the owner, the flip writer and the dispatcher.
fn spawn_loops(tasks: &TaskTracker, handle: &TermHandle, outbox: &WakeHandle) {
    tasks.spawn(ends_term(
        handle.token.clone(),
        "alert policy",
        super::policy::run(handle.clone(), outbox.clone()),
    ));
    tasks.spawn(ends_term(
        handle.token.clone(),
        "reload loop",
        reload_loop(handle.clone()),
    ));
    tasks.spawn(ends_term(
        handle.token.clone(),
        "flush loop",
        flush_loop(handle.clone()),
    ));
    tasks.spawn(ends_term(
        handle.token.clone(),
        "push reader",
        super::push::poll_loop(handle.clone()),
    ));
    if let Some(url) = handle.host.config.heartbeat_url.clone() {
        tasks.spawn(ends_term(
            handle.token.clone(),
            "dead man's switch",
            super::beat::run(
                handle.clone(),
                url.expose().to_string(),
                handle.host.config.heartbeat_interval,
            ),
        ));
    }
    tasks.spawn(ends_term(
        handle.token.clone(),
        "alive stamp",
        super::watch::alive_loop(handle.clone()),
    ));
    tasks.spawn(ends_term(
        handle.token.clone(),
        "meta-alerts",
        super::watch::run(handle.clone()),
    ));
    if handle.host.history.enabled {
        tasks.spawn(ends_term(
            handle.token.clone(),
            "history writer",
            super::history::write_loop(handle.clone()),
        ));
        tasks.spawn(ends_term(
            handle.token.clone(),
            "history upkeep",
            super::history::upkeep_loop(handle.clone()),
        ));
    }
}

/// Runs one of the term's tasks; if it ends (or panics) while the term goes on, the term ends
/// too, so that the supervisor reaps it and a new term starts whole.
async fn ends_term(token: CancellationToken, what: &'static str, task: impl Future<Output = ()>) {
    struct Guard(CancellationToken, &'static str);
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.0.is_cancelled() {
                tracing::error!(
                    task = self.1,
                    "a controller task ended early; ending the term"
                );
                self.0.cancel();
            }
        }
    }
    let _guard = Guard(token, what);
    task.await;
}

/// A catalog read within [`CATALOG_LIMIT`].
async fn bounded_read<T>(
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CATALOG_LIMIT, read)
        .await
        .unwrap_or(Err(StoreError::Timeout {
            what: "reading checks, contacts and alerts",
            after: CATALOG_LIMIT,
        }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the fence, retrying while the database is unreachable; the admin is told once when
/// it keeps failing. False when a newer epoch holds it (this term must not act).
async fn raise_fence(host: &ControllerHost, epoch: Epoch, token: &CancellationToken) -> bool {
    let first_failure = Instant::now();
    let mut failures = 0u32;
    loop {
        match fence::raise(&host.store, epoch, &host.node).await {
            Ok(Raise::Raised | Raise::AlreadyHeld) => return true,
            Ok(Raise::Superseded { stored }) => {
                tracing::error!(%epoch, %stored, "a newer controller epoch holds the fence; not acting");
                host.membership.report_fenced_out(epoch.0, stored.0);
                return false;
            }
            Ok(Raise::HeldBy { node }) => {
                tracing::error!(%epoch, holder = %node, "another node holds the fence for this epoch; not acting");
                host.membership.report_fenced_out(epoch.0, epoch.0);
                return false;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(%epoch, error = %e, failures, "cannot raise the epoch fence yet");
                if failures == FENCE_ALERT_AFTER {
                    // A meta-alert, sent once (and resolved by the term that raises it).
                    let started_ms = crate::notify::unix_ms(std::time::SystemTime::now())
                        - first_failure.elapsed().as_millis() as i64;
                    super::watch::fence_not_raised(
                        host,
                        started_ms,
                        format!(
                            "{} was named controller for epoch {epoch} but has not been able to \
                             raise the epoch fence ({failures} attempts in {} s), so no check \
                             is being handed out. It keeps trying. Last error: {e}\n",
                            host.node,
                            first_failure.elapsed().as_secs()
                        ),
                    )
                    .await;
                }
                tokio::select! {
                    _ = token.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Follows edits to checks, contacts and alerts: asks the owner what to read, reads it
/// without holding anything, hands the rows back.
async fn reload_loop(term: TermHandle) {
    let mut failures = 0u32;
    let period = term.host.config.reload_period;
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(plan) = term.ask(|reply| Msg::Plan { reply }).await else {
            return;
        };
        match bounded_read(Catalog::fetch(&term.host.store, plan)).await {
            Ok(fetched) => {
                failures = 0;
                if !term.tell(Msg::Apply { fetched }).await {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "reload failed");
                if failures.is_multiple_of(10) {
                    term.host.tell_admin(
                        AdminKind::ReloadErrors,
                        format!("Got {failures} successive reload errors! Last: {e}"),
                    );
                }
            }
        }
    }
}

/// Writes the latest result per check and worker every few seconds.
async fn flush_loop(term: TermHandle) {
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        let Some(batch) = term.ask(|reply| Msg::TakeLatest { reply }).await else {
            return;
        };
        if batch.is_empty() {
            continue;
        }
        if let Err(e) =
            crate::store::results::write_latest(&term.host.store, term.epoch, &batch).await
        {
            tracing::debug!(error = %e, "could not store latest results");
        }
    }
}
