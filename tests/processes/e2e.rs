//! gobearmon's scenarios end to end: the built binary as separate processes (three
//! viewserver members, three workers), real MariaDB, a real SMTP server (aiosmtpd), webhook
//! receivers and a Twilio stand-in on loopback.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, SmtpSection, TwilioSection, keys, section};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver, SmtpOptions, SmtpServer};
use testkit::probe::tcp::Port;
use toml::Table;

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
    smtp: SmtpServer,
}

impl World {
    /// A cluster of 3 viewservers and 3 workers with `confirmations` and fast timings.
    fn start(tag: &str, confirmations: u32, twilio: Option<&str>) -> World {
        World::start_seeded(tag, confirmations, twilio, Table::new(), &[])
    }

    /// Like [`World::start`], with more `[controller]` keys, and `seed` run on the database
    /// before any node starts (so the first term loads it).
    fn start_seeded(
        tag: &str,
        confirmations: u32,
        twilio: Option<&str>,
        more: Table,
        seed: &[&str],
    ) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, _) = rt.block_on(TestDb::installed(tag));
        for sql in seed {
            rt.block_on(db.exec(sql));
        }
        let smtp = rt.block_on(SmtpServer::start(SmtpOptions::default()));
        let twilio = twilio.unwrap_or("http://127.0.0.1:9");
        let cluster = Cluster::builder(crate::BIN, &db.url)
            .viewservers(3)
            .workers(3)
            .controller_keys(more)
            .controller_keys(keys([
                ("confirmations", confirmations.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_backoff_max", Ms(1000).into()),
                ("delivery_timeout", Ms(3000).into()),
                ("delivery_attempts", 100.into()),
            ]))
            .section(
                "smtp",
                section(SmtpSection {
                    timeout: Some(Ms(5000)),
                    ..SmtpSection::capture(smtp.port)
                }),
            )
            .section(
                "twilio",
                section(TwilioSection {
                    account_sid: "ACtest".into(),
                    auth_token: "twilio-token".into(),
                    from: "+15005550006".into(),
                    base_url: twilio.into(),
                }),
            )
            .start();
        World {
            rt,
            db: Some(db),
            cluster,
            smtp,
        }
    }

    fn db(&self) -> &TestDb {
        self.db.as_ref().unwrap()
    }

    fn sql(&self, sql: &str) {
        self.rt.block_on(self.db().exec(sql));
    }

    fn query<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        self.rt.block_on(async {
            let mut c = self.db().conn().await;
            c.query(sql).await.unwrap()
        })
    }

    fn status(&self, check: i64) -> String {
        self.query::<Option<String>>(&format!("SELECT status FROM checks WHERE id = {check}"))
            .pop()
            .flatten()
            .unwrap_or_default()
    }

    fn events(&self, check: i64) -> Vec<String> {
        self.query(&format!(
            "SELECT type FROM check_events WHERE check_id = {check} ORDER BY id"
        ))
    }

    fn receiver(&self, behaviour: Behaviour) -> Receiver {
        self.rt.block_on(Receiver::start(behaviour))
    }

    /// Waits until a controller acts and its workers are connected.
    fn wait_ready(&self) -> usize {
        let c = wait_until(Duration::from_secs(20), "a controller to act", || {
            self.cluster.acting_controller()
        });
        for w in &self.cluster.worker_addrs {
            wait_until(Duration::from_secs(30), "workers to connect", || {
                let (code, _) = self.cluster.get(w, "/ready")?;
                (code == 200).then_some(())
            });
        }
        c
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

/// Waits until `r` has received `n` requests, and returns them.
fn requests(r: &Receiver, n: usize, secs: u64) -> Vec<testkit::notify::Received> {
    wait_until(
        Duration::from_secs(secs),
        &format!("{n} request(s) at {}", r.addr),
        || {
            let got = r.received();
            (got.len() >= n).then_some(got)
        },
    )
}

/// Checks that nothing more arrives for a while (the assertion "and no more").
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

#[test]
fn s1_s4_s13_flips_are_recorded_and_notify_the_selected_contacts_once() {
    let _serial = testkit::cluster::serial();
    let w = World::start("e2e_s1", 2, None);
    let mut port = Port::new();
    let a = w.receiver(Behaviour::Status(200)); // http, both
    let c = w.receiver(Behaviour::Status(200)); // http, online
    let d = w.receiver(Behaviour::Status(200)); // http, both, disabled
    let data = format!(r#"{{"address":"127.0.0.1:{}","timeout":3}}"#, port.port);
    w.sql(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'tcp-svc','tcp','{data}',1,1);
         INSERT INTO contacts (id,type,data) VALUES (1,'http','{}'),(2,'email','ops@test'),(3,'http','{}'),(4,'http','{}');
         INSERT INTO alerts (check_id,contact_id,type,enabled) VALUES (1,1,'both',1),(1,2,'offline',1),(1,3,'online',1),(1,4,'both',0);
         INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (2,'no alerts','tcp','{data}',1,0);",
        a.url("/hook"),
        c.url("/hook"),
        d.url("/hook")
    ));
    let ctl = w.wait_ready();
    // Healthy: nothing is sent, nothing recorded.
    settle();
    assert_eq!(a.count() + c.count() + d.count(), 0);
    assert!(w.smtp.messages().is_empty());
    assert_eq!(w.status(1), "online");
    assert!(w.events(1).is_empty());

    // S13: the work protocol refuses unsigned or wrongly signed requests.
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let unsigned = http
        .post(format!(
            "http://{}/work/poll",
            w.cluster.controller_addrs[ctl]
        ))
        .body(r#"{"node":"x","epoch":1,"location":"","capacity":5,"wait_ms":0}"#)
        .send()
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    port.down();
    let offline = requests(&a, 1, 30);
    let f = &offline[0];
    assert_eq!(f.field("check_id").as_deref(), Some("1"));
    assert_eq!(f.field("name").as_deref(), Some("tcp-svc"));
    assert_eq!(f.field("type").as_deref(), Some("tcp"));
    assert_eq!(f.field("status").as_deref(), Some("offline"));
    assert_eq!(f.field("data").as_deref(), Some(data.as_str()));
    assert!(
        f.field("message")
            .unwrap()
            .starts_with("TCP connection error: "),
        "{f:?}"
    );
    let mails = w.rt.block_on(w.smtp.wait_messages_to("ops@test", 1));
    assert_eq!(mails[0]["subject"], "Check offline: tcp-svc");
    let body = mails[0]["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        body.starts_with("Check [tcp-svc] is now offline: TCP connection error: "),
        "{body}"
    );
    assert!(
        body.trim_end().ends_with(&format!(
            "\n\nID: 1\nName: tcp-svc\nType: tcp\nData: {data}\n\ngobearmon"
        )),
        "{body}"
    );
    wait_until(Duration::from_secs(10), "the offline status", || {
        (w.status(1) == "offline" && w.status(2) == "offline").then_some(())
    });
    assert_eq!(w.events(1), vec!["offline"]);
    assert_eq!(
        w.events(2),
        vec!["offline"],
        "a check without alerts still flips"
    );

    port.up();
    let online = requests(&a, 2, 30);
    assert_eq!(online[1].field("status").as_deref(), Some("online"));
    assert_eq!(online[1].field("message").as_deref(), Some(""));
    let c_got = requests(&c, 1, 10);
    assert_eq!(c_got[0].field("status").as_deref(), Some("online"));
    wait_until(Duration::from_secs(10), "the online status", || {
        (w.status(1) == "online").then_some(())
    });
    settle();
    assert_eq!(w.events(1), vec!["offline", "online"]);
    assert_eq!(a.count(), 2, "A (both) got exactly the two flips");
    assert_eq!(c.count(), 1, "C (online) got only the online flip");
    assert_eq!(d.count(), 0, "D (disabled) got nothing");
    assert_eq!(
        w.smtp.messages_to("ops@test").len(),
        1,
        "B (offline) got no online mail"
    );
}

#[test]
fn s2_flip_after_exactly_confirmations_times_delay_plus_one_results() {
    let _serial = testkit::cluster::serial();
    let w = World::start("e2e_s2", 2, None);
    let target = w.receiver(Behaviour::Status(500));
    let hook = w.receiver(Behaviour::Status(200));
    w.sql(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (2,'web','http','{{"url":"{}","expect_status":200}}',2,2);
           INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (2,1,'both');"#,
        target.url("/"),
        hook.url("/hook")
    ));
    let first = wait_until(Duration::from_secs(30), "the first run", || {
        (target.count() >= 1).then(Instant::now)
    });
    // The flip is read from the database, polled every 50 ms: the next regular run comes
    // one interval (2 s) after the flipping round, so the count read here is the count at the
    // flip (the webhook delivery that follows may take longer than that on a loaded machine).
    let (flipped, hits) = wait_until(Duration::from_secs(40), "the offline flip", || {
        (w.status(2) == "offline").then(|| (Instant::now(), target.count()))
    });
    assert_eq!(
        hits, 6,
        "the flip came with the 6th differing result, not before"
    );
    let got = requests(&hook, 1, 20);
    assert!(
        flipped - first >= Duration::from_millis(3800),
        "three rounds are spaced by two intervals: {:?}",
        flipped - first
    );
    assert_eq!(
        got[0].field("message").as_deref(),
        Some("status mismatch, got 500 but expected 200")
    );
    settle();
    assert_eq!(hook.count(), 1);
}

