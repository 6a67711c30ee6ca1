//! Reading history back: a check's flips, its incidents with the notifications sent for them,
//! its uptime over a window, and its results over a window (raw, or folded into steps from
//! rollups and raw rows). Reads only: any controller-capable node answers them from MySQL,
//! acting or not. The arithmetic is [`crate::history`]'s.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};

use super::history::{RawResult, cursor, read_rollups_of};
use super::{Store, StoreError};
use crate::history::rollup::{HOUR, Outcome, Period, Rollup};
use crate::history::uptime::{self, FlipAt, Uptime};
use crate::history::window;
use crate::model::{CheckId, CheckStatus, NodeId};

/// One `check_events` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlipEvent {
    pub id: i64,
    pub check: CheckId,
    /// Unix seconds.
    pub at: i64,
    pub to: CheckStatus,
    /// The confirming result's message (`None` for events written before it was kept).
    pub message: Option<String>,
    pub confirmed_by: Vec<NodeId>,
}

impl FlipEvent {
    fn flip(&self) -> FlipAt {
        FlipAt {
            at: self.at,
            to: self.to,
        }
    }
}

const EVENT_COLUMNS: &str = "id, check_id, UNIX_TIMESTAMP(time), type, message, confirmed_by";

type EventCols = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn event(cols: EventCols) -> Option<FlipEvent> {
    let (id, check, at, to, message, confirmed_by) = cols;
    Some(FlipEvent {
        id,
        check: CheckId(check),
        at: at?,
        to: CheckStatus::parse(to.as_deref()?)?,
        message,
        confirmed_by: confirmed_by
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| NodeId(s.to_string()))
            .collect(),
    })
}

/// The flips of `check` (every check when `None`) in time order; rows with no time or an
/// unknown type are skipped.
pub async fn flips(store: &Store, check: Option<CheckId>) -> Result<Vec<FlipEvent>, StoreError> {
    store
        .bounded("reading flips", async {
            let mut conn = store.conn().await?;
            let rows: Vec<EventCols> = match check {
                Some(c) => {
                    conn.exec(
                        format!(
                            "SELECT {EVENT_COLUMNS} FROM check_events WHERE check_id = ? \
                             ORDER BY time, id"
                        ),
                        (c.0,),
                    )
                    .await?
                }
                None => {
                    conn.query(format!(
                        "SELECT {EVENT_COLUMNS} FROM check_events ORDER BY check_id, time, id"
                    ))
                    .await?
                }
            };
            Ok(rows.into_iter().filter_map(event).collect())
        })
        .await
}

/// A check as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckInfo {
    pub id: CheckId,
    pub name: String,
    pub check_type: String,
    /// A NULL or unknown status reads as online, as everywhere.
    pub status: CheckStatus,
    pub enabled: bool,
}

/// Every check (or one), by id.
pub async fn checks(store: &Store, only: Option<CheckId>) -> Result<Vec<CheckInfo>, StoreError> {
    store
        .bounded("reading checks", async {
            let mut conn = store.conn().await?;
            let sql = "SELECT id, name, type, status, enabled FROM checks";
            type Cols = (i64, String, String, Option<String>, i64);
            let rows: Vec<Cols> = match only {
                Some(c) => conn.exec(format!("{sql} WHERE id = ?"), (c.0,)).await?,
                None => conn.query(format!("{sql} ORDER BY id")).await?,
            };
            Ok(rows
                .into_iter()
                .map(|(id, name, check_type, status, enabled)| CheckInfo {
                    id: CheckId(id),
                    name,
                    check_type,
                    status: status
                        .as_deref()
                        .and_then(CheckStatus::parse)
                        .unwrap_or(CheckStatus::Online),
                    enabled: enabled != 0,
                })
                .collect())
        })
        .await
}

