//! The dashboard in a real browser (chromium headless through chromedriver, WebDriver via
//! fantoccini) against a real cluster (one viewserver, two workers in two locations, the
//! built binary as separate processes), real MariaDB and a webhook receiver. One cluster and
//! one browser serve every step, in order; every page visited is screenshotted into
//! `target/screenshots/`.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use testkit::cluster::{Cluster, free_port, wait_until};
use testkit::config::{Ms, keys};
use testkit::db::TestDb;
use testkit::notify::{Behaviour, Receiver};

const SECRET: &str = "s3cret-in-the-check-data";
const OPERATOR_PW: &str = "operator-password-1";
const VIEWER_PW: &str = "viewer-password-22";

struct World {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
}

impl World {
    fn one<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        self.rt.block_on(self.db.as_ref().unwrap().one(sql))
    }

    fn exec(&self, sql: &str) {
        self.rt.block_on(self.db.as_ref().unwrap().exec(sql))
    }

    /// The `[web] addr` of worker `i`.
    fn web_addr(&self, i: usize) -> String {
        self.cluster.web_addr(i).to_string()
    }

    /// `gobearmon user add NAME --role ROLE` with the password on stdin.
    fn add_user(&self, name: &str, role: &str, password: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gobearmon"))
            .args(["user", "add", name, "--role", role, "--config"])
            .arg(&self.cluster.workers[0].config)
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
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("added user {name}")));
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