/// A target that answers 500 and 200 in turn.
fn alternating(rt: &tokio::runtime::Runtime) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            let n = h.fetch_add(1, Ordering::SeqCst);
            if n.is_multiple_of(2) {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::OK
            }
        }
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/"), hits)
}

#[test]
fn s3_s5_s9_agreeing_results_reset_rounds_and_edits_take_effect() {
    let _serial = testkit::cluster::serial();
    let w = World::start("e2e_s3", 2, None);
    let (url, hits) = alternating(&w.rt);
    let hook = w.receiver(Behaviour::Status(200));
    let other = w.receiver(Behaviour::Status(200));
    let healthy = w.receiver(Behaviour::Status(200));
    w.sql(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (3,'flaky','http','{{"url":"{url}","expect_status":200}}',1,1);
           INSERT INTO checks (id,name,type,data,check_interval,delay,enabled) VALUES (5,'later','http','{{"url":"{}"}}',1,0,0);
           INSERT INTO checks (id,name,type,data,check_interval,delay,status) VALUES (9,'was offline','http','{{"url":"{}"}}',1,0,'offline');
           INSERT INTO checks (id,name,type,data,check_interval,delay,status) VALUES (10,'null status','http','{{"url":"{}"}}',1,0,NULL);
           INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (3,1,'both'),(9,1,'both'),(10,1,'both');"#,
        other.url("/a"),
        healthy.url("/h"),
        healthy.url("/n"),
        hook.url("/hook")
    ));
    w.wait_ready();
    // S9: the check stored offline comes online with one notification and one event; the
    // NULL status is read as online and sends nothing.
    let got = requests(&hook, 1, 30);
    assert_eq!(got[0].field("check_id").as_deref(), Some("9"));
    assert_eq!(got[0].field("status").as_deref(), Some("online"));
    // S3: alternating results never complete two rounds in a row.
    let start = hits.load(Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        "a dozen runs of the flaky check",
        || (hits.load(Ordering::SeqCst) >= start + 12).then_some(()),
    );
    assert_eq!(hook.count(), 1, "no flip from alternating results");
    assert_eq!(w.status(3), "online");
    assert_eq!(w.events(9), vec!["online"]);
    assert!(w.events(10).is_empty());
    assert!(w.events(3).is_empty());
    // S5: a disabled check is never run; enabling it starts it; new data is used; deleting
    // it stops it.
    assert_eq!(other.count(), 0);
    w.sql("UPDATE checks SET enabled = 1 WHERE id = 5");
    requests(&other, 1, 10);
    let moved = w.receiver(Behaviour::Status(200));
    w.sql(&format!(
        r#"UPDATE checks SET data = '{{"url":"{}"}}' WHERE id = 5"#,
        moved.url("/b")
    ));
    requests(&moved, 1, 10);
    w.sql("DELETE FROM checks WHERE id = 5");
    // Within the reload period the runs stop: wait (bounded) for 2.5 s without a request, more
    // than the 1 s interval plus a run in flight; a check that kept running never gets there.
    let after_delete =
        w.rt.block_on(moved.settled_count(Duration::from_millis(2500)));
    settle();
    assert_eq!(moved.count(), after_delete, "a deleted check is not run");
    for p in &w.cluster.workers {
        assert!(!p.log_text().contains("panicked"), "{}", p.name);
    }
}

