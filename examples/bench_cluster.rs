//! Benchmark driver for `scripts/bench-failover`, `scripts/bench-detection` and
//! `scripts/bench-edges` (not part of the product). It starts a local cluster of the real `gobearmon` binary (viewserver members
//! and controller-capable workers, each its own process with its own config file and log),
//! owns the servers the checks and the notifications talk to, and measures from the outside.
//!
//! ```text
//! bench_cluster failover  --bin BIN --db URL --dir DIR --timings default|fast --kills N
//! bench_cluster detection --bin BIN --db URL --dir DIR --outages N [--interval S]
//! bench_cluster edges     --bin BIN --db URL --dir DIR --outages N [--per-listener N]
//! bench_cluster ports N
//! ```
//!
//! `ports` prints N free ports from testkit's allocator, one a line, for the scripts that
//! start nodes themselves (`scripts/bench-controller-scale`).
//!
//! Progress goes to stderr; the result goes to stdout as markdown table rows (the script
//! prints the header), and every sample to `--csv` when given.
//!
//! The cluster is testkit's (`testkit::cluster`, the one the integration tests start), with
//! its files kept under `DIR`: child processes get `PR_SET_PDEATHSIG = SIGKILL`, so they die
//! with the driver whatever ends it, and their pids are appended to `DIR/pids` for the
//! script's trap.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, LEASE_START, Proc, Timings, wait_until as wait_for};
use testkit::config::{Ms, keys};
use testkit::ports::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The gobearmon binary (release build).
    #[arg(long)]
    bin: PathBuf,
    /// A database with install.sql applied, e.g. mysql://root@127.0.0.1:3306/gbm_bench_x
    #[arg(long)]
    db: String,
    /// Where configs, data dirs, logs and the pid list go.
    #[arg(long)]
    dir: PathBuf,
    /// Every sample, one line each.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Viewserver members.
    #[arg(long, default_value_t = 3)]
    viewservers: usize,
    /// Workers (all controller-capable).
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// kill -9 of the controller, N times: time to the first check handed out by the new one.
    Failover {
        #[command(flatten)]
        common: Common,
        /// `default` (the shipped defaults: no timing key is written) or `fast`.
        #[arg(long, default_value = "default")]
        timings: String,
        #[arg(long, default_value_t = 20)]
        kills: usize,
    },
    /// Target down to first notification, N outages.
    Detection {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        outages: usize,
        /// check_interval of the check, seconds.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// delay of the check.
        #[arg(long, default_value_t = 1)]
        delay: u32,
        /// [controller] confirmations.
        #[arg(long, default_value_t = 2)]
        confirmations: u32,
    },
    /// Detection and heartbeats with every listener flooded by hostile clients, against the
    /// same cluster unflooded, in one run.
    Edges {
        #[command(flatten)]
        common: Common,
        /// Outages per phase.
        #[arg(long, default_value_t = 5)]
        outages: usize,
        /// check_interval of the check, seconds.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Hostile connections held against each listener.
        #[arg(long, default_value_t = 1030)]
        per_listener: usize,
    },
    /// N free ports (testkit's allocator, below the ephemeral range), one a line.
    Ports { n: usize },
}

// ---------------------------------------------------------------------------------------------
// Time

/// Wall-clock microseconds since the Unix epoch: the clock of the nodes' log lines too.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The timestamp that starts a log line of the default tracing format,
/// `2025-11-21T16:22:33.123456Z`, in Unix microseconds.
fn log_time_us(line: &str) -> Option<i64> {
    let ts = line.split_whitespace().next()?;
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let mut frac: String = frac.chars().take(6).collect();
    while frac.len() < 6 {
        frac.push('0');
    }
    let us: i64 = frac.parse().ok()?;
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000 + us)
}

/// A small xorshift generator for random phases (no need for a crate).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(now_us() as u64 | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..max`.
    fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % ms)
    }
}

fn secs(us: i64) -> f64 {
    us as f64 / 1e6
}

