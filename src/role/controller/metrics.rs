//! The per-check series on a controller-capable worker's `/metrics`.
//!
//! Gathered from MySQL (the recorded status of each check, the latest result of each check
//! from each worker, the flip and notification counts), so any controller-capable worker
//! answers a scrape, acting or not; the acting controller adds what only it holds: the
//! confirmed status as it stands this instant and which checks are in insufficient quorum.
//! The per-worker series use the names blackbox_exporter dashboards already use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::time::Instant;

use super::owner::{LiveCheck, Msg};
use super::{ControllerHost, ControllerSlot};
use crate::model::{CheckId, CheckStatus};
use crate::store::StoreError;
use crate::store::metrics::{self, CheckLine, FlipCounts, NotificationCount, ProbeLine};

/// A gathered set is served again to scrapes within this long of it (several Prometheus
/// servers, or one behind a load balancer, do not each cost a read).
const REUSE_FOR: Duration = Duration::from_secs(5);

/// The http phases of `probe_http_duration_seconds`, blackbox_exporter's names.
const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// What the metrics keep between scrapes.
#[derive(Default)]
pub(crate) struct MetricsCache {
    flips: FlipCounts,
    last: Option<(Instant, Arc<CheckMetrics>)>,
}

/// One scrape's per-check series.
#[derive(Debug, Default)]
pub struct CheckMetrics {
    checks: Vec<CheckLine>,
    /// From the acting controller: which checks are in insufficient quorum (`None` when this
    /// node is not acting, so the series is left out rather than guessed).
    short: Option<HashMap<CheckId, bool>>,
    flips: HashMap<CheckId, u64>,
    probes: Vec<ProbeLine>,
    notifications: Vec<NotificationCount>,
    oldest_pending: Option<Duration>,
}

/// The per-check series as of now (or of a gathering less than [`REUSE_FOR`] old).
pub async fn gather(
    host: &ControllerHost,
    slot: &ControllerSlot,
) -> Result<Arc<CheckMetrics>, StoreError> {
    let mut cache = host.metrics.lock().await;
    if let Some((at, m)) = &cache.last
        && at.elapsed() < REUSE_FOR
    {
        return Ok(m.clone());
    }
    // The web pools: a scrape storm waits on them, never on the controller's.
    let store = &host.web_store;
    let mut checks = metrics::checks(store).await?;
    let live = match slot.handle() {
        Some(term) => term.ask(|reply| Msg::Live { reply }).await,
        None => None,
    };
    let short = live.map(|live| overlay(&mut checks, &live));
    let flips = cache.flips.refresh(store).await?.clone();
    let probes = if host.config.metrics_per_worker {
        metrics::probes(store).await?
    } else {
        Vec::new()
    };
    let gathered = Arc::new(CheckMetrics {
        checks,
        short,
        flips,
        probes,
        notifications: metrics::notifications(store).await?,
        oldest_pending: crate::store::outbox::oldest_pending(store).await?,
    });
    cache.last = Some((Instant::now(), gathered.clone()));
    Ok(gathered)
}

/// Takes the acting controller's confirmed status over the recorded one (a flip is decided
/// before it is recorded); returns which checks are in insufficient quorum.
fn overlay(checks: &mut [CheckLine], live: &[LiveCheck]) -> HashMap<CheckId, bool> {
    let by_id: HashMap<CheckId, &LiveCheck> = live.iter().map(|l| (l.id, l)).collect();
    for c in checks.iter_mut() {
        if let Some(l) = by_id.get(&c.id) {
            c.status = l.status;
        }
    }
    live.iter().map(|l| (l.id, l.insufficient_quorum)).collect()
}