/// When the history of `check` began (Unix seconds): its first flip or its first stored
/// result, whichever is earlier. Once the raw rows of its first hour are pruned, that hour's
/// start stands for its first result. `None` when nothing is stored.
pub async fn history_start(store: &Store, check: CheckId) -> Result<Option<i64>, StoreError> {
    store
        .bounded("reading when history began", async {
            let mut conn = store.conn().await?;
            let event: Option<Option<i64>> = conn
                .exec_first(
                    "SELECT UNIX_TIMESTAMP(MIN(time)) FROM check_events WHERE check_id = ?",
                    (check.0,),
                )
                .await?;
            let raw: Option<Option<i64>> = conn
                .exec_first(
                    "SELECT MIN(at_ms) FROM result_history WHERE check_id = ?",
                    (check.0,),
                )
                .await?;
            let hour: Option<Option<i64>> = conn
                .exec_first(
                    "SELECT MIN(period_start) FROM result_rollups WHERE check_id = ? \
                     AND period = 'hour'",
                    (check.0,),
                )
                .await?;
            let raw = raw.flatten().map(|ms| ms.div_euclid(1000));
            // An hourly rollup counts only when it is older than the first raw row's hour
            // (its raw rows are gone); otherwise the raw row is the exact start.
            let hour = hour
                .flatten()
                .filter(|h| raw.is_none_or(|r| *h < Period::Hour.start_of(r)));
            Ok([event.flatten(), raw, hour].into_iter().flatten().min())
        })
        .await
}

/// The uptime of `check` over `[from, to)` (Unix seconds) at `now`; `None` when there is no
/// such check. See [`crate::history::uptime`] for the method.
pub async fn uptime_of(
    store: &Store,
    check: CheckId,
    from: i64,
    to: i64,
    now: i64,
) -> Result<Option<Uptime>, StoreError> {
    let Some(info) = checks(store, Some(check)).await?.pop() else {
        return Ok(None);
    };
    let events = flips(store, Some(check)).await?;
    let flips: Vec<FlipAt> = events.iter().map(FlipEvent::flip).collect();
    let began = history_start(store, check).await?;
    Ok(Some(uptime::uptime(
        from,
        to,
        &flips,
        began,
        info.status,
        now,
    )))
}

/// A notification of an incident's flip, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationState {
    pub id: i64,
    pub event_id: i64,
    pub check: CheckId,
    pub contact_id: i64,
    /// `contacts.type`, or `None` when the contact was deleted. The contact's data (an
    /// address, a URL with a token, a webhook secret) is never read here.
    pub contact_type: Option<String>,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
    pub last_error: Option<String>,
}

const NOTIFICATION_COLUMNS: &str = "o.id, o.event_id, o.check_id, o.contact_id, c.type, o.state, \
     o.attempts, CAST(UNIX_TIMESTAMP(o.created_at) * 1000 AS SIGNED), \
     CAST(UNIX_TIMESTAMP(o.sent_at) * 1000 AS SIGNED), o.last_error \
     FROM notification_outbox o LEFT JOIN contacts c ON c.id = o.contact_id";

fn notification(row: mysql_async::Row) -> Result<NotificationState, StoreError> {
    type Cols = (
        i64,
        i64,
        i64,
        i64,
        Option<String>,
        String,
        u32,
        Option<i64>,
        Option<i64>,
        Option<String>,
    );
    let (id, event_id, check, contact_id, contact_type, state, attempts, created, sent, error): Cols =
        mysql_async::from_row_opt(row)
            .map_err(|e| StoreError::Schema(format!("notification_outbox row: {e}")))?;
    Ok(NotificationState {
        id,
        event_id,
        check: CheckId(check),
        contact_id,
        contact_type,
        state,
        attempts,
        created_ms: created.unwrap_or(0),
        sent_ms: sent,
        last_error: error,
    })
}

