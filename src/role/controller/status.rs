//! The JSON answer behind `gobearmon status`, built by the term's owner from its state, and
//! its readable form.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ControllerHost;
use super::owner::WorkerSlot;
use super::watch::OpenAlert;
use crate::canary::FailingCanary;
use crate::model::{CheckId, CheckStatus, Epoch, NodeId};
use crate::store::catalog::Catalog;
use crate::vote::Engine;

/// A worker as the controller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    pub location: String,
    pub last_seen_ms_ago: u64,
    pub stale: bool,
    pub checks_in_flight: usize,
    pub queued: usize,
    /// Its canaries fail: it is handed nothing and its results count as `fail`.
    #[serde(default)]
    pub impaired: bool,
    /// Canaries it runs (0: none, so it is never judged impaired).
    #[serde(default)]
    pub canaries: u32,
    #[serde(default)]
    pub failing_canaries: Vec<FailingCanary>,
    /// Results it reported per second over the last minute.
    #[serde(default)]
    pub runs_per_second: f64,
}

/// One worker's latest result of a check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastResultStatus {
    pub worker: String,
    /// `online`, `offline` or `fail`.
    pub result: String,
    pub ms_ago: u64,
}

/// A check as the controller holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatusView {
    pub id: CheckId,
    pub name: String,
    pub status: CheckStatus,
    pub confirmations: u32,
    /// The workers asked to confirm in the open round.
    pub open_round: Vec<String>,
    pub rounds_completed: u32,
    pub insufficient_quorum: bool,
    pub in_flight: Vec<String>,
    pub last_results: Vec<LastResultStatus>,
}

/// The cluster as this controller sees it: the answer to `/status`, printed by
/// `gobearmon status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub epoch: u64,
    pub controller: String,
    pub viewserver_leader: Option<String>,
    pub live_workers: usize,
    pub workers: Vec<WorkerStatus>,
    pub checks: Vec<CheckStatusView>,
    /// Open meta-alerts (the monitor itself impaired, down or stuck).
    #[serde(default)]
    pub alerts: Vec<OpenAlert>,
    /// The notification outbox: rows per state and the latest decisions of the rules.
    #[serde(default)]
    pub outbox: Option<OutboxStatus>,
}

/// Rows of the notification outbox per state, and the latest rows a rule decided.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// (state, rows), for the states that have rows.
    pub states: Vec<(String, i64)>,
    /// Newest first.
    pub decisions: Vec<OutboxDecision>,
    /// Why the outbox could not be read.
    #[serde(default)]
    pub error: Option<String>,
}

/// One outbox row a rule decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxDecision {
    pub id: i64,
    pub check_id: i64,
    pub contact_id: i64,
    pub state: String,
    pub reason: String,
    pub folded_into: Option<i64>,
}

/// Decisions listed by `gobearmon status`.
const DECISIONS: usize = 20;

/// The outbox part of the status, from the database.
pub(super) async fn outbox(
    store: &crate::store::Store,
) -> Result<OutboxStatus, crate::store::StoreError> {
    let states = crate::store::timeline::outbox_states(store).await?;
    let decisions = crate::store::timeline::decisions(store, DECISIONS)
        .await?
        .into_iter()
        .map(|n| OutboxDecision {
            id: n.id,
            check_id: n.check.0,
            contact_id: n.contact_id,
            state: n.state,
            reason: n.reason.unwrap_or_default(),
            folded_into: n.folded_into,
        })
        .collect();
    Ok(OutboxStatus {
        states,
        decisions,
        error: None,
    })
}

impl OutboxStatus {
    /// The readable form: a line of counts, then the decisions.
    fn text(&self) -> String {
        let mut out = String::from("\nNOTIFICATIONS\n");
        if let Some(e) = &self.error {
            out.push_str(&format!("  the outbox could not be read: {e}\n"));
            return out;
        }
        let counts: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        out.push_str(&format!(
            "  {}\n",
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        ));
        if !self.decisions.is_empty() {
            let mut t = table(&["ROW", "CHECK", "CONTACT", "STATE", "WHY"]);
            for d in &self.decisions {
                let why = match d.folded_into {
                    Some(into) if !d.reason.contains(&format!("row {into}")) => {
                        format!("{} (row {into})", d.reason)
                    }
                    _ => d.reason.clone(),
                };
                t.add_row(vec![
                    d.id.to_string(),
                    d.check_id.to_string(),
                    d.contact_id.to_string(),
                    d.state.clone(),
                    why,
                ]);
            }
            out.push_str(&format!("{t}\n"));
        }
        out
    }
}

