//! The JSON answer behind `gobearmon status`, built by the term's owner from its state.

use std::collections::HashMap;

use serde::Serialize;
use tokio::time::Instant;

use super::ControllerHost;
use super::owner::WorkerSlot;
use super::watch::OpenAlert;
use crate::canary::FailingCanary;
use crate::model::{CheckId, CheckStatus, Epoch, NodeId};
use crate::store::catalog::Catalog;
use crate::vote::Engine;

#[derive(Serialize)]
struct WorkerStatus {
    id: String,
    location: String,
    last_seen_ms_ago: u64,
    stale: bool,
    checks_in_flight: usize,
    queued: usize,
    /// Its canaries fail: it is handed nothing and its results count as `fail`.
    impaired: bool,
    /// Canaries it runs (0: none, so it is never judged impaired).
    canaries: u32,
    failing_canaries: Vec<FailingCanary>,
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

/// The cluster as this controller sees it.
#[derive(Serialize)]
pub(super) struct StatusAnswer {
    epoch: u64,
    controller: String,
    viewserver_leader: Option<String>,
    live_workers: usize,
    workers: Vec<WorkerStatus>,
    checks: Vec<CheckStatusView>,
    /// Open meta-alerts (the monitor itself impaired, down or stuck).
    alerts: Vec<OpenAlert>,
}

pub(super) fn answer(
    epoch: Epoch,
    host: &ControllerHost,
    engine: &Engine,
    catalog: &Catalog,
    slots: &HashMap<NodeId, WorkerSlot>,
) -> StatusAnswer {
    let now = Instant::now();
    let snapshot = engine.snapshot();
    let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
    let workers = snapshot
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
                impaired: w.impaired,
                canaries: s
                    .and_then(|s| s.canaries.as_ref())
                    .map_or(0, |c| c.canaries),
                failing_canaries: s
                    .and_then(|s| s.canaries.as_ref())
                    .map(|c| c.failing.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let checks = snapshot
        .checks
        .iter()
        .map(|c| CheckStatusView {
            id: c.id,
            name: catalog
                .check(c.id)
                .map(|r| r.name.clone())
                .unwrap_or_default(),
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
    StatusAnswer {
        epoch: epoch.0,
        controller: host.node.0.clone(),
        viewserver_leader: host.membership.standing().leader_addr,
        live_workers: snapshot.live_workers,
        workers,
        checks,
        alerts: host.vantage.alerts(),
    }
}
