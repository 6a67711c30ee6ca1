//! Benchmark driver for `scripts/bench-history` (not part of the product CLI): what history
//! costs in storage, and how fast the JSON API answers from it.
//!
//! ```text
//! bench_history --db mysql://root@127.0.0.1:3306/DB [--sample 100] [--checks 10000] [--runs 20]
//! ```
//!
//! On an installed, empty database:
//! 1. **Storage.** `--sample` checks get one UTC day of results at a 60 s interval, one result
//!    a minute from one of three workers in turn (what a healthy check produces), written
//!    through the controller's own raw-history path, then rolled up by its own rollup code.
//!    Bytes stored per check and day are the tables' data and index pages (InnoDB's figures
//!    after `ANALYZE TABLE`) divided by the checks.
//! 2. **API.** `--checks` more checks, each with latest results from three workers, an incident
//!    in the last 30 days and 24 hourly rollups per location (copies of real rollup rows from
//!    step 1), and one check with 365 days of daily rollups and two flips a day. The API router
//!    is served in this process; each request is timed `--runs` times.
//!
//! 3. **Dashboard** (`--part dashboard`, for `scripts/bench-dashboard`): the same data, a
//!    viewer logged in through the real login form, and a public status page of 100 of the
//!    checks; the overview of every check, one check's page and the status page are timed
//!    and weighed. (There is no controller here: the overview's quorum marks would add one
//!    signed request of at most a second's wait.)
//!
//! Prints a markdown table.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use gobearmon::config::Secret;
use gobearmon::model::{CheckId, Epoch, NodeId};
use gobearmon::store::history::{self, RawResult};
use gobearmon::store::results::{self, LatestResult};
use gobearmon::store::{Store, webusers};
use gobearmon::vote::Outcome;
use mysql_async::prelude::Queryable;

const DAY: i64 = 86_400;
const TOKEN: &str = "bench-history-token-0123456789";

#[derive(Parser)]
struct Args {
    /// The database (installed with install.sql, empty).
    #[arg(long)]
    db: String,
    /// Checks whose day of results is stored and rolled up.
    #[arg(long, default_value_t = 100)]
    sample: i64,
    /// Checks for the API list.
    #[arg(long, default_value_t = 10_000)]
    checks: i64,
    /// Timed requests per endpoint.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// What to time: `api` (the JSON API) or `dashboard` (the web pages).
    #[arg(long, default_value = "api")]
    part: String,
    /// Where to save the last body of each dashboard page (`overview.html`, ...).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const WORKERS: [(&str, &str); 3] = [("w1", "fra1"), ("w2", "ams1"), ("w3", "nyc1")];

async fn sql(store: &Store, q: &str) {
    let mut c = store.conn().await.expect("database");
    c.query_drop(q).await.unwrap_or_else(|e| panic!("{e}: {q}"));
}

async fn one<T: mysql_async::prelude::FromValue + Send + 'static>(store: &Store, q: &str) -> T {
    let mut c = store.conn().await.expect("database");
    c.query_first(q)
        .await
        .unwrap_or_else(|e| panic!("{e}: {q}"))
        .unwrap_or_else(|| panic!("no row: {q}"))
}

