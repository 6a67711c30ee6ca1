//! Reading history back: a check's flips, its incidents with the notifications sent for them,
//! its uptime over a window, and its results over a window (raw, or folded into steps from
//! rollups and raw rows). Reads only: any controller-capable node answers them from MySQL,
//! acting or not. The arithmetic is [`crate::history`]'s.

use std::collections::{BTreeMap, HashMap};

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
    match check {
        Some(c) => flips_of(store, &[c.0]).await,
        None => {
            store
                .bounded("reading flips", async {
                    let mut conn = store.conn().await?;
                    let rows: Vec<EventCols> = conn
                        .query(format!(
                            "SELECT {EVENT_COLUMNS} FROM check_events ORDER BY check_id, time, id"
                        ))
                        .await?;
                    Ok(rows.into_iter().filter_map(event).collect())
                })
                .await
        }
    }
}

/// The flips of the checks `ids`, by check and in time order.
pub async fn flips_of(store: &Store, ids: &[i64]) -> Result<Vec<FlipEvent>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    store
        .bounded("reading flips", async {
            let mut conn = store.conn().await?;
            let rows: Vec<EventCols> = conn
                .exec(
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM check_events WHERE check_id IN ({}) \
                         ORDER BY check_id, time, id",
                        in_list(ids.len())
                    ),
                    ids_params(ids),
                )
                .await?;
            Ok(rows.into_iter().filter_map(event).collect())
        })
        .await
}

fn in_list(n: usize) -> String {
    vec!["?"; n].join(",")
}

fn ids_params(ids: &[i64]) -> Params {
    Params::Positional(ids.iter().map(|i| Value::from(*i)).collect())
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
    match only {
        Some(c) => checks_where(store, "WHERE id = ?", vec![c.0.into()]).await,
        None => checks_where(store, "ORDER BY id", Vec::new()).await,
    }
}

/// The checks `ids` that exist, by id.
pub async fn checks_in(store: &Store, ids: &[i64]) -> Result<Vec<CheckInfo>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let tail = format!("WHERE id IN ({}) ORDER BY id", in_list(ids.len()));
    checks_where(store, &tail, ids.iter().map(|&i| i.into()).collect()).await
}

/// How many enabled checks are offline (the overview's count; maintenance does not change it).
pub async fn offline_count(store: &Store) -> Result<u64, StoreError> {
    store
        .bounded("counting offline checks", async {
            let mut conn = store.conn().await?;
            let n: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM checks WHERE enabled = 1 AND status = 'offline'")
                .await?;
            Ok(n.unwrap_or(0))
        })
        .await
}

/// Up to `limit` checks with ids above `after`, by id.
pub async fn checks_after(
    store: &Store,
    after: i64,
    limit: usize,
) -> Result<Vec<CheckInfo>, StoreError> {
    let tail = format!("WHERE id > ? ORDER BY id LIMIT {limit}");
    checks_where(store, &tail, vec![after.into()]).await
}

