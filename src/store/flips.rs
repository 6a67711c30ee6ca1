//! Recording flips: `checks.status`, the `check_events` row (with the confirming message and
//! workers, for incidents) and the outbox rows of each flip, written under the epoch fence, a
//! batch in one transaction, in the order given.

use mysql_async::prelude::Queryable;

use super::fence::FencedTx;
use super::{Store, StoreError};
use crate::model::{CheckId, CheckStatus, ContactId, Epoch, NodeId};
use crate::notify::{EventId, Notification};
use crate::policy::flap::FlapRule;

/// A flip to record.
#[derive(Debug, Clone)]
pub struct FlipWrite {
    pub check: CheckId,
    /// The status the flip leaves; the stored status must still be this one.
    pub from: CheckStatus,
    pub to: CheckStatus,
    /// What the contacts are sent; its `event_id` is set to the new `check_events` row.
    pub notification: Notification,
    /// The contacts the check's alerts select for `to`.
    pub contacts: Vec<ContactId>,
}

/// What recording one flip came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipRecorded {
    /// Written, as `check_events` row `event`.
    Recorded { event: i64 },
    /// The check no longer exists: nothing written.
    Deleted,
    /// The stored status is not the flip's `from` (an earlier term recorded this flip
    /// already, or an earlier flip of this check was not recorded): nothing written, so
    /// nobody is told twice, and the caller goes back to `stored`.
    Skipped { stored: CheckStatus },
}

/// Records `flips` in one fenced transaction, in order (a later flip of the same check sees
/// the status an earlier one wrote). All or nothing: on an error nothing is written.
pub async fn record(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    flips: &[FlipWrite],
    flap: FlapRule,
) -> Result<Vec<FlipRecorded>, StoreError> {
    store
        .bounded("recording flips", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            let mut out = Vec::with_capacity(flips.len());
            for flip in flips {
                out.push(record_one(&mut tx, flip, flap).await?);
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
}

async fn record_one(
    tx: &mut FencedTx,
    flip: &FlipWrite,
    flap: FlapRule,
) -> Result<FlipRecorded, StoreError> {
    let stored: Option<Option<String>> = tx
        .tx()
        .exec_first(
            "SELECT status FROM checks WHERE id = ? FOR UPDATE",
            (flip.check.0,),
        )
        .await?;
    let Some(stored) = stored else {
        return Ok(FlipRecorded::Deleted);
    };
    let stored = stored
        .as_deref()
        .and_then(CheckStatus::parse)
        .unwrap_or(CheckStatus::Online);
    if stored != flip.from {
        return Ok(FlipRecorded::Skipped { stored });
    }
    tx.tx()
        .exec_drop(
            "UPDATE checks SET status = ? WHERE id = ?",
            (flip.to.as_str(), flip.check.0),
        )
        .await?;
    let n = &flip.notification;
    let message: String = n.message.chars().take(1024).collect();
    let confirmed_by: String = n
        .confirmed_by
        .iter()
        .map(|w| w.0.as_str())
        .collect::<Vec<_>>()
        .join(",")
        .chars()
        .take(1024)
        .collect();
    tx.tx()
        .exec_drop(
            "INSERT INTO check_events (check_id, type, message, confirmed_by) VALUES (?, ?, ?, ?)",
            (flip.check.0, flip.to.as_str(), message, confirmed_by),
        )
        .await?;
    let event = tx.tx().last_insert_id().unwrap_or(0) as i64;
    let mut notification = flip.notification.clone();
    notification.event_id = EventId(event);
    // A check with policy rows, or whose flip is suppressed as flapping, is notified by the
    // policy task (role/controller/policy.rs).
    // `flapping` runs for every flip: it also names a flapping check to the policy task.
    let flapping = super::policy::flapping(tx, flip.check, flap).await?;
    if !flapping && !super::policy::has_policy(tx, flip.check).await? {
        super::outbox::enqueue(tx, &notification, &flip.contacts).await?;
    }
    Ok(FlipRecorded::Recorded { event })
}
