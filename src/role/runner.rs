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

use axum::http::StatusCode;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::canaries::Canaries;
use super::membership::{Membership, Standing};
use crate::probe::{self, ProbeContext};
use crate::rpc::work::{
    PATH_POLL, PATH_RESULTS, PollReply, PollRequest, ResultsReply, ResultsRequest, RunStatus,
    WorkItem, WorkResult,
};
use crate::rpc::{MAX_BODY, RpcClient, RpcError};

/// How long the controller may hold a poll.
const POLL_WAIT: Duration = Duration::from_secs(2);
/// With no permit free, a poll (capacity 0, answered at once) still goes out this often, well
/// inside the controller's worker timeout (6 s).
pub const BUSY_POLL: Duration = Duration::from_secs(1);
/// Results per request at most; fewer when their encoded size would pass [`MAX_BODY`].
const BATCH: usize = 1000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub runs: AtomicU64,
    pub results_sent: AtomicU64,
    /// Results never delivered: pushed out of a full buffer, of an older epoch, too large for
    /// any request, or in a batch the controller refused for good (413, 400, 415, 422).
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
    /// This worker's canaries: their report goes with every poll, and while they say it is
    /// impaired its results go out as `fail`.
    pub canaries: Arc<Canaries>,
}

impl Runner {
    pub fn new(
        membership: Arc<Membership>,
        client: RpcClient,
        ctx: ProbeContext,
        location: String,
        num_threads: usize,
        buffer_cap: usize,
        canaries: Arc<Canaries>,
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
            canaries,
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
            let Some(mut reserved) = self.reserve_for_poll(&shutdown, next_busy_poll).await else {
                return;
            };
            next_busy_poll = Instant::now() + BUSY_POLL;
            let req = self.poll_request(epoch, reserved.len());
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
                    self.answered(reply, &mut reserved);
                }
                Err(e) => {
                    if e.status() == Some(StatusCode::CONFLICT) {
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

    /// The permits a poll offers: those free now; with none free before `next_busy_poll`,
    /// waits for a run to end or for that instant (a poll that proves liveness). `None` on
    /// shutdown.
    async fn reserve_for_poll(
        &self,
        shutdown: &CancellationToken,
        next_busy_poll: Instant,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut reserved = self.reserve();
        if reserved.is_empty() && Instant::now() < next_busy_poll {
            // Poll again as soon as a run ends, or at BUSY_POLL to stay alive.
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                p = self.permits.clone().acquire_owned() => reserved.extend(p.ok()),
                _ = tokio::time::sleep_until(next_busy_poll) => {}
            }
            reserved.extend(self.reserve());
        }
        Some(reserved)
    }

    /// A poll for `epoch` offering `capacity` runs.
    fn poll_request(&self, epoch: u64, capacity: usize) -> PollRequest {
        PollRequest {
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
            canaries: self.canaries.report(),
        }
    }

    /// The controller answered a poll: its canaries kept, its assignments started on the
    /// `reserved` permits.
    fn answered(self: &Arc<Self>, reply: PollReply, reserved: &mut Vec<OwnedSemaphorePermit>) {
        if let Some(urls) = reply.canaries {
            self.canaries.set_shared(urls);
        }
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
            me.push(me.judged(result));
            me.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// `result` as this worker may report it: while its canaries say it is impaired, it
    /// cannot tell a down target from its own broken network, so the result is a `fail`.
    fn judged(&self, mut result: WorkResult) -> WorkResult {
        if self.canaries.impaired() && result.status != RunStatus::Fail {
            result.message = probe::cut_text(
                &format!(
                    "this worker is impaired (its canaries fail), so its result does not count: {}",
                    if result.message.is_empty() {
                        "online"
                    } else {
                        &result.message
                    }
                ),
                probe::MESSAGE_CAP,
            )
            .into_owned();
            result.status = RunStatus::Fail;
        }
        result
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

    /// Sends one batch to the current controller. True when it was sent (or refused for
    /// good and dropped) and more may be waiting.
    async fn flush(&self) -> bool {
        let Some((addr, epoch)) = self.target() else {
            return false;
        };
        self.flush_to(&addr, epoch).await
    }

    /// Takes the next batch off the buffer: at most [`BATCH`] results whose request body stays
    /// within [`MAX_BODY`]. Results of an older epoch, and a result too large for any request,
    /// are dropped and counted.
    fn next_batch(&self, epoch: u64) -> Vec<WorkResult> {
        let mut buf = self.buffer();
        // Results of an older epoch can no longer count anywhere.
        let before = buf.len();
        buf.retain(|r| r.epoch >= epoch);
        let mut dropped = before - buf.len();
        let room = MAX_BODY - envelope_len(&self.membership.node, epoch);
        let mut batch = Vec::new();
        let mut used = 0;
        while batch.len() < BATCH {
            let Some(next) = buf.front() else { break };
            // One byte for the comma before every result but the first.
            let len = encoded_len(next) + usize::from(!batch.is_empty());
            if len > room && batch.is_empty() {
                tracing::warn!(check = %next.check, bytes = len, limit = MAX_BODY, "a result too large for any request; dropped");
                buf.pop_front();
                dropped += 1;
                continue;
            }
            if used + len > room {
                break;
            }
            used += len;
            batch.extend(buf.pop_front());
        }
        if dropped > 0 {
            self.stats
                .results_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        batch
    }

    /// Sends one batch to `addr`, the controller of `epoch`. A batch the controller refuses
    /// as unacceptable (too large, or not a valid request) would be refused again: it is
    /// dropped and counted. Any other failure puts it back, to be sent again later.
    async fn flush_to(&self, addr: &str, epoch: u64) -> bool {
        let batch = self.next_batch(epoch);
        if batch.is_empty() {
            return false;
        }
        let n = batch.len();
        let req = ResultsRequest {
            node: self.membership.node.clone(),
            epoch,
            results: batch,
        };
        let body = match serde_json::to_vec(&req) {
            Ok(b) => b,
            Err(e) => {
                // Structs of strings and numbers always encode; counted, never retried.
                tracing::error!(error = %e, results = n, "results cannot be encoded; dropped");
                self.stats
                    .results_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
                return true;
            }
        };
        // Five seconds, and one more per MiB: a full batch must not time out on its size.
        let timeout = Duration::from_secs(5 + (body.len() >> 20) as u64);
        let sent: Result<ResultsReply, RpcError> = self
            .client
            .post_bytes(addr, PATH_RESULTS, body, timeout)
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
            Err(e) if e.status().is_some_and(never_accepted) => {
                tracing::warn!(controller = %addr, error = %e, results = n, "results refused for good; dropped");
                self.stats
                    .results_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
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

/// Answers that say the same request would be refused again: too large (413), or not a valid
/// request (400, 415, 422). Sending it again cannot help.
fn never_accepted(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::BAD_REQUEST
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// Counts what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `r` in JSON, as a request carries it.
fn encoded_len(r: &WorkResult) -> usize {
    let mut count = ByteCount(0);
    // Writing to a counter cannot fail, and a struct of strings and numbers always encodes;
    // a failure would show as a zero length and the request encoding would then report it.
    let _ = serde_json::to_writer(&mut count, r);
    count.0
}

/// The size of a [`ResultsRequest`] with no results.
fn envelope_len(node: &str, epoch: u64) -> usize {
    let empty = ResultsRequest {
        node: node.to_string(),
        epoch,
        results: Vec::new(),
    };
    serde_json::to_vec(&empty).map_or(256, |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::model::CheckId;
    use crate::rpc::SignedRoutes;
    use crate::rpc::sign::Signer;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::{Json, Router};

    const SECRET: &str = "a-secret-of-some-length";

    /// What a stand-in controller saw: requests, results in them.
    #[derive(Default)]
    struct Seen {
        requests: AtomicU64,
        results: AtomicU64,
    }

    /// Serves `PATH_RESULTS` on the real signed routes; with `refuse`, answers every request
    /// with 413 instead of reading it.
    async fn controller(refuse: bool) -> (String, Arc<Seen>, CancellationToken) {
        async fn take(State(seen): State<Arc<Seen>>, Json(req): Json<ResultsRequest>) -> Response {
            seen.requests.fetch_add(1, Ordering::Relaxed);
            let n = req.results.len() as u32;
            seen.results.fetch_add(u64::from(n), Ordering::Relaxed);
            Json(ResultsReply {
                accepted: n,
                ignored: 0,
            })
            .into_response()
        }
        async fn refuse_all(State(seen): State<Arc<Seen>>) -> Response {
            seen.requests.fetch_add(1, Ordering::Relaxed);
            (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response()
        }
        let seen = Arc::new(Seen::default());
        let route = if refuse { post(refuse_all) } else { post(take) };
        let router = Router::new()
            .route(PATH_RESULTS, route)
            .signed(
                Arc::new(Signer::cluster(&Secret::new(SECRET), "controller")),
                crate::rpc::Allow::Any,
            )
            .with_state(seen.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, None);
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));
        (addr, seen, shutdown)
    }

    fn runner() -> Arc<Runner> {
        runner_with(Vec::new(), Duration::from_secs(1), 100_000).0
    }

    /// A runner of worker w1 with viewservers `view`, heartbeats every `beat` and `queue`
    /// results kept, and its membership.
    fn runner_with(
        view: Vec<String>,
        beat: Duration,
        queue: usize,
    ) -> (Arc<Runner>, Arc<Membership>) {
        let client =
            RpcClient::with_tls(Arc::new(Signer::cluster(&Secret::new(SECRET), "w1")), None)
                .unwrap();
        let membership = Membership::new(
            "w1".into(),
            None,
            view,
            beat,
            Duration::from_secs(1),
            client.clone(),
        );
        let runner = Runner::new(
            membership.clone(),
            client,
            ProbeContext::default(),
            "here".into(),
            2,
            queue,
            Arc::new(Canaries::new("w1", Vec::new(), Duration::from_secs(10))),
        );
        (runner, membership)
    }

    fn result(check: i64, message: String) -> WorkResult {
        WorkResult {
            check: CheckId(check),
            ticket: 1,
            epoch: 3,
            status: RunStatus::Offline,
            message,
            duration_ms: 1,
            details: Default::default(),
        }
    }

    /// Flushes until nothing more goes (bounded); returns how many flushes went.
    async fn flush_all(r: &Runner, addr: &str) -> usize {
        let mut went = 0;
        while went < 100 && r.flush_to(addr, 3).await {
            went += 1;
        }
        went
    }

    /// A stand-in for the viewserver group and the controller on one signed listener: every
    /// heartbeat gets a view naming this listener controller of epoch 3; the first poll gets
    /// `items` (raw JSON, as a hostile controller could send it), later ones nothing; results
    /// are kept.
    async fn hostile_controller(
        items: serde_json::Value,
    ) -> (
        String,
        Arc<std::sync::Mutex<Vec<WorkResult>>>,
        CancellationToken,
    ) {
        use crate::view::group::{HeartbeatReply, PATH_HEARTBEAT};
        use crate::view::{ControllerRef, View};

        #[derive(Clone)]
        struct Stand {
            addr: String,
            items: Arc<std::sync::Mutex<Option<serde_json::Value>>>,
            results: Arc<std::sync::Mutex<Vec<WorkResult>>>,
        }
        async fn heartbeat(State(s): State<Stand>) -> Json<HeartbeatReply> {
            let controller = ControllerRef {
                node: "controller".into(),
                addr: s.addr.clone(),
            };
            Json(HeartbeatReply {
                view: View {
                    epoch: 3,
                    controller: Some(controller),
                },
                leader: 1,
                leader_addr: s.addr,
                controller_timeout_ms: 0,
            })
        }
        async fn poll(State(s): State<Stand>, Json(req): Json<PollRequest>) -> Response {
            let items = s.items.lock().unwrap().take();
            match items {
                Some(items) => {
                    Json(serde_json::json!({"epoch": 3, "assignments": items})).into_response()
                }
                None => {
                    // A long poll with nothing due, held as the controller holds it.
                    tokio::time::sleep(Duration::from_millis(req.wait_ms.min(500))).await;
                    Json(serde_json::json!({"epoch": 3, "assignments": []})).into_response()
                }
            }
        }
        async fn results(State(s): State<Stand>, Json(req): Json<ResultsRequest>) -> Response {
            let n = req.results.len() as u32;
            s.results.lock().unwrap().extend(req.results);
            Json(ResultsReply {
                accepted: n,
                ignored: 0,
            })
            .into_response()
        }
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let stand = Stand {
            addr: addr.clone(),
            items: Arc::new(std::sync::Mutex::new(Some(items))),
            results: Arc::default(),
        };
        let router = Router::new()
            .route(PATH_HEARTBEAT, post(heartbeat))
            .route(PATH_POLL, post(poll))
            .route(PATH_RESULTS, post(results))
            .signed(
                Arc::new(Signer::cluster(&Secret::new(SECRET), "controller")),
                crate::rpc::Allow::Any,
            )
            .with_state(stand.clone());
        let shutdown = CancellationToken::new();
        let listener = crate::api::NodeListener::new(tcp, None);
        tokio::spawn(crate::api::serve(listener, router, shutdown.clone()));
        (addr, stand.results, shutdown)
    }

    /// A signed controller hands out an icmp run of 4 billion packets and a tcp run with a
    /// timeout of `u64::MAX` seconds: the worker clamps both as it would a row (20 packets,
    /// 30 s) and answers each with one result; nothing panics or allocates a future per
    /// requested packet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_specs_are_clamped_and_each_gets_one_result() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let items = serde_json::json!([
            {"check": 1, "ticket": 11, "epoch": 3, "spec": {
                "type": "icmp", "target": "127.0.0.1", "force_ip": "any",
                "count": 4_000_000_000u32, "loss_rule": {"max_lost": u32::MAX},
                "max_response_ms": u64::MAX, "timeout_secs": u64::MAX}},
            {"check": 2, "ticket": 12, "epoch": 3, "spec": {
                "type": "tcp", "address": closed_addr, "force_ip": "any", "payload": "",
                "expect": "", "timeout_secs": u64::MAX, "max_response_ms": u64::MAX}},
        ]);
        let (addr, results, stop_controller) = hostile_controller(items).await;
        let (r, membership) = runner_with(vec![addr], Duration::from_millis(200), 100);
        let shutdown = CancellationToken::new();
        tokio::spawn(membership.run(shutdown.clone()));
        tokio::spawn(r.clone().poll_loop(shutdown.clone()));
        tokio::spawn(r.clone().send_loop(shutdown.clone()));

        // An icmp run ends within its 10 s deadline, a tcp run within 30 s.
        let limit = Instant::now() + Duration::from_secs(40);
        let got = loop {
            let got = results.lock().unwrap().clone();
            if got.len() >= 2 || Instant::now() > limit {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        shutdown.cancel();
        stop_controller.cancel();
        assert_eq!(got.len(), 2, "one result per run: {got:?}");
        let icmp = got.iter().find(|w| w.check == CheckId(1)).unwrap();
        assert_eq!(icmp.status, RunStatus::Online, "{icmp:?}");
        assert_eq!(
            icmp.details.packets_sent,
            Some(crate::probe::MAX_PING_COUNT)
        );
        let tcp = got.iter().find(|w| w.check == CheckId(2)).unwrap();
        assert_eq!(tcp.status, RunStatus::Offline, "{tcp:?}");
        assert_eq!(r.stats.runs.load(Ordering::Relaxed), 2);
        assert_eq!(r.stats.results_dropped.load(Ordering::Relaxed), 0);
    }

    /// 1,000 results of 20 KB (20 MB, above both the old 2 MB extractor limit and `MAX_BODY`)
    /// are accepted in pieces, each under the limit.
    #[tokio::test]
    async fn a_batch_above_the_limit_is_accepted_in_pieces() {
        let (addr, seen, shutdown) = controller(false).await;
        let r = runner();
        for i in 0..1000 {
            r.push(result(i, "m".repeat(20_000)));
        }
        let went = flush_all(&r, &addr).await;
        assert_eq!(seen.results.load(Ordering::Relaxed), 1000);
        assert_eq!(r.stats.results_sent.load(Ordering::Relaxed), 1000);
        assert_eq!(r.stats.results_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(r.buffered(), 0);
        let requests = seen.requests.load(Ordering::Relaxed);
        assert!(requests >= 2, "{requests} request(s)");
        assert_eq!(went as u64, requests);
        shutdown.cancel();
    }

    /// A batch refused as too large is dropped and counted, not put back and resent; a result
    /// that fits in no request is dropped without being sent.
    #[tokio::test]
    async fn a_refused_batch_is_dropped_and_counted_not_resent() {
        let (addr, seen, shutdown) = controller(true).await;
        let r = runner();
        for i in 0..10 {
            r.push(result(i, "short".into()));
        }
        flush_all(&r, &addr).await;
        assert_eq!(seen.requests.load(Ordering::Relaxed), 1, "sent once");
        assert_eq!(r.stats.results_dropped.load(Ordering::Relaxed), 10);
        assert_eq!(r.stats.results_sent.load(Ordering::Relaxed), 0);
        assert_eq!(r.buffered(), 0, "nothing kept to be resent");
        // Sending again finds nothing to send.
        assert!(!r.flush_to(&addr, 3).await);
        assert_eq!(seen.requests.load(Ordering::Relaxed), 1);

        r.push(result(11, "x".repeat(MAX_BODY)));
        flush_all(&r, &addr).await;
        assert_eq!(seen.requests.load(Ordering::Relaxed), 1, "never sent");
        assert_eq!(r.stats.results_dropped.load(Ordering::Relaxed), 11);
        assert_eq!(r.buffered(), 0);
        shutdown.cancel();
    }
}
