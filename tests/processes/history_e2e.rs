//! History end to end: the built binary as separate processes (one viewserver, three
//! workers), real MariaDB and a webhook receiver. A check is taken down and up twice; the
//! controller's own write path fills the raw history, and the incidents and the uptime read
//! back match what the test saw.

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gobearmon::model::CheckId;
use gobearmon::store::timeline;
use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, keys};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver};

fn now_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const TOKEN: &str = "e2e-api-token-0123456789";
const SECRET: &str = "s3cret-in-the-check-data";

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
}

impl World {
    fn start(tag: &str) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, store) = rt.block_on(TestDb::installed(tag));
        rt.block_on(store.close());
        let cluster = Cluster::builder(crate::BIN, &db.url)
            .workers(3)
            .controller_keys(keys([
                ("confirmations", 2.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_backoff_max", Ms(1000).into()),
                ("delivery_timeout", Ms(3000).into()),
            ]))
            .web(&[TOKEN])
            .start();
        World {
            rt,
            db: Some(db),
            cluster,
        }
    }

    /// The `[web] addr` of worker `i`.
    fn web_addr(&self, i: usize) -> String {
        self.cluster.web_addr(i).to_string()
    }

    /// GETs `path` from worker `i`'s JSON API.
    fn api(&self, i: usize, path: &str, token: Option<&str>) -> (u16, String) {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = http.get(format!("http://{}{path}", self.web_addr(i)));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    fn db(&self) -> &TestDb {
        self.db.as_ref().unwrap()
    }

    fn sql(&self, sql: &str) {
        self.rt.block_on(self.db().exec(sql));
    }

    fn one<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        self.rt.block_on(async {
            let mut c = self.db().conn().await;
            c.query_first(sql).await.unwrap().unwrap()
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

#[test]
fn two_outages_make_two_incidents_with_their_notifications_and_the_uptime_to_the_second() {
    let _serial = testkit::cluster::serial();
    let w = World::start("hist_e2e");
    let hook = w.rt.block_on(Receiver::start(Behaviour::Status(200)));
    let port = testkit::cluster::free_port();
    let mut listener = Some(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let web = http_server(418);
    w.sql(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
           (1,'svc','tcp','{{\"address\":\"127.0.0.1:{port}\",\"timeout\":3,\"password\":\"{SECRET}\"}}',1,0),
           (2,'web \\\"front\\\"','http','{{\"url\":\"http://{web}/\",\"expect_status\":418}}',1,0);
         INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');",
        hook.url("/hook")
    ));
    wait_until(Duration::from_secs(30), "a controller to act", || {
        w.cluster.acting_controller()
    });
    // The controller's own write path: raw rows from the workers, with their locations.
    wait_until(Duration::from_secs(30), "raw history rows", || {
        let n: i64 = w.one("SELECT COUNT(*) FROM result_history WHERE check_id = 1");
        (n >= 3).then_some(())
    });
    let from = now_f().floor() as i64;
    let status = || -> String { w.one("SELECT status FROM checks WHERE id = 1") };
    let offline_rows = || -> i64 {
        w.one("SELECT COUNT(*) FROM result_history WHERE check_id = 1 AND status = 'offline'")
    };
    let mut seen = Vec::new();
    for _ in 0..2 {
        drop(listener.take());
        wait_until(Duration::from_secs(30), "offline", || {
            (status() == "offline").then_some(())
        });
        let down_at = now_f();
        // Stay down for a few more runs (a condition, not a pause).
        let before = offline_rows();
        wait_until(Duration::from_secs(30), "more offline results", || {
            (offline_rows() >= before + 6).then_some(())
        });
        listener = Some(TcpListener::bind(("127.0.0.1", port)).unwrap());
        wait_until(Duration::from_secs(30), "online", || {
            (status() == "online").then_some(())
        });
        seen.push(now_f() - down_at);
    }
    // The service stays up to the end: a fifth flip would race the reads below.
    let _up = listener;
    w.rt.block_on(hook.wait_count(4));
    wait_until(Duration::from_secs(30), "every notification sent", || {
        let sent: i64 = w.one("SELECT COUNT(*) FROM notification_outbox WHERE state = 'sent'");
        (sent == 4).then_some(())
    });
    let to = now_f().ceil() as i64;
    let store = w.db().store();
    let now = to + 5;
    let incidents =
        w.rt.block_on(timeline::incidents(&store, Some(CheckId(1)), false, now))
            .unwrap();
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    let events: Vec<(i64, String, i64)> = w.rt.block_on(async {
        let mut c = w.db().conn().await;
        c.query("SELECT id, type, UNIX_TIMESTAMP(time) FROM check_events WHERE check_id = 1 ORDER BY id")
            .await
            .unwrap()
    });
    assert_eq!(events.len(), 4, "{events:?}");
    // Newest first; each incident runs from an offline event to the next online one.
    for (k, inc) in incidents.iter().rev().enumerate() {
        let (off, on) = (&events[2 * k], &events[2 * k + 1]);
        assert_eq!((off.1.as_str(), on.1.as_str()), ("offline", "online"));
        assert_eq!(inc.id, off.0);
        assert_eq!((inc.start, inc.end), (off.2, Some(on.2)));
        assert_eq!(inc.duration, on.2 - off.2);
        // Event times are whole seconds (check_events.time); the test saw the flips within
        // a poll of 50 ms.
        assert!(
            (inc.duration as f64 - seen[k]).abs() <= 1.2,
            "incident {k}: {} s recorded, {:.2} s seen",
            inc.duration,
            seen[k]
        );
        assert!(
            inc.message
                .as_deref()
                .is_some_and(|m| m.starts_with("TCP connection error")),
            "{inc:?}"
        );
        assert_eq!(inc.confirmed_by.len(), 2, "{inc:?}");
        assert_eq!(inc.notifications.len(), 2, "offline and online: {inc:?}");
        let mut notified: Vec<i64> = inc.notifications.iter().map(|n| n.event_id).collect();
        notified.sort_unstable();
        assert_eq!(notified, vec![off.0, on.0]);
        for n in &inc.notifications {
            assert_eq!(n.state, "sent");
            assert_eq!(n.contact_type.as_deref(), Some("http"));
            assert!(n.sent_ms.is_some());
        }
    }
    let open =
        w.rt.block_on(timeline::incidents(&store, None, true, now))
            .unwrap();
    assert!(open.is_empty(), "{open:?}");

    let up =
        w.rt.block_on(timeline::uptime_of(&store, CheckId(1), from, to, now))
            .unwrap()
            .unwrap();
    assert!(up.complete, "{up:?}");
    let recorded: i64 = incidents.iter().map(|i| i.duration).sum();
    assert_eq!(up.down_seconds, recorded);
    assert_eq!(up.up_seconds + up.down_seconds, to - from);
    let seen_total: f64 = seen.iter().sum();
    assert!(
        (up.down_seconds as f64 - seen_total).abs() <= 2.4,
        "{} s down recorded, {seen_total:.2} s seen",
        up.down_seconds
    );
    // A window that starts before the history says so and covers only what is known.
    let began =
        w.rt.block_on(timeline::history_start(&store, CheckId(1)))
            .unwrap()
            .unwrap();
    let long =
        w.rt.block_on(timeline::uptime_of(
            &store,
            CheckId(1),
            from - 86_400,
            to,
            now,
        ))
        .unwrap()
        .unwrap();
    assert!(!long.complete);
    assert_eq!(long.covered, Some((began, to)));
    assert_eq!(long.down_seconds, recorded);
    w.rt.block_on(store.close());

    // The JSON API of a worker that is not acting answers the same from the database.
    let acting = w.cluster.acting_controller().unwrap();
    let other = (acting + 1) % 3;
    let q = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut bodies = String::new();
    let openapi: serde_json::Value =
        serde_json::from_str(include_str!("../../openapi.v1.json")).unwrap();
    let live_schema = jsonschema::validator_for(&openapi["components"]["schemas"]["Live"]).unwrap();
    for i in [other, acting] {
        let (code, body) = w.api(i, "/api/v1/checks/1/incidents", Some(TOKEN));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let list = v["incidents"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{body}");
        assert_eq!(list[0]["duration_seconds"], incidents[0].duration);
        assert_eq!(list[1]["notifications"].as_array().unwrap().len(), 2);
        bodies.push_str(&body);
        let (code, body) = w.api(
            i,
            &format!("/api/v1/checks/1/uptime?from={}&to={}", q(from), q(to)),
            Some(TOKEN),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["down_seconds"], up.down_seconds, "{body}");
        assert_eq!(v["locations"].as_array().unwrap().len(), 3, "{body}");
        bodies.push_str(&body);
        for path in ["/api/v1/checks", "/api/v1/workers", "/api/v1/notifications"] {
            let (code, body) = w.api(i, path, Some(TOKEN));
            assert_eq!(code, 200, "{path}: {body}");
            bodies.push_str(&body);
        }
        // One check's answer adds the acting controller's live state, on either node.
        let (code, body) = w.api(i, "/api/v1/checks/1", Some(TOKEN));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let live = &v["live"];
        assert_eq!(live["confirmations"], 2, "{body}");
        assert_eq!(live["insufficient_quorum"], false, "{body}");
        assert!(!live["results"].as_array().unwrap().is_empty(), "{body}");
        let errors: Vec<String> = live_schema
            .iter_errors(live)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}: {body}");
        // The list carries no live state (one request per check would be too many).
        let (_, body) = w.api(i, "/api/v1/checks", Some(TOKEN));
        assert!(!body.contains("\"live\""), "{body}");
        let (code, _) = w.api(i, "/api/v1/checks", None);
        assert_eq!(code, 401);
        let (code, _) = w.api(i, "/api/v1/checks", Some("not-the-token-at-all"));
        assert_eq!(code, 401);
    }
    assert!(bodies.contains("\"status\":\"online\""), "{bodies}");

    // /metrics of the acting controller and of a standby, parsed by a Prometheus parser.
    let workers = |m: &Metrics, name: &str, check: &str| -> Vec<(String, String, f64)> {
        m.samples(name, &[("check_id", check)])
            .into_iter()
            .map(|(l, v)| (l["worker"].clone(), l["location"].clone(), v))
            .collect()
    };
    for (i, acting_here) in [(other, false), (acting, true)] {
        let addr = w.cluster.worker_addrs[i].clone();
        let m = wait_until(
            Duration::from_secs(30),
            "every worker's latest result in /metrics",
            || {
                let m = Metrics::scrape(&w.cluster, &addr);
                let ok = workers(&m, "probe_success", "1");
                (ok.len() == 3 && ok.iter().all(|r| r.2 == 1.0)).then_some(m)
            },
        );
        let up = m.samples("gobearmon_check_up", &[("check_id", "1")]);
        assert_eq!(up.len(), 1, "{}", m.text);
        assert_eq!(up[0].0["check"], "svc");
        assert_eq!(up[0].0["type"], "tcp");
        assert_eq!(up[0].1, 1.0);
        assert_eq!(
            m.value("gobearmon_check_flips", &[("check_id", "1")]),
            Some(4.0)
        );
        assert_eq!(
            m.value("gobearmon_check_flips", &[("check_id", "2")]),
            Some(0.0)
        );
        // A name with quotes survives the label escaping.
        assert_eq!(
            m.samples("gobearmon_check_up", &[("check_id", "2")])[0].0["check"],
            "web \"front\""
        );
        let mut seen: Vec<String> = workers(&m, "probe_duration_seconds", "1")
            .into_iter()
            .map(|(worker, location, secs)| {
                assert!((0.0..3.0).contains(&secs), "{secs}");
                assert_eq!(location, worker, "no [worker] location: the node id");
                worker
            })
            .collect();
        seen.sort();
        let mut ids = w.cluster.worker_ids.clone();
        ids.sort();
        assert_eq!(seen, ids);
        let codes = workers(&m, "probe_http_status_code", "2");
        assert_eq!(codes.len(), 3, "{}", m.text);
        assert!(codes.iter().all(|c| c.2 == 418.0), "{codes:?}");
        assert!(
            m.samples("probe_http_status_code", &[("check_id", "1")])
                .is_empty()
        );
        // The http check's phases, one series per worker and phase, never negative.
        let phases = m.samples("probe_http_duration_seconds", &[("check_id", "2")]);
        assert_eq!(phases.len(), 15, "{}", m.text);
        for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
            let of: Vec<_> = phases.iter().filter(|p| p.0["phase"] == phase).collect();
            assert_eq!(of.len(), 3, "{phase}: {}", m.text);
            assert!(
                of.iter().all(|p| (0.0..3.0).contains(&p.1)),
                "{phase}: {of:?}"
            );
        }
        assert_eq!(
            m.value(
                "gobearmon_notifications",
                &[("channel", "http"), ("state", "sent")]
            ),
            Some(4.0)
        );
        assert_eq!(
            m.value("gobearmon_notification_oldest_pending_seconds", &[]),
            Some(0.0)
        );
        // Only the acting controller knows which checks are short of workers.
        let live = if acting_here { 1.0 } else { 0.0 };
        assert_eq!(m.value("gobearmon_check_metrics_live", &[]), Some(live));
        assert_eq!(m.value("gobearmon_check_metrics_up", &[]), Some(1.0));
        let short = m.value("gobearmon_check_insufficient_quorum", &[("check_id", "1")]);
        assert_eq!(short, acting_here.then_some(0.0), "{}", m.text);
        bodies.push_str(&m.text);
    }
    assert!(
        !bodies.contains(SECRET),
        "the check's secret appears in an answer"
    );
}

/// A `/metrics` page, parsed by an OpenMetrics parser (which also checks the syntax: escapes,
/// one type per family, counters ending in `_total`, the closing `# EOF`).
struct Metrics {
    text: String,
    parsed: openmetrics_parser::MetricsExposition<
        openmetrics_parser::OpenMetricsType,
        openmetrics_parser::OpenMetricsValue,
    >,
}

impl Metrics {
    fn scrape(cluster: &Cluster, addr: &str) -> Metrics {
        let (code, text) = cluster.get(addr, "/metrics").expect("/metrics answers");
        assert_eq!(code, 200, "{text}");
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("not OpenMetrics text: {e:?}\n{text}"));
        Metrics { text, parsed }
    }

    /// The samples of family `name` whose labels include `want`, with all their labels.
    fn samples(
        &self,
        name: &str,
        want: &[(&str, &str)],
    ) -> Vec<(std::collections::HashMap<String, String>, f64)> {
        use openmetrics_parser::OpenMetricsValue as V;
        let Some(family) = self.parsed.families.get(name) else {
            return Vec::new();
        };
        family
            .iter_samples()
            .filter_map(|s| {
                let set = s.get_labelset().unwrap();
                let labels: std::collections::HashMap<String, String> =
                    set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                if !want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                {
                    return None;
                }
                let v = match &s.value {
                    V::Gauge(n) | V::Unknown(n) => n.as_f64(),
                    V::Counter(c) => c.value.as_f64(),
                    other => panic!("{name}: unexpected {other:?}"),
                };
                Some((labels, v))
            })
            .collect()
    }

    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let found = self.samples(name, want);
        assert!(found.len() <= 1, "{name} {want:?}: {found:?}");
        found.first().map(|s| s.1)
    }
}

/// A plain HTTP server answering every request with `code`, on a thread; its address.
fn http_server(code: u16) -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 {code} Teapot\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    addr
}
