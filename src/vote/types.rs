//! The values that go in and out of the [`Engine`](super::Engine): definitions, outcomes,
//! assignments, effects, quorum changes and the read-only snapshot.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::{CheckId, CheckRow, CheckStatus, NodeId};

/// The shortest interval a check runs at. gobearmon reads `check_interval <= 0` as "run
/// continuously"; here that would be a busy loop between controller and workers, so such
/// rows run once a second.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How many workers' last results a check remembers for the status view. A cluster with
/// more workers shows the most recent ones; voting does not use this list.
pub const LAST_RESULTS_KEPT: usize = 8;

/// The engine's settings, from `[controller]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteConfig {
    /// `[controller] confirmations`: distinct workers that must agree on a differing result
    /// to complete a round, unless a check overrides it. 0 is read as 1.
    pub confirmations: u32,
    /// How long a worker may hold an assignment without answering before it is released and
    /// the run is handed to another worker. It must cover the worker's queueing plus the
    /// longest check (30 s for HTTP/TCP).
    pub assignment_timeout: Duration,
    /// `[controller] distinct_locations`: the workers of one round come from different
    /// locations wherever enough live workers exist, so that two workers sharing a rack or
    /// an uplink never confirm each other.
    pub distinct_locations: bool,
}

/// The declared defaults of `[controller]` ([`crate::config::ControllerKeys`]).
impl Default for VoteConfig {
    fn default() -> VoteConfig {
        let k = crate::config::ControllerKeys::default();
        VoteConfig {
            confirmations: k.confirmations,
            assignment_timeout: k.assignment_timeout,
            distinct_locations: k.distinct_locations,
        }
    }
}

/// What the engine needs of a check row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDef {
    pub id: CheckId,
    /// Time from one result to the next regular run (at least [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// Extra rounds before a flip: a flip takes `delay + 1` complete rounds.
    pub delay: u32,
    /// `checks.status` as stored.
    pub status: CheckStatus,
    /// The per-check override of [`VoteConfig::confirmations`] (`None`: the global value).
    pub confirmations: Option<u32>,
}

impl CheckDef {
    /// Reads a row, clamping what the engine cannot use: an interval below
    /// [`MIN_INTERVAL`], a negative delay (read as 0), and a delay beyond `u32`.
    pub fn from_row(row: &CheckRow) -> CheckDef {
        let secs = u64::try_from(row.interval_secs).unwrap_or(0);
        CheckDef {
            id: row.id,
            interval: Duration::from_secs(secs).max(MIN_INTERVAL),
            delay: u32::try_from(row.delay.max(0)).unwrap_or(u32::MAX),
            status: row.status,
            confirmations: row.confirmations,
        }
    }
}

impl From<&CheckRow> for CheckDef {
    fn from(row: &CheckRow) -> CheckDef {
        CheckDef::from_row(row)
    }
}

/// What a worker reports for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Online,
    Offline,
    /// The worker could not run the check (gobearmon's `fail`). It never votes.
    Fail,
}

impl Outcome {
    /// The status this outcome votes for, `None` for [`Outcome::Fail`].
    pub fn status(self) -> Option<CheckStatus> {
        match self {
            Outcome::Online => Some(CheckStatus::Online),
            Outcome::Offline => Some(CheckStatus::Offline),
            Outcome::Fail => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Online => "online",
            Outcome::Offline => "offline",
            Outcome::Fail => "fail",
        }
    }

    /// The inverse of [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "online" => Some(Outcome::Online),
            "offline" => Some(Outcome::Offline),
            "fail" => Some(Outcome::Fail),
            _ => None,
        }
    }
}

impl From<CheckStatus> for Outcome {
    fn from(status: CheckStatus) -> Outcome {
        match status {
            CheckStatus::Online => Outcome::Online,
            CheckStatus::Offline => Outcome::Offline,
        }
    }
}

/// Why a run was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The run due every interval.
    Regular,
    /// One of the parallel runs that confirm a differing result.
    Confirmation,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Regular => "regular",
            Kind::Confirmation => "confirmation",
        }
    }
}

