//! Vantage health and meta-alerts end to end (issue 15), with real processes: one viewserver
//! member, three controller-capable workers, real MariaDB, the aiosmtpd capture server and a
//! webhook receiver. Workers are cut off from the check target and the canary target with an
//! nftables rule on their cgroup (`testkit::partition`).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use gobearmon::config::Secret;
use gobearmon::rpc::RpcClient;
use gobearmon::rpc::sign::Signer;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use testkit::cluster::{Cluster, SECRET, wait_until};
use testkit::config::{Ms, SmtpSection, keys, section};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver, SmtpOptions, SmtpServer};
use testkit::partition::Cut;
use toml::Table;

const TOKEN: &str = "vantage-api-token-0123";

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    smtp: SmtpServer,
    cluster: Cluster,
    client: RpcClient,
}

impl World {
    /// A group of one and three workers, worker i with `worker_keys[i]` in `[worker]`, `keys` in
    /// `[controller]`, mail to `admin@test`, and the JSON API on a port of its own.
    fn start(tag: &str, worker_keys: [Table; 3], more: Table, seed: &[String]) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, _) = rt.block_on(TestDb::installed(tag));
        for sql in seed {
            rt.block_on(db.exec(sql));
        }
        let smtp = rt.block_on(SmtpServer::start(SmtpOptions::default()));
        let mut cluster = Cluster::builder(crate::BIN, &db.url)
            .isolable()
            .controller_keys(keys([
                ("confirmations", 2.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_timeout", Ms(3000).into()),
            ]))
            .controller_keys(more)
            .section(
                "smtp",
                section(SmtpSection {
                    timeout: Some(Ms(5000)),
                    ..SmtpSection::capture(smtp.port)
                }),
            )
            .web(&[TOKEN])
            .start();
        for extra in worker_keys {
            cluster.add_worker(extra);
        }
        let signer = Arc::new(Signer::cluster(&Secret::new(SECRET), "vantage-test"));
        let client = RpcClient::with_tls(signer, None).unwrap();
        World {
            rt,
            db: Some(db),
            smtp,
            cluster,
            client,
        }
    }

    fn db(&self) -> &TestDb {
        self.db.as_ref().unwrap()
    }

    fn query<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        self.rt.block_on(async {
            let mut c = self.db().conn().await;
            c.query(sql).await.unwrap()
        })
    }

    /// The acting controller's `/status` (signed with the cluster secret).
    fn status(&self) -> Option<Value> {
        let i = self.cluster.acting_controller()?;
        let addr = &self.cluster.controller_addrs[i];
        self.rt
            .block_on(
                self.client
                    .get::<Value>(addr, "/status", Duration::from_secs(3)),
            )
            .ok()
    }

    /// The `workers` of the status, by id.
    fn worker_status(&self, id: &str) -> Option<Value> {
        let s = self.status()?;
        s["workers"]
            .as_array()?
            .iter()
            .find(|w| w["id"] == id)
            .cloned()
    }

    /// `GET /api/v1/workers` of worker 3.
    fn api_workers(&self) -> Option<Value> {
        let addr = self.cluster.web_addr(2);
        let r = reqwest::blocking::Client::new()
            .get(format!("http://{addr}/api/v1/workers"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(3))
            .send()
            .ok()?;
        r.json().ok()
    }

    /// Waits until a controller acts and all three workers have reported check 1.
    fn wait_reporting(&self) {
        wait_until(Duration::from_secs(30), "a controller to act", || {
            self.cluster.acting_controller()
        });
        wait_until(
            Duration::from_secs(30),
            "results from all three workers",
            || {
                let n: Vec<u64> = self
                    .query("SELECT COUNT(DISTINCT node_id) FROM check_results WHERE check_id = 1");
                (n.first() == Some(&3)).then_some(())
            },
        );
    }

    fn admin_subjects(&self) -> Vec<String> {
        self.smtp
            .messages_to("admin@test")
            .iter()
            .filter_map(|m| m["subject"].as_str().map(str::to_string))
            .collect()
    }

    fn count_subjects(&self, needle: &str) -> usize {
        self.admin_subjects()
            .iter()
            .filter(|s| s.contains(needle))
            .count()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

/// Check 1 on `target`, flipping after one round (delay 0), with a 5 s timeout: a cut worker's
/// result takes 5 s, so a round of two cut workers (a run, then its confirmation) takes 10 s,
/// while their canaries (3 s runs every 200 ms) judge them impaired within about 6 s.
fn seed(target: u16) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
             (1,'svc','tcp','{{\"address\":\"127.0.0.1:{target}\",\"timeout\":5}}',1,0)"
        ),
        "INSERT INTO contacts (id,type,data) VALUES (1,'email','ops@test')".into(),
        "INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both')".into(),
    ]
}

