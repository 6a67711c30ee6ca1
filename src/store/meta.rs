//! Vantage health and meta-alerts in MySQL: the `canaries` every worker runs, the
//! `meta_alerts` rows that make each alert go out once however many nodes see it, and the
//! acting controller's alive stamp (`controller_alive`).
//!
//! Opening an alert is one guarded update: it matches only a closed row whose `started_ms`
//! differs from this outage's start, so two nodes that see the same outage (the same start)
//! open it once between them, and a recovery that closed it is not followed by a second
//! alert for that outage. Resolving matches only an open row. Each caller that changed a row
//! sends the notice; the others do nothing. Every call may be repeated.

use mysql_async::prelude::Queryable;

use super::meta_queue::{Enqueue, enqueue};
use super::{Store, StoreError};
use crate::model::Epoch;

/// An open meta-alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub kind: String,
    pub subject: String,
    pub started_ms: i64,
    pub opened_ms: i64,
    pub opened_by: String,
    pub message: String,
    /// JSON, kind-specific (a worker's failing canaries).
    pub detail: Option<String>,
}

/// What an opener records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening<'a> {
    pub kind: &'a str,
    pub subject: &'a str,
    pub started_ms: i64,
    pub now_ms: i64,
    pub node: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    /// The channels its notice goes to (queued in the same transaction).
    pub channels: &'a [&'a str],
}

/// Opens the alert unless it is open or was already opened for this outage (`started_ms`),
/// and queues its notice in the same transaction. True when this call opened it.
pub async fn open(store: &Store, o: &Opening<'_>) -> Result<bool, StoreError> {
    store
        .bounded("opening a meta-alert", async {
            let mut tx = store.transaction().await?;
            tx.exec_drop(
                "INSERT IGNORE INTO meta_alerts (kind, subject, is_open, started_ms) \
                 VALUES (?, ?, 0, -1)",
                (o.kind, o.subject),
            )
            .await?;
            tx.exec_drop(
                "UPDATE meta_alerts SET is_open = 1, started_ms = ?, opened_ms = ?, \
                 resolved_ms = NULL, opened_by = ?, message = ?, detail = ? \
                 WHERE kind = ? AND subject = ? AND is_open = 0 AND started_ms <> ?",
                (
                    o.started_ms,
                    o.now_ms,
                    o.node,
                    cut(o.message),
                    o.detail,
                    o.kind,
                    o.subject,
                    o.started_ms,
                ),
            )
            .await?;
            let opened = tx.affected_rows() == 1;
            if opened {
                let e = Enqueue {
                    kind: o.kind,
                    subject: o.subject,
                    started_ms: o.started_ms,
                    event: OPENED,
                    reported_by: o.node,
                    message: o.message,
                    channels: o.channels,
                };
                enqueue(&mut tx, &e).await?;
            }
            tx.commit().await?;
            Ok(opened)
        })
        .await
}

/// The `event` of an opened alert's notice.
pub const OPENED: &str = "opened";
/// The `event` of a resolved alert's notice.
pub const RESOLVED: &str = "resolved";

/// Resolves the alert if it is open and queues its recovery notice (from `node`, to
/// `channels`) in the same transaction; the row it closed when this call closed it.
pub async fn resolve(
    store: &Store,
    kind: &str,
    subject: &str,
    now_ms: i64,
    node: &str,
    channels: &[&str],
) -> Result<Option<AlertRow>, StoreError> {
    store
        .bounded("resolving a meta-alert", async {
            let mut tx = store.transaction().await?;
            let row: Option<AlertRow> = tx
                .exec_first(
                    "SELECT kind, subject, started_ms, opened_ms, opened_by, message, detail \
                     FROM meta_alerts WHERE kind = ? AND subject = ? AND is_open = 1 FOR UPDATE",
                    (kind, subject),
                )
                .await?
                .map(row_of);
            let Some(row) = row else {
                return Ok(None);
            };
            tx.exec_drop(
                "UPDATE meta_alerts SET is_open = 0, resolved_ms = ? \
                 WHERE kind = ? AND subject = ? AND is_open = 1 AND started_ms = ?",
                (now_ms, kind, subject, row.started_ms),
            )
            .await?;
            if tx.affected_rows() != 1 {
                return Ok(None);
            }
            let e = Enqueue {
                kind,
                subject,
                started_ms: row.started_ms,
                event: RESOLVED,
                reported_by: node,
                message: &row.message,
                channels,
            };
            enqueue(&mut tx, &e).await?;
            tx.commit().await?;
            Ok(Some(row))
        })
        .await
}

/// Every open alert, oldest first.
pub async fn open_alerts(store: &Store) -> Result<Vec<AlertRow>, StoreError> {
    store
        .bounded("reading the open meta-alerts", async {
            let mut conn = store.conn().await?;
            let rows: Vec<RawRow> = conn
                .query(
                    "SELECT kind, subject, started_ms, opened_ms, opened_by, message, detail \
                     FROM meta_alerts WHERE is_open = 1 ORDER BY opened_ms, kind, subject",
                )
                .await?;
            Ok(rows.into_iter().map(row_of).collect())
        })
        .await
}

