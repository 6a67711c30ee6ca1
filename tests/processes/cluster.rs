//! The viewserver group and the controller lease with real processes on loopback: three
//! viewserver members and three workers, killed, stopped and restarted.

use std::time::Duration;

use gobearmon::config::Secret;
use gobearmon::rpc::sign::Signer;
use testkit::cluster::{
    Cluster, FENCE_ALONE, LEASE_START, LEASE_STOP, NOT_ACTING, SECRET, Timings, lease_intervals,
    log_number, wait_until,
};
use testkit::config::{Ms, keys};
use testkit::db::{TestDb, wait_fence};

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn fence_epoch(rt: &tokio::runtime::Runtime, db: &TestDb) -> u64 {
    rt.block_on(db.fence_epoch())
}

fn start(db: &TestDb) -> Cluster {
    gobearmon::tlsutil::install_default_provider();
    Cluster::builder(crate::BIN, &db.url)
        .viewservers(3)
        .workers(3)
        .start()
}

/// Waits for a view naming a controller with an epoch above `above`.
fn controller_after(c: &Cluster, above: u64, limit: Duration) -> (u64, String) {
    wait_until(limit, "a controller to be named", || match c.current() {
        Some((epoch, Some(node))) if epoch > above => Some((epoch, node)),
        _ => None,
    })
}

/// The fence values read along a test never went down, and the last is `epoch`.
fn assert_fence_grew_to(fences: &[u64], epoch: u64) {
    assert!(
        fences.windows(2).all(|p| p[0] <= p[1]),
        "the fence only grows: {fences:?}"
    );
    assert_eq!(fences.last(), Some(&epoch), "{fences:?}");
}

/// No two lease intervals of different nodes overlap. A lease still open in a log ends now,
/// or, for a node in `killed`, when it was killed.
fn assert_no_overlap(c: &Cluster, killed: &[(String, u64)]) {
    let now = wall_ms();
    let mut leases = Vec::new();
    for w in &c.workers {
        let end = killed
            .iter()
            .find(|(n, _)| *n == w.name)
            .map_or(now, |(_, at)| *at);
        leases.extend(lease_intervals(&[(w.name.clone(), w.log_text())], end));
    }
    assert!(!leases.is_empty(), "no lease was ever logged");
    for (i, a) in leases.iter().enumerate() {
        for b in &leases[i + 1..] {
            if a.0 != b.0 {
                assert!(
                    a.3 <= b.2 || b.3 <= a.2,
                    "two nodes held a lease at once: {a:?} and {b:?}\nall: {leases:?}"
                );
            }
        }
    }
}

#[test]
fn a_controller_is_named_and_replaced_after_kill_9() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_failover"));
    let mut c = start(&db);
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let w = c.worker_index(&first);
    c.wait_acting(w, true, Duration::from_secs(10));
    let killed_at = wall_ms();
    c.workers[w].kill9();
    let t = c.timings.controller_timeout_ms();
    let (e2, second) = controller_after(&c, e1, Duration::from_millis(t + 2000));
    assert_ne!(second, first);
    assert!(e2 > e1);
    c.wait_acting(c.worker_index(&second), true, Duration::from_secs(5));
    // The term raises the fence just after it starts acting: wait for that write, then
    // require exactly the new epoch.
    assert_eq!(
        wait_fence(&rt, &db, e2),
        e2,
        "the new controller raised the fence"
    );
    assert_no_overlap(&c, &[(first.clone(), killed_at)]);
    rt.block_on(db.drop_db());
}

