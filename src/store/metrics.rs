//! What `/metrics` reads from MySQL: every enabled check with its recorded status, the latest
//! result of each check from each worker, how often each check flipped, and how notifications
//! fared. Any controller-capable worker can answer a scrape from these, acting or not.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;

use super::results::parse_timing;
use super::{Store, StoreError};
use crate::model::{CheckId, CheckStatus};

/// An enabled check as `checks` has it.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub id: CheckId,
    pub name: String,
    pub check_type: String,
    /// The status recorded by the last flip.
    pub status: CheckStatus,
}

/// One worker's latest result of one check (`check_results`).
#[derive(Debug, Clone)]
pub struct ProbeLine {
    pub check: CheckId,
    pub worker: String,
    pub location: String,
    pub online: bool,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    pub cert_expiry: Option<i64>,
    /// `dns, connect, tls, first_byte, total`, milliseconds since the run started.
    pub timing: Option<[f64; 5]>,
}

/// Notifications that reached a final state, by channel (the contact's type) and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationCount {
    pub channel: String,
    pub state: String,
    pub count: u64,
}

/// Every enabled check.
pub async fn checks(store: &Store) -> Result<Vec<CheckLine>, StoreError> {
    type Raw = (i64, String, String, Option<String>);
    let rows: Vec<Raw> = store
        .bounded("reading checks for /metrics", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query("SELECT id, name, type, status FROM checks WHERE enabled = 1 ORDER BY id")
                .await?)
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, check_type, status)| CheckLine {
            id: CheckId(id),
            name,
            check_type,
            status: match status.as_deref() {
                Some("offline") => CheckStatus::Offline,
                _ => CheckStatus::Online,
            },
        })
        .collect())
}

/// The latest result of each enabled check from each worker, leaving out results older than
/// three intervals and a minute (a worker that left, a check moved elsewhere): a series that
/// stops is truer than one frozen at its last value.
pub async fn probes(store: &Store) -> Result<Vec<ProbeLine>, StoreError> {
    type Raw = (
        i64,
        String,
        String,
        String,
        i64,
        Option<u16>,
        Option<i64>,
        Option<String>,
    );
    let rows: Vec<Raw> = store
        .bounded("reading the latest results for /metrics", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query(
                    "SELECT r.check_id, r.node_id, r.location, r.status, r.duration_ms, \
                     r.http_status, r.cert_expiry, r.timing \
                     FROM check_results r JOIN checks c ON c.id = r.check_id \
                     WHERE c.enabled = 1 \
                     AND r.updated_at > NOW(3) - INTERVAL (3 * GREATEST(c.check_interval, 1) + 60) SECOND \
                     ORDER BY r.check_id, r.node_id",
                )
                .await?)
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(check, worker, location, status, duration_ms, http_status, cert_expiry, timing)| {
                ProbeLine {
                    check: CheckId(check),
                    location: if location.is_empty() {
                        worker.clone()
                    } else {
                        location
                    },
                    worker,
                    online: status == "online",
                    duration_ms: duration_ms.max(0) as u64,
                    http_status,
                    cert_expiry,
                    timing: timing.as_deref().and_then(parse_timing),
                }
            },
        )
        .collect())
}

/// Flips recorded per check, read incrementally: each call reads only the events added since
/// the last one.
#[derive(Debug, Default)]
pub struct FlipCounts {
    last_id: i64,
    counts: HashMap<CheckId, u64>,
}

impl FlipCounts {
    /// Reads the events added since the last call; returns the counts so far.
    pub async fn refresh(&mut self, store: &Store) -> Result<&HashMap<CheckId, u64>, StoreError> {
        let last = self.last_id;
        let rows: Vec<(i64, u64, i64)> = store
            .bounded("counting flips for /metrics", async {
                let mut conn = store.conn().await?;
                Ok(conn
                    .exec(
                        "SELECT check_id, COUNT(*), MAX(id) FROM check_events WHERE id > ? \
                         GROUP BY check_id",
                        (last,),
                    )
                    .await?)
            })
            .await?;
        for (check, n, max_id) in rows {
            *self.counts.entry(CheckId(check)).or_default() += n;
            self.last_id = self.last_id.max(max_id);
        }
        Ok(&self.counts)
    }
}

/// Notifications sent and failed, by channel.
pub async fn notifications(store: &Store) -> Result<Vec<NotificationCount>, StoreError> {
    let rows: Vec<(Option<String>, String, u64)> = store
        .bounded("counting notifications for /metrics", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query(
                    "SELECT c.type, o.state, COUNT(*) FROM notification_outbox o \
                     LEFT JOIN contacts c ON c.id = o.contact_id \
                     WHERE o.state IN ('sent', 'failed') GROUP BY c.type, o.state \
                     ORDER BY c.type, o.state",
                )
                .await?)
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(channel, state, count)| NotificationCount {
            channel: channel.unwrap_or_else(|| "unknown".into()),
            state,
            count,
        })
        .collect())
}
