//! Public status pages (`/status/{slug}`, no login) and README badges
//! (`/badge/{check_id}/...svg`, only for checks on some public page).
//!
//! A public page says in plain words what is up and what was down, from the checks' status,
//! flips and uptime only: never a probe message, an address or a parameter.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, PreEscaped, html};

use super::{duration_words, ninety_days, svg, when};
use crate::history::rollup::DAY;
use crate::model::{CheckId, CheckStatus};
use crate::store::StoreError;
use crate::store::timeline;
use crate::store::webusers;
use crate::web::Web;
use crate::web::v1;

/// How long a badge is kept (and may be cached by a client).
pub const BADGE_TTL: Duration = Duration::from_secs(60);
/// How long a status page is kept (and may be cached by a client): a flood of visitors costs
/// the database one rendering per page per this long, and an outage shows within it.
pub const STATUS_TTL: Duration = Duration::from_secs(15);
/// Pages and badges kept at most; past it (a flood of made-up slugs) they are rendered
/// without being kept, each still bounded by the web pool.
pub const MAX_CACHED: usize = 1_000;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/status/{slug}", get(status_page))
        .route("/badge/{id}/status.svg", get(status_badge))
        .route("/badge/{id}/uptime/{file}", get(uptime_badge))
        .route("/badge/{id}/response-time/{file}", get(latency_badge))
}

/// A public answer as kept: status, content type and body.
#[derive(Clone)]
pub struct Rendered {
    status: StatusCode,
    kind: &'static str,
    body: String,
}

impl Rendered {
    fn html(status: StatusCode, body: Markup) -> Rendered {
        Rendered {
            status,
            kind: "text/html; charset=utf-8",
            body: body.into_string(),
        }
    }

    fn text(status: StatusCode, body: &str) -> Rendered {
        Rendered {
            status,
            kind: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    fn svg(body: String) -> Rendered {
        Rendered {
            status: StatusCode::OK,
            kind: "image/svg+xml",
            body,
        }
    }

    fn into_response(self, ttl: Duration) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, self.kind)], self.body).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", ttl.as_secs())) {
            r.headers_mut().insert(header::CACHE_CONTROL, v);
        }
        r
    }
}

/// One slot of a [`PublicCache`]: when it was made, and the answer once rendered. Callers
/// arriving while it renders wait for that one rendering.
type Slot = (Instant, Arc<tokio::sync::OnceCell<Rendered>>);

/// Rendered public answers (status pages, badges) by path, each kept for its TTL. A miss is
/// rendered once however many ask at the same time; a failed rendering is kept by nobody.
pub struct PublicCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Slot>>,
}

impl PublicCache {
    pub fn new(ttl: Duration) -> PublicCache {
        PublicCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The slot for `key`: the live one, a fresh one, or `None` when the cache is full.
    fn slot(&self, key: &str, now: Instant) -> Option<Arc<tokio::sync::OnceCell<Rendered>>> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, cell)) = map.get(key)
            && now.duration_since(*at) < self.ttl
        {
            return Some(cell.clone());
        }
        if map.len() >= MAX_CACHED {
            map.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if map.len() >= MAX_CACHED {
                return None;
            }
        }
        let cell = Arc::new(tokio::sync::OnceCell::new());
        map.insert(key.to_string(), (now, cell.clone()));
        Some(cell)
    }

    /// The answer for `key`, kept or made by `make`; an error is answered, not kept.
    async fn get_or_make(
        &self,
        key: &str,
        make: impl Future<Output = Result<Rendered, Response>>,
    ) -> Response {
        let made = match self.slot(key, Instant::now()) {
            Some(cell) => cell.get_or_try_init(|| make).await.cloned(),
            None => make.await,
        };
        match made {
            Ok(r) => r.into_response(self.ttl),
            Err(e) => e,
        }
    }
}

async fn status_page(State(web): State<Web>, Path(slug): Path<String>) -> Response {
    let key = format!("status/{slug}");
    web.status_pages
        .get_or_make(&key, render_status_page(&web, &slug))
        .await
}

