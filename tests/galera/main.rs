//! The store on a three-node MariaDB Galera cluster on loopback (testkit::galera, real
//! `mariadbd` processes with `galera-4`), with the built binary as separate processes: a
//! list that mixes the cluster with an unrelated server refuses to start; a deposed
//! controller writing through one node while its successor writes through another is
//! refused; `kill -9` of the node in use during a burst of flips, with a controller failover
//! at the same moment, loses and repeats nothing; the killed node rejoins by IST holding
//! every flip.
//!
//! One test function, in phases, so the cluster (about 30 s to start) is started once.

use std::process::Command;
use std::time::{Duration, Instant};

use gobearmon::config::Secret;
use gobearmon::model::{Epoch, NodeId};
use gobearmon::store::fence::{self, FencedTx, Raise};
use gobearmon::store::{Store, StoreError};
use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, keys};
use testkit::galera::Galera;
use testkit::notify::{Behaviour, Receiver};
use testkit::probe::tcp::Port;

const BIN: &str = env!("CARGO_BIN_EXE_gobearmon");
const DB: &str = "gbm_t_galera";
/// Checks that go down together.
const BURST: i64 = 20;

#[test]
fn galera_cluster_as_the_store() {
    let mut g = Galera::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    g.root_exec(
        0,
        &format!("DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}"),
    );
    let urls: Vec<String> = (0..3).map(|i| g.url(i, DB)).collect();
    rt.block_on(async {
        let store = store(&urls[0]);
        gobearmon::store::schema::install(&store).await.unwrap();
        store.close().await;
    });

    a_list_mixing_the_cluster_with_another_server_refuses_to_start(&rt, &urls);
    a_deposed_controller_on_one_node_cannot_write_past_its_successor_on_another(&rt, &urls);
    a_killed_node_and_a_killed_controller_lose_and_repeat_no_flip(&rt, &mut g, &urls);
}

fn store(url: &str) -> Store {
    Store::new(&[Secret::new(url.to_string())]).unwrap()
}

