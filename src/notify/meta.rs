//! Meta-alerts: the monitor telling `[smtp] admin` and `[controller] admin_webhook` that it is
//! itself impaired, down or stuck, once per outage and once more when it recovers.
//!
//! [`AlertKind`] names what is wrong; [`MetaNotifier`] makes one attempt to deliver an opened
//! or resolved alert on one [`Channel`]: by email (without the admin rate limit:
//! [`crate::store::meta`] already makes each go out once) or as a JSON webhook signed like a
//! contact webhook ([`super::webhook::signature`]). Attempts are made, retried and recorded
//! by [`super::meta_delivery`] from the queue in MySQL. The body:
//!
//! ```json
//! {"schema": "gobearmon.meta.v1", "event": "opened", "kind": "worker_impaired",
//!  "subject": "w2", "started": "2026-11-21T10:00:00.000Z", "time": "...",
//!  "node": "w1", "message": "..."}
//! ```
//!
//! with `Idempotency-Key: <kind>:<subject>:<started ms>:<event>`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::admin::{AdminKind, AdminNotifier, AdminOutcome};
use super::webhook::{IDEMPOTENCY_KEY, SIGNATURE_HEADER, TIMESTAMP_HEADER, describe, signature};
use crate::config::Secret;

/// What a meta-alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// No controller has acted for longer than `no_controller_alert`.
    NoController,
    /// A worker has not polled for longer than `stale_worker_alert` (subject: the worker).
    StaleWorker,
    /// A worker's canaries fail: its results no longer count (subject: the worker).
    WorkerImpaired,
    /// A controller named by the group cannot raise the epoch fence (subject: the node).
    FenceNotRaised,
    /// The oldest pending notification is older than `outbox_stuck_alert`.
    OutboxStuck,
    /// A viewserver member has not answered for `viewserver_down_alert` (subject: its
    /// address).
    ViewserverDown,
    /// A row that cannot be used as written (subject: `canaries ID`, `contacts ID`).
    BadRow,
    /// Check results were dropped from the result history (its buffer was full).
    HistoryDropped,
    /// A history round keeps failing (subject: `write` or `upkeep`).
    HistoryFailing,
    /// No database node answers (subject: empty). Sent directly, never queued: the queue is
    /// in the database.
    DatabaseUnreachable,
}

impl AlertKind {
    pub const ALL: [AlertKind; 10] = [
        AlertKind::NoController,
        AlertKind::StaleWorker,
        AlertKind::WorkerImpaired,
        AlertKind::FenceNotRaised,
        AlertKind::OutboxStuck,
        AlertKind::ViewserverDown,
        AlertKind::BadRow,
        AlertKind::HistoryDropped,
        AlertKind::HistoryFailing,
        AlertKind::DatabaseUnreachable,
    ];

    /// The name in `meta_alerts.kind`, the webhook and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NoController => crate::store::meta::NO_CONTROLLER,
            AlertKind::StaleWorker => "stale_worker",
            AlertKind::WorkerImpaired => "worker_impaired",
            AlertKind::FenceNotRaised => "fence_not_raised",
            AlertKind::OutboxStuck => "outbox_stuck",
            AlertKind::ViewserverDown => "viewserver_down",
            AlertKind::BadRow => "bad_row",
            AlertKind::HistoryDropped => "history_dropped",
            AlertKind::HistoryFailing => "history_failing",
            AlertKind::DatabaseUnreachable => "database_unreachable",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The email subject of the alert (`resolved`: of its recovery).
    pub fn subject(self, subject: &str, resolved: bool) -> String {
        let what = match self {
            AlertKind::NoController => "no controller".to_string(),
            AlertKind::StaleWorker => format!("worker {subject} is stale"),
            AlertKind::WorkerImpaired => {
                return if resolved {
                    format!("gobearmon: worker {subject} recovered (canaries pass)")
                } else {
                    format!("{}: {subject}", AdminKind::WorkerImpaired.subject())
                };
            }
            AlertKind::FenceNotRaised => format!("{subject} cannot raise the epoch fence"),
            AlertKind::OutboxStuck => "notifications are stuck in the outbox".to_string(),
            AlertKind::ViewserverDown => format!("viewserver member {subject} is down"),
            AlertKind::BadRow => format!("a row cannot be used: {subject}"),
            AlertKind::HistoryDropped => "check results were dropped from the history".into(),
            AlertKind::HistoryFailing => format!("history {subject} keeps failing"),
            AlertKind::DatabaseUnreachable => "the database is unreachable".into(),
        };
        let prefix = AdminKind::MetaAlert.subject();
        if resolved {
            format!("{prefix} resolved: {what}")
        } else {
            format!("{prefix}: {what}")
        }
    }
}

/// Opened, or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    Opened,
    Resolved,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Opened => crate::store::meta::OPENED,
            AlertEvent::Resolved => crate::store::meta::RESOLVED,
        }
    }

    pub fn parse(s: &str) -> Option<AlertEvent> {
        [AlertEvent::Opened, AlertEvent::Resolved]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// Where a meta-alert goes: each channel is delivered (and retried) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `[smtp] admin`.
    Email,
    /// `[controller] admin_webhook`.
    Webhook,
}

impl Channel {
    /// The name in `meta_alert_deliveries.channel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::Email, Channel::Webhook]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// One alert to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaAlert {
    pub kind: AlertKind,
    pub subject: String,
    /// When the condition began (Unix ms): the outage's start.
    pub started_ms: i64,
    pub message: String,
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    schema: &'static str,
    event: &'static str,
    kind: &'static str,
    subject: &'a str,
    started: String,
    time: String,
    node: &'a str,
    message: &'a str,
}

