//! The SQL of the notification outbox (`notification_outbox`, `charges`), behind typed
//! functions. The rules (what is due, when to retry, what the admin hears) live in
//! [`crate::notify::outbox`]; this module only reads and writes rows.
//!
//! Every write runs in a [`FencedTx`], so a deposed controller can neither enqueue, claim nor
//! record. Reads that decide nothing (is anything due, which failed rows are unreported, a
//! contact) run without one.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, Value};

use super::fence::FencedTx;
use super::{Store, StoreError};
use crate::model::{CheckId, ContactId, ContactKind, ContactRow, Epoch, NodeId};
use crate::notify::Notification;

/// `last_error` is a `VARCHAR(1024)`.
const MAX_ERROR_CHARS: usize = 1000;

/// Writes one pending row per contact of `contacts` for `notification`, in the flip's fenced
/// transaction. Rows that exist already (same event and contact) are left alone, so calling
/// it again for the same event is harmless. Returns how many rows were added.
pub async fn enqueue(
    tx: &mut FencedTx,
    notification: &Notification,
    contacts: &[ContactId],
) -> Result<u64, StoreError> {
    if contacts.is_empty() {
        return Ok(0);
    }
    let payload = serde_json::to_string(notification)
        .map_err(|e| StoreError::Schema(format!("notification cannot be serialized: {e}")))?;
    let mut sql = String::from(
        "INSERT IGNORE INTO notification_outbox (event_id, check_id, contact_id, payload) VALUES ",
    );
    let mut params: Vec<Value> = Vec::with_capacity(contacts.len() * 4);
    for (i, contact) in contacts.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?)");
        params.push(notification.event_id.0.into());
        params.push(notification.check_id.0.into());
        params.push(contact.0.into());
        params.push(payload.as_str().into());
    }
    let tx = tx.tx();
    tx.exec_drop(sql, Params::Positional(params)).await?;
    Ok(tx.affected_rows())
}

/// A row claimed for delivery, with its contact.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub check_id: CheckId,
    pub contact_id: ContactId,
    /// Attempts including this one.
    pub attempts: u32,
    /// The notification as JSON, as [`enqueue`] stored it.
    pub payload: String,
    /// `None` when the contact has been deleted since the flip.
    pub contact: Option<ContactRow>,
}

/// Claims up to `limit` due rows for `node` for `lease` (`claimed_by`, `claimed_until`,
/// `attempts + 1`), in a fenced transaction of `epoch`.
pub async fn claim_due(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let mut fenced = FencedTx::begin(store, epoch).await?;
    let tx = fenced.tx();
    let rows: Vec<Row> = tx
        .exec(
            "SELECT id, check_id, contact_id, attempts, payload FROM notification_outbox \
             WHERE state = 'pending' AND next_attempt_at <= NOW(3) \
             AND (claimed_until IS NULL OR claimed_until <= NOW(3)) \
             ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE",
            (limit as u64,),
        )
        .await?;
    if rows.is_empty() {
        fenced.rollback().await?;
        return Ok(Vec::new());
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for mut row in rows {
        let attempts: i64 = take(&mut row, 3)?;
        claimed.push(ClaimedRow {
            id: take(&mut row, 0)?,
            check_id: CheckId(take(&mut row, 1)?),
            contact_id: ContactId(take(&mut row, 2)?),
            attempts: u32::try_from(attempts.max(0) + 1).unwrap_or(u32::MAX),
            payload: take(&mut row, 4)?,
            contact: None,
        });
    }
    let ids = id_list(claimed.iter().map(|c| c.id));
    let contact_ids = id_list(claimed.iter().map(|c| c.contact_id.0));
    let contacts: Vec<(i64, String, String)> = tx
        .query(format!(
            "SELECT id, type, data FROM contacts WHERE id IN ({contact_ids})"
        ))
        .await?;
    for c in &mut claimed {
        c.contact = contacts
            .iter()
            .find(|(id, _, _)| *id == c.contact_id.0)
            .map(|(id, kind, data)| ContactRow {
                id: ContactId(*id),
                kind: ContactKind::parse(kind),
                data: data.clone(),
            });
    }
    tx.exec_drop(
        format!(
            "UPDATE notification_outbox SET claimed_by = ?, \
             claimed_until = NOW(3) + INTERVAL ? MICROSECOND, attempts = attempts + 1 \
             WHERE id IN ({ids})"
        ),
        (node.0.as_str(), micros(lease)),
    )
    .await?;
    fenced.commit().await?;
    Ok(claimed)
}

/// What to write for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Delivered: `sent`, with a `charges` row for a Twilio message or call.
    Sent {
        charge: Option<(&'static str, String)>,
    },
    /// Not delivered; due again after `wait`.
    Retry { wait: Duration, error: String },
    /// Not delivered, and never will be: `failed`.
    Failed { error: String },
}

/// The outcome of one claimed row.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: i64,
    pub check_id: CheckId,
    pub attempt: Attempt,
}