impl CheckMetrics {
    fn check_labels(c: &CheckLine) -> [(&'static str, String); 3] {
        [
            ("check_id", c.id.0.to_string()),
            ("check", c.name.clone()),
            ("type", c.check_type.clone()),
        ]
    }

    fn encode_checks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.checks.is_empty() {
            return Ok(());
        }
        let mut up = encoder.encode_descriptor(
            "gobearmon_check_up",
            "Confirmed status of the check: 1 online, 0 offline.",
            None,
            MetricType::Gauge,
        )?;
        for c in &self.checks {
            let v = i64::from(c.status == CheckStatus::Online);
            ConstGauge::new(v).encode(up.encode_family(&Self::check_labels(c))?)?;
        }
        let mut flips = encoder.encode_descriptor(
            "gobearmon_check_flips",
            "Flips recorded for the check (check_events rows).",
            None,
            MetricType::Counter,
        )?;
        for c in &self.checks {
            let n = self.flips.get(&c.id).copied().unwrap_or(0);
            ConstCounter::new(n).encode(flips.encode_family(&Self::check_labels(c))?)?;
        }
        if let Some(short) = &self.short {
            let mut q = encoder.encode_descriptor(
                "gobearmon_check_insufficient_quorum",
                "1 while the check has fewer live workers than its confirmations (served by the acting controller only).",
                None,
                MetricType::Gauge,
            )?;
            for c in &self.checks {
                let v = i64::from(short.get(&c.id).copied().unwrap_or(false));
                ConstGauge::new(v).encode(q.encode_family(&Self::check_labels(c))?)?;
            }
        }
        Ok(())
    }

    fn encode_probes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.probes.is_empty() {
            return Ok(());
        }
        // Each family only when it has samples (an empty family is legal but some parsers
        // reject it).
        let names: HashMap<CheckId, &str> = self
            .checks
            .iter()
            .map(|c| (c.id, c.name.as_str()))
            .collect();
        // Only results of checks still listed (one deleted between the two reads is left out).
        let listed: Vec<(&ProbeLine, &str, String)> = self
            .probes
            .iter()
            .filter_map(|p| names.get(&p.check).map(|n| (p, *n, p.check.0.to_string())))
            .collect();
        let lines: Vec<(&ProbeLine, [(&str, &str); 4])> = listed
            .iter()
            .map(|(p, name, id)| {
                let set = [
                    ("check_id", id.as_str()),
                    ("check", *name),
                    ("worker", p.worker.as_str()),
                    ("location", p.location.as_str()),
                ];
                (*p, set)
            })
            .collect();
        let mut success = encoder.encode_descriptor(
            "probe_success",
            "Whether the worker's latest run found the check online (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for l in &lines {
            ConstGauge::new(i64::from(l.0.online)).encode(success.encode_family(&l.1)?)?;
        }
        let mut duration = encoder.encode_descriptor(
            "probe_duration_seconds",
            "How long the worker's latest run took.",
            None,
            MetricType::Gauge,
        )?;
        for l in &lines {
            let secs = l.0.duration_ms as f64 / 1000.0;
            ConstGauge::new(secs).encode(duration.encode_family(&l.1)?)?;
        }
        let has = |f: fn(&ProbeLine) -> bool| lines.iter().any(|l| f(l.0));
        if has(|p| p.http_status.is_some()) {
            self.encode_status_codes(encoder, &lines)?;
        }
        if has(|p| p.cert_expiry.is_some()) {
            self.encode_expiry(encoder, &lines)?;
        }
        if has(|p| p.timing.is_some()) {
            self.encode_phases(encoder, &lines)?;
        }
        Ok(())
    }

    fn encode_status_codes(
        &self,
        encoder: &mut DescriptorEncoder,
        lines: &[(&ProbeLine, [(&str, &str); 4])],
    ) -> Result<(), std::fmt::Error> {
        let mut status = encoder.encode_descriptor(
            "probe_http_status_code",
            "Status code of the final http response of the worker's latest run.",
            None,
            MetricType::Gauge,
        )?;
        for l in lines.iter().filter(|l| l.0.http_status.is_some()) {
            let code = i64::from(l.0.http_status.unwrap_or(0));
            ConstGauge::new(code).encode(status.encode_family(&l.1)?)?;
        }
        Ok(())
    }

    fn encode_expiry(
        &self,
        encoder: &mut DescriptorEncoder,
        lines: &[(&ProbeLine, [(&str, &str); 4])],
    ) -> Result<(), std::fmt::Error> {
        let mut expiry = encoder.encode_descriptor(
            "probe_ssl_earliest_cert_expiry",
            "Unix time of the earliest certificate expiry seen by the worker's latest run.",
            None,
            MetricType::Gauge,
        )?;
        for l in lines.iter().filter(|l| l.0.cert_expiry.is_some()) {
            let at = l.0.cert_expiry.unwrap_or(0);
            ConstGauge::new(at).encode(expiry.encode_family(&l.1)?)?;
        }
        Ok(())
    }

    fn encode_phases(
        &self,
        encoder: &mut DescriptorEncoder,
        lines: &[(&ProbeLine, [(&str, &str); 4])],
    ) -> Result<(), std::fmt::Error> {
        let mut phases = encoder.encode_descriptor(
            "probe_http_duration_seconds",
            "Duration of each phase of the worker's latest http run.",
            None,
            MetricType::Gauge,
        )?;
        for l in lines {
            let Some(ends) = l.0.timing else { continue };
            for (phase, secs) in PHASES.iter().zip(phase_seconds(ends)) {
                let set = (l.1, [("phase", *phase)]);
                ConstGauge::new(secs).encode(phases.encode_family(&set)?)?;
            }
        }
        Ok(())
    }

    fn encode_notifications(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.notifications.is_empty() {
            self.encode_sent(encoder)?;
        }
        let oldest = encoder.encode_descriptor(
            "gobearmon_notification_oldest_pending_seconds",
            "Age of the oldest notification still pending (0 when none is).",
            None,
            MetricType::Gauge,
        )?;
        let age = self.oldest_pending.map_or(0.0, |d| d.as_secs_f64());
        ConstGauge::new(age).encode(oldest)
    }

    fn encode_sent(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut sent = encoder.encode_descriptor(
            "gobearmon_notifications",
            "Notifications that reached a final state (sent, or failed after every attempt), by channel.",
            None,
            MetricType::Counter,
        )?;
        for n in &self.notifications {
            let set = [("channel", n.channel.as_str()), ("state", n.state.as_str())];
            ConstCounter::new(n.count).encode(sent.encode_family(&set)?)?;
        }
        Ok(())
    }
}

