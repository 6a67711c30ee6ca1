//! The web listener under hostile clients (issue 24 items 2, 3 and 6), against a real cluster
//! (one viewserver, real worker processes) and real MariaDB: a burst of wrong logins, login
//! CSRF, a session outliving its password, a lock-out attempt from another address, what a
//! viewer sees of secret parameters, `/metrics` behind its token, and a flood of status-page
//! requests during a flip. Every request goes over loopback; other source addresses are
//! other loopback addresses (127.0.0.x).

use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testkit::cluster::{Cluster, free_port, wait_until};
use testkit::config::{Ms, keys};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver};

const TOKEN: &str = "edges-api-token-0123456789";
const METRICS_TOKEN: &str = "edges-metrics-token-0123456789";
const PAYLOAD_SECRET: &str = "AUTH payload-secret-4711";
const PATH_SECRET: &str = "Zq7xKp2mWv9bLr4tNc8hYs3d";

/// A client from loopback address `from`, following no redirects.
fn client(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The login form's cookie and hidden token, as a browser gets them.
async fn login_form(c: &reqwest::Client, base: &str) -> (String, String) {
    let r = c.get(format!("{base}/login")).send().await.unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("gbm_login="))
        .and_then(|v| v.split(';').next())
        .expect("the login form sets its CSRF cookie")
        .to_string();
    let html = r.text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let token = html[at..].split('"').next().unwrap().to_string();
    (cookie, token)
}

