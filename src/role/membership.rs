//! A worker's membership in the cluster: heartbeats to the viewserver group, the view they
//! return, and the controller lease (DESIGN 2.2).
//!
//! The lease is measured from when a heartbeat that got an answer was *sent*: the group can only
//! have received it later, and it replaces a controller only after `controller_timeout` of
//! silence, which is longer than the lease. So an old controller's lease runs out before the
//! group can name a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::rpc::RpcClient;
use crate::view::View;
use crate::view::group::{FencedOut, Heartbeat, HeartbeatReply, PATH_HEARTBEAT, PATH_NOTICE};
use crate::view::types::{NoticeReply, NoticeRequest};

/// The longest a worker heartbeats fast after its controller stopped answering: more than any
/// sane `controller_timeout` plus an election.
const EAGER_FOR: Duration = Duration::from_secs(15);

/// What a worker knows of the cluster after its latest heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// The latest committed view received.
    pub view: View,
    /// When the last heartbeat that was answered had been sent.
    pub acked_at: Option<Instant>,
    /// The Raft leader that answered it.
    pub leader_addr: Option<String>,
    /// The last heartbeat round got no answer from any member.
    pub group_down: bool,
    /// The group's `controller_timeout`, as its last answer said.
    pub controller_timeout: Option<Duration>,
}

impl Standing {
    /// The epoch this node may act as controller for, at `now`: the view names it, it is not
    /// stepping down, and its last answered heartbeat is younger than `lease`.
    pub fn lease(
        &self,
        me: &str,
        lease: Duration,
        stepping_down: bool,
        now: Instant,
    ) -> Option<Lease> {
        let controller = self.view.controller.as_ref()?;
        let acked = self.acked_at?;
        let until = acked + lease;
        (controller.node == me && !stepping_down && now < until).then_some(Lease {
            epoch: self.view.epoch,
            until,
        })
    }

    /// While the whole group is unreachable and the last view names `me`: the moment from
    /// which it may act under the epoch fence alone. That is two `controller_timeout`s and a
    /// heartbeat (`heartbeat`, this node's interval) after the last answered heartbeat was
    /// sent: by then a group that is still working has named another controller, which has
    /// raised the fence.
    pub fn fence_alone_at(
        &self,
        me: &str,
        stepping_down: bool,
        heartbeat: Duration,
    ) -> Option<Instant> {
        let named = self.view.controller.as_ref().is_some_and(|c| c.node == me);
        if !self.group_down || !named || stepping_down {
            return None;
        }
        // Before any answer said otherwise, assume the default timeout.
        let timeout = self
            .controller_timeout
            .unwrap_or(crate::config::DEFAULT_CONTROLLER_TIMEOUT);
        Some(self.acked_at? + 2 * timeout + heartbeat)
    }
}

pub use crate::lease::Lease;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    /// Round trips of the answered heartbeats, summed (microseconds): divided by `answered`,
    /// the mean round trip over any window.
    pub answered_rtt_us: AtomicU64,
    /// When a refused heartbeat was last logged (Unix ms).
    pub refused_warned_ms: AtomicU64,
}