/// A TCP target that accepts (and closes) every connection, so that a backlog of probes never
/// fills; it lives as long as the test (the thread ends with the process).
fn listener() -> (u16, ()) {
    let port = testkit::cluster::free_port();
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    (port, ())
}

/// Two of three workers lose their paths to the check target and to the canary (from the
/// file for w1, from the table `canaries` for all): both turn
/// impaired (status and API name the failing canary), the third keeps the check online, no
/// page goes out; healed, both recover, and the admin got exactly one impaired and one
/// recovered notice for each.
#[test]
fn canaries_turn_cut_workers_impaired_and_nobody_is_paged() {
    let _serial = testkit::cluster::serial();
    let (target, _target) = listener();
    let (canary, _canary) = listener();
    // w1 has the canary in its file; every worker gets it from the table `canaries` too
    // (w1 runs it once: the same URL).
    let url = format!("tcp://127.0.0.1:{canary}");
    let own = keys([
        ("canaries", vec![url.clone()].into()),
        ("canary_interval", Ms(200).into()),
    ]);
    let shared = || keys([("canary_interval", Ms(200).into())]);
    let mut rows = seed(target);
    rows.push(format!("INSERT INTO canaries (url) VALUES ('{url}')"));
    // A row no worker can run: skipped, and the admin is told (once).
    rows.push("INSERT INTO canaries (url) VALUES ('gopher://127.0.0.1:7/bad-canary')".into());
    let w = World::start(
        "vantage_canaries",
        [own, shared(), shared()],
        Table::new(),
        &rows,
    );
    w.wait_reporting();
    for id in ["w1", "w2", "w3"] {
        wait_until(Duration::from_secs(20), "canary reports", || {
            let s = w.worker_status(id)?;
            (s["canaries"] == 1 && s["impaired"] == false).then_some(())
        });
    }
    let cuts: Vec<Cut> = (0..2)
        .map(|i| {
            Cut::new(
                w.cluster.workers[i].cgroup.as_ref().unwrap(),
                &[target, canary],
            )
        })
        .collect();
    for id in ["w1", "w2"] {
        let s = wait_until(Duration::from_secs(30), "the cut workers impaired", || {
            w.worker_status(id).filter(|s| s["impaired"] == true)
        });
        let failing = s["failing_canaries"].to_string();
        assert!(failing.contains(&canary.to_string()), "{id}: {failing}");
    }
    assert_eq!(w.worker_status("w3").unwrap()["impaired"], false);
    let impaired_at = wall_ms();
    wait_until(
        Duration::from_secs(30),
        "an impaired notice per cut worker",
        || {
            (w.count_subjects("worker impaired: w1") == 1
                && w.count_subjects("worker impaired: w2") == 1)
                .then_some(())
        },
    );
    let api = wait_until(
        Duration::from_secs(20),
        "the API to show both impaired",
        || {
            let a = w.api_workers()?;
            let impaired: Vec<String> = a["workers"]
                .as_array()?
                .iter()
                .filter(|x| x["impaired"] == true)
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect();
            (impaired == ["w1", "w2"]).then_some(a)
        },
    );
    assert!(api.to_string().contains(&canary.to_string()), "{api}");
    let alerts = w.status().unwrap()["alerts"].to_string();
    assert!(alerts.contains("worker_impaired"), "{alerts}");
    // Monitoring goes on for longer than a round of the two cut workers would take (10 s),
    // from w3 alone, and the check stays online (w1 and w2 keep failing to reach the target
    // the whole time).
    wait_until(
        Duration::from_secs(40),
        "12 s of results after the impairment",
        || {
            let n: Vec<u64> = w.query(&format!(
                "SELECT COUNT(*) FROM result_history WHERE check_id = 1 AND at_ms > {}",
                impaired_at + 12_000
            ));
            (n.first().copied().unwrap_or(0) > 0).then_some(())
        },
    );
    let events: Vec<String> = w.query("SELECT type FROM check_events WHERE check_id = 1");
    assert!(events.is_empty(), "flipped: {events:?}");
    let status: Vec<String> = w.query("SELECT status FROM checks WHERE id = 1");
    assert_eq!(status, ["online"]);
    assert!(w.smtp.messages_to("ops@test").is_empty(), "paged");
    let from_w3: Vec<u64> = w.query(&format!(
        "SELECT COUNT(*) FROM result_history WHERE check_id = 1 AND node_id = 'w3' \
         AND at_ms > {impaired_at}"
    ));
    assert!(from_w3[0] >= 6, "w3 ran it {} times", from_w3[0]);

    drop(cuts);
    for id in ["w1", "w2"] {
        wait_until(
            Duration::from_secs(30),
            "the healed workers recovered",
            || w.worker_status(id).filter(|s| s["impaired"] == false),
        );
    }
    wait_until(
        Duration::from_secs(30),
        "a recovered notice per worker",
        || {
            (w.count_subjects("worker w1 recovered") == 1
                && w.count_subjects("worker w2 recovered") == 1)
                .then_some(())
        },
    );
    // Only the bad row's alert stays open: the row is still there.
    wait_until(
        Duration::from_secs(20),
        "no other open alert in status",
        || {
            let s = w.status()?;
            let kinds: Vec<&str> = s["alerts"]
                .as_array()?
                .iter()
                .filter_map(|a| a["kind"].as_str())
                .collect();
            (kinds == ["bad_row"]).then_some(())
        },
    );
    assert_eq!(
        w.count_subjects("worker impaired: w1"),
        1,
        "{:?}",
        w.admin_subjects()
    );
    assert_eq!(
        w.count_subjects("worker impaired: w2"),
        1,
        "{:?}",
        w.admin_subjects()
    );
    assert_eq!(
        w.count_subjects("impaired: w3"),
        0,
        "{:?}",
        w.admin_subjects()
    );
    assert!(w.smtp.messages_to("ops@test").is_empty(), "paged");
    // The bad row was reported once, by its id, although every round of the term reread it;
    // the mail names the URL.
    assert_eq!(
        w.count_subjects("a row cannot be used: canaries 2"),
        1,
        "{:?}",
        w.admin_subjects()
    );
    let mails = w.smtp.messages_to("admin@test");
    let bad = mails
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains("canaries 2"))
        .unwrap();
    assert!(
        bad.to_string().contains("gopher://127.0.0.1:7/bad-canary"),
        "{bad}"
    );
}