/// POSTs a login with the form's token; the status (0: the connection was closed without an
/// answer) and the session cookie, if one was set.
async fn login(
    c: &reqwest::Client,
    base: &str,
    form: &(String, String),
    name: &str,
    password: &str,
) -> (u16, Option<String>) {
    let sent = c
        .post(format!("{base}/login"))
        .header("cookie", &form.0)
        .form(&[("name", name), ("password", password), ("csrf", &form.1)])
        .send()
        .await;
    // 0: no HTTP answer, the listener closed the connection at once (its source address
    // holds `[listen] max_per_source` connections already).
    let Ok(r) = sent else { return (0, None) };
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("gbm_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    (r.status().as_u16(), session)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `gobearmon user add NAME --role ROLE` with the password on stdin.
fn add_user(cluster: &Cluster, name: &str, role: &str, password: &str) {
    let mut child = Command::new(crate::BIN)
        .args(["user", "add", name, "--role", role, "--config"])
        .arg(&cluster.workers[0].config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

impl World {
    /// One viewserver and `workers` workers with `[web]`; worker 1 with `metrics_token`.
    fn start(tag: &str, workers: usize) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, store) = rt.block_on(TestDb::installed(tag));
        rt.block_on(store.close());
        let mut cluster = Cluster::builder(crate::BIN, &db.url)
            .controller_keys(keys([
                ("confirmations", 2.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_timeout", Ms(3000).into()),
            ]))
            .web(&[TOKEN])
            .start();
        cluster.add_worker(keys([("metrics_token", METRICS_TOKEN.into())]));
        for _ in 1..workers {
            cluster.add_worker(keys([]));
        }
        World {
            rt,
            db: Some(db),
            cluster,
        }
    }

    fn exec(&self, sql: &str) {
        self.rt.block_on(self.db.as_ref().unwrap().exec(sql))
    }

    fn one<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        self.rt.block_on(self.db.as_ref().unwrap().one(sql))
    }

    fn base(&self, w: usize) -> String {
        format!("http://{}", self.cluster.web_addr(w))
    }

    /// Waits until worker `w`'s web listener answers.
    fn wait_web(&self, w: usize) {
        let base = self.base(w);
        let c = client("127.0.0.1");
        wait_until(Duration::from_secs(30), "the web listener", || {
            self.rt
                .block_on(c.get(format!("{base}/login")).send())
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
    }
}

/// Sends `n` wrong logins for `name` at once from `from`; the count of each answer status.
fn login_burst(w: &World, base: &str, from: &str, name: &str, n: usize) -> Vec<(u16, usize)> {
    w.rt.block_on(async {
        let c = client(from);
        let form = login_form(&c, base).await;
        let tasks: Vec<_> = (0..n)
            .map(|k| {
                let (c, base, form, name) =
                    (c.clone(), base.to_string(), form.clone(), name.to_string());
                tokio::spawn(async move {
                    login(&c, &base, &form, &name, &format!("wrong-password-{k}"))
                        .await
                        .0
                })
            })
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        for t in tasks {
            *counts.entry(t.await.unwrap()).or_insert(0) += 1;
        }
        counts.into_iter().collect()
    })
}

#[test]
fn logins_are_bounded_sessions_follow_passwords_and_viewers_see_no_secrets() {
    let _serial = testkit::cluster::serial();
    let w = World::start("webedges", 1);
    w.exec(&format!(
        "INSERT INTO checks (id,name,type,data,enabled) VALUES \
           (1,'redis','tcp','{{\"address\":\"127.0.0.1:9\",\"payload\":\"{PAYLOAD_SECRET}\",\"expect\":\"+OK\"}}',0),
           (2,'slack','http','{{\"url\":\"https://hooks.slack.example/services/T0123ABCD/B0123ABCD/{PATH_SECRET}\"}}',0);"
    ));
    add_user(&w.cluster, "olga", "operator", "operator-password-1");
    add_user(&w.cluster, "vic", "viewer", "viewer-password-22");
    w.wait_web(0);
    let base = w.base(0);
    let pid = w.cluster.workers[0].pid().unwrap();

    // 400 concurrent wrong logins from one address: memory stays flat, most are 429.
    let before = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let counts = login_burst(&w, &base, "127.0.0.3", "olga", 400);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
    let grew_mib = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    eprintln!("400 wrong logins: answers {counts:?}, RSS {before} KiB, +{grew_mib} MiB at peak");
    assert!(grew_mib < 300, "the node grew by {grew_mib} MiB");
    // Refused: 429 from the login limiter, or closed at accept by the per-source cap
    // (400 connections at once from one address).
    let refused: usize = counts
        .iter()
        .filter(|(s, _)| [0, 429].contains(s))
        .map(|(_, n)| n)
        .sum();
    assert!(refused > 300, "most attempts are refused: {counts:?}");
    assert!(
        counts.iter().all(|(s, _)| [0, 401, 429, 503].contains(s)),
        "{counts:?}"
    );

    w.rt.block_on(async {
        // A flood of wrong passwords for vic from elsewhere does not lock vic out of home.
        let away = client("127.0.0.4");
        let form = login_form(&away, &base).await;
        for k in 0..10 {
            let (status, _) = login(&away, &base, &form, "VIC", &format!("guess-{k}")).await;
            assert!([401, 429].contains(&status), "{status}");
        }
        assert_eq!(
            login(&away, &base, &form, "vic", "viewer-password-22")
                .await
                .0,
            429
        );
        let home = client("127.0.0.5");
        let form = login_form(&home, &base).await;
        let (status, session) = login(&home, &base, &form, "vic", "viewer-password-22").await;
        assert_eq!(status, 303, "vic from their own address");
        let session = session.expect("a session cookie");

        // Login CSRF: without the form's cookie, or with another token, no session.
        let r = home
            .post(format!("{base}/login"))
            .form(&[
                ("name", "vic"),
                ("password", "viewer-password-22"),
                ("csrf", form.1.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(
            r.headers()
                .get_all("set-cookie")
                .iter()
                .all(|v| !v.to_str().unwrap().starts_with("gbm_session="))
        );
        let forged = (form.0.clone(), "0".repeat(32));
        assert_eq!(
            login(&home, &base, &forged, "vic", "viewer-password-22")
                .await
                .0,
            403
        );

        // The viewer's check pages: the JSON as written, without the tcp payload or the
        // token in the webhook's path.
        for id in [1, 2] {
            let r = home
                .get(format!("{base}/checks/{id}"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let page = r.text().await.unwrap();
            let params = &page[page.find("id=\"params\"").expect("the parameters")..];
            let params = &params[..params.find("</pre>").unwrap()];
            assert!(!page.contains("payload-secret"), "check {id}: {params}");
            assert!(!page.contains(PATH_SECRET), "check {id}: {params}");
            assert!(params.contains("redacted"), "check {id}: {params}");
        }
        assert!(
            home.get(format!("{base}/checks/2"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("hooks.slack.example/services/T0123ABCD/B0123ABCD/redacted")
        );

        // The session ends when vic's password changes.
        let status = |c: reqwest::Client, s: String| {
            let base = base.clone();
            async move {
                c.get(format!("{base}/"))
                    .header("cookie", s)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status(home.clone(), session.clone()).await, 200);
        add_user(&w.cluster, "vic", "viewer", "a-new-password-333");
        assert_eq!(
            status(home.clone(), session.clone()).await,
            303,
            "a stale session"
        );
    });

    // /metrics behind its token; /ready stays open.
    let worker = &w.cluster.worker_addrs[0];
    let c = client("127.0.0.1");
    let get = |auth: Option<&str>, path: &str| {
        let mut r = c.get(format!("http://{worker}{path}"));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        w.rt.block_on(r.send()).unwrap()
    };
    assert_eq!(get(None, "/metrics").status().as_u16(), 401);
    assert_eq!(
        get(Some("not-the-token-at-all"), "/metrics")
            .status()
            .as_u16(),
        401
    );
    let ok = get(Some(METRICS_TOKEN), "/metrics");
    assert_eq!(ok.status().as_u16(), 200);
    assert!(w.rt.block_on(ok.text()).unwrap().contains("gobearmon_"));
    // Open, whatever it says of readiness.
    assert_ne!(get(None, "/ready").status().as_u16(), 401);
    let stored: i64 = w.one("SELECT COUNT(*) FROM web_sessions WHERE password_stamp IS NULL");
    assert_eq!(stored, 0);
}

/// A flood of status-page requests (the real page, cached, and made-up slugs, each a
/// database read) at both workers while a check flips: the flip's notification comes within
/// the bound the end-to-end tests allow, and the flood was answered.
#[test]
fn a_status_page_flood_does_not_delay_a_flip() {
    let _serial = testkit::cluster::serial();
    let w = World::start("webflood", 2);
    let hook = w.rt.block_on(Receiver::start(Behaviour::Status(200)));
    let port = free_port();
    let mut target = Some(TcpListener::bind(("127.0.0.1", port)).unwrap());
    w.exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
           (1,'billing','tcp','{{\"address\":\"127.0.0.1:{port}\",\"timeout\":2}}',1,0);
         INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');
         INSERT INTO status_pages (id,slug,title,description) VALUES (1,'demo','Demo','');
         INSERT INTO status_page_checks (page_id,check_id,group_name,display_name,sort_order) VALUES (1,1,'','',1);",
        hook.url("/hook")
    ));
    // A flappy old service on the same page: 100,000 flips make each rendering of the page a
    // real read.
    w.exec(
        "INSERT INTO checks (id,name,type,data,enabled) VALUES (2,'legacy','tcp','{}',0);
         INSERT INTO status_page_checks (page_id,check_id,group_name,display_name,sort_order) VALUES (1,2,'','',2);
         INSERT INTO check_events (check_id, type, time) SELECT 2, IF(seq % 2 = 0, 'offline', 'online'), \
           NOW() - INTERVAL 100000 SECOND + INTERVAL seq SECOND FROM seq_1_to_100000;",
    );
    w.wait_web(0);
    w.wait_web(1);
    wait_until(Duration::from_secs(30), "results for the check", || {
        let n: i64 = w.one("SELECT COUNT(DISTINCT node_id) FROM check_results WHERE check_id = 1");
        (n == 2).then_some(())
    });
    let bases = [w.base(0), w.base(1)];
    // The flood runs from before the target goes down until the notice has come, and is at
    // least 5,000 requests long.
    let answered = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let notified = Arc::new(AtomicBool::new(false));
    let flood = {
        let (answered, ok, notified) = (answered.clone(), ok.clone(), notified.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(flood_status_pages(bases, answered, ok, notified));
        })
    };
    wait_until(Duration::from_secs(30), "the flood under way", || {
        (answered.load(Ordering::Relaxed) >= 200).then_some(())
    });
    let down_at = Instant::now();
    drop(target.take());
    wait_until(Duration::from_secs(20), "the offline notification", || {
        (hook.count() >= 1).then_some(())
    });
    let took = down_at.elapsed();
    notified.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let (answered, ok) = (answered.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));
    eprintln!("notified {took:?} after the target went down; {answered} status-page requests");
    assert!(answered >= 5_000, "{answered}");
    assert!(
        ok * 100 >= answered * 99,
        "{ok} of {answered} answered 200 or 404"
    );
    let sent: i64 =
        w.one("SELECT COUNT(*) FROM notification_outbox WHERE check_id = 1 AND state = 'sent'");
    assert_eq!(sent, 1);
}

/// 64 clients asking for status pages at both `bases`, the real page and made-up slugs in
/// turn, until `notified` and at least 5,000 were sent.
async fn flood_status_pages(
    bases: [String; 2],
    answered: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    notified: Arc<AtomicBool>,
) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (c, next, answered, ok) = (c.clone(), next.clone(), answered.clone(), ok.clone());
            let (bases, notified) = (bases.clone(), notified.clone());
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= 5_000 && notified.load(Ordering::Relaxed) {
                        break;
                    }
                    let slug = if k % 2 == 0 {
                        "demo".to_string()
                    } else {
                        format!("nope-{k}")
                    };
                    let Ok(r) = c
                        .get(format!("{}/status/{slug}", bases[k % 2]))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    answered.fetch_add(1, Ordering::Relaxed);
                    if [200, 404].contains(&r.status().as_u16()) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