#[test]
fn s10_s11_failing_contacts_are_retried_and_twilio_is_charged() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let twilio = rt.block_on(Receiver::start(Behaviour::Twilio));
    let w = World::start("e2e_s10", 2, Some(&format!("http://{}", twilio.addr)));
    // A webhook to a closed port, opened later.
    let hook_port = testkit::cluster::free_port();
    let mut port = Port::new();
    w.sql(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'svc','tcp','{{"address":"127.0.0.1:{}"}}',1,0);
           INSERT INTO contacts (id,type,data) VALUES (1,'webhook','http://127.0.0.1:{hook_port}/hook'),(2,'sms','+15550001111'),(3,'voice','+15550001112');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'offline'),(1,2,'offline'),(1,3,'offline');"#,
        port.port
    ));
    w.wait_ready();
    port.down();
    let calls = rt.block_on(twilio.wait_count(2));
    let sms = calls
        .iter()
        .find(|r| r.path.ends_with("/Messages.json"))
        .expect("an SMS");
    assert_eq!(sms.path, "/2010-04-01/Accounts/ACtest/Messages.json");
    assert_eq!(
        sms.basic_auth(),
        Some(("ACtest".into(), "twilio-token".into()))
    );
    assert_eq!(sms.field("To").as_deref(), Some("+15550001111"));
    assert_eq!(sms.field("From").as_deref(), Some("+15005550006"));
    assert!(
        sms.field("Body")
            .unwrap()
            .starts_with("Check [svc] is now offline: TCP connection error: ")
    );
    let call = calls
        .iter()
        .find(|r| r.path.ends_with("/Calls.json"))
        .expect("a call");
    assert!(call.field("Twiml").unwrap().contains("<Say>"));
    wait_until(Duration::from_secs(10), "two charges rows", || {
        let rows: Vec<(i64, String)> = w.query("SELECT check_id, type FROM charges ORDER BY type");
        (rows == vec![(1, "sms".to_string()), (1, "voice".to_string())]).then_some(())
    });
    // The webhook is still pending and being retried, never lost.
    wait_until(
        Duration::from_secs(10),
        "retries of the dead webhook",
        || {
            let rows: Vec<(String, i64)> =
                w.query("SELECT state, attempts FROM notification_outbox WHERE contact_id = 1");
            rows.first()
                .filter(|(s, a)| s == "pending" && *a >= 2)
                .map(|_| ())
        },
    );
    // The receiver comes up on that port: the notification arrives, once.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", hook_port)))
        .unwrap();
    let got = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let g = g.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            g.lock().unwrap().push(key);
            axum::http::StatusCode::OK
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    wait_until(Duration::from_secs(15), "the late webhook", || {
        (!got.lock().unwrap().is_empty()).then_some(())
    });
    settle();
    assert_eq!(got.lock().unwrap().len(), 1);
    let sent: Vec<String> = w.query("SELECT state FROM notification_outbox ORDER BY id");
    assert_eq!(sent, vec!["sent", "sent", "sent"]);
    drop(w);
}

