//! The meta-alert deliveries in MySQL (`meta_alert_deliveries`): one row per event of an
//! alert (opened, resolved) and channel (`email`, `webhook`), written by [`enqueue`] in the
//! transaction of [`super::meta`] that opened or resolved the alert, so exactly the node
//! that changed the alert queues its notice, and a crash after the commit loses nothing.
//!
//! Any controller-capable worker delivers, acting or not (the no-controller alert is raised
//! precisely when none acts): [`claim`] stamps due rows with a random [`ClaimToken`] for a
//! lease, [`record`] writes the outcome only under that token, as the notification outbox
//! does ([`super::outbox`]). A row is unique per (kind, subject, start, event, channel), so
//! a repeated enqueue adds nothing. Times are the database's (`NOW(3)`): nodes' clocks may
//! differ.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::outbox::{ClaimToken, clip, micros};
use super::{Store, StoreError};

/// What to queue: one event of one alert, for each of `channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueue<'a> {
    pub kind: &'a str,
    pub subject: &'a str,
    pub started_ms: i64,
    /// `opened` or `resolved`.
    pub event: &'a str,
    /// The node that saw it.
    pub reported_by: &'a str,
    pub message: &'a str,
    /// `email`, `webhook`: the channels the reporting node has configured.
    pub channels: &'a [&'a str],
}

/// Queues `e` on `conn` (inside the caller's transaction). Idempotent.
pub(super) async fn enqueue(conn: &mut impl Queryable, e: &Enqueue<'_>) -> Result<(), StoreError> {
    for channel in e.channels {
        conn.exec_drop(
            "INSERT IGNORE INTO meta_alert_deliveries \
             (kind, subject, started_ms, event, channel, reported_by, message) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                e.kind,
                e.subject,
                e.started_ms,
                e.event,
                *channel,
                e.reported_by,
                super::meta::cut(e.message),
            ),
        )
        .await?;
    }
    Ok(())
}

/// A claimed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub started_ms: i64,
    pub event: String,
    pub channel: String,
    pub reported_by: String,
    pub message: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Rows a claim may take: pending, due, and not claimed (or the claim ran out).
const DUE: &str = "state = 'pending' AND next_attempt_at <= NOW(3) \
                   AND (claimed_until IS NULL OR claimed_until <= NOW(3))";

type DeliveryRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    u32,
);

/// Claims up to `limit` due deliveries for `node` for `lease`. Looks first without locking,
/// so an idle poll is one read.
pub async fn claim(
    store: &Store,
    node: &str,
    limit: usize,
    lease: Duration,
) -> Result<(ClaimToken, Vec<Delivery>), StoreError> {
    let token = ClaimToken::new();
    store
        .bounded("claiming meta-alert deliveries", async {
            let mut conn = store.conn().await?;
            let any: Option<i64> = conn
                .query_first(format!(
                    "SELECT id FROM meta_alert_deliveries WHERE {DUE} LIMIT 1"
                ))
                .await?;
            if any.is_none() {
                return Ok((token, Vec::new()));
            }
            drop(conn);
            let mut tx = store.transaction().await?;
            let rows: Vec<DeliveryRow> = tx
                .query(format!(
                    "SELECT id, kind, subject, started_ms, event, channel, reported_by, message, \
                     attempts FROM meta_alert_deliveries WHERE {DUE} ORDER BY id LIMIT {limit} \
                     FOR UPDATE"
                ))
                .await?;
            let ids: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
            if !ids.is_empty() {
                tx.exec_drop(
                    format!(
                        "UPDATE meta_alert_deliveries SET claimed_by = ?, claim_token = ?, \
                         claimed_until = NOW(3) + INTERVAL ? MICROSECOND WHERE id IN ({})",
                        ids.join(",")
                    ),
                    (node, token.0, micros(lease)),
                )
                .await?;
            }
            tx.commit().await?;
            Ok((token, rows.into_iter().map(delivery).collect()))
        })
        .await
}

fn delivery(r: DeliveryRow) -> Delivery {
    Delivery {
        id: r.0,
        kind: r.1,
        subject: r.2,
        started_ms: r.3,
        event: r.4,
        channel: r.5,
        reported_by: r.6,
        message: r.7,
        attempts: r.8,
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Try again after `wait`.
    Retry {
        wait: Duration,
        error: String,
    },
    /// Attempts used up: not tried again.
    Failed {
        error: String,
    },
}

/// Records the outcome of delivery `id` under `token`; false when the claim was taken over
/// meanwhile (nothing is written).
pub async fn record(
    store: &Store,
    id: i64,
    token: ClaimToken,
    outcome: &Outcome,
) -> Result<bool, StoreError> {
    const HELD: &str = "WHERE id = ? AND claim_token = ? AND state = 'pending'";
    store
        .bounded("recording a meta-alert delivery", async {
            let mut conn = store.conn().await?;
            match outcome {
                Outcome::Sent => {
                    conn.exec_drop(
                        format!(
                            "UPDATE meta_alert_deliveries SET state = 'sent', sent_at = NOW(3), \
                             attempts = attempts + 1, claimed_until = NULL {HELD}"
                        ),
                        (id, token.0),
                    )
                    .await?
                }
                Outcome::Retry { wait, error } => {
                    conn.exec_drop(
                        format!(
                            "UPDATE meta_alert_deliveries SET attempts = attempts + 1, \
                             last_error = ?, claimed_until = NULL, \
                             next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND {HELD}"
                        ),
                        (clip(error), micros(*wait), id, token.0),
                    )
                    .await?
                }
                Outcome::Failed { error } => {
                    conn.exec_drop(
                        format!(
                            "UPDATE meta_alert_deliveries SET state = 'failed', \
                             attempts = attempts + 1, last_error = ?, claimed_until = NULL {HELD}"
                        ),
                        (clip(error), id, token.0),
                    )
                    .await?
                }
            }
            Ok(conn.affected_rows() == 1)
        })
        .await
}

/// Deliveries not sent yet, and failed for good (for `/metrics`).
pub async fn counts(store: &Store) -> Result<(u64, u64), StoreError> {
    store
        .bounded("counting meta-alert deliveries", async {
            let mut conn = store.conn().await?;
            let row: Option<(Option<u64>, Option<u64>)> = conn
                .query_first(
                    "SELECT CAST(SUM(state = 'pending') AS UNSIGNED), \
                     CAST(SUM(state = 'failed') AS UNSIGNED) FROM meta_alert_deliveries",
                )
                .await?;
            let (pending, failed) = row.unwrap_or_default();
            Ok((pending.unwrap_or(0), failed.unwrap_or(0)))
        })
        .await
}