/// The same cut without canaries: the two cut workers confirm each other and the contact is
/// paged for an outage that is only theirs.
#[test]
fn the_same_cut_without_canaries_pages() {
    let _serial = testkit::cluster::serial();
    let (target, _target) = listener();
    let w = World::start(
        "vantage_nocanary",
        Default::default(),
        Table::new(),
        &seed(target),
    );
    w.wait_reporting();
    let _cuts: Vec<Cut> = (0..2)
        .map(|i| Cut::new(w.cluster.workers[i].cgroup.as_ref().unwrap(), &[target]))
        .collect();
    let mails = w.rt.block_on(w.smtp.wait_messages_to("ops@test", 1));
    assert!(
        mails[0]["subject"]
            .as_str()
            .unwrap_or("")
            .contains("offline"),
        "{mails:?}"
    );
    let events: Vec<String> = w.query("SELECT type FROM check_events WHERE check_id = 1");
    assert_eq!(events.first().map(String::as_str), Some("offline"));
    assert_eq!(w.count_subjects("impaired"), 0);
}

/// Every controller-capable worker killed: the first to come back finds that no controller
/// acted for longer than `no_controller_alert` and the admin gets one alert (mail and signed
/// webhook), then one recovery as a controller acts again. All three come back at once and
/// each sees the outage: the alert still goes out once.
#[test]
fn no_controller_is_alerted_once_then_resolved() {
    let _serial = testkit::cluster::serial();
    // Its own runtime, kept for the whole test: the receiver runs on it.
    let hook_rt = tokio::runtime::Runtime::new().unwrap();
    let hook = hook_rt.block_on(Receiver::start(Behaviour::Status(200)));
    let (target, _target) = listener();
    let more = keys([
        ("no_controller_alert", Ms(3000).into()),
        ("admin_webhook", hook.url("/meta").into()),
        ("admin_webhook_secret", "hook-secret".into()),
    ]);
    let mut w = World::start(
        "vantage_nocontroller",
        Default::default(),
        more,
        &seed(target),
    );
    w.wait_reporting();
    let stamp = wait_until(
        Duration::from_secs(20),
        "the controller's alive stamp",
        || {
            let at: Vec<i64> = w.query("SELECT at_ms FROM controller_alive WHERE id = 1");
            at.first().copied().filter(|&a| a > 0)
        },
    );
    assert!(stamp <= wall_ms());
    for p in w.cluster.workers.iter_mut() {
        p.kill9();
    }
    let last: i64 = w.query("SELECT at_ms FROM controller_alive WHERE id = 1")[0];
    // The outage must outlast no_controller_alert before anyone comes back.
    wait_until(Duration::from_secs(20), "the outage to pass 4 s", || {
        (wall_ms() > last + 4000).then_some(())
    });
    assert_eq!(w.count_subjects("no controller"), 0);
    // All come back at once: each of them sees the outage, one alert goes out.
    for p in w.cluster.workers.iter_mut() {
        p.start();
    }
    wait_until(Duration::from_secs(30), "one no-controller alert", || {
        (w.count_subjects("alert: no controller") >= 1).then_some(())
    });
    wait_until(Duration::from_secs(30), "its recovery", || {
        (w.count_subjects("resolved: no controller") >= 1).then_some(())
    });
    for a in &w.cluster.worker_addrs {
        wait_until(Duration::from_secs(30), "every worker back", || {
            let (code, _) = w.cluster.get(a, "/ready")?;
            (code == 200).then_some(())
        });
    }
    // A few watch periods of all three running: nothing more is sent.
    let back = wall_ms();
    wait_until(Duration::from_secs(20), "three watch periods", || {
        let at: Vec<i64> = w.query("SELECT at_ms FROM controller_alive WHERE id = 1");
        (at.first().copied().unwrap_or(0) > back + 2500).then_some(())
    });
    let subjects = w.admin_subjects();
    assert_eq!(w.count_subjects("alert: no controller"), 1, "{subjects:?}");
    assert_eq!(
        w.count_subjects("resolved: no controller"),
        1,
        "{subjects:?}"
    );
    let got = hook.received();
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .filter(|b: &Value| b["kind"] == "no_controller")
        .collect();
    let events: Vec<&str> = bodies.iter().filter_map(|b| b["event"].as_str()).collect();
    assert_eq!(events, ["opened", "resolved"], "{bodies:?}");
    assert_eq!(bodies[0]["schema"], "gobearmon.meta.v1");
    assert_eq!(
        bodies[0]["started"],
        gobearmon::history::rfc3339_ms(last),
        "keyed by the outage's start"
    );
    for r in got
        .iter()
        .filter(|r| r.body.windows(13).any(|x| x == b"no_controller"))
    {
        let ts = r.header("x-gobearmon-timestamp").unwrap();
        let sig = r.header("x-gobearmon-signature").unwrap();
        let want = gobearmon::notify::webhook::signature(b"hook-secret", &ts, &r.body);
        assert_eq!(sig, format!("sha256={want}"));
        assert!(
            r.header("idempotency-key")
                .unwrap()
                .starts_with("no_controller::")
        );
    }
}

