//! The work protocol between workers and the controller (DESIGN 2.3), as JSON over signed
//! HTTP.
//!
//! - `POST /work/poll` ([`PollRequest`] -> [`PollReply`]): a worker asks for up to `capacity`
//!   runs; the controller answers at once when it has some, or holds the request up to
//!   `wait_ms` (long poll) and answers as soon as a run for this worker becomes due.
//! - `POST /work/results` ([`ResultsRequest`] -> [`ResultsReply`]): a batch of results, its
//!   body within [`super::MAX_BODY`] (workers split larger ones).
//!
//! Every message carries the sender's node id and the epoch it believes in. The controller
//! answers `409 Conflict` with a [`WrongEpoch`] body to a message from another epoch; a worker
//! drops assignments from an epoch that is no longer current.

use serde::{Deserialize, Serialize};

use crate::canary::CanaryReport;
use crate::model::CheckId;
use crate::probe::{CheckSpec, Details};

pub const PATH_POLL: &str = "/work/poll";
pub const PATH_RESULTS: &str = "/work/results";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollRequest {
    pub node: String,
    pub epoch: u64,
    /// Shown in `gobearmon status`.
    pub location: String,
    /// Runs the worker can start now: the controller hands out at most this many. 0 when
    /// every permit is taken; such a poll (sent with `wait_ms` 0) only says the worker is
    /// alive, and the controller answers it at once with no assignments.
    pub capacity: u32,
    /// How long the controller may hold the request when nothing is due.
    pub wait_ms: u64,
    /// The worker's canaries (`None` when it runs none, and from workers of older versions):
    /// an impaired worker is handed no work and its results count as `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canaries: Option<CanaryReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollReply {
    pub epoch: u64,
    pub assignments: Vec<WorkItem>,
    /// The canaries the database sets for every worker (table `canaries`), run beside the
    /// worker's own `[worker] canaries`. `None` from controllers of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canaries: Option<Vec<String>>,
}

/// One run to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkItem {
    pub check: CheckId,
    /// Echoed with the result (see [`crate::vote::Ticket`]).
    pub ticket: u64,
    pub epoch: u64,
    /// The check's definition: workers need no database.
    pub spec: CheckSpec,
}

/// What a worker reports for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Online,
    Offline,
    /// The worker could not run the check; never a vote.
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkResult {
    pub check: CheckId,
    pub ticket: u64,
    pub epoch: u64,
    pub status: RunStatus,
    pub message: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub details: Details,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsRequest {
    pub node: String,
    pub epoch: u64,
    pub results: Vec<WorkResult>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResultsReply {
    /// Results that counted (votes, agreements, fails).
    pub accepted: u32,
    /// Results for runs no longer assigned (late, withdrawn) or for unknown checks.
    pub ignored: u32,
}

/// The body of a `409 Conflict`: the controller acts for another epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrongEpoch {
    pub controller_epoch: u64,
}
