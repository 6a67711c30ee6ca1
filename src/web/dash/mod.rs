//! The dashboard (login required) on `[web] addr`: the overview `/`, a check's page
//! `/checks/{id}`, the operators' actions (pause, resume, acknowledge) and the live feed the
//! overview polls (`/dash/live.json`). Server-rendered HTML (maud) and SVG (`svg.rs`); the
//! stylesheet and the one small script are in the binary (`/assets/...`).
//!
//! Everything is read with the queries the JSON API uses (`v1::summaries`, `store::timeline`),
//! and every write goes to the same SQL tables the commands write (`checks.enabled`,
//! `incident_acks` through `store::policy::ack`).

pub mod auth;
mod cluster;
pub mod public;
pub mod svg;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::v1::{self, CheckSummary};
use super::{ApiError, Web};
use crate::history::rollup::{DAY, Latency, Period};
use crate::model::CheckId;
use crate::store::StoreError;
use crate::store::history::read_rollups_of;
use crate::store::timeline;
use crate::store::webusers::{Role, SessionUser, set_enabled};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("live.js");

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/dash/live.json", get(live_feed))
        .route("/checks/{id}", get(check_page))
        .route("/workers", get(cluster::workers_page))
        .route("/notifications", get(notifications_page))
        .route("/contacts/test", post(contact_test))
        .route("/checks/{id}/pause", post(pause))
        .route("/checks/{id}/resume", post(resume))
        .route("/checks/{id}/ack", post(ack))
        .route("/assets/style.css", get(style))
        .route("/assets/live.js", get(script))
        .merge(public::routes())
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// An HTML error page with `status`.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = layout(
        "Error",
        None,
        html! { h1 { "Error" } p role="alert" { (message) } p { a href="/" { "Back to the overview" } } },
    );
    (status, Html(body.into_string())).into_response()
}

impl From<StoreError> for Response {
    fn from(e: StoreError) -> Response {
        let api: ApiError = e.into();
        error_page(api.status, &api.message)
    }
}

fn api_error(e: ApiError) -> Response {
    error_page(e.status, &e.message)
}

/// The page frame: header with navigation and the user, main content.
fn layout(title: &str, user: Option<&SessionUser>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gobearmon" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    nav aria-label="main" {
                        a href="/" { "gobearmon" }
                        @if user.is_some() {
                            a href="/" { "Checks" }
                            a href="/workers" { "Workers" }
                            a href="/notifications" { "Notifications" }
                        }
                        @if let Some(u) = user {
                            span class="who" { (u.name) " (" (u.role.as_str()) ")" }
                            form method="post" action="/logout" class="inline" {
                                input type="hidden" name="csrf" value=(u.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" { (main) }
                script src="/assets/live.js" defer {}
            }
        }
    }
}

fn page(title: &str, user: Option<&SessionUser>, main: Markup) -> Response {
    let mut r = Html(layout(title, user, main).into_string()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The request's session, or the answer that sends the browser to the login form.
async fn require(web: &Web, headers: &HeaderMap) -> Result<SessionUser, Response> {
    match auth::session_of(&web.store, headers).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(Redirect::to("/login").into_response()),
        Err(e) => Err(e.into()),
    }
}

/// The session of a POST whose CSRF token matches, held by an operator; else the refusal.
async fn require_operator(
    web: &Web,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<SessionUser, Response> {
    let u = match auth::session_of(&web.store, headers).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(error_page(StatusCode::UNAUTHORIZED, "log in first")),
        Err(e) => return Err(e.into()),
    };
    if !auth::csrf_ok(&u, csrf) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale: reload the page and try again",
        ));
    }
    if u.role != Role::Operator {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "this needs the operator role; your user is a viewer",
        ));
    }
    Ok(u)
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    failed: Option<String>,
}

async fn login_form(State(web): State<Web>, Query(q): Query<LoginQuery>) -> Response {
    login_page(&web, q.failed.as_deref(), StatusCode::OK)
}

