//! The SQL of storm control and caps ([`crate::policy::storm`]): what the rules read before a
//! claim (the fresh due rows with their contacts, whether the recent flips make a storm, each
//! contact's messages of the last hour) and what their plan writes, under the fence: rows
//! `held` until a time (`held_until`, with a `reason`), rows `folded` into a carrier
//! (`folded_into`), the carrier's payload made a digest.

use std::collections::{HashMap, HashSet};

use mysql_async::prelude::Queryable;

use super::fence::FencedTx;
use super::{Store, StoreError};
use crate::model::{ContactId, Epoch, NodeId};
use crate::notify::Notification;
use crate::policy::storm::{self, Action, Contact, Fold, Row, StormRule, Wait};

/// Rows the rules may look at: never attempted, due, not claimed; `pending`, or `held` by an
/// earlier plan whose time has come (the policy task's holds have no `held_until`).
const FRESH: &str = "o.attempts = 0 AND o.next_attempt_at <= NOW(3) \
     AND (o.claimed_until IS NULL OR o.claimed_until <= NOW(3)) \
     AND (o.state = 'pending' OR (o.state = 'held' AND o.held_until IS NOT NULL))";

/// Fresh rows read per plan; older ones come first, the rest in the next.
const FRESH_LIMIT: usize = 5000;

/// What one plan reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The database clock, ms.
    pub now_ms: i64,
    /// Flips within the storm window, counted up to `storm_flips + 1`.
    pub flips_in_window: u64,
    /// The contacts with fresh due rows.
    pub contacts: Vec<Contact>,
    /// The newest fresh row read: a claim after the plan takes no fresh row above it.
    pub upto: i64,
    /// The fresh rows that are `held` (by an earlier plan).
    pub held: HashSet<i64>,
}

