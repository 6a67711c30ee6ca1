//! The SQL of the notification outbox (`notification_outbox`, `charges`), behind typed
//! functions. The rules (what is due, when to retry, what the admin hears) live in
//! [`crate::notify::outbox`]; this module only reads and writes rows.
//!
//! Every write runs in a [`FencedTx`], so a deposed controller can neither enqueue, claim nor
//! record. Reads that decide nothing (is anything due, which failed rows are unreported, a
//! contact) run without one: an idle dispatcher never locks the fence.
//!
//! A claim stamps its rows with a random [`ClaimToken`]; recording an outcome checks it
//! (`WHERE id = ? AND claim_token = ?`). A dispatcher whose claim ran out and was taken over
//! by another (after a slow database call) therefore records nothing over the new claim; its
//! row is reported in [`Recorded::taken_over`]. The token stays on the row after the record,
//! so a record repeated after a lost commit answer is recognised as already done. Charges
//! are unique by SID (`charges.sid`), so repeating a record adds no second charge.

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
    /// The claim this row is held under; its outcome is recorded only under it.
    pub claim: ClaimToken,
    pub check_id: CheckId,
    pub contact_id: ContactId,
    /// Attempts including this one.
    pub attempts: u32,
    /// The notification as JSON, as [`enqueue`] stored it.
    pub payload: String,
    /// `None` when the contact has been deleted since the flip.
    pub contact: Option<ContactRow>,
}

/// One claim of outbox rows: a random number, stored in `claim_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub u64);

impl ClaimToken {
    pub(crate) fn new() -> ClaimToken {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 8];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            // No system randomness: the clock and a counter still tell claims apart.
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = crate::notify::unix_ms(std::time::SystemTime::now()) as u64;
            bytes = (t.rotate_left(20) ^ n).to_le_bytes();
        }
        ClaimToken(u64::from_le_bytes(bytes))
    }
}

/// Rows a claim may take: pending, due, and not claimed (or the claim ran out).
const DUE: &str = "state = 'pending' AND next_attempt_at <= NOW(3) \
                   AND (claimed_until IS NULL OR claimed_until <= NOW(3))";

/// Claims up to `limit` due rows for `node` for `lease` (`claimed_by`, `claimed_until`,
/// `claim_token`, `attempts + 1`), in a fenced transaction of `epoch` for `node`. Looks
/// first without a transaction, so when nothing is due the fence is not touched.
pub async fn claim_due(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedRow>, StoreError> {
    claim_due_upto(store, epoch, node, limit, lease, i64::MAX).await
}

/// [`claim_due`], taking no never-attempted row above `upto` (the newest row storm control
/// planned for; a row written since waits for the next plan).
pub async fn claim_due_upto(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    limit: usize,
    lease: Duration,
    upto: i64,
) -> Result<Vec<ClaimedRow>, StoreError> {
    store
        .bounded("claiming outbox rows", async {
            let any: Option<i64> = store
                .conn()
                .await?
                .query_first(format!(
                    "SELECT id FROM notification_outbox WHERE {DUE} \
                     AND (attempts > 0 OR id <= {upto}) LIMIT 1"
                ))
                .await?;
            if any.is_none() || limit == 0 {
                return Ok(Vec::new());
            }
            claim_in_fence(store, epoch, node, limit, lease, upto).await
        })
        .await
}

async fn claim_in_fence(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    limit: usize,
    lease: Duration,
    upto: i64,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let mut fenced = FencedTx::begin(store, epoch, node).await?;
    let tx = fenced.tx();
    let rows: Vec<Row> = tx
        .exec(
            format!(
                "SELECT id, check_id, contact_id, attempts, payload FROM notification_outbox \
                 WHERE {DUE} AND (attempts > 0 OR id <= {upto}) \
                 ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE"
            ),
            (limit as u64,),
        )
        .await?;
    if rows.is_empty() {
        fenced.rollback().await?;
        return Ok(Vec::new());
    }
    let claim = ClaimToken::new();
    let mut claimed = Vec::with_capacity(rows.len());
    for mut row in rows {
        let attempts: i64 = take(&mut row, 3)?;
        claimed.push(ClaimedRow {
            id: take(&mut row, 0)?,
            claim,
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
            "UPDATE notification_outbox SET claimed_by = ?, claim_token = ?, \
             claimed_until = NOW(3) + INTERVAL ? MICROSECOND, attempts = attempts + 1 \
             WHERE id IN ({ids})"
        ),
        (node.0.as_str(), claim.0, micros(lease)),
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
    /// The claim the attempt was made under.
    pub claim: ClaimToken,
    pub check_id: CheckId,
    pub attempt: Attempt,
}

/// What [`record`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Rows whose claim another dispatcher had taken over: nothing was written for them
    /// (except a charge, which is a fact whoever records the row).
    pub taken_over: Vec<i64>,
}

/// Records the outcomes of claimed rows in one fenced transaction of `epoch` for `node`,
/// releasing their claims. Only a row still held under the outcome's claim is written. Safe to
/// repeat (after a commit whose answer was lost): the rows are recorded already and the
/// charges exist, so nothing changes.
pub async fn record(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    records: &[AttemptRecord],
) -> Result<Recorded, StoreError> {
    if records.is_empty() {
        return Ok(Recorded::default());
    }
    store
        .bounded("recording outbox attempts", async {
            let mut fenced = FencedTx::begin(store, epoch, node).await?;
            let mut done = Recorded::default();
            for r in records {
                if !record_one(fenced.tx(), r).await? {
                    done.taken_over.push(r.id);
                }
            }
            fenced.commit().await?;
            Ok(done)
        })
        .await
}

/// Writes one outcome; false when the row's claim is no longer `r.claim`.
async fn record_one(
    tx: &mut mysql_async::Transaction<'static>,
    r: &AttemptRecord,
) -> Result<bool, StoreError> {
    const HELD: &str = "WHERE id = ? AND claim_token = ? AND state = 'pending'";
    match &r.attempt {
        Attempt::Sent { charge } => {
            if let Some((kind, sid)) = charge {
                insert_charge(tx, r.check_id, kind, sid).await?;
            }
            tx.exec_drop(
                format!(
                    "UPDATE notification_outbox SET state = 'sent', sent_at = NOW(3), \
                     last_error = NULL, claimed_by = NULL, claimed_until = NULL {HELD}"
                ),
                (r.id, r.claim.0),
            )
            .await?;
        }
        Attempt::Retry { wait, error } => {
            tx.exec_drop(
                format!(
                    "UPDATE notification_outbox SET next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND, \
                     last_error = ?, claimed_by = NULL, claimed_until = NULL {HELD}"
                ),
                (micros(*wait), clip(error), r.id, r.claim.0),
            )
            .await?;
        }
        Attempt::Failed { error } => {
            tx.exec_drop(
                format!(
                    "UPDATE notification_outbox SET state = 'failed', last_error = ?, \
                     claimed_by = NULL, claimed_until = NULL {HELD}"
                ),
                (clip(error), r.id, r.claim.0),
            )
            .await?;
        }
    }
    if tx.affected_rows() > 0 {
        return Ok(true);
    }
    // Nothing matched: recorded already under this claim (a repeat), or claimed by another.
    let token: Option<Option<u64>> = tx
        .exec_first(
            "SELECT claim_token FROM notification_outbox WHERE id = ?",
            (r.id,),
        )
        .await?;
    Ok(token.flatten() == Some(r.claim.0))
}

/// A `charges` row for a Twilio SID, once: a second insert of the same SID changes nothing.
async fn insert_charge<Q: Queryable>(
    q: &mut Q,
    check_id: CheckId,
    kind: &str,
    sid: &str,
) -> Result<(), StoreError> {
    q.exec_drop(
        "INSERT INTO charges (check_id, type, data, sid) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE id = id",
        (check_id.0, kind, sid, sid),
    )
    .await?;
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

/// How long the oldest pending notification has waited; `None` when none is pending.
pub async fn oldest_pending(store: &Store) -> Result<Option<std::time::Duration>, StoreError> {
    let age: Option<Option<i64>> = store
        .bounded("reading the oldest pending notification", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query_first(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, \
                       MIN(GREATEST(created_at, COALESCE(held_until, created_at))), NOW(3)) \
                     FROM notification_outbox WHERE state = 'pending'",
                )
                .await?)
        })
        .await?;
    Ok(age
        .flatten()
        .map(|us| std::time::Duration::from_micros(us.max(0) as u64)))
}