/// The store's once-only rules on real MariaDB: an alert opens once per outage start however
/// often it is asked, a resolved outage is not opened again, a new outage is; resolving
/// happens once; the no-controller alert opens only for a stamp older than the cutoff.
#[test]
fn meta_alerts_open_once_per_outage_and_resolve_once() {
    use gobearmon::store::meta::{self, Opening};
    const CHANNELS: &[&str] = &["email", "webhook"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store) = rt.block_on(TestDb::installed("vantage_meta_store"));
    rt.block_on(async {
        let o = |started_ms| Opening {
            kind: "stale_worker",
            subject: "w9",
            started_ms,
            now_ms: started_ms + 10,
            node: "w1",
            message: "w9 is stale",
            detail: None,
            channels: CHANNELS,
        };
        assert!(meta::open(&store, &o(1000)).await.unwrap());
        assert!(!meta::open(&store, &o(1000)).await.unwrap(), "open already");
        assert!(!meta::open(&store, &o(2000)).await.unwrap(), "open already");
        let open = meta::open_alerts(&store).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].started_ms, open[0].opened_by.as_str()),
            (1000, "w1")
        );
        let row = meta::resolve(&store, "stale_worker", "w9", 5000, "w1", CHANNELS)
            .await
            .unwrap();
        assert_eq!(row.map(|r| r.started_ms), Some(1000));
        assert!(
            meta::resolve(&store, "stale_worker", "w9", 5001, "w1", CHANNELS)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !meta::open(&store, &o(1000)).await.unwrap(),
            "the same outage again"
        );
        assert!(meta::open(&store, &o(7000)).await.unwrap(), "a new outage");
        assert!(meta::open_alerts(&store).await.unwrap().len() == 1);

        // No controller ever acted: nothing to say.
        assert_eq!(
            meta::open_no_controller(&store, 10_000, 10_000, "w1", CHANNELS)
                .await
                .unwrap(),
            None
        );
        meta::stamp_alive(&store, gobearmon::model::Epoch(3), "w2", 5_000)
            .await
            .unwrap();
        assert_eq!(
            meta::open_no_controller(&store, 4_000, 10_000, "w1", CHANNELS)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            meta::open_no_controller(&store, 6_000, 10_000, "w1", CHANNELS)
                .await
                .unwrap(),
            Some(5_000)
        );
        assert_eq!(
            meta::open_no_controller(&store, 6_000, 10_000, "w3", CHANNELS)
                .await
                .unwrap(),
            None
        );
        assert!(
            meta::resolve(&store, meta::NO_CONTROLLER, "", 11_000, "w1", CHANNELS)
                .await
                .unwrap()
                .is_some()
        );
        // Resolved, and the stamp unchanged: the same outage is not opened again.
        assert_eq!(
            meta::open_no_controller(&store, 6_000, 12_000, "w3", CHANNELS)
                .await
                .unwrap(),
            None
        );
        // An older epoch cannot stamp over a newer one.
        meta::stamp_alive(&store, gobearmon::model::Epoch(2), "w1", 20_000)
            .await
            .unwrap();
        let mut conn = db.conn().await;
        let at: Option<(i64, String)> = conn
            .query_first("SELECT at_ms, node FROM controller_alive WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(at, Some((5_000, "w2".to_string())));
        // Each opening and resolving queued one notice per channel, and only those.
        let queued: Vec<(String, i64, String, String)> = conn
            .query(
                "SELECT kind, started_ms, event, channel FROM meta_alert_deliveries \
                 ORDER BY id",
            )
            .await
            .unwrap();
        let want = |kind: &str, started: i64, event: &str| {
            ["email", "webhook"].map(|c| (kind.to_string(), started, event.to_string(), c.into()))
        };
        let expected: Vec<_> = [
            want("stale_worker", 1000, "opened"),
            want("stale_worker", 1000, "resolved"),
            want("stale_worker", 7000, "opened"),
            want("no_controller", 5000, "opened"),
            want("no_controller", 5000, "resolved"),
        ]
        .concat();
        assert_eq!(queued, expected);
        drop(conn);
        db.drop_db().await;
    });
}