#[test]
fn s12_s14_failover_and_viewserver_outage_notify_exactly_once() {
    let _serial = testkit::cluster::serial();
    let mut w = World::start("e2e_s12", 2, None);
    let mut port = Port::new();
    let mut port2 = Port::new();
    let hook = w.receiver(Behaviour::Status(200));
    w.sql(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES
             (1,'a','tcp','{{"address":"127.0.0.1:{}"}}',1,1),
             (2,'b','tcp','{{"address":"127.0.0.1:{}"}}',1,1);
           INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both'),(2,1,'both');"#,
        port.port,
        port2.port,
        hook.url("/hook")
    ));
    let old = w.wait_ready();
    // S12: kill -9 the controller; a new one takes over; a failure is notified once.
    let (e1, _) = w.cluster.current().unwrap();
    w.cluster.workers[old].kill9();
    let new = wait_until(Duration::from_secs(10), "a new controller", || {
        let (e, _) = w.cluster.current()?;
        (e > e1).then_some(())?;
        w.cluster.acting_controller()
    });
    assert_ne!(new, old);
    port.down();
    let got = requests(&hook, 1, 30);
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["check"]["id"], 1);
    assert_eq!(body["new_status"], "offline");
    // The killed node comes back: no fail-back, no duplicate.
    w.cluster.workers[old].start();
    settle();
    assert_eq!(hook.count(), 1);
    assert_eq!(w.cluster.acting_controller(), Some(new));
    // S14: the whole viewserver group goes down; the controller keeps monitoring and
    // notifying.
    for vs in &mut w.cluster.viewservers {
        vs.kill9();
    }
    std::thread::sleep(Duration::from_secs(3)); // well past the lease
    port2.down();
    let got = requests(&hook, 2, 30);
    let body: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["check"]["id"], 2);
    assert_eq!(body["new_status"], "offline");
    settle();
    assert_eq!(hook.count(), 2);
    let log = w.cluster.workers[new].log_text();
    assert!(log.contains(testkit::cluster::FENCE_ALONE), "{log}");
    let events: Vec<(i64, String)> = w.query("SELECT check_id, type FROM check_events ORDER BY id");
    assert_eq!(events, vec![(1, "offline".into()), (2, "offline".into())]);
    port.up();
}