/// Reads the plan's inputs; `paid_cap` is the cap of `sms` and `voice` contacts without
/// `contacts.max_per_hour`.
pub async fn inputs(store: &Store, rule: StormRule, paid_cap: u32) -> Result<Inputs, StoreError> {
    store
        .bounded("reading storm control inputs", async {
            let mut conn = store.conn().await?;
            type FreshRow = (i64, i64, Option<String>, Option<i32>, i64, bool);
            let rows: Vec<FreshRow> = conn
                .query(format!(
                    "SELECT o.id, o.contact_id, c.type, c.max_per_hour, \
                       CAST(UNIX_TIMESTAMP(o.created_at) * 1000 AS SIGNED), o.state = 'held' \
                     FROM notification_outbox o LEFT JOIN contacts c ON c.id = o.contact_id \
                     WHERE {FRESH} ORDER BY o.id LIMIT {FRESH_LIMIT}"
                ))
                .await?;
            // Idle (the common case): one query, as before storm control.
            if rows.is_empty() {
                return Ok(Inputs::default());
            }
            let now: Option<i64> = conn
                .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
                .await?;
            let now_ms = now.unwrap_or(0);
            // The (storm_flips + 1)-th newest flip: a storm if it is within the window. Ids
            // grow with time, so this reads storm_flips + 1 rows whatever the table's size.
            let nth: Option<i64> = conn
                .query_first(format!(
                    "SELECT CAST(UNIX_TIMESTAMP(time) * 1000 AS SIGNED) FROM check_events \
                     ORDER BY id DESC LIMIT 1 OFFSET {}",
                    rule.flips
                ))
                .await?;
            let flips_in_window = match nth {
                Some(t) if t > now_ms - rule.window_ms => u64::from(rule.flips) + 1,
                _ => 0,
            };
            let mut contacts: Vec<Contact> = Vec::new();
            let mut index: HashMap<i64, usize> = HashMap::new();
            let mut held = HashSet::new();
            for (id, contact, kind, max, created, is_held) in &rows {
                if *is_held {
                    held.insert(*id);
                }
                let row = Row {
                    id: *id,
                    due_ms: *created,
                };
                match index.get(contact) {
                    Some(&i) => contacts[i].rows.push(row),
                    None => {
                        index.insert(*contact, contacts.len());
                        contacts.push(Contact {
                            contact: ContactId(*contact),
                            cap: match kind.as_deref() {
                                Some("sms" | "voice") => Some(storm::cap_of(*max, paid_cap)),
                                _ => None,
                            },
                            sent_last_hour: Vec::new(),
                            rows: vec![row],
                            waiting_since: None,
                        })
                    }
                }
            }
            let list = contacts
                .iter()
                .map(|c| c.contact.0.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let sent: Vec<(i64, i64)> = conn
                .query(format!(
                    "SELECT contact_id, CAST(UNIX_TIMESTAMP(sent_at) * 1000 AS SIGNED) \
                     FROM notification_outbox WHERE contact_id IN ({list}) AND state = 'sent' \
                       AND sent_at > NOW(3) - INTERVAL 1 HOUR ORDER BY sent_at"
                ))
                .await?;
            let mut by_contact: HashMap<i64, Vec<i64>> = HashMap::new();
            for (c, t) in sent {
                by_contact.entry(c).or_default().push(t);
            }
            let waiting: HashMap<i64, i64> = conn
                .query(format!(
                    "SELECT contact_id, CAST(UNIX_TIMESTAMP(MIN(created_at)) * 1000 AS SIGNED) \
                     FROM notification_outbox WHERE contact_id IN ({list}) AND state = 'held' \
                       AND held_until > NOW(3) AND attempts = 0 GROUP BY contact_id"
                ))
                .await?
                .into_iter()
                .collect();
            for c in &mut contacts {
                c.sent_last_hour = by_contact.remove(&c.contact.0).unwrap_or_default();
                c.waiting_since = waiting.get(&c.contact.0).copied();
            }
            Ok(Inputs {
                now_ms,
                flips_in_window,
                upto: rows.iter().map(|r| r.0).max().unwrap_or(0),
                contacts,
                held,
            })
        })
        .await
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows made `held` (or kept so) until a later time.
    pub held: u64,
    /// Rows folded into a carrier.
    pub folded: u64,
}

/// Writes `actions` in one fenced transaction. Rows to send that were `held` become
/// `pending` again; a carrier's payload becomes the digest of its own and its folded rows'.
pub async fn apply(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    inputs: &Inputs,
    actions: &[Action],
) -> Result<Applied, StoreError> {
    let idle = |a: &Action| match a {
        Action::Send(ids) => ids.iter().all(|id| !inputs.held.contains(id)),
        _ => false,
    };
    // Nothing but sends of pending rows (the common case): nothing to write.
    if actions.iter().all(idle) {
        return Ok(Applied::default());
    }
    store
        .bounded("applying storm control", async {
            let mut fenced = FencedTx::begin(store, epoch, node).await?;
            let mut done = Applied::default();
            for a in actions {
                apply_one(fenced.tx(), a, &mut done).await?;
            }
            fenced.commit().await?;
            Ok(done)
        })
        .await
}

async fn apply_one(
    tx: &mut mysql_async::Transaction<'static>,
    action: &Action,
    done: &mut Applied,
) -> Result<(), StoreError> {
    match action {
        Action::Send(ids) => {
            tx.exec_drop(
                format!(
                    "UPDATE notification_outbox SET state = 'pending' \
                     WHERE id IN ({}) AND state = 'held'",
                    list(ids)
                ),
                (),
            )
            .await?;
        }
        Action::Defer {
            rows,
            until_ms,
            why,
        } => {
            let reason = match why {
                Wait::Gathering => "storm: gathering notifications that may fold together",
                Wait::Storm => "storm: one digest per contact per storm window",
                Wait::Cap => "cap: the contact's messages per hour are used up",
            };
            tx.exec_drop(
                format!(
                    "UPDATE notification_outbox SET state = 'held', reason = ?, \
                     held_until = FROM_UNIXTIME(? / 1000), next_attempt_at = FROM_UNIXTIME(? / 1000) \
                     WHERE id IN ({}) AND state IN ('pending', 'held') AND attempts = 0",
                    list(rows)
                ),
                (reason, until_ms, until_ms),
            )
            .await?;
            done.held += tx.affected_rows();
        }
        Action::Fold {
            carrier,
            folded,
            why,
        } => fold(tx, *carrier, folded, *why, done).await?,
    }
    Ok(())
}

async fn fold(
    tx: &mut mysql_async::Transaction<'static>,
    carrier: i64,
    folded: &[i64],
    why: Fold,
    done: &mut Applied,
) -> Result<(), StoreError> {
    let (carried, each) = match why {
        Fold::Digest => ("digest", "digest: sent inside the storm digest of row"),
        Fold::Cap => ("cap", "cap: sent inside the next allowed message, row"),
    };
    let mut ids = vec![carrier];
    ids.extend_from_slice(folded);
    let rows: Vec<(i64, String)> = tx
        .query(format!(
            "SELECT id, payload FROM notification_outbox WHERE id IN ({}) \
             AND state IN ('pending', 'held') AND attempts = 0 ORDER BY id FOR UPDATE",
            list(&ids)
        ))
        .await?;
    let Some((_, carrier_payload)) = rows.iter().find(|r| r.0 == carrier) else {
        return Ok(());
    };
    let Ok(head) = serde_json::from_str::<Notification>(carrier_payload) else {
        // Unreadable: sent (and failed) as it is; nothing folds into it.
        return Ok(());
    };
    let mut others = Vec::new();
    let mut taken = Vec::new();
    for (id, payload) in &rows {
        if *id == carrier {
            continue;
        }
        // An unreadable payload is left to be sent (and fail) on its own.
        if let Ok(n) = serde_json::from_str::<Notification>(payload) {
            others.push(n);
            taken.push(*id);
        }
    }
    let digest = head.digest(others);
    let payload = serde_json::to_string(&digest)
        .map_err(|e| StoreError::Schema(format!("notification cannot be serialized: {e}")))?;
    let reason = if digest.folded.is_empty() {
        format!("{carried}: one message this storm window")
    } else {
        format!("{carried}: carries {} more", digest.folded.len())
    };
    tx.exec_drop(
        "UPDATE notification_outbox SET state = 'pending', payload = ?, reason = ?, \
         next_attempt_at = NOW(3) WHERE id = ?",
        (payload, reason, carrier),
    )
    .await?;
    if !taken.is_empty() {
        tx.exec_drop(
            format!(
                "UPDATE notification_outbox SET state = 'folded', folded_into = ?, reason = ? \
                 WHERE id IN ({})",
                list(&taken)
            ),
            (carrier, format!("{each} {carrier}")),
        )
        .await?;
        done.folded += tx.affected_rows();
    }
    Ok(())
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The plan of the rules for `inputs`.
pub fn plan(rule: StormRule, inputs: &Inputs) -> Vec<Action> {
    storm::plan(
        rule,
        inputs.now_ms,
        inputs.flips_in_window,
        &inputs.contacts,
    )
}