/// Phase 1: `[controller] database` naming a Galera node and the machine's own MariaDB.
fn a_list_mixing_the_cluster_with_another_server_refuses_to_start(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
) {
    let plain = rt.block_on(testkit::db::TestDb::empty("galera_mixed"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w1.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\npassword = \"{}\"\n[worker]\nid = \"w1\"\nview_addr = [\"127.0.0.1:9\"]\n\
             addr = \"127.0.0.1:{}\"\n[controller]\naddr = \"127.0.0.1:{}\"\n\
             database = [\"{}\", \"{}\"]\n",
            testkit::cluster::SECRET,
            testkit::ports::free_port(),
            testkit::ports::free_port(),
            urls[0],
            plain.url,
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("URL #1 is not a node of the Galera cluster"),
        "{stderr}"
    );
    rt.block_on(plain.drop_db());
}

/// Phase 2: epoch 1 holds a fenced transaction open on node 2 while epoch 2 is raised
/// through node 3; the stale commit is refused and its row is nowhere.
fn a_deposed_controller_on_one_node_cannot_write_past_its_successor_on_another(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
) {
    rt.block_on(async {
        let (on2, on3) = (store(&urls[1]), store(&urls[2]));
        let (w1, w2) = (NodeId("w1".into()), NodeId("w2".into()));
        let e1 = Epoch(fence::current(&on2).await.unwrap().0 + 1);
        let e2 = Epoch(e1.0 + 1);
        assert_eq!(fence::raise(&on2, e1, &w1).await.unwrap(), Raise::Raised);
        // w1 still believes it is controller and opens a fenced write through node 2.
        let mut stale = FencedTx::begin(&on2, e1, &w1).await.unwrap();
        stale
            .tx()
            .query_drop(
                "INSERT INTO check_events (check_id, type, time, message) \
                 VALUES (999, 'offline', UTC_TIMESTAMP(), 'stale write')",
            )
            .await
            .unwrap();
        // Meanwhile its successor takes control through node 3.
        let raised = fence::raise(&on3, e2, &w2).await.unwrap();
        assert_eq!(raised, Raise::Raised);
        let committed = stale.commit().await;
        assert!(
            committed.is_err(),
            "the deposed controller's write committed on node 2"
        );
        // A new attempt by w1 through node 2 sees the raise and is fenced.
        match FencedTx::begin(&on2, e1, &w1).await {
            Err(StoreError::Fenced { stored, .. }) => assert_eq!(stored, e2),
            Ok(_) => panic!("epoch {e1} could begin after epoch {e2} was raised"),
            Err(e) => panic!("expected Fenced, got {e}"),
        }
        for url in urls {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let stale_rows: Option<i64> = c
                .query_first("SELECT COUNT(*) FROM check_events WHERE check_id = 999")
                .await
                .unwrap();
            assert_eq!(stale_rows, Some(0), "the stale row is on {url}");
            let epoch: Option<u64> = c
                .query_first("SELECT epoch FROM epoch_fence WHERE id = 1")
                .await
                .unwrap();
            assert_eq!(epoch, Some(e2.0), "{url}");
            let _ = c.disconnect().await;
        }
        on2.close().await;
        on3.close().await;
    });
}

/// Phase 3: a real cluster with `database = [n1, n2, n3]`. `BURST` checks go down; at the
/// same moment node 1 (the one in use) and the acting controller are killed. Every outage
/// is recorded and paged once; node 1 rejoins by IST with every flip; the recoveries are
/// paged once each.
fn a_killed_node_and_a_killed_controller_lose_and_repeat_no_flip(
    rt: &tokio::runtime::Runtime,
    g: &mut Galera,
    urls: &[String],
) {
    rt.block_on(async {
        let mut c = mysql_async::Conn::from_url(urls[0].as_str()).await.unwrap();
        c.query_drop("DELETE FROM check_events; UPDATE epoch_fence SET epoch = 0, controller = ''")
            .await
            .unwrap();
        let _ = c.disconnect().await;
    });
    let hook = rt.block_on(Receiver::start(Behaviour::Status(200)));
    let admin = rt.block_on(Receiver::start(Behaviour::Status(200)));
    let mut ports: Vec<Port> = (0..BURST).map(|_| Port::new()).collect();
    let mut seed = format!(
        "INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');",
        hook.url("/hook")
    );
    for (i, p) in ports.iter().enumerate() {
        let id = i as i64 + 1;
        seed.push_str(&format!(
            "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
             ({id},'c{id}','tcp','{{\"address\":\"127.0.0.1:{}\",\"timeout\":2}}',1,0);
             INSERT INTO alerts (check_id,contact_id,type) VALUES ({id},1,'both');",
            p.port
        ));
    }
    g.root_exec(0, &format!("USE {DB}; {seed}"));
    let mut cluster = Cluster::builder(BIN, &urls[0])
        .databases(urls)
        .viewservers(1)
        .workers(2)
        .controller_keys(keys([
            // The failover leaves one worker: one vote flips.
            ("confirmations", 1.into()),
            // One webhook per flip, however many flip together (storms are not the subject).
            ("storm_flips", 100_000.into()),
            ("admin_webhook", admin.url("/admin").into()),
            ("db_down_alert", Ms(10_000).into()),
            ("delivery_backoff", Ms(200).into()),
            ("delivery_backoff_max", Ms(1000).into()),
        ]))
        .start();
    let controller = wait_until(Duration::from_secs(30), "a controller", || {
        match cluster.current() {
            Some((e, Some(node))) if e > 0 => Some(node),
            _ => None,
        }
    });
    let acting = cluster.worker_index(&controller);
    cluster.wait_acting(acting, true, Duration::from_secs(20));
    for w in &cluster.worker_addrs {
        wait_until(Duration::from_secs(30), "workers ready", || {
            let (code, _) = cluster.get(w, "/ready")?;
            (code == 200).then_some(())
        });
    }
    // The burst: as the targets go down, node 1 (the one in use) and the controller die
    // together, so every flip is decided and written after the kills.
    for p in &mut ports {
        p.down();
    }
    g.kill9(0);
    cluster.workers[acting].kill9();
    let started = Instant::now();
    let pages = |state: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = hook
            .received()
            .iter()
            .filter_map(|r| {
                let b: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                (b["new_status"] == state).then(|| b["check"]["id"].as_i64().unwrap_or(0))
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    wait_until(Duration::from_secs(90), "every outage paged", || {
        (pages("offline").len() >= BURST as usize).then_some(())
    });
    eprintln!(
        "all {BURST} outages paged {:?} after the kills",
        started.elapsed()
    );
    let all: Vec<i64> = (1..=BURST).collect();
    assert_eq!(pages("offline"), all, "each outage paged once");
    let events = |i: usize| -> Vec<(i64, String)> {
        let url = urls[i].clone();
        rt.block_on(async move {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let rows = c
                .query("SELECT check_id, type FROM check_events ORDER BY check_id, id")
                .await
                .unwrap();
            let _ = c.disconnect().await;
            rows
        })
    };
    let offline: Vec<(i64, String)> = all.iter().map(|&id| (id, "offline".into())).collect();
    assert_eq!(events(1), offline, "each outage recorded once");

    // Node 1 rejoins (IST) while monitoring goes on, and holds every flip.
    g.restart(0);
    assert_eq!(events(0), offline, "the rejoined node holds every flip");
    for p in &mut ports {
        p.up();
    }
    wait_until(Duration::from_secs(90), "every recovery paged", || {
        (pages("online").len() >= BURST as usize).then_some(())
    });
    assert_eq!(pages("online"), all, "each recovery paged once");
    assert_eq!(pages("offline"), all, "no outage paged twice");

    // Phase 4: the node in use hangs (SIGSTOP) as the targets go down again: the store
    // leaves it within seconds, and every outage is paged once.
    let frozen = node_in_use(g);
    g.freeze(frozen);
    for p in &mut ports {
        p.down();
    }
    let started = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "every outage paged past the frozen node",
        || (pages("offline").len() >= 2 * BURST as usize).then_some(()),
    );
    eprintln!(
        "node {} frozen: all {BURST} outages paged {:?} later",
        frozen + 1,
        started.elapsed()
    );
    g.thaw(frozen);
    let twice: Vec<i64> = all.iter().flat_map(|&id| [id, id]).collect();
    assert_eq!(pages("offline"), twice, "each new outage paged once");

    // Phase 5: two of three nodes die; the survivor has no quorum, so no node is ready.
    // The admin is told once, by the admin webhook, which needs no database; and told
    // once more when the operator bootstraps the survivor and a node answers again.
    let in_use = node_in_use(g);
    let other = (in_use + 1) % 3;
    g.kill9(in_use);
    g.kill9(other);
    let db_alerts = |event: &str| -> usize {
        admin
            .received()
            .iter()
            .filter(|r| {
                let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                b["kind"] == "database_unreachable" && b["event"] == event
            })
            .count()
    };
    let lost = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the admin told of the database",
        || (db_alerts("opened") == 1).then_some(()),
    );
    eprintln!("quorum lost: the admin was told {:?} later", lost.elapsed());
    // The operator's decision: the survivor becomes the primary component on its own.
    let survivor = 3 - in_use - other;
    g.root_exec(
        survivor,
        "SET GLOBAL wsrep_provider_options = 'pc.bootstrap=YES'",
    );
    wait_until(
        Duration::from_secs(30),
        "the admin told of the return",
        || (db_alerts("resolved") == 1).then_some(()),
    );
    assert_eq!(db_alerts("opened"), 1, "told once");
}

/// The node the acting controller writes through: the one with the most connections of the
/// test user (every node has the watchers' own).
fn node_in_use(g: &Galera) -> usize {
    let counts: Vec<i64> = (0..3)
        .map(|i| {
            let url = g.root_url(i);
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
                        let n: Option<i64> = c
                            .query_first(
                                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                             WHERE USER = 'gbm_test'",
                            )
                            .await
                            .unwrap();
                        let _ = c.disconnect().await;
                        n.unwrap_or(0)
                    })
            })
            .join()
            .unwrap()
        })
        .collect();
    (0..3).max_by_key(|&i| counts[i]).unwrap()
}
