//! What the dashboard shows from the acting controller and the viewserver group, beside MySQL:
//! the workers page, and which checks are short of quorum (only the controller's engine knows).

use std::collections::HashSet;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

use super::{duration_words, page, require};
use crate::role::controller::status::ClusterSummary;
use crate::store::timeline;
use crate::web::{Web, v1};

/// The acting controller's brief view, if one answers within a second.
pub(super) async fn summary(web: &Web) -> Option<ClusterSummary> {
    let c = web.cluster.as_ref()?;
    tokio::time::timeout(std::time::Duration::from_secs(1), (c.ask)())
        .await
        .ok()?
}

/// Which checks the acting controller cannot flip for want of live workers.
pub(super) enum Quorum {
    /// No controller answered: nobody can say.
    Unknown,
    Short(HashSet<i64>),
}

impl Quorum {
    pub fn of(summary: Option<&ClusterSummary>) -> Quorum {
        match summary {
            None => Quorum::Unknown,
            Some(s) => Quorum::Short(s.insufficient_quorum.iter().map(|c| c.0).collect()),
        }
    }

    pub fn short(&self, id: i64) -> bool {
        matches!(self, Quorum::Short(s) if s.contains(&id))
    }

    /// The overview's words for it.
    pub fn words(&self) -> String {
        match self {
            Quorum::Unknown => "quorum unknown (the acting controller did not answer)".into(),
            Quorum::Short(s) => format!("{} short of quorum", s.len()),
        }
    }
}

/// Workers from the stored results, with what the acting controller adds (in flight, queued,
/// runs per second, impaired), and the viewserver group with its leader.
pub(super) async fn workers_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    let user = match require(&web, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let now_ms = v1::now_ms();
    let (workers, fence, live) = tokio::join!(
        timeline::workers(&web.store),
        timeline::fence_holder(&web.store),
        summary(&web)
    );
    let (workers, fence) = match (workers, fence) {
        (Ok(w), Ok(f)) => (w, f),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let controller = fence.as_ref().map(|(_, c)| c.as_str());
    let seen = |id: &str| {
        live.as_ref()
            .and_then(|l| l.workers.iter().find(|w| w.id == id))
    };
    let members = web
        .cluster
        .as_ref()
        .map(|c| c.viewservers.clone())
        .unwrap_or_default();
    let leader = live.as_ref().and_then(|l| l.viewserver_leader.clone());
    let body = html! {
        h1 { "Workers" }
        p { @match &fence {
            Some((epoch, c)) => { "Controller: " strong { (c) } " (epoch " (epoch) ")." }
            None => { "No controller has held the fence yet." }
        } }
        @match &live {
            Some(l) => p { (l.live_workers) " of " (l.workers.len()) " workers live as the controller sees them; it holds " (l.checks) " enabled " (if l.checks == 1 { "check" } else { "checks" }) "." },
            None => p class="warn" { "The acting controller did not answer: in flight, queued and runs per second are unknown." },
        }
        p class="muted" { "Last result and stale are from the stored results: a worker is stale when its latest result is over 2 minutes old." }
        table {
            thead { tr { th scope="col" { "Worker" } th scope="col" { "Location" } th scope="col" { "Last result" }
                th scope="col" { "State" } th scope="col" { "Checks with results" } th scope="col" { "Runs / s" }
                th scope="col" { "In flight" } th scope="col" { "Queued" } th scope="col" { "Role" } } }
            tbody { @for w in &workers {
                @let age = (now_ms - w.last_result_ms) / 1000;
                @let s = seen(&w.node.0);
                tr id={ "worker-" (w.node.0) } {
                    th scope="row" { (w.node.0) } td { (w.location) } td { (duration_words(age.max(0))) " ago" }
                    td { @if age > 120 { span class="status s-offline" { "▼ stale" } }
                         @else if s.is_some_and(|s| s.impaired) { span class="status s-maint" { "◆ impaired" } }
                         @else { span class="status s-online" { "▲ live" } } }
                    td class="num" { (w.checks) }
                    @match s {
                        Some(s) => {
                            td class="num runs" { (format!("{:.1}", s.runs_per_second)) }
                            td class="num" { (s.checks_in_flight) } td class="num" { (s.queued) }
                        }
                        None => { td class="muted" { "?" } td class="muted" { "?" } td class="muted" { "?" } }
                    }
                    td { @if controller == Some(w.node.0.as_str()) { "controller" } }
                }
            } }
        }
        h2 { "Viewserver group" }
        @if members.is_empty() { p class="muted" { "This node names no viewserver members." } }
        @else {
            ul class="members" { @for m in &members {
                li { (m) @if leader.as_deref() == Some(m.as_str()) { " — " strong { "leader" } } }
            } }
            @if leader.is_none() { p class="muted" { "Leader unknown: no controller answered." } }
        }
    };
    page("Workers", Some(&user), body)
}