/// The path of one check's live state on the controller API (signed, cluster secret only).
pub const PATH_CHECK_STATUS: &str = "/status/check/{id}";

/// The path of [`ClusterSummary`] on the controller API (signed, cluster secret only).
pub const PATH_SUMMARY: &str = "/status/summary";

/// The cluster in brief, for the dashboard: the workers as the controller sees them and the
/// checks it cannot flip, without every check's state (the answer stays small at 100,000
/// checks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub epoch: u64,
    pub controller: String,
    pub viewserver_leader: Option<String>,
    pub live_workers: usize,
    pub checks: usize,
    pub workers: Vec<WorkerStatus>,
    /// Checks with fewer live workers than their confirmations.
    pub insufficient_quorum: Vec<CheckId>,
}

/// One check as the engine holds it now.
pub(super) fn check_view(
    c: &crate::vote::CheckView,
    catalog: &Catalog,
    now: Instant,
) -> CheckStatusView {
    let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
    CheckStatusView {
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
                result: r.outcome.as_str().to_string(),
                ms_ago: ago(r.at),
            })
            .collect(),
    }
}

/// Every worker the engine knows, with what its slot adds.
fn worker_statuses(
    engine_workers: &[crate::vote::WorkerView],
    slots: &HashMap<NodeId, WorkerSlot>,
    now: Instant,
) -> Vec<WorkerStatus> {
    let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
    engine_workers
        .iter()
        .map(|w| {
            let s = slots.get(&w.node);
            let canaries = s.and_then(|s| s.canaries.as_ref());
            WorkerStatus {
                id: w.node.0.clone(),
                location: s.map(|s| s.location.clone()).unwrap_or_default(),
                last_seen_ms_ago: s.map_or(u64::MAX, |s| ago(s.last_seen)),
                stale: !w.live,
                checks_in_flight: w.in_flight.len(),
                queued: s.map_or(0, |s| s.queue.len()),
                impaired: w.impaired,
                canaries: canaries.map_or(0, |c| c.canaries),
                failing_canaries: canaries.map(|c| c.failing.clone()).unwrap_or_default(),
                runs_per_second: s.map_or(0.0, |s| s.rate.per_second(now)),
            }
        })
        .collect()
}

/// The brief answer behind [`PATH_SUMMARY`].
pub(super) fn summary(
    epoch: Epoch,
    host: &ControllerHost,
    engine: &Engine,
    slots: &HashMap<NodeId, WorkerSlot>,
) -> ClusterSummary {
    let workers = engine.workers();
    ClusterSummary {
        epoch: epoch.0,
        controller: host.node.0.clone(),
        viewserver_leader: host.membership.standing().leader_addr,
        live_workers: workers.iter().filter(|w| w.live).count(),
        checks: engine.check_count(),
        workers: worker_statuses(&workers, slots, Instant::now()),
        insufficient_quorum: engine.insufficient_quorum(),
    }
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
    let workers = worker_statuses(&snapshot.workers, slots, now);
    let checks = snapshot
        .checks
        .iter()
        .map(|c| check_view(c, catalog, now))
        .collect();
    StatusAnswer {
        epoch: epoch.0,
        controller: host.node.0.clone(),
        viewserver_leader: host.membership.standing().leader_addr,
        live_workers: snapshot.live_workers,
        workers,
        checks,
        alerts: host.vantage.alerts(),
        outbox: None,
    }
}