#[test]
fn kill_9_of_the_controller_around_flips_loses_and_repeats_nothing() {
    let _serial = testkit::cluster::serial();
    // 20 flips in a few minutes would be flapping (`flap_flips` 5 per hour): this test counts
    // the delivery of every flip, so flapping is kept out of its way.
    let mut w = World::start_seeded(
        "e2e_kill_flips",
        2,
        None,
        keys([("flap_flips", 10000.into())]),
        &[],
    );
    let mut port = Port::new();
    let hook = w.receiver(Behaviour::Status(200));
    w.sql(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'svc','tcp','{{"address":"127.0.0.1:{}","timeout":3}}',1,0);
           INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');"#,
        port.port,
        hook.url("/hook")
    ));
    let mut ctl = w.wait_ready();
    let rounds = 20;
    let mut expected = Vec::new();
    for i in 0..rounds {
        let to = if i % 2 == 0 { "offline" } else { "online" };
        if to == "offline" {
            port.down();
        } else {
            port.up();
        }
        expected.push(to.to_string());
        // Kill the controller at a different moment around the flip each time: before the
        // confirmations, while they run, as the flip is written, or while it is delivered.
        std::thread::sleep(Duration::from_millis(150 * (i as u64 % 12)));
        let (epoch, _) = w.cluster.current().unwrap();
        w.cluster.workers[ctl].kill9();
        let killed = ctl;
        ctl = wait_until(Duration::from_secs(15), "a new controller", || {
            let (e, _) = w.cluster.current()?;
            (e > epoch).then_some(())?;
            w.cluster.acting_controller()
        });
        w.cluster.workers[killed].start();
        wait_until(Duration::from_secs(30), "the flip to be recorded", || {
            (w.status(1) == to).then_some(())
        });
    }
    // Every flip recorded once, in order.
    assert_eq!(w.events(1), expected);
    let event_ids: Vec<i64> = w.query("SELECT id FROM check_events ORDER BY id");
    // Every flip notified: at least once, and a repeat only with the same idempotency key.
    let got = wait_until(Duration::from_secs(60), "every notification", || {
        let keys: std::collections::BTreeSet<String> = hook
            .received()
            .iter()
            .filter_map(|r| r.header("idempotency-key"))
            .collect();
        (keys.len() >= event_ids.len()).then(|| hook.received())
    });
    let keys: Vec<String> = got
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    let ids: std::collections::BTreeSet<String> = event_ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        distinct
            .into_iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ids,
        "one idempotency key per recorded flip, none for anything else"
    );
    for r in &got {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let key = r.header("idempotency-key").unwrap();
        let nth = event_ids.iter().position(|e| e.to_string() == key).unwrap();
        assert_eq!(body["new_status"], expected[nth], "notification {key}");
    }
    let repeats = keys.len() - ids.len();
    assert!(
        repeats <= rounds,
        "at most the one send in flight repeats per kill: {repeats} repeats"
    );
    eprintln!(
        "{rounds} kills: {} flips, {} notifications, {repeats} repeated",
        ids.len(),
        keys.len()
    );
}

#[test]
fn a_single_worker_runs_every_interval_and_a_short_quorum_is_reported_then_resumes() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _) = rt.block_on(TestDb::installed("e2e_quorum"));
    let smtp = rt.block_on(SmtpServer::start(SmtpOptions::default()));
    let mut cluster = Cluster::builder(crate::BIN, &db.url)
        .workers(1)
        .controller_keys(keys([
            ("confirmations", 2.into()),
            ("delivery_backoff", Ms(200).into()),
        ]))
        .section("smtp", section(SmtpSection::capture(smtp.port)))
        .start();
    let target = rt.block_on(Receiver::start(Behaviour::Status(200)));
    let hook = rt.block_on(Receiver::start(Behaviour::Status(200)));
    rt.block_on(db.exec(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'alone','http','{{"url":"{}"}}',1,0);
           INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (2,'down','tcp','{{"address":"127.0.0.1:9"}}',1,0);
           INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (2,1,'both');"#,
        target.url("/"),
        hook.url("/hook")
    )));
    // One worker runs every check every interval (gobearmon froze here).
    let t0 = Instant::now();
    wait_until(Duration::from_secs(30), "runs every interval", || {
        (target.count() >= 5).then_some(())
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "paced by the interval"
    );
    // Confirmations 2 with one worker: no flip, the status says why, the admin is told once.
    let status = wait_until(
        Duration::from_secs(15),
        "the status to show the quorum",
        || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
                .args(["status", "--json", "--config"])
                .arg(cluster.path("w1.toml"))
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let check = v["checks"]
                .as_array()?
                .iter()
                .find(|c| c["id"] == 2)?
                .clone();
            (check["insufficient_quorum"] == true).then_some(v)
        },
    );
    assert_eq!(status["controller"], "w1");
    assert_eq!(status["workers"][0]["id"], "w1");
    assert_eq!(status["workers"][0]["stale"], false);
    let mails = rt.block_on(smtp.wait_messages_to("admin@test", 1));
    assert_eq!(mails[0]["subject"], "gobearmon: insufficient quorum");
    assert_eq!(hook.count(), 0);
    // A second worker arrives: the check resumes by itself and flips.
    cluster.add_worker(Table::new());
    let got = wait_until(
        Duration::from_secs(30),
        "the flip once quorum is back",
        || {
            let r = hook.received();
            (!r.is_empty()).then_some(r)
        },
    );
    assert_eq!(got[0].field("status").as_deref(), Some("offline"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        smtp.messages_to("admin@test").len(),
        1,
        "one admin notice, not many"
    );
    drop(cluster);
    rt.block_on(db.drop_db());
}