type RawRow = (String, String, i64, i64, String, String, Option<String>);

fn row_of(r: RawRow) -> AlertRow {
    AlertRow {
        kind: r.0,
        subject: r.1,
        started_ms: r.2,
        opened_ms: r.3,
        opened_by: r.4,
        message: r.5,
        detail: r.6,
    }
}

pub(super) fn cut(message: &str) -> String {
    crate::probe::cut_text(message, 2000).into_owned()
}

/// The kind of the no-controller alert in `meta_alerts`.
pub const NO_CONTROLLER: &str = "no_controller";

/// Opens the no-controller alert when no controller has stamped itself alive since before
/// `cutoff_ms` (and one ever did), in one statement with the stamp, so that a stamp written
/// meanwhile wins, and queues its notice to `channels` in the same transaction. The stamp it
/// judged (the outage's start) when this call opened it.
pub async fn open_no_controller(
    store: &Store,
    cutoff_ms: i64,
    now_ms: i64,
    node: &str,
    channels: &[&str],
) -> Result<Option<i64>, StoreError> {
    store
        .bounded("checking for a controller", async {
            let mut conn = store.conn().await?;
            let at: Option<i64> = conn
                .query_first("SELECT at_ms FROM controller_alive WHERE id = 1")
                .await?;
            let Some(at) = at.filter(|&at| at > 0 && at < cutoff_ms) else {
                return Ok(None);
            };
            drop(conn);
            let mut tx = store.transaction().await?;
            tx.exec_drop(
                "INSERT IGNORE INTO meta_alerts (kind, subject, is_open, started_ms) \
                 VALUES (?, '', 0, -1)",
                (NO_CONTROLLER,),
            )
            .await?;
            let message = crate::notify::text::no_controller(at, now_ms);
            tx.exec_drop(
                "UPDATE meta_alerts a JOIN controller_alive c ON c.id = 1 \
                 SET a.is_open = 1, a.started_ms = c.at_ms, a.opened_ms = ?, \
                 a.resolved_ms = NULL, a.opened_by = ?, a.message = ?, a.detail = NULL \
                 WHERE a.kind = ? AND a.subject = '' AND a.is_open = 0 \
                 AND c.at_ms > 0 AND c.at_ms < ? AND a.started_ms <> c.at_ms",
                (now_ms, node, &message, NO_CONTROLLER, cutoff_ms),
            )
            .await?;
            if tx.affected_rows() != 1 {
                return Ok(None);
            }
            // The stamp the update judged: the one read above unless a newer stamp (also
            // older than the cutoff) came in between.
            let started: Option<i64> = tx
                .exec_first(
                    "SELECT started_ms FROM meta_alerts WHERE kind = ? AND subject = ''",
                    (NO_CONTROLLER,),
                )
                .await?;
            let started = started.unwrap_or(at);
            let e = Enqueue {
                kind: NO_CONTROLLER,
                subject: "",
                started_ms: started,
                event: OPENED,
                reported_by: node,
                message: &message,
                channels,
            };
            enqueue(&mut tx, &e).await?;
            tx.commit().await?;
            Ok(Some(started))
        })
        .await
}

/// The acting controller of `epoch` says it is alive at `now_ms`.
pub async fn stamp_alive(
    store: &Store,
    epoch: Epoch,
    node: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    store
        .bounded("stamping the controller alive", async {
            let mut conn = store.conn().await?;
            conn.exec_drop(
                "UPDATE controller_alive SET epoch = ?, node = ?, at_ms = GREATEST(at_ms, ?) \
                 WHERE id = 1 AND epoch <= ?",
                (epoch.0, node, now_ms, epoch.0),
            )
            .await?;
            Ok(())
        })
        .await
}

/// The enabled rows of `canaries` (id, url), in id order.
pub async fn canaries(store: &Store) -> Result<Vec<(i64, String)>, StoreError> {
    store
        .bounded("reading canaries", async {
            let mut conn = store.conn().await?;
            let rows: Vec<(i64, String)> = conn
                .query("SELECT id, url FROM canaries WHERE enabled = 1 ORDER BY id")
                .await?;
            Ok(rows)
        })
        .await
}

/// The `sms` and `voice` contacts whose `max_per_hour` is 0 or less (id, type, value): bad
/// rows, capped at `[twilio] max_per_hour` instead ([`super::storm::inputs`]).
pub async fn bad_caps(store: &Store) -> Result<Vec<(i64, String, i64)>, StoreError> {
    store
        .bounded("reading contacts' caps", async {
            let mut conn = store.conn().await?;
            let rows: Vec<(i64, String, i64)> = conn
                .query(
                    "SELECT id, type, max_per_hour FROM contacts \
                     WHERE type IN ('sms', 'voice') AND max_per_hour <= 0 ORDER BY id",
                )
                .await?;
            Ok(rows)
        })
        .await
}