async fn checks_where(
    store: &Store,
    tail: &str,
    params: Vec<Value>,
) -> Result<Vec<CheckInfo>, StoreError> {
    store
        .bounded("reading checks", async {
            let mut conn = store.conn().await?;
            type Cols = (i64, String, String, Option<String>, i64);
            let rows: Vec<Cols> = conn
                .exec(
                    format!("SELECT id, name, type, status, enabled FROM checks {tail}"),
                    Params::Positional(params),
                )
                .await?;
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
    Ok(history_starts(store, &[check.0])
        .await?
        .get(&check.0)
        .copied())
}

/// [`history_start`] of several checks; checks without history are missing.
pub async fn history_starts(store: &Store, ids: &[i64]) -> Result<HashMap<i64, i64>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    store
        .bounded("reading when history began", async {
            let list = in_list(ids.len());
            let min_of = |sql: String| {
                let params = ids_params(ids);
                async move { conn_min(store, sql, params).await }
            };
            let events = min_of(format!(
                "SELECT check_id, UNIX_TIMESTAMP(MIN(time)) FROM check_events \
                 WHERE check_id IN ({list}) GROUP BY check_id"
            ))
            .await?;
            let raw = min_of(format!(
                "SELECT check_id, FLOOR(MIN(at_ms) / 1000) FROM result_history \
                 WHERE check_id IN ({list}) GROUP BY check_id"
            ))
            .await?;
            let hours = min_of(format!(
                "SELECT check_id, MIN(period_start) FROM result_rollups \
                 WHERE check_id IN ({list}) AND period = 'hour' GROUP BY check_id"
            ))
            .await?;
            let mut out = HashMap::new();
            for id in ids {
                let raw = raw.get(id).copied();
                // An hourly rollup counts only when it is older than the first raw row's
                // hour (its raw rows are gone); otherwise the raw row is the exact start.
                let hour = hours
                    .get(id)
                    .copied()
                    .filter(|h| raw.is_none_or(|r| *h < Period::Hour.start_of(r)));
                if let Some(t) = [events.get(id).copied(), raw, hour]
                    .into_iter()
                    .flatten()
                    .min()
                {
                    out.insert(*id, t);
                }
            }
            Ok(out)
        })
        .await
}

async fn conn_min(
    store: &Store,
    sql: String,
    params: Params,
) -> Result<HashMap<i64, i64>, StoreError> {
    let mut conn = store.conn().await?;
    let rows: Vec<(i64, Option<i64>)> = conn.exec(sql, params).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, t)| Some((id, t?)))
        .collect())
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
    let mut all = uptimes(store, &[info], &[(from, to)], now).await?;
    Ok(all.pop().and_then(|mut u| u.pop()))
}

/// The uptime of every check of `checks` over every window of `windows`: one list of
/// windows per check, in order.
pub async fn uptimes(
    store: &Store,
    checks: &[CheckInfo],
    windows: &[(i64, i64)],
    now: i64,
) -> Result<Vec<Vec<Uptime>>, StoreError> {
    let ids: Vec<i64> = checks.iter().map(|c| c.id.0).collect();
    let events = flips_of(store, &ids).await?;
    let began = history_starts(store, &ids).await?;
    let maintenance = super::policy::windows(store).await?;
    let mut by_check: HashMap<i64, Vec<FlipAt>> = HashMap::new();
    for e in &events {
        by_check.entry(e.check.0).or_default().push(e.flip());
    }
    Ok(checks
        .iter()
        .map(|c| {
            let flips = by_check.get(&c.id.0).map_or(&[][..], |v| v.as_slice());
            windows
                .iter()
                .map(|(from, to)| {
                    let held: Vec<(i64, i64)> = maintenance
                        .iter()
                        .filter(|(check, _)| check.is_none_or(|id| id == c.id.0))
                        .flat_map(|(_, w)| w.intervals(*from * 1000, *to * 1000))
                        .map(|(a, b)| (a.div_euclid(1000), b.div_euclid(1000)))
                        .collect();
                    uptime::uptime_with_maintenance(
                        *from,
                        *to,
                        flips,
                        began.get(&c.id.0).copied(),
                        c.status,
                        now,
                        &held,
                    )
                })
                .collect()
        })
        .collect())
}

/// The latest result of a check from one worker (`check_results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRow {
    pub check: CheckId,
    pub node: NodeId,
    pub location: String,
    pub outcome: Outcome,
    pub message: String,
    pub duration_ms: u64,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// The latest results of the checks `ids`, by check and worker.
pub async fn latest_of(store: &Store, ids: &[i64]) -> Result<Vec<LatestRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    store
        .bounded("reading the latest results", async {
            let mut conn = store.conn().await?;
            type Cols = (i64, String, String, String, String, u64, Option<i64>);
            let rows: Vec<Cols> = conn
                .exec(
                    format!(
                        "SELECT check_id, node_id, location, status, message, duration_ms, \
                         CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS SIGNED) FROM check_results \
                         WHERE check_id IN ({}) ORDER BY check_id, node_id",
                        in_list(ids.len())
                    ),
                    ids_params(ids),
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(check, node, location, status, message, duration_ms, at)| LatestRow {
                        check: CheckId(check),
                        location: if location.is_empty() {
                            node.clone()
                        } else {
                            location
                        },
                        node: NodeId(node),
                        outcome: Outcome::parse(&status).unwrap_or(Outcome::Fail),
                        message,
                        duration_ms,
                        at_ms: at.unwrap_or(0),
                    },
                )
                .collect())
        })
        .await
}