/// chromedriver on a free port, ended on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        // A process group of its own, so that dropping the driver ends the browsers it
        // started too, also when a failing step never closed its session.
        let child = Command::new("/usr/bin/chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed at /usr/bin/chromedriver (scripts/test.sh installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap();
        wait_until(Duration::from_secs(20), "chromedriver to answer", || {
            http.get(format!("{url}/status"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this test made for chromedriver and its browsers.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-proxy-server"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a chromium session through chromedriver")
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn login(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click_and_load(c, Locator::Id("login")).await;
}

/// Clicks what submits a form or follows a link, and waits for the next document.
async fn click_and_load(c: &Client, what: Locator<'_>) {
    c.execute("window.__old_page = 1;", vec![]).await.unwrap();
    c.find(what).await.unwrap().click().await.unwrap();
    eventually(20, "the next page to load", || async {
        let fresh = c
            .execute(
                "return window.__old_page === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .ok()?;
        (fresh == serde_json::json!(true)).then_some(())
    })
    .await;
}

async fn text_of(c: &Client, what: Locator<'_>) -> String {
    c.find(what).await.unwrap().text().await.unwrap()
}

/// Polls `f` in the browser every 200 ms for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn row_state(c: &Client, id: i64) -> Option<String> {
    c.find(Locator::Id(&format!("check-{id}")))
        .await
        .ok()?
        .attr("data-status")
        .await
        .ok()?
}

#[test]
fn the_dashboard_in_a_browser_logs_in_shows_live_state_and_lets_only_operators_pause() {
    let _serial = testkit::cluster::serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store) = rt.block_on(TestDb::installed("dash"));
    rt.block_on(store.close());
    let mut cluster = Cluster::builder(crate::BIN, &db.url)
        .controller_keys(keys([
            ("confirmations", 2.into()),
            ("delivery_backoff", Ms(200).into()),
            ("delivery_timeout", Ms(3000).into()),
        ]))
        .web(&["dash-api-token-0123456789"])
        .start();
    cluster.add_worker(keys([("location", "eu-west".into())]));
    cluster.add_worker(keys([("location", "us-east".into())]));
    let mut w = World {
        rt,
        db: Some(db),
        cluster,
    };
    let driver = Driver::start();
    let hook = w.rt.block_on(Receiver::start(Behaviour::Status(200)));
    let down_port = free_port();
    let mut down = Some(TcpListener::bind(("127.0.0.1", down_port)).unwrap());
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    w.rt.block_on(w.db.as_ref().unwrap().exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
           (1,'billing','tcp','{{\"address\":\"127.0.0.1:{down_port}\",\"timeout\":2,\"password\":\"{SECRET}\"}}',1,0),
           (2,'search','tcp','{{\"address\":\"{up_addr}\",\"timeout\":2}}',1,0);
         INSERT INTO contacts (id,type,data) VALUES (1,'http','{}');
         INSERT INTO checks (id,name,type,data,enabled) VALUES (3,'private','tcp','{{}}',0),
           (4,'admin','http','{{\"url\":\"http://127.0.0.1:9/admin\",\"username\":\"root\",\"password\":\"{SECRET}\"}}',0);
         INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');
         INSERT INTO status_pages (id,slug,title,description) VALUES (1,'demo','Demo status','Our services');
         INSERT INTO status_page_checks (page_id,check_id,group_name,display_name,sort_order) VALUES
           (1,1,'Core','Billing',1),(1,2,'Core','',2);",
        hook.url("/hook")
    )));
    w.add_user("olga", "operator", OPERATOR_PW);
    w.add_user("vic", "viewer", VIEWER_PW);
    wait_until(Duration::from_secs(30), "a controller to act", || {
        w.cluster.acting_controller()
    });
    wait_until(
        Duration::from_secs(30),
        "results from both locations",
        || {
            let n: i64 =
                w.one("SELECT COUNT(DISTINCT location) FROM result_history WHERE check_id = 1");
            (n == 2).then_some(())
        },
    );
    let base = format!("http://{}", w.web_addr(0));
    let c = w.rt.block_on(browser(&driver.url));

    // A wrong password stays on the login form with its error; the right one lands on the
    // overview, which lists both checks online.
    w.rt.block_on(async {
        login(&c, &base, "olga", "not-the-password").await;
        let err = text_of(&c, Locator::Id("login-error")).await;
        assert!(err.contains("wrong"), "{err}");
        assert!(c.current_url().await.unwrap().path().starts_with("/login"));
        shot(&c, "login-failed").await;
        login(&c, &base, "olga", OPERATOR_PW).await;
        assert_eq!(c.current_url().await.unwrap().path(), "/");
        assert_eq!(row_state(&c, 1).await.as_deref(), Some("online"));
        assert_eq!(row_state(&c, 2).await.as_deref(), Some("online"));
        let row = text_of(&c, Locator::Id("check-1")).await;
        assert!(row.contains("billing") && row.contains("online"), "{row}");
        // A dot per location, the message on hover.
        let dots = c.find_all(Locator::Css("#check-1 .dot")).await.unwrap();
        assert_eq!(dots.len(), 2);
        shot(&c, "overview").await;
    });

    // The target goes down: the open page turns the row offline without a reload.
    drop(down.take());
    w.rt.block_on(async {
        // A marker that a reload would lose.
        c.execute("window.__no_reload = 1;", vec![]).await.unwrap();
        eventually(40, "the row to turn offline", || async {
            (row_state(&c, 1).await.as_deref() == Some("offline")).then_some(())
        })
        .await;
        let kept = c
            .execute("return window.__no_reload === 1;", vec![])
            .await
            .unwrap();
        assert_eq!(kept, serde_json::json!(true), "the page was reloaded");
        let text = text_of(&c, Locator::Id("check-1")).await;
        assert!(text.contains("offline"), "{text}");
        shot(&c, "overview-offline").await;
    });
    wait_until(Duration::from_secs(30), "the notification sent", || {
        let n: i64 =
            w.one("SELECT COUNT(*) FROM notification_outbox WHERE check_id = 1 AND state = 'sent'");
        (n >= 1).then_some(())
    });

    // A row held by a contact's hourly cap (storm control looks at it again in an hour).
    w.exec(
        "INSERT INTO notification_outbox (event_id, check_id, contact_id, payload, state, reason, \
           held_until, next_attempt_at) VALUES (999999, 1, 1, '{}', 'held', \
           'cap: the contact''s messages per hour are used up', NOW(3) + INTERVAL 1 HOUR, \
           NOW(3) + INTERVAL 1 HOUR)",
    );

    // The check page: the incident with who confirmed it and the sent notification; latency
    // points for each location; today's cell of the 90-day bar; no secret.
    let today = gobearmon::history::rfc3339(
        gobearmon::notify::unix_ms(std::time::SystemTime::now()) / 1000,
    )[..10]
        .to_string();
    w.rt.block_on(async {
        c.goto(&format!("{base}/checks/1")).await.unwrap();
        let inc = text_of(&c, Locator::Css("tr.incident")).await;
        assert!(inc.contains("open"), "{inc}");
        assert!(inc.contains("http #1: sent"), "{inc}");
        assert!(inc.contains("w1") || inc.contains("w2"), "{inc}");
        for loc in ["eu-west", "us-east"] {
            let pts = c
                .find_all(Locator::Css(&format!(
                    "svg.chart circle[data-location='{loc}']"
                )))
                .await
                .unwrap();
            assert!(!pts.is_empty(), "no latency points for {loc}");
        }
        c.find(Locator::Css(&format!("svg.bar rect[data-day='{today}']")))
            .await
            .expect("today's cell in the 90-day bar");
        let src = c.source().await.unwrap();
        assert!(!src.contains(SECRET));
        shot(&c, "check").await;

        // Pause: enabled = 0 in SQL, and the button turns into Resume.
        click_and_load(&c, Locator::Id("do-pause")).await;
        c.find(Locator::Id("do-resume"))
            .await
            .expect("a resume button after pausing");
        shot(&c, "check-paused").await;

        // A test notification to the webhook contact, through the real delivery path.
        let before = hook.count();
        c.goto(&format!("{base}/notifications")).await.unwrap();
        c.find(Locator::Id("contact"))
            .await
            .unwrap()
            .send_keys("1")
            .await
            .unwrap();
        click_and_load(&c, Locator::Id("do-test")).await;
        let said = text_of(&c, Locator::Id("test-result")).await;
        assert!(said.starts_with("Delivered"), "{said}");
        assert_eq!(hook.count(), before + 1);
        // Held rows are listed with why, and so are the latest decisions.
        c.goto(&format!("{base}/notifications")).await.unwrap();
        for table in ["held", "decisions"] {
            let rows = text_of(&c, Locator::Css(&format!("#{table} tbody"))).await;
            assert!(
                rows.contains("cap: the contact's messages per hour are used up"),
                "{table}: {rows}"
            );
        }
    });
    let enabled: i64 = w.one("SELECT enabled FROM checks WHERE id = 1");
    assert_eq!(enabled, 0);
    // The check stops running: its result count stays put over several of its 1 s intervals.
    let count = || -> i64 { w.one("SELECT COUNT(*) FROM result_history WHERE check_id = 1") };
    let mut last = (count(), std::time::Instant::now());
    wait_until(
        Duration::from_secs(30),
        "the paused check to stop running",
        || {
            let n = count();
            if n != last.0 {
                last = (n, std::time::Instant::now());
            }
            (last.1.elapsed() > Duration::from_secs(5)).then_some(())
        },
    );

    // A viewer: no buttons, and a POST with its own session and CSRF token is refused.
    let (cookie, csrf) = w.rt.block_on(async {
        click_and_load(&c, Locator::Css("header form button")).await;
        assert!(c.current_url().await.unwrap().path().starts_with("/login"));
        login(&c, &base, "vic", VIEWER_PW).await;
        assert_eq!(c.current_url().await.unwrap().path(), "/");
        c.goto(&format!("{base}/checks/2")).await.unwrap();
        assert!(
            c.find(Locator::Id("do-pause")).await.is_err(),
            "a viewer sees a pause button"
        );
        shot(&c, "check-viewer").await;
        // Parameters as the workers run them, the password redacted.
        c.goto(&format!("{base}/checks/4")).await.unwrap();
        let params = text_of(&c, Locator::Id("params")).await;
        assert!(params.contains("http://127.0.0.1:9/admin"), "{params}");
        assert!(params.contains("<redacted>"), "{params}");
        assert!(!c.source().await.unwrap().contains(SECRET));
        // The workers page: both workers with their locations, the controller named.
        click_and_load(&c, Locator::LinkText("Workers")).await;
        for (id, loc) in [("w1", "eu-west"), ("w2", "us-east")] {
            let row = text_of(&c, Locator::Id(&format!("worker-{id}"))).await;
            assert!(row.contains(loc) && row.contains("live"), "{row}");
        }
        let main = text_of(&c, Locator::Css("main")).await;
        assert!(main.contains("Controller: w"), "{main}");
        // What the acting controller adds: results per second over the last minute (check 2
        // runs every second), and the viewserver group with its leader.
        let mut runs = 0.0;
        for id in ["w1", "w2"] {
            let cell = text_of(&c, Locator::Css(&format!("#worker-{id} td.runs"))).await;
            runs += cell
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("runs per second {cell:?}"));
        }
        assert!(runs > 0.0, "no runs per second shown");
        let members = text_of(&c, Locator::Css("ul.members")).await;
        assert!(
            members.contains(&format!("{} — leader", w.cluster.vs_addrs[0])),
            "{members}"
        );
        shot(&c, "workers").await;
        click_and_load(&c, Locator::LinkText("Notifications")).await;
        let main = text_of(&c, Locator::Css("main")).await;
        assert!(
            main.contains("Pending (") && main.contains("Failed ("),
            "{main}"
        );
        shot(&c, "notifications").await;
        let cookie = c.get_named_cookie("gbm_session").await.unwrap();
        let csrf = c
            .find(Locator::Css("header input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        (cookie.value().to_string(), csrf)
    });
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/checks/2/pause"))
        .header("cookie", format!("gbm_session={cookie}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let enabled: i64 = w.one("SELECT enabled FROM checks WHERE id = 2");
    assert_eq!(enabled, 1);
    // Without a session the pages send to the login form.
    let r = http.get(format!("{base}/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);

    // The public status page, logged out: overall state, both services with their bars, the
    // open incident in plain words, and nothing of a probe's message, address or parameters.
    w.rt.block_on(
        w.db.as_ref()
            .unwrap()
            .exec("UPDATE checks SET enabled = 1 WHERE id = 1"),
    );
    let message: String =
        w.one("SELECT message FROM check_results WHERE check_id = 1 AND message <> '' LIMIT 1");
    w.rt.block_on(async {
        click_and_load(&c, Locator::Css("header form button")).await;
        c.goto(&format!("{base}/status/demo")).await.unwrap();
        let overall = text_of(&c, Locator::Id("overall")).await;
        assert!(overall.contains("1 of 2 services down"), "{overall}");
        let billing = text_of(&c, Locator::Id("service-1")).await;
        assert!(billing.contains("Billing"), "{billing}");
        c.find(Locator::Css(&format!(
            "#service-2 svg.bar rect[data-day='{today}']"
        )))
        .await
        .expect("today's cell on the status page");
        let incidents = text_of(&c, Locator::Css("ul.public-incidents")).await;
        assert!(incidents.contains("Billing is down since"), "{incidents}");
        let src = c.source().await.unwrap();
        for secret in [SECRET, message.as_str(), "127.0.0.1", "private", "w1", "w2"] {
            assert!(!src.contains(secret), "the status page shows {secret:?}");
        }
        shot(&c, "status-page").await;
    });

    // Badges: valid SVG with the right figure; none for a check on no public page.
    let svg = |path: &str| -> (u16, String) {
        let r = http.get(format!("{base}{path}")).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let text_of_svg = |body: &str| -> String {
        let doc = roxmltree::Document::parse(body).expect("a badge is valid XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.root_element()
            .children()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text())
            .unwrap()
            .to_string()
    };
    let (code, body) = svg("/badge/2/status.svg");
    assert_eq!(code, 200);
    assert_eq!(text_of_svg(&body), "status: up");
    let (_, body) = svg("/badge/1/status.svg");
    assert_eq!(text_of_svg(&body), "status: down");
    let (_, body) = svg("/badge/2/uptime/30d.svg");
    assert_eq!(text_of_svg(&body), "uptime 30d: 100.00%");
    // Check 1's 24 h figure is the API's ratio, within the second between the two reads.
    let (_, body) = svg("/badge/1/uptime/24h.svg");
    let shown: f64 = text_of_svg(&body)
        .trim_start_matches("uptime 24h: ")
        .trim_end_matches('%')
        .parse()
        .unwrap();
    let api: serde_json::Value = http
        .get(format!("{base}/api/v1/checks/1"))
        .bearer_auth("dash-api-token-0123456789")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ratio = api["uptime"]["24h"]["ratio"].as_f64().unwrap() * 100.0;
    assert!(
        shown < 100.0 && (shown - ratio).abs() < 2.0,
        "badge {shown}, API {ratio}"
    );
    let (code, body) = svg("/badge/2/response-time/24h.svg");
    assert_eq!(code, 200);
    assert!(text_of_svg(&body).starts_with("response 24h: "), "{body}");
    assert!(text_of_svg(&body).ends_with(" ms"), "{body}");
    assert_eq!(svg("/badge/3/status.svg").0, 404);
    assert_eq!(svg("/badge/2/uptime/1y.svg").0, 404);

    // A worker dies: one live worker is fewer than the checks' 2 confirmations, so the
    // controller cannot flip them, and the open overview marks them so without a reload.
    let quorum = |c: &Client| {
        let c = c.clone();
        async move {
            c.find(Locator::Id("check-2"))
                .await
                .ok()?
                .attr("data-quorum")
                .await
                .ok()?
        }
    };
    w.rt.block_on(async {
        login(&c, &base, "vic", VIEWER_PW).await;
        assert_eq!(quorum(&c).await.as_deref(), Some("ok"));
        c.execute("window.__no_reload = 1;", vec![]).await.unwrap();
    });
    w.cluster.workers[1].kill9();
    w.rt.block_on(async {
        eventually(40, "check 2 marked short of quorum", || async {
            (quorum(&c).await.as_deref() == Some("short")).then_some(())
        })
        .await;
        let row = text_of(&c, Locator::Id("check-2")).await;
        assert!(row.contains("no quorum") && row.contains("online"), "{row}");
        let said = text_of(&c, Locator::Id("quorum-state")).await;
        assert_eq!(said, "2 short of quorum");
        let kept = c
            .execute("return window.__no_reload === 1;", vec![])
            .await
            .unwrap();
        assert_eq!(kept, serde_json::json!(true), "the page was reloaded");
        shot(&c, "overview-no-quorum").await;
    });
    w.rt.block_on(c.close()).unwrap();
}
