//! The SQL of alert policy ([`crate::policy`]): which checks have policy rows, the durable
//! state the rules read, the outbox rows they decide (written under the fence), and
//! acknowledgements (`gobearmon ack`).

use std::collections::{HashMap, HashSet};

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};

use super::fence::FencedTx;
use super::{Store, StoreError};
use crate::model::{CheckId, CheckStatus, ContactId, Epoch, NodeId};
use crate::notify::{EventId, Notification};
use crate::policy::deps::Graph;
use crate::policy::flap::{self, FlapRule};
use crate::policy::windows::{Window, parse_offset};
use crate::policy::{Alert, CheckState, Dependency, Event, Flapping, Selects, Send};

/// The SQL condition "check `c.id` has policy rows".
const HAS_POLICY: &str = "(EXISTS (SELECT 1 FROM alerts a WHERE a.check_id = c.id AND a.enabled = 1 \
       AND (a.`after` > 0 OR a.remind_every IS NOT NULL)) \
     OR EXISTS (SELECT 1 FROM maintenance m WHERE m.check_id = c.id OR m.check_id IS NULL) \
     OR EXISTS (SELECT 1 FROM check_dependencies d WHERE d.check_id = c.id OR d.depends_on = c.id) \
     OR EXISTS (SELECT 1 FROM notification_outbox o WHERE o.state = 'held' AND o.held_until IS NULL \
       AND o.check_id = c.id))";

/// The ids of the checks with policy rows, as a set (one pass per table: the per-check
/// `EXISTS` of [`HAS_POLICY`] over every check took a minute at 10,000 checks, since MariaDB
/// runs a disjunction of correlated subqueries row by row; this takes 0.1 s).
const POLICY_IDS: &str = "SELECT check_id AS id FROM alerts \
       WHERE enabled = 1 AND (`after` > 0 OR remind_every IS NOT NULL) \
     UNION SELECT check_id FROM maintenance WHERE check_id IS NOT NULL \
     UNION SELECT c2.id FROM checks c2 WHERE EXISTS (SELECT 1 FROM maintenance WHERE check_id IS NULL) \
     UNION SELECT check_id FROM check_dependencies \
     UNION SELECT depends_on FROM check_dependencies \
     UNION SELECT check_id FROM notification_outbox WHERE state = 'held' AND held_until IS NULL";

/// Whether the flips of `check` go through the policy task instead of straight to the outbox.
pub async fn has_policy(tx: &mut FencedTx, check: CheckId) -> Result<bool, StoreError> {
    let n: Option<i64> = tx
        .tx()
        .exec_first(
            format!("SELECT COUNT(*) FROM checks c WHERE c.id = ? AND {HAS_POLICY}"),
            (check.0,),
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}

/// `check_events` (id, type, time in ms, message, confirmed_by).
type EventRow = (i64, String, i64, Option<String>, Option<String>);
/// `alerts` (contact_id, type, after, remind_every).
type AlertRow = (i64, Option<String>, Option<i32>, Option<i32>);

/// One check's policy inputs, with what its notices are built from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub check: CheckId,
    pub state: CheckState,
    name: String,
    check_type: String,
    data: String,
    /// (message, confirmed_by) of the latest event.
    message: String,
    confirmed_by: String,
    /// Maintenance rows that could not be read, described.
    pub bad_windows: Vec<String>,
    /// `flap_window` (for the flapping messages' text).
    flap_window_ms: i64,
    /// The names of the offline checks that depend on this one (listed in its offline
    /// messages as "also affected").
    pub also_affected: Vec<String>,
    /// Every outbox row of the events read, with its state and reason (held and dropped rows
    /// included, unlike `state.written`).
    pub recorded: HashMap<(i64, ContactId, u32), (String, Option<String>)>,
    /// Loaded only as a flapping candidate (no policy rows).
    pub flap_only: bool,
}

/// What one round of the policy task reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub checks: Vec<Loaded>,
    /// `check_dependencies` rows refused (self-loops, unknown checks, cycles), described.
    pub refused: Vec<String>,
    /// Events whose rows this task holds though the check flipped since: they are dropped.
    pub superseded: Vec<i64>,
    /// Flapping candidates whose latest flip (the event given) is not suppressed: no longer
    /// candidates.
    pub not_flapping: Vec<(CheckId, i64)>,
}

/// The database's clock, ms since the Unix epoch.
pub async fn now_ms(store: &Store) -> Result<i64, StoreError> {
    let now: Option<i64> = store
        .conn()
        .await?
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
        .await?;
    Ok(now.unwrap_or(0))
}

