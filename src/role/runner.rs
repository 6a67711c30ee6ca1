//! A worker's check runner: asks the controller named by the current view for work (long
//! poll), runs each check with at most `num_threads` at once, and sends results back in
//! batches.
//!
//! A poll asks for exactly as many runs as this worker has free permits, and those permits
//! are taken before the poll is sent, so every run an answer brings starts at once: the
//! worker never accepts more than it can start. A worker with every permit taken (all its
//! checks waiting on black-holed targets, say) still polls every [`BUSY_POLL`] with capacity
//! 0: liveness never depends on a free permit, so a busy worker is not taken for a dead one. Results wait in a bounded buffer while no controller answers (the oldest are
//! dropped first, and counted); results from an epoch that is no longer current are dropped,
//! since no controller would count them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::membership::{Membership, Standing};
use crate::probe::{self, ProbeContext};
use crate::rpc::work::{
    PATH_POLL, PATH_RESULTS, PollReply, PollRequest, ResultsReply, ResultsRequest, RunStatus,
    WorkItem, WorkResult,
};
use crate::rpc::{RpcClient, RpcError};

/// How long the controller may hold a poll.
const POLL_WAIT: Duration = Duration::from_secs(2);
/// With no permit free, a poll (capacity 0, answered at once) still goes out this often, well
/// inside the controller's worker timeout (6 s).
pub const BUSY_POLL: Duration = Duration::from_secs(1);
/// Results per request.
const BATCH: usize = 1000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub runs: AtomicU64,
    pub results_sent: AtomicU64,
    pub results_dropped: AtomicU64,
    pub assignments_dropped: AtomicU64,
    /// Unix ms of the last successful exchange with a controller.
    pub last_contact_ms: AtomicU64,
}

pub struct Runner {
    membership: Arc<Membership>,
    client: RpcClient,
    ctx: ProbeContext,
    location: String,
    permits: Arc<Semaphore>,
    /// Runs started and not yet finished (permits reserved for a poll in flight are free).
    in_flight: AtomicUsize,
    buffer: std::sync::Mutex<VecDeque<WorkResult>>,
    buffer_cap: usize,
    ready: Notify,
    pub stats: RunnerStats,
}

