//! Watching the watcher: the meta-alerts of the acting controller (stale and impaired
//! workers, a stuck outbox, viewserver members down, a fence that could not be raised) and the
//! no-controller alert of every controller-capable worker.
//!
//! - [`alive_loop`], a task of each term on its own: every [`period`] it stamps the controller
//!   alive in MySQL, and nothing else, so no slow send or read can make standbys think the
//!   controller is gone.
//! - [`run`], a task of each term: every [`period`] it hands the database's canaries to the
//!   poll replies, judges what it sees ([`judge`], pure) and opens or resolves alerts to match
//!   ([`plan`], pure). Every reload period it reads the rows that cannot be used as written
//!   (`canaries`, and `sms`/`voice` contacts with `max_per_hour` of 0 or less): each is a
//!   `bad_row` alert until fixed. Opening and resolving go through [`crate::store::meta`],
//!   which queues the notice in the same transaction, so an alert another controller
//!   already opened is not sent again; the queue is delivered by
//!   [`crate::notify::meta_delivery`], never by this task.
//! - [`no_controller_loop`], on every controller-capable worker while it is not acting: when
//!   no controller has stamped itself alive for `no_controller_alert`, it opens that alert
//!   (once between all of them); the next acting controller resolves it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::owner::Msg;
use super::term::TermHandle;
use super::{ControllerHost, ControllerSlot};
use crate::canary::CanaryReport;
use crate::config::MetaAlertConfig;
use crate::model::NodeId;
use crate::notify::meta::{AlertEvent, AlertKind};
use crate::notify::unix_ms;
use crate::store::meta::{self as store_meta, AlertRow, Opening};

/// A worker as the owner sees it, for the meta-alerts.
#[derive(Debug, Clone)]
pub struct WorkerHealth {
    pub node: NodeId,
    pub since_seen: Duration,
    pub live: bool,
    pub canaries: Option<CanaryReport>,
}

/// An open meta-alert as `gobearmon status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OpenAlert {
    pub kind: String,
    pub subject: String,
    /// When the condition began (RFC 3339).
    pub since: String,
    pub opened_by: String,
    pub message: String,
}

/// What the meta-alert tasks share with the poll and status handlers.
#[derive(Debug, Default)]
pub struct VantageState {
    alerts: Mutex<Vec<OpenAlert>>,
    canaries: Mutex<Option<Vec<String>>>,
}

impl VantageState {
    /// The open alerts as last read.
    pub fn alerts(&self) -> Vec<OpenAlert> {
        lock(&self.alerts).clone()
    }

    /// The database's canaries, once read (`None` before: workers keep what they have).
    pub fn canaries(&self) -> Option<Vec<String>> {
        lock(&self.canaries).clone()
    }