/// Names one assignment. The worker sends it back with the result, so a late answer to an
/// assignment that was already released (timed out, withdrawn, worker marked down) can never
/// be taken for the answer to a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// One run handed to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub check: CheckId,
    pub node: NodeId,
    pub kind: Kind,
    pub ticket: Ticket,
}

/// A status change the controller must record and notify (DESIGN 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub check: CheckId,
    pub from: CheckStatus,
    pub to: CheckStatus,
    /// The distinct workers of the final round, in the order their votes arrived.
    pub confirmed_by: Vec<NodeId>,
}

/// What one result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// No such check (removed, disabled, or never loaded). Nothing changed.
    UnknownCheck,
    /// The worker does not hold this assignment (it timed out, was withdrawn, the worker was
    /// marked down, or the ticket is unknown). Nothing changed.
    Stale,
    /// `fail`: the assignment is released and the run handed elsewhere; no vote.
    Failed,
    /// The result agrees with the current status. `cleared` says whether it reset an open
    /// round or a count of completed rounds.
    Agreed { cleared: bool },
    /// A differing result joined the open round: `votes` distinct workers of the `needed`.
    /// `quorum` is false when fewer workers are live than `needed`: the round then waits.
    Voted {
        votes: u32,
        needed: u32,
        quorum: bool,
    },
    /// A differing result completed a round, `rounds` of the `needed` for a flip.
    RoundComplete { rounds: u32, needed: u32 },
    /// The last round completed: the status changed.
    Flip(Flip),
}

/// Checks whose quorum changed since the last
/// [`Engine::take_quorum_changes`](super::Engine::take_quorum_changes). Net changes only: a
/// check that lost its quorum and got it back in between is in neither list (so the checks
/// loaded before the workers connected after a take-over come out as no change at all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumChange {
    /// Live workers now.
    pub live_workers: usize,
    /// Checks that now have fewer live workers than their confirmations (sorted).
    pub lost: Vec<CheckId>,
    /// Checks that have enough live workers again (sorted).
    pub restored: Vec<CheckId>,
}

impl QuorumChange {
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.restored.is_empty()
    }
}

/// Counters since the engine was built, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub assignments: u64,
    pub results: u64,
    pub fails: u64,
    pub stale_results: u64,
    pub unknown_results: u64,
    pub timeouts: u64,
    /// Assignments taken back because their round closed or the status was reset.
    pub withdrawn: u64,
    pub rounds_completed: u64,
    pub flips: u64,
}

/// One assignment in flight, for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightView {
    pub node: NodeId,
    pub kind: Kind,
    pub ticket: Ticket,
    pub since: Instant,
}

/// A worker's latest result for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastResult {
    pub node: NodeId,
    pub outcome: Outcome,
    pub at: Instant,
}

/// A check as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckView {
    pub id: CheckId,
    pub status: CheckStatus,
    pub interval: Duration,
    pub delay: u32,
    /// Effective confirmations (override or global).
    pub confirmations: u32,
    /// Workers in the open round, in vote order (they reported `status.opposite()`).
    pub round: Vec<NodeId>,
    pub rounds_completed: u32,
    pub last_worker: Option<NodeId>,
    pub last_result_at: Option<Instant>,
    /// When the next regular run is due; `None` while a run is in flight.
    pub next_due: Option<Instant>,
    pub in_flight: Vec<InFlightView>,
    /// Fewer live workers than `confirmations`: the check keeps its status and cannot flip.
    pub insufficient_quorum: bool,
    /// Latest result per worker, newest first (at most [`LAST_RESULTS_KEPT`]).
    pub last_results: Vec<LastResult>,
}

/// A worker as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub node: NodeId,
    pub live: bool,
    /// Its canaries say it cannot judge ([`super::Engine::set_impaired`]).
    pub impaired: bool,
    /// Checks this worker holds an assignment for (sorted).
    pub in_flight: Vec<CheckId>,
    /// Assignments handed to it since the engine was built.
    pub handed: u64,
}

/// Everything, for the status JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub live_workers: usize,
    /// Sorted by id.
    pub checks: Vec<CheckView>,
    /// Sorted by node id.
    pub workers: Vec<WorkerView>,
    pub stats: Stats,
}