impl Runner {
    pub fn new(
        membership: Arc<Membership>,
        client: RpcClient,
        ctx: ProbeContext,
        location: String,
        num_threads: usize,
        buffer_cap: usize,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            membership,
            client,
            ctx,
            location,
            permits: Arc::new(Semaphore::new(num_threads)),
            in_flight: AtomicUsize::new(0),
            buffer: std::sync::Mutex::new(VecDeque::new()),
            buffer_cap,
            ready: Notify::new(),
            stats: RunnerStats::default(),
        })
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, VecDeque<WorkResult>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Results waiting to be sent.
    pub fn buffered(&self) -> usize {
        self.buffer().len()
    }

    /// Checks running now (at most `num_threads`, the runner's own limit).
    pub fn running(&self, num_threads: usize) -> usize {
        self.in_flight.load(Ordering::Relaxed).min(num_threads)
    }

    /// Takes every free permit: what the next poll may ask for.
    fn reserve(&self) -> Vec<OwnedSemaphorePermit> {
        let mut reserved = Vec::with_capacity(self.permits.available_permits());
        while let Ok(p) = self.permits.clone().try_acquire_owned() {
            reserved.push(p);
        }
        reserved
    }

    fn push(&self, result: WorkResult) {
        let mut buf = self.buffer();
        buf.push_back(result);
        while buf.len() > self.buffer_cap {
            buf.pop_front();
            self.stats.results_dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(buf);
        self.ready.notify_one();
    }

    /// The controller to talk to and the epoch it acts for.
    fn target(&self) -> Option<(String, u64)> {
        if self
            .membership
            .stepping_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let standing = self.membership.standing();
        let c = standing.view.controller?;
        Some((c.addr, standing.view.epoch))
    }

    /// Returns once the controller to ask is no longer `current`: a view with another epoch or
    /// controller, or this node stepping down. A heartbeat that leaves the view as it was (one
    /// every `heartbeat_interval`) does not count.
    async fn target_changed(
        &self,
        standing: &mut watch::Receiver<Standing>,
        current: &(String, u64),
    ) {
        if self.target().as_ref() != Some(current) {
            return;
        }
        while standing.changed().await.is_ok() {
            if self.target().as_ref() != Some(current) {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    async fn wait_for_change(&self, shutdown: &CancellationToken, max: Duration) {
        let mut standing = self.membership.subscribe();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = standing.changed() => {}
            _ = tokio::time::sleep(max) => {}
        }
    }

    /// Asks for work and starts it, until `shutdown`.
    pub async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        // When a poll with no permit to offer may go out (one that offers some goes at once).
        let mut next_busy_poll = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let Some((addr, epoch)) = self.target() else {
                self.wait_for_change(&shutdown, Duration::from_millis(500))
                    .await;
                continue;
            };
            let mut reserved = self.reserve();
            if reserved.is_empty() && Instant::now() < next_busy_poll {
                // Poll again as soon as a run ends, or at BUSY_POLL to stay alive.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    p = self.permits.clone().acquire_owned() => reserved.extend(p.ok()),
                    _ = tokio::time::sleep_until(next_busy_poll) => {}
                }
                reserved.extend(self.reserve());
            }
            let capacity = reserved.len();
            next_busy_poll = Instant::now() + BUSY_POLL;
            let req = PollRequest {
                node: self.membership.node.clone(),
                epoch,
                location: self.location.clone(),
                capacity: capacity as u32,
                // Nothing to wait for without a free permit: the answer only proves liveness.
                wait_ms: if capacity == 0 {
                    0
                } else {
                    POLL_WAIT.as_millis() as u64
                },
            };
            let current = (addr.clone(), epoch);
            let mut standing = self.membership.subscribe();
            let answer = tokio::select! {
                _ = shutdown.cancelled() => return,
                // A new view: drop this poll and ask the new controller.
                _ = self.target_changed(&mut standing, &current) => continue,
                a = self.client.post::<_, PollReply>(&addr, PATH_POLL, &req, POLL_WAIT + Duration::from_secs(3)) => a,
            };
            match answer {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    self.membership.controller_answers(true);
                    self.stats
                        .last_contact_ms
                        .store(super::membership::wall_ms(), Ordering::Relaxed);
                    for item in reply.assignments {
                        let current = self.membership.standing().view.epoch;
                        // More than asked for (a controller that ignores `capacity`) cannot
                        // start now; dropped, the controller hands the run out again.
                        let permit = (item.epoch == current).then(|| reserved.pop()).flatten();
                        let Some(permit) = permit else {
                            self.stats
                                .assignments_dropped
                                .fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        self.start(item, permit);
                    }
                }
                Err(e) => {
                    if e.status() == Some(axum::http::StatusCode::CONFLICT) {
                        // The controller acts for another epoch: our view is behind or ahead.
                        self.wait_for_change(&shutdown, Duration::from_millis(200))
                            .await;
                    } else {
                        tracing::debug!(controller = %addr, error = %e, "poll failed");
                        self.membership.controller_answers(false);
                        // A dead controller is retried with backoff, but a new view (a new
                        // controller elected) is followed at once.
                        let followed = self.target().as_ref() != Some(&current)
                            || tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = self.target_changed(&mut standing, &current) => true,
                                _ = tokio::time::sleep(backoff) => false,
                            };
                        backoff = if followed {
                            Duration::from_millis(100)
                        } else {
                            (backoff * 2).min(Duration::from_secs(2))
                        };
                    }
                }
            }
        }
    }

    /// Runs `item` on `permit`, which the task holds until the result is buffered.
    fn start(self: &Arc<Self>, item: WorkItem, permit: OwnedSemaphorePermit) {
        let me = self.clone();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            me.stats.runs.fetch_add(1, Ordering::Relaxed);
            let result = match probe::run(&item.spec, &me.ctx).await {
                Ok(o) => WorkResult {
                    check: item.check,
                    ticket: item.ticket,
                    epoch: item.epoch,
                    status: match o.status {
                        crate::model::CheckStatus::Online => RunStatus::Online,
                        crate::model::CheckStatus::Offline => RunStatus::Offline,
                    },
                    message: o.message,
                    duration_ms: o.duration_ms,
                    details: o.details,
                },
                Err(e) => WorkResult {
                    check: item.check,
                    ticket: item.ticket,
                    epoch: item.epoch,
                    status: RunStatus::Fail,
                    message: probe::cut_text(&e.to_string(), probe::MESSAGE_CAP).into_owned(),
                    duration_ms: 0,
                    details: Default::default(),
                },
            };
            me.push(result);
            me.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Sends buffered results as they arrive, until `shutdown`; then makes one last attempt.
    pub async fn send_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = self.ready.notified() => false,
                _ = tokio::time::sleep(Duration::from_millis(500)) => false,
            };
            // Let results finishing together go in one request.
            if !stopping {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while self.flush().await && !shutdown.is_cancelled() {}
            if stopping {
                self.flush().await;
                return;
            }
        }
    }

    /// Sends one batch. True when it was sent and more may be waiting.
    async fn flush(&self) -> bool {
        let Some((addr, epoch)) = self.target() else {
            return false;
        };
        let batch: Vec<WorkResult> = {
            let mut buf = self.buffer();
            // Results of an older epoch can no longer count anywhere.
            let before = buf.len();
            buf.retain(|r| r.epoch >= epoch);
            let stale = before - buf.len();
            if stale > 0 {
                self.stats
                    .results_dropped
                    .fetch_add(stale as u64, Ordering::Relaxed);
            }
            let n = buf.len().min(BATCH);
            buf.drain(..n).collect()
        };
        if batch.is_empty() {
            return false;
        }
        let n = batch.len();
        let req = ResultsRequest {
            node: self.membership.node.clone(),
            epoch,
            results: batch,
        };
        let sent: Result<ResultsReply, RpcError> = self
            .client
            .post(&addr, PATH_RESULTS, &req, Duration::from_secs(5))
            .await;
        match sent {
            Ok(_) => {
                self.stats
                    .results_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.stats
                    .last_contact_ms
                    .store(super::membership::wall_ms(), Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!(controller = %addr, error = %e, results = n, "results not delivered; kept");
                let mut buf = self.buffer();
                for r in req.results.into_iter().rev() {
                    buf.push_front(r);
                }
                while buf.len() > self.buffer_cap {
                    buf.pop_front();
                    self.stats.results_dropped.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }
}