    fn set_alerts(&self, rows: &[AlertRow]) {
        *lock(&self.alerts) = rows
            .iter()
            .map(|r| OpenAlert {
                kind: r.kind.clone(),
                subject: r.subject.clone(),
                since: crate::history::rfc3339_ms(r.started_ms),
                opened_by: r.opened_by.clone(),
                message: r.message.clone(),
            })
            .collect();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often the watchers look: a quarter of `no_controller_alert`, within 500 ms and 5 s.
pub fn period(cfg: &MetaAlertConfig) -> Duration {
    (cfg.no_controller / 4).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// What the acting controller sees in one round.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub now_ms: i64,
    pub workers: Vec<WorkerHealth>,
    /// Age of the oldest pending notification, when one is pending.
    pub oldest_pending: Option<Duration>,
    /// Per viewserver member: since when it has not answered (Unix ms), `None` if it does.
    pub members: Vec<(String, Option<i64>)>,
    /// The rows that cannot be used as written, when they were read this round: (subject,
    /// message). `None`: not read, so open `bad_row` alerts are left as they are.
    pub bad_rows: Option<Vec<(String, String)>>,
}

/// An alert's kind and subject.
pub type AlertKey = (AlertKind, String);
/// The alerts that should be open.
pub type Wants = BTreeMap<AlertKey, Wanted>;
/// A set of alerts.
pub type Keys = BTreeSet<AlertKey>;
/// The wanted alerts that are not open yet.
pub type ToOpen<'a> = Vec<(&'a AlertKey, &'a Wanted)>;

/// An alert that should be open: its start and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub started_ms: i64,
    pub message: String,
    pub detail: Option<String>,
}

/// The alerts the acting controller judges (every kind but no-controller and the fence),
/// keyed by kind and subject, with the subjects it can judge at all: an alert on a subject
/// it knows nothing of (a worker that never polled this term) is left as it is.
pub fn judge(seen: &Seen, cfg: &MetaAlertConfig) -> (Wants, Keys) {
    let mut wanted = BTreeMap::new();
    let mut judged = BTreeSet::new();
    let start_of = |age: Duration| (seen.now_ms - age.as_millis() as i64) / 1000 * 1000;
    for w in &seen.workers {
        let subject = w.node.0.clone();
        judged.insert((AlertKind::StaleWorker, subject.clone()));
        if w.since_seen > cfg.stale_worker {
            wanted.insert(
                (AlertKind::StaleWorker, subject.clone()),
                Wanted {
                    started_ms: start_of(w.since_seen),
                    message: format!(
                        "Worker {subject} has not polled the controller for {} s: it is down or \
                         cut off, and the checks run from its place are run by the others.",
                        w.since_seen.as_secs()
                    ),
                    detail: None,
                },
            );
        }
        // A stale worker's canaries say nothing new: keep its impaired alert as it is.
        if !w.live {
            continue;
        }
        judged.insert((AlertKind::WorkerImpaired, subject.clone()));
        if let Some(report) = w.canaries.as_ref().filter(|r| r.impaired) {
            wanted.insert(
                (AlertKind::WorkerImpaired, subject.clone()),
                Wanted {
                    // One alert per impairment: its start is not known to the second, so the
                    // open row (not the start) keeps it from repeating.
                    started_ms: seen.now_ms,
                    message: impaired_message(&subject, report),
                    detail: serde_json::to_string(&report.failing).ok(),
                },
            );
        }
    }
    judged.insert((AlertKind::OutboxStuck, String::new()));
    if let Some(age) = seen.oldest_pending.filter(|a| *a > cfg.outbox_stuck) {
        wanted.insert(
            (AlertKind::OutboxStuck, String::new()),
            Wanted {
                started_ms: start_of(age),
                message: format!(
                    "The oldest pending notification has waited {} s (outbox_stuck_alert is {} \
                     s): deliveries are failing or not being attempted.",
                    age.as_secs(),
                    cfg.outbox_stuck.as_secs()
                ),
                detail: None,
            },
        );
    }
    for (addr, down_since) in &seen.members {
        judged.insert((AlertKind::ViewserverDown, addr.clone()));
        if let Some(since) = down_since
            && seen.now_ms - since > cfg.viewserver_down.as_millis() as i64
        {
            wanted.insert(
                (AlertKind::ViewserverDown, addr.clone()),
                Wanted {
                    started_ms: *since,
                    message: format!(
                        "Viewserver member {addr} has not answered for {} s. The group keeps \
                         electing controllers while a majority answers.",
                        (seen.now_ms - since) / 1000
                    ),
                    detail: None,
                },
            );
        }
    }
    judge_bad_rows(seen, &mut wanted, &mut judged);
    (wanted, judged)
}

/// Each bad row read this round is wanted open.
fn judge_bad_rows(seen: &Seen, wanted: &mut Wants, judged: &mut Keys) {
    for (subject, message) in seen.bad_rows.iter().flatten() {
        judged.insert((AlertKind::BadRow, subject.clone()));
        wanted.insert(
            (AlertKind::BadRow, subject.clone()),
            Wanted {
                // Like an impairment: the open row keeps it from repeating.
                started_ms: seen.now_ms,
                message: message.clone(),
                detail: None,
            },
        );
    }
}

/// The open alerts [`judge`] could not know of but judged all the same: with the bad rows
/// read this round, every open `bad_row` alert not among them was fixed.
pub fn judged_open(seen: &Seen, open: &Keys, judged: &mut Keys) {
    if seen.bad_rows.is_some() {
        judged.extend(open.iter().filter(|k| k.0 == AlertKind::BadRow).cloned());
    }
}

/// The bad rows of `canaries` (id, url) and of `contacts` (id, type, max_per_hour), as
/// (subject, message); `default_cap` is `[twilio] max_per_hour`.
pub fn bad_rows(
    canaries: &[(i64, String)],
    caps: &[(i64, String, i64)],
    default_cap: u32,
) -> Vec<(String, String)> {
    let (_, bad) = crate::canary::parse_each(canaries.iter().map(|(_, u)| u.as_str()));
    let canaries = bad.into_iter().map(|(i, e)| {
        (
            format!("canaries {}", canaries[i].0),
            crate::notify::text::bad_canary(&e.to_string()),
        )
    });
    let contacts = caps.iter().map(|(id, kind, max)| {
        (
            format!("contacts {id}"),
            crate::notify::text::bad_cap(*id, kind, *max, default_cap),
        )
    });
    canaries.chain(contacts).collect()
}

fn impaired_message(node: &str, r: &CanaryReport) -> String {
    let list: Vec<String> = r
        .failing
        .iter()
        .map(|f| format!("  {} ({})", f.url, f.message))
        .collect();
    format!(
        "Worker {node} is impaired: more than half of its {} canaries failed over the last \
         rounds, so its own network is in doubt. Its results count as fail and it is handed no \
         checks until they pass again. Failing now:\n{}",
        r.canaries,
        list.join("\n")
    )
}

/// What to change: the wanted alerts that are not open, and the open ones among the judged
/// subjects that are no longer wanted.
pub fn plan<'a>(wanted: &'a Wants, judged: &Keys, open: &Keys) -> (ToOpen<'a>, Vec<AlertKey>) {
    let to_open = wanted.iter().filter(|(k, _)| !open.contains(*k)).collect();
    let to_resolve = open
        .iter()
        .filter(|k| judged.contains(*k) && !wanted.contains_key(*k))
        .cloned()
        .collect();
    (to_open, to_resolve)
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Opens an alert through the store, which queues its notice when this node opened it.
/// False when the database could not be asked.
pub(super) async fn open_alert(
    host: &ControllerHost,
    kind: AlertKind,
    subject: &str,
    w: &Wanted,
) -> bool {
    let opening = Opening {
        kind: kind.as_str(),
        subject,
        started_ms: w.started_ms,
        now_ms: now_ms(),
        node: &host.node.0,
        message: &w.message,
        detail: w.detail.as_deref(),
        channels: host.meta.channels(),
    };
    match store_meta::open(&host.store, &opening).await {
        Ok(true) => {
            queued(host, kind, subject, AlertEvent::Opened);
            true
        }
        Ok(false) => true,
        Err(e) => {
            tracing::warn!(kind = kind.as_str(), error = %e, "cannot open a meta-alert");
            false
        }
    }
}

/// Logs an alert this node queued and wakes its delivery.
fn queued(host: &ControllerHost, kind: AlertKind, subject: &str, event: AlertEvent) {
    tracing::warn!(kind = kind.as_str(), %subject, event = event.as_str(), "meta-alert");
    if host.meta.channels().is_empty() {
        tracing::error!(
            kind = kind.as_str(),
            %subject,
            "a meta-alert has nowhere to go: set [smtp] admin or [controller] admin_webhook"
        );
    }
    host.meta_wake.notify_one();
}

/// Resolves an alert through the store, which queues the recovery when this node resolved it.
pub(super) async fn resolve_alert(host: &ControllerHost, kind: AlertKind, subject: &str) {
    let channels = host.meta.channels();
    let resolved = store_meta::resolve(
        &host.store,
        kind.as_str(),
        subject,
        now_ms(),
        &host.node.0,
        channels,
    );
    match resolved.await {
        Ok(Some(_)) => queued(host, kind, subject, AlertEvent::Resolved),
        Ok(None) => {}
        Err(e) => tracing::warn!(kind = kind.as_str(), error = %e, "cannot resolve a meta-alert"),
    }
}

/// Opens the no-controller alert when it is due (its notice queued when this node opened it).
async fn check_no_controller(host: &ControllerHost) {
    let now = now_ms();
    let cutoff = now - host.config.meta.no_controller.as_millis() as i64;
    let channels = host.meta.channels();
    match store_meta::open_no_controller(&host.store, cutoff, now, &host.node.0, channels).await {
        Ok(Some(_)) => queued(host, AlertKind::NoController, "", AlertEvent::Opened),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "cannot check for a controller"),
    }
}

