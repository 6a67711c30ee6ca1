//! Result history against a real MariaDB: raw rows written through the store's fenced write
//! path with a controlled clock (the times are chosen by the test), rolled up into hours and
//! days, pruned; incidents and uptime read back from flips.

use gobearmon::history::histogram::bucket_of;
use gobearmon::history::rollup::{DAY, HOUR, Outcome, Period, Rollup};
use gobearmon::model::{CheckId, Epoch, NodeId};
use gobearmon::store::history::{self, ROLLUP_GRACE, RawResult, RollupRow};
use gobearmon::store::{Store, StoreError, fence, timeline};
use mysql_async::prelude::Queryable;
use testkit::db::TestDb;

const EPOCH: Epoch = Epoch(3);

fn controller() -> NodeId {
    NodeId("c1".into())
}

/// An installed database with checks 1 and 2 and the fence raised for [`EPOCH`].
async fn setup(tag: &str) -> (TestDb, Store) {
    let (db, store) = TestDb::installed(tag).await;
    db.exec("INSERT INTO checks (name, type, data) VALUES ('a', 'tcp', '{}'), ('b', 'tcp', '{}')")
        .await;
    fence::raise(&store, EPOCH, &controller()).await.unwrap();
    (db, store)
}

const WORKERS: [(&str, &str); 3] = [("w1", "fra1"), ("w2", "ams1"), ("w3", "nyc1")];

/// The result of worker `w` at step `i`: mostly online with durations that differ per
/// worker, every 17th offline, every 29th a fail.
fn sample(check: i64, w: usize, i: i64, at_ms: i64) -> RawResult {
    let outcome = if i % 29 == 3 {
        Outcome::Fail
    } else if i % 17 == 5 {
        Outcome::Offline
    } else {
        Outcome::Online
    };
    RawResult {
        check: CheckId(check),
        at_ms,
        node: NodeId(WORKERS[w].0.into()),
        location: WORKERS[w].1.into(),
        outcome,
        duration_ms: ((w as i64 + 1) * 10 + (i * 37) % 400) as u64,
        message: if outcome == Outcome::Online {
            String::new()
        } else {
            format!("down at step {i}")
        },
    }
}

/// Results every `step` seconds over `[from, to)` from the three workers for `check`.
fn results(check: i64, from: i64, to: i64, step: i64) -> Vec<RawResult> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut t = from;
    while t < to {
        for w in 0..WORKERS.len() {
            out.push(sample(check, w, i, t * 1000 + w as i64 * 7));
        }
        t += step;
        i += 1;
    }
    out
}

async fn write(store: &Store, rows: &[RawResult]) {
    for chunk in rows.chunks(5000) {
        history::write_raw(store, EPOCH, &controller(), chunk)
            .await
            .expect("raw history written");
    }
}

async fn rollups(store: &Store, period: Period, from: i64, to: i64) -> Vec<RollupRow> {
    history::read_rollups_of(store, &[1, 2], period, from, to, None)
        .await
        .unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.conn().await.query_first(sql).await.unwrap().unwrap()
}

/// A fixed UTC day, far enough in the past to be complete (2026-01-05 00:00:00 UTC).
const DAY0: i64 = 1_767_571_200;

