//! What `gobearmon history` and `gobearmon uptime` print: history read from MySQL
//! ([`crate::store::timeline`]) as readable tables, or as JSON with `--json`; and the URL
//! `gobearmon push-url` prints.

use std::fmt::Write as _;

use serde::Serialize;

use crate::history::rfc3339;
use crate::history::rollup::{DAY, HOUR, Period, Rollup};
use crate::store::timeline::{self, CheckInfo};
use crate::store::{Store, StoreError};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no check with id or name {0:?}")]
    NoSuchCheck(String),
    #[error("check {check} is of type {check_type:?}, not a push check: it has no push URL")]
    NotPush { check: i64, check_type: String },
    #[error("check {check} is a push check with unusable data ({problem}); fix its row")]
    PushData { check: i64, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The URL the job watched by push check `id_or_name` calls: `base` (`[web] public_url`, or
/// `http://` and `[web] addr`), `/push/` and the check's token.
pub async fn push_url(store: &Store, id_or_name: &str, base: &str) -> Result<String, ReportError> {
    let info = find_check(store, id_or_name).await?;
    if info.check_type != "push" {
        return Err(ReportError::NotPush {
            check: info.id.0,
            check_type: info.check_type,
        });
    }
    let data = crate::store::push::data_of(store, info.id)
        .await?
        .unwrap_or_default();
    let spec = crate::probe::PushSpec::parse(&data).map_err(|problem| ReportError::PushData {
        check: info.id.0,
        problem,
    })?;
    Ok(format!(
        "{}/push/{}",
        base.trim_end_matches('/'),
        spec.token
    ))
}

/// The check named by `id_or_name`: its id, or else its exact name.
pub async fn find_check(store: &Store, id_or_name: &str) -> Result<CheckInfo, ReportError> {
    let all = timeline::checks(store, None).await?;
    let by_id = id_or_name.parse::<i64>().ok();
    all.iter()
        .find(|c| Some(c.id.0) == by_id)
        .or_else(|| all.iter().find(|c| c.name == id_or_name))
        .cloned()
        .ok_or_else(|| ReportError::NoSuchCheck(id_or_name.to_string()))
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.3} %", r * 100.0))
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v} ms"))
}

/// One step of one location.
#[derive(Debug, Serialize)]
pub struct Step {
    pub start: String,
    pub location: String,
    pub online: u64,
    pub offline: u64,
    pub fail: u64,
    pub availability: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

impl Step {
    fn of(start: i64, location: String, r: &Rollup) -> Step {
        let l = &r.latency;
        Step {
            start: rfc3339(start),
            location,
            online: r.online,
            offline: r.offline,
            fail: r.fail,
            availability: r.availability(),
            p50_ms: l.quantile_ms(0.5),
            p95_ms: l.quantile_ms(0.95),
            p99_ms: l.quantile_ms(0.99),
            max_ms: (l.count > 0).then_some(l.max_ms),
        }
    }
}

/// `gobearmon history`: a check's results per location, in hours (a window up to two days)
/// or days.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub check_id: i64,
    pub name: String,
    pub status: &'static str,
    pub from: String,
    pub to: String,
    pub step_seconds: i64,
    pub steps: Vec<Step>,
    pub total: Vec<Step>,
}

/// The history of `check` over the `since` seconds before `now`.
pub async fn history(
    store: &Store,
    check: &CheckInfo,
    since: i64,
    location: Option<&str>,
    now: i64,
) -> Result<HistoryReport, ReportError> {
    let period = if since <= 2 * DAY {
        Period::Hour
    } else {
        Period::Day
    };
    let step = if period == Period::Hour { HOUR } else { DAY };
    let from = period.start_of(now - since);
    let series = timeline::series(store, check.id, from, now, location, Some(step)).await?;
    let total = timeline::series(store, check.id, now - since, now, location, None).await?;
    Ok(HistoryReport {
        check_id: check.id.0,
        name: check.name.clone(),
        status: check.status.as_str(),
        from: rfc3339(from),
        to: rfc3339(now),
        step_seconds: step,
        steps: series
            .into_iter()
            .map(|((s, l), r)| Step::of(s, l, &r))
            .collect(),
        total: total
            .into_iter()
            .map(|((s, l), r)| Step::of(s, l, &r))
            .collect(),
    })
}