/// The delivery queue on real MariaDB: a claimed row is not claimed again while its lease
/// runs, a retry comes back when due, an outcome is recorded only under its own claim, and a
/// sent row is done.
#[test]
fn meta_alert_deliveries_are_claimed_once_retried_and_recorded_under_their_claim() {
    use gobearmon::store::meta::{self, Opening};
    use gobearmon::store::meta_queue::{self, Outcome};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store) = rt.block_on(TestDb::installed("vantage_meta_queue"));
    rt.block_on(async {
        let o = Opening {
            kind: "stale_worker",
            subject: "w9",
            started_ms: 1000,
            now_ms: 1010,
            node: "w1",
            message: "w9 is stale",
            detail: None,
            channels: &["email", "webhook"],
        };
        assert!(meta::open(&store, &o).await.unwrap());
        let lease = Duration::from_secs(60);
        let (first, rows) = meta_queue::claim(&store, "w1", 16, lease).await.unwrap();
        let channels: Vec<&str> = rows.iter().map(|d| d.channel.as_str()).collect();
        assert_eq!(channels, ["email", "webhook"]);
        assert_eq!(
            (rows[0].attempts, rows[0].message.as_str()),
            (0, "w9 is stale")
        );
        let (_, again) = meta_queue::claim(&store, "w2", 16, lease).await.unwrap();
        assert!(again.is_empty(), "claimed twice: {again:?}");
        // The email went; the webhook is to be tried again at once.
        let sent = Outcome::Sent;
        assert!(
            meta_queue::record(&store, rows[0].id, first, &sent)
                .await
                .unwrap()
        );
        let retry = Outcome::Retry {
            wait: Duration::ZERO,
            error: "answered 503".into(),
        };
        assert!(
            meta_queue::record(&store, rows[1].id, first, &retry)
                .await
                .unwrap()
        );
        let (second, rows) = meta_queue::claim(&store, "w2", 16, lease).await.unwrap();
        assert_eq!(rows.len(), 1, "only the webhook is due again: {rows:?}");
        assert_eq!((rows[0].channel.as_str(), rows[0].attempts), ("webhook", 1));
        // The first claim is over: its late record writes nothing.
        assert!(
            !meta_queue::record(&store, rows[0].id, first, &sent)
                .await
                .unwrap()
        );
        assert!(
            meta_queue::record(&store, rows[0].id, second, &sent)
                .await
                .unwrap()
        );
        let (_, rows) = meta_queue::claim(&store, "w3", 16, lease).await.unwrap();
        assert!(rows.is_empty(), "{rows:?}");
        assert_eq!(meta_queue::counts(&store).await.unwrap(), (0, 0));
        db.drop_db().await;
    });
}