/// Records the outcomes of claimed rows in one fenced transaction of `epoch`, releasing
/// their claims.
pub async fn record(
    store: &Store,
    epoch: Epoch,
    records: &[AttemptRecord],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut fenced = FencedTx::begin(store, epoch).await?;
    let tx = fenced.tx();
    for r in records {
        match &r.attempt {
            Attempt::Sent { charge } => {
                tx.exec_drop(
                    "UPDATE notification_outbox SET state = 'sent', sent_at = NOW(3), \
                     last_error = NULL, claimed_by = NULL, claimed_until = NULL \
                     WHERE id = ? AND state = 'pending'",
                    (r.id,),
                )
                .await?;
                if let Some((kind, sid)) = charge {
                    tx.exec_drop(
                        "INSERT INTO charges (check_id, type, data) VALUES (?, ?, ?)",
                        (r.check_id.0, *kind, sid.as_str()),
                    )
                    .await?;
                }
            }
            Attempt::Retry { wait, error } => {
                tx.exec_drop(
                    "UPDATE notification_outbox SET next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND, \
                     last_error = ?, claimed_by = NULL, claimed_until = NULL \
                     WHERE id = ? AND state = 'pending'",
                    (micros(*wait), clip(error), r.id),
                )
                .await?;
            }
            Attempt::Failed { error } => {
                tx.exec_drop(
                    "UPDATE notification_outbox SET state = 'failed', last_error = ?, \
                     claimed_by = NULL, claimed_until = NULL WHERE id = ? AND state = 'pending'",
                    (clip(error), r.id),
                )
                .await?;
            }
        }
    }
    fenced.commit().await?;
    Ok(())
}

/// A row that failed for good.
#[derive(Debug, Clone)]
pub struct FailedRow {
    pub id: i64,
    pub event_id: i64,
    pub check_id: CheckId,
    pub contact_id: ContactId,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub payload: String,
}

/// Up to `limit` failed rows the admin has not been told about, oldest first.
pub async fn unreported_failed(store: &Store, limit: usize) -> Result<Vec<FailedRow>, StoreError> {
    type Raw = (i64, i64, i64, i64, i64, Option<String>, String);
    let mut conn = store.conn().await?;
    let rows: Vec<Raw> = conn
        .exec(
            "SELECT id, event_id, check_id, contact_id, attempts, last_error, payload \
             FROM notification_outbox WHERE state = 'failed' AND admin_notified = 0 \
             ORDER BY id LIMIT ?",
            (limit as u64,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, event_id, check, contact, attempts, last_error, payload)| FailedRow {
                id,
                event_id,
                check_id: CheckId(check),
                contact_id: ContactId(contact),
                attempts,
                last_error,
                payload,
            },
        )
        .collect())
}

/// Marks failed rows as reported to the admin, in a fenced transaction of `epoch`.
pub async fn mark_reported(store: &Store, epoch: Epoch, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = id_list(ids.iter().copied());
    let mut fenced = FencedTx::begin(store, epoch).await?;
    fenced
        .tx()
        .query_drop(format!(
            "UPDATE notification_outbox SET admin_notified = 1 WHERE id IN ({ids})"
        ))
        .await?;
    fenced.commit().await
}

/// Reads one contact, or `None` when it does not exist.
pub async fn load_contact(store: &Store, id: ContactId) -> Result<Option<ContactRow>, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<(String, String)> = conn
        .exec_first("SELECT type, data FROM contacts WHERE id = ?", (id.0,))
        .await?;
    Ok(row.map(|(kind, data)| ContactRow {
        id,
        kind: ContactKind::parse(&kind),
        data,
    }))
}

/// Records a Twilio message or call in `charges` outside the outbox (for
/// `gobearmon contact test`).
pub async fn record_charge(
    store: &Store,
    check_id: CheckId,
    kind: &str,
    sid: &str,
) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    conn.exec_drop(
        "INSERT INTO charges (check_id, type, data) VALUES (?, ?, ?)",
        (check_id.0, kind, sid),
    )
    .await?;
    Ok(())
}

/// Column `i` of a row; a NULL or a type mismatch is a schema problem.
fn take<T: mysql_async::prelude::FromValue>(row: &mut Row, i: usize) -> Result<T, StoreError> {
    row.take_opt::<T, usize>(i)
        .and_then(|r| r.ok())
        .ok_or_else(|| StoreError::Schema(format!("notification_outbox: column {i} unreadable")))
}

/// Comma-separated integers for an `IN (...)` list (integers only, so nothing to escape).
fn id_list(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `s` cut to what `last_error` holds, on a char boundary.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_ERROR_CHARS + 3);
        assert_eq!(clip("short"), "short");
    }
}