/// Data and index bytes of `table`, as InnoDB counts its pages.
async fn table_bytes(store: &Store, table: &str) -> i64 {
    sql(store, &format!("ANALYZE TABLE {table}")).await;
    one(
        store,
        &format!(
            "SELECT CAST(DATA_LENGTH + INDEX_LENGTH AS SIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        ),
    )
    .await
}

/// Inserts checks `first..first+n` with multi-row INSERTs.
async fn insert_checks(store: &Store, first: i64, n: i64) {
    let mut id = first;
    while id < first + n {
        let end = (id + 1000).min(first + n);
        let rows: Vec<String> = (id..end)
            .map(|i| {
                format!(
                    "({i}, 'bench {i}', 'tcp', '{{\"address\":\"127.0.0.1:9\",\"timeout\":3}}', 60, 1)"
                )
            })
            .collect();
        sql(
            store,
            &format!(
                "INSERT INTO checks (id, name, type, data, check_interval, delay) VALUES {}",
                rows.join(",")
            ),
        )
        .await;
        id = end;
    }
}

/// One day of results for checks `1..=sample`, written and rolled up by the real code; the
/// bytes per check and day of the raw rows and of the rollups.
async fn storage(store: &Store, epoch: Epoch, node: &NodeId, sample: i64) -> (f64, f64, f64) {
    insert_checks(store, 1, sample).await;
    let day0 = (now() / DAY - 2) * DAY;
    let mut batch = Vec::new();
    let started = Instant::now();
    for minute in 0..1440i64 {
        for check in 1..=sample {
            let (w, loc) = WORKERS[((minute + check) % 3) as usize];
            let offline = (minute * 7 + check) % 100 == 0;
            batch.push(RawResult {
                check: CheckId(check),
                at_ms: (day0 + minute * 60) * 1000 + check,
                node: NodeId(w.into()),
                location: loc.into(),
                outcome: if offline {
                    Outcome::Offline
                } else {
                    Outcome::Online
                },
                duration_ms: 20 + ((minute * 31 + check * 17) % 100) as u64,
                message: if offline {
                    "TCP connection error: connection refused".into()
                } else {
                    String::new()
                },
            });
        }
        if batch.len() >= 20_000 {
            history::write_raw(store, epoch, node, &batch)
                .await
                .expect("write raw history");
            batch.clear();
        }
    }
    history::write_raw(store, epoch, node, &batch)
        .await
        .expect("write raw history");
    let written = started.elapsed();
    let rows = 1440 * sample;
    eprintln!(
        "wrote {rows} raw rows in {:.1} s ({:.0} rows/s)",
        written.as_secs_f64(),
        rows as f64 / written.as_secs_f64()
    );
    let raw = table_bytes(store, "result_history").await as f64 / sample as f64;
    let rolled = history::roll_up(store, epoch, node, now(), 100)
        .await
        .expect("roll up");
    eprintln!(
        "rolled up {} hours and {} days into {} rows",
        rolled.hours, rolled.days, rolled.rows
    );
    let rollups = table_bytes(store, "result_rollups").await as f64 / sample as f64;
    let logical: f64 = one::<f64>(
        store,
        "SELECT CAST(SUM(LENGTH(histogram) + LENGTH(location) + 50) AS DOUBLE) FROM result_rollups",
    )
    .await
        / sample as f64;
    (raw, rollups, logical)
}

/// The API's data: `checks` more checks with latest results, an incident and a day of hourly
/// rollups each; check `long` with 365 days of daily rollups and two flips a day.
async fn api_data(store: &Store, epoch: Epoch, first: i64, checks: i64) -> i64 {
    insert_checks(store, first, checks).await;
    let t = now();
    let hour_now = t / 3600 * 3600;
    // 24 hourly rollups per location: copies of check 1's, moved to the last 24 hours.
    let day0: i64 = one(
        store,
        "SELECT MIN(period_start) FROM result_rollups WHERE period = 'hour'",
    )
    .await;
    let shift = hour_now - 24 * 3600 - day0;
    sql(
        store,
        &format!(
            "INSERT INTO result_rollups (check_id, location, period, period_start, online, offline, fail, \
             latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, histogram) \
             SELECT c.id, r.location, 'hour', r.period_start + {shift}, r.online, r.offline, r.fail, \
             r.latency_count, r.latency_sum_ms, r.latency_min_ms, r.latency_max_ms, r.histogram \
             FROM checks c JOIN result_rollups r ON r.check_id = 1 AND r.period = 'hour' \
             WHERE c.id >= {first}"
        ),
    )
    .await;
    sql(
        store,
        &format!(
            "INSERT INTO check_events (check_id, type, time, message, confirmed_by) \
             SELECT id, 'offline', FROM_UNIXTIME({t} - 10 * 86400 - id % 3600), 'TCP connection error', 'w1,w2' \
             FROM checks WHERE id >= {first}; \
             INSERT INTO check_events (check_id, type, time, message, confirmed_by) \
             SELECT id, 'online', FROM_UNIXTIME({t} - 10 * 86400 - id % 3600 + 300), '', 'w2,w3' \
             FROM checks WHERE id >= {first}"
        ),
    )
    .await;
    // What the rollup task does after each hour: every check's 24-hour latency, stored.
    let t0 = Instant::now();
    history::refresh_latency(store, epoch, &NodeId("bench".into()), hour_now)
        .await
        .expect("refresh the 24-hour latency");
    println!(
        "NOTE: the rollup task's hourly refresh of check_latency for {} checks took {:.2} s.",
        checks + first - 1,
        t0.elapsed().as_secs_f64()
    );
    let ids: Vec<i64> = (first..first + checks).collect();
    for part in ids.chunks(5000) {
        let latest: Vec<LatestResult> = part
            .iter()
            .flat_map(|&id| {
                WORKERS.iter().map(move |(w, loc)| LatestResult {
                    check: CheckId(id),
                    node: NodeId((*w).into()),
                    location: (*loc).into(),
                    status: "online",
                    message: String::new(),
                    duration_ms: 42,
                    http_status: None,
                    cert_expiry: None,
                    timing: None,
                })
            })
            .collect();
        results::write_latest(store, epoch, &latest)
            .await
            .expect("latest results");
    }
    // The long one: 365 daily rollups per location (check 1's day, repeated) and two flips a
    // day, down 15 minutes each time.
    let long = first;
    let day_row: i64 = one(
        store,
        "SELECT MIN(period_start) FROM result_rollups WHERE period = 'day'",
    )
    .await;
    let mut days = Vec::new();
    for d in 1..=365i64 {
        days.push(format!("SELECT {} AS s", (t / DAY - d) * DAY - day_row));
    }
    sql(
        store,
        &format!(
            "INSERT IGNORE INTO result_rollups (check_id, location, period, period_start, online, offline, fail, \
             latency_count, latency_sum_ms, latency_min_ms, latency_max_ms, histogram) \
             SELECT {long}, r.location, 'day', r.period_start + d.s, r.online, r.offline, r.fail, \
             r.latency_count, r.latency_sum_ms, r.latency_min_ms, r.latency_max_ms, r.histogram \
             FROM result_rollups r JOIN ({}) d WHERE r.check_id = 1 AND r.period = 'day'",
            days.join(" UNION ALL ")
        ),
    )
    .await;
    let mut events = Vec::new();
    for d in 1..=365i64 {
        let down = t - d * DAY + 3600;
        events.push(format!(
            "({long}, 'offline', FROM_UNIXTIME({down}), 'TCP connection error', 'w1,w2'), \
             ({long}, 'online', FROM_UNIXTIME({}), '', 'w2,w3')",
            down + 900
        ));
    }
    sql(
        store,
        &format!(
            "DELETE FROM check_events WHERE check_id = {long}; \
             INSERT INTO check_events (check_id, type, time, message, confirmed_by) VALUES {}",
            events.join(",")
        ),
    )
    .await;
    long
}

/// Times `runs` GETs of `path`; (median, p95, max) in milliseconds, and the last body.
async fn time_get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    runs: usize,
) -> ([f64; 3], String) {
    time_get_as(http, base, path, runs, "").await
}