impl StatusAnswer {
    /// Readable tables: the controller, the workers, the checks (offline and short of
    /// workers first).
    pub fn text(&self) -> String {
        let live = self.workers.iter().filter(|w| !w.stale).count();
        let impaired = self
            .workers
            .iter()
            .filter(|w| !w.stale && w.impaired)
            .count();
        let mut out = format!(
            "controller {} (epoch {}), viewserver leader {}, {} of {} workers live{}\n\n",
            self.controller,
            self.epoch,
            self.viewserver_leader.as_deref().unwrap_or("unknown"),
            live,
            self.workers.len(),
            if impaired > 0 {
                format!(", {impaired} impaired")
            } else {
                String::new()
            }
        );
        let mut workers = table(&[
            "WORKER",
            "LOCATION",
            "LAST SEEN",
            "STATE",
            "IN FLIGHT",
            "QUEUED",
        ]);
        for w in &self.workers {
            workers.add_row(vec![
                w.id.clone(),
                w.location.clone(),
                ago(w.last_seen_ms_ago),
                match (w.stale, w.impaired) {
                    (true, _) => "STALE",
                    (false, true) => "IMPAIRED",
                    (false, false) => "live",
                }
                .to_string(),
                w.checks_in_flight.to_string(),
                w.queued.to_string(),
            ]);
        }
        out.push_str(&workers.trim_fmt());
        out.push('\n');
        for w in self
            .workers
            .iter()
            .filter(|w| !w.failing_canaries.is_empty())
        {
            for c in &w.failing_canaries {
                out.push_str(&format!("  {} canary {}: {}\n", w.id, c.url, c.message));
            }
        }
        out.push('\n');
        let mut checks: Vec<&CheckStatusView> = self.checks.iter().collect();
        checks.sort_by_key(|c| {
            (
                c.status == CheckStatus::Online,
                !c.insufficient_quorum,
                c.id,
            )
        });
        let mut t = table(&[
            "CHECK",
            "NAME",
            "STATUS",
            "CONFIRM",
            "OPEN ROUND",
            "LAST RESULTS",
        ]);
        for c in checks {
            let status = match (c.status, c.insufficient_quorum) {
                (CheckStatus::Online, false) => "online".to_string(),
                (CheckStatus::Offline, false) => "OFFLINE".to_string(),
                (CheckStatus::Online, true) => "online, NO QUORUM".to_string(),
                (CheckStatus::Offline, true) => "OFFLINE, NO QUORUM".to_string(),
            };
            let results: Vec<String> = c
                .last_results
                .iter()
                .map(|r| format!("{} {} {}", r.worker, r.result, ago(r.ms_ago)))
                .collect();
            t.add_row(vec![
                c.id.0.to_string(),
                c.name.clone(),
                status,
                c.confirmations.to_string(),
                c.open_round.join(" "),
                results.join(", "),
            ]);
        }
        out.push_str(&t.trim_fmt());
        out.push('\n');
        if !self.alerts.is_empty() {
            out.push_str("\nOPEN ALERTS\n");
            for a in &self.alerts {
                let subject = if a.subject.is_empty() {
                    String::new()
                } else {
                    format!(" {}", a.subject)
                };
                out.push_str(&format!(
                    "  {}{subject} since {} (opened by {}): {}\n",
                    a.kind, a.since, a.opened_by, a.message
                ));
            }
        }
        if let Some(o) = &self.outbox {
            out.push_str(&o.text());
        }
        out
    }
}