/// Sends meta-alerts by email and to the admin webhook. Share it behind an `Arc`.
pub struct MetaNotifier {
    node: String,
    /// Bound on one attempt (`delivery_timeout`).
    timeout: Duration,
    admin: std::sync::Arc<AdminNotifier>,
    webhook: Option<(Secret, Option<Secret>, reqwest::Client)>,
}

impl std::fmt::Debug for MetaNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaNotifier")
            .field("node", &self.node)
            .field("webhook", &self.webhook.is_some())
            .finish()
    }
}

impl MetaNotifier {
    /// Alerts from `node` through `admin` (`[smtp] admin`) and `webhook` (URL and secret).
    pub fn new(
        node: &str,
        admin: std::sync::Arc<AdminNotifier>,
        webhook: Option<(Secret, Option<Secret>)>,
        timeout: Duration,
    ) -> Result<MetaNotifier, super::NotifyError> {
        let webhook = match webhook {
            Some((url, secret)) => Some((url, secret, super::webhook::http_client(timeout, &[])?)),
            None => None,
        };
        Ok(MetaNotifier {
            node: node.to_string(),
            timeout,
            admin,
            webhook,
        })
    }

    /// The channels configured on this node, by name (what an alert it opens is queued for).
    /// Empty when neither `[smtp] admin` nor `admin_webhook` is set: alerts are then only
    /// logged.
    pub fn channels(&self) -> &'static [&'static str] {
        match (self.admin.is_configured(), self.webhook.is_some()) {
            (true, true) => &["email", "webhook"],
            (true, false) => &["email"],
            (false, true) => &["webhook"],
            (false, false) => &[],
        }
    }

    /// The email subject and body of `alert`.
    pub fn email(
        &self,
        alert: &MetaAlert,
        event: AlertEvent,
        reported_by: &str,
    ) -> (String, String) {
        let resolved = event == AlertEvent::Resolved;
        let subject = alert.kind.subject(&alert.subject, resolved);
        let since = crate::history::rfc3339_ms(alert.started_ms);
        let body = if resolved {
            format!("Resolved: {subject}\n\nIt had started at {since} (reported by {reported_by}).")
        } else {
            format!(
                "{}\n\nSince {since} (reported by {reported_by}).",
                alert.message
            )
        };
        (subject, body)
    }

    /// One attempt to deliver `alert` on `channel`, within the delivery timeout. `Err` says
    /// why it was not taken; every attempt may be repeated (the webhook carries an
    /// `Idempotency-Key`).
    pub async fn attempt(
        &self,
        channel: Channel,
        alert: &MetaAlert,
        event: AlertEvent,
        reported_by: &str,
    ) -> Result<(), String> {
        let attempt = async {
            match channel {
                Channel::Email => {
                    let (subject, body) = self.email(alert, event, reported_by);
                    match self.admin.send_once(&subject, &body).await {
                        AdminOutcome::Sent => Ok(()),
                        AdminOutcome::Failed(e) => Err(e.to_string()),
                        AdminOutcome::NotConfigured => {
                            Err("[smtp] host or admin is not set on this node".into())
                        }
                        AdminOutcome::Suppressed => Err("suppressed".into()),
                    }
                }
                Channel::Webhook => match &self.webhook {
                    Some((url, secret, http)) => {
                        self.post(url, secret.as_ref(), http, alert, event, reported_by)
                            .await
                    }
                    None => Err("admin_webhook is not set on this node".into()),
                },
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn post(
        &self,
        url: &Secret,
        secret: Option<&Secret>,
        http: &reqwest::Client,
        alert: &MetaAlert,
        event: AlertEvent,
        reported_by: &str,
    ) -> Result<(), String> {
        let now = super::unix_ms(SystemTime::now());
        let body = serde_json::to_vec(&WebhookBody {
            schema: "gobearmon.meta.v1",
            event: event.as_str(),
            kind: alert.kind.as_str(),
            subject: &alert.subject,
            started: crate::history::rfc3339_ms(alert.started_ms),
            time: crate::history::rfc3339_ms(now),
            node: reported_by,
            message: &alert.message,
        })
        .map_err(|e| e.to_string())?;
        let timestamp = (now / 1000).to_string();
        let mut request = http
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                IDEMPOTENCY_KEY,
                format!(
                    "{}:{}:{}:{}",
                    alert.kind.as_str(),
                    alert.subject,
                    alert.started_ms,
                    event.as_str()
                ),
            )
            .header(TIMESTAMP_HEADER, &timestamp);
        if let Some(secret) = secret {
            request = request.header(
                SIGNATURE_HEADER,
                format!(
                    "sha256={}",
                    signature(secret.expose().as_bytes(), &timestamp, &body)
                ),
            );
        }
        let answer = request.body(body).send().await.map_err(|e| describe(&e))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_subjects_name_the_subject() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlertKind::parse("nope"), None);
        let s = AlertKind::WorkerImpaired.subject("w2", false);
        assert!(s.contains("w2") && s.contains("impaired"), "{s}");
        let s = AlertKind::WorkerImpaired.subject("w2", true);
        assert!(s.contains("w2") && s.contains("recovered"), "{s}");
        let s = AlertKind::NoController.subject("", true);
        assert!(s.contains("resolved") && s.contains("no controller"), "{s}");
    }
}