/// A status page as everyone sees it.
async fn render_status_page(web: &Web, slug: &str) -> Result<Rendered, Response> {
    let now = v1::now_ms() / 1000;
    let Some(p) = webusers::status_page(&web.store, slug).await? else {
        let body = super::layout(
            "Error",
            None,
            html! { h1 { "Error" } p role="alert" { "no such status page" } },
        );
        return Ok(Rendered::html(StatusCode::NOT_FOUND, body));
    };
    let on_page = webusers::page_checks(&web.store, p.id).await?;
    let wanted: Vec<i64> = on_page.iter().map(|pc| pc.check.0).collect();
    let rows = services(web, &on_page, &wanted, now).await?;
    let incidents = timeline::incidents_of(&web.store, &wanted, now).await?;
    let names: HashMap<i64, &str> = rows
        .iter()
        .map(|(_, n, i, _)| (i.id.0, n.as_str()))
        .collect();
    let recent: Vec<_> = incidents
        .iter()
        .filter(|i| names.contains_key(&i.check.0))
        .filter(|i| i.end.is_none_or(|e| e > now - 7 * DAY))
        .take(20)
        .collect();
    let down = rows
        .iter()
        .filter(|(_, _, i, _)| i.enabled && i.status == CheckStatus::Offline)
        .count();
    let body = html! {
        h1 { (p.title) }
        @if !p.description.is_empty() { p { (p.description) } }
        @if down == 0 {
            p class="overall s-online" id="overall" { span aria-hidden="true" { "▲ " } "All systems operational" }
        } @else {
            p class="overall s-offline" id="overall" { span aria-hidden="true" { "▼ " } (down) " of " (rows.len()) " services down" }
        }
        @for (k, (group, name, info, days)) in rows.iter().enumerate() {
            @if !group.is_empty() && (k == 0 || rows[k - 1].0 != *group) {
                h2 { (group) }
            }
            @let (class, symbol, word) = super::state_of(info.status.as_str(), info.enabled, false);
            section class="service" id={ "service-" (info.id.0) } aria-label=(name) {
                h3 { (name) " " (super::state_html(class, symbol, word)) }
                (PreEscaped(svg::uptime_bar(days)))
                p class="muted" { "90 days; mean of the last 30 days with data: " (svg::percent(mean_of_days(&days[days.len().saturating_sub(30)..]))) }
            }
        }
        (recent_html(&recent, &names))
    };
    Ok(Rendered::html(
        StatusCode::OK,
        super::layout(&p.title, None, body),
    ))
}

/// One service of a status page: its group, its shown name, the check, its 90 days.
type Service = (
    String,
    String,
    timeline::CheckInfo,
    Vec<(String, Option<f64>)>,
);

/// The page's services in the page's order, with their 90-day bars.
async fn services(
    web: &Web,
    on_page: &[webusers::PageCheck],
    wanted: &[i64],
    now: i64,
) -> Result<Vec<Service>, StoreError> {
    let all = timeline::checks_in(&web.store, wanted).await?;
    let infos: HashMap<i64, timeline::CheckInfo> = all.into_iter().map(|c| (c.id.0, c)).collect();
    let shown: Vec<(&webusers::PageCheck, &timeline::CheckInfo)> = on_page
        .iter()
        .filter_map(|pc| Some((pc, infos.get(&pc.check.0)?)))
        .collect();
    let list: Vec<timeline::CheckInfo> = shown.iter().map(|(_, i)| (*i).clone()).collect();
    let bars = ninety_days(web, &list, now).await?;
    Ok(shown
        .into_iter()
        .zip(bars)
        .map(|((pc, info), days)| {
            let name = if pc.display_name.is_empty() {
                info.name.clone()
            } else {
                pc.display_name.clone()
            };
            (pc.group.clone(), name, info.clone(), days)
        })
        .collect())
}

/// The incidents of the last 7 days, in plain words.
fn recent_html(recent: &[&timeline::Incident], names: &HashMap<i64, &str>) -> Markup {
    html! {
        h2 { "Incidents, last 7 days" }
        @if recent.is_empty() { p { "No incidents." } }
        @else {
            ul class="public-incidents" {
                @for i in recent {
                    li {
                        @let name = names.get(&i.check.0).copied().unwrap_or("");
                        @match i.end {
                            None => { strong { (name) " is down" } " since " (when(i.start)) " (" (duration_words(i.duration)) " so far)." }
                            Some(e) => { (name) " was down from " (when(i.start)) " to " (when(e)) " (" (duration_words(i.duration)) ")." }
                        }
                    }
                }
            }
        }
    }
}