/// Median and max of samples in microseconds, as seconds.
fn median_max(v: &[i64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2] as f64
    } else {
        (s[n / 2 - 1] + s[n / 2]) as f64 / 2.0
    };
    (med / 1e6, s[n - 1] as f64 / 1e6)
}

// ---------------------------------------------------------------------------------------------
// The cluster (testkit's, as the tests start it), and what the driver reads from it

/// Log lines of `node` containing `needle`, with their time.
fn log_lines(node: &Proc, needle: &str) -> Vec<(i64, String)> {
    let Ok(f) = std::fs::File::open(&node.log) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(needle))
        .filter_map(|l| Some((log_time_us(&l)?, l)))
        .collect()
}

/// The value of `key=` in a log line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
}

/// The timing sets: `default` writes no timing key (the shipped defaults), `fast` the fastest
/// we consider safe.
fn preset(name: &str) -> Timings {
    match name {
        "default" => Timings::shipped(),
        "fast" => Timings {
            controller_timeout: Some(Ms(1000)),
            heartbeat: Some(Ms(200)),
            lease: Some(Ms(700)),
            raft_heartbeat: Some(Ms(50)),
            raft_election_timeout: Some(Ms(250)),
            ..Timings::shipped()
        },
        other => panic!("unknown timings {other:?} (default, fast)"),
    }
}

/// The timings in force, a key left out shown with its shipped default.
fn describe(t: &Timings) -> String {
    let v = |o: Option<Ms>, d: u64| o.map_or(d, |m| m.0);
    format!(
        "controller_timeout {} ms, heartbeat {} ms, lease {} ms, raft heartbeat {} ms / election {} ms",
        v(t.controller_timeout, 4000),
        v(t.heartbeat, 1000),
        v(t.lease, 3000),
        v(t.raft_heartbeat, 250),
        v(t.raft_election_timeout, 1000),
    )
}

/// The bench cluster: `c.viewservers` members and `c.workers` controller-capable workers of
/// the release binary, files and logs kept under `c.dir`.
fn start_cluster(c: &Common, t: Timings, controller_keys: toml::Table) -> Cluster {
    Cluster::builder(&c.bin, &c.db)
        .viewservers(c.viewservers)
        .workers(c.workers)
        .timings(t)
        .controller_keys(controller_keys)
        .kept_dir(&c.dir)
        .start()
}

fn worker_metric(cl: &Cluster, i: usize, name: &str) -> Option<f64> {
    cl.metric(&cl.worker_addrs[i], name)
}

/// The workers acting as controller now, by their own `/metrics`.
fn acting(cl: &mut Cluster) -> Vec<usize> {
    let alive: Vec<usize> = (0..cl.workers.len())
        .filter(|&i| cl.workers[i].is_running())
        .collect();
    alive
        .into_iter()
        .filter(|&i| worker_metric(cl, i, "gobearmon_is_controller") == Some(1.0))
        .collect()
}

/// Every worker has heard of the view of `epoch` (so it asks that controller for work).
/// Not `/ready`: a worker that had no run for 10 s reports 503 there (see the report).
fn all_follow(cl: &Cluster, epoch: u64) -> bool {
    (0..cl.workers.len())
        .all(|i| worker_metric(cl, i, "gobearmon_view_epoch") == Some(epoch as f64))
}