fn table(out: &mut String, rows: &[Step], first: &str) {
    let _ = writeln!(
        out,
        "{first:<21} {:<12} {:>7} {:>7} {:>5} {:>10} {:>9} {:>9} {:>9}",
        "LOCATION", "ONLINE", "OFFLINE", "FAIL", "AVAIL", "P50", "P95", "P99"
    );
    for s in rows {
        let _ = writeln!(
            out,
            "{:<21} {:<12} {:>7} {:>7} {:>5} {:>10} {:>9} {:>9} {:>9}",
            if first == "TOTAL" { "" } else { &s.start },
            s.location,
            s.online,
            s.offline,
            s.fail,
            pct(s.availability),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms)
        );
    }
}

impl HistoryReport {
    /// Readable tables: the steps, then the whole window per location.
    pub fn text(&self) -> String {
        let mut out = format!(
            "check {} {} ({}), {} to {}\n\n",
            self.check_id, self.name, self.status, self.from, self.to
        );
        if self.steps.is_empty() {
            out.push_str("no results stored in this window\n");
            return out;
        }
        table(
            &mut out,
            &self.steps,
            if self.step_seconds == HOUR {
                "HOUR"
            } else {
                "DAY"
            },
        );
        out.push('\n');
        table(&mut out, &self.total, "TOTAL");
        out
    }
}

/// `gobearmon uptime`.
#[derive(Debug, Serialize)]
pub struct UptimeReport {
    pub check_id: i64,
    pub name: String,
    pub status: &'static str,
    pub from: String,
    pub to: String,
    pub covered_from: Option<String>,
    pub covered_to: Option<String>,
    pub complete: bool,
    pub up_seconds: i64,
    pub down_seconds: i64,
    pub uptime: Option<f64>,
    /// Uptime outside maintenance windows.
    pub sla: Option<f64>,
    pub maintenance_seconds: i64,
    pub incidents: usize,
    pub locations: Vec<Step>,
}

/// The uptime of `check` over the `window` seconds before `now`.
pub async fn uptime(
    store: &Store,
    check: &CheckInfo,
    window: i64,
    now: i64,
) -> Result<UptimeReport, ReportError> {
    let from = now - window;
    let u = timeline::uptime_of(store, check.id, from, now, now)
        .await?
        .ok_or_else(|| ReportError::NoSuchCheck(check.id.to_string()))?;
    let incidents = timeline::incidents(store, Some(check.id), false, now)
        .await?
        .iter()
        .filter(|i| i.end.is_none_or(|e| e > from))
        .count();
    let per_location = timeline::series(store, check.id, from, now, None, None).await?;
    Ok(UptimeReport {
        check_id: check.id.0,
        name: check.name.clone(),
        status: check.status.as_str(),
        from: rfc3339(from),
        to: rfc3339(now),
        covered_from: u.covered.map(|(a, _)| rfc3339(a)),
        covered_to: u.covered.map(|(_, b)| rfc3339(b)),
        complete: u.complete,
        up_seconds: u.up_seconds,
        down_seconds: u.down_seconds,
        uptime: u.ratio,
        sla: u.sla,
        maintenance_seconds: u.maintenance_seconds,
        incidents,
        locations: per_location
            .into_iter()
            .map(|((s, l), r)| Step::of(s, l, &r))
            .collect(),
    })
}

fn duration(s: i64) -> String {
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m {sec}s"),
        _ => format!("{d}d {h}h {m}m {sec}s"),
    }
}

impl UptimeReport {
    pub fn text(&self) -> String {
        let mut out = format!(
            "check {} {} ({}), {} to {}\n\n",
            self.check_id, self.name, self.status, self.from, self.to
        );
        let _ = writeln!(out, "uptime     {}", pct(self.uptime));
        let _ = writeln!(
            out,
            "sla        {} (outside {} of maintenance)",
            pct(self.sla),
            duration(self.maintenance_seconds)
        );
        let _ = writeln!(
            out,
            "down       {} in {} incident(s)",
            duration(self.down_seconds),
            self.incidents
        );
        match (&self.covered_from, &self.covered_to) {
            (Some(a), Some(b)) if !self.complete => {
                let _ = writeln!(
                    out,
                    "covered    {a} to {b} only: history does not reach the whole window"
                );
            }
            (None, _) => {
                let _ = writeln!(out, "covered    nothing: no history in this window");
            }
            _ => {}
        }
        if !self.locations.is_empty() {
            out.push('\n');
            table(&mut out, &self.locations, "TOTAL");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(3 * 3600 + 5), "3h 0m 5s");
        assert_eq!(duration(86_400 + 60), "1d 0h 1m 0s");
        assert_eq!(pct(Some(0.99952)), "99.952 %");
        assert_eq!(pct(None), "-");
    }
}