/// The term's alive stamp, a task of its own; see the module documentation.
pub(super) async fn alive_loop(term: TermHandle) {
    let host = term.host().clone();
    let period = period(&host.config.meta);
    // The first round looks for the gap before this term, before stamping over it.
    check_no_controller(&host).await;
    loop {
        if !term.may_act() {
            return term.token.cancelled().await;
        }
        if let Err(e) =
            store_meta::stamp_alive(&host.store, term.epoch, &host.node.0, now_ms()).await
        {
            tracing::debug!(error = %e, "cannot stamp the controller alive");
        }
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// The bad rows of `canaries` and `contacts`, and the canaries' URLs for the poll replies;
/// `None` when the database did not answer.
async fn read_rows(host: &ControllerHost) -> Option<(Vec<String>, Vec<(String, String)>)> {
    let canaries = store_meta::canaries(&host.store).await;
    let caps = store_meta::bad_caps(&host.store).await;
    match (canaries, caps) {
        (Ok(canaries), Ok(caps)) => {
            let bad = bad_rows(&canaries, &caps, host.config.delivery.paid_max_per_hour);
            for (subject, message) in &bad {
                tracing::warn!(%subject, %message, "a row cannot be used as written");
            }
            let urls = canaries.into_iter().map(|(_, u)| u).collect();
            Some((urls, bad))
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "cannot read canaries and contacts' caps");
            None
        }
    }
}

/// The term's meta-alert task; see the module documentation.
pub(super) async fn run(term: TermHandle) {
    let host = term.host().clone();
    let cfg = host.config.meta.clone();
    let period = period(&cfg);
    let mut down_since: HashMap<String, Option<i64>> = host
        .membership
        .view_addrs
        .iter()
        .map(|a| (a.clone(), None))
        .collect();
    let mut next_rows = Instant::now();
    loop {
        if !term.may_act() {
            return term.token.cancelled().await;
        }
        resolve_alert(&host, AlertKind::NoController, "").await;
        let mut bad = None;
        if Instant::now() >= next_rows {
            next_rows = Instant::now() + host.config.reload_period;
            if let Some((urls, rows)) = read_rows(&host).await {
                *lock(&host.vantage.canaries) = Some(urls);
                host.stats
                    .bad_rows
                    .store(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                bad = Some(rows);
            }
        }
        let Some(workers) = term.ask(|reply| Msg::Workers { reply }).await else {
            return;
        };
        let oldest_pending = crate::store::outbox::oldest_pending(&host.store)
            .await
            .ok()
            .flatten();
        let members = probe_members(&host, &mut down_since).await;
        let seen = Seen {
            now_ms: now_ms(),
            workers,
            oldest_pending,
            members,
            bad_rows: bad,
        };
        if let Ok(rows) = store_meta::open_alerts(&host.store).await {
            reconcile(&host, &seen, &rows).await;
            if let Ok(rows) = store_meta::open_alerts(&host.store).await {
                host.vantage.set_alerts(&rows);
            }
        }
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

async fn reconcile(host: &ControllerHost, seen: &Seen, rows: &[AlertRow]) {
    let open: BTreeSet<(AlertKind, String)> = rows
        .iter()
        .filter_map(|r| Some((AlertKind::parse(&r.kind)?, r.subject.clone())))
        .collect();
    // This term raised the fence: no fence alert holds any more.
    for (kind, subject) in &open {
        if *kind == AlertKind::FenceNotRaised {
            resolve_alert(host, *kind, subject).await;
        }
    }
    let (wanted, mut judged) = judge(seen, &host.config.meta);
    judged_open(seen, &open, &mut judged);
    let (to_open, to_resolve) = plan(&wanted, &judged, &open);
    for ((kind, subject), w) in to_open {
        if !open_alert(host, *kind, subject, w).await {
            return;
        }
    }
    for (kind, subject) in to_resolve {
        resolve_alert(host, kind, &subject).await;
    }
}

/// Asks every viewserver member for its view (signed, 2 s); returns since when each has not
/// answered.
async fn probe_members(
    host: &ControllerHost,
    down_since: &mut HashMap<String, Option<i64>>,
) -> Vec<(String, Option<i64>)> {
    let client = host.membership.client();
    let asks = down_since.keys().cloned().map(|addr| async move {
        let answered = client
            .get::<serde_json::Value>(
                &addr,
                crate::role::viewserver::PATH_VIEW,
                Duration::from_secs(2),
            )
            .await
            .is_ok();
        (addr, answered)
    });
    let answers = futures_util::future::join_all(asks).await;
    let now = now_ms();
    let mut out = Vec::new();
    for (addr, answered) in answers {
        let entry = down_since.entry(addr.clone()).or_default();
        if answered {
            *entry = None;
        } else if entry.is_none() {
            *entry = Some(now);
        }
        out.push((addr, *entry));
    }
    out.sort();
    out
}

/// On a controller-capable worker: while it does not act, looks every [`period`] for a
/// missing controller (see the module documentation), until `shutdown`.
pub async fn no_controller_loop(
    host: Arc<ControllerHost>,
    slot: ControllerSlot,
    shutdown: CancellationToken,
) {
    let period = period(&host.config.meta);
    loop {
        // At once on start too: a worker that comes back after an outage says so first.
        if slot.epoch().is_none() {
            check_no_controller(&host).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// The fence cannot be raised: opened by the term that keeps failing (subject: its node).
pub(super) async fn fence_not_raised(host: &ControllerHost, started_ms: i64, message: String) {
    let subject = host.node.0.clone();
    let w = Wanted {
        started_ms,
        message,
        detail: None,
    };
    if !open_alert(host, AlertKind::FenceNotRaised, &subject, &w).await {
        // The database that holds the fence does not answer: nothing can deduplicate, so
        // the rate-limited admin notice says it instead.
        host.tell_admin(crate::notify::admin::AdminKind::FenceNotRaised, w.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::FailingCanary;

    fn cfg() -> MetaAlertConfig {
        MetaAlertConfig {
            admin_webhook: None,
            admin_webhook_secret: None,
            no_controller: Duration::from_secs(60),
            stale_worker: Duration::from_secs(300),
            outbox_stuck: Duration::from_secs(600),
            viewserver_down: Duration::from_secs(60),
            db_down: Duration::from_secs(30),
        }
    }

    fn worker(node: &str, since: u64, impaired: Option<bool>) -> WorkerHealth {
        WorkerHealth {
            node: NodeId(node.into()),
            since_seen: Duration::from_secs(since),
            live: since < 6,
            canaries: impaired.map(|i| CanaryReport {
                impaired: i,
                canaries: 2,
                rounds: 3,
                failing: if i {
                    vec![FailingCanary {
                        url: "tcp://127.0.0.1:9".into(),
                        message: "refused".into(),
                    }]
                } else {
                    Vec::new()
                },
            }),
        }
    }

    fn key(kind: AlertKind, s: &str) -> (AlertKind, String) {
        (kind, s.to_string())
    }

    #[test]
    fn judges_each_condition_against_its_threshold() {
        let seen = Seen {
            now_ms: 1_000_000_000,
            workers: vec![
                worker("w1", 1, Some(true)),
                worker("w2", 1, Some(false)),
                worker("w3", 301, Some(true)),
                worker("w4", 299, None),
            ],
            oldest_pending: Some(Duration::from_secs(601)),
            members: vec![
                ("vs1".into(), None),
                ("vs2".into(), Some(1_000_000_000 - 61_000)),
                ("vs3".into(), Some(1_000_000_000 - 59_000)),
            ],
            bad_rows: None,
        };
        let (wanted, judged) = judge(&seen, &cfg());
        let keys: Vec<_> = wanted.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                key(AlertKind::StaleWorker, "w3"),
                key(AlertKind::WorkerImpaired, "w1"),
                key(AlertKind::OutboxStuck, ""),
                key(AlertKind::ViewserverDown, "vs2"),
            ]
        );
        let w1 = &wanted[&key(AlertKind::WorkerImpaired, "w1")];
        assert!(w1.message.contains("tcp://127.0.0.1:9"), "{}", w1.message);
        assert_eq!(
            crate::canary::failing_from_json(w1.detail.as_deref()).len(),
            1
        );
        // A stale worker's canaries are not judged: its impaired alert stays as it is.
        assert!(!judged.contains(&key(AlertKind::WorkerImpaired, "w3")));
        assert!(judged.contains(&key(AlertKind::WorkerImpaired, "w2")));
        let nothing = Seen {
            now_ms: 1,
            ..Seen::default()
        };
        assert!(judge(&nothing, &cfg()).0.is_empty());
    }

    #[test]
    fn plans_opens_and_resolves_only_within_what_it_judged() {
        let seen = Seen {
            now_ms: 10_000_000,
            workers: vec![worker("w1", 1, Some(true)), worker("w2", 1, Some(false))],
            ..Seen::default()
        };
        let (wanted, judged) = judge(&seen, &cfg());
        let open: BTreeSet<_> = [
            key(AlertKind::WorkerImpaired, "w2"),
            key(AlertKind::WorkerImpaired, "gone"),
            key(AlertKind::NoController, ""),
        ]
        .into();
        let (to_open, to_resolve) = plan(&wanted, &judged, &open);
        let opened: Vec<_> = to_open.iter().map(|(k, _)| (*k).clone()).collect();
        assert_eq!(opened, vec![key(AlertKind::WorkerImpaired, "w1")]);
        // w2 recovered; "gone" is unknown to this term and no-controller is not its call.
        assert_eq!(
            to_resolve,
            vec![
                key(AlertKind::WorkerImpaired, "w2"),
                key(AlertKind::OutboxStuck, "").clone()
            ]
            .into_iter()
            .filter(|k| open.contains(k))
            .collect::<Vec<_>>()
        );
        // Already open: nothing to send again.
        let open: BTreeSet<_> = [key(AlertKind::WorkerImpaired, "w1")].into();
        let (to_open, to_resolve) = plan(&wanted, &judged, &open);
        assert!(to_open.is_empty() && to_resolve.is_empty());
    }

    #[test]
    fn bad_rows_are_named_by_table_and_id_and_resolve_once_fixed() {
        let canaries = [
            (3, "tcp://127.0.0.1:9".to_string()),
            (4, "gopher://127.0.0.1:7/x".to_string()),
        ];
        let caps = [(7, "sms".to_string(), 0), (8, "voice".to_string(), -2)];
        let bad = bad_rows(&canaries, &caps, 30);
        let subjects: Vec<&str> = bad.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(subjects, ["canaries 4", "contacts 7", "contacts 8"]);
        assert!(bad[0].1.contains("gopher://127.0.0.1:7/x"), "{}", bad[0].1);
        assert!(
            bad[1].1.contains("= 0") && bad[1].1.contains("30"),
            "{}",
            bad[1].1
        );
        let seen = Seen {
            now_ms: 5_000,
            bad_rows: Some(bad[1..].to_vec()),
            ..Seen::default()
        };
        let (wanted, mut judged) = judge(&seen, &cfg());
        // canaries 4 was fixed: read this round and no longer bad, so resolved; contacts 7
        // is open already and stays so; contacts 8 opens.
        let open: Keys = [
            key(AlertKind::BadRow, "canaries 4"),
            key(AlertKind::BadRow, "contacts 7"),
        ]
        .into();
        judged_open(&seen, &open, &mut judged);
        let (to_open, to_resolve) = plan(&wanted, &judged, &open);
        let opened: Vec<_> = to_open.iter().map(|(k, _)| (*k).clone()).collect();
        assert_eq!(opened, [key(AlertKind::BadRow, "contacts 8")]);
        assert_eq!(to_resolve, [key(AlertKind::BadRow, "canaries 4")]);
        // Not read this round: nothing about bad rows is judged.
        let unread = Seen {
            now_ms: 5_000,
            ..Seen::default()
        };
        let (wanted, mut judged) = judge(&unread, &cfg());
        judged_open(&unread, &open, &mut judged);
        let (to_open, to_resolve) = plan(&wanted, &judged, &open);
        assert!(to_open.is_empty() && to_resolve.is_empty());
    }

    #[test]
    fn the_period_is_a_quarter_of_the_no_controller_alert_within_bounds() {
        let mut c = cfg();
        assert_eq!(period(&c), Duration::from_secs(5));
        c.no_controller = Duration::from_secs(4);
        assert_eq!(period(&c), Duration::from_secs(1));
        c.no_controller = Duration::from_millis(100);
        assert_eq!(period(&c), Duration::from_millis(500));
    }
}