/// One controller acts, the view names it, and every worker follows that view.
fn wait_steady(cl: &mut Cluster, limit: Duration) -> (usize, u64) {
    let deadline = Instant::now() + limit;
    loop {
        let acting = acting(cl);
        if acting.len() == 1
            && let Some((epoch, Some(node))) = cl.current()
            && cl.worker_ids[acting[0]] == node
            && all_follow(cl, epoch)
        {
            return (acting[0], epoch);
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = cl
                .workers
                .iter()
                .chain(cl.viewservers.iter())
                .map(|n| n.log.display().to_string())
                .collect();
            panic!(
                "the cluster did not settle within {limit:?} (acting: {acting:?}); logs: {}",
                logs.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Servers owned by the driver

/// Arrival times (Unix µs) of every connection a target accepted.
type Hits = Arc<Mutex<Vec<i64>>>;

/// An HTTP target that answers `200 OK` and records when each request arrived. `stop` closes
/// the listening socket (new connections are refused), `start` opens it again on the same port.
struct Target {
    port: u16,
    hits: Hits,
    task: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Handle,
}

impl Target {
    fn new(rt: &tokio::runtime::Runtime) -> Target {
        let mut t = Target {
            port: free_port(),
            hits: Arc::new(Mutex::new(Vec::new())),
            task: None,
            rt: rt.handle().clone(),
        };
        t.start();
        t
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn start(&mut self) {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("bind the target port");
        let hits = self.hits.clone();
        self.task = Some(self.rt.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                hits.lock().unwrap().push(now_us());
                tokio::spawn(async move {
                    // Read the request head, answer, close.
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    while got < buf.len() {
                        match stream.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        }));
    }

    /// Closes the listening socket; returns when it is closed.
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = self.rt.block_on(task);
        }
    }

    fn hits(&self) -> Vec<i64> {
        self.hits.lock().unwrap().clone()
    }
}

/// One webhook request: arrival (Unix µs), and the body's `new_status` and `time`.
#[derive(Clone, Debug)]
struct Hook {
    at: i64,
    new_status: String,
    event_id: i64,
}

/// A webhook receiver (`webhook` contact type, JSON body).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    fn start(rt: &tokio::runtime::Runtime) -> Receiver {
        let port = free_port();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind the receiver");
        let got: Arc<Mutex<Vec<Hook>>> = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let at = now_us();
            let g = g.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                g.lock().unwrap().push(Hook {
                    at,
                    new_status: v["new_status"].as_str().unwrap_or("").to_string(),
                    event_id: v["event_id"].as_i64().unwrap_or(0),
                });
                axum::http::StatusCode::OK
            }
        });
        rt.spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the receiver")
        });
        Receiver { port, got }
    }

    fn got(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}

