//! The SQL of result history (`result_history`, `result_rollups`, `history_cursor`), behind
//! typed functions. The arithmetic lives in [`crate::history`]; when to call what is the
//! controller's (`role/controller/history.rs`).
//!
//! Every write runs in a [`FencedTx`], so a deposed controller writes no history. Writes are
//! idempotent: raw rows are keyed by (check, time, worker) and inserted with `INSERT IGNORE`,
//! rollups are computed from the raw rows and replaced whole, so repeating any of them after
//! a commit whose answer was lost changes nothing.
//!
//! # Rolling up
//!
//! [`roll_up`] rolls up every complete hour from the cursor on: it reads the hour's raw rows
//! for [`CHECKS_PER_CHUNK`] checks at a time (`check_id IN (...)`, which uses the primary
//! key), folds them into one [`Rollup`] per check and location, and replaces those rows, one
//! fenced transaction per chunk. After the last hour of a UTC day it builds the day the same
//! way from the day's hourly rows. Then it moves the cursor past the hour, skipping hours
//! that have no raw rows. Results of a check deleted from `checks` are not rolled up.
//!
//! An hour is complete [`ROLLUP_GRACE`] after it ended: results are stamped when the
//! controller receives them and written within seconds, so later rows are rare (a batch
//! retried across a long database outage); they stay in the raw table but miss the rollup.
//!
//! # Pruning
//!
//! [`prune_raw`] deletes raw rows older than the retention, but never rows of an hour not
//! rolled up yet, [`PRUNE_BATCH`] rows per fenced transaction; the caller loops with pauses.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};

use super::fence::FencedTx;
use super::{Store, StoreError};
use crate::history::histogram::Histogram;
use crate::history::rollup::{DAY, HOUR, Latency, Outcome, Period, Rollup};
use crate::model::{CheckId, Epoch, NodeId};

/// Characters of a message kept (a `VARCHAR(1024)`).
const MESSAGE_CHARS: usize = 1024;
/// Raw rows per INSERT statement, and per transaction.
const ROWS_PER_STATEMENT: usize = 500;
const ROWS_PER_TX: usize = 2000;
/// Checks whose hour is rolled up in one read and one transaction.
pub const CHECKS_PER_CHUNK: usize = 500;
/// Raw rows deleted per transaction.
pub const PRUNE_BATCH: usize = 2000;
/// Seconds after an hour's end before it is rolled up.
pub const ROLLUP_GRACE: i64 = 300;

/// One result as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResult {
    pub check: CheckId,
    /// When the controller received it (Unix milliseconds).
    pub at_ms: i64,
    pub node: NodeId,
    /// The worker's location, or its node id when it has none.
    pub location: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// Kept for offline and fail results only.
    pub message: String,
}

/// Writes raw results, [`ROWS_PER_TX`] per fenced transaction (each holds the fence row, and
/// so holds up flips, only that long). A row already stored (same check, time and worker) is
/// left alone, so a batch written twice, or in part, adds nothing.
pub async fn write_raw(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    batch: &[RawResult],
) -> Result<(), StoreError> {
    for part in batch.chunks(ROWS_PER_TX) {
        write_raw_tx(store, epoch, node, part).await?;
    }
    Ok(())
}

async fn write_raw_tx(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    batch: &[RawResult],
) -> Result<(), StoreError> {
    store
        .bounded("writing result history", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                let mut sql = String::from(
                    "INSERT IGNORE INTO result_history \
                     (check_id, at_ms, node_id, location, status, duration_ms, message) VALUES ",
                );
                let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
                for (i, r) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
                    let message: String = if r.outcome == Outcome::Online {
                        String::new()
                    } else {
                        r.message.chars().take(MESSAGE_CHARS).collect()
                    };
                    let location: String = r.location.chars().take(64).collect();
                    params.extend([
                        r.check.0.into(),
                        r.at_ms.into(),
                        r.node.0.clone().into(),
                        location.into(),
                        r.outcome.as_str().into(),
                        r.duration_ms.min(i32::MAX as u64).into(),
                        message.into(),
                    ]);
                }
                tx.tx().exec_drop(sql, Params::Positional(params)).await?;
            }
            tx.commit().await
        })
        .await
}

/// A rollup as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub check: CheckId,
    pub location: String,
    pub period: Period,
    /// Unix seconds.
    pub start: i64,
    pub rollup: Rollup,
}

/// What one [`roll_up`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolledUp {
    pub hours: u32,
    pub days: u32,
    /// Rollup rows written (hours and days).
    pub rows: u64,
    /// The cursor afterwards: the first hour not rolled up (Unix seconds; 0: nothing yet).
    pub cursor: i64,
}