/// How long each phase took, from when each ended: resolve, connect, tls, processing (to the
/// first byte), transfer (to the end). A phase a worker reported out of order counts 0.
fn phase_seconds(ends: [f64; 5]) -> [f64; 5] {
    let mut out = [0.0; 5];
    let mut before = 0.0;
    for (slot, end) in out.iter_mut().zip(ends) {
        *slot = ((end - before).max(0.0)) / 1000.0;
        before = end.max(before);
    }
    out
}

impl Collector for CheckMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = encoder.encode_descriptor(
            "gobearmon_check_metrics_live",
            "1 when the per-check series come from the acting controller, 0 when read from MySQL by a standby.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.short.is_some())).encode(live)?;
        self.encode_checks(&mut encoder)?;
        self.encode_probes(&mut encoder)?;
        self.encode_notifications(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_the_gaps_between_their_ends() {
        let got = phase_seconds([2.0, 5.0, 9.0, 19.0, 20.0]);
        let want = [0.002, 0.003, 0.004, 0.010, 0.001];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
        // Out of order: never negative.
        assert_eq!(phase_seconds([5.0, 3.0, 6.0, 6.0, 6.0])[1], 0.0);
    }

    fn render(m: CheckMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn probe(check: i64, worker: &str) -> ProbeLine {
        ProbeLine {
            check: CheckId(check),
            worker: worker.into(),
            location: "fra".into(),
            online: true,
            duration_ms: 1500,
            http_status: None,
            cert_expiry: None,
            timing: None,
        }
    }

    /// Two checks, one of them an https check with every detail, and the rest of a scrape.
    fn fixture() -> CheckMetrics {
        let line = |id, name: &str, t: &str, status| CheckLine {
            id: CheckId(id),
            name: name.into(),
            check_type: t.into(),
            status,
        };
        let mut https = probe(7, "w1");
        https.http_status = Some(503);
        https.cert_expiry = Some(1_900_000_000);
        https.timing = Some([1.0, 3.0, 7.0, 17.0, 20.0]);
        https.online = false;
        CheckMetrics {
            checks: vec![
                line(7, "shop", "http", CheckStatus::Offline),
                line(8, "db", "tcp", CheckStatus::Online),
            ],
            short: Some(HashMap::from([(CheckId(8), true)])),
            flips: HashMap::from([(CheckId(7), 3)]),
            // A result for check 9, deleted between the reads, is left out.
            probes: vec![https, probe(8, "w2"), probe(9, "w2")],
            notifications: vec![NotificationCount {
                channel: "email".into(),
                state: "failed".into(),
                count: 2,
            }],
            oldest_pending: Some(Duration::from_millis(2500)),
        }
    }

    #[test]
    fn every_series_has_its_labels_and_value() {
        let text = render(fixture());
        let labels = r#"check_id="7",check="shop",worker="w1",location="fra""#;
        for want in [
            "gobearmon_check_metrics_live 1\n".to_string(),
            r#"gobearmon_check_up{check_id="7",check="shop",type="http"} 0"#.into(),
            r#"gobearmon_check_up{check_id="8",check="db",type="tcp"} 1"#.into(),
            r#"gobearmon_check_flips_total{check_id="7",check="shop",type="http"} 3"#.into(),
            r#"gobearmon_check_flips_total{check_id="8",check="db",type="tcp"} 0"#.into(),
            r#"gobearmon_check_insufficient_quorum{check_id="8",check="db",type="tcp"} 1"#.into(),
            r#"gobearmon_check_insufficient_quorum{check_id="7",check="shop",type="http"} 0"#
                .into(),
            format!("probe_success{{{labels}}} 0"),
            r#"probe_success{check_id="8",check="db",worker="w2",location="fra"} 1"#.into(),
            format!("probe_duration_seconds{{{labels}}} 1.5"),
            format!("probe_http_status_code{{{labels}}} 503"),
            format!("probe_ssl_earliest_cert_expiry{{{labels}}} 1900000000"),
            format!(r#"probe_http_duration_seconds{{{labels},phase="tls"}} 0.004"#),
            format!(r#"probe_http_duration_seconds{{{labels},phase="processing"}} 0.01"#),
            r#"gobearmon_notifications_total{channel="email",state="failed"} 2"#.into(),
            "gobearmon_notification_oldest_pending_seconds 2.5".into(),
        ] {
            assert!(text.contains(&want), "{want}\nnot in\n{text}");
        }
        assert!(!text.contains("check_id=\"9\""), "{text}");
        // Only the checks with such a result have the http and certificate series.
        assert!(
            !text.contains(r#"probe_http_status_code{check_id="8""#),
            "{text}"
        );
    }

    /// The metric names a PromQL text refers to (ours all start with these prefixes).
    pub(crate) fn metric_names(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        for start in ["gobearmon_", "probe_"] {
            for (i, _) in text.match_indices(start) {
                let before = text[..i].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn the_grafana_dashboard_uses_only_series_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../scripts/grafana/gobearmon.json")).unwrap();
        let mut exprs = String::new();
        let mut stack = vec![&dashboard];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "definition", serde_json::Value::String(e)) => {
                                exprs.push_str(e);
                                exprs.push('\n');
                            }
                            _ => stack.push(v),
                        }
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        let used = metric_names(&exprs);
        assert!(used.len() >= 10, "{used:?}");
        // The per-check series as rendered, and the node's own (worker.rs).
        let rendered = render(fixture());
        let node = include_str!("../worker.rs");
        for name in used {
            let per_check = rendered.contains(&format!("\n{name}{{"))
                || rendered.contains(&format!("\n{name} "));
            let own = name.strip_prefix("gobearmon_").is_some_and(|n| {
                let n = n.strip_suffix("_total").unwrap_or(n);
                node.contains(&format!("\"{n}\","))
            });
            assert!(
                per_check || own,
                "the dashboard uses {name}, which no node serves"
            );
        }
    }

    #[test]
    fn a_standby_leaves_out_what_only_the_acting_controller_knows() {
        let text = render(CheckMetrics {
            checks: vec![CheckLine {
                id: CheckId(1),
                name: "a".into(),
                check_type: "tcp".into(),
                status: CheckStatus::Online,
            }],
            ..CheckMetrics::default()
        });
        assert!(text.contains("gobearmon_check_metrics_live 0\n"), "{text}");
        assert!(text.contains("gobearmon_check_up{"), "{text}");
        assert!(!text.contains("insufficient_quorum"), "{text}");
        assert!(!text.contains("probe_"), "{text}");
    }
}
