//! The endpoints of API v1 and their JSON shapes (see `openapi.v1.json`).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ApiError, Web};
use crate::history::rollup::{DAY, Latency, Period, Rollup};
use crate::history::uptime::Uptime;
use crate::history::{rfc3339, rfc3339_ms};
use crate::model::CheckId;
use crate::notify::unix_ms;
use crate::store::history::latency_24h;
use crate::store::timeline::{self, CheckInfo, LatestRow, NotificationState};

type Answer<T> = Result<Json<T>, ApiError>;

/// Items per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// The most steps one `results?step=` answer may have.
const MAX_STEPS: i64 = 10_000;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/api/v1/checks", get(list_checks))
        .route("/api/v1/checks/{id}", get(one_check))
        .route("/api/v1/checks/{id}/results", get(results))
        .route("/api/v1/checks/{id}/uptime", get(uptime))
        .route("/api/v1/checks/{id}/incidents", get(check_incidents))
        .route("/api/v1/incidents", get(all_incidents))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/notifications", get(notifications))
}

pub(super) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(v, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: expected an RFC 3339 time like 2026-01-05T10:00:00Z, found {v:?}"
            ))
        })
}

/// `from` and `to` (default: the 24 hours before now).
fn window(from: Option<&str>, to: Option<&str>, now: i64) -> Result<(i64, i64), ApiError> {
    let to = to.map(|v| parse_time("to", v)).transpose()?.unwrap_or(now);
    let from = from
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - DAY);
    if from >= to {
        return Err(ApiError::bad_request("from: must be before to"));
    }
    Ok((from, to))
}

fn limit(l: Option<usize>) -> Result<usize, ApiError> {
    match l.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(format!(
            "limit: expected 1 to {MAX_LIMIT}, found {n}"
        ))),
    }
}

fn cursor_i64(c: Option<&str>) -> Result<Option<i64>, ApiError> {
    c.map(|c| {
        c.parse()
            .map_err(|_| ApiError::bad_request("cursor: not a cursor this API returned"))
    })
    .transpose()
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(super) struct UptimeRatio {
    /// Up seconds over covered seconds; `null` when nothing is covered.
    pub(super) ratio: Option<f64>,
    /// Whether history covers the whole window.
    pub(super) complete: bool,
}

#[derive(Serialize)]
pub(super) struct LastResult {
    pub(super) location: String,
    pub(super) worker: String,
    pub(super) status: &'static str,
    pub(super) time: String,
    pub(super) duration_ms: u64,
    pub(super) message: String,
}

#[derive(Serialize)]
pub(super) struct CheckSummary {
    pub(super) id: i64,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) check_type: String,
    pub(super) enabled: bool,
    pub(super) status: &'static str,
    pub(super) uptime: BTreeMap<&'static str, UptimeRatio>,
    pub(super) latency_p50_ms_24h: Option<u64>,
    pub(super) last_results: Vec<LastResult>,
    /// One check's answer only: what the acting controller holds now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) live: Option<Live>,
}

/// A check as the acting controller holds it this instant.
#[derive(Serialize)]
pub(super) struct Live {
    /// The workers asked to confirm a differing result in the open round.
    pub(super) open_round: Vec<String>,
    pub(super) rounds_completed: u32,
    pub(super) confirmations: u32,
    pub(super) insufficient_quorum: bool,
    /// Workers running the check now.
    pub(super) in_flight: Vec<String>,
    /// The latest result the controller holds from each worker.
    pub(super) results: Vec<LiveResult>,
}

#[derive(Serialize)]
pub(super) struct LiveResult {
    pub(super) worker: String,
    pub(super) result: String,
    pub(super) age_seconds: f64,
}

#[derive(Serialize)]
struct CheckList {
    checks: Vec<CheckSummary>,
    next_cursor: Option<String>,
}

const UPTIME_WINDOWS: [(&str, i64); 4] = [
    ("24h", DAY),
    ("7d", 7 * DAY),
    ("30d", 30 * DAY),
    ("90d", 90 * DAY),
];