fn sql(rt: &tokio::runtime::Runtime, url: &str, text: &str) {
    rt.block_on(async {
        let mut c = mysql_async::Conn::from_url(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        c.query_drop(text)
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let _ = c.disconnect().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Failover

struct Kill {
    /// kill -9 -> the new view applied on the first member (from the viewservers' logs).
    view_us: i64,
    /// kill -9 -> the new controller logs that it acts under a lease (`lease_event="start"`,
    /// its at_ms field).
    lease_us: i64,
    /// kill -9 -> the new controller logs "controller term started" (fence raised, checks loaded).
    term_us: i64,
    /// kill -9 -> the first request at the target after the new term started.
    first_us: i64,
    /// Requests at the target between the kill and the new term (old assignments finishing).
    leftover: usize,
    new_epoch: u64,
}

fn failover(c: &Common, timings: &str, kills: usize) {
    let t = preset(timings);
    let rt = small_runtime();
    let target = Target::new(&rt);
    sql(
        &rt,
        &c.db,
        &format!(
            r#"INSERT INTO checks (id, name, type, data, check_interval, delay) VALUES (1, 'bench target', 'http', '{{"url":"{}","expect_status":200,"timeout":3}}', 1, 1)"#,
            target.url()
        ),
    );
    eprintln!(
        "failover: starting {} viewservers and {} workers ({})",
        c.viewservers,
        c.workers,
        describe(&t)
    );
    let mut cl = start_cluster(c, t.clone(), toml::Table::new());
    let mut rng = Rng::new();
    let mut samples: Vec<Kill> = Vec::new();
    let mut spurious = 0u64;
    let mut last_epoch: Option<u64> = None;
    for k in 0..kills {
        let (ctl, epoch) = wait_steady(&mut cl, Duration::from_secs(60));
        if let Some(e) = last_epoch
            && epoch > e
        {
            spurious += epoch - e;
        }
        // The check runs (interval 1 s): a request within the last 1.5 s.
        wait_for(Duration::from_secs(10), "the check to run", || {
            let h = target.hits();
            (h.last().is_some_and(|&t| now_us() - t < 1_500_000)).then_some(())
        });
        // A controller in its stride: right after a failover the nodes still heartbeat at the
        // fast pace they use while their controller does not answer (until their first poll
        // of the new one completes, up to 2 s), which would make every kill look like one just
        // after a heartbeat. Then a random phase against the heartbeats.
        std::thread::sleep(Duration::from_secs(3) + rng.below(Duration::from_millis(1000)));
        let t_kill = now_us();
        cl.workers[ctl].kill9();
        let killed = ctl;
        // The new view, from the viewservers' logs.
        let (new_epoch, new_node, t_view) = wait_for(Duration::from_secs(30), "a new view", || {
            cl.viewservers
                .iter()
                .flat_map(|v| log_lines(v, "view applied"))
                .filter_map(|(at, line)| {
                    let rest = &line[line.find("view=epoch ")? + "view=epoch ".len()..];
                    let mut it = rest.split(' ');
                    let e: u64 = it.next()?.parse().ok()?;
                    (it.next()? == "controller").then_some(())?;
                    let node = it.next()?.to_string();
                    (e > epoch).then_some((e, node, at))
                })
                .min_by_key(|(e, _, at)| (*e, *at))
        });
        let new = cl
            .worker_ids
            .iter()
            .position(|w| *w == new_node)
            .expect("a known worker");
        assert_ne!(new, killed, "the killed worker was named");
        let lease = wait_for(
            Duration::from_secs(30),
            "the new controller's lease",
            || {
                log_lines(&cl.workers[new], LEASE_START)
                    .into_iter()
                    .filter(|(_, l)| field(l, "epoch") == Some(&new_epoch.to_string()))
                    .find_map(|(_, l)| field(&l, "at_ms")?.parse::<i64>().ok())
            },
        ) * 1000;
        let term = wait_for(Duration::from_secs(30), "the new controller's term", || {
            log_lines(&cl.workers[new], "controller term started")
                .into_iter()
                .find(|(_, l)| field(l, "epoch") == Some(&new_epoch.to_string()))
                .map(|(at, _)| at)
        });
        let first = wait_for(
            Duration::from_secs(30),
            "the first check of the new term",
            || target.hits().into_iter().find(|&h| h >= term),
        );
        let leftover = target
            .hits()
            .into_iter()
            .filter(|&h| h > t_kill && h < term)
            .count();
        let s = Kill {
            view_us: t_view - t_kill,
            lease_us: lease - t_kill,
            term_us: term - t_kill,
            first_us: first - t_kill,
            leftover,
            new_epoch,
        };
        eprintln!(
            "kill {:2}/{kills}: w{} killed, epoch {} -> {new_epoch} ({new_node}): view {:.3} s, lease {:.3} s, term {:.3} s, first check {:.3} s{}",
            k + 1,
            killed + 1,
            epoch,
            secs(s.view_us),
            secs(s.lease_us),
            secs(s.term_us),
            secs(s.first_us),
            if leftover > 0 {
                format!(" ({leftover} old run(s) after the kill)")
            } else {
                String::new()
            }
        );
        samples.push(s);
        last_epoch = Some(new_epoch);
        cl.workers[killed].start();
    }
    // Final check for views nobody asked for.
    let (_, epoch) = wait_steady(&mut cl, Duration::from_secs(60));
    if let Some(e) = last_epoch
        && epoch > e
    {
        spurious += epoch - e;
    }
    if let Some(path) = &c.csv {
        let mut f = std::fs::File::create(path).expect("csv");
        writeln!(
            f,
            "timings,kill,new_epoch,view_s,lease_s,term_s,first_check_s,old_runs_after_kill"
        )
        .unwrap();
        for (i, s) in samples.iter().enumerate() {
            writeln!(
                f,
                "{timings},{},{},{:.6},{:.6},{:.6},{:.6},{}",
                i + 1,
                s.new_epoch,
                secs(s.view_us),
                secs(s.lease_us),
                secs(s.term_us),
                secs(s.first_us),
                s.leftover
            )
            .unwrap();
        }
    }
    let col = |f: fn(&Kill) -> i64| median_max(&samples.iter().map(f).collect::<Vec<_>>());
    let (fm, fx) = col(|s| s.first_us);
    let (vm, vx) = col(|s| s.view_us);
    let (lm, lx) = col(|s| s.lease_us);
    let (tm, tx) = col(|s| s.term_us);
    let (gm, gx) = col(|s| s.first_us - s.term_us);
    println!(
        "| {timings} | {} | {} | **{fm:.2} / {fx:.2}** | {vm:.2} / {vx:.2} | {lm:.2} / {lx:.2} | {tm:.2} / {tx:.2} | {gm:.3} / {gx:.3} | {spurious} |",
        describe(&t),
        samples.len(),
    );
}

// ---------------------------------------------------------------------------------------------
// Detection

struct Outage {
    /// Target stopped -> the offline webhook arrived.
    latency_us: i64,
    /// What the rules require: the wait for the next regular run, plus one interval.
    required_us: i64,
    /// Target started again -> the online webhook arrived.
    up_latency_us: i64,
    up_required_us: i64,
    /// The controller logged `flip recorded` (the fenced transaction committed) -> the webhook
    /// arrived, for the offline and the online flip.
    off_delivery_us: i64,
    on_delivery_us: i64,
}

/// When some worker logged `flip recorded` for `event` (the controller that recorded it).
fn flip_recorded_at(cl: &Cluster, event: i64) -> i64 {
    wait_for(Duration::from_secs(10), "the flip's log line", || {
        cl.workers.iter().find_map(|w| {
            log_lines(w, "flip recorded")
                .into_iter()
                .find(|(_, l)| field(l, "event") == Some(event.to_string().as_str()))
                .map(|(at, _)| at)
        })
    })
}

/// One outage at a random phase of the check's schedule, and its recovery, measured from the
/// outside: (the sample, the offline and online webhooks, when the target stopped and when it
/// started again).
fn measure_outage(
    cl: &Cluster,
    target: &mut Target,
    hook: &Receiver,
    rng: &mut Rng,
    interval: u64,
) -> (Outage, Hook, Hook, i64, i64) {
    let iv = Duration::from_secs(interval).as_micros() as i64;
    // A random phase against the check's schedule.
    std::thread::sleep(rng.below(Duration::from_secs(interval)));
    let seen = hook.got().len();
    target.stop();
    let t_down = now_us();
    let last_ok = target
        .hits()
        .into_iter()
        .filter(|&h| h <= t_down)
        .max()
        .expect("a run before");
    let off = wait_for(
        Duration::from_secs(interval * 4 + 30),
        "the offline notification",
        || {
            hook.got()
                .into_iter()
                .skip(seen)
                .find(|h| h.new_status == "offline")
        },
    );
    // The first failing run is the regular run due one interval after the last good one
    // (it cannot be seen: the port refuses connections). If that time had already passed
    // when the target stopped, the next one is.
    let mut first_fail = last_ok + iv;
    while first_fail < t_down {
        first_fail += iv;
    }
    let required = (first_fail - t_down) + iv;
    let latency = off.at - t_down;
    // Recovery, measured the same way (at a random phase too): the first good run is
    // visible at the target.
    std::thread::sleep(rng.below(Duration::from_secs(interval)));
    let seen = hook.got().len();
    let t_up = now_us();
    target.start();
    let on = wait_for(
        Duration::from_secs(interval * 4 + 30),
        "the online notification",
        || {
            hook.got()
                .into_iter()
                .skip(seen)
                .find(|h| h.new_status == "online")
        },
    );
    let first_ok = target
        .hits()
        .into_iter()
        .find(|&h| h >= t_up)
        .expect("a good run");
    let s = Outage {
        latency_us: latency,
        required_us: required,
        up_latency_us: on.at - t_up,
        up_required_us: (first_ok - t_up) + iv,
        off_delivery_us: off.at - flip_recorded_at(cl, off.event_id),
        on_delivery_us: on.at - flip_recorded_at(cl, on.event_id),
    };
    (s, off, on, t_down, t_up)
}

/// A one-thread runtime for the driver's servers.
fn small_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Check 1, an http check of `target` every `interval` s, alerting `hook` both ways.
fn seed_target(
    rt: &tokio::runtime::Runtime,
    db: &str,
    target: &Target,
    hook: &Receiver,
    interval: u64,
    delay: u32,
) {
    sql(
        rt,
        db,
        &format!(
            r#"INSERT INTO checks (id, name, type, data, check_interval, delay) VALUES (1, 'bench target', 'http', '{{"url":"{}","expect_status":200,"timeout":3}}', {interval}, {delay});
               INSERT INTO contacts (id, type, data) VALUES (1, 'webhook', 'http://127.0.0.1:{}/hook');
               INSERT INTO alerts (check_id, contact_id, type) VALUES (1, 1, 'both');"#,
            target.url(),
            hook.port
        ),
    );
}

fn detection(c: &Common, outages: usize, interval: u64, delay: u32, confirmations: u32) {
    let rt = small_runtime();
    let mut target = Target::new(&rt);
    let hook = Receiver::start(&rt);
    seed_target(&rt, &c.db, &target, &hook, interval, delay);
    eprintln!(
        "detection: {} viewservers, {} workers, interval {interval} s, delay {delay}, confirmations {confirmations}",
        c.viewservers, c.workers
    );
    let mut cl = start_cluster(
        c,
        Timings::shipped(),
        keys([("confirmations", confirmations.into())]),
    );
    wait_steady(&mut cl, Duration::from_secs(60));
    // Steady runs first.
    let start_hits = target.hits().len();
    wait_for(
        Duration::from_secs(4 * interval + 30),
        "three runs of the check",
        || (target.hits().len() >= start_hits + 3).then_some(()),
    );
    let mut rng = Rng::new();
    let mut samples = Vec::new();
    let mut down_periods = Vec::new();
    let measured_from = now_us();
    for k in 0..outages {
        let (s, off, on, t_down, t_up) =
            measure_outage(&cl, &mut target, &hook, &mut rng, interval);
        eprintln!(
            "outage {:2}/{outages}: down -> offline notification {:.3} s (rules: {:.3} s, overhead {:.3} s, of which flip recorded -> webhook {:.3} s); up -> online notification {:.3} s (rules: {:.3} s, overhead {:.3} s, of which {:.3} s); events {} {}",
            k + 1,
            secs(s.latency_us),
            secs(s.required_us),
            secs(s.latency_us - s.required_us),
            secs(s.off_delivery_us),
            secs(s.up_latency_us),
            secs(s.up_required_us),
            secs(s.up_latency_us - s.up_required_us),
            secs(s.on_delivery_us),
            off.event_id,
            on.event_id,
        );
        samples.push(s);
        down_periods.push((t_down, t_up));
    }
    // The longest time between two runs while the target was up: one interval when every run
    // is handed out on time.
    let hits = target.hits();
    let longest_up_gap = hits
        .windows(2)
        .filter(|w| w[0] >= measured_from)
        .filter(|w| !down_periods.iter().any(|&(d, u)| w[1] > d && w[0] < u))
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    eprintln!(
        "longest time between two runs while the target was up: {:.3} s",
        secs(longest_up_gap)
    );
    // Every flip notified once: two per outage.
    std::thread::sleep(Duration::from_secs(2));
    let total = hook.got().len();
    if let Some(path) = &c.csv {
        let mut f = std::fs::File::create(path).expect("csv");
        writeln!(
            f,
            "outage,down_to_offline_s,rules_s,overhead_s,flip_to_webhook_s,up_to_online_s,up_rules_s,up_overhead_s,up_flip_to_webhook_s"
        )
        .unwrap();
        for (i, s) in samples.iter().enumerate() {
            writeln!(
                f,
                "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                i + 1,
                secs(s.latency_us),
                secs(s.required_us),
                secs(s.latency_us - s.required_us),
                secs(s.off_delivery_us),
                secs(s.up_latency_us),
                secs(s.up_required_us),
                secs(s.up_latency_us - s.up_required_us),
                secs(s.on_delivery_us),
            )
            .unwrap();
        }
    }
    let col = |f: &dyn Fn(&Outage) -> i64| median_max(&samples.iter().map(f).collect::<Vec<_>>());
    let (lm, lx) = col(&|s| s.latency_us);
    let (rm, rx) = col(&|s| s.required_us);
    let (om, ox) = col(&|s| s.latency_us - s.required_us);
    let (dm, dx) = col(&|s| s.off_delivery_us);
    println!(
        "| target down -> offline notification | {} | {lm:.2} / {lx:.2} | {rm:.2} / {rx:.2} | **{om:.3} / {ox:.3}** | {dm:.3} / {dx:.3} | {} | {:.2} |",
        samples.len(),
        total,
        secs(longest_up_gap)
    );
    let (lm, lx) = col(&|s| s.up_latency_us);
    let (rm, rx) = col(&|s| s.up_required_us);
    let (om, ox) = col(&|s| s.up_latency_us - s.up_required_us);
    let (dm, dx) = col(&|s| s.on_delivery_us);
    println!(
        "| target up -> online notification | {} | {lm:.2} / {lx:.2} | {rm:.2} / {rx:.2} | **{om:.3} / {ox:.3}** | {dm:.3} / {dx:.3} | | |",
        samples.len(),
    );
    drop(cl);
}

/// What one phase of `edges` measured.
struct EdgePhase {
    samples: Vec<Outage>,
    /// Mean heartbeat round trip over the phase, both workers (µs).
    heartbeat_rtt_us: f64,
    heartbeats_answered: f64,
    heartbeats_failed: f64,
    /// Resident memory of every node at the end of the phase, summed (KiB).
    rss_kib: u64,
}

/// Sums a counter over the live workers.
fn workers_sum(cl: &Cluster, name: &str) -> f64 {
    (0..cl.workers.len())
        .filter_map(|i| worker_metric(cl, i, name))
        .sum()
}

/// Resident memory of every node process (KiB), from /proc.
fn nodes_rss_kib(cl: &Cluster) -> u64 {
    cl.workers
        .iter()
        .chain(cl.viewservers.iter())
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid()?)).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

fn edge_phase(
    cl: &Cluster,
    target: &mut Target,
    hook: &Receiver,
    rng: &mut Rng,
    interval: u64,
    outages: usize,
    name: &str,
) -> EdgePhase {
    let (rtt0, ans0, fail0) = (
        workers_sum(cl, "gobearmon_heartbeat_rtt_microseconds_total"),
        workers_sum(cl, "gobearmon_heartbeats_answered_total"),
        workers_sum(cl, "gobearmon_heartbeats_failed_total"),
    );
    let mut samples = Vec::new();
    for k in 0..outages {
        let (s, ..) = measure_outage(cl, target, hook, rng, interval);
        eprintln!(
            "{name} {:2}/{outages}: down -> offline {:.3} s (overhead {:.3} s), up -> online {:.3} s (overhead {:.3} s)",
            k + 1,
            secs(s.latency_us),
            secs(s.latency_us - s.required_us),
            secs(s.up_latency_us),
            secs(s.up_latency_us - s.up_required_us),
        );
        samples.push(s);
    }
    let answered = workers_sum(cl, "gobearmon_heartbeats_answered_total") - ans0;
    let rtt = workers_sum(cl, "gobearmon_heartbeat_rtt_microseconds_total") - rtt0;
    EdgePhase {
        samples,
        heartbeat_rtt_us: rtt / answered.max(1.0),
        heartbeats_answered: answered,
        heartbeats_failed: workers_sum(cl, "gobearmon_heartbeats_failed_total") - fail0,
        rss_kib: nodes_rss_kib(cl),
    }
}

fn edges(c: &Common, outages: usize, interval: u64, per_listener: usize) {
    let rt = small_runtime();
    // The flood runs on a runtime of its own, so that it never delays the target or the
    // receiver the measurement depends on.
    let flood_rt = small_runtime();
    let mut target = Target::new(&rt);
    let hook = Receiver::start(&rt);
    seed_target(&rt, &c.db, &target, &hook, interval, 1);
    let confirmations = c.workers.min(2) as u32;
    // Both phases flip the same check again and again: the flapping rule must not hold
    // their notifications.
    let mut cl = start_cluster(
        c,
        Timings::shipped(),
        keys([
            ("confirmations", confirmations.into()),
            ("flap_flips", 10_000.into()),
        ]),
    );
    wait_steady(&mut cl, Duration::from_secs(60));
    let mut rng = Rng::new();
    let quiet = edge_phase(
        &cl,
        &mut target,
        &hook,
        &mut rng,
        interval,
        outages,
        "unflooded",
    );
    let listeners: Vec<std::net::SocketAddr> = cl
        .vs_addrs
        .iter()
        .chain(&cl.worker_addrs)
        .chain(&cl.controller_addrs)
        .map(|a| a.parse().expect("a listener address"))
        .collect();
    let flood = {
        let _in = flood_rt.enter();
        use testkit::flood::{Flood, Kind, Plan};
        let kinds = vec![
            Kind::Idle,
            Kind::Idle,
            Kind::Idle,
            Kind::SlowHead,
            Kind::SlowBody,
            Kind::IdleHttp2,
            Kind::PartialTls,
        ];
        let mut plan = Plan::new(per_listener, 10, kinds);
        plan.reopen_after = Duration::from_secs(1);
        Flood::start(&listeners, &plan)
    };
    wait_for(
        Duration::from_secs(120),
        "the flood to open its connections",
        || {
            (flood
                .stats
                .opened
                .load(std::sync::atomic::Ordering::Relaxed)
                >= (listeners.len() * per_listener) as u64)
                .then_some(())
        },
    );
    eprintln!(
        "flood: {} connections held against each of {} listeners",
        per_listener,
        listeners.len()
    );
    let flooded = edge_phase(
        &cl,
        &mut target,
        &hook,
        &mut rng,
        interval,
        outages,
        "flooded",
    );
    let held = flood.stats.open.load(std::sync::atomic::Ordering::Relaxed);
    flood_rt.block_on(flood.stop());
    for (name, p) in [("unflooded", &quiet), ("flooded", &flooded)] {
        let col =
            |f: &dyn Fn(&Outage) -> i64| median_max(&p.samples.iter().map(f).collect::<Vec<_>>());
        let (lm, lx) = col(&|s| s.latency_us);
        let (om, ox) = col(&|s| s.latency_us - s.required_us);
        let (um, ux) = col(&|s| s.up_latency_us - s.up_required_us);
        println!(
            "| {name} | {} | {lm:.2} / {lx:.2} | **{om:.3} / {ox:.3}** | {um:.3} / {ux:.3} | {:.2} | {:.0} / {:.0} | {:.0} |",
            p.samples.len(),
            p.heartbeat_rtt_us / 1000.0,
            p.heartbeats_answered,
            p.heartbeats_failed,
            p.rss_kib as f64 / 1024.0,
        );
    }
    let ratio = |f: &dyn Fn(&EdgePhase) -> f64| f(&flooded) / f(&quiet);
    println!();
    println!(
        "Flooded / unflooded: heartbeat round trip x{:.2}, median detection overhead x{:.2}; {held} hostile connections open at the end.",
        ratio(&|p| p.heartbeat_rtt_us),
        ratio(&|p| median_max(
            &p.samples
                .iter()
                .map(|s| s.latency_us - s.required_us)
                .collect::<Vec<_>>()
        )
        .0),
    );
    drop(cl);
}

fn main() {
    gobearmon::tlsutil::install_default_provider();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Failover {
            common,
            timings,
            kills,
        } => failover(&common, &timings, kills),
        Cmd::Detection {
            common,
            outages,
            interval,
            delay,
            confirmations,
        } => detection(&common, outages, interval, delay, confirmations),
        Cmd::Edges {
            common,
            outages,
            interval,
            per_listener,
        } => edges(&common, outages, interval, per_listener),
        Cmd::Ports { n } => {
            for _ in 0..n {
                println!("{}", free_port());
            }
        }
    }
}