/// The login form with a fresh CSRF token, in its hidden field and in its cookie.
fn login_page(web: &Web, failed: Option<&str>, status: StatusCode) -> Response {
    let token = match auth::login_token() {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let body = html! {
        h1 { "Log in" }
        @if let Some(why) = failed {
            p class="error" role="alert" id="login-error" { (why) }
        }
        form method="post" action="/login" class="login" {
            input type="hidden" name="csrf" value=(token);
            label for="name" { "User name" }
            input id="name" name="name" type="text" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" id="login" { "Log in" }
        }
    };
    let mut r = page("Log in", None, body);
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&auth::login_cookie(&token, web.secure_cookies)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A refused login, with `Retry-After`.
fn login_refused(web: &Web, status: StatusCode, why: &str, secs: u64) -> Response {
    let mut r = login_page(web, Some(why), status);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// A login: its CSRF token, then its count ([`auth::LoginLimiter`]), then its password under
/// the hash gate; the module doc of [`auth`] says what each refusal costs.
async fn login(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !auth::login_csrf_ok(&headers, &f.csrf) {
        let why = "The login form expired or came from another page: try again.";
        return login_page(&web, Some(why), StatusCode::FORBIDDEN);
    }
    let name = f.name.trim();
    let addr = peer.ip();
    if let Err(secs) = web.limiter.admit(addr, name, Instant::now()) {
        let why = format!("Too many failed logins: try again in {secs} seconds.");
        return login_refused(&web, StatusCode::TOO_MANY_REQUESTS, &why, secs);
    }
    let checked = if f.password.len() > auth::MAX_PASSWORD || name.len() > 256 {
        Ok(None)
    } else {
        auth::check_login(&web.store, &web.hashes, name, &f.password).await
    };
    match checked {
        Ok(Some(user)) => {
            web.limiter.succeeded(addr, name);
            logged_in(&web, &user).await
        }
        Ok(None) => {
            tracing::warn!(user = %name.chars().take(64).collect::<String>(), %addr, "dashboard login failed");
            let why = "The user name or the password is wrong.";
            login_page(&web, Some(why), StatusCode::UNAUTHORIZED)
        }
        Err(auth::LoginError::Busy) => {
            web.limiter.unchecked(addr, name);
            let why = "The server is busy checking other logins: try again in a few seconds.";
            login_refused(&web, StatusCode::SERVICE_UNAVAILABLE, why, 2)
        }
        Err(auth::LoginError::Store(e)) => {
            web.limiter.unchecked(addr, name);
            e.into()
        }
    }
}

/// Starts `user`'s session and sends the browser to the overview.
async fn logged_in(web: &Web, user: &crate::store::webusers::User) -> Response {
    match auth::start_session(&web.store, user).await {
        Ok(token) => {
            tracing::info!(user = %user.name, "dashboard login");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&auth::cookie(Some(&token), web.secure_cookies)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => e.into(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(web): State<Web>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Ok(Some(u)) = auth::session_of(&web.store, &headers).await
        && !auth::csrf_ok(&u, &f.csrf)
    {
        return error_page(StatusCode::FORBIDDEN, "the form's CSRF token is stale");
    }
    if let Err(e) = auth::end_session(&web.store, &headers).await {
        return e.into();
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::cookie(None, web.secure_cookies)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// How a check's state reads: its status, or paused, with a shape and a word.
fn state_of(
    c_status: &str,
    enabled: bool,
    maintenance: bool,
) -> (&'static str, &'static str, &'static str) {
    // (class, symbol, word)
    if !enabled {
        ("paused", "‖", "paused")
    } else if c_status == "offline" {
        ("offline", "▼", "offline")
    } else if maintenance {
        ("maint", "◆", "online (maintenance)")
    } else {
        ("online", "▲", "online")
    }
}

fn state_html(class: &str, symbol: &str, word: &str) -> Markup {
    html! {
        span class={ "status s-" (class) } {
            span aria-hidden="true" { (symbol) } " " (word)
        }
    }
}

/// A row's state, and the mark of a check the controller cannot flip for want of workers.
fn row_state_html(class: &str, symbol: &str, word: &str, short: bool) -> Markup {
    html! {
        (state_html(class, symbol, word))
        @if short {
            " " span class="tag t-quorum" title="Fewer live workers than its confirmations: it keeps its status and cannot flip until workers come back." {
                span aria-hidden="true" { "◇" } " no quorum"
            }
        }
    }
}

/// A dot per worker's latest result, its message on hover.
fn dots_html(results: &[v1::LastResult]) -> Markup {
    html! {
        @for r in results {
            @let word = match r.status { "online" => "up", "offline" => "down", _ => "fail" };
            span class={ "dot d-" (r.status) } tabindex="0"
                title={ (r.location) " (" (r.worker) "): " (r.status) ", " (r.duration_ms) " ms — " (r.message) }
                aria-label={ (r.location) ": " (r.status) ", " (r.message) } { (r.location) " " (word) }
        }
        @if results.is_empty() { span class="muted" { "no results yet" } }
    }
}

#[derive(Deserialize, Default)]
struct Filter {
    status: Option<String>,
    #[serde(rename = "type")]
    check_type: Option<String>,
    q: Option<String>,
    page: Option<usize>,
}

impl Filter {
    fn keeps(&self, c: &timeline::CheckInfo) -> bool {
        let status_ok = match self.status.as_deref().unwrap_or("") {
            "" => true,
            "paused" => !c.enabled,
            // Decided with the controller's answer (`Quorum`), after this.
            "quorum" => true,
            s => c.enabled && c.status.as_str() == s,
        };
        let type_ok = self
            .check_type
            .as_deref()
            .is_none_or(|t| t.is_empty() || t == c.check_type);
        let name_ok = self
            .q
            .as_deref()
            .is_none_or(|q| q.is_empty() || c.name.to_lowercase().contains(&q.to_lowercase()));
        status_ok && type_ok && name_ok
    }
}

/// The checks in a maintenance window now.
async fn in_maintenance(web: &Web, now: i64) -> Result<MaintenanceNow, StoreError> {
    let windows = crate::store::policy::windows(&web.store).await?;
    let mut all = false;
    let mut checks = std::collections::HashSet::new();
    for (check, w) in windows {
        if crate::policy::in_maintenance(&w.intervals(now - DAY, now + 1), now) {
            match check {
                Some(c) => {
                    checks.insert(c);
                }
                None => all = true,
            }
        }
    }
    Ok(MaintenanceNow { all, checks })
}

struct MaintenanceNow {
    all: bool,
    checks: std::collections::HashSet<i64>,
}

impl MaintenanceNow {
    fn has(&self, id: i64) -> bool {
        self.all || self.checks.contains(&id)
    }
}

/// Mean latency per hour of the last 24 hours, per check, from the hourly rollups.
async fn sparklines(
    web: &Web,
    ids: &[i64],
    now: i64,
) -> Result<HashMap<i64, Vec<Option<f64>>>, StoreError> {
    let first = Period::Hour.start_of(now) - 23 * 3600;
    let rows = read_rollups_of(&web.store, ids, Period::Hour, first, now, None).await?;
    let mut merged: BTreeMap<(i64, i64), Latency> = BTreeMap::new();
    for r in rows {
        merged
            .entry((r.check.0, r.start))
            .or_default()
            .merge(&r.rollup.latency);
    }
    let mut out: HashMap<i64, Vec<Option<f64>>> = HashMap::new();
    for ((check, start), l) in merged {
        let slot = ((start - first) / 3600) as usize;
        let v = out.entry(check).or_insert_with(|| vec![None; 24]);
        if slot < 24 {
            v[slot] = l.mean_ms();
        }
    }
    Ok(out)
}

/// Rows on one page of the overview. The first pages hold what needs a look (offline, short
/// of quorum, in maintenance, paused), so a large installation sees its trouble at once while
/// each page reads and weighs a bounded amount (`scripts/bench-dashboard`).
const PAGE_ROWS: usize = 100;

/// The overview's order: what needs a look first.
fn rank(class: &str, short: bool) -> u8 {
    match class {
        "offline" => 0,
        _ if short => 1,
        "maint" => 2,
        "paused" => 3,
        _ => 4,
    }
}

/// The page shown of `rows` for a requested (1-based) page: (page, pages, first row).
fn page_of(rows: usize, requested: Option<usize>) -> (usize, usize, usize) {
    let pages = rows.div_ceil(PAGE_ROWS).max(1);
    let page = requested.unwrap_or(1).clamp(1, pages);
    (page, pages, (page - 1) * PAGE_ROWS)
}

impl Filter {
    /// The overview's address with these filters on page `page` (1-based).
    fn href(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("type", &self.check_type),
            ("q", &self.q),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        let q = q.finish();
        if q.is_empty() {
            "/".into()
        } else {
            format!("/?{q}")
        }
    }
}

async fn overview(State(web): State<Web>, headers: HeaderMap, Query(f): Query<Filter>) -> Response {
    let user = match require(&web, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now = v1::now_ms() / 1000;
    let (all, maint, live) = tokio::join!(
        timeline::checks(&web.store, None),
        in_maintenance(&web, now),
        cluster::summary(&web)
    );
    let (all, maint) = match (all, maint) {
        (Ok(c), Ok(m)) => (c, m),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let mut types: Vec<String> = all.iter().map(|c| c.check_type.clone()).collect();
    types.sort();
    types.dedup();
    let total = all.len();
    let quorum = cluster::Quorum::of(live.as_ref());
    let state = |c: &timeline::CheckInfo| state_of(c.status.as_str(), c.enabled, maint.has(c.id.0));
    let down = all.iter().filter(|c| state(c).0 == "offline").count();
    let only_short = f.status.as_deref() == Some("quorum");
    let mut chosen: Vec<_> = all
        .into_iter()
        .filter(|c| f.keeps(c) && (!only_short || quorum.short(c.id.0)))
        .collect();
    chosen.sort_by_cached_key(|c| (rank(state(c).0, quorum.short(c.id.0)), c.id.0));
    let matching = chosen.len();
    let (at, pages, first) = page_of(matching, f.page);
    let checks: Vec<_> = chosen.into_iter().skip(first).take(PAGE_ROWS).collect();
    let ids: Vec<i64> = checks.iter().map(|c| c.id.0).collect();
    let (summaries, sparks) =
        tokio::join!(v1::summaries(&web, checks), sparklines(&web, &ids, now));
    let summaries = match summaries {
        Ok(s) => s,
        Err(e) => return api_error(e),
    };
    let sparks = match sparks {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let rows: Vec<(&CheckSummary, (&str, &str, &str))> = summaries
        .iter()
        .map(|s| (s, state_of(s.status, s.enabled, maint.has(s.id))))
        .collect();
    let body = html! {
        h1 { "Checks" }
        p class="summary" {
            (total) " checks; " strong { span id="down-count" { (down) } " offline" } "; " span id="quorum-state" { (quorum.words()) } ". "
            @if matching == 0 { "None match. " }
            @else { "Showing " (first + 1) "–" (first + rows.len()) " of " (matching) ", offline first. " }
            span id="live-state" aria-live="polite" { "live updates every 2 s" }
        }
        (filter_html(&f, &types))
        table class="checks" data-live="/dash/live.json" data-down=(down) {
            caption class="sr" { "Checks, offline first" }
            thead { tr {
                th scope="col" { "Status" } th scope="col" { "Check" } th scope="col" { "Type" }
                th scope="col" { "Locations" } th scope="col" { "Uptime 24 h" }
                th scope="col" { "Uptime 30 d" } th scope="col" { "Latency 24 h" }
            } }
            tbody {
                @for (s, (class, symbol, word)) in &rows {
                    @let short = quorum.short(s.id);
                    tr id={ "check-" (s.id) } data-status=(class) data-quorum=(if short { "short" } else { "ok" }) class={ "r-" (class) } {
                        td class="st" { (row_state_html(class, symbol, word, short)) }
                        th scope="row" { a href={ "/checks/" (s.id) } { (s.name) } }
                        td { (s.check_type) }
                        td class="dots" { (dots_html(&s.last_results)) }
                        td class="num" { (svg::percent(s.uptime.get("24h").and_then(|u| u.ratio))) }
                        td class="num" { (svg::percent(s.uptime.get("30d").and_then(|u| u.ratio))) }
                        td { (PreEscaped(svg::sparkline(sparks.get(&s.id).map_or(&[][..], |v| &v[..])))) }
                    }
                }
            }
        }
        p id="more-down" class="warn" hidden { "More checks are offline than when this page was loaded: " a href="/" { "reload to see them first" } "." }
        (pages_html(&f, at, pages))
    };
    page("Checks", Some(&user), body)
}

/// The overview's filter form, showing `f`; `types` are the check types there are.
fn filter_html(f: &Filter, types: &[String]) -> Markup {
    let sel = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    html! {
        form method="get" action="/" class="filter" role="search" {
            label for="f-status" { "Status" }
            select id="f-status" name="status" {
                option value="" { "any" }
                @for (s, label) in [("online", "online"), ("offline", "offline"), ("paused", "paused"), ("quorum", "no quorum")] {
                    option value=(s) selected[sel(&f.status, s)] { (label) }
                }
            }
            label for="f-type" { "Type" }
            select id="f-type" name="type" {
                option value="" { "any" }
                @for t in types {
                    option value=(t) selected[sel(&f.check_type, t)] { (t) }
                }
            }
            label for="f-q" { "Name" }
            input id="f-q" name="q" type="search" value=(f.q.clone().unwrap_or_default());
            button type="submit" { "Filter" }
        }
    }
}

/// Links to the overview's other pages (page `at` of `pages`).
fn pages_html(f: &Filter, at: usize, pages: usize) -> Markup {
    html! {
        @if pages > 1 {
            nav class="pages" aria-label="pages of checks" {
                @if at > 1 { a href=(f.href(at - 1)) rel="prev" { "‹ previous" } " " }
                "page " (at) " of " (pages)
                @if at < pages { " " a href=(f.href(at + 1)) rel="next" id="next-page" { "next ›" } }
            }
        }
    }
}

/// What the overview's script polls: each check's state and dots, rendered.
#[derive(Deserialize, Default)]
struct LiveQuery {
    /// The rows the page shows, comma-separated.
    #[serde(default)]
    ids: String,
}

/// Most rows one poll answers for (a page holds [`PAGE_ROWS`]).
const LIVE_ROWS: usize = 500;

async fn live_feed(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    if let Err(r) = require(&web, &headers).await {
        return (StatusCode::UNAUTHORIZED, r).into_response();
    }
    let now = v1::now_ms() / 1000;
    let wanted: Vec<i64> = q
        .ids
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .take(LIVE_ROWS)
        .collect();
    let (checks, down, maint, live) = tokio::join!(
        timeline::checks_in(&web.store, &wanted),
        timeline::offline_count(&web.store),
        in_maintenance(&web, now),
        cluster::summary(&web)
    );
    let quorum = cluster::Quorum::of(live.as_ref());
    let (checks, down, maint) = match (checks, down, maint) {
        (Ok(c), Ok(d), Ok(m)) => (c, d, m),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return api_error(e.into()),
    };
    let ids: Vec<i64> = checks.iter().map(|c| c.id.0).collect();
    let latest = match timeline::latest_of(&web.store, &ids).await {
        Ok(l) => l,
        Err(e) => return api_error(e.into()),
    };
    let mut by_check: HashMap<i64, Vec<v1::LastResult>> = HashMap::new();
    for r in latest {
        by_check.entry(r.check.0).or_default().push(v1::LastResult {
            location: r.location,
            worker: r.node.0,
            status: r.outcome.as_str(),
            time: String::new(),
            duration_ms: r.duration_ms,
            message: r.message,
        });
    }
    let out: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            let (class, symbol, word) = state_of(c.status.as_str(), c.enabled, maint.has(c.id.0));
            let dots = by_check.remove(&c.id.0).unwrap_or_default();
            serde_json::json!({
                "id": c.id.0,
                "state": class,
                "quorum": !quorum.short(c.id.0),
                "state_html": row_state_html(class, symbol, word, quorum.short(c.id.0)).into_string(),
                "dots_html": dots_html(&dots).into_string(),
            })
        })
        .collect();
    let mut r =
        Json(serde_json::json!({ "checks": out, "down": down, "quorum_words": quorum.words() }))
            .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize, Default)]
struct Span {
    span: Option<String>,
}

/// A chart's window: (label, seconds, step).
fn span_of(s: Option<&str>) -> (&'static str, i64, i64) {
    match s {
        Some("24h") => ("24h", DAY, 3600),
        Some("7d") => ("7d", 7 * DAY, 6 * 3600),
        Some("30d") => ("30d", 30 * DAY, DAY),
        _ => ("1h", 3600, 60),
    }
}

/// Mean latency per step and location over the window ending now.
async fn latency_per_location(
    web: &Web,
    id: i64,
    now: i64,
    (_, secs, step): (&str, i64, i64),
) -> Result<Vec<(String, Vec<Option<f64>>)>, StoreError> {
    // Whole-hour steps start on an hour so that they read hourly rollups.
    let to = if step >= 3600 {
        Period::Hour.start_of(now) + 3600
    } else {
        now
    };
    let from = to - secs;
    let series = timeline::series(&web.store, CheckId(id), from, to, None, Some(step)).await?;
    let n = (secs / step) as usize;
    let mut per: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for ((start, loc), r) in series {
        let i = ((start - from) / step) as usize;
        let v = per.entry(loc).or_insert_with(|| vec![None; n]);
        if i < n {
            v[i] = r.latency.mean_ms();
        }
    }
    Ok(per.into_iter().collect())
}

/// Uptime per UTC day, 90 days to today (today so far).
/// Each check's uptime per UTC day over the last 90 days (labelled by date), in one read.
async fn ninety_days(
    web: &Web,
    checks: &[timeline::CheckInfo],
    now: i64,
) -> Result<Vec<Vec<(String, Option<f64>)>>, StoreError> {
    let today = now - now.rem_euclid(DAY);
    let windows: Vec<(i64, i64)> = (0..90)
        .rev()
        .map(|k| {
            let a = today - k * DAY;
            (a, (a + DAY).min(now.max(a + 1)))
        })
        .collect();
    let labels: Vec<String> = windows
        .iter()
        .map(|(a, _)| crate::history::rfc3339(*a)[..10].to_string())
        .collect();
    Ok(timeline::uptimes(&web.store, checks, &windows, now)
        .await?
        .into_iter()
        .map(|ups| {
            labels
                .iter()
                .cloned()
                .zip(ups.into_iter().map(|u| u.ratio))
                .collect()
        })
        .collect())
}

fn when(t: i64) -> String {
    crate::history::rfc3339(t)
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn duration_words(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * DAY => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / DAY, (s % DAY) / 3600),
    }
}

async fn check_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Span>,
) -> Response {
    let user = match require(&web, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let info = match v1::check_info(&web, id).await {
        Ok(i) => i,
        Err(e) => return api_error(e),
    };
    let now = v1::now_ms() / 1000;
    let span = span_of(q.span.as_deref());
    let params = match crate::store::webusers::check_definition(&web.store, CheckId(id)).await {
        Ok(Some((_, data))) => crate::notify::redact::check_data(&data),
        Ok(None) => String::new(),
        Err(e) => return e.into(),
    };
    let (summary, live, chart, days, incidents, maint) = tokio::join!(
        v1::summaries(&web, vec![info.clone()]),
        v1::live_of(&web, id),
        latency_per_location(&web, id, now, span),
        ninety_days(&web, std::slice::from_ref(&info), now),
        timeline::incident_page(&web.store, Some(CheckId(id)), false, None, 50, now),
        in_maintenance(&web, now)
    );
    let Some(s) = (match summary {
        Ok(mut s) => s.pop(),
        Err(e) => return api_error(e),
    }) else {
        return error_page(StatusCode::NOT_FOUND, "no such check");
    };
    let (chart, days, incidents, maint) = match (chart, days, incidents, maint) {
        (Ok(c), Ok(mut d), Ok(i), Ok(m)) => (c, d.pop().unwrap_or_default(), i, m),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e.into(),
    };
    let (class, symbol, word) = state_of(s.status, s.enabled, maint.has(id));
    let operator = user.role == Role::Operator;
    let open = incidents.iter().find(|i| i.end.is_none()).map(|i| i.id);
    let body = html! {
        p { a href="/" { "← All checks" } }
        h1 { (s.name) " " (state_html(class, symbol, word)) }
        p { "Type " (s.check_type) "; uptime 24 h " (svg::percent(s.uptime.get("24h").and_then(|u| u.ratio)))
            ", 30 d " (svg::percent(s.uptime.get("30d").and_then(|u| u.ratio))) "." }
        @if operator {
            div class="actions" {
                @if s.enabled {
                    (action_form(id, "pause", "Pause", &user.csrf))
                } @else {
                    (action_form(id, "resume", "Resume", &user.csrf))
                }
                @if let Some(event) = open { (ack_form(id, event, &user.csrf)) }
            }
        }
        h2 { "Latest result per location" }
        p class="dots" { (dots_html(&s.last_results)) }
        (latency_html(id, span.0, &chart))
        h2 { "Uptime, 90 days" }
        (PreEscaped(svg::uptime_bar(&days)))
        p class="muted" { "Oldest left, today right; hover a day for its figure." }
        (open_round_html(live.as_ref()))
        h2 { "Parameters" }
        p class="muted" { "The check's JSON as written, redacted as notifications are: secrets, bodies, payloads and token-like URL path segments are masked." }
        pre class="params" id="params" { (params) }
        (incidents_html(&incidents))
    };
    page(&s.name, Some(&user), body)
}

/// The check page's latency chart, with links to its windows (`span` the one shown).
fn latency_html(id: i64, span: &str, chart: &[(String, Vec<Option<f64>>)]) -> Markup {
    html! {
        h2 id="latency" { "Latency per location" }
        nav aria-label="chart window" class="spans" {
            @for (k, label) in [("1h", "1 h"), ("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d")] {
                @if k == span { strong aria-current="true" { (label) } }
                @else { a href={ "/checks/" (id) "?span=" (k) "#latency" } { (label) } }
            }
        }
        @if chart.is_empty() { p class="muted" { "No results in this window." } }
        @else {
            (PreEscaped(svg::latency_chart(chart, span)))
            ul class="legend" {
                @for (k, (loc, _)) in chart.iter().enumerate() {
                    li { span class={ "swatch l" (k % 6) } aria-hidden="true" {} (loc) }
                }
            }
        }
    }
}

/// The check page's open round, as the acting controller sees it.
fn open_round_html(live: Option<&v1::Live>) -> Markup {
    html! {
        h2 { "Open round" }
        @match live {
            None => p class="muted" { "The acting controller did not answer." },
            Some(l) => {
                @if l.insufficient_quorum { p class="warn" { "Insufficient quorum: too few workers can run this check." } }
                @if l.open_round.is_empty() { p { "No round open." } }
                @else { p { "Asked to confirm: " (l.open_round.join(", ")) "; rounds completed " (l.rounds_completed) ", confirmations " (l.confirmations) "." } }
                @if !l.results.is_empty() {
                    ul { @for r in &l.results { li { (r.worker) ": " (r.result) ", " (format!("{:.0}", r.age_seconds)) " s ago" } } }
                }
            }
        }
    }
}

/// The check page's incidents (the latest 50) with their notifications.
fn incidents_html(incidents: &[timeline::Incident]) -> Markup {
    html! {
        h2 { "Incidents" }
        @if incidents.is_empty() { p { "None recorded." } }
        @else {
            table class="incidents" {
                thead { tr { th scope="col" { "Began" } th scope="col" { "Ended" } th scope="col" { "Lasted" }
                    th scope="col" { "Confirmed by" } th scope="col" { "Message" } th scope="col" { "Notifications" } } }
                tbody {
                    @for i in incidents.iter().take(50) {
                        tr class="incident" {
                            td { (when(i.start)) }
                            td { @match i.end { Some(e) => (when(e)), None => strong { "open" } } }
                            td { (duration_words(i.duration)) }
                            td { (i.confirmed_by.iter().map(|n| n.0.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { (i.message.clone().unwrap_or_default()) }
                            td { ul class="notes" {
                                @for n in &i.notifications {
                                    li class={ "n-" (n.state) } {
                                        (n.contact_type.clone().unwrap_or_else(|| "deleted contact".into()))
                                        " #" (n.contact_id) ": " strong { (n.state) }
                                        @if n.attempts > 1 { " after " (n.attempts) " attempts" }
                                        @if let Some(e) = &n.last_error { " — " (e) }
                                        @if let Some(r) = &n.reason { " — " span class="reason" { (r) } }
                                    }
                                }
                                @if i.notifications.is_empty() { li class="muted" { "none" } }
                            } }
                        }
                    }
                }
            }
        }
    }
}

async fn notifications_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    let user = match require(&web, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (pending, held, failed, decided) = tokio::join!(
        timeline::notifications(&web.store, Some("pending"), 0, 500),
        timeline::notifications(&web.store, Some("held"), 0, 500),
        timeline::notifications(&web.store, Some("failed"), 0, 500),
        timeline::decisions(&web.store, 100)
    );
    let (pending, held, failed, decided) = match (pending, held, failed, decided) {
        (Ok(p), Ok(h), Ok(f), Ok(d)) => (p, h, f, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e.into(),
    };
    let body = html! {
        h1 { "Notifications" }
        @if user.role == Role::Operator {
            form method="post" action="/contacts/test" class="filter" {
                input type="hidden" name="csrf" value=(user.csrf);
                label for="contact" { "Send a test notification to contact id" }
                input id="contact" name="contact" type="number" min="1" required;
                button type="submit" id="do-test" { "Send" }
            }
        }
        @for (title, id, rows) in [("Pending", "pending", &pending), ("Held", "held", &held),
            ("Failed", "failed", &failed), ("Latest decisions", "decisions", &decided)] {
            h2 { (title) " (" (rows.len()) ")" }
            @if rows.is_empty() { p { "None." } }
            @else {
                table class="notifications" id=(id) {
                    thead { tr { th scope="col" { "Row" } th scope="col" { "Check" } th scope="col" { "Contact" }
                        th scope="col" { "Queued" } th scope="col" { "State" } th scope="col" { "Attempts" }
                        th scope="col" { "Why" } th scope="col" { "Last error" } } }
                    tbody { @for n in rows.iter() {
                        tr class={ "n-" (n.state) } {
                            td class="num" { (n.id) }
                            td { a href={ "/checks/" (n.check.0) } { "check " (n.check.0) } }
                            td { (n.contact_type.clone().unwrap_or_else(|| "deleted contact".into())) " #" (n.contact_id) }
                            td { (when(n.created_ms / 1000)) }
                            td { (n.state) }
                            td class="num" { (n.attempts) }
                            td class="reason" {
                                (n.reason.clone().unwrap_or_default())
                                @if let Some(into) = n.folded_into { " (row " (into) ")" }
                            }
                            td { (n.last_error.clone().unwrap_or_default()) }
                        }
                    } }
                }
            }
        }
    };
    page("Notifications", Some(&user), body)
}

#[derive(Deserialize)]
struct ContactTestForm {
    #[serde(default)]
    csrf: String,
    contact: i64,
}

/// Sends a test notification to one contact through the real delivery path, as
/// `gobearmon contact test` does.
async fn contact_test(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<ContactTestForm>,
) -> Response {
    let user = match require_operator(&web, &headers, &f.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(deliverer) = web.deliverer.clone() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "this worker has no delivery channels",
        );
    };
    let outcome =
        crate::notify::contact_test(&web.store, &*deliverer, crate::model::ContactId(f.contact))
            .await;
    tracing::info!(contact = f.contact, user = %user.name, ok = outcome.is_ok(), "dashboard test notification");
    let body = html! {
        h1 { "Test notification" }
        @match &outcome {
            Ok(_) => p id="test-result" role="status" { "Delivered to contact " (f.contact) "." },
            Err(e) => p id="test-result" class="error" role="alert" { "Not delivered to contact " (f.contact) ": " (e.to_string()) },
        }
        p { a href="/notifications" { "Back to the notifications" } }
    };
    let mut r = page("Test notification", Some(&user), body);
    if outcome.is_err() {
        *r.status_mut() = StatusCode::BAD_GATEWAY;
    }
    r
}

fn action_form(id: i64, action: &str, label: &str, csrf: &str) -> Markup {
    html! {
        form method="post" action={ "/checks/" (id) "/" (action) } class="inline" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" id={ "do-" (action) } { (label) }
        }
    }
}

/// The acknowledge button: it names the incident it was shown for, so a page left open past
/// that incident's end cannot acknowledge the next one.
fn ack_form(id: i64, event: i64, csrf: &str) -> Markup {
    html! {
        form method="post" action={ "/checks/" (id) "/ack" } class="inline" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="event" value=(event);
            button type="submit" id="do-ack" { "Acknowledge incident " (event) }
        }
    }
}

async fn pause(s: State<Web>, h: HeaderMap, p: Path<i64>, f: Form<CsrfForm>) -> Response {
    toggle(s, h, p, f, false).await
}

async fn resume(s: State<Web>, h: HeaderMap, p: Path<i64>, f: Form<CsrfForm>) -> Response {
    toggle(s, h, p, f, true).await
}

async fn toggle(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
    enabled: bool,
) -> Response {
    let user = match require_operator(&web, &headers, &f.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match set_enabled(&web.store, CheckId(id), enabled).await {
        Ok(true) => {
            tracing::info!(check = id, enabled, user = %user.name, "dashboard set enabled");
            Redirect::to(&format!("/checks/{id}")).into_response()
        }
        Ok(false) => error_page(StatusCode::NOT_FOUND, "no such check"),
        Err(e) => e.into(),
    }
}

#[derive(Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    /// The incident the button was shown for.
    event: Option<i64>,
}

async fn ack(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<AckForm>,
) -> Response {
    use crate::store::policy::Acked;
    let user = match require_operator(&web, &headers, &f.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(event) = f.event else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the form does not name the incident: reload the check page",
        );
    };
    let by = &user.name;
    match crate::store::policy::ack(
        &web.store,
        CheckId(id),
        Some(event),
        by,
        "from the dashboard",
    )
    .await
    {
        Ok(Acked::Recorded { .. } | Acked::Already { .. }) => {
            Redirect::to(&format!("/checks/{id}")).into_response()
        }
        Ok(Acked::Stale { event, open }) => {
            let how = "reload the check page to acknowledge it.";
            let message = crate::notify::text::stale_ack(&id.to_string(), event, open, how);
            error_page(StatusCode::CONFLICT, &message)
        }
        Ok(Acked::NoIncident) => error_page(StatusCode::CONFLICT, "the check has no open incident"),
        Ok(Acked::NoCheck) => error_page(StatusCode::NOT_FOUND, "no such check"),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_in_words_and_shapes() {
        assert_eq!(state_of("offline", true, false).2, "offline");
        assert_eq!(state_of("offline", false, false).0, "paused");
        assert_eq!(state_of("online", true, true).0, "maint");
        assert_eq!(state_of("online", true, false).1, "▲");
    }

    #[test]
    fn pages_hold_what_needs_a_look_first_and_keep_the_filters() {
        assert_eq!(page_of(0, None), (1, 1, 0));
        assert_eq!(page_of(PAGE_ROWS, Some(2)), (1, 1, 0));
        assert_eq!(
            page_of(PAGE_ROWS * 100 + 1, Some(101)),
            (101, 101, PAGE_ROWS * 100)
        );
        assert_eq!(page_of(PAGE_ROWS * 3, Some(0)), (1, 3, 0));
        assert_eq!(page_of(PAGE_ROWS * 3, Some(9)), (3, 3, PAGE_ROWS * 2));
        let mut order = [
            ("online", false),
            ("paused", false),
            ("online", true),
            ("maint", false),
            ("offline", true),
        ];
        order.sort_by_key(|(c, short)| rank(c, *short));
        assert_eq!(
            order,
            [
                ("offline", true),
                ("online", true),
                ("maint", false),
                ("paused", false),
                ("online", false)
            ]
        );
        let f = Filter {
            status: Some("offline".into()),
            check_type: Some(String::new()),
            q: Some("a&b c".into()),
            page: Some(4),
        };
        assert_eq!(f.href(2), "/?status=offline&q=a%26b+c&page=2");
        assert_eq!(f.href(1), "/?status=offline&q=a%26b+c");
        assert_eq!(Filter::default().href(1), "/");
    }

    #[test]
    fn spans_and_durations() {
        assert_eq!(span_of(Some("7d")), ("7d", 7 * DAY, 6 * 3600));
        assert_eq!(span_of(Some("bogus")).0, "1h");
        assert_eq!(duration_words(59), "59 s");
        assert_eq!(duration_words(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(duration_words(3 * DAY + 3600), "3 d 1 h");
    }
}
