//! One member of the viewserver group: its Raft node, bootstrap, the liveness of workers (in
//! the leader's memory only, never in the log), and the election of controllers.
//!
//! Election (DESIGN 2.1): the leader names a new controller, epoch + 1, when the current one
//! has sent no heartbeat for `controller_timeout`, or asked to step down. It picks the live
//! controller-capable worker that has been up the longest. A newly elected leader first waits
//! one `controller_timeout` to learn who is alive. When nobody can take over, the view says so
//! (controller `None`) and one admin notice is raised.
//!
//! Heartbeat replies are served only after the leader has confirmed its leadership with a
//! quorum (`ensure_linearizable`), so a deposed leader cannot extend a controller's lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::log_store::FileLogStore;
use super::network::Network;
use super::state_machine::ViewStateMachine;
use super::types::{ControllerRef, NoticeReply, NoticeRequest, Raft, View, ViewCommand};
use crate::config::ViewserverConfig;
use crate::rpc::{RpcClient, RpcError};

pub const PATH_HEARTBEAT: &str = "/view/heartbeat";
/// Opens or closes a group notice ([`ViewCommand::Notice`]); holders of the cluster secret.
pub const PATH_NOTICE: &str = "/view/notice";
pub const PATH_STATE: &str = "/raft/state";

/// A worker's heartbeat to the group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's node id.
    pub node: String,
    /// Its controller API address when it may become controller; `None` for probe-only.
    pub controller_addr: Option<String>,
    /// Unix milliseconds since when the worker has been in continuous contact with the group
    /// ("up the longest" wins an election).
    pub up_since_ms: u64,
    /// The worker is handing over (`SIGUSR1`, `/disconnect`, shutdown): never name it, and
    /// replace it at once if it is the controller.
    pub stepping_down: bool,
    /// Set by a member that forwards a worker's heartbeat to the leader (never forwarded twice).
    #[serde(default)]
    pub forwarded: bool,
    /// Set by the worker the view names when it cannot act for the view's epoch: the epoch
    /// fence in MySQL is ahead of it (or holds it for another node), as when the group lost
    /// its data and counts from zero again. The leader then names a controller past the fence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_out: Option<FencedOut>,
}

impl Heartbeat {
    /// The heartbeat as far as its signed sender can vouch for it: a worker that signed with
    /// its node key (not the cluster secret) can never become controller, whatever it claims.
    pub fn from_sender(mut self, sender: &crate::rpc::Sender) -> Heartbeat {
        if !sender.trusted {
            self.controller_addr = None;
            self.fenced_out = None;
        }
        self
    }
}

/// A named controller's report that the fence rules its epoch out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedOut {
    /// The epoch the view named it for.
    pub epoch: u64,
    /// The epoch the fence holds.
    pub fence: u64,
}

/// The group's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The committed view.
    pub view: View,
    /// The Raft leader that served it.
    pub leader: u64,
    /// The leader's address, so the worker can talk to it directly next time.
    pub leader_addr: String,
    /// How long the group waits before replacing a silent controller, so a controller that
    /// loses the whole group knows when a successor could have raised the fence (0: unknown).
    #[serde(default)]
    pub controller_timeout_ms: u64,
}

/// Whether a member has Raft state, asked during bootstrap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberState {
    pub id: u64,
    pub pristine: bool,
}

/// Why a heartbeat could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("no leader known yet")]
    NoLeader,
    #[error("forwarding to the leader failed: {0}")]
    Forward(#[from] RpcError),
    #[error("raft: {0}")]
    Raft(String),
}