/// The first hour not rolled up yet (Unix seconds); 0 before the first roll-up.
pub async fn cursor(store: &Store) -> Result<i64, StoreError> {
    let mut conn = store.conn().await?;
    let c: Option<i64> = conn
        .query_first("SELECT rolled_to FROM history_cursor WHERE id = 1")
        .await?;
    c.ok_or_else(|| StoreError::Schema("history_cursor has no row 1: run install.sql".into()))
}

/// The hour of the first raw row at or after `from_ms`, if any.
async fn first_raw_hour(store: &Store, from_ms: i64) -> Result<Option<i64>, StoreError> {
    let mut conn = store.conn().await?;
    let first: Option<Option<i64>> = conn
        .exec_first(
            "SELECT MIN(at_ms) FROM result_history WHERE at_ms >= ?",
            (from_ms,),
        )
        .await?;
    Ok(first
        .flatten()
        .map(|ms| Period::Hour.start_of(ms.div_euclid(1000))))
}

/// Rolls up every hour that has been complete for [`ROLLUP_GRACE`] at `now` (Unix seconds),
/// from the cursor on, at most `max_hours` of them (a controller that was away for long
/// catches up over several calls). Safe to repeat.
pub async fn roll_up(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    now: i64,
    max_hours: u32,
) -> Result<RolledUp, StoreError> {
    let ready_until = Period::Hour.start_of(now - ROLLUP_GRACE);
    let mut done = RolledUp {
        cursor: cursor(store).await?,
        ..RolledUp::default()
    };
    while done.hours < max_hours {
        let Some(hour) = first_raw_hour(store, done.cursor * 1000).await? else {
            break;
        };
        let hour = hour.max(done.cursor);
        if hour + HOUR > ready_until {
            break;
        }
        done.rows += roll_period(store, epoch, node, Period::Hour, hour).await?;
        done.hours += 1;
        let next = first_raw_hour(store, (hour + HOUR) * 1000)
            .await?
            .map_or(ready_until, |h| h.min(ready_until));
        let day = Period::Day.start_of(hour);
        if day + DAY <= next {
            done.rows += roll_period(store, epoch, node, Period::Day, day).await?;
            done.days += 1;
        }
        set_cursor(store, epoch, node, next).await?;
        done.cursor = next;
    }
    if done.hours > 0 {
        refresh_latency(store, epoch, node, done.cursor).await?;
    }
    Ok(done)
}

/// Recomputes every check's latency over the 24 hours of hourly rollups before `end` (all
/// locations merged) into `check_latency`, a chunk of checks per fenced transaction, so that
/// a list of checks reads one row per check instead of 72. [`roll_up`] calls it after the
/// hours it rolled up.
pub async fn refresh_latency(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    end: i64,
) -> Result<(), StoreError> {
    let mut after = 0i64;
    loop {
        let ids = check_ids_after(store, after).await?;
        let Some(last) = ids.last() else {
            return Ok(());
        };
        after = *last;
        let mut merged: BTreeMap<i64, Latency> = BTreeMap::new();
        for r in read_rollups_of(store, &ids, Period::Hour, end - DAY, end, None).await? {
            merged
                .entry(r.check.0)
                .or_default()
                .merge(&r.rollup.latency);
        }
        store
            .bounded("writing the 24-hour latency", async {
                let mut tx = FencedTx::begin(store, epoch, node).await?;
                let mut sql = String::from(
                    "INSERT INTO check_latency (check_id, window_end, p50_ms, p95_ms, p99_ms) VALUES ",
                );
                let mut params: Vec<Value> = Vec::with_capacity(ids.len() * 5);
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str("(?, ?, ?, ?, ?)");
                    let l = merged.get(id);
                    let q = |p| l.and_then(|l| l.quantile_ms(p));
                    params.extend([
                        (*id).into(),
                        end.into(),
                        q(0.5).into(),
                        q(0.95).into(),
                        q(0.99).into(),
                    ]);
                }
                sql.push_str(
                    " ON DUPLICATE KEY UPDATE window_end = VALUES(window_end), p50_ms = VALUES(p50_ms), \
                     p95_ms = VALUES(p95_ms), p99_ms = VALUES(p99_ms)",
                );
                tx.tx().exec_drop(sql, Params::Positional(params)).await?;
                tx.commit().await
            })
            .await?;
    }
}