#[tokio::test]
async fn an_hour_from_three_workers_gives_exact_counts_and_bucket_true_percentiles() {
    let (db, store) = setup("hist_hour").await;
    let hour = DAY0 + 10 * HOUR;
    let rows = results(1, hour, hour + HOUR, 5);
    assert_eq!(rows.len(), 720 * 3);
    write(&store, &rows).await;
    // A batch written again (a commit whose answer was lost) adds nothing.
    write(&store, &rows[..600]).await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM result_history").await,
        2160
    );
    // Before the hour is complete (grace included) nothing is rolled up.
    let early = history::roll_up(&store, EPOCH, &controller(), hour + HOUR + 10, 100)
        .await
        .unwrap();
    assert_eq!(early.hours, 0, "{early:?}");

    let done = history::roll_up(
        &store,
        EPOCH,
        &controller(),
        hour + HOUR + ROLLUP_GRACE,
        100,
    )
    .await
    .unwrap();
    assert_eq!(done.hours, 1, "{done:?}");
    assert_eq!(done.cursor, hour + HOUR);
    let got = rollups(&store, Period::Hour, hour, hour + HOUR).await;
    assert_eq!(got.len(), 3, "one row per location: {got:?}");
    for (w, (_, location)) in WORKERS.iter().enumerate() {
        let row = got.iter().find(|r| r.location == *location).unwrap();
        assert_eq!(row.start, hour);
        let mine: Vec<&RawResult> = rows.iter().filter(|r| r.location == *location).collect();
        let n = |o: Outcome| mine.iter().filter(|r| r.outcome == o).count() as u64;
        let r = &row.rollup;
        assert_eq!(
            (r.online, r.offline, r.fail),
            (n(Outcome::Online), n(Outcome::Offline), n(Outcome::Fail)),
            "worker {w}"
        );
        assert_eq!(r.results(), 720);
        let mut lat: Vec<u64> = mine
            .iter()
            .filter(|r| r.outcome == Outcome::Online)
            .map(|r| r.duration_ms)
            .collect();
        lat.sort_unstable();
        assert_eq!(r.latency.count, lat.len() as u64);
        assert_eq!(r.latency.min_ms, lat[0]);
        assert_eq!(r.latency.max_ms, *lat.last().unwrap());
        assert_eq!(r.latency.sum_ms, lat.iter().sum::<u64>());
        for q in [0.5, 0.95, 0.99] {
            let truth = lat[(q * lat.len() as f64).ceil() as usize - 1];
            let p = r.latency.quantile_ms(q).unwrap();
            assert_eq!(
                bucket_of(p),
                bucket_of(truth),
                "q {q} at {location}: {p} vs {truth}"
            );
        }
    }
    // Rolling up again changes nothing.
    let again = history::roll_up(&store, EPOCH, &controller(), hour + 2 * HOUR, 100)
        .await
        .unwrap();
    assert_eq!(again.hours, 0);
    assert_eq!(rollups(&store, Period::Hour, hour, hour + HOUR).await, got);
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_day_is_the_exact_merge_of_its_hours() {
    let (db, store) = setup("hist_day").await;
    let mut all = results(1, DAY0, DAY0 + DAY, 60);
    all.extend(results(2, DAY0 + 3 * HOUR, DAY0 + 5 * HOUR, 30));
    write(&store, &all).await;
    let done = history::roll_up(&store, EPOCH, &controller(), DAY0 + DAY + HOUR, 100)
        .await
        .unwrap();
    assert_eq!((done.hours, done.days), (24, 1), "{done:?}");
    let hours = rollups(&store, Period::Hour, DAY0, DAY0 + DAY).await;
    let days = rollups(&store, Period::Day, DAY0, DAY0 + DAY).await;
    assert_eq!(days.len(), 6, "two checks, three locations: {days:?}");
    for day in &days {
        let mut merged = Rollup::default();
        for h in hours
            .iter()
            .filter(|h| h.check == day.check && h.location == day.location)
        {
            merged.merge(&h.rollup);
        }
        assert_eq!(
            day.rollup, merged,
            "check {} at {}",
            day.check, day.location
        );
        let direct = all
            .iter()
            .filter(|r| r.check == day.check && r.location == day.location)
            .count() as u64;
        assert_eq!(day.rollup.results(), direct);
    }
    let check2: u64 = days
        .iter()
        .filter(|d| d.check == CheckId(2))
        .map(|d| d.rollup.results())
        .sum();
    assert_eq!(check2, 2 * 120 * 3);
    // The 24-hour latency each check's list entry shows: its hours merged across locations.
    let stored = history::latency_24h(&store, &[1, 2]).await.unwrap();
    for check in [1, 2] {
        let mut merged = Rollup::default();
        for h in hours.iter().filter(|h| h.check == CheckId(check)) {
            merged.merge(&h.rollup);
        }
        let want = merged.latency.quantile_ms(0.5);
        assert!(want.is_some());
        assert_eq!(stored[&check], (DAY0 + DAY, want), "check {check}");
    }

    // A window with ragged edges: whole hours from the rollups, the edges from raw rows,
    // the same counts as the raw rows of the window.
    let (from, to) = (DAY0 + 1799, DAY0 + 20 * HOUR + 61);
    let got = timeline::series(&store, CheckId(1), from, to, None, None)
        .await
        .unwrap();
    for (_, location) in WORKERS {
        let direct = all
            .iter()
            .filter(|r| r.check == CheckId(1) && r.location == location)
            .filter(|r| r.at_ms >= from * 1000 && r.at_ms < to * 1000)
            .count() as u64;
        assert_eq!(got[&(from, location.to_string())].results(), direct);
    }
    // Steps of an hour are the hourly rows; of one location only when asked.
    let steps = timeline::series(
        &store,
        CheckId(1),
        DAY0,
        DAY0 + DAY,
        Some("ams1"),
        Some(HOUR),
    )
    .await
    .unwrap();
    assert_eq!(steps.len(), 24);
    for h in hours
        .iter()
        .filter(|h| h.check == CheckId(1) && h.location == "ams1")
    {
        assert_eq!(steps[&(h.start, "ams1".to_string())], h.rollup);
    }
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn retention_prunes_old_raw_rows_in_batches_and_keeps_rollups() {
    let (db, store) = setup("hist_prune").await;
    // Ten days at 2 minutes from three workers: 21,600 rows.
    let rows = results(1, DAY0, DAY0 + 10 * DAY, 120);
    write(&store, &rows).await;
    let now = DAY0 + 10 * DAY + HOUR;
    // Nothing is pruned before it is rolled up.
    let n = history::prune_raw(&store, EPOCH, &controller(), (now - 7 * DAY) * 1000)
        .await
        .unwrap();
    assert_eq!(n, 0, "raw rows of hours not rolled up are kept");
    let done = history::roll_up(&store, EPOCH, &controller(), now, 1000)
        .await
        .unwrap();
    assert_eq!((done.hours, done.days), (240, 10), "{done:?}");
    let rollups_before = count(&db, "SELECT COUNT(*) FROM result_rollups").await;
    let cutoff_ms = (now - 7 * DAY) * 1000;
    let mut batches = 0;
    loop {
        let n = history::prune_raw(&store, EPOCH, &controller(), cutoff_ms)
            .await
            .unwrap();
        batches += 1;
        assert!(n <= history::PRUNE_BATCH as u64);
        if n < history::PRUNE_BATCH as u64 {
            break;
        }
    }
    assert!(batches >= 2, "pruned in batches ({batches})");
    let expected_kept = rows.iter().filter(|r| r.at_ms >= cutoff_ms).count() as i64;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM result_history").await,
        expected_kept
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT COUNT(*) FROM result_history WHERE at_ms < {cutoff_ms}")
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM result_rollups").await,
        rollups_before,
        "rollups are kept"
    );
    assert_eq!(rollups_before, 240 * 3 + 10 * 3);
    // A rollup retention prunes the oldest rollups only.
    let n = history::prune_rollups(&store, EPOCH, &controller(), Period::Hour, DAY0 + DAY)
        .await
        .unwrap();
    assert_eq!(n, 24 * 3);
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_deposed_controller_writes_no_history() {
    let (db, store) = setup("hist_fenced").await;
    let rows = results(1, DAY0, DAY0 + 60, 5);
    write(&store, &rows).await;
    fence::raise(&store, Epoch(EPOCH.0 + 1), &NodeId("c2".into()))
        .await
        .unwrap();
    let later = results(1, DAY0 + 60, DAY0 + 120, 5);
    let err = history::write_raw(&store, EPOCH, &controller(), &later)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let err = history::roll_up(&store, EPOCH, &controller(), DAY0 + DAY, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let err = history::prune_raw(&store, EPOCH, &controller(), i64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM result_history").await,
        rows.len() as i64
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM result_rollups").await, 0);
    assert_eq!(history::cursor(&store).await.unwrap(), 0);
    store.close().await;
    db.drop_db().await;
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs the built binary; returns (exit code, stdout, stderr).
fn gobearmon(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .args(args)
        .output()
        .expect("run gobearmon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_history_and_uptime_commands_print_what_is_stored() {
    let (db, store) = setup("hist_cli").await;
    let now = now_s();
    let from = now - 3 * HOUR;
    let rows = results(1, from, now, 60);
    write(&store, &rows).await;
    history::roll_up(&store, EPOCH, &controller(), now, 100)
        .await
        .unwrap();
    db.exec(&format!(
        "INSERT INTO check_events (check_id, type, time) VALUES
           (1, 'offline', FROM_UNIXTIME({})), (1, 'online', FROM_UNIXTIME({}))",
        now - 2 * HOUR,
        now - 2 * HOUR + 90
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\npassword = \"0123456789abcdef\"\n[worker]\nid = \"w1\"\nview_addr = \"127.0.0.1:1\"\n\
             [controller]\naddr = \"127.0.0.1:1\"\ndatabase = [\"{}\"]\n",
            db.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let (code, out, err) = gobearmon(&[
        "history", "a", "--since", "24h", "--json", "--config", config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["step_seconds"], 3600);
    for (_, location) in WORKERS {
        let mine: Vec<&RawResult> = rows.iter().filter(|r| r.location == location).collect();
        let total = v["total"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["location"] == location)
            .unwrap_or_else(|| panic!("{location} in {out}"));
        let n = |o: Outcome| mine.iter().filter(|r| r.outcome == o).count() as u64;
        assert_eq!(total["online"], n(Outcome::Online), "{location}");
        assert_eq!(total["offline"], n(Outcome::Offline), "{location}");
        assert_eq!(total["fail"], n(Outcome::Fail), "{location}");
    }
    let (code, text, err) = gobearmon(&["history", "1", "--location", "ams1", "--config", config]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("HOUR") && text.contains("ams1") && !text.contains("fra1"),
        "{text}"
    );

    let (code, out, err) = gobearmon(&[
        "uptime", "1", "--window", "1h", "--json", "--config", config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["down_seconds"].as_i64(), v["complete"].as_bool()),
        (Some(0), Some(true)),
        "{out}"
    );
    let (code, out, err) = gobearmon(&[
        "uptime", "a", "--window", "1d", "--json", "--config", config,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["down_seconds"], 90, "{out}");
    assert_eq!(v["complete"], false, "history began 3 h ago: {out}");
    assert_eq!(v["incidents"], 1);
    let (code, text, _) = gobearmon(&["uptime", "a", "--window", "1d", "--config", config]);
    assert_eq!(code, 0);
    assert!(
        text.contains("1m 30s in 1 incident(s)") && text.contains("only"),
        "{text}"
    );

    let (code, _, err) = gobearmon(&["uptime", "nope", "--config", config]);
    assert_eq!(code, 1);
    assert!(err.contains("no check"), "{err}");
    store.close().await;
    db.drop_db().await;
}

/// `/api/v1/incidents` pages in SQL: walking every page by its cursor gives exactly the
/// incidents the in-memory rule finds, for each filter and page size, with repeated offline
/// flips, flips of two checks in the same second, a flip ended in its own second and a row
/// of no known type.
#[tokio::test]
async fn incident_pages_read_in_sql_match_the_rule_in_memory() {
    let (db, store) = setup("incpages").await;
    db.exec("INSERT INTO checks (name, type, data) VALUES ('c', 'tcp', '{}')")
        .await;
    let at = |s: i64| format!("FROM_UNIXTIME({})", 1_700_000_000 + s);
    let mut rows = Vec::new();
    for (check, kind, s) in [
        (1, "'offline'", 100),
        (1, "'offline'", 110),
        (2, "'online'", 50),
        (2, "'offline'", 100),
        (1, "'online'", 130),
        (2, "'online'", 100),
        (3, "NULL", 90),
        (3, "'offline'", 95),
        (1, "'offline'", 200),
        (2, "'offline'", 200),
        (2, "'online'", 260),
        (2, "'offline'", 300),
    ] {
        rows.push(format!("({check}, {kind}, {})", at(s)));
    }
    db.exec(&format!(
        "INSERT INTO check_events (check_id, type, time) VALUES {}",
        rows.join(", ")
    ))
    .await;
    let now = 1_700_000_400;
    let key = |i: &timeline::Incident| (i.id, i.check, i.start, i.end, i.end_event, i.duration);
    for check in [None, Some(CheckId(1)), Some(CheckId(2)), Some(CheckId(3))] {
        for open in [false, true] {
            let want: Vec<_> = timeline::incidents(&store, check, open, now)
                .await
                .unwrap()
                .iter()
                .map(key)
                .collect();
            for limit in [1, 2, 10] {
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let page = timeline::incident_page(&store, check, open, after, limit, now)
                        .await
                        .unwrap();
                    got.extend(page.iter().map(key));
                    if page.len() < limit {
                        break;
                    }
                    after = page.last().map(|i| i.id);
                }
                assert_eq!(got, want, "check {check:?}, open {open}, limit {limit}");
            }
        }
    }
    let all = timeline::incidents(&store, None, false, now).await.unwrap();
    assert_eq!(all.len(), 6, "{all:?}");
    store.close().await;
    db.drop_db().await;
}