#[test]
fn the_group_survives_its_leader_and_members_rejoin() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_leader"));
    let mut c = start(&db);
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let leader = wait_until(Duration::from_secs(10), "a Raft leader", || c.leader(0));
    let li = (leader - 1) as usize;
    c.viewservers[li].kill9();
    let others: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    // The other two elect a leader among themselves and keep answering.
    for &i in &others {
        wait_until(Duration::from_secs(10), "a new Raft leader", || {
            c.leader(i).filter(|l| *l != leader)
        });
    }
    // A controller failure is still handled.
    let w = c.worker_index(&first);
    c.workers[w].kill9();
    let (e2, second) = controller_after(&c, e1, Duration::from_secs(10));
    assert_ne!(second, first);
    // The killed member comes back with its data dir and catches up.
    c.viewservers[li].start();
    wait_until(
        Duration::from_secs(15),
        "the restarted member to rejoin",
        || {
            let v = c.view(li)?;
            (v["view"]["epoch"].as_u64()? == e2 && v["leader"].as_u64().is_some()).then_some(())
        },
    );
    // A member whose data dir is lost rejoins as the documented procedure says: it is caught
    // up by the leader and refuses to vote until then.
    let victim = others[0];
    c.viewservers[victim].kill9();
    std::fs::remove_dir_all(c.path(&format!("vs{}-data", victim + 1))).unwrap();
    c.viewservers[victim].start();
    wait_until(
        Duration::from_secs(15),
        "the wiped member to catch up",
        || {
            let v = c.view(victim)?;
            (v["view"]["epoch"].as_u64()? == e2).then_some(())
        },
    );
    assert!(
        c.viewservers[victim].log_text().contains("empty data dir"),
        "the wiped member says what it does"
    );
    // And the group still replaces a controller.
    let w = c.worker_index(&second);
    c.workers[w].kill9();
    let (e3, third) = controller_after(&c, e2, Duration::from_secs(10));
    assert!(e3 > e2 && third != second);
    rt.block_on(db.drop_db());
}

#[test]
fn a_frozen_controller_stops_before_another_starts() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_freeze"));
    let c = start(&db);
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let w = c.worker_index(&first);
    let mut fences = vec![fence_epoch(&rt, &db)];
    // Cut the controller off: stopped, it can neither heartbeat nor act (a long GC pause or a
    // frozen VM); the group must name another controller, and the old one must find its lease
    // gone when it wakes up.
    c.workers[w].signal("STOP");
    let (e2, second) = controller_after(&c, e1, Duration::from_secs(10));
    assert_ne!(second, first);
    fences.push(fence_epoch(&rt, &db));
    c.workers[w].signal("CONT");
    c.wait_acting(w, false, Duration::from_secs(5));
    c.wait_acting(c.worker_index(&second), true, Duration::from_secs(5));
    // The lease makes it act; the term raises the fence just after.
    fences.push(wait_fence(&rt, &db, e2));
    assert_fence_grew_to(&fences, e2);
    // The metric turns 0 as the lease is dropped; the line saying so follows just after.
    wait_until(
        Duration::from_secs(5),
        "the old lease to be logged closed",
        || {
            let log = c.workers[w].log_text();
            (log.matches(LEASE_START).count() == log.matches(LEASE_STOP).count()).then_some(())
        },
    );
    assert_no_overlap(&c, &[]);
    rt.block_on(db.drop_db());
}

#[test]
fn a_controller_cut_off_from_the_group_stops_before_another_starts() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_cut"));
    gobearmon::tlsutil::install_default_provider();
    // A controller timeout of 3 s: a successor raises the fence about one timeout after the
    // cut, the old controller looks at it two timeouts after; the margin is one timeout.
    let timings = Timings {
        controller_timeout: Some(Ms(3000)),
        heartbeat: Some(Ms(250)),
        lease: Some(Ms(2000)),
        ..Timings::default()
    };
    let c = Cluster::builder(crate::BIN, &db.url)
        .viewservers(3)
        .workers(3)
        .timings(timings)
        .isolable()
        .start();
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let w = c.worker_index(&first);
    let mut fences = vec![wait_fence(&rt, &db, e1)];
    // Every packet the controller sends to a viewserver member is dropped; it still runs, and
    // still reaches MySQL, the other workers and their polls.
    let cut = testkit::partition::Cut::new(c.workers[w].cgroup.as_ref().unwrap(), &c.vs_ports());
    let (e2, second) = controller_after(&c, e1, Duration::from_secs(15));
    assert_ne!(second, first);
    let w2 = c.worker_index(&second);
    c.wait_acting(w2, true, Duration::from_secs(10));
    fences.push(wait_fence(&rt, &db, e2));
    // The old controller stopped when its lease ran out. Once a working group would have
    // replaced it, it looks at the fence, finds the successor's epoch and does not act.
    wait_until(
        Duration::from_secs(20),
        "the cut-off controller to find a newer epoch in the fence",
        || {
            let log = c.workers[w].log_text();
            log.contains(NOT_ACTING).then_some(())
        },
    );
    let log = c.workers[w].log_text();
    assert!(log.contains("reason=\"lease expired\""), "{log}");
    assert!(!log.contains(FENCE_ALONE), "{log}");
    assert_eq!(
        c.metric(&c.worker_addrs[w], "gobearmon_is_controller"),
        Some(0.0)
    );
    // The cut heals: it hears the group again and stays a plain worker.
    drop(cut);
    wait_until(
        Duration::from_secs(10),
        "the old controller to learn the new view",
        || {
            c.metric(&c.worker_addrs[w], "gobearmon_view_epoch")
                .filter(|v| *v == e2 as f64)
        },
    );
    assert_eq!(c.current(), Some((e2, Some(second))));
    assert_eq!(
        c.metric(&c.worker_addrs[w], "gobearmon_is_controller"),
        Some(0.0)
    );
    fences.push(fence_epoch(&rt, &db));
    assert_fence_grew_to(&fences, e2);
    assert_no_overlap(&c, &[]);
    // It was running all along, so the moment it logged its stop (not only its lease's end)
    // comes before the successor's start.
    let at_ms = |text: &str, what: &str| -> u64 {
        let line = text.lines().find(|l| l.contains(what)).expect(what);
        log_number(line, "at_ms").expect("at_ms")
    };
    let stopped = at_ms(&c.workers[w].log_text(), LEASE_STOP);
    let started = at_ms(&c.workers[w2].log_text(), LEASE_START);
    assert!(
        stopped < started,
        "the old controller stopped at {stopped}, the new one started at {started}"
    );
    eprintln!(
        "cut-off controller stopped {} ms before its successor started",
        started - stopped
    );
    rt.block_on(db.drop_db());
}