/// The latency of each of `ids` over the 24 hours before the last rollup, as
/// [`roll_up`] stored it: (end of that window, p50 in ms).
pub async fn latency_24h(
    store: &Store,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, (i64, Option<u64>)>, StoreError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let mut conn = store.conn().await?;
    let sql = format!(
        "SELECT check_id, window_end, p50_ms FROM check_latency WHERE check_id IN ({})",
        in_list(ids.len())
    );
    let params: Vec<Value> = ids.iter().map(|i| (*i).into()).collect();
    let rows: Vec<(i64, i64, Option<u64>)> = conn.exec(sql, Params::Positional(params)).await?;
    Ok(rows.into_iter().map(|(c, e, p)| (c, (e, p))).collect())
}

async fn set_cursor(store: &Store, epoch: Epoch, node: &NodeId, to: i64) -> Result<(), StoreError> {
    store
        .bounded("moving the history cursor", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            tx.tx()
                .exec_drop(
                    "UPDATE history_cursor SET rolled_to = GREATEST(rolled_to, ?) WHERE id = 1",
                    (to,),
                )
                .await?;
            tx.commit().await
        })
        .await
}

/// Builds the rollups of one hour (from raw rows) or one day (from its hourly rows) for every
/// check, a chunk of checks per transaction. Returns the rows written.
async fn roll_period(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    period: Period,
    start: i64,
) -> Result<u64, StoreError> {
    let mut after = 0i64;
    let mut rows = 0;
    loop {
        let ids = check_ids_after(store, after).await?;
        let Some(last) = ids.last() else {
            return Ok(rows);
        };
        after = *last;
        let folded = match period {
            Period::Hour => fold_raw(store, &ids, start).await?,
            Period::Day => fold_hours(store, &ids, start).await?,
        };
        rows += replace_rollups(store, epoch, node, &ids, period, start, folded).await?;
    }
}

/// Up to [`CHECKS_PER_CHUNK`] check ids above `after`, ascending.
async fn check_ids_after(store: &Store, after: i64) -> Result<Vec<i64>, StoreError> {
    let mut conn = store.conn().await?;
    Ok(conn
        .exec(
            format!("SELECT id FROM checks WHERE id > ? ORDER BY id LIMIT {CHECKS_PER_CHUNK}"),
            (after,),
        )
        .await?)
}

fn in_list(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

type Folded = BTreeMap<(i64, String), Rollup>;

/// The hour's raw rows of `ids`, folded per check and location.
async fn fold_raw(store: &Store, ids: &[i64], hour: i64) -> Result<Folded, StoreError> {
    let mut conn = store.conn().await?;
    let sql = format!(
        "SELECT check_id, location, status, duration_ms FROM result_history \
         WHERE check_id IN ({}) AND at_ms >= ? AND at_ms < ?",
        in_list(ids.len())
    );
    let mut params: Vec<Value> = ids.iter().map(|i| (*i).into()).collect();
    params.push((hour * 1000).into());
    params.push(((hour + HOUR) * 1000).into());
    let mut folded = Folded::new();
    let mut result = conn.exec_iter(sql, Params::Positional(params)).await?;
    result
        .for_each(|row| {
            let (check, location, status, duration): (i64, String, String, u64) =
                mysql_async::from_row(row);
            let outcome = Outcome::parse(&status).unwrap_or(Outcome::Fail);
            folded
                .entry((check, location))
                .or_default()
                .record(outcome, duration);
        })
        .await?;
    Ok(folded)
}

/// The day's hourly rollups of `ids`, merged per check and location.
async fn fold_hours(store: &Store, ids: &[i64], day: i64) -> Result<Folded, StoreError> {
    let mut folded = Folded::new();
    for row in read_rollups_of(store, ids, Period::Hour, day, day + DAY, None).await? {
        folded
            .entry((row.check.0, row.location.clone()))
            .or_default()
            .merge(&row.rollup);
    }
    Ok(folded)
}

/// Replaces the rollups of `ids` for one period with `folded`, in one fenced transaction
/// (rows of a check and location that has none now are deleted).
async fn replace_rollups(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    ids: &[i64],
    period: Period,
    start: i64,
    folded: Folded,
) -> Result<u64, StoreError> {
    store
        .bounded("writing rollups", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            let mut params: Vec<Value> = vec![period.as_str().into(), start.into()];
            params.extend(ids.iter().map(|i| Value::from(*i)));
            tx.tx()
                .exec_drop(
                    format!(
                        "DELETE FROM result_rollups WHERE period = ? AND period_start = ? \
                         AND check_id IN ({})",
                        in_list(ids.len())
                    ),
                    Params::Positional(params),
                )
                .await?;
            let rows: Vec<((i64, String), Rollup)> = folded.into_iter().collect();
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                insert_rollups(&mut tx, period, start, chunk).await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        })
        .await
}