/// A worker as the stored results show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub node: NodeId,
    pub location: String,
    /// When its latest stored result was written (Unix milliseconds).
    pub last_result_ms: i64,
    /// Checks it has a latest result for.
    pub checks: u64,
}

/// Every worker that has a latest result stored, by id.
pub async fn workers(store: &Store) -> Result<Vec<WorkerRow>, StoreError> {
    store
        .bounded("reading workers", async {
            let mut conn = store.conn().await?;
            let rows: Vec<(String, String, Option<i64>, u64)> = conn
                .query(
                    "SELECT node_id, MAX(location), \
                     CAST(UNIX_TIMESTAMP(MAX(updated_at)) * 1000 AS SIGNED), COUNT(*) \
                     FROM check_results GROUP BY node_id ORDER BY node_id",
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|(node, location, last, checks)| WorkerRow {
                    location: if location.is_empty() {
                        node.clone()
                    } else {
                        location
                    },
                    node: NodeId(node),
                    last_result_ms: last.unwrap_or(0),
                    checks,
                })
                .collect())
        })
        .await
}

/// The epoch the fence holds and the node it names.
pub async fn fence_holder(store: &Store) -> Result<Option<(u64, String)>, StoreError> {
    store
        .bounded("reading the epoch fence", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query_first("SELECT epoch, controller FROM epoch_fence WHERE id = 1")
                .await?)
        })
        .await
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
    /// `pending`, `sent`, `failed`, `held` (waiting for a rule), `folded` (sent inside
    /// another row's message) or `dropped` (never sent).
    pub state: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Why it was held, folded or dropped, or why it was sent when a rule decided it (a
    /// reminder, a digest, a release from a hold); `None` for a flip's plain notice.
    pub reason: Option<String>,
    /// The row whose message carried this one (`folded`).
    pub folded_into: Option<i64>,
}

const NOTIFICATION_COLUMNS: &str = "o.id, o.event_id, o.check_id, o.contact_id, c.type, o.state, \
     o.attempts, CAST(UNIX_TIMESTAMP(o.created_at) * 1000 AS SIGNED), \
     CAST(UNIX_TIMESTAMP(o.sent_at) * 1000 AS SIGNED), o.last_error, o.reason, o.folded_into \
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
        Option<String>,
        Option<i64>,
    );
    let (
        id,
        event_id,
        check,
        contact_id,
        contact_type,
        state,
        attempts,
        created,
        sent,
        error,
        reason,
        folded_into,
    ): Cols = mysql_async::from_row_opt(row)
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
        reason,
        folded_into,
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

/// Outbox rows per state, for the states that have rows.
pub async fn outbox_states(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    store
        .bounded("counting outbox rows", async {
            let mut conn = store.conn().await?;
            Ok(conn
                .query(
                    "SELECT CAST(state AS CHAR), COUNT(*) FROM notification_outbox \
                     GROUP BY state ORDER BY state",
                )
                .await?)
        })
        .await
}