/// Outbox rows in id order after `after` (a cursor), at most `limit`, optionally in one state.
pub async fn notifications(
    store: &Store,
    state: Option<&str>,
    after: i64,
    limit: usize,
) -> Result<Vec<NotificationState>, StoreError> {
    store
        .bounded("reading notifications", async {
            let mut conn = store.conn().await?;
            let mut sql = format!("SELECT {NOTIFICATION_COLUMNS} WHERE o.id > ?");
            let mut params: Vec<Value> = vec![after.into()];
            if let Some(s) = state {
                sql.push_str(" AND o.state = ?");
                params.push(s.into());
            }
            sql.push_str(&format!(" ORDER BY o.id LIMIT {limit}"));
            let rows: Vec<mysql_async::Row> = conn.exec(sql, Params::Positional(params)).await?;
            rows.into_iter().map(notification).collect()
        })
        .await
}

async fn notifications_of_events(
    store: &Store,
    events: &[i64],
) -> Result<Vec<NotificationState>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = store.conn().await?;
    let list = vec!["?"; events.len()].join(",");
    let params: Vec<Value> = events.iter().map(|e| (*e).into()).collect();
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            format!("SELECT {NOTIFICATION_COLUMNS} WHERE o.event_id IN ({list}) ORDER BY o.id"),
            Params::Positional(params),
        )
        .await?;
    rows.into_iter().map(notification).collect()
}

/// An offline period of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub check: CheckId,
    /// The `check_events` id of the offline flip: the incident's id.
    pub id: i64,
    /// Unix seconds.
    pub start: i64,
    /// `None` while it is open.
    pub end: Option<i64>,
    /// Until the end, or until now while open.
    pub duration: i64,
    /// The message of the result that confirmed it.
    pub message: Option<String>,
    pub confirmed_by: Vec<NodeId>,
    /// The `check_events` id of the online flip that ended it.
    pub end_event: Option<i64>,
    /// What was sent for the offline flip and for the online flip that ended it.
    pub notifications: Vec<NotificationState>,
}

/// The incidents of `check` (of every check when `None`), newest first, with their
/// notifications; only the open ones with `open_only`.
pub async fn incidents(
    store: &Store,
    check: Option<CheckId>,
    open_only: bool,
    now: i64,
) -> Result<Vec<Incident>, StoreError> {
    let events = flips(store, check).await?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let c = events[i].check;
        let n = events[i..].iter().take_while(|e| e.check == c).count();
        let mine = &events[i..i + n];
        let flips: Vec<FlipAt> = mine.iter().map(FlipEvent::flip).collect();
        for p in uptime::incidents(&flips) {
            let start = &mine[p.start];
            let end = p.end.map(|e| &mine[e]);
            if open_only && end.is_some() {
                continue;
            }
            out.push(Incident {
                check: c,
                id: start.id,
                start: start.at,
                end: end.map(|e| e.at),
                duration: end.map_or(now, |e| e.at) - start.at,
                message: start.message.clone(),
                confirmed_by: start.confirmed_by.clone(),
                end_event: end.map(|e| e.id),
                notifications: Vec::new(),
            });
        }
        i += n;
    }
    out.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
    let ids: Vec<i64> = out
        .iter()
        .flat_map(|i| std::iter::once(i.id).chain(i.end_event))
        .collect();
    let mut by_event: BTreeMap<i64, Vec<NotificationState>> = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        for n in store
            .bounded(
                "reading notifications",
                notifications_of_events(store, chunk),
            )
            .await?
        {
            by_event.entry(n.event_id).or_default().push(n);
        }
    }
    for inc in &mut out {
        for e in std::iter::once(inc.id).chain(inc.end_event) {
            inc.notifications
                .extend(by_event.remove(&e).unwrap_or_default());
        }
    }
    Ok(out)
}