/// Up to `limit` failed rows the admin has not been told about, oldest first.
pub async fn unreported_failed(store: &Store, limit: usize) -> Result<Vec<FailedRow>, StoreError> {
    type Raw = (i64, i64, i64, i64, i64, Option<String>, String);
    let rows: Vec<Raw> = store
        .bounded("listing failed outbox rows", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .exec(
                    "SELECT id, event_id, check_id, contact_id, attempts, last_error, payload \
                     FROM notification_outbox WHERE state = 'failed' AND admin_notified = 0 \
                     ORDER BY id LIMIT ?",
                    (limit as u64,),
                )
                .await?)
        })
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

/// Marks failed rows as reported to the admin, in a fenced transaction of `epoch` for
/// `node`.
pub async fn mark_reported(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    ids: &[i64],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = id_list(ids.iter().copied());
    store
        .bounded("marking failed outbox rows reported", async {
            let mut fenced = FencedTx::begin(store, epoch, node).await?;
            fenced
                .tx()
                .query_drop(format!(
                    "UPDATE notification_outbox SET admin_notified = 1 WHERE id IN ({ids})"
                ))
                .await?;
            fenced.commit().await
        })
        .await
}

/// Reads one contact, or `None` when it does not exist.
pub async fn load_contact(store: &Store, id: ContactId) -> Result<Option<ContactRow>, StoreError> {
    store
        .bounded("reading a contact", async {
            let mut conn = store.conn().await?;
            let row: Option<(String, String)> = conn
                .exec_first("SELECT type, data FROM contacts WHERE id = ?", (id.0,))
                .await?;
            Ok(row.map(|(kind, data)| ContactRow {
                id,
                kind: ContactKind::parse(&kind),
                data,
            }))
        })
        .await
}

/// Records a Twilio message or call in `charges` outside the outbox (for
/// `gobearmon contact test`); a SID recorded already is left alone.
pub async fn record_charge(
    store: &Store,
    check_id: CheckId,
    kind: &str,
    sid: &str,
) -> Result<(), StoreError> {
    store
        .bounded("recording a charge", async {
            let mut conn = store.conn().await?;
            insert_charge(&mut conn, check_id, kind, sid).await
        })
        .await
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

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `s` cut to what `last_error` holds, on a char boundary.
pub(super) fn clip(s: &str) -> String {
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