/// Reads the policy state of every check with policy rows; maintenance windows are resolved
/// around `now`.
/// Also reads the checks without policy rows whose latest flip is suppressed as flapping
/// (`rule`): their flips since then were left to this task ([`flapping`]).
pub async fn load(store: &Store, now: i64, rule: FlapRule) -> Result<Snapshot, StoreError> {
    store
        .bounded("reading alert policy", async {
            let mut conn = store.conn().await?;
            // Flapping candidates: the checks whose flip the flip path found suppressed
            // (`flapping_checks`), until this task has told their state once stable.
            let checks: Vec<CheckRow> = conn
                .query(format!(
                    "SELECT c.id, c.name, c.type, c.data, p.id IS NOT NULL FROM checks c \
                     LEFT JOIN ({POLICY_IDS}) p ON p.id = c.id \
                     LEFT JOIN flapping_checks f ON f.check_id = c.id \
                     WHERE p.id IS NOT NULL OR f.check_id IS NOT NULL"
                ))
                .await?;
            let mut out = Vec::with_capacity(checks.len());
            let mut not_flapping = Vec::new();
            for row in checks {
                match load_check(&mut conn, row, now, rule).await? {
                    Ok(loaded) => out.push(loaded),
                    Err(stale) => not_flapping.extend(stale),
                }
            }
            let refused = dependencies(&mut conn, &mut out).await?;
            let superseded = superseded(&mut conn, &out).await?;
            Ok(Snapshot {
                checks: out,
                refused,
                superseded,
                not_flapping,
            })
        })
        .await
}

/// `checks` (id, name, type, data, has policy rows).
type CheckRow = (i64, String, String, String, bool);