/// The summaries of `checks`, with a few queries for the whole page.
pub(super) async fn summaries(
    web: &Web,
    checks: Vec<CheckInfo>,
) -> Result<Vec<CheckSummary>, ApiError> {
    let now = now_ms() / 1000;
    let windows: Vec<(i64, i64)> = UPTIME_WINDOWS.iter().map(|(_, w)| (now - w, now)).collect();
    let uptimes = timeline::uptimes(&web.store, &checks, &windows, now).await?;
    let ids: Vec<i64> = checks.iter().map(|c| c.id.0).collect();
    let mut latest: HashMap<i64, Vec<LatestRow>> = HashMap::new();
    for r in timeline::latest_of(&web.store, &ids).await? {
        latest.entry(r.check.0).or_default().push(r);
    }
    // p50 over the 24 hours of hourly rollups before the last rollup (at most an hour and
    // five minutes old), as the rollup task stored it; none once that is over a day old.
    let fresh_from = Period::Hour.start_of(now) - DAY;
    let latency: HashMap<i64, u64> = latency_24h(&web.store, &ids)
        .await?
        .into_iter()
        .filter(|(_, (end, _))| *end > fresh_from)
        .filter_map(|(id, (_, p50))| Some((id, p50?)))
        .collect();
    Ok(checks
        .into_iter()
        .zip(uptimes)
        .map(|(c, ups)| CheckSummary {
            id: c.id.0,
            uptime: UPTIME_WINDOWS
                .iter()
                .zip(ups)
                .map(|((name, _), u)| {
                    (
                        *name,
                        UptimeRatio {
                            ratio: u.ratio,
                            complete: u.complete,
                        },
                    )
                })
                .collect(),
            latency_p50_ms_24h: latency.get(&c.id.0).copied(),
            last_results: latest
                .remove(&c.id.0)
                .unwrap_or_default()
                .into_iter()
                .map(|r| LastResult {
                    location: r.location,
                    worker: r.node.0,
                    status: r.outcome.as_str(),
                    time: rfc3339_ms(r.at_ms),
                    duration_ms: r.duration_ms,
                    message: r.message,
                })
                .collect(),
            name: c.name,
            check_type: c.check_type,
            enabled: c.enabled,
            status: c.status.as_str(),
            live: None,
        })
        .collect())
}

/// How long one check's answer waits for the acting controller's live state.
const LIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn live_of(web: &Web, id: i64) -> Option<Live> {
    let ask = web.live.as_ref()?;
    let view = tokio::time::timeout(LIVE_WAIT, ask(id)).await.ok()??;
    Some(Live {
        open_round: view.open_round,
        rounds_completed: view.rounds_completed,
        confirmations: view.confirmations,
        insufficient_quorum: view.insufficient_quorum,
        in_flight: view.in_flight,
        results: view
            .last_results
            .into_iter()
            .map(|r| LiveResult {
                worker: r.worker,
                result: r.result,
                age_seconds: r.ms_ago as f64 / 1000.0,
            })
            .collect(),
    })
}

async fn list_checks(State(web): State<Web>, Query(q): Query<PageQuery>) -> Answer<CheckList> {
    let limit = limit(q.limit)?;
    let after = cursor_i64(q.cursor.as_deref())?.unwrap_or(0);
    let page = timeline::checks_after(&web.store, after, limit).await?;
    let next_cursor = (page.len() == limit)
        .then(|| page.last().map(|c| c.id.0.to_string()))
        .flatten();
    let checks = summaries(&web, page).await?;
    Ok(Json(CheckList {
        checks,
        next_cursor,
    }))
}

pub(super) async fn check_info(web: &Web, id: i64) -> Result<CheckInfo, ApiError> {
    timeline::checks(&web.store, Some(CheckId(id)))
        .await?
        .pop()
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("no check with id {id}"),
            )
        })
}

async fn one_check(State(web): State<Web>, Path(id): Path<i64>) -> Answer<CheckSummary> {
    let info = check_info(&web, id).await?;
    let (one, live) = tokio::join!(summaries(&web, vec![info]), live_of(&web, id));
    let mut one = one?
        .pop()
        .ok_or_else(|| ApiError::bad_request("no summary"))?;
    one.live = live;
    Ok(Json(one))
}