#[test]
fn sigusr1_hands_over_and_the_old_controller_returns_as_a_worker() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_usr1"));
    let c = start(&db);
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let w = c.worker_index(&first);
    c.wait_acting(w, true, Duration::from_secs(5));
    c.workers[w].signal("USR1");
    let (e2, second) = controller_after(&c, e1, Duration::from_secs(10));
    assert_ne!(second, first);
    wait_until(
        Duration::from_secs(5),
        "the old controller to say so",
        || {
            c.workers[w]
                .log_text()
                .contains("stepping down")
                .then_some(())
        },
    );
    // After its pause (3 s in these configs) it is back, ready, and not the controller.
    wait_until(
        Duration::from_secs(10),
        "the old controller to be ready again",
        || {
            let (code, _) = c.get(&c.worker_addrs[w], "/ready")?;
            (code == 200).then_some(())
        },
    );
    assert_eq!(c.current().unwrap(), (e2, Some(second)));
    assert_eq!(
        c.metric(&c.worker_addrs[w], "gobearmon_is_controller"),
        Some(0.0)
    );
    assert_no_overlap(&c, &[]);
    rt.block_on(db.drop_db());
}

#[test]
fn unsigned_stale_and_replayed_requests_get_401_and_change_nothing() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_auth"));
    let c = start(&db);
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    let addr = &c.vs_addrs[0];
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    // A heartbeat that would step the controller down, if it were accepted.
    let body = serde_json::to_vec(&serde_json::json!({
        "node": first, "controller_addr": null, "up_since_ms": 0, "stepping_down": true
    }))
    .unwrap();
    let send = |signed: gobearmon::rpc::sign::Signed, body: Vec<u8>| {
        let url = format!("http://{addr}/view/heartbeat");
        {
            let mut request = http.post(url).header("content-type", "application/json");
            for (name, value) in signed.headers() {
                request = request.header(name, value);
            }
            request.body(body).send().unwrap().status().as_u16()
        }
    };
    let before = c.metric(addr, "gobearmon_requests_refused_total").unwrap();
    // Wrong secret.
    let wrong = Signer::cluster(&Secret::new("not-the-cluster-secret"), "intruder");
    let s = wrong.sign("POST", addr, "/view/heartbeat", &body);
    assert_eq!(send(s, body.clone()), 401);
    // No signature at all.
    let unsigned = http
        .post(format!("http://{addr}/view/heartbeat"))
        .body(body.clone())
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(unsigned, 401);
    // Right secret, old timestamp: the signature covers the timestamp, so an old request
    // cannot be refreshed.
    let right = Signer::cluster(&Secret::new(SECRET), "tester");
    let mut old = right.sign("POST", addr, "/view/heartbeat", &body);
    old.timestamp_ms -= 120_000;
    assert_eq!(send(old, body.clone()), 401);
    // Right secret, tampered body.
    let s = right.sign("POST", addr, "/view/heartbeat", &body);
    assert_eq!(send(s, b"{}".to_vec()), 401);
    // A valid request for a harmless heartbeat of an unknown probe-only node, then its replay.
    let harmless = serde_json::to_vec(&serde_json::json!({
        "node": "tester", "controller_addr": null, "up_since_ms": 0, "stepping_down": false
    }))
    .unwrap();
    let s = right.sign("POST", addr, "/view/heartbeat", &harmless);
    assert_eq!(send(s.clone(), harmless.clone()), 200);
    assert_eq!(send(s, harmless), 401, "a replayed nonce is refused");
    let after = c.metric(addr, "gobearmon_requests_refused_total").unwrap();
    assert_eq!(after - before, 5.0, "every refusal is counted");
    // Logged once with the peer, not once per refusal.
    let log = c.viewservers[0].log_text();
    let logged = log
        .lines()
        .filter(|l| l.contains("refused a request"))
        .count();
    assert_eq!(logged, 1, "{log}");
    assert!(log.contains("peer=127.0.0.1 "), "{log}");
    // Nothing changed: the controller that was not really stepping down is still in place.
    std::thread::sleep(Duration::from_millis(
        c.timings.controller_timeout_ms() + 500,
    ));
    assert_eq!(c.current().unwrap(), (e1, Some(first)));
    rt.block_on(db.drop_db());
}