#[derive(Debug, Clone)]
struct Live {
    last_seen: Instant,
    up_since_ms: u64,
    controller_addr: Option<String>,
    stepping_down: bool,
    fenced_out: Option<FencedOut>,
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct GroupStats {
    pub heartbeats: AtomicU64,
    pub views_committed: AtomicU64,
}

/// One viewserver member.
pub struct ViewGroup {
    pub raft: Raft,
    id: u64,
    peers: Vec<String>,
    config: ViewserverConfig,
    log: FileLogStore,
    sm: ViewStateMachine,
    client: RpcClient,
    liveness: Mutex<HashMap<String, Live>>,
    /// Started with an empty data dir while the group already exists: refuse to vote until
    /// the leader has replicated the log here (see [`ViewGroup::accepts_votes`]).
    catching_up: AtomicBool,
    /// The data dir held no Raft state when this process started.
    pristine_at_start: bool,
    admin: mpsc::UnboundedSender<(String, String)>,
    pub stats: GroupStats,
}

impl std::fmt::Debug for ViewGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewGroup").field("id", &self.id).finish()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ViewGroup {
    /// Opens the storage under `data_dir` and starts the Raft node. `admin` receives admin
    /// notices (subject, body).
    pub async fn start(
        config: ViewserverConfig,
        client: RpcClient,
        admin: mpsc::UnboundedSender<(String, String)>,
    ) -> Result<Arc<ViewGroup>, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
        let log = FileLogStore::open(&config.data_dir).map_err(|e| e.to_string())?;
        let sm = ViewStateMachine::open(&config.data_dir).map_err(|e| e.to_string())?;
        let election_ms = config.raft_election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "gobearmon-viewserver".into(),
            heartbeat_interval: config.raft_heartbeat.as_millis() as u64,
            election_timeout_min: election_ms,
            election_timeout_max: election_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("raft config: {e}"))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network::new(client.clone()),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| format!("cannot start raft: {e}"))?;
        let pristine_at_start = log.is_pristine();
        Ok(Arc::new(ViewGroup {
            raft,
            id: config.id,
            peers: config.peers.clone(),
            config,
            log,
            sm,
            client,
            liveness: Mutex::new(HashMap::new()),
            catching_up: AtomicBool::new(false),
            pristine_at_start,
            admin,
            stats: GroupStats::default(),
        }))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The view as applied on this member.
    pub fn view(&self) -> View {
        self.sm.view()
    }

    /// Every applied change of the view.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<View> {
        self.sm.subscribe()
    }

    /// This member's own state, for a bootstrapping peer.
    pub fn member_state(&self) -> MemberState {
        MemberState {
            id: self.id,
            pristine: self.log.is_pristine(),
        }
    }

    /// False while this member is catching up after losing its data dir: a member that forgot
    /// its vote must not vote again in a term it may already have voted in.
    pub fn accepts_votes(&self) -> bool {
        if self.catching_up.load(Ordering::Relaxed) && !self.log.is_pristine() {
            // The leader has replicated to us: our log and vote come from the current term.
            self.catching_up.store(false, Ordering::Relaxed);
            tracing::info!("caught up with the group; voting again");
        }
        !self.catching_up.load(Ordering::Relaxed)
    }

    /// The Raft leader and whether this member is in a group that has one.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, addr)| (i as u64 + 1, BasicNode::new(addr.clone())))
            .collect()
    }

    /// Bootstraps the group on first start: member 1 initializes it once a majority of the
    /// members (itself included) answer and every member that answers has no Raft state. A
    /// member that finds the group already initialized while its own data dir is empty waits
    /// to be caught up by the leader and refuses to vote until then.
    pub async fn bootstrap(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.pristine_at_start {
            return;
        }
        let majority = self.peers.len() / 2 + 1;
        let mut polled_before = false;
        loop {
            let mut pristine = 1; // this member
            let mut initialized = false;
            for (i, addr) in self.peers.iter().enumerate() {
                let id = i as u64 + 1;
                if id == self.id {
                    continue;
                }
                match self
                    .client
                    .post::<_, MemberState>(addr, PATH_STATE, &(), Duration::from_secs(1))
                    .await
                {
                    Ok(s) if s.pristine => pristine += 1,
                    Ok(_) => initialized = true,
                    Err(e) => {
                        tracing::debug!(peer = %addr, error = %e, "bootstrap: member not answering")
                    }
                }
            }
            if initialized {
                if polled_before {
                    // A first start of the whole group: member 1 initialized it meanwhile.
                    tracing::info!(
                        "member 1 initialized the group; this member (empty data dir) does not \
                         vote until the leader has caught it up"
                    );
                } else {
                    tracing::warn!(
                        "this member started with an empty data dir but the group already \
                         exists (a new or wiped member, or one started late at first \
                         deployment): rejoining; it does not vote until the leader has caught \
                         it up"
                    );
                }
                if self.log.is_pristine() {
                    self.catching_up.store(true, Ordering::Relaxed);
                }
                return;
            }
            if self.id == 1 && pristine >= majority {
                match self.raft.initialize(self.members()).await {
                    Ok(()) => tracing::info!(members = self.peers.len(), "group initialized"),
                    Err(e) => tracing::info!(error = %e, "group already initialized"),
                }
                return;
            }
            if self.id != 1 && !self.log.is_pristine() {
                return; // member 1 initialized the group and replicated to us
            }
            polled_before = true;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    }

    /// Answers a worker's heartbeat: on the leader, records liveness and returns the
    /// committed view; on a follower, forwards to the leader.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, HeartbeatError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let mut live = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
                live.insert(
                    hb.node.clone(),
                    Live {
                        last_seen: now,
                        up_since_ms: hb.up_since_ms,
                        controller_addr: hb.controller_addr.clone(),
                        stepping_down: hb.stepping_down,
                        fenced_out: hb.fenced_out,
                    },
                );
                drop(live);
                Ok(HeartbeatReply {
                    view: self.sm.view(),
                    leader: self.id,
                    leader_addr: self.peers[(self.id - 1) as usize].clone(),
                    controller_timeout_ms: self.config.controller_timeout.as_millis() as u64,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
                let Some(node) = fwd.leader_node else {
                    return Err(HeartbeatError::NoLeader);
                };
                if hb.forwarded {
                    return Err(HeartbeatError::NoLeader);
                }
                let mut hb = hb;
                hb.forwarded = true;
                Ok(self
                    .client
                    .post(&node.addr, PATH_HEARTBEAT, &hb, Duration::from_secs(2))
                    .await?)
            }
            Err(e) => Err(HeartbeatError::Raft(e.to_string())),
        }
    }

    /// Opens or closes a group notice through Raft (on a follower: forwarded once to the
    /// leader). `changed` tells the asker whether it is the one to tell the admin.
    pub async fn notice(&self, req: NoticeRequest) -> Result<NoticeReply, HeartbeatError> {
        let cmd = ViewCommand::Notice {
            key: req.key.clone(),
            open: req.open,
        };
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(NoticeReply {
                changed: resp.data.accepted,
            }),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(fwd))) => {
                let (Some(node), false) = (fwd.leader_node, req.forwarded) else {
                    return Err(HeartbeatError::NoLeader);
                };
                let req = NoticeRequest {
                    forwarded: true,
                    ..req
                };
                Ok(self
                    .client
                    .post(&node.addr, PATH_NOTICE, &req, Duration::from_secs(2))
                    .await?)
            }
            Err(e) => Err(HeartbeatError::Raft(e.to_string())),
        }
    }

    fn allowed(&self, node: &str, addr: &str) -> bool {
        self.config.controller.is_empty()
            || self
                .config
                .controller
                .iter()
                .any(|a| a == node || a == addr)
    }

    /// The leader's election loop; does nothing on followers.
    pub async fn run_elections(self: Arc<Self>, shutdown: CancellationToken) {
        let timeout = self.config.controller_timeout;
        let tick = (timeout / 20).clamp(Duration::from_millis(20), Duration::from_millis(200));
        let mut leading_since: Option<(u64, Instant)> = None;
        let mut alerted_epoch: Option<u64> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if !self.may_elect(&mut leading_since, timeout) {
                continue;
            }
            let view = self.sm.view();
            let Some((controller, reason, epoch)) = self.decide(&view, timeout) else {
                continue;
            };
            if epoch.saturating_sub(view.epoch) > 1 {
                self.tell_behind_fence(view.epoch, epoch, &reason);
            }
            if controller.is_none() {
                if view.controller.is_none() {
                    continue; // already says nobody
                }
                tracing::warn!(epoch, %reason, "no worker can take over as controller");
            }
            let cmd = ViewCommand::Name {
                epoch,
                controller: controller.clone(),
                reason: reason.clone(),
                after: Some(view.epoch),
            };
            match self.raft.client_write(cmd).await {
                Ok(resp) if resp.data.accepted => {
                    self.stats.views_committed.fetch_add(1, Ordering::Relaxed);
                    let epoch = resp.data.view.epoch;
                    if controller.is_none() && alerted_epoch != Some(epoch) {
                        alerted_epoch = Some(epoch);
                        let old = view
                            .controller
                            .as_ref()
                            .map_or("none".to_string(), |c| format!("{} ({})", c.node, c.addr));
                        self.tell_no_replacement(&old, epoch, &reason);
                    }
                }
                Ok(_) => tracing::debug!("view proposal lost a race; retrying"),
                Err(e) => tracing::warn!(error = %e, "could not commit a new view"),
            }
        }
    }

    /// Whether this member may name a controller now: it leads the group, and has led it
    /// (in this term) for a controller timeout, long enough to learn who is alive.
    fn may_elect(&self, leading_since: &mut Option<(u64, Instant)>, timeout: Duration) -> bool {
        let (state, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_term)
        };
        if state != ServerState::Leader {
            *leading_since = None;
            return false;
        }
        match *leading_since {
            Some((t, since)) if t == term => since.elapsed() >= timeout,
            _ => {
                tracing::info!(
                    term,
                    "leading the group; learning who is alive for one controller timeout"
                );
                self.liveness
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                *leading_since = Some((term, Instant::now()));
                false
            }
        }
    }

    /// The view was behind the epoch fence (a group that lost its data): the admin is told.
    fn tell_behind_fence(&self, view_epoch: u64, epoch: u64, reason: &str) {
        tracing::error!(view_epoch, epoch, %reason, "the view is behind the epoch fence; naming a controller past it");
        let _ = self.admin.send((
            "gobearmon: the viewserver group was behind the epoch fence".into(),
            format!(
                "The viewserver group's view was at epoch {view_epoch}, but the epoch fence in \
                 MySQL is further ({reason}). The group has probably lost its data (an \
                 empty data_dir). It names a controller for epoch {epoch}, past the \
                 fence, so monitoring goes on; check the members' data dirs."
            ),
        ));
    }

    /// Controller `old` failed and no worker can take over for `epoch`: the admin is told.
    fn tell_no_replacement(&self, old: &str, epoch: u64, reason: &str) {
        let _ = self.admin.send((
            "gobearmon: controller failed without replacement".into(),
            format!(
                "controller {old} failed without replacement ({reason}); \
                 epoch {epoch} has no controller, so nothing is monitored \
                 until a controller-capable worker sends heartbeats again"
            ),
        ));
    }

    /// No epoch past `at` exists: no controller can be named again until an operator resets
    /// the view and the fence.
    fn epoch_exhausted(&self, at: u64) {
        tracing::error!(at, "no epoch past this one exists; not naming a controller");
        let _ = self.admin.send((
            "gobearmon: the epoch cannot grow".into(),
            format!(
                "The viewserver group cannot name a controller: the next epoch would pass \
                 {at}, the largest there is. Epochs never wrap, so monitoring stays stopped \
                 until the view and the epoch fence in MySQL are reset by an operator."
            ),
        ));
    }

    /// Whether the view must change, to whom, why, and to which epoch.
    fn decide(
        &self,
        view: &View,
        timeout: Duration,
    ) -> Option<(Option<ControllerRef>, String, u64)> {
        let live = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let alive = |l: &Live| l.last_seen.elapsed() < timeout;
        // The named controller found the fence past the view's epoch: jump past it.
        let fenced = view.controller.as_ref().and_then(|c| {
            let l = live.get(&c.node).filter(|l| alive(l))?;
            l.fenced_out.filter(|f| f.epoch == view.epoch)
        });
        // Epochs are checked, never wrapped: a view or fence at the top of the range ends
        // elections (and says so) instead of starting over from zero.
        let Some(next) = view.epoch.checked_add(1) else {
            self.epoch_exhausted(view.epoch);
            return None;
        };
        let mut epoch = next;
        let reason = match (&view.controller, fenced) {
            (Some(c), Some(f)) => {
                let Some(past) = f.fence.checked_add(1) else {
                    self.epoch_exhausted(f.fence);
                    return None;
                };
                epoch = epoch.max(past);
                format!(
                    "controller {} found the epoch fence at {} for epoch {}",
                    c.node, f.fence, f.epoch
                )
            }
            (Some(c), None) => match live.get(&c.node) {
                Some(l) if alive(l) && !l.stepping_down && self.allowed(&c.node, &c.addr) => {
                    return None;
                }
                Some(l) if l.stepping_down => format!("controller {} stepped down", c.node),
                Some(l) if alive(l) => format!("controller {} is not allowed", c.node),
                _ => format!("controller {} silent for {timeout:?}", c.node),
            },
            (None, _) => "no controller".to_string(),
        };
        let candidates = |exclude_current: bool| {
            live.iter()
                .filter(|(node, l)| {
                    alive(l)
                        && !l.stepping_down
                        && !(exclude_current
                            && view.controller.as_ref().is_some_and(|c| &c.node == *node))
                })
                .filter_map(|(node, l)| {
                    let addr = l.controller_addr.as_ref()?;
                    self.allowed(node, addr)
                        .then(|| (l.up_since_ms, node.clone(), addr.clone()))
                })
                .min()
        };
        // A fenced-out controller is still fit to act past the fence; another goes first.
        let best = candidates(true).or_else(|| fenced.and_then(|_| candidates(false)));
        match best {
            Some((_, node, addr)) => Some((Some(ControllerRef { node, addr }), reason, epoch)),
            None => Some((None, reason, epoch)),
        }
    }

    /// Current Raft term, for metrics.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Whether this member is in a group with a known leader (`/ready`).
    pub fn ready(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader.is_some() && m.membership_config.membership().voter_ids().count() > 0
    }

    /// Unix ms now (exposed for logs of lease checks in tests).
    pub fn now_ms() -> u64 {
        now_ms()
    }
}
