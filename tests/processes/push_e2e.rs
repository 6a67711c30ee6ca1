//! Push checks end to end (issue 11, items 6 and 7): the built binary as separate processes
//! (one viewserver, two controller-capable workers with `[web] addr`), real MariaDB and a
//! webhook receiver. A job pushes to the worker that is *not* the acting controller; the
//! controller keeps the check online while the pushes come, pages once when they stop, and
//! flips at once on `status=fail`. A wrong token is 404 and writes nothing; pushes are
//! rate-limited; `gobearmon push-url` prints the URL and `gobearmon probe push` explains.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, keys};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver};

const API_TOKEN: &str = "push-e2e-api-token-0123456789";
const PUSH_TOKEN: &str = "nightly-backup-7f3a9c21d4e8b605";
/// The check's `check_interval` and `grace`: a push is due every 7 s.
const INTERVAL: u64 = 5;
const GRACE: u64 = 2;

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
    http: reqwest::blocking::Client,
}

impl World {
    fn start(tag: &str) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, store) = rt.block_on(TestDb::installed(tag));
        rt.block_on(store.close());
        let cluster = Cluster::builder(crate::BIN, &db.url)
            .workers(2)
            .controller_keys(keys([
                ("delivery_backoff", Ms(200).into()),
                ("delivery_backoff_max", Ms(1000).into()),
                ("delivery_timeout", Ms(3000).into()),
            ]))
            .web(&[API_TOKEN])
            .start();
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        World {
            rt,
            db: Some(db),
            cluster,
            http,
        }
    }

    /// The `[web] addr` of worker `i`.
    fn web_addr(&self, i: usize) -> String {
        self.cluster.web_addr(i).to_string()
    }

    /// GETs (or POSTs) `path` on worker `i`'s web listener: status, `Retry-After`, body.
    fn call(&self, i: usize, path: &str, post: bool) -> (u16, Option<String>, String) {
        push_call(&self.http, &self.web_addr(i), path, post)
    }

    fn sql(&self, sql: &str) {
        self.rt.block_on(self.db.as_ref().unwrap().exec(sql));
    }

    fn one<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        self.rt.block_on(async {
            let mut c = self.db.as_ref().unwrap().conn().await;
            c.query_first(sql).await.unwrap().unwrap()
        })
    }

    fn status(&self) -> String {
        self.one("SELECT status FROM checks WHERE id = 1")
    }

    fn pushes(&self) -> u64 {
        self.one("SELECT COALESCE(MAX(pushes), 0) FROM check_pushes WHERE check_id = 1")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

fn push_call(
    http: &reqwest::blocking::Client,
    addr: &str,
    path: &str,
    post: bool,
) -> (u16, Option<String>, String) {
    let url = format!("http://{addr}{path}");
    let r = if post { http.post(url) } else { http.get(url) }
        .send()
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry, r.text().unwrap())
}

/// The job being watched: pushes (POST) every 2 s until stopped.
struct Job {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Job {
    fn start(addr: String) -> Job {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                let (code, _, body) = push_call(&http, &addr, &format!("/push/{PUSH_TOKEN}"), true);
                assert_eq!(code, 200, "{body}");
                // The job's own schedule (what a cron job does), not a synchronisation.
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        Job {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the job's thread");
        }
    }
}

fn body_of(r: &testkit::notify::Received) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn a_push_check_follows_its_job_through_any_worker_and_pages_once() {
    let _serial = testkit::cluster::serial();
    let w = World::start("push_e2e");
    let hook = w.rt.block_on(Receiver::start(Behaviour::Status(200)));
    w.sql(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
           (1,'nightly backup','push','{{\"token\":\"{PUSH_TOKEN}\",\"grace\":{GRACE}}}',{INTERVAL},0);
         INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');",
        hook.url("/hook")
    ));
    let acting = wait_until(Duration::from_secs(30), "a controller to act", || {
        w.cluster.acting_controller()
    });
    let other = 1 - acting;

    // Phase 1: a wrong token (or one that could not be a token) is 404 and writes nothing.
    for path in [
        "/push/wrong-token-0123456789abcdef",
        "/push/short",
        "/push/wrong-token-0123456789abcdef?status=fail&msg=x",
    ] {
        let (code, _, body) = w.call(other, path, false);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(body.contains("no push check has this token"), "{body}");
    }
    let rows: i64 = w.one("SELECT COUNT(*) FROM check_pushes");
    assert_eq!(rows, 0);