/// Issue 9, fix 5: a flip whose write keeps failing is written before the flip that followed
/// it, so the database ends with both, in order, and both are queued for the contact. (Before,
/// each flip was written by a task of its own: the "online" one found "online" stored, took
/// itself for recorded, and the retried "offline" landed after it: the check stayed offline in
/// the database and no recovery was queued. Only a reload, which took that late "offline" for
/// an operator's edit, could start the voting again; the reload period here is long, as the
/// table would be unchanged in production.)
#[test]
fn flips_of_one_check_are_recorded_in_order_when_a_write_is_retried() {
    let _serial = testkit::cluster::serial();
    let mut port = Port::new();
    let data = format!(r#"{{"address":"127.0.0.1:{}","timeout":2}}"#, port.port);
    let checks = format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'svc','tcp','{data}',1,0);
         INSERT INTO contacts (id,type,data) VALUES (1,'email','ops@test');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');"
    );
    let w = World::start_seeded(
        "e2e_order",
        1,
        None,
        keys([("reload_period", "10m".into())]),
        &[
            // A fault the test switches on and off: inserting an "offline" event fails while
            // it is on.
            "CREATE TABLE test_faults (id INT PRIMARY KEY, offline_until DATETIME(3) NOT NULL);
             INSERT INTO test_faults VALUES (1, '2000-01-01');",
            "CREATE TRIGGER test_fail_offline BEFORE INSERT ON check_events FOR EACH ROW
             BEGIN
               IF NEW.type = 'offline' AND (SELECT offline_until FROM test_faults WHERE id = 1) > NOW(3) THEN
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault';
               END IF;
             END",
            &checks,
        ],
    );
    let ctl = w.wait_ready();
    let online_results = || -> i64 {
        w.query::<i64>(
            "SELECT COUNT(*) FROM check_results WHERE check_id = 1 AND status = 'online'",
        )[0]
    };
    wait_until(Duration::from_secs(20), "a first online result", || {
        (online_results() > 0).then_some(())
    });
    w.sql("UPDATE test_faults SET offline_until = NOW(3) + INTERVAL 1 HOUR");
    port.down();
    // The offline flip is decided and its write fails, again and again.
    wait_until(
        Duration::from_secs(30),
        "the offline flip to be retried",
        || {
            let log = w.cluster.workers[ctl].log_text();
            (log.matches("injected fault").count() >= 2).then_some(())
        },
    );
    // The target recovers and the controller counts an online result: the engine flips back.
    w.sql("DELETE FROM check_results");
    port.up();
    wait_until(
        Duration::from_secs(30),
        "an online result after the recovery",
        || (online_results() > 0).then_some(()),
    );
    // The database heals.
    w.sql("UPDATE test_faults SET offline_until = '2000-01-01'");
    wait_until(Duration::from_secs(30), "both flips, in order", || {
        (w.events(1) == ["offline", "online"] && w.status(1) == "online").then_some(())
    });
    settle();
    assert_eq!(w.events(1), vec!["offline", "online"]);
    assert_eq!(w.status(1), "online");
    let queued: Vec<String> = w.query(
        "SELECT e.type FROM notification_outbox o JOIN check_events e ON e.id = o.event_id \
         WHERE o.contact_id = 1 ORDER BY o.id",
    );
    assert_eq!(
        queued,
        vec!["offline", "online"],
        "each flip queued once, in order"
    );
}

/// Issue 9, fix 10: a new controller does not send every check out at once; the first runs are
/// spread over the interval. (Before, all were due the moment the term loaded them.)
#[test]
fn a_new_controller_spreads_the_first_runs_over_the_interval() {
    let _serial = testkit::cluster::serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen = arrivals.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                seen.lock().unwrap().push(Instant::now());
            }
        }
    });
    let checks: Vec<String> = (1..=30)
        .map(|id| {
            format!(r#"({id},'c{id}','tcp','{{"address":"127.0.0.1:{port}","timeout":2}}',10,0)"#)
        })
        .collect();
    let seed = format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES {};",
        checks.join(",")
    );
    let w = World::start_seeded("e2e_spread", 1, None, Table::new(), &[&seed]);
    w.wait_ready();
    let first: Vec<Instant> = wait_until(Duration::from_secs(40), "30 first runs", || {
        let got = arrivals.lock().unwrap().clone();
        (got.len() >= 30).then(|| got[..30].to_vec())
    });
    let span = *first.last().unwrap() - first[0];
    assert!(
        span >= Duration::from_secs(4),
        "the first runs of 30 checks of 10 s came within {span:?}"
    );
    let busiest = first
        .iter()
        .map(|t| {
            first
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 10,
        "{busiest} of the 30 first runs within one second"
    );
}