/// The worker's side of the membership protocol.
#[derive(Debug)]
pub struct Membership {
    pub node: String,
    pub controller_addr: Option<String>,
    pub view_addrs: Vec<String>,
    pub interval: Duration,
    pub lease: Duration,
    pub stepping_down: AtomicBool,
    /// Unix ms since when the controller of the current view has not answered, 0 when it
    /// answers (see [`Membership::run`]).
    eager_since_ms: AtomicU64,
    up_since_ms: AtomicU64,
    pub stats: HeartbeatStats,
    /// See [`Membership::report_fenced_out`].
    fenced_out: std::sync::Mutex<Option<FencedOut>>,
    /// The highest epoch this node has seen in the fence.
    fence_seen: AtomicU64,
    standing: watch::Sender<Standing>,
    client: RpcClient,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Membership {
    pub fn new(
        node: String,
        controller_addr: Option<String>,
        view_addrs: Vec<String>,
        interval: Duration,
        lease: Duration,
        client: RpcClient,
    ) -> Arc<Membership> {
        Arc::new(Membership {
            node,
            controller_addr,
            view_addrs,
            interval,
            lease,
            stepping_down: AtomicBool::new(false),
            eager_since_ms: AtomicU64::new(0),
            up_since_ms: AtomicU64::new(now_ms()),
            stats: HeartbeatStats::default(),
            fenced_out: std::sync::Mutex::new(None),
            fence_seen: AtomicU64::new(0),
            standing: watch::channel(Standing::default()).0,
            client,
        })
    }

    /// Follows every change of standing.
    /// The signed client this node's heartbeats use.
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    pub fn subscribe(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    pub fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    /// The lease this node holds now, if any.
    pub fn current_lease(&self) -> Option<Lease> {
        self.standing.borrow().lease(
            &self.node,
            self.lease,
            self.stepping_down.load(Ordering::Relaxed),
            Instant::now(),
        )
    }

    /// The runner's report on the controller: `false` when it does not answer, so heartbeats
    /// come faster until a new view names another.
    pub fn controller_answers(&self, answers: bool) {
        if answers {
            self.eager_since_ms.store(0, Ordering::Relaxed);
        } else {
            // Keep the first moment of silence; later failures do not extend the fast phase.
            let _ = self.eager_since_ms.compare_exchange(
                0,
                now_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether this node may act as controller for `epoch` now: it holds the lease, or the
    /// whole viewserver group has been unreachable for longer than it could take a working
    /// group to replace this node ([`Standing::fence_alone_at`]) and the view it last saw
    /// names it for `epoch`. In the second case it acts under the epoch fence alone (the
    /// caller checks first that no newer epoch has raised it): a node merely cut off from a
    /// working group has stopped when its lease ran out, before a successor could be named,
    /// and finds the successor's epoch in the fence when the wait is over.
    pub fn may_act(&self, epoch: u64) -> bool {
        if self.current_lease().is_some_and(|l| l.epoch == epoch) {
            return true;
        }
        self.fence_only(epoch)
    }

    /// The second case of [`Membership::may_act`].
    pub fn fence_only(&self, epoch: u64) -> bool {
        let s = self.standing.borrow();
        s.view.epoch == epoch
            && s.fence_alone_at(
                &self.node,
                self.stepping_down.load(Ordering::Relaxed),
                self.interval,
            )
            .is_some_and(|at| Instant::now() >= at)
    }

    /// This node, named for `epoch`, cannot act for it: the fence holds `fence` (newer, or the
    /// same epoch for another node). Sent with every heartbeat while the view names it for
    /// `epoch`, so the group names a controller past the fence.
    pub fn report_fenced_out(&self, epoch: u64, fence: u64) {
        self.saw_fence(fence);
        let mut r = self.fenced_out.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none_or(|f| f.epoch <= epoch) {
            *r = Some(FencedOut { epoch, fence });
        }
    }

    /// Notes an epoch seen in the fence.
    pub fn saw_fence(&self, epoch: u64) {
        self.fence_seen.fetch_max(epoch, Ordering::Relaxed);
    }

    /// The highest epoch this node has seen in the fence.
    pub fn fence_seen(&self) -> u64 {
        self.fence_seen.load(Ordering::Relaxed)
    }

    /// The report to send now: only while the view still names this node for its epoch.
    fn fenced_out(&self) -> Option<FencedOut> {
        let report = *self.fenced_out.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.standing.borrow();
        let named = s
            .view
            .controller
            .as_ref()
            .is_some_and(|c| c.node == self.node);
        report.filter(|f| named && f.epoch == s.view.epoch)
    }

    /// Starts or ends a hand-over: while stepping down the group is told not to name this node
    /// (and to replace it if it is the controller), and the lease is dropped at once.
    pub fn set_stepping_down(&self, on: bool) {
        self.stepping_down.store(on, Ordering::Relaxed);
        if !on {
            // Coming back counts as a fresh start, not as "up the longest".
            self.up_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.standing.send_modify(|_| {});
    }

    /// Heartbeats the group every `interval` until `shutdown`, trying the last known leader
    /// first, then every member in turn.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        loop {
            // While the controller does not answer, heartbeat faster: the new view (and, for
            // the node named in it, the lease) is learned within a fraction of the interval.
            // Bounded: a controller that stays away (or a view naming nobody) does not keep
            // this node at ten heartbeats a second; a failover is over well within the bound.
            let since = self.eager_since_ms.load(Ordering::Relaxed);
            let eager = since != 0 && now_ms().saturating_sub(since) < EAGER_FOR.as_millis() as u64;
            let fast = (self.interval / 10).max(Duration::from_millis(100));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = tokio::time::sleep(fast), if eager => {}
            }
            if last_ok.elapsed() > self.lease {
                // Contact was broken: continuity starts again.
                self.up_since_ms.store(now_ms(), Ordering::Relaxed);
            }
            if let Some((sent_at, reply)) = self.beat().await {
                last_ok = Instant::now();
                let seen = self.standing.borrow().view.epoch;
                if reply.view.epoch < seen {
                    // The group counts from a lower epoch: it lost its data. Its view is the
                    // one that counts now; what this node saw is at most what the fence holds,
                    // and is reported if this node is named for an epoch the fence has passed.
                    tracing::warn!(
                        seen,
                        group = reply.view.epoch,
                        "the viewserver group's view went back; following it"
                    );
                    self.saw_fence(seen);
                }
                self.standing.send_modify(|s| {
                    s.view = reply.view;
                    s.acked_at = Some(sent_at);
                    s.leader_addr = Some(reply.leader_addr);
                    s.group_down = false;
                    if reply.controller_timeout_ms > 0 {
                        s.controller_timeout =
                            Some(Duration::from_millis(reply.controller_timeout_ms));
                    }
                });
            } else {
                self.standing.send_if_modified(|s| {
                    let changed = !s.group_down;
                    s.group_down = true;
                    changed
                });
            }
        }
    }

    /// Opens or closes the group notice `key` (see [`crate::view::types::ViewCommand::Notice`]):
    /// `Ok(true)` when this call changed it, so this node is the one to tell the admin;
    /// `Err` when no member answered (the caller tells anyway: twice beats never).
    pub async fn claim_notice(&self, key: &str, open: bool) -> Result<bool, String> {
        let req = NoticeRequest {
            key: key.to_string(),
            open,
            forwarded: false,
        };
        let leader = self.standing.borrow().leader_addr.clone();
        let order = leader.iter().chain(
            self.view_addrs
                .iter()
                .filter(|a| Some(*a) != leader.as_ref()),
        );
        let mut last = String::from("no viewserver member configured");
        for addr in order {
            match self
                .client
                .post::<_, NoticeReply>(addr, PATH_NOTICE, &req, Duration::from_secs(3))
                .await
            {
                Ok(reply) => return Ok(reply.changed),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    }

    /// One heartbeat round: the first member that answers.
    async fn beat(&self) -> Option<(Instant, HeartbeatReply)> {
        let hb = Heartbeat {
            node: self.node.clone(),
            controller_addr: self.controller_addr.clone(),
            up_since_ms: self.up_since_ms.load(Ordering::Relaxed),
            stepping_down: self.stepping_down.load(Ordering::Relaxed),
            forwarded: false,
            fenced_out: self.fenced_out(),
        };
        let leader = self.standing.borrow().leader_addr.clone();
        let order = leader.iter().chain(
            self.view_addrs
                .iter()
                .filter(|a| Some(*a) != leader.as_ref()),
        );
        let timeout = self
            .interval
            .clamp(Duration::from_millis(200), Duration::from_secs(2));
        for addr in order {
            let sent_at = Instant::now();
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
            match self
                .client
                .post::<_, HeartbeatReply>(addr, PATH_HEARTBEAT, &hb, timeout)
                .await
            {
                Ok(reply) => {
                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                    let rtt = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.answered_rtt_us.fetch_add(rtt, Ordering::Relaxed);
                    return Some((sent_at, reply));
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    if e.status() == Some(axum::http::StatusCode::UNAUTHORIZED) {
                        // Not a passing outage: this node's key or clock is wrong. Said once
                        // a minute, and counted in heartbeats_failed.
                        let now = wall_ms();
                        let last = self.stats.refused_warned_ms.load(Ordering::Relaxed);
                        if now.saturating_sub(last) >= 60_000 {
                            self.stats.refused_warned_ms.store(now, Ordering::Relaxed);
                            tracing::warn!(member = %addr, error = %e, "the viewserver group refused this node's heartbeat; check [default] password or [worker] key, the node id, and the clock");
                        }
                    }
                    tracing::debug!(member = %addr, error = %e, "heartbeat not answered");
                }
            }
        }
        tracing::debug!("no viewserver member answered this heartbeat");
        None
    }
}

/// Unix milliseconds, for lease log lines that tests compare across processes.
pub fn wall_ms() -> u64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ControllerRef;

    fn standing(node: &str, acked: Instant) -> Standing {
        Standing {
            view: View {
                epoch: 4,
                controller: Some(ControllerRef {
                    node: node.into(),
                    addr: "a:1".into(),
                }),
            },
            acked_at: Some(acked),
            leader_addr: None,
            group_down: false,
            controller_timeout: Some(Duration::from_secs(4)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acting_under_the_fence_alone_waits_out_a_successor() {
        let t0 = Instant::now();
        let hb = Duration::from_secs(1);
        let mut s = standing("w1", t0);
        assert_eq!(s.fence_alone_at("w1", false, hb), None, "group answering");
        s.group_down = true;
        // Two controller timeouts (4 s) and a heartbeat after the last answered send.
        assert_eq!(
            s.fence_alone_at("w1", false, hb),
            Some(t0 + Duration::from_secs(9))
        );
        assert_eq!(s.fence_alone_at("w2", false, hb), None, "not named");
        assert_eq!(s.fence_alone_at("w1", true, hb), None, "stepping down");
        s.controller_timeout = Some(Duration::from_millis(1500));
        assert_eq!(
            s.fence_alone_at("w1", false, hb),
            Some(t0 + Duration::from_secs(4)),
            "the group's own timeout counts"
        );
        // The wait always ends after the lease (shorter than the timeout) has run out.
        let lease = Duration::from_millis(1000);
        let at = s.fence_alone_at("w1", false, hb).unwrap();
        assert!(s.lease("w1", lease, false, at).is_none());
        s.acked_at = None;
        assert_eq!(s.fence_alone_at("w1", false, hb), None, "never answered");
    }

    #[tokio::test(start_paused = true)]
    async fn lease_runs_from_the_send_and_only_for_the_named_node() {
        let t0 = Instant::now();
        let s = standing("w1", t0);
        let lease = Duration::from_secs(3);
        assert_eq!(s.lease("w1", lease, false, t0).map(|l| l.epoch), Some(4));
        assert!(s.lease("w2", lease, false, t0).is_none(), "not named");
        assert!(s.lease("w1", lease, true, t0).is_none(), "stepping down");
        tokio::time::advance(Duration::from_millis(2999)).await;
        assert!(s.lease("w1", lease, false, Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            s.lease("w1", lease, false, Instant::now()).is_none(),
            "expired"
        );
        assert!(Standing::default().lease("w1", lease, false, t0).is_none());
    }
}
