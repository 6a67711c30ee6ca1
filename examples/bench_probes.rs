//! Benchmark driver for `scripts/bench-probes` (not part of the product CLI).
//!
//! ```text
//! bench_probes probe TYPE JSON CONCURRENCY SECONDS
//!     runs gobearmon checks back to back on CONCURRENCY tasks for SECONDS
//! bench_probes blackbox URL CONCURRENCY SECONDS
//!     asks prometheus-blackbox-exporter for probes (GET URL) on CONCURRENCY connections for
//!     SECONDS, counting `probe_success 1`
//! ```
//!
//! `probe` and `blackbox` print one JSON line: `{"checks":N,"success":N,"seconds":S,
//! "rate":R,"peak_rss_kib":K,"cpu_us":C}` where `peak_rss_kib` is this process's VmHWM and
//! `cpu_us` the user plus system CPU time it used.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gobearmon::model::CheckStatus;
use gobearmon::probe::{self, CheckSpec, ProbeContext};

fn main() {
    gobearmon::tlsutil::install_default_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["probe", check_type, data, conc, secs] => {
            let spec = CheckSpec::parse(check_type, data);
            if let CheckSpec::Invalid { message } = &spec {
                panic!("bad check definition: {message}");
            }
            let (checks, success, elapsed) = runtime.block_on(drive(
                parse(conc),
                parse(secs),
                move |ctx: ProbeContext| {
                    let spec = spec.clone();
                    async move {
                        matches!(
                            probe::run(&spec, &ctx).await,
                            Ok(o) if o.status == CheckStatus::Online
                        )
                    }
                },
                ProbeContext::default(),
            ));
            report(checks, success, elapsed);
        }
        ["blackbox", url, conc, secs] => {
            let url = url.to_string();
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1024)
                .build()
                .expect("client");
            let (checks, success, elapsed) = runtime.block_on(drive(
                parse(conc),
                parse(secs),
                move |client: reqwest::Client| {
                    let url = url.clone();
                    async move {
                        match client.get(&url).send().await {
                            Ok(r) => r
                                .text()
                                .await
                                .map(|t| t.contains("\nprobe_success 1"))
                                .unwrap_or(false),
                            Err(_) => false,
                        }
                    }
                },
                client,
            ));
            report(checks, success, elapsed);
        }
        _ => {
            eprintln!("usage: bench_probes probe TYPE JSON CONC SECS | blackbox URL CONC SECS");
            std::process::exit(2);
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

/// Runs `one` back to back on `conc` tasks until `secs` have passed.
async fn drive<C, F, Fut>(conc: usize, secs: u64, one: F, shared: C) -> (u64, u64, Duration)
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let checks = Arc::new(AtomicU64::new(0));
    let success = Arc::new(AtomicU64::new(0));
    let one = Arc::new(one);
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (checks, success, one, shared) =
                (checks.clone(), success.clone(), one.clone(), shared.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let ok = one(shared.clone()).await;
                    checks.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        success.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (
        checks.load(Ordering::Relaxed),
        success.load(Ordering::Relaxed),
        started.elapsed(),
    )
}

fn report(checks: u64, success: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "checks": checks,
            "success": success,
            "seconds": secs,
            "rate": checks as f64 / secs,
            "peak_rss_kib": peak_rss_kib(),
            "cpu_us": cpu_us(),
        })
    );
}

/// User plus system CPU time of this process so far, in microseconds.
fn cpu_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// VmHWM of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