    // Phase 2: the job pushes every 2 s, always to the worker that is not the controller,
    // for longer than interval + grace: the check stays online and nobody is paged.
    let job = Job::start(w.web_addr(other));
    wait_until(
        Duration::from_secs(60),
        "seven pushes (12 s of pushing)",
        || (w.pushes() >= 7).then_some(()),
    );
    assert_eq!(w.status(), "online");
    assert_eq!(hook.count(), 0, "{:?}", hook.received());
    let events: i64 = w.one("SELECT COUNT(*) FROM check_events WHERE check_id = 1");
    assert_eq!(events, 0);
    // Workers never receive a push check as work.
    let results: i64 = w.one("SELECT COUNT(*) FROM check_results WHERE check_id = 1");
    assert_eq!(results, 0);

    // Phase 3: the job stops. One offline notice, no sooner than interval + grace after the
    // last push (times of the database's clock; check_events.time has whole seconds), and no
    // second one while the silence goes on.
    job.stop();
    let last_push_ms: i64 = w.one("SELECT last_ms FROM check_pushes WHERE check_id = 1");
    wait_until(Duration::from_secs(30), "offline", || {
        (w.status() == "offline").then_some(())
    });
    let offline_at_s: i64 = w.one(
        "SELECT UNIX_TIMESTAMP(time) FROM check_events WHERE check_id = 1 AND type = 'offline'",
    );
    assert!(
        (offline_at_s + 1) * 1000 >= last_push_ms + ((INTERVAL + GRACE) * 1000) as i64,
        "offline at {offline_at_s} s, last push at {last_push_ms} ms"
    );
    let notices = w.rt.block_on(hook.wait_count(1));
    let first = body_of(&notices[0]);
    assert_eq!(first["new_status"], "offline", "{first}");
    let message = first["message"].as_str().unwrap();
    assert!(
        message.starts_with("no push for ")
            && message.ends_with("(check_interval 5 s + grace 2 s)"),
        "{message}"
    );
    assert_eq!(
        w.rt.block_on(hook.settled_count(Duration::from_secs(INTERVAL + GRACE + 1))),
        1,
        "paged once: {:?}",
        hook.received()
    );

    // Phase 4: the job comes back (a GET, as a cron one-liner sends): online.
    let (code, _, body) = w.call(other, &format!("/push/{PUSH_TOKEN}"), false);
    assert_eq!((code, body.as_str()), (200, r#"{"recorded":"ok"}"#));
    let notices = w.rt.block_on(hook.wait_count(2));
    assert_eq!(body_of(&notices[1])["new_status"], "online");
    assert_eq!(w.status(), "online");

    // Phase 5: `status=fail` flips it at once: the last push is fresh, so only the failure
    // can have done it, and the notice carries the job's message.
    let path = format!("/push/{PUSH_TOKEN}?status=fail&msg=disk%20full");
    let (code, _, body) = w.call(other, &path, true);
    assert_eq!((code, body.as_str()), (200, r#"{"recorded":"fail"}"#));
    let notices = w.rt.block_on(hook.wait_count(3));
    let failed = body_of(&notices[2]);
    assert_eq!(failed["new_status"], "offline", "{failed}");
    assert_eq!(failed["message"], "the job pushed status=fail: disk full");
    assert_eq!(w.status(), "offline");

    // Phase 6: a burst beyond the limit gets 429 with Retry-After; the pushes admitted count.
    let before = w.pushes();
    let answers: Vec<(u16, Option<String>, String)> = (0..15)
        .map(|_| w.call(acting, &format!("/push/{PUSH_TOKEN}"), true))
        .collect();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(
        limited[0].2.contains("too many pushes for this check"),
        "{limited:?}"
    );
    assert!(limited[0].1.is_some(), "Retry-After: {limited:?}");
    let admitted = answers.iter().filter(|a| a.0 == 200).count() as u64;
    assert_eq!(w.pushes(), before + admitted);

    // Phase 7: the command line.
    let bin = env!("CARGO_BIN_EXE_gobearmon");
    let config = &w.cluster.workers[0].config;
    for check in ["1", "nightly backup"] {
        let out = Command::new(bin)
            .args(["push-url", check, "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("http://{}/push/{PUSH_TOKEN}", w.web_addr(0))
        );
    }
    let out = Command::new(bin)
        .args(["push-url", "no such check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = Command::new(bin)
        .args(["probe", "push", &format!("{{\"token\":\"{PUSH_TOKEN}\"}}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a push check has nothing to probe"),
        "{out:?}"
    );
}
