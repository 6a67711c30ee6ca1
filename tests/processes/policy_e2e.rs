//! Alert policy end to end (issue 14, items 1 to 7): maintenance windows, escalation,
//! reminders, `gobearmon ack`, check dependencies, flapping and storm control, on a real cluster (3 viewservers,
//! 3 workers as separate processes), real MariaDB, webhook receivers on loopback and a real
//! SMTP server for the admin's notices.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, SmtpSection, keys, section};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver, SmtpOptions, SmtpServer};
use testkit::probe::tcp::Port;
use toml::Table;

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
    /// Receives the admin's notices (`[smtp] admin = "admin@test"`).
    smtp: SmtpServer,
}

impl World {
    fn start(tag: &str) -> World {
        World::start_with(tag, Table::new())
    }

    /// With more `[controller]` keys.
    fn start_with(tag: &str, more: Table) -> World {
        World::start_full(tag, more, false)
    }

    /// With more `[controller]` keys, and `[web]` (the dashboard) on every worker if `web`.
    fn start_full(tag: &str, more: Table, web: bool) -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, _) = rt.block_on(TestDb::installed(tag));
        let smtp = rt.block_on(SmtpServer::start(SmtpOptions::default()));
        let mut builder = Cluster::builder(crate::BIN, &db.url);
        if web {
            builder = builder.web(&["policy-api-token-0123"]);
        }
        let cluster = builder
            .viewservers(3)
            .workers(3)
            .controller_keys(more)
            .controller_keys(keys([
                ("confirmations", 1.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_backoff_max", Ms(1000).into()),
                ("delivery_timeout", Ms(3000).into()),
            ]))
            .section(
                "smtp",
                section(SmtpSection {
                    timeout: Some(Ms(5000)),
                    ..SmtpSection::capture(smtp.port)
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

    fn sql(&self, sql: &str) {
        self.rt.block_on(self.db.as_ref().unwrap().exec(sql));
    }

    fn query<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        self.rt.block_on(async {
            let mut c = self.db.as_ref().unwrap().conn().await;
            c.query(sql).await.unwrap()
        })
    }

    fn status(&self, check: i64) -> String {
        self.query::<Option<String>>(&format!("SELECT status FROM checks WHERE id = {check}"))
            .pop()
            .flatten()
            .unwrap_or_default()
    }

    fn receiver(&self) -> Receiver {
        self.rt.block_on(Receiver::start(Behaviour::Status(200)))
    }

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

    fn wait_status(&self, check: i64, status: &str) {
        wait_until(
            Duration::from_secs(30),
            &format!("check {check} {status}"),
            || (self.status(check) == status).then_some(()),
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

/// The (check id, new_status, message) of every request `r` received.
fn got(r: &Receiver) -> Vec<(i64, String, String)> {
    r.received()
        .iter()
        .map(|q| {
            let b: serde_json::Value = serde_json::from_slice(&q.body).unwrap();
            (
                b["check"]["id"].as_i64().unwrap_or(0),
                b["new_status"].as_str().unwrap_or("").to_string(),
                b["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_requests(r: &Receiver, n: usize, secs: u64) -> Vec<(i64, String, String)> {
    wait_until(
        Duration::from_secs(secs),
        &format!("{n} request(s)"),
        || {
            let g = got(r);
            (g.len() >= n).then_some(g)
        },
    )
}

/// Nothing more arrives for a while (the assertion "and no more").
fn settle(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn tcp_check(id: i64, port: u16) -> String {
    format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
         ({id},'c{id}','tcp','{{\"address\":\"127.0.0.1:{port}\"}}',1,0);"
    )
}

#[test]
fn a_maintenance_window_holds_the_offline_notice_and_releases_it_once_at_its_end() {
    let _serial = testkit::cluster::serial();
    let w = World::start("policy_maint");
    let mut a = Port::new();
    let mut b = Port::new();
    let hook = w.receiver();
    w.sql(&format!(
        "{}{}INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both'),(2,1,'both');",
        tcp_check(1, a.port),
        tcp_check(2, b.port),
        hook.url("/hook")
    ));
    w.wait_ready();
    // A window over both checks, ending 15 s from now (database clock, UTC).
    w.sql(
        "INSERT INTO maintenance (check_id, starts_at, ends_at, reason) VALUES \
         (NULL, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, UTC_TIMESTAMP(3) + INTERVAL 15 SECOND, 'deploy')",
    );
    a.down();
    b.down();
    w.wait_status(1, "offline");
    w.wait_status(2, "offline");
    // Check 2 recovers inside the window: nothing is ever sent for it.
    b.up();
    w.wait_status(2, "online");
    let open: Vec<i64> = w.query(
        "SELECT COUNT(*) FROM maintenance WHERE ends_at > UTC_TIMESTAMP(3) + INTERVAL 2 SECOND",
    );
    assert_eq!(open, vec![1], "the flips happened inside the window");
    assert!(
        got(&hook).is_empty(),
        "held during the window: {:?}",
        got(&hook)
    );
    let events: Vec<(i64, String)> = w.query("SELECT check_id, type FROM check_events ORDER BY id");
    assert_eq!(events.len(), 3, "history records the flips: {events:?}");
    // At the end of the window the offline notice of check 1 goes out, once.
    let g = wait_requests(&hook, 1, 40);
    assert_eq!((g[0].0, g[0].1.as_str()), (1, "offline"));
    settle(4);
    assert_eq!(got(&hook).len(), 1, "{:?}", got(&hook));
    // SLA uptime leaves the window out: check 2 was down only inside it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .args(["uptime", "2", "--window", "1h", "--json", "--config"])
        .arg(&w.cluster.workers[0].config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["down_seconds"].as_i64().unwrap() >= 1, "{r}");
    assert!(r["maintenance_seconds"].as_i64().unwrap() >= 1, "{r}");
    assert!(r["uptime"].as_f64().unwrap() < 1.0, "{r}");
    assert_eq!(r["sla"].as_f64(), Some(1.0), "{r}");
    a.up();
}

#[test]
fn escalation_notifies_only_a_lasting_outage_and_fires_once_across_a_kill_9() {
    let _serial = testkit::cluster::serial();
    let mut w = World::start("policy_escalate");
    let mut a = Port::new();
    let first = w.receiver();
    let pager = w.receiver();
    w.sql(&format!(
        "{}INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}'),(2,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type,`after`) VALUES (1,1,'both',NULL),(1,2,'both',12);",
        tcp_check(1, a.port),
        first.url("/hook"),
        pager.url("/hook")
    ));
    let ctl = w.wait_ready();
    // A short outage: the first contact hears both flips, the escalated one nothing.
    a.down();
    w.wait_status(1, "offline");
    a.up();
    w.wait_status(1, "online");
    let g = wait_requests(&first, 2, 30);
    assert_eq!(g[0].1, "offline");
    assert_eq!(g[1].1, "online");
    // A lasting outage; the controller is killed while the escalation is pending.
    a.down();
    w.wait_status(1, "offline");
    wait_requests(&first, 3, 30);
    let (epoch, _) = w.cluster.current().unwrap();
    w.cluster.workers[ctl].kill9();
    wait_until(Duration::from_secs(15), "a new controller", || {
        let (e, _) = w.cluster.current()?;
        (e > epoch).then_some(())?;
        w.cluster.acting_controller()
    });
    w.cluster.workers[ctl].start();
    let pages = wait_requests(&pager, 1, 40);
    assert_eq!((pages[0].0, pages[0].1.as_str()), (1, "offline"));
    settle(4);
    assert_eq!(
        got(&pager).len(),
        1,
        "the page fires once: {:?}",
        got(&pager)
    );
    let due_after: Vec<i64> = w.query(
        "SELECT TIMESTAMPDIFF(SECOND, e.time, o.sent_at) FROM notification_outbox o \
         JOIN check_events e ON e.id = o.event_id WHERE o.contact_id = 2 AND o.state = 'sent'",
    );
    assert!(due_after.len() == 1 && due_after[0] >= 11, "{due_after:?}");
    // Every decision has its row: the short outage's page was held for the escalation, then
    // dropped when the check recovered; its recovery was not sent to a contact never told.
    let decided: Vec<(String, String, String)> = w.query(
        "SELECT e.type, CAST(o.state AS CHAR), COALESCE(o.reason, '') FROM notification_outbox o \
         JOIN check_events e ON e.id = o.event_id WHERE o.contact_id = 2 ORDER BY o.id",
    );
    let expected = [
        (
            "offline",
            "dropped",
            "dropped: the check changed again before it was sent (escalation pending: sent if still offline at ",
        ),
        (
            "online",
            "dropped",
            "not sent: the contact was not told of the outage",
        ),
        ("offline", "sent", "sent after hold: escalation pending"),
    ];
    assert_eq!(decided.len(), expected.len(), "{decided:?}");
    for (row, (kind, state, reason)) in decided.iter().zip(expected) {
        assert_eq!(
            (row.0.as_str(), row.1.as_str()),
            (kind, state),
            "{decided:?}"
        );
        assert!(row.2.starts_with(reason), "{decided:?}");
    }
    // Its recovery reaches the pager too (it was told of the outage).
    a.up();
    let pages = wait_requests(&pager, 2, 30);
    assert_eq!(pages[1].1, "online");
}

#[test]
fn reminders_repeat_until_gobearmon_ack_stops_them() {
    let _serial = testkit::cluster::serial();
    let w = World::start("policy_remind");
    let mut a = Port::new();
    let hook = w.receiver();
    w.sql(&format!(
        "{}INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type,remind_every) VALUES (1,1,'both',3);",
        tcp_check(1, a.port),
        hook.url("/hook")
    ));
    w.wait_ready();
    let bin = env!("CARGO_BIN_EXE_gobearmon");
    let config = w.cluster.workers[0].config.clone();
    // No open incident yet: refused with a clear error.
    let out = std::process::Command::new(bin)
        .args(["ack", "1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no open incident"));
    a.down();
    let g = wait_requests(&hook, 4, 40);
    assert_eq!(g[0].1, "offline");
    for r in &g[1..4] {
        assert_eq!(r.1, "offline");
        assert!(r.2.contains("still offline since"), "{r:?}");
    }
    let keys: Vec<String> = hook.received()[..4]
        .iter()
        .map(|q| q.header("idempotency-key").unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 4, "each reminder has its own key: {keys:?}");
    let out = std::process::Command::new(bin)
        .args([
            "ack",
            "c1",
            "--comment",
            "looking",
            "--by",
            "alice",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks: Vec<(String, String)> = w.query("SELECT acked_by, comment FROM incident_acks");
    assert_eq!(acks, vec![("alice".to_string(), "looking".to_string())]);
    let n = got(&hook).len();
    settle(8);
    // At most a reminder already written when the ack landed.
    assert!(got(&hook).len() <= n + 1, "{:?}", got(&hook));
    let after_ack = got(&hook).len();
    settle(7);
    assert_eq!(got(&hook).len(), after_ack, "reminders stopped");
    a.up();
    let g = wait_requests(&hook, after_ack + 1, 30);
    assert_eq!(g[after_ack].1, "online");
}

#[test]
fn a_parent_and_three_children_down_make_one_message_and_its_recovery_notifies_a_child_still_down()
{
    let _serial = testkit::cluster::serial();
    let w = World::start("policy_deps");
    let mut ports: Vec<Port> = (0..4).map(|_| Port::new()).collect();
    let spare = Port::new();
    let hook = w.receiver();
    let mut sql: String = (1..=4)
        .map(|i| tcp_check(i, ports[i as usize - 1].port))
        .collect();
    sql += &tcp_check(5, spare.port);
    sql += &tcp_check(6, spare.port);
    sql += &format!(
        "INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both'),(2,1,'both'),(3,1,'both'),(4,1,'both');
         INSERT INTO check_dependencies (check_id, depends_on) VALUES (2,1),(3,1),(4,1),(5,6),(6,5);",
        hook.url("/hook")
    );
    w.sql(&sql);
    w.wait_ready();
    // The cycle 5 <-> 6 is refused and reported to the admin, once; the rest still loads.
    let mails = w.rt.block_on(w.smtp.wait_messages_to("admin@test", 1));
    let cycle = |m: &serde_json::Value| {
        m["subject"]
            .as_str()
            .is_some_and(|s| s.contains("checks 5, 6 form a cycle"))
    };
    assert!(mails.iter().any(cycle), "no cycle notice among {mails:?}");
    // The parent and its three children go down together: one message, listing the three.
    for p in &mut ports {
        p.down();
    }
    for c in 1..=4 {
        w.wait_status(c, "offline");
    }
    let g = wait_requests(&hook, 1, 40);
    assert_eq!((g[0].0, g[0].1.as_str()), (1, "offline"), "{g:?}");
    assert!(
        g[0].2.contains("also affected: c2, c3, c4"),
        "the parent's message lists its children: {:?}",
        g[0].2
    );
    settle(12);
    assert_eq!(got(&hook).len(), 1, "one message: {:?}", got(&hook));
    // Two children come back first (they were never told of the outage: nothing), then the
    // parent, with child 4 still down: the parent's recovery and child 4's notice.
    ports[1].up();
    ports[2].up();
    w.wait_status(2, "online");
    w.wait_status(3, "online");
    ports[0].up();
    w.wait_status(1, "online");
    let g = wait_requests(&hook, 3, 40);
    settle(4);
    let g2 = got(&hook);
    assert_eq!(g2.len(), 3, "{g2:?}");
    let mut rest: Vec<(i64, &str)> = g[1..].iter().map(|r| (r.0, r.1.as_str())).collect();
    rest.sort();
    assert_eq!(rest, vec![(1, "online"), (4, "offline")], "{g:?}");
    let notices = w.smtp.messages_to("admin@test");
    assert_eq!(
        notices.iter().filter(|m| cycle(m)).count(),
        1,
        "the cycle is reported once: {notices:?}"
    );
    ports[3].up();
}

#[test]
fn a_flapping_check_sends_one_flapping_message_then_its_state_once_stable() {
    let _serial = testkit::cluster::serial();
    let w = World::start_with(
        "policy_flap",
        keys([("flap_flips", 3.into()), ("flap_window", Ms(20_000).into())]),
    );
    let mut a = Port::new();
    let hook = w.receiver();
    // No policy rows: the first flips go straight to the outbox as today.
    w.sql(&format!(
        "{}INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');",
        tcp_check(1, a.port),
        hook.url("/hook")
    ));
    w.wait_ready();
    // Six flips, a second or two apart: the fourth is more than 3 within 20 s.
    for _ in 0..3 {
        a.down();
        w.wait_status(1, "offline");
        a.up();
        w.wait_status(1, "online");
    }
    let events: Vec<i64> = w.query(
        "SELECT TIMESTAMPDIFF(SECOND, MIN(time), MAX(time)) FROM check_events WHERE check_id = 1",
    );
    assert!(
        events[0] < 15,
        "the flips fell within the window: {events:?}"
    );
    let g = wait_requests(&hook, 4, 30);
    let kinds: Vec<&str> = g[..3].iter().map(|r| r.1.as_str()).collect();
    assert_eq!(kinds, vec!["offline", "online", "offline"], "{g:?}");
    assert!(g[3].2.starts_with("flapping:"), "{g:?}");
    // Stable (online) for the window after the last flip: one message with the state.
    let g = wait_requests(&hook, 5, 40);
    assert_eq!(g[4].1, "online");
    assert!(
        g[4].2.starts_with("stable for 0h00m20s after flapping"),
        "{g:?}"
    );
    settle(4);
    assert_eq!(
        got(&hook).len(),
        5,
        "exactly five messages: {:?}",
        got(&hook)
    );
}

#[test]
fn forty_checks_down_together_reach_each_contact_as_one_digest() {
    let _serial = testkit::cluster::serial();
    // The defaults (storm_flips 20, storm_window 60 s), gathering 5 s so that the first flips
    // of the storm fold with the rest.
    let w = World::start_with("policy_storm", keys([("storm_wait", Ms(5000).into())]));
    let mut shared = Port::new();
    let ops = w.receiver();
    let oncall = w.receiver();
    let mut sql = format!(
        "INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}'),(2,'webhook','{}');",
        ops.url("/hook"),
        oncall.url("/hook")
    );
    for id in 1..=40 {
        sql.push_str(&tcp_check(id, shared.port));
        sql.push_str(&format!(
            "INSERT INTO alerts (check_id,contact_id,type) VALUES ({id},1,'both'),({id},2,'both');"
        ));
    }
    w.sql(&sql);
    w.wait_ready();
    shared.down();
    for id in 1..=40 {
        w.wait_status(id, "offline");
    }
    for hook in [&ops, &oncall] {
        wait_requests(hook, 1, 40);
    }
    settle(4);
    for hook in [&ops, &oncall] {
        let posts = hook.received();
        assert_eq!(posts.len(), 1, "one message per contact: {:?}", got(hook));
        let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
        let mut ids: Vec<i64> = body["digest"]
            .as_array()
            .unwrap_or_else(|| panic!("a digest: {body}"))
            .iter()
            .map(|d| d["check"]["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, (1..=40).collect::<Vec<i64>>(), "{body}");
        assert!(
            body["digest"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["new_status"] == "offline")
        );
    }
    let mut states: Vec<(String, i64)> =
        w.query("SELECT CAST(state AS CHAR), COUNT(*) FROM notification_outbox GROUP BY state");
    states.sort();
    assert_eq!(
        states,
        vec![("folded".to_string(), 78), ("sent".to_string(), 2)]
    );
}

/// A client of the dashboard as a browser uses it: cookies kept, redirects not followed,
/// forms submitted with the fields the page rendered.
struct Browser {
    http: reqwest::blocking::Client,
    base: String,
    cookies: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

impl Browser {
    fn new(addr: &str) -> Browser {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Browser {
            http,
            base: format!("http://{addr}"),
            cookies: Default::default(),
        }
    }

    fn cookie_header(&self) -> String {
        let jar = self.cookies.borrow();
        let pairs: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join("; ")
    }

    fn keep(&self, r: reqwest::blocking::Response) -> (u16, String) {
        for c in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.borrow_mut().insert(k.into(), v.into());
        }
        (r.status().as_u16(), r.text().unwrap())
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .unwrap();
        self.keep(r)
    }

    fn post(&self, path: &str, fields: &[(String, String)]) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(fields)
            .send()
            .unwrap();
        self.keep(r)
    }

    /// Logs in through the login form (with whatever hidden fields it carries).
    fn login(&self, name: &str, password: &str) {
        let (_, page) = self.get("/login");
        let mut fields = hidden_fields(&page, "/login");
        fields.push(("name".into(), name.into()));
        fields.push(("password".into(), password.into()));
        let (code, body) = self.post("/login", &fields);
        assert_eq!(code, 303, "login failed: {body}");
    }
}

/// The hidden fields of the form posting to `action` in `html`.
fn hidden_fields(html: &str, action: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form for {action} in {html}"));
    let form = &html[start..start + html[start..].find("</form>").unwrap()];
    let attr = |tag: &str, name: &str| {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    form.split("<input")
        .skip(1)
        .filter(|tag| attr(tag, "type").as_deref() == Some("hidden"))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

/// A dashboard page left open on an incident that has ended since: its "Acknowledge" button
/// is refused with a clear message, and the new incident, unacknowledged, still escalates.
/// The current page's button acknowledges the new one.
#[test]
fn a_stale_acknowledge_button_is_refused_and_the_new_incident_still_escalates() {
    let _serial = testkit::cluster::serial();
    let w = World::start_full("policy_staleack", Table::new(), true);
    let mut a = Port::new();
    let pager = w.receiver();
    w.sql(&format!(
        "{}INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
         INSERT INTO alerts (check_id,contact_id,type,`after`) VALUES (1,1,'offline',15);",
        tcp_check(1, a.port),
        pager.url("/hook")
    ));
    add_operator(&w, "ops", "operator-password-1");
    w.wait_ready();
    let browser = Browser::new(w.cluster.web_addr(0));
    browser.login("ops", "operator-password-1");
    // The first incident, with its page open; it ends before its escalation is due.
    a.down();
    w.wait_status(1, "offline");
    let first: i64 = w.query("SELECT MAX(id) FROM check_events WHERE check_id = 1")[0];
    let (code, page) = browser.get("/checks/1");
    assert_eq!(code, 200, "{page}");
    let stale_form = hidden_fields(&page, "/checks/1/ack");
    a.up();
    w.wait_status(1, "online");
    // The second incident: the old page's button is pressed.
    a.down();
    w.wait_status(1, "offline");
    let second: i64 = w.query("SELECT MAX(id) FROM check_events WHERE check_id = 1")[0];
    assert!(second > first);
    let (code, body) = browser.post("/checks/1/ack", &stale_form);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains(&format!("Incident {first} of check 1 is no longer open"))
            && body.contains(&format!("Incident {second} is open now")),
        "{body}"
    );
    let acks: Vec<i64> = w.query("SELECT event_id FROM incident_acks");
    assert!(acks.is_empty(), "{acks:?}");
    // The second incident escalates; the first, shorter than the escalation, did not.
    let pages = wait_requests(&pager, 1, 40);
    assert_eq!(pages, [(1, "offline".to_string(), pages[0].2.clone())]);
    let paged: Vec<i64> =
        w.query("SELECT event_id FROM notification_outbox WHERE contact_id = 1 AND state = 'sent'");
    assert_eq!(paged, [second]);
    // The page as it is now acknowledges the open incident.
    let (_, page) = browser.get("/checks/1");
    let (code, body) = browser.post("/checks/1/ack", &hidden_fields(&page, "/checks/1/ack"));
    assert_eq!(code, 303, "{body}");
    let acks: Vec<(i64, String)> = w.query("SELECT event_id, acked_by FROM incident_acks");
    assert_eq!(acks, [(second, "ops".to_string())]);
    a.up();
}

/// `gobearmon user add NAME --role operator` with the password on stdin.
fn add_operator(w: &World, name: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .args(["user", "add", name, "--role", "operator", "--config"])
        .arg(&w.cluster.workers[0].config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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