async fn insert_rollups(
    tx: &mut FencedTx,
    period: Period,
    start: i64,
    rows: &[((i64, String), Rollup)],
) -> Result<(), StoreError> {
    let mut sql = String::from(
        "INSERT INTO result_rollups (check_id, location, period, period_start, online, offline, \
         fail, latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, histogram) VALUES ",
    );
    let mut params: Vec<Value> = Vec::with_capacity(rows.len() * 12);
    for (i, ((check, location), r)) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let l = &r.latency;
        params.extend([
            (*check).into(),
            location.as_str().into(),
            period.as_str().into(),
            start.into(),
            r.online.into(),
            r.offline.into(),
            r.fail.into(),
            l.count.into(),
            l.sum_ms.into(),
            l.min_ms.min(u32::MAX as u64).into(),
            l.max_ms.min(u32::MAX as u64).into(),
            l.histogram.encode().into(),
        ]);
    }
    tx.tx().exec_drop(sql, Params::Positional(params)).await?;
    Ok(())
}

/// Rollups of `period` with `from <= period_start < to` for the checks `ids`, optionally of
/// one location, in (check, start, location) order.
pub async fn read_rollups_of(
    store: &Store,
    ids: &[i64],
    period: Period,
    from: i64,
    to: i64,
    location: Option<&str>,
) -> Result<Vec<RollupRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = store.conn().await?;
    let mut sql = format!(
        "SELECT check_id, location, period_start, online, offline, fail, latency_count, \
         latency_sum_ms, latency_min_ms, latency_max_ms, histogram FROM result_rollups \
         WHERE check_id IN ({}) AND period = ? AND period_start >= ? AND period_start < ?",
        in_list(ids.len())
    );
    let mut params: Vec<Value> = ids.iter().map(|i| (*i).into()).collect();
    params.extend([period.as_str().into(), from.into(), to.into()]);
    if let Some(l) = location {
        sql.push_str(" AND location = ?");
        params.push(l.into());
    }
    sql.push_str(" ORDER BY check_id, period_start, location");
    let rows: Vec<mysql_async::Row> = conn.exec(sql, Params::Positional(params)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(rollup_row(row, period)?);
    }
    Ok(out)
}

fn rollup_row(row: mysql_async::Row, period: Period) -> Result<RollupRow, StoreError> {
    type Cols = (i64, String, i64, u64, u64, u64, u64, u64, u64, u64, String);
    let (check, location, start, online, offline, fail, count, sum, min, max, hist): Cols =
        mysql_async::from_row_opt(row)
            .map_err(|e| StoreError::Schema(format!("result_rollups row: {e}")))?;
    let histogram = Histogram::decode(&hist)
        .map_err(|e| StoreError::Schema(format!("result_rollups of check {check}: {e}")))?;
    Ok(RollupRow {
        check: CheckId(check),
        location,
        period,
        start,
        rollup: Rollup {
            online,
            offline,
            fail,
            latency: Latency {
                count,
                sum_ms: sum,
                min_ms: min,
                max_ms: max,
                histogram,
            },
        },
    })
}

/// Deletes up to [`PRUNE_BATCH`] raw rows older than `before_ms` and older than the first
/// hour not rolled up, in one fenced transaction. Returns how many it deleted; the caller
/// calls again (after a pause) while that is a full batch.
pub async fn prune_raw(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    before_ms: i64,
) -> Result<u64, StoreError> {
    let rolled = cursor(store).await?;
    let cutoff = before_ms.min(rolled * 1000);
    prune(
        store,
        epoch,
        node,
        format!("DELETE FROM result_history WHERE at_ms < ? LIMIT {PRUNE_BATCH}"),
        cutoff,
    )
    .await
}

/// Deletes up to [`PRUNE_BATCH`] rollups of `period` that started before `before` (Unix
/// seconds), in one fenced transaction.
pub async fn prune_rollups(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    period: Period,
    before: i64,
) -> Result<u64, StoreError> {
    prune(
        store,
        epoch,
        node,
        format!(
            "DELETE FROM result_rollups WHERE period = '{}' AND period_start < ? LIMIT {PRUNE_BATCH}",
            period.as_str()
        ),
        before,
    )
    .await
}

async fn prune(
    store: &Store,
    epoch: Epoch,
    node: &NodeId,
    sql: String,
    before: i64,
) -> Result<u64, StoreError> {
    store
        .bounded("pruning history", async {
            let mut tx = FencedTx::begin(store, epoch, node).await?;
            tx.tx().exec_drop(sql, (before,)).await?;
            let n = tx.tx().affected_rows();
            tx.commit().await?;
            Ok(n)
        })
        .await
}