/// Issue 9, fix 4: a new controller that cannot raise the fence (the row held by a session it
/// may not end: here one that claims a newer epoch and never commits) tells the admin, and
/// takes over once the holder lets go. (Before, it only logged each failed attempt.)
#[test]
fn a_new_controller_that_cannot_raise_the_fence_tells_the_admin() {
    let _serial = testkit::cluster::serial();
    let mut w = World::start("e2e_fence_held", 1, None);
    let old = w.wait_ready();
    let (e1, _) = w.cluster.current().unwrap();
    testkit::db::wait_fence(&w.rt, w.db(), e1);
    // A session that locks the fence row and marks it with a newer epoch, uncommitted.
    let mut holder = w.rt.block_on(w.db().conn());
    w.rt.block_on(async {
        holder.query_drop("START TRANSACTION").await.unwrap();
        holder
            .query_drop("SELECT epoch FROM epoch_fence WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
        holder
            .query_drop(
                "UPDATE epoch_fence SET epoch = 1000000, holder_connection = CONNECTION_ID() \
                 WHERE id = 1",
            )
            .await
            .unwrap();
    });
    w.cluster.workers[old].kill9();
    let mails = w.rt.block_on(w.smtp.wait_messages_to("admin@test", 1));
    let notice = mails
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("cannot raise the epoch fence"))
        })
        .unwrap_or_else(|| panic!("no fence notice among {mails:?}"));
    let body = notice["body"].as_str().unwrap();
    assert!(body.contains("It keeps trying"), "{body}");
    // The holder gives up: the new controller raises the fence and acts.
    w.rt.block_on(holder.query_drop("ROLLBACK")).unwrap();
    drop(holder);
    let (e2, _) = w.cluster.current().unwrap();
    assert!(e2 > e1);
    let fence = testkit::db::wait_fence(&w.rt, w.db(), e2);
    assert_eq!(fence, e2);
    wait_until(Duration::from_secs(20), "the new controller to act", || {
        w.cluster.acting_controller().filter(|c| *c != old)
    });
}

/// Issue 10, item 9, end to end: an http check whose data is full of secrets fails, and the
/// flip reaches the email (real SMTP server), the form and the JSON webhooks, the
/// controller's `/status` (through `gobearmon status`) and the nodes' logs without any of
/// them. The message in each notification quotes the URL without its query values.
#[test]
fn secrets_in_check_data_reach_no_notification_status_or_log() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _) = rt.block_on(TestDb::installed("e2e_redact"));
    let smtp = rt.block_on(SmtpServer::start(SmtpOptions::default()));
    let hook = rt.block_on(Receiver::start(Behaviour::Status(200)));
    let cluster = Cluster::builder(crate::BIN, &db.url)
        .workers(1)
        .controller_keys(keys([("confirmations", 1.into())]))
        .section(
            "smtp",
            section(SmtpSection {
                admin: None,
                ..SmtpSection::capture(smtp.port)
            }),
        )
        .start();
    let closed = testkit::cluster::free_port();
    let secrets = [
        "URLPW2",
        "QTOKEN2",
        "QSIG2",
        "BODY2SECRET",
        "PW2FIELD",
        "HAUTH2",
        "HCUSTOM2",
    ];
    let data = serde_json::json!({
        "url": format!("http://alice:URLPW2@127.0.0.1:{closed}/probe?token=QTOKEN2&page=PGVAL2&sig=QSIG2"),
        "method": "POST", "body": "BODY2SECRET", "username": "bob", "password": "PW2FIELD",
        "headers": {"Authorization": "Bearer HAUTH2", "X-Custom": "HCUSTOM2",
                    "Accept": "text/plain"},
        "timeout": 3,
    });
    rt.block_on(db.exec(&format!(
        r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'keyed','http','{data}',1,0);
           INSERT INTO contacts (id,type,data) VALUES (1,'email','ops@test'),(2,'http','{}'),(3,'webhook','{}');
           INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'offline'),(1,2,'offline'),(1,3,'offline');"#,
        hook.url("/form"),
        hook.url("/json"),
    )));
    let no_secret = |surface: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked in {surface}: {text}");
        }
    };
    let shown_url = format!(
        "http://alice:redacted@127.0.0.1:{closed}/probe?token=redacted&page=redacted&sig=redacted"
    );

    let got = wait_until(Duration::from_secs(30), "both webhooks", || {
        let r = hook.received();
        (r.len() >= 2).then_some(r)
    });
    let form = got.iter().find(|r| r.path == "/form").unwrap();
    no_secret("the form webhook", &String::from_utf8_lossy(&form.body));
    let message = form.field("message").unwrap();
    assert!(
        message.starts_with(&format!(
            "error performing HTTP request: Post \"{shown_url}\": "
        )),
        "{message}"
    );
    let shown: serde_json::Value = serde_json::from_str(&form.field("data").unwrap()).unwrap();
    assert_eq!(shown["headers"]["Accept"], "text/plain");
    assert_eq!(shown["username"], "bob");
    // A query value whose name is harmless stays in the data, never in a message.
    assert!(shown["url"].as_str().unwrap().contains("page=PGVAL2"));
    assert!(!message.contains("PGVAL2"));
    let json = got.iter().find(|r| r.path == "/json").unwrap();
    no_secret("the JSON webhook", &String::from_utf8_lossy(&json.body));
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["message"], message.as_str());
    let mail = rt.block_on(smtp.wait_messages_to("ops@test", 1)).remove(0);
    no_secret("the email", &mail.to_string());
    assert!(
        mail["body"].as_str().unwrap().contains(&shown_url),
        "{mail}"
    );

    let status = wait_until(Duration::from_secs(15), "the status", || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
            .args(["status", "--config"])
            .arg(cluster.path("w1.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).ok()?;
        text.contains("keyed").then_some(text)
    });
    no_secret("/status", &status);
    for p in cluster.viewservers.iter().chain(&cluster.workers) {
        no_secret(&format!("the log of {}", p.name), &p.log_text());
    }
    drop(cluster);
    rt.block_on(db.drop_db());
}