/// The mean of the days' ratios that have one.
fn mean_of_days(days: &[(String, Option<f64>)]) -> Option<f64> {
    let known: Vec<f64> = days.iter().filter_map(|d| d.1).collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

/// A badge for `id`, from the cache or made by `make`; 404 for a check on no public page.
async fn badge(
    web: &Web,
    id: i64,
    key: String,
    make: impl AsyncFnOnce(&Web, &timeline::CheckInfo) -> Result<String, crate::store::StoreError>,
) -> Response {
    let render = async {
        if !webusers::is_public(&web.store, CheckId(id)).await? {
            let why = "no badge: the check is on no public status page\n";
            return Ok(Rendered::text(StatusCode::NOT_FOUND, why));
        }
        let Some(info) = timeline::checks(&web.store, Some(CheckId(id))).await?.pop() else {
            return Ok(Rendered::text(StatusCode::NOT_FOUND, "no such check\n"));
        };
        Ok(Rendered::svg(make(web, &info).await?))
    };
    let render = async { render.await.map_err(|e: StoreError| Response::from(e)) };
    web.badges.get_or_make(&key, render).await
}

async fn status_badge(State(web): State<Web>, Path(id): Path<i64>) -> Response {
    badge(&web, id, format!("status/{id}"), async |_, info| {
        let (class, _, word) = super::state_of(info.status.as_str(), info.enabled, false);
        let class = match class {
            "online" => "good",
            "offline" => "bad",
            _ => "none",
        };
        let word = if word == "online" {
            "up"
        } else if word == "offline" {
            "down"
        } else {
            word
        };
        Ok(svg::badge("status", word, class))
    })
    .await
}

/// "24h.svg" and the like: the window's label and seconds, among `allowed`.
fn window_of(file: &str, allowed: &[&str]) -> Option<(&'static str, i64)> {
    let w = file.strip_suffix(".svg")?;
    if !allowed.contains(&w) {
        return None;
    }
    match w {
        "24h" => Some(("24h", DAY)),
        "7d" => Some(("7d", 7 * DAY)),
        "30d" => Some(("30d", 30 * DAY)),
        "90d" => Some(("90d", 90 * DAY)),
        _ => None,
    }
}

async fn uptime_badge(State(web): State<Web>, Path((id, file)): Path<(i64, String)>) -> Response {
    let Some((label, secs)) = window_of(&file, &["24h", "7d", "30d", "90d"]) else {
        return (
            StatusCode::NOT_FOUND,
            "expected 24h.svg, 7d.svg, 30d.svg or 90d.svg\n",
        )
            .into_response();
    };
    badge(
        &web,
        id,
        format!("uptime/{id}/{label}"),
        async |web, info| {
            let now = v1::now_ms() / 1000;
            let u = timeline::uptimes(
                &web.store,
                std::slice::from_ref(info),
                &[(now - secs, now)],
                now,
            )
            .await?
            .pop()
            .and_then(|mut u| u.pop())
            .and_then(|u| u.ratio);
            Ok(svg::badge(
                &format!("uptime {label}"),
                &svg::percent(u),
                svg::uptime_class(u),
            ))
        },
    )
    .await
}

async fn latency_badge(State(web): State<Web>, Path((id, file)): Path<(i64, String)>) -> Response {
    let Some((label, secs)) = window_of(&file, &["24h", "7d"]) else {
        return (StatusCode::NOT_FOUND, "expected 24h.svg or 7d.svg\n").into_response();
    };
    badge(
        &web,
        id,
        format!("latency/{id}/{label}"),
        async |web, info| {
            let now = v1::now_ms() / 1000;
            let series = timeline::series(&web.store, info.id, now - secs, now, None, None).await?;
            let mut all = crate::history::rollup::Latency::default();
            for r in series.values() {
                all.merge(&r.latency);
            }
            Ok(svg::badge(
                &format!("response {label}"),
                &svg::millis(all.mean_ms()),
                "info",
            ))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_windows_and_day_means() {
        assert_eq!(window_of("7d.svg", &["24h", "7d"]), Some(("7d", 7 * DAY)));
        assert_eq!(window_of("30d.svg", &["24h", "7d"]), None);
        assert_eq!(window_of("7d", &["7d"]), None);
        let days = vec![
            ("a".to_string(), Some(1.0)),
            ("b".into(), None),
            ("c".into(), Some(0.5)),
        ];
        assert_eq!(mean_of_days(&days), Some(0.75));
        assert_eq!(mean_of_days(&days[1..2]), None);
    }

    #[tokio::test]
    async fn the_cache_renders_a_miss_once_keeps_it_for_its_ttl_and_holds_a_bounded_number() {
        let c = PublicCache::new(BADGE_TTL);
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let make = || async {
            renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(Rendered::svg("<svg/>".into()))
        };
        // Concurrent misses share one rendering.
        let answers =
            futures_util::future::join_all((0..50).map(|_| c.get_or_make("k", make()))).await;
        assert!(answers.iter().all(|r| r.status() == StatusCode::OK));
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
        let t = Instant::now();
        let fresh = c.slot("k", t).unwrap();
        assert!(fresh.initialized());
        assert!(
            !c.slot("k", t + BADGE_TTL).unwrap().initialized(),
            "kept past its TTL"
        );
        // A failure is answered and not kept.
        let failed = c
            .get_or_make("e", async {
                Err(StatusCode::SERVICE_UNAVAILABLE.into_response())
            })
            .await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!c.slot("e", t).unwrap().initialized());
        for k in 0..2 * MAX_CACHED {
            let _ = c.slot(&format!("slug{k}"), t);
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_CACHED);
        assert!(c.slot("one-too-many", t).is_none());
    }
}
