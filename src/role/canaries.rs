//! A worker's canaries ([`crate::canary`]): every `canary_interval` the worker probes its own
//! `[worker] canaries` and the list the database sets for all workers (it arrives with poll
//! replies), feeds the round to the [`CanaryWindow`], and keeps the report its polls carry.
//! While it is impaired its own results go out as `fail`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::canary::{self, CanaryReport, CanaryRun, CanaryWindow, Turn};
use crate::model::CheckStatus;
use crate::probe::{self, ProbeContext};

/// A worker's canary state, shared by the canary loop and the runner.
pub struct Canaries {
    node: String,
    /// `[worker] canaries`.
    own: Vec<String>,
    /// The database's list, as the last poll reply carried it.
    shared: Mutex<Vec<String>>,
    changed: Notify,
    report: Mutex<Option<CanaryReport>>,
    impaired: AtomicBool,
    interval: Duration,
}

impl Canaries {
    pub fn new(node: &str, own: Vec<String>, interval: Duration) -> Canaries {
        Canaries {
            node: node.to_string(),
            own,
            shared: Mutex::new(Vec::new()),
            changed: Notify::new(),
            report: Mutex::new(None),
            impaired: AtomicBool::new(false),
            interval,
        }
    }

    /// What the next poll tells the controller; `None` while no canary is configured.
    pub fn report(&self) -> Option<CanaryReport> {
        lock(&self.report).clone()
    }

    /// Whether this worker is impaired now: its results cannot be trusted.
    pub fn impaired(&self) -> bool {
        self.impaired.load(Ordering::Relaxed)
    }

    /// The database's canaries, from a poll reply.
    pub fn set_shared(&self, urls: Vec<String>) {
        let mut shared = lock(&self.shared);
        if *shared != urls {
            *shared = urls;
            drop(shared);
            self.changed.notify_one();
        }
    }

    fn urls(&self) -> Vec<String> {
        let shared = lock(&self.shared);
        self.own.iter().chain(shared.iter()).cloned().collect()
    }

    /// Probes the canaries every interval until `shutdown`.
    pub async fn run(self: std::sync::Arc<Self>, ctx: ProbeContext, shutdown: CancellationToken) {
        let mut window = CanaryWindow::new();
        let mut tick = tokio::time::interval(self.interval);
        // A round that takes longer than the interval (a black-holed canary) delays the next.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut current: Vec<String> = Vec::new();
        let mut warned: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
            }
            let urls = self.urls();
            let (list, bad) = canary::parse_all(urls.iter().map(String::as_str));
            for e in bad {
                let shown = e.to_string();
                if !warned.contains(&shown) {
                    tracing::warn!(node = %self.node, error = %shown, "canary not run");
                    warned.push(shown);
                }
            }
            let names: Vec<String> = list.iter().map(|c| c.url.clone()).collect();
            if names != current {
                window.reset(names.len());
                current = names;
            }
            let runs = futures_util::future::join_all(list.iter().map(|c| {
                let ctx = &ctx;
                async move {
                    let failure = match probe::run(&c.spec, ctx).await {
                        Ok(o) if o.status == CheckStatus::Online => None,
                        Ok(o) => Some(o.message),
                        Err(e) => Some(e.to_string()),
                    };
                    CanaryRun {
                        url: c.url.clone(),
                        failure: failure
                            .map(|m| probe::cut_text(&m, 200).into_owned())
                            .map(|m| if m.is_empty() { "down".into() } else { m }),
                    }
                }
            }))
            .await;
            let turn = window.record(runs);
            let report = window.report();
            self.impaired.store(report.impaired, Ordering::Relaxed);
            match turn {
                Some(Turn::Impaired) => tracing::warn!(
                    node = %self.node,
                    failing = ?report.failing.iter().map(|f| &f.url).collect::<Vec<_>>(),
                    "impaired: most canaries fail; results count as fail until they recover"
                ),
                Some(Turn::Recovered) => {
                    tracing::info!(node = %self.node, "canaries recovered: no longer impaired")
                }
                None => {}
            }
            *lock(&self.report) = (report.canaries > 0).then_some(report);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