/// Raw results of `check` with `from_ms <= at < to_ms`, in time order, at most `limit`,
/// optionally of one location.
pub async fn raw_results(
    store: &Store,
    check: CheckId,
    from_ms: i64,
    to_ms: i64,
    location: Option<&str>,
    limit: usize,
) -> Result<Vec<RawResult>, StoreError> {
    store
        .bounded("reading results", async {
            let mut conn = store.conn().await?;
            let mut sql = String::from(
                "SELECT at_ms, node_id, location, status, duration_ms, message FROM result_history \
                 WHERE check_id = ? AND at_ms >= ? AND at_ms < ?",
            );
            let mut params: Vec<Value> = vec![check.0.into(), from_ms.into(), to_ms.into()];
            if let Some(l) = location {
                sql.push_str(" AND location = ?");
                params.push(l.into());
            }
            sql.push_str(&format!(" ORDER BY at_ms, node_id LIMIT {limit}"));
            type Cols = (i64, String, String, String, u64, String);
            let rows: Vec<Cols> = conn.exec(sql, Params::Positional(params)).await?;
            Ok(rows
                .into_iter()
                .map(
                    |(at_ms, node, location, status, duration_ms, message)| RawResult {
                        check,
                        at_ms,
                        node: NodeId(node),
                        location,
                        outcome: Outcome::parse(&status).unwrap_or(Outcome::Fail),
                        duration_ms,
                        message,
                    },
                )
                .collect())
        })
        .await
}

/// Rollups keyed by (step start, location).
pub type Series = BTreeMap<(i64, String), Rollup>;

/// The results of `check` over `[from, to)` (Unix seconds) folded per location into steps of
/// `step` seconds from `from` (one step for the whole window when `None`). Whole hours come
/// from hourly rollups, whole days (for a window without steps) from daily ones, the rest
/// from raw rows; a step shorter than an hour reads raw rows only, so it reaches back as far
/// as `[history] raw_retention`.
pub async fn series(
    store: &Store,
    check: CheckId,
    from: i64,
    to: i64,
    location: Option<&str>,
    step: Option<i64>,
) -> Result<Series, StoreError> {
    let step = step.filter(|s| *s > 0);
    let rolled = match step {
        Some(s) if s < HOUR || s % HOUR != 0 || (from % HOUR) != 0 => 0,
        _ => cursor(store).await?,
    };
    let mut plan = window::plan(from, to, rolled);
    if step.is_some() {
        // Steps of whole hours need no daily rows: the same span in hours.
        plan.hours.append(&mut plan.days);
    }
    let bucket = |t: i64| match step {
        Some(s) => from + (t - from).div_euclid(s) * s,
        None => from,
    };
    let mut out = Series::new();
    for (ranges, period) in [(&plan.days, Period::Day), (&plan.hours, Period::Hour)] {
        for (a, b) in ranges {
            let rows = store
                .bounded(
                    "reading rollups",
                    read_rollups_of(store, &[check.0], period, *a, *b, location),
                )
                .await?;
            for r in rows {
                out.entry((bucket(r.start), r.location))
                    .or_default()
                    .merge(&r.rollup);
            }
        }
    }
    for (a, b) in &plan.raw {
        fold_raw_range(store, check, *a, *b, location, &mut |t, loc, o, ms| {
            out.entry((bucket(t), loc)).or_default().record(o, ms);
        })
        .await?;
    }
    Ok(out)
}

async fn fold_raw_range(
    store: &Store,
    check: CheckId,
    from: i64,
    to: i64,
    location: Option<&str>,
    f: &mut (dyn FnMut(i64, String, Outcome, u64) + Send),
) -> Result<(), StoreError> {
    store
        .bounded("reading results", async {
            let mut conn = store.conn().await?;
            let mut sql = String::from(
                "SELECT at_ms, location, status, duration_ms FROM result_history \
                 WHERE check_id = ? AND at_ms >= ? AND at_ms < ?",
            );
            let mut params: Vec<Value> =
                vec![check.0.into(), (from * 1000).into(), (to * 1000).into()];
            if let Some(l) = location {
                sql.push_str(" AND location = ?");
                params.push(l.into());
            }
            let mut result = conn.exec_iter(sql, Params::Positional(params)).await?;
            result
                .for_each(|row| {
                    let (at_ms, loc, status, ms): (i64, String, String, u64) =
                        mysql_async::from_row(row);
                    let o = Outcome::parse(&status).unwrap_or(Outcome::Fail);
                    f(at_ms.div_euclid(1000), loc, o, ms);
                })
                .await?;
            Ok(())
        })
        .await
}