/// Kills a worker that is not the acting controller (there are three) and returns its id.
fn kill_a_standby(w: &mut World) -> String {
    let acting = w.cluster.acting_controller().unwrap();
    let victim = (0..3).find(|&i| i != acting).unwrap();
    w.cluster.workers[victim].kill9();
    w.cluster.worker_ids[victim].clone()
}

/// The requests of `hook` about a stale-worker alert being opened, with their answers.
fn stale_opened(hook: &Receiver) -> Vec<u16> {
    hook.received()
        .iter()
        .filter(|r| {
            let b: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            b["kind"] == "stale_worker" && b["event"] == "opened"
        })
        .map(|r| r.status)
        .collect()
}

/// An admin webhook that takes the connection and never answers: the controller's alive stamp
/// goes on, so the standby raises no false "no controller", while the webhook is tried (and
/// retried) and the alert reaches the admin by mail.
#[test]
fn a_blackholed_admin_webhook_raises_no_false_no_controller_alert() {
    let _serial = testkit::cluster::serial();
    let hook_rt = tokio::runtime::Runtime::new().unwrap();
    let hook = hook_rt.block_on(Receiver::start(Behaviour::Hang));
    let (target, _target) = listener();
    let more = keys([
        ("no_controller_alert", Ms(3000).into()),
        ("stale_worker_alert", Ms(2000).into()),
        ("admin_webhook", hook.url("/meta").into()),
    ]);
    let mut w = World::start("vantage_blackhole", Default::default(), more, &seed(target));
    w.wait_reporting();
    let victim = kill_a_standby(&mut w);
    // Three attempts, each held for the whole delivery_timeout (3 s): at least 6 s in which a
    // stamp waiting behind them would have aged past no_controller_alert (3 s).
    wait_until(Duration::from_secs(60), "three webhook attempts", || {
        (stale_opened(&hook).len() >= 3).then_some(())
    });
    let stamp: Vec<i64> = w.query("SELECT at_ms FROM controller_alive WHERE id = 1");
    assert!(stamp[0] > wall_ms() - 3000, "stale stamp: {stamp:?}");
    let raised: Vec<u64> = w
        .query("SELECT COUNT(*) FROM meta_alerts WHERE kind = 'no_controller' AND started_ms >= 0");
    assert_eq!(raised, [0], "{:?}", w.admin_subjects());
    assert_eq!(
        w.count_subjects("no controller"),
        0,
        "{:?}",
        w.admin_subjects()
    );
    // The mail channel is not held up by the webhook: the alert went out by mail, once.
    let stale = format!("worker {victim} is stale");
    wait_until(Duration::from_secs(20), "the stale-worker mail", || {
        (w.count_subjects(&stale) >= 1).then_some(())
    });
    assert_eq!(w.count_subjects(&stale), 1, "{:?}", w.admin_subjects());
}

