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
}

/// Opens the alert unless it is open or was already opened for this outage (`started_ms`).
/// True when this call opened it: the caller sends the alert.
pub async fn open(store: &Store, o: &Opening<'_>) -> Result<bool, StoreError> {
    store
        .bounded("opening a meta-alert", async {
            let mut conn = store.conn().await?;
            conn.exec_drop(
                "INSERT IGNORE INTO meta_alerts (kind, subject, is_open, started_ms) \
                 VALUES (?, ?, 0, -1)",
                (o.kind, o.subject),
            )
            .await?;
            conn.exec_drop(
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
            Ok(conn.affected_rows() == 1)
        })
        .await
}

/// Resolves the alert if it is open; the row it closed when this call closed it (the caller
/// sends the recovery).
pub async fn resolve(
    store: &Store,
    kind: &str,
    subject: &str,
    now_ms: i64,
) -> Result<Option<AlertRow>, StoreError> {
    store
        .bounded("resolving a meta-alert", async {
            let mut conn = store.conn().await?;
            let row: Option<AlertRow> = conn
                .exec_first(
                    "SELECT kind, subject, started_ms, opened_ms, opened_by, message, detail \
                     FROM meta_alerts WHERE kind = ? AND subject = ? AND is_open = 1",
                    (kind, subject),
                )
                .await?
                .map(row_of);
            let Some(row) = row else {
                return Ok(None);
            };
            conn.exec_drop(
                "UPDATE meta_alerts SET is_open = 0, resolved_ms = ? \
                 WHERE kind = ? AND subject = ? AND is_open = 1 AND started_ms = ?",
                (now_ms, kind, subject, row.started_ms),
            )
            .await?;
            Ok((conn.affected_rows() == 1).then_some(row))
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

fn cut(message: &str) -> String {
    crate::probe::cut_text(message, 2000).into_owned()
}

/// The kind of the no-controller alert in `meta_alerts`.
pub const NO_CONTROLLER: &str = "no_controller";

/// Opens the no-controller alert when no controller has stamped itself alive since before
/// `cutoff_ms` (and one ever did), in one statement with the stamp, so that a stamp written
/// meanwhile wins. The stamp it judged (the outage's start) when this call opened it.
pub async fn open_no_controller(
    store: &Store,
    cutoff_ms: i64,
    now_ms: i64,
    node: &str,
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
            conn.exec_drop(
                "INSERT IGNORE INTO meta_alerts (kind, subject, is_open, started_ms) \
                 VALUES (?, '', 0, -1)",
                (NO_CONTROLLER,),
            )
            .await?;
            let message = format!(
                "No controller has acted since {} (more than {} s): no check is being run \
                 or confirmed, and no notification is sent.",
                crate::history::rfc3339_ms(at),
                (now_ms - at) / 1000
            );
            conn.exec_drop(
                "UPDATE meta_alerts a JOIN controller_alive c ON c.id = 1 \
                 SET a.is_open = 1, a.started_ms = c.at_ms, a.opened_ms = ?, \
                 a.resolved_ms = NULL, a.opened_by = ?, a.message = ?, a.detail = NULL \
                 WHERE a.kind = ? AND a.subject = '' AND a.is_open = 0 \
                 AND c.at_ms > 0 AND c.at_ms < ? AND a.started_ms <> c.at_ms",
                (now_ms, node, &message, NO_CONTROLLER, cutoff_ms),
            )
            .await?;
            Ok((conn.affected_rows() == 1).then_some(at))
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

/// The enabled rows of `canaries`, in id order.
pub async fn canaries(store: &Store) -> Result<Vec<String>, StoreError> {
    store
        .bounded("reading canaries", async {
            let mut conn = store.conn().await?;
            let urls: Vec<String> = conn
                .query("SELECT url FROM canaries WHERE enabled = 1 ORDER BY id")
                .await?;
            Ok(urls)
        })
        .await
}