/// A plain table: a header row, columns two spaces apart, no borders.
fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// `1.2s ago`, `3m ago`, `never`.
fn ago(ms: u64) -> String {
    match ms {
        u64::MAX => "never".into(),
        0..1_000 => format!("{ms}ms ago"),
        1_000..60_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m ago", ms / 60_000),
        _ => format!("{}h ago", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_put_offline_and_short_checks_first() {
        let answer = StatusAnswer {
            epoch: 4,
            controller: "w2".into(),
            viewserver_leader: Some("127.0.0.1:7001".into()),
            live_workers: 1,
            workers: vec![
                WorkerStatus {
                    id: "w1".into(),
                    location: "fra".into(),
                    last_seen_ms_ago: 1_500,
                    stale: false,
                    checks_in_flight: 2,
                    queued: 0,
                    impaired: false,
                    canaries: 0,
                    failing_canaries: vec![],
                    runs_per_second: 0.0,
                },
                WorkerStatus {
                    id: "w3".into(),
                    location: "ams".into(),
                    last_seen_ms_ago: 125_000,
                    stale: true,
                    checks_in_flight: 0,
                    queued: 0,
                    impaired: false,
                    canaries: 0,
                    failing_canaries: vec![],
                    runs_per_second: 0.0,
                },
                WorkerStatus {
                    id: "w4".into(),
                    location: "nyc".into(),
                    last_seen_ms_ago: 300,
                    stale: false,
                    checks_in_flight: 0,
                    queued: 0,
                    impaired: true,
                    canaries: 2,
                    failing_canaries: vec![FailingCanary {
                        url: "tcp://192.0.2.1:443".into(),
                        message: "TCP connection error: timed out".into(),
                    }],
                    runs_per_second: 0.0,
                },
            ],
            alerts: vec![OpenAlert {
                kind: "impaired_worker".into(),
                subject: "w4".into(),
                since: "2026-12-02T04:00:00Z".into(),
                opened_by: "w2".into(),
                message: "w4's canaries fail".into(),
            }],
            outbox: Some(OutboxStatus {
                states: vec![
                    ("sent".into(), 40),
                    ("folded".into(), 39),
                    ("held".into(), 1),
                ],
                decisions: vec![
                    OutboxDecision {
                        id: 80,
                        check_id: 2,
                        contact_id: 5,
                        state: "held".into(),
                        reason: "maintenance: held until the window ends".into(),
                        folded_into: None,
                    },
                    OutboxDecision {
                        id: 79,
                        check_id: 3,
                        contact_id: 1,
                        state: "folded".into(),
                        reason: "digest".into(),
                        folded_into: Some(41),
                    },
                ],
                error: None,
            }),
            checks: [
                (1, "api", CheckStatus::Online, false),
                (2, "shop", CheckStatus::Offline, false),
                (3, "db", CheckStatus::Online, true),
            ]
            .into_iter()
            .map(|(id, name, status, short)| CheckStatusView {
                id: CheckId(id),
                name: name.into(),
                status,
                confirmations: 2,
                open_round: vec!["w1".into()],
                rounds_completed: 0,
                insufficient_quorum: short,
                in_flight: vec![],
                last_results: vec![LastResultStatus {
                    worker: "w1".into(),
                    result: "online".into(),
                    ms_ago: 800,
                }],
            })
            .collect(),
        };
        let text = answer.text();
        assert!(
            text.starts_with(
                "controller w2 (epoch 4), viewserver leader 127.0.0.1:7001, 2 of 3 workers live, 1 impaired\n"
            ),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let row = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle}\n{text}"))
        };
        assert!(lines[row("w1 ")].contains("1.5s ago"), "{text}");
        assert!(lines[row("STALE")].contains("2m ago"), "{text}");
        assert!(row("shop") < row("db") && row("db") < row("api"), "{text}");
        assert!(lines[row("db")].contains("online, NO QUORUM"), "{text}");
        assert!(lines[row("shop")].contains("OFFLINE"), "{text}");
        assert!(lines[row("api")].contains("w1 online 800ms ago"), "{text}");
        assert!(lines[row("IMPAIRED")].contains("w4"), "{text}");
        assert!(
            text.contains("  w4 canary tcp://192.0.2.1:443: TCP connection error: timed out\n"),
            "{text}"
        );
        assert!(
            text.contains("OPEN ALERTS\n  impaired_worker w4 since 2026-12-02T04:00:00Z (opened by w2): w4's canaries fail\n"),
            "{text}"
        );
        assert!(
            text.contains("NOTIFICATIONS\n  40 sent, 39 folded, 1 held\n"),
            "{text}"
        );
        assert!(
            lines[row("80 ")].contains("held")
                && lines[row("80 ")]
                    .trim_end()
                    .ends_with("maintenance: held until the window ends"),
            "{text}"
        );
        assert!(lines[row("79 ")].trim_end().ends_with("(row 41)"), "{text}");
        // Columns line up: every check row has its status where the header has STATUS.
        let at = lines[row("STATUS")].find("STATUS").unwrap();
        assert_eq!(lines[row("shop")].find("OFFLINE"), Some(at), "{text}");
        // And it reads back from its JSON.
        let back: StatusAnswer =
            serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert_eq!(back.text(), text);
    }
}