/// An admin webhook that answers 503 for 20 s, then recovers: the alert is retried with
/// backoff until the webhook takes it, and arrives there once (and once by mail).
#[test]
fn an_admin_webhook_down_for_a_while_gets_the_alert_once_it_recovers() {
    let _serial = testkit::cluster::serial();
    let hook_rt = tokio::runtime::Runtime::new().unwrap();
    let hook = hook_rt.block_on(Receiver::start(Behaviour::FailFirst(
        503,
        Duration::from_secs(20),
    )));
    let (target, _target) = listener();
    let more = keys([
        ("stale_worker_alert", Ms(2000).into()),
        ("admin_webhook", hook.url("/meta").into()),
        ("delivery_attempts", 60.into()),
        ("delivery_backoff_max", Ms(1000).into()),
    ]);
    let mut w = World::start("vantage_hook503", Default::default(), more, &seed(target));
    w.wait_reporting();
    let victim = kill_a_standby(&mut w);
    wait_until(
        Duration::from_secs(60),
        "the webhook to take the alert",
        || stale_opened(&hook).contains(&200).then_some(()),
    );
    // Requests already on their way land; then nothing more comes for the alert.
    hook_rt.block_on(hook.settled_count(Duration::from_secs(3)));
    let answers = stale_opened(&hook);
    assert_eq!(
        answers.iter().filter(|&&s| s == 200).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers.iter().filter(|&&s| s == 503).count() >= 3,
        "retried while down: {answers:?}"
    );
    let stale = format!("worker {victim} is stale");
    assert_eq!(w.count_subjects(&stale), 1, "{:?}", w.admin_subjects());
    let rows: Vec<(String, String)> = w.query(
        "SELECT channel, CAST(state AS CHAR) FROM meta_alert_deliveries \
         WHERE kind = 'stale_worker' AND event = 'opened' ORDER BY channel",
    );
    assert_eq!(
        rows,
        [
            ("email".into(), "sent".into()),
            ("webhook".into(), "sent".into())
        ]
    );
}