/// An `sms` contact with `max_per_hour = 0` is a bad row: the admin is told once (a
/// meta-alert naming the contact), and its SMS goes out under the default cap (`[twilio]
/// max_per_hour`) instead of being held forever.
#[test]
fn a_contact_capped_at_zero_gets_the_default_cap_and_the_admin_is_told_once() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let twilio = rt.block_on(Receiver::start(Behaviour::Twilio));
    let mut port = Port::new();
    let seed = [
        format!(
            r#"INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES (1,'svc','tcp','{{"address":"127.0.0.1:{}"}}',1,0)"#,
            port.port
        ),
        "INSERT INTO contacts (id,type,data,max_per_hour) VALUES (2,'sms','+15550001111',0)".into(),
        "INSERT INTO alerts (check_id,contact_id,type) VALUES (1,2,'offline')".into(),
    ];
    let seed: Vec<&str> = seed.iter().map(String::as_str).collect();
    let url = format!("http://{}", twilio.addr);
    let w = World::start_seeded("e2e_cap0", 1, Some(&url), Table::new(), &seed);
    w.wait_ready();
    let told = |w: &World| {
        w.smtp
            .messages_to("admin@test")
            .into_iter()
            .filter(|m| {
                let s = m["subject"].as_str().unwrap_or("");
                s.contains("a row cannot be used: contacts 2")
            })
            .collect::<Vec<_>>()
    };
    // The SMS goes out at once: the default cap (30) is far from used up.
    port.down();
    let calls = rt.block_on(twilio.wait_count(1));
    assert_eq!(calls[0].field("To").as_deref(), Some("+15550001111"));
    wait_until(Duration::from_secs(10), "the SMS recorded as sent", || {
        let rows: Vec<String> =
            w.query("SELECT CAST(state AS CHAR) FROM notification_outbox WHERE contact_id = 2");
        (rows == ["sent"]).then_some(())
    });
    let mail = wait_until(
        Duration::from_secs(30),
        "the admin told of contact 2",
        || told(&w).into_iter().next(),
    );
    let body = mail.to_string();
    assert!(
        body.contains("max_per_hour = 0") && body.contains("30"),
        "{body}"
    );
    // The row is still bad and reread every reload period: told once all the same.
    assert_eq!(told(&w).len(), 1, "{:?}", w.smtp.messages_to("admin@test"));
    // And counted on the acting controller's /metrics.
    let acting = w.cluster.acting_controller().unwrap();
    let (_, metrics) = w
        .cluster
        .get(&w.cluster.worker_addrs[acting], "/metrics")
        .unwrap();
    let bad_rows = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gobearmon_bad_rows "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(bad_rows, Some(1.0), "{metrics}");
}