/// The newest `limit` outbox rows a rule decided (a reason is set: held, folded, dropped, or
/// sent by a rule), newest first.
pub async fn decisions(store: &Store, limit: usize) -> Result<Vec<NotificationState>, StoreError> {
    store
        .bounded("reading notification decisions", async {
            let mut conn = store.conn().await?;
            let rows: Vec<mysql_async::Row> = conn
                .query(format!(
                    "SELECT {NOTIFICATION_COLUMNS} WHERE o.reason IS NOT NULL \
                     ORDER BY o.id DESC LIMIT {limit}"
                ))
                .await?;
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
    let mut out = incidents_in(&events, open_only, now);
    attach_notifications(store, &mut out).await?;
    Ok(out)
}

/// One page of incidents, newest first (by start, then id), with their notifications: those
/// of `check` (every check when `None`), only the open ones with `open_only`, starting after
/// the incident `after` (the last id of the previous page). Paged in SQL: an incident is an
/// offline flip whose previous known flip of the same check is not offline, ended by the
/// check's next online flip, the same rule as [`uptime::incidents`]. Each start finds its
/// neighbours through `check_events_check_time`; nothing but the page is read into memory.
pub async fn incident_page(
    store: &Store,
    check: Option<CheckId>,
    open_only: bool,
    after: Option<i64>,
    limit: usize,
    now: i64,
) -> Result<Vec<Incident>, StoreError> {
    const KNOWN: &str = "type IN ('online', 'offline') AND time IS NOT NULL";
    let mut params: Vec<Value> = Vec::new();
    let mut filter = String::new();
    if let Some(c) = check {
        filter.push_str(" AND e.check_id = ?");
        params.push(c.0.into());
    }
    if let Some(id) = after {
        filter.push_str(
            " AND (e.time, e.id) < (SELECT c.time, c.id FROM check_events c WHERE c.id = ?)",
        );
        params.push(id.into());
    }
    let having = if open_only {
        "HAVING end_id IS NULL"
    } else {
        ""
    };
    params.push((limit as u64).into());
    let next = "FROM check_events n WHERE n.check_id = e.check_id AND n.type = 'online' \
         AND n.time IS NOT NULL AND (n.time, n.id) > (e.time, e.id) ORDER BY n.time, n.id LIMIT 1";
    let sql = format!(
        "SELECT e.id, e.check_id, UNIX_TIMESTAMP(e.time), e.message, e.confirmed_by, \
           (SELECT n.id {next}) AS end_id, (SELECT UNIX_TIMESTAMP(n.time) {next}) AS end_at \
         FROM check_events e \
         WHERE e.type = 'offline' AND e.time IS NOT NULL{filter} \
           AND COALESCE((SELECT p.type FROM check_events p WHERE p.check_id = e.check_id \
               AND p.{KNOWN} AND (p.time, p.id) < (e.time, e.id) \
               ORDER BY p.time DESC, p.id DESC LIMIT 1), 'online') <> 'offline' \
         {having} ORDER BY e.time DESC, e.id DESC LIMIT ?"
    );
    let rows: Vec<IncidentRow> = store
        .bounded("reading a page of incidents", async {
            let mut conn = store.conn().await?;
            Ok(conn.exec(sql, Params::Positional(params)).await?)
        })
        .await?;
    let mut out: Vec<Incident> = rows.into_iter().map(|r| incident_of(r, now)).collect();
    attach_notifications(store, &mut out).await?;
    Ok(out)
}

/// A row of [`incident_page`]: the offline flip's id, check, time, message and confirmers,
/// then the id and time of the online flip that ended it.
type IncidentRow = (
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn incident_of(row: IncidentRow, now: i64) -> Incident {
    let (id, check, start, message, confirmed_by, end_event, end) = row;
    let flip = event((
        id,
        check,
        Some(start),
        Some("offline".into()),
        message,
        confirmed_by,
    ));
    let (message, confirmed_by) = flip.map_or((None, Vec::new()), |f| (f.message, f.confirmed_by));
    Incident {
        check: CheckId(check),
        id,
        start,
        end,
        duration: end.unwrap_or(now) - start,
        message,
        confirmed_by,
        end_event,
        notifications: Vec::new(),
    }
}

/// The incidents of the checks `ids`, newest first, without their notifications (a public
/// status page shows none).
pub async fn incidents_of(
    store: &Store,
    ids: &[i64],
    now: i64,
) -> Result<Vec<Incident>, StoreError> {
    Ok(incidents_in(&flips_of(store, ids).await?, false, now))
}

/// The incidents that `events` (by check, in time order) make, newest first.
fn incidents_in(events: &[FlipEvent], open_only: bool, now: i64) -> Vec<Incident> {
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
    out
}

/// Each incident's notifications (of its start and of its end).
async fn attach_notifications(store: &Store, out: &mut [Incident]) -> Result<(), StoreError> {
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
    for inc in out.iter_mut() {
        for e in std::iter::once(inc.id).chain(inc.end_event) {
            inc.notifications
                .extend(by_event.remove(&e).unwrap_or_default());
        }
    }
    Ok(())
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