/// One check's policy state; `Err` with its latest flip for a flapping candidate that no
/// longer flaps (the flap rule changed, or a flip after the run): nothing to load.
async fn load_check(
    conn: &mut mysql_async::Conn,
    (id, name, check_type, data, has_policy): CheckRow,
    now: i64,
    rule: FlapRule,
) -> Result<Result<Loaded, Option<(CheckId, i64)>>, StoreError> {
    let events: Vec<EventRow> = conn
        .exec(
            format!(
                "SELECT id, type, CAST(UNIX_TIMESTAMP(time) * 1000 AS SIGNED), message, confirmed_by \
                 FROM check_events WHERE check_id = ? ORDER BY id DESC LIMIT {}",
                flap::EVENTS
            ),
            (id,),
        )
        .await?;
    let ev = |e: &EventRow| Event {
        id: e.0,
        offline: e.1 == "offline",
        time_ms: e.2,
    };
    let latest = events.first().map(ev);
    let previous = events.get(1).map(ev);
    let oldest_first: Vec<Event> = events.iter().rev().map(ev).collect();
    let flapping = flap_state(&oldest_first, rule);
    if !has_policy && flapping.latest.is_none() {
        return Ok(Err(latest.map(|l| (CheckId(id), l.id))));
    }
    let alerts = alerts_of(conn, id).await?;
    let from = previous
        .or(latest)
        .map_or(now, |e| e.time_ms.min(now))
        .saturating_sub(86_400_000);
    let (maintenance, bad_windows) = maintenance_of(conn, id, from, now).await?;
    let mut acked = false;
    let mut rows = Rows::default();
    if let Some(l) = latest {
        let a: Option<i64> = conn
            .exec_first(
                "SELECT event_id FROM incident_acks WHERE event_id = ?",
                (l.id,),
            )
            .await?;
        acked = a.is_some();
        let mut ids: Vec<i64> = events.iter().take(2).map(|e| e.0).collect();
        ids.extend(flapping.latest.and_then(|ep| ep.trigger));
        rows = outbox_rows(conn, &ids).await?;
    }
    let (message, confirmed_by) = events
        .first()
        .map(|e| {
            (
                e.3.clone().unwrap_or_default(),
                e.4.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    Ok(Ok(Loaded {
        check: CheckId(id),
        state: CheckState {
            latest,
            previous,
            alerts,
            maintenance,
            acked,
            written: rows.written,
            deps: Dependency::default(),
            flap: flapping,
        },
        name,
        check_type,
        data,
        message,
        confirmed_by,
        bad_windows,
        also_affected: Vec::new(),
        recorded: rows.recorded,
        flap_only: !has_policy,
        flap_window_ms: rule.window_ms,
    }))
}

/// The check's enabled alerts.
async fn alerts_of(conn: &mut mysql_async::Conn, id: i64) -> Result<Vec<Alert>, StoreError> {
    let alerts: Vec<AlertRow> = conn
        .exec(
            "SELECT contact_id, type, `after`, remind_every FROM alerts \
             WHERE check_id = ? AND enabled = 1 ORDER BY id",
            (id,),
        )
        .await?;
    Ok(alerts
        .into_iter()
        .map(|(c, t, after, every)| Alert {
            contact: ContactId(c),
            selects: Selects::parse(t.as_deref().unwrap_or("both")),
            after_ms: after.map(|s| i64::from(s) * 1000),
            remind_every_ms: every.map(|s| i64::from(s) * 1000),
        })
        .collect())
}

/// `maintenance` (check_id or id, starts_at ms, ends_at ms, weekday, start_time s, duration,
/// time_zone).
type WindowRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<i64>,
    Option<i32>,
    String,
);

/// The columns of [`WindowRow`] after the first.
const WINDOW_COLUMNS: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01', starts_at) DIV 1000, \
     TIMESTAMPDIFF(MICROSECOND, '1970-01-01', ends_at) DIV 1000, \
     weekday, TIME_TO_SEC(start_time), duration, time_zone";

/// The maintenance intervals covering check `id` between `from` and `now`, and the rows that
/// cannot be read, described.
async fn maintenance_of(
    conn: &mut mysql_async::Conn,
    id: i64,
    from: i64,
    now: i64,
) -> Result<(Vec<(i64, i64)>, Vec<String>), StoreError> {
    let rows: Vec<WindowRow> = conn
        .exec(
            format!(
                "SELECT id, {WINDOW_COLUMNS} FROM maintenance WHERE check_id = ? OR check_id IS NULL"
            ),
            (id,),
        )
        .await?;
    let mut maintenance = Vec::new();
    let mut bad = Vec::new();
    for (mid, start, end, weekday, start_s, duration, tz) in rows {
        match window(start, end, weekday, start_s, duration, &tz) {
            Ok(w) => maintenance.extend(w.intervals(from, now + 1)),
            Err(e) => bad.push(format!("maintenance row {}: {e}", mid.unwrap_or(0))),
        }
    }
    Ok((maintenance, bad))
}

/// The outbox rows of some events: the sends (`written`) and every row with its state and
/// reason (`recorded`).
#[derive(Default)]
struct Rows {
    written: HashSet<(i64, ContactId, u32)>,
    recorded: HashMap<(i64, ContactId, u32), (String, Option<String>)>,
}

async fn outbox_rows(conn: &mut mysql_async::Conn, events: &[i64]) -> Result<Rows, StoreError> {
    let placeholders = vec!["?"; events.len()].join(",");
    type RecordedRow = (i64, i64, i32, String, Option<String>, bool);
    let found: Vec<RecordedRow> = conn
        .exec(
            format!(
                "SELECT event_id, contact_id, slot, CAST(state AS CHAR), reason, \
                   held_until IS NULL FROM notification_outbox WHERE event_id IN ({placeholders})"
            ),
            Params::Positional(events.iter().map(|&i| Value::from(i)).collect()),
        )
        .await?;
    let mut rows = Rows::default();
    for (e, c, s, state, reason, unbounded) in found {
        let key = (e, ContactId(c), s.max(0) as u32);
        // A row this task holds or dropped is a decision, not a send.
        if !(state == "dropped" || state == "held" && unbounded) {
            rows.written.insert(key);
        }
        rows.recorded.insert(key, (state, reason));
    }
    Ok(rows)
}

/// The events whose rows this task holds though their check flipped since (a held row of a
/// check not loaded is left alone: its check was deleted, or the next round loads it).
async fn superseded(
    conn: &mut mysql_async::Conn,
    loaded: &[Loaded],
) -> Result<Vec<i64>, StoreError> {
    let held: Vec<(i64, i64)> = conn
        .query(
            "SELECT DISTINCT check_id, event_id FROM notification_outbox \
             WHERE state = 'held' AND held_until IS NULL",
        )
        .await?;
    let latest: HashMap<i64, i64> = loaded
        .iter()
        .filter_map(|l| Some((l.check.0, l.state.latest?.id)))
        .collect();
    Ok(held
        .into_iter()
        .filter(|(c, e)| latest.get(c).is_some_and(|l| l != e))
        .map(|(_, e)| e)
        .collect())
}

/// The flapping of the latest of `events` (oldest first; the newest [`flap::EVENTS`]).
fn flap_state(events: &[Event], rule: FlapRule) -> Flapping {
    let truncated = events.len() >= flap::EVENTS;
    let flags = flap::suppressed(events, rule, truncated);
    Flapping {
        latest: flap::episode(events, rule, truncated),
        previous: flags.len() >= 2 && flags[flags.len() - 2],
    }
}

/// Whether the latest flip of `check` (just written in `tx`) is suppressed as flapping: then
/// the policy task notifies it, not the flip's transaction, and `flapping_checks` names the
/// check (with that flip) until the policy task has told its state once stable.
pub async fn flapping(
    tx: &mut FencedTx,
    check: CheckId,
    rule: FlapRule,
) -> Result<bool, StoreError> {
    let rows: Vec<(i64, String, i64)> = tx
        .tx()
        .exec(
            format!(
                "SELECT id, type, CAST(UNIX_TIMESTAMP(time) * 1000 AS SIGNED) FROM check_events \
                 WHERE check_id = ? ORDER BY id DESC LIMIT {}",
                flap::EVENTS
            ),
            (check.0,),
        )
        .await?;
    let events: Vec<Event> = rows
        .iter()
        .rev()
        .map(|(id, t, ms)| Event {
            id: *id,
            offline: t == "offline",
            time_ms: *ms,
        })
        .collect();
    let suppressed = flap_state(&events, rule).latest.is_some();
    if let (true, Some(latest)) = (suppressed, events.last()) {
        tx.tx()
            .exec_drop(
                "INSERT INTO flapping_checks (check_id, event_id) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE event_id = VALUES(event_id)",
                (check.0, latest.id),
            )
            .await?;
    }
    Ok(suppressed)
}

/// Reads `check_dependencies` and sets each loaded check's place in the graph (every check
/// with a row is loaded: it has policy rows). Returns the refused rows, described.
async fn dependencies(
    conn: &mut mysql_async::Conn,
    checks: &mut [Loaded],
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(i64, i64, bool, bool)> = conn
        .query(
            "SELECT d.check_id, d.depends_on, \
               EXISTS (SELECT 1 FROM checks c WHERE c.id = d.check_id), \
               EXISTS (SELECT 1 FROM checks c WHERE c.id = d.depends_on) \
             FROM check_dependencies d",
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut known = HashSet::new();
    for &(a, b, a_exists, b_exists) in &rows {
        if a_exists {
            known.insert(a);
        }
        if b_exists {
            known.insert(b);
        }
    }
    let edges: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    let (graph, problems) = Graph::build(&edges, &known);
    let offline: HashSet<i64> = checks
        .iter()
        .filter(|l| l.state.latest.is_some_and(|e| e.offline))
        .map(|l| l.check.0)
        .collect();
    let names: HashMap<i64, String> = checks.iter().map(|l| (l.check.0, l.name.clone())).collect();
    let is_offline = |c: i64| offline.contains(&c);
    for l in checks.iter_mut() {
        let id = l.check.0;
        l.state.deps = Dependency {
            grace: graph.contains(id),
            parent_offline: graph.parent_offline(id, &is_offline),
        };
        l.also_affected = graph
            .affected(id, &is_offline)
            .into_iter()
            .map(|c| {
                names
                    .get(&c)
                    .cloned()
                    .unwrap_or_else(|| format!("check {c}"))
            })
            .collect();
    }
    Ok(problems.iter().map(ToString::to_string).collect())
}

fn window(
    start: Option<i64>,
    end: Option<i64>,
    weekday: Option<i32>,
    start_s: Option<i64>,
    duration: Option<i32>,
    tz: &str,
) -> Result<Window, String> {
    match (start, end, weekday) {
        (Some(start_ms), Some(end_ms), None) => Ok(Window::Once { start_ms, end_ms }),
        (None, None, Some(day)) => {
            if !(1..=7).contains(&day) {
                return Err(format!("weekday {day} is not 1 (Monday) to 7 (Sunday)"));
            }
            let duration = duration
                .filter(|&d| d > 0)
                .ok_or("a weekly window needs duration > 0")?;
            Ok(Window::Weekly {
                weekday: day as u8,
                start_s: start_s.unwrap_or(0),
                duration_s: i64::from(duration),
                offset_s: parse_offset(tz)?,
            })
        }
        _ => Err("set either starts_at and ends_at, or weekday (with start_time, duration)".into()),
    }
}

/// `ms` as `1h02m03s`.
fn format_duration(ms: i64) -> String {
    let d = (ms / 1000).max(0);
    format!("{}h{:02}m{:02}s", d / 3600, d / 60 % 60, d % 60)
}

/// The notification of `send` for `loaded`'s latest event: its flip notice, or a reminder
/// ("still offline since T, for D").
pub fn notification(loaded: &Loaded, send: &Send, now: i64) -> Notification {
    let latest = loaded.state.latest.unwrap_or(Event {
        id: send.event,
        offline: true,
        time_ms: now,
    });
    let (old_status, new_status) = if latest.offline {
        (CheckStatus::Online, CheckStatus::Offline)
    } else {
        (CheckStatus::Offline, CheckStatus::Online)
    };
    let mut message = loaded.message.clone();
    let window = format_duration(loaded.flap_window_ms);
    if send.slot == flap::FLAP_SLOT {
        message = format!(
            "flapping: it flips too often; no flip notifications until it has been stable for \
             {window} (now {}): {message}",
            new_status.as_str()
        );
    } else if send.slot == 0 && loaded.state.flap.latest.is_some() {
        message = format!(
            "stable for {window} after flapping, now {}: {message}",
            new_status.as_str()
        );
    } else if send.slot > 0 {
        let since = time::OffsetDateTime::from_unix_timestamp(latest.time_ms / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let d = format_duration(now - latest.time_ms);
        message = format!(
            "still offline since {since}, for {d} (reminder {}): {message}",
            send.slot
        );
    }
    if latest.offline && !loaded.also_affected.is_empty() {
        message = format!(
            "{message} (also affected: {})",
            loaded.also_affected.join(", ")
        );
    }
    Notification {
        event_id: EventId(send.event),
        check_id: loaded.check,
        name: loaded.name.clone(),
        check_type: loaded.check_type.clone(),
        data: loaded.data.clone(),
        old_status,
        new_status,
        message,
        time_ms: latest.time_ms,
        confirmed_by: loaded
            .confirmed_by
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| NodeId(s.to_string()))
            .collect(),
        test: false,
        reminder: send.slot,
        folded: Vec::new(),
    }
}

/// One outbox row the policy task writes: a send (`pending`), or a decision not to send
/// (`held` until a rule lets it go, `dropped` for good), with its reason.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub send: Send,
    pub notification: Notification,
    pub state: &'static str,
    pub reason: Option<String>,
}

/// Rows this task holds: `held` without `held_until` (storm control's holds have one).
const OWN_HOLD: &str = "state = 'held' AND held_until IS NULL";

/// Writes `rows` under the fence, and drops the held rows of `superseded` events (the check
/// flipped again before they were sent). A send turns a row this task held into `pending`
/// (its reason kept, prefixed "sent after hold"); a decision changes only a row this task
/// holds; other existing rows are left alone. Returns how many sends became pending.
pub async fn write(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    rows: &[PolicyRow],
    superseded: &[i64],
    unflap: &[(CheckId, i64)],
) -> Result<u64, StoreError> {
    if rows.is_empty() && superseded.is_empty() && unflap.is_empty() {
        return Ok(0);
    }
    store
        .bounded("writing policy sends", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            let mut added = 0;
            if !superseded.is_empty() {
                let list = superseded
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                tx.tx()
                    .query_drop(format!(
                        "UPDATE notification_outbox SET reason = CONCAT('dropped: the check \
                         changed again before it was sent (', COALESCE(reason, 'held'), ')'), \
                         state = 'dropped' WHERE {OWN_HOLD} AND event_id IN ({list})"
                    ))
                    .await?;
            }
            for (check, event) in unflap {
                // Only if no later flip named the check again meanwhile.
                tx.tx()
                    .exec_drop(
                        "DELETE FROM flapping_checks WHERE check_id = ? AND event_id = ?",
                        (check.0, event),
                    )
                    .await?;
            }
            for row in rows {
                let payload = serde_json::to_string(&row.notification).map_err(|e| {
                    StoreError::Schema(format!("notification cannot be serialized: {e}"))
                })?;
                let s = &row.send;
                let t = tx.tx();
                // MariaDB assigns left to right: `state` last, so the others see the old one.
                let sql = if row.state == "pending" {
                    format!(
                        "INSERT INTO notification_outbox \
                           (event_id, check_id, contact_id, slot, payload, reason) \
                         VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                           payload = IF({OWN_HOLD}, VALUES(payload), payload), \
                           reason = IF({OWN_HOLD}, CONCAT('sent after hold: ', \
                             COALESCE(reason, '')), reason), \
                           next_attempt_at = IF({OWN_HOLD}, NOW(3), next_attempt_at), \
                           state = IF({OWN_HOLD}, 'pending', state)"
                    )
                } else {
                    format!(
                        "INSERT INTO notification_outbox \
                           (event_id, check_id, contact_id, slot, payload, reason, state, \
                            next_attempt_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, '2037-12-31') ON DUPLICATE KEY UPDATE \
                           reason = IF({OWN_HOLD}, VALUES(reason), reason), \
                           state = IF({OWN_HOLD}, VALUES(state), state)"
                    )
                };
                let mut params: Vec<Value> = vec![
                    s.event.into(),
                    row.notification.check_id.0.into(),
                    s.contact.0.into(),
                    s.slot.into(),
                    payload.into(),
                    row.reason.clone().into(),
                ];
                if row.state != "pending" {
                    params.push(row.state.into());
                }
                t.exec_drop(sql, Params::Positional(params)).await?;
                if row.state == "pending" && t.affected_rows() > 0 {
                    added += 1;
                }
            }
            tx.commit().await?;
            Ok(added)
        })
        .await
}

/// What `gobearmon ack` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// Recorded for the incident that began with `event`.
    Recorded { event: i64 },
    /// The incident was acknowledged already, by `by`.
    Already { event: i64, by: String },
    /// The incident named is no longer the open one: it ended, and `open` (if any) is the
    /// incident open now. Nothing was recorded.
    Stale { event: i64, open: Option<i64> },
    /// The check is not offline: no open incident.
    NoIncident,
    /// No such check.
    NoCheck,
}