/// Issue 9, fix 9: a viewserver group that lost its data counts epochs from zero again while
/// the fence remembers (here: 57, as after a long history). Monitoring does not stop for good:
/// the workers follow the group's new view, the node it names finds the fence ahead and says
/// so, the group names a controller past the fence, that one acts and raises the fence, and
/// the admin is told. (Before, the named node ruled its epoch out and went on heartbeating as
/// the controller of the view; nobody was named again.)
#[test]
fn a_group_that_lost_its_data_names_a_controller_past_the_fence() {
    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_wiped"));
    let mut c = Cluster::builder(crate::BIN, &db.url).workers(2).start();
    let (e1, _) = controller_after(&c, 0, Duration::from_secs(20));
    wait_fence(&rt, &db, e1);
    let history = 57;
    rt.block_on(db.exec(&format!(
        "UPDATE epoch_fence SET epoch = {history}, controller = 'w-of-the-past' WHERE id = 1"
    )));
    // The only member loses its data dir and starts again.
    c.viewservers[0].kill9();
    std::fs::remove_dir_all(c.path("vs1-data")).expect("the member's data dir");
    c.viewservers[0].start();
    let (e2, named) = controller_after(&c, history, Duration::from_secs(40));
    assert!(
        e2 > history,
        "the new view ({e2}) is past the fence ({history})"
    );
    c.wait_acting(c.worker_index(&named), true, Duration::from_secs(15));
    let fence = wait_fence(&rt, &db, e2);
    assert_eq!(fence, e2);
    let vs_log = c.viewservers[0].log_text();
    assert!(
        vs_log.contains("the viewserver group was behind the epoch fence"),
        "the admin is told: {vs_log}"
    );
    rt.block_on(db.drop_db());
}

