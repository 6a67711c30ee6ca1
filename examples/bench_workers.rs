//! Benchmark driver for `scripts/bench-controller-scale` (not part of the product): simulated
//! workers that load a real controller process, and the measurement of that process.
//!
//! ```text
//! bench_workers --controller ADDR --pid PID --db URL [--checks 100000] [--interval 60]
//!               [--workers 20] [--capacity 100] [--idle 20] [--warmup 40] [--measure 120]
//!               [--db-pid PID] [--csv FILE]
//! ```
//!
//! Each simulated worker speaks the work protocol like a real one (`POST /work/poll`,
//! `POST /work/results`, JSON, signed with the cluster secret by `gobearmon::rpc::RpcClient`
//! under its own node id): it long-polls with `capacity` and answers every assignment at once
//! with `online`. It learns the epoch from the controller's `409` answer.
//!
//! Phases: connect; `--idle` seconds with no checks (the baseline RSS and CPU); insert
//! `--checks` tcp checks in multi-row INSERTs of 1,000; wait for the first due burst (every
//! check handed out once) and `--warmup` seconds more; then measure for `--measure` seconds: the controller's CPU from
//! `/proc/PID/stat` (utime + stime), its RSS from `/proc/PID/status`, assignments per second,
//! and the scheduling lag of every check (time between two assignments of the same check minus
//! the interval). Progress on stderr, the result as markdown table rows on stdout.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use gobearmon::config::Secret;
use gobearmon::rpc::sign::Signer;
use gobearmon::rpc::work::{
    PATH_POLL, PATH_RESULTS, PollReply, PollRequest, ResultsReply, ResultsRequest, RunStatus,
    WorkResult, WrongEpoch,
};
use gobearmon::rpc::{RpcClient, RpcError};
use mysql_async::prelude::Queryable;

#[derive(Parser, Clone)]
struct Args {
    /// The controller API (`[controller] addr`).
    #[arg(long)]
    controller: String,
    /// The controller's process id, measured through /proc.
    #[arg(long)]
    pid: u32,
    /// The controller's database (checks are inserted here).
    #[arg(long)]
    db: String,
    /// The cluster secret (`[default] password`); default: $GOBEARMON_PASSWORD.
    #[arg(long, env = "GOBEARMON_PASSWORD", hide_env_values = true)]
    secret: String,
    #[arg(long, default_value_t = 100_000)]
    checks: u32,
    /// check_interval of the inserted checks, seconds.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Simulated workers.
    #[arg(long, default_value_t = 20)]
    workers: usize,
    /// Runs each simulated worker asks for per poll.
    #[arg(long, default_value_t = 100)]
    capacity: u32,
    /// Seconds with no checks before inserting them (baseline).
    #[arg(long, default_value_t = 20)]
    idle: u64,
    /// Seconds waited after the first due burst before measuring: the controller re-reads
    /// change-log entries younger than 30 s on each reload, so the freshly inserted rows are
    /// read again for a while after the insert.
    #[arg(long, default_value_t = 40)]
    warmup: u64,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value_t = 120)]
    measure: u64,
    /// The database server's process id, to report its CPU beside the controller's.
    #[arg(long)]
    db_pid: Option<u32>,
    /// One line per second of the measurement.
    #[arg(long)]
    csv: Option<PathBuf>,
}

/// Counters shared by the simulated workers.
#[derive(Default)]
struct Stats {
    polls: AtomicU64,
    assignments: AtomicU64,
    results_posts: AtomicU64,
    accepted: AtomicU64,
    ignored: AtomicU64,
    errors: AtomicU64,
    /// Workers that have had one successful poll.
    connected: AtomicU64,
}

/// When each check was last handed out, and the lags observed.
#[derive(Default)]
struct Lags {
    last: HashMap<i64, Instant>,
    /// (when, lag in µs) of every repeat assignment while recording.
    samples: Vec<i64>,
    recording: bool,
    /// Repeats more than 1.5 intervals apart (a run that went elsewhere or was lost).
    gaps: u64,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// A `kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn self_pid() -> u32 {
    std::process::id()
}