/// Records that `by` acknowledged `check`'s open incident: the one that began with `event`
/// when it is given (refused as [`Acked::Stale`] unless that incident is still the open one),
/// else whichever is open now.
pub async fn ack(
    store: &Store,
    check: CheckId,
    event: Option<i64>,
    by: &str,
    comment: &str,
) -> Result<Acked, StoreError> {
    let mut conn = store.conn().await?;
    let exists: Option<i32> = conn
        .exec_first("SELECT id FROM checks WHERE id = ?", (check.0,))
        .await?;
    if exists.is_none() {
        return Ok(Acked::NoCheck);
    }
    let latest: Option<(i64, String)> = conn
        .exec_first(
            "SELECT id, type FROM check_events WHERE check_id = ? ORDER BY id DESC LIMIT 1",
            (check.0,),
        )
        .await?;
    let open = latest.filter(|(_, t)| t == "offline").map(|(id, _)| id);
    let event = match (event, open) {
        (Some(named), open) if open != Some(named) => {
            return Ok(Acked::Stale { event: named, open });
        }
        (_, Some(open)) => open,
        (_, None) => return Ok(Acked::NoIncident),
    };
    let by: String = by.chars().take(64).collect();
    let comment: String = comment.chars().take(1024).collect();
    // Recorded only while `event` is still the check's latest event: a flip written between
    // the read above and this insert makes it stale, not an acknowledgement of the wrong
    // incident's escalation.
    conn.exec_drop(
        "INSERT IGNORE INTO incident_acks (event_id, check_id, acked_by, comment) \
         SELECT ?, ?, ?, ? FROM DUAL WHERE ? = (SELECT MAX(id) FROM check_events \
         WHERE check_id = ?)",
        (event, check.0, &by, comment, event, check.0),
    )
    .await?;
    if conn.affected_rows() == 1 {
        return Ok(Acked::Recorded { event });
    }
    let who: Option<String> = conn
        .exec_first(
            "SELECT acked_by FROM incident_acks WHERE event_id = ?",
            (event,),
        )
        .await?;
    Ok(match who {
        Some(by) => Acked::Already { event, by },
        None => Acked::Stale { event, open: None },
    })
}

/// Every readable `maintenance` row with its check (`None`: every check); rows that cannot be
/// read are left out (the policy task tells the admin of them).
pub async fn windows(store: &Store) -> Result<Vec<(Option<i64>, Window)>, StoreError> {
    let rows: Vec<WindowRow> = store
        .conn()
        .await?
        .query(format!(
            "SELECT check_id, {WINDOW_COLUMNS} FROM maintenance"
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(c, s, e, d, st, dur, tz)| Some((c, window(s, e, d, st, dur, &tz).ok()?)))
        .collect())
}
