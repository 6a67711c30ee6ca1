//! Heap bytes per check of the controller's long-lived structures, counted by a global
//! allocator (no database, no network): the voting engine driven through a few intervals by
//! simulated workers, the check rows as the catalog holds them, and their parsed definitions.
//! It complements `scripts/bench-controller-scale`, which measures the whole process's RSS.
//!
//!   cargo run --release --example controller_memory -- [CHECKS] [WORKERS] [INTERVALS]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use gobearmon::model::{CheckId, CheckRow, CheckStatus, NodeId};
use gobearmon::probe::CheckSpec;
use gobearmon::vote::{CheckDef, Engine, Outcome, VoteConfig};
use tokio::time::Instant;

/// Counts live heap bytes (requested sizes; the allocator's own overhead is not included).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let checks = arg(1, 100_000);
    let workers = arg(2, 20);
    let intervals = arg(3, 10);
    let per = |bytes: isize| bytes as f64 / checks as f64;

    let rows_before = live();
    let rows: HashMap<CheckId, CheckRow> = (0..checks as i64)
        .map(|i| {
            let row = CheckRow {
                id: CheckId(i + 1),
                name: format!("check {}", i + 1),
                check_type: "tcp".into(),
                data: r#"{"address":"127.0.0.1:9"}"#.into(),
                interval_secs: 60,
                delay: 1,
                status: CheckStatus::Online,
                status_was_valid: true,
                confirmations: None,
            };
            (row.id, row)
        })
        .collect();
    let rows_bytes = live() - rows_before;

    let specs_before = live();
    let specs: HashMap<CheckId, CheckSpec> = rows
        .values()
        .map(|r| (r.id, CheckSpec::parse(&r.check_type, &r.data)))
        .collect();
    let specs_bytes = live() - specs_before;

    let engine_before = live();
    let mut engine = Engine::new(VoteConfig {
        confirmations: 2,
        assignment_timeout: Duration::from_secs(40),
        distinct_locations: false,
    });
    let mut now = Instant::now();
    for row in rows.values() {
        engine.upsert_check(&CheckDef::from_row(row), now);
    }
    let nodes: Vec<NodeId> = (0..workers).map(|i| NodeId(format!("w{i}"))).collect();
    for n in &nodes {
        engine.worker_up(n, now);
    }
    let after_load = live() - engine_before;
    // Every interval: hand out what is due, answer it (one in fifty offline, so rounds open
    // and confirmations are asked), and move time on.
    let mut runs = 0usize;
    for step in 0..intervals * 60 {
        let due = engine.due(now);
        for (k, a) in due.into_iter().enumerate() {
            runs += 1;
            let outcome = if (step + k) % 50 == 0 {
                Outcome::Offline
            } else {
                Outcome::Online
            };
            engine.result(&a.node, a.check, a.ticket, outcome, now);
        }
        now += Duration::from_secs(1);
    }
    let engine_bytes = live() - engine_before;
    println!("checks {checks}, simulated workers {workers}, {intervals} intervals, {runs} runs");
    println!("| structure | heap bytes per check |");
    println!("|---|---:|");
    println!(
        "| check rows (HashMap<CheckId, CheckRow>) | {:.0} |",
        per(rows_bytes)
    );
    println!(
        "| parsed definitions (HashMap<CheckId, CheckSpec>) | {:.0} |",
        per(specs_bytes)
    );
    println!("| voting engine after loading | {:.0} |", per(after_load));
    println!(
        "| voting engine after {intervals} intervals | {:.0} |",
        per(engine_bytes)
    );
    println!(
        "| inline sizes | CheckRow {} B, CheckSpec {} B |",
        std::mem::size_of::<CheckRow>(),
        std::mem::size_of::<CheckSpec>()
    );
    drop((rows, specs, engine));
}