/// Issue 15, item 3: the acting controller calls `heartbeat_url` every interval while it is
/// healthy. While the test holds the epoch fence's row lock (MySQL does not accept writes
/// under the fence), the beats stop within an interval and a health bound; they resume once
/// the lock is let go. A failover hands the beats to the next controller.
#[test]
fn the_dead_mans_switch_beats_only_while_the_controller_is_healthy() {
    use mysql_async::prelude::Queryable;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_beat"));
    let beats = Arc::new(AtomicU64::new(0));
    let receiver = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!(
        "http://{}/ping/0b6c1e2a-uuid-secret",
        receiver.local_addr().unwrap()
    );
    let counted = beats.clone();
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/ping/0b6c1e2a-uuid-secret",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "OK" }
            }),
        );
        let _ = axum::serve(receiver, app).await;
    });
    let mut c = Cluster::builder(crate::BIN, &db.url)
        .workers(2)
        .controller_keys(keys([
            ("heartbeat_url", url.into()),
            ("heartbeat_interval", Ms(500).into()),
        ]))
        .start();
    let (e1, first) = controller_after(&c, 0, Duration::from_secs(20));
    wait_fence(&rt, &db, e1);
    let at = |n: u64, what: &str| {
        let from = beats.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(20), what, || {
            (beats.load(Ordering::SeqCst) >= from + n).then_some(())
        });
    };
    at(3, "beats from a healthy controller");

    // Hold the fence row: no write under the fence can commit.
    let mut lock = rt.block_on(db.conn());
    rt.block_on(async {
        lock.query_drop("START TRANSACTION").await.unwrap();
        lock.query_drop("SELECT * FROM epoch_fence WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
    });
    // One beat may be on its way when the lock is taken; after an interval and a health
    // bound (1 s) no more come.
    std::thread::sleep(Duration::from_millis(2000));
    let held = beats.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        beats.load(Ordering::SeqCst),
        held,
        "no beat while writes under the fence cannot commit"
    );
    let w = c.worker_index(&first);
    let log = c.workers[w].log_text();
    assert!(
        log.contains("does not accept writes under the fence"),
        "the reason is logged: {log}"
    );
    assert!(
        !log.contains("0b6c1e2a-uuid-secret"),
        "the URL's secret is never logged"
    );
    rt.block_on(async {
        lock.query_drop("ROLLBACK").await.unwrap();
    });
    drop(lock);
    at(3, "beats again once MySQL accepts writes");

    // The next controller takes the beats over.
    c.workers[w].kill9();
    let (_, second) = controller_after(&c, e1, Duration::from_secs(20));
    assert_ne!(second, first);
    at(3, "beats from the new controller");
    rt.block_on(db.drop_db());
}

/// Issue 15, item 2: with `distinct_locations = true`, w1 and w2 in fra and w3 in ams, and
/// confirmations 2, every recorded flip was confirmed by a round that includes ams.
#[test]
fn distinct_locations_put_ams_in_every_round() {
    use mysql_async::prelude::Queryable;

    let _serial = testkit::cluster::serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("cluster_locations"));
    let port = testkit::cluster::free_port();
    let mut target = Some(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    rt.block_on(db.exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
         (1,'svc','tcp','{{\"address\":\"127.0.0.1:{port}\"}}',1,0)"
    )));
    let mut c = Cluster::builder(crate::BIN, &db.url)
        .controller_keys(keys([
            ("confirmations", 2.into()),
            ("distinct_locations", true.into()),
        ]))
        .start();
    for location in ["fra", "fra", "ams"] {
        c.add_worker(keys([("location", location.into())]));
    }
    controller_after(&c, 0, Duration::from_secs(20));
    // Every worker connected (and its location known): before that, a round can only be
    // made of the workers there are.
    wait_until(
        Duration::from_secs(30),
        "results from all three workers",
        || {
            let n: Option<u64> = rt.block_on(async {
                let mut conn = db.conn().await;
                conn.query_first(
                    "SELECT COUNT(DISTINCT node_id) FROM check_results WHERE check_id = 1",
                )
                .await
                .unwrap()
            });
            (n == Some(3)).then_some(())
        },
    );
    let events = |rt: &tokio::runtime::Runtime| -> Vec<(String, Option<String>)> {
        rt.block_on(async {
            let mut conn = db.conn().await;
            conn.query("SELECT type, confirmed_by FROM check_events WHERE check_id = 1 ORDER BY id")
                .await
                .unwrap()
        })
    };
    for flips in 1..=6usize {
        if target.is_some() {
            target = None;
        } else {
            target = Some(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
        }
        wait_until(Duration::from_secs(30), "the flip to be recorded", || {
            (events(&rt).len() >= flips).then_some(())
        });
    }
    let recorded = events(&rt);
    assert!(recorded.len() >= 6, "{recorded:?}");
    for (kind, by) in &recorded {
        let by = by.clone().unwrap_or_default();
        let members: Vec<&str> = by.split(',').filter(|m| !m.is_empty()).collect();
        assert_eq!(members.len(), 2, "{kind}: {by}");
        assert!(
            members.contains(&"w3"),
            "{kind} confirmed by {by}, without ams"
        );
    }
    drop(target);
    rt.block_on(db.drop_db());
}