async fn fake_worker(
    id: usize,
    args: Arc<Args>,
    stats: Arc<Stats>,
    lags: Arc<Mutex<Lags>>,
    interval: Duration,
) {
    let node = format!("sim{id:03}");
    let signer = Arc::new(Signer::cluster(
        &Secret::new(args.secret.clone()),
        node.clone(),
    ));
    let client = RpcClient::new(signer, None).expect("rpc client");
    let mut epoch = 0u64;
    let mut connected = false;
    loop {
        let req = PollRequest {
            node: node.clone(),
            epoch,
            location: "bench".into(),
            capacity: args.capacity,
            wait_ms: 5000,
            canaries: None,
        };
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let reply: Result<PollReply, RpcError> = client
            .post(&args.controller, PATH_POLL, &req, Duration::from_secs(10))
            .await;
        let reply = match reply {
            Ok(r) => r,
            Err(RpcError::Status { status, body, .. }) if status.as_u16() == 409 => {
                let w: WrongEpoch = serde_json::from_str(&body).expect("a 409 names the epoch");
                epoch = w.controller_epoch;
                continue;
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                if stats.errors.load(Ordering::Relaxed) % 100 == 1 {
                    eprintln!("{node}: poll failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !connected {
            connected = true;
            stats.connected.fetch_add(1, Ordering::Relaxed);
        }
        if reply.assignments.is_empty() {
            continue;
        }
        let n = reply.assignments.len() as u64;
        stats.assignments.fetch_add(n, Ordering::Relaxed);
        {
            let now = Instant::now();
            let mut l = lags.lock().unwrap();
            let iv = interval.as_micros() as i64;
            for a in &reply.assignments {
                if let Some(prev) = l.last.insert(a.check.0, now) {
                    let gap = now.duration_since(prev).as_micros() as i64;
                    if l.recording {
                        if gap > iv * 3 / 2 {
                            l.gaps += 1;
                        } else {
                            l.samples.push(gap - iv);
                        }
                    }
                }
            }
        }
        let results: Vec<WorkResult> = reply
            .assignments
            .into_iter()
            .map(|a| WorkResult {
                check: a.check,
                ticket: a.ticket,
                epoch: a.epoch,
                status: RunStatus::Online,
                message: String::new(),
                duration_ms: 0,
                details: Default::default(),
            })
            .collect();
        let req = ResultsRequest {
            node: node.clone(),
            epoch,
            results,
        };
        stats.results_posts.fetch_add(1, Ordering::Relaxed);
        match client
            .post::<_, ResultsReply>(
                &args.controller,
                PATH_RESULTS,
                &req,
                Duration::from_secs(10),
            )
            .await
        {
            Ok(r) => {
                stats
                    .accepted
                    .fetch_add(u64::from(r.accepted), Ordering::Relaxed);
                stats
                    .ignored
                    .fetch_add(u64::from(r.ignored), Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("{node}: results not delivered: {e}");
            }
        }
    }
}

async fn insert_checks(url: &str, n: u32) -> Duration {
    let started = Instant::now();
    let mut conn = mysql_async::Conn::from_url(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let mut done = 0u32;
    while done < n {
        let batch = (n - done).min(1000);
        let mut sql =
            String::from("INSERT INTO checks (name, type, data, check_interval, delay) VALUES ");
        for i in 0..batch {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('bench {}', 'tcp', '{{\"address\":\"127.0.0.1:9\",\"timeout\":3}}', 60, 1)",
                done + i + 1
            ));
        }
        conn.query_drop(sql).await.expect("insert checks");
        done += batch;
    }
    let _ = conn.disconnect().await;
    started.elapsed()
}

/// What MariaDB has written so far: rows inserted, bytes written to data files and to the redo
/// log (server-wide counters), and the rows in `result_history`.
#[derive(Clone, Copy, Default)]
struct DbWrites {
    rows_inserted: u64,
    data_bytes: u64,
    log_bytes: u64,
    history_rows: u64,
}

async fn db_writes(url: &str) -> Option<DbWrites> {
    let mut conn = mysql_async::Conn::from_url(url).await.ok()?;
    let status: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN \
             ('Handler_write', 'Innodb_data_written', 'Innodb_os_log_written')",
        )
        .await
        .ok()?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let history_rows: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM result_history")
        .await
        .ok()
        .flatten();
    let _ = conn.disconnect().await;
    Some(DbWrites {
        rows_inserted: get("Handler_write"),
        data_bytes: get("Innodb_data_written"),
        log_bytes: get("Innodb_os_log_written"),
        history_rows: history_rows.unwrap_or(0),
    })
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

fn main() {
    gobearmon::tlsutil::install_default_provider();
    let args = Arc::new(Args::parse());
    assert!(
        std::path::Path::new(&format!("/proc/{}", args.pid)).exists(),
        "no process {}",
        args.pid
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = Arc::new(Stats::default());
    let lags = Arc::new(Mutex::new(Lags::default()));
    let interval = Duration::from_secs(args.interval);
    for i in 0..args.workers {
        rt.spawn(fake_worker(
            i + 1,
            args.clone(),
            stats.clone(),
            lags.clone(),
            interval,
        ));
    }
    let pid = args.pid;
    let sample = || {
        (
            Instant::now(),
            cpu_secs(pid).expect("the controller is gone"),
            status_kib(pid, "VmRSS:").unwrap_or(0),
        )
    };
    // 1. Every simulated worker connected.
    let t0 = Instant::now();
    while stats.connected.load(Ordering::Relaxed) < args.workers as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "only {} of {} simulated workers could poll the controller at {}",
            stats.connected.load(Ordering::Relaxed),
            args.workers,
            args.controller
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{} simulated workers connected to {} (capacity {} each); idle for {} s",
        args.workers, args.controller, args.capacity, args.idle
    );
    // 2. Baseline with no checks.
    let (ti, ci, _) = sample();
    let mut idle_rss = Vec::new();
    while ti.elapsed() < Duration::from_secs(args.idle) {
        std::thread::sleep(Duration::from_secs(1));
        idle_rss.push(status_kib(pid, "VmRSS:").unwrap_or(0));
    }
    let (te, ce, _) = sample();
    let idle_cpu = (ce - ci) / te.duration_since(ti).as_secs_f64();
    let tail = &idle_rss[idle_rss.len().saturating_sub(5)..];
    let rss0 = tail.iter().sum::<u64>() / tail.len().max(1) as u64;
    eprintln!(
        "baseline: RSS {:.1} MiB, CPU {:.1} % of a core",
        rss0 as f64 / 1024.0,
        idle_cpu * 100.0
    );
    // 3. Insert the checks.
    let before = stats.assignments.load(Ordering::Relaxed);
    let cpu_before_insert = cpu_secs(pid).expect("the controller is gone");
    let took = rt.block_on(insert_checks(&args.db, args.checks));
    let inserted = Instant::now();
    eprintln!(
        "inserted {} checks in {:.1} s",
        args.checks,
        took.as_secs_f64()
    );
    // 4. The first due burst: every check handed out once.
    let mut first: Option<Instant> = None;
    loop {
        let got = stats.assignments.load(Ordering::Relaxed) - before;
        if got > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if got >= u64::from(args.checks) {
            break;
        }
        assert!(
            inserted.elapsed() < Duration::from_secs(600),
            "only {got} of {} checks handed out 10 minutes after the insert",
            args.checks
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let burst_end = Instant::now();
    let burst_cpu = cpu_secs(pid).expect("the controller is gone") - cpu_before_insert;
    let first = first.expect("assignments");
    let pickup = first.duration_since(inserted);
    let burst = burst_end.duration_since(first);
    eprintln!(
        "first due burst: first assignment {:.1} s after the insert, all {} handed out in {:.1} s",
        pickup.as_secs_f64(),
        args.checks,
        burst.as_secs_f64()
    );
    // 5. Warm-up, then measure.
    std::thread::sleep(Duration::from_secs(args.warmup));
    lags.lock().unwrap().recording = true;
    let w0 = rt.block_on(db_writes(&args.db));
    let (tm0, cm0, _) = sample();
    let dm0 = args.db_pid.and_then(cpu_secs);
    let sm0 = cpu_secs(self_pid());
    let a0 = stats.assignments.load(Ordering::Relaxed);
    let acc0 = stats.accepted.load(Ordering::Relaxed);
    let ign0 = stats.ignored.load(Ordering::Relaxed);
    let polls0 = stats.polls.load(Ordering::Relaxed);
    let posts0 = stats.results_posts.load(Ordering::Relaxed);
    let mut rss = Vec::new();
    let mut per_sec = Vec::new();
    let mut csv = args.csv.as_ref().map(|p| {
        let mut f = std::fs::File::create(p).expect("csv");
        writeln!(
            f,
            "second,controller_cpu_share,controller_rss_kib,assignments"
        )
        .unwrap();
        f
    });
    let (mut tp, mut cp, _) = sample();
    let mut ap = a0;
    let mut n = 0u64;
    while tm0.elapsed() < Duration::from_secs(args.measure) {
        std::thread::sleep(Duration::from_secs(1));
        let (t, c, r) = sample();
        let a = stats.assignments.load(Ordering::Relaxed);
        let share = (c - cp) / t.duration_since(tp).as_secs_f64();
        n += 1;
        rss.push(r);
        per_sec.push(share);
        if let Some(f) = csv.as_mut() {
            writeln!(f, "{n},{share:.4},{r},{}", a - ap).unwrap();
        }
        if n.is_multiple_of(10) {
            eprintln!(
                "t+{n:3} s: controller {:5.1} % of a core (last second), RSS {:.1} MiB, {} assignments in the last second",
                share * 100.0,
                r as f64 / 1024.0,
                a - ap
            );
        }
        (tp, cp, ap) = (t, c, a);
    }
    let (tm1, cm1, _) = sample();
    let w1 = rt.block_on(db_writes(&args.db));
    let wall = tm1.duration_since(tm0).as_secs_f64();
    let cpu = (cm1 - cm0) / wall;
    let db_cpu = match (dm0, args.db_pid.and_then(cpu_secs)) {
        (Some(a), Some(b)) => Some((b - a) / wall),
        _ => None,
    };
    let self_cpu = match (sm0, cpu_secs(self_pid())) {
        (Some(a), Some(b)) => Some((b - a) / wall),
        _ => None,
    };
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let rss_mean = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64;
    let rss_max = rss.iter().copied().max().unwrap_or(0);
    let peak_share = per_sec.iter().copied().fold(0.0f64, f64::max);
    let assignments = stats.assignments.load(Ordering::Relaxed) - a0;
    let accepted = stats.accepted.load(Ordering::Relaxed) - acc0;
    let ignored = stats.ignored.load(Ordering::Relaxed) - ign0;
    let polls = stats.polls.load(Ordering::Relaxed) - polls0;
    let posts = stats.results_posts.load(Ordering::Relaxed) - posts0;
    let (mut samples, gaps) = {
        let mut l = lags.lock().unwrap();
        l.recording = false;
        (std::mem::take(&mut l.samples), l.gaps)
    };
    samples.sort_unstable();
    let per_check = (rss_mean - rss0 as f64) * 1024.0 / f64::from(args.checks);
    let expected_rate = f64::from(args.checks) / args.interval as f64;
    let ms = |us: f64| us / 1000.0;
    eprintln!(
        "measured {wall:.0} s: {assignments} assignments ({:.0}/s, expected {expected_rate:.0}/s), {accepted} results accepted, {ignored} ignored, {polls} polls, {posts} result posts, {} lag samples, {gaps} gaps, {} errors",
        assignments as f64 / wall,
        samples.len(),
        stats.errors.load(Ordering::Relaxed),
    );
    println!(
        "NOTE: the insert of {} rows took {:.1} s; the first run was handed out {:.1} s after it (the reload period is 10 s); the first due burst handed out all {} runs in {:.1} s; from the start of the insert to the end of that burst the controller used {:.1} s of CPU.",
        args.checks,
        took.as_secs_f64(),
        pickup.as_secs_f64(),
        args.checks,
        burst.as_secs_f64(),
        burst_cpu
    );
    println!(
        "NOTE: in the {wall:.0} s measured: {assignments} runs handed out, {accepted} results accepted, {ignored} ignored, {polls} polls and {posts} result posts by the simulated workers, {} request errors, {} lag samples, {gaps} checks not handed out again within 1.5 intervals.",
        stats.errors.load(Ordering::Relaxed),
        samples.len(),
    );
    if let (Some(a), Some(b)) = (w0, w1) {
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / wall;
        println!(
            "DB: {:.0} rows inserted/s, {:.0} KB/s to data files, {:.0} KB/s to the redo log, {:.0} result_history rows/s",
            per_s(a.rows_inserted, b.rows_inserted),
            per_s(a.data_bytes, b.data_bytes) / 1000.0,
            per_s(a.log_bytes, b.log_bytes) / 1000.0,
            per_s(a.history_rows, b.history_rows),
        );
    }
    let fmt_pct = |o: Option<f64>| o.map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0));
    println!(
        "| {} checks / {} s | {} x {} | **{:.1} %** | {:.0} % | **{:.0} B** | {:.1} MiB | {:.1} / {:.1} / {:.1} MiB | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} ms | {:.1} s | {:.1} % | {} | {} |",
        args.checks,
        args.interval,
        args.workers,
        args.capacity,
        cpu * 100.0,
        peak_share * 100.0,
        per_check,
        rss0 as f64 / 1024.0,
        rss_mean / 1024.0,
        rss_max as f64 / 1024.0,
        hwm as f64 / 1024.0,
        assignments as f64 / wall,
        expected_rate,
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or(0) as f64),
        burst.as_secs_f64(),
        idle_cpu * 100.0,
        fmt_pct(db_cpu),
        fmt_pct(self_cpu),
    );
    rt.shutdown_timeout(Duration::from_millis(100));
}