/// [`time_get`] with a dashboard session cookie (`""`: none).
async fn time_get_as(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    runs: usize,
    cookie: &str,
) -> ([f64; 3], String) {
    let mut took = Vec::with_capacity(runs);
    let mut body = String::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        body = r.text().await.expect("body");
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    ([at(0.5), at(0.95), at(1.0)], body)
}

/// Walks every page of `/api/v1/checks` at 1,000 a page; milliseconds and checks seen.
async fn walk_all(http: &reqwest::Client, base: &str) -> (f64, usize) {
    let t0 = Instant::now();
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/checks?limit=1000&cursor={c}"),
            None => "/api/v1/checks?limit=1000".to_string(),
        };
        let (_, body) = time_get(http, base, &path, 1).await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        seen += v["checks"].as_array().map_or(0, Vec::len);
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (t0.elapsed().as_secs_f64() * 1000.0, seen)
}

const PASSWORD: &str = "bench-dashboard-password";

/// A viewer logged in through the login form; its session cookie.
async fn log_in(store: &Store, http: &reqwest::Client, base: &str) -> String {
    let hash = gobearmon::web::dash::auth::hash_password(PASSWORD).expect("hash");
    webusers::upsert_user(store, "bench", &hash, webusers::Role::Viewer)
        .await
        .expect("add the user");
    let r = http
        .post(format!("{base}/login"))
        .form(&[("name", "bench"), ("password", PASSWORD)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303, "login refused");
    let set = r
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

/// The dashboard's pages over the API's data: rows as markdown.
async fn dashboard(store: &Store, base: &str, first: i64, long: i64, args: &Args) {
    let runs = args.runs;
    sql(
        store,
        &format!(
            "INSERT INTO status_pages (id, slug, title, description) VALUES (1, 'bench', 'Bench', 'A hundred services'); \
             INSERT INTO status_page_checks (page_id, check_id, group_name, display_name, sort_order) \
             SELECT 1, id, CONCAT('Group ', id % 5), '', id FROM checks WHERE id >= {first} ORDER BY id LIMIT 100"
        ),
    )
    .await;
    let checks: i64 = one(store, "SELECT COUNT(*) FROM checks").await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let cookie = log_in(store, &http, base).await;
    let check_page = format!("/checks/{long}");
    let pages = [
        (
            format!("**the overview**, first page of 100 rows ({checks} checks)"),
            "/".to_string(),
            "under 150 ms and 2 MB",
            "overview",
        ),
        (
            "one check's page (365 days of history, 24 h chart)".to_string(),
            check_page,
            "",
            "check",
        ),
        (
            "**a status page** (100 checks)".to_string(),
            "/status/bench".to_string(),
            "under 50 ms",
            "status",
        ),
        (
            "the overview's last page (online checks, by id)".to_string(),
            format!("/?page={}", (checks as usize).div_ceil(100)),
            "",
            "last",
        ),
    ];
    println!("| page | median / p95 / max | HTML | target |");
    println!("|---|---:|---:|---:|");
    for (what, path, target, name) in pages {
        // One warm-up (connection pool, badge and statement caches), not counted.
        let (_, body) = time_get_as(&http, base, &path, 1, &cookie).await;
        assert!(
            body.contains("</tr>") || body.contains("class=\"service\""),
            "{path}: not a page with rows: {}",
            &body[..body.len().min(300)]
        );
        let (t, body) = time_get_as(&http, base, &path, runs, &cookie).await;
        if let Some(dir) = &args.save {
            std::fs::create_dir_all(dir).expect("the --save directory");
            std::fs::write(dir.join(format!("{name}.html")), &body).expect("save a page");
        }
        println!(
            "| {what} | {:.1} / {:.1} / {:.1} ms | {:.0} KB | {target} |",
            t[0],
            t[1],
            t[2],
            body.len() as f64 / 1000.0
        );
    }
    // What an open overview asks every 2 s: the state of its 100 rows.
    let ids: Vec<String> = (first..first + 100).map(|i| i.to_string()).collect();
    let live = format!("/dash/live.json?ids={}", ids.join(","));
    let (_, body) = time_get_as(&http, base, &live, 1, &cookie).await;
    let rows = serde_json::from_str::<serde_json::Value>(&body).expect("live json")["checks"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(rows, 100, "the live feed answered {rows} rows");
    let (t, body) = time_get_as(&http, base, &live, runs, &cookie).await;
    println!(
        "| the overview's live poll (100 rows, every 2 s) | {:.1} / {:.1} / {:.1} ms | {:.0} KB of JSON | |",
        t[0],
        t[1],
        t[2],
        body.len() as f64 / 1000.0
    );
}

fn main() {
    gobearmon::tlsutil::install_default_provider();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::new(&[Secret::new(args.db.clone())]).expect("store");
        let epoch = Epoch(1);
        let node = NodeId("bench".into());
        gobearmon::store::fence::raise(&store, epoch, &node)
            .await
            .expect("raise the fence");
        let (raw, rollups, logical) = storage(&store, epoch, &node, args.sample).await;
        let first = args.sample + 1;
        let long = api_data(&store, epoch, first, args.checks).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let web = gobearmon::web::router(gobearmon::web::Web::new(
            store.clone(),
            &[Secret::new(TOKEN.to_string())],
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(gobearmon::api::serve(listener, web, stop.clone()));
        if args.part == "dashboard" {
            dashboard(&store, &base, first, long, &args).await;
            stop.cancel();
            store.close().await;
            return;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // One warm-up of each (connection pools, caches), not counted.
        let year = format!(
            "/api/v1/checks/{long}/uptime?from={}&to={}",
            gobearmon::history::rfc3339(now() - 365 * DAY),
            gobearmon::history::rfc3339(now())
        );
        for p in ["/api/v1/checks?limit=1000", year.as_str()] {
            time_get(&http, &base, p, 1).await;
        }
        let (page100, _) = time_get(&http, &base, "/api/v1/checks", args.runs).await;
        let (page1000, body) = time_get(&http, &base, "/api/v1/checks?limit=1000", args.runs).await;
        let listed = serde_json::from_str::<serde_json::Value>(&body).unwrap()["checks"]
            .as_array()
            .map_or(0, Vec::len);
        let (all_ms, all_seen) = walk_all(&http, &base).await;
        let (uptime, body) = time_get(&http, &base, &year, args.runs).await;
        let up: serde_json::Value = serde_json::from_str(&body).unwrap();
        let one_check = format!("/api/v1/checks/{long}");
        let (single, _) = time_get(&http, &base, &one_check, args.runs).await;
        stop.cancel();
        let ms = |v: [f64; 3]| format!("{:.1} / {:.1} / {:.1} ms", v[0], v[1], v[2]);
        println!("| measure | result | target |");
        println!("|---|---:|---:|");
        println!(
            "| raw history per check and day ({} checks, 1,440 results a day each) | {:.0} KB | (kept for raw_retention) |",
            args.sample,
            raw / 1000.0
        );
        println!(
            "| **rollups per check and day** (24 hourly + 1 daily row per location, 3 locations) | **{:.1} KB** ({:.1} KB of row data) | under 10 KB |",
            rollups / 1000.0,
            logical / 1000.0
        );
        println!(
            "| `/api/v1/checks` (100 of {} checks), median / p95 / max | {} | |",
            args.checks + args.sample,
            ms(page100)
        );
        println!(
            "| **`/api/v1/checks?limit=1000`** ({listed} checks), median / p95 / max | **{}** | |",
            ms(page1000)
        );
        println!(
            "| **every page of `/api/v1/checks` at 1,000** ({all_seen} checks) | **{all_ms:.0} ms** | under 200 ms for 10,000 |"
        );
        println!(
            "| **uptime of one check over 365 days** (730 flips, 1,095 daily rollups), median / p95 / max | **{}** | under 50 ms |",
            ms(uptime)
        );
        println!(
            "| `/api/v1/checks/{{id}}` of that check, median / p95 / max | {} | |",
            ms(single)
        );
        println!(
            "NOTE: the 365-day answer: {} s down, covered from {} to {}, complete {}.",
            up["down_seconds"], up["covered_from"], up["covered_to"], up["complete"]
        );
        store.close().await;
    });
}