#[derive(Deserialize)]
struct ResultsQuery {
    from: Option<String>,
    to: Option<String>,
    location: Option<String>,
    step: Option<i64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct RawResultJson {
    time: String,
    worker: String,
    location: String,
    status: &'static str,
    duration_ms: u64,
    message: String,
}

#[derive(Serialize)]
struct LatencyJson {
    count: u64,
    min: Option<u64>,
    mean: Option<f64>,
    max: Option<u64>,
    p50: Option<u64>,
    p95: Option<u64>,
    p99: Option<u64>,
}

impl LatencyJson {
    fn of(l: &Latency) -> LatencyJson {
        let some = l.count > 0;
        LatencyJson {
            count: l.count,
            min: some.then_some(l.min_ms),
            mean: l.mean_ms(),
            max: some.then_some(l.max_ms),
            p50: l.quantile_ms(0.5),
            p95: l.quantile_ms(0.95),
            p99: l.quantile_ms(0.99),
        }
    }
}

#[derive(Serialize)]
struct StepJson {
    start: String,
    location: String,
    online: u64,
    offline: u64,
    fail: u64,
    availability: Option<f64>,
    latency_ms: LatencyJson,
}

impl StepJson {
    fn of(start: i64, location: String, r: &Rollup) -> StepJson {
        StepJson {
            start: rfc3339(start),
            location,
            online: r.online,
            offline: r.offline,
            fail: r.fail,
            availability: r.availability(),
            latency_ms: LatencyJson::of(&r.latency),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResultsAnswer {
    Raw {
        check_id: i64,
        from: String,
        to: String,
        results: Vec<RawResultJson>,
        next_cursor: Option<String>,
    },
    Steps {
        check_id: i64,
        from: String,
        to: String,
        step_seconds: i64,
        series: Vec<StepJson>,
    },
}

async fn results(
    State(web): State<Web>,
    Path(id): Path<i64>,
    Query(q): Query<ResultsQuery>,
) -> Answer<ResultsAnswer> {
    check_info(&web, id).await?;
    let (from, to) = window(q.from.as_deref(), q.to.as_deref(), now_ms() / 1000)?;
    let location = q.location.as_deref().filter(|l| !l.is_empty());
    if let Some(step) = q.step {
        if step <= 0 || (to - from) / step > MAX_STEPS {
            return Err(ApiError::bad_request(format!(
                "step: expected seconds above 0 and at most {MAX_STEPS} steps in the window"
            )));
        }
        let series = timeline::series(&web.store, CheckId(id), from, to, location, Some(step))
            .await?
            .into_iter()
            .map(|((start, loc), r)| StepJson::of(start, loc, &r))
            .collect();
        return Ok(Json(ResultsAnswer::Steps {
            check_id: id,
            from: rfc3339(from),
            to: rfc3339(to),
            step_seconds: step,
            series,
        }));
    }
    let limit = limit(q.limit)?;
    let start_ms = cursor_i64(q.cursor.as_deref())?.unwrap_or(from * 1000);
    let rows = timeline::raw_results(
        &web.store,
        CheckId(id),
        start_ms,
        to * 1000,
        location,
        limit,
    )
    .await?;
    // The cursor is the first millisecond after the page; a page never ends inside a
    // millisecond (rows of it beyond the limit are dropped and fetched with the next page).
    let (rows, next_cursor) = if rows.len() == limit {
        let last = rows.last().map_or(0, |r| r.at_ms);
        let kept: Vec<_> = if rows.first().is_some_and(|r| r.at_ms == last) {
            rows // one millisecond holds more than a page: take it whole
        } else {
            rows.into_iter().filter(|r| r.at_ms < last).collect()
        };
        let next = kept.last().map_or(last, |r| r.at_ms) + 1;
        (kept, Some(next.to_string()))
    } else {
        (rows, None)
    };
    Ok(Json(ResultsAnswer::Raw {
        check_id: id,
        from: rfc3339(from),
        to: rfc3339(to),
        results: rows
            .into_iter()
            .map(|r| RawResultJson {
                time: rfc3339_ms(r.at_ms),
                worker: r.node.0,
                location: r.location,
                status: r.outcome.as_str(),
                duration_ms: r.duration_ms,
                message: r.message,
            })
            .collect(),
        next_cursor,
    }))
}

#[derive(Deserialize)]
struct WindowQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
struct LocationAvailability {
    location: String,
    online: u64,
    offline: u64,
    fail: u64,
    availability: Option<f64>,
}

#[derive(Serialize)]
struct UptimeJson {
    check_id: i64,
    from: String,
    to: String,
    covered_from: Option<String>,
    covered_to: Option<String>,
    complete: bool,
    up_seconds: i64,
    down_seconds: i64,
    uptime: Option<f64>,
    /// Seconds of the covered part inside maintenance windows.
    maintenance_seconds: i64,
    /// Uptime with maintenance windows left out (`null` when nothing else is covered).
    sla: Option<f64>,
    locations: Vec<LocationAvailability>,
}

impl UptimeJson {
    fn of(check: i64, u: &Uptime) -> UptimeJson {
        UptimeJson {
            check_id: check,
            from: rfc3339(u.from),
            to: rfc3339(u.to),
            covered_from: u.covered.map(|(a, _)| rfc3339(a)),
            covered_to: u.covered.map(|(_, b)| rfc3339(b)),
            complete: u.complete,
            up_seconds: u.up_seconds,
            down_seconds: u.down_seconds,
            uptime: u.ratio,
            maintenance_seconds: u.maintenance_seconds,
            sla: u.sla,
            locations: Vec::new(),
        }
    }
}

async fn uptime(
    State(web): State<Web>,
    Path(id): Path<i64>,
    Query(q): Query<WindowQuery>,
) -> Answer<UptimeJson> {
    let now = now_ms() / 1000;
    let (from, to) = window(q.from.as_deref(), q.to.as_deref(), now)?;
    let Some(u) = timeline::uptime_of(&web.store, CheckId(id), from, to, now).await? else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no check with id {id}"),
        ));
    };
    let mut out = UptimeJson::of(id, &u);
    let per_location = timeline::series(&web.store, CheckId(id), from, to, None, None).await?;
    out.locations = per_location
        .into_iter()
        .map(|((_, location), r)| LocationAvailability {
            location,
            online: r.online,
            offline: r.offline,
            fail: r.fail,
            availability: r.availability(),
        })
        .collect();
    Ok(Json(out))
}

#[derive(Serialize)]
struct NotificationJson {
    id: i64,
    event_id: i64,
    check_id: i64,
    contact_id: i64,
    contact_type: Option<String>,
    state: String,
    attempts: u32,
    created: String,
    sent: Option<String>,
    last_error: Option<String>,
    reason: Option<String>,
    folded_into: Option<i64>,
}

impl NotificationJson {
    fn of(n: NotificationState) -> NotificationJson {
        NotificationJson {
            id: n.id,
            event_id: n.event_id,
            check_id: n.check.0,
            contact_id: n.contact_id,
            contact_type: n.contact_type,
            state: n.state,
            attempts: n.attempts,
            created: rfc3339_ms(n.created_ms),
            sent: n.sent_ms.map(rfc3339_ms),
            last_error: n.last_error,
            reason: n.reason,
            folded_into: n.folded_into,
        }
    }
}

#[derive(Serialize)]
struct IncidentJson {
    id: i64,
    check_id: i64,
    start: String,
    end: Option<String>,
    open: bool,
    duration_seconds: i64,
    message: Option<String>,
    confirmed_by: Vec<String>,
    notifications: Vec<NotificationJson>,
}

#[derive(Serialize)]
struct IncidentList {
    incidents: Vec<IncidentJson>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct IncidentQuery {
    open: Option<bool>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn incident_page(
    web: &Web,
    check: Option<CheckId>,
    q: IncidentQuery,
) -> Answer<IncidentList> {
    let limit = limit(q.limit)?;
    let after = cursor_i64(q.cursor.as_deref())?;
    let now = now_ms() / 1000;
    let open = q.open.unwrap_or(false);
    let mut page = timeline::incident_page(&web.store, check, open, after, limit + 1, now).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    // Newest first; the cursor is the id of the last incident of the page.
    let next_cursor = more
        .then(|| page.last().map(|i| i.id.to_string()))
        .flatten();
    Ok(Json(IncidentList {
        incidents: page
            .into_iter()
            .map(|i| IncidentJson {
                id: i.id,
                check_id: i.check.0,
                start: rfc3339(i.start),
                end: i.end.map(rfc3339),
                open: i.end.is_none(),
                duration_seconds: i.duration,
                message: i.message,
                confirmed_by: i.confirmed_by.into_iter().map(|n| n.0).collect(),
                notifications: i
                    .notifications
                    .into_iter()
                    .map(NotificationJson::of)
                    .collect(),
            })
            .collect(),
        next_cursor,
    }))
}

async fn check_incidents(
    State(web): State<Web>,
    Path(id): Path<i64>,
    Query(q): Query<IncidentQuery>,
) -> Answer<IncidentList> {
    check_info(&web, id).await?;
    incident_page(&web, Some(CheckId(id)), q).await
}

async fn all_incidents(
    State(web): State<Web>,
    Query(q): Query<IncidentQuery>,
) -> Answer<IncidentList> {
    incident_page(&web, None, q).await
}

#[derive(Serialize)]
struct WorkerJson {
    id: String,
    location: String,
    last_result: String,
    checks: u64,
    /// Its canaries fail (an open `worker_impaired` meta-alert).
    impaired: bool,
    failing_canaries: Vec<crate::canary::FailingCanary>,
}

#[derive(Serialize)]
struct ControllerJson {
    epoch: u64,
    node: String,
}

#[derive(Serialize)]
struct WorkerList {
    controller: Option<ControllerJson>,
    workers: Vec<WorkerJson>,
}

async fn workers(State(web): State<Web>) -> Answer<WorkerList> {
    let fence = timeline::fence_holder(&web.store).await?;
    let workers = timeline::workers(&web.store).await?;
    let impaired: std::collections::HashMap<String, Option<String>> =
        crate::store::meta::open_alerts(&web.store)
            .await?
            .into_iter()
            .filter(|a| a.kind == crate::notify::meta::AlertKind::WorkerImpaired.as_str())
            .map(|a| (a.subject, a.detail))
            .collect();
    Ok(Json(WorkerList {
        controller: fence
            .filter(|(epoch, _)| *epoch > 0)
            .map(|(epoch, node)| ControllerJson { epoch, node }),
        workers: workers
            .into_iter()
            .map(|w| WorkerJson {
                impaired: impaired.contains_key(&w.node.0),
                failing_canaries: impaired
                    .get(&w.node.0)
                    .map(|d| crate::canary::failing_from_json(d.as_deref()))
                    .unwrap_or_default(),
                id: w.node.0,
                location: w.location,
                last_result: rfc3339_ms(w.last_result_ms),
                checks: w.checks,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
struct NotificationQuery {
    state: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct NotificationList {
    notifications: Vec<NotificationJson>,
    next_cursor: Option<String>,
}

async fn notifications(
    State(web): State<Web>,
    Query(q): Query<NotificationQuery>,
) -> Answer<NotificationList> {
    let limit = limit(q.limit)?;
    let after = cursor_i64(q.cursor.as_deref())?.unwrap_or(0);
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s @ ("pending" | "sent" | "failed" | "held" | "folded" | "dropped")) => Some(s),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: expected pending, sent, failed, held, folded or dropped, found {other:?}"
            )));
        }
    };
    let rows = timeline::notifications(&web.store, state, after, limit).await?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|n| n.id.to_string()))
        .flatten();
    Ok(Json(NotificationList {
        notifications: rows.into_iter().map(NotificationJson::of).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_both_ways() {
        assert_eq!(rfc3339(1_767_571_200), "2026-01-05T00:00:00Z");
        assert_eq!(rfc3339_ms(1_767_571_200_250), "2026-01-05T00:00:00.25Z");
        assert_eq!(
            parse_time("from", "2026-01-05T01:00:00+01:00").ok(),
            Some(1_767_571_200)
        );
        assert!(parse_time("from", "yesterday").is_err());
        assert_eq!(
            window(None, None, 100_000).ok(),
            Some((100_000 - DAY, 100_000))
        );
        assert!(
            window(
                Some("2026-01-05T00:00:00Z"),
                Some("2026-01-04T00:00:00Z"),
                0
            )
            .is_err()
        );
    }
}
