//! A busy worker is not a dead worker (issue 9, fix 6), with real processes: one viewserver
//! and one worker (which is also the controller) with `num_threads = 2`, four tcp checks
//! against a loopback port that an nftables rule black-holes, so every run waits out its
//! 10 s timeout. The controller must keep seeing the worker through a window longer than its
//! 6 s worker timeout, and the worker never runs more than its two permits allow.
//!
//! Needs root and nftables (as the partition tests); without them the test fails and says so.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gobearmon::config::Secret;
use gobearmon::rpc::RpcClient;
use gobearmon::rpc::sign::Signer;
use testkit::cluster::{Cluster, SECRET, wait_until};
use testkit::config::keys;
use testkit::db::TestDb;
use testkit::partition::nft_apply;

/// An nftables table of this test that drops every packet sent to `127.0.0.1:port`, so a
/// connection attempt hangs (no answer at all, not a refusal). Removed on drop.
struct BlackHole {
    table: String,
}

impl BlackHole {
    fn new(port: u16) -> BlackHole {
        sweep_stale();
        let table = format!("gbm_bh_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  ip daddr 127.0.0.1 tcp dport {port} drop\n }}\n}}\n"
        );
        nft_apply(&rules);
        let hole = BlackHole { table };
        let tried = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_millis(500),
        );
        assert!(
            matches!(&tried, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "the nftables rule did not black-hole 127.0.0.1:{port}: {tried:?}"
        );
        hole
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Removes tables of this test left by a test process that was killed outright.
fn sweep_stale() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet gbm_bh_") else {
            continue;
        };
        let pid = name.split('_').next().unwrap_or_default();
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &format!("gbm_bh_{name}")])
                .status();
        }
    }
}

/// The controller's `/status` JSON, signed with the cluster secret.
fn status(
    rt: &tokio::runtime::Runtime,
    client: &RpcClient,
    addr: &str,
) -> Option<serde_json::Value> {
    rt.block_on(client.get(addr, "/status", Duration::from_secs(2)))
        .ok()
}

#[test]
fn a_worker_with_every_permit_waiting_on_black_holed_targets_stays_alive() {
    let _serial = testkit::cluster::serial();
    gobearmon::tlsutil::install_default_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, _store) = rt.block_on(TestDb::installed("busy_worker"));
    let port = testkit::cluster::free_port();
    let _hole = BlackHole::new(port);
    let mut c = Cluster::builder(crate::BIN, &db.url)
        .controller_keys(keys([("confirmations", 1.into())]))
        .start();
    c.add_worker(keys([("num_threads", 2.into())]));
    let ctl = &c.controller_addrs[0];
    c.wait_acting(0, true, Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "the worker to connect", || {
        let (code, _) = c.get(&c.worker_addrs[0], "/ready")?;
        (code == 200).then_some(())
    });
    let client = RpcClient::with_tls(
        Arc::new(Signer::cluster(&Secret::new(SECRET), "tester")),
        None,
    )
    .unwrap();

    // Twice as many checks as permits, each run held 10 s by the black hole.
    let data = format!(r#"{{"address":"127.0.0.1:{port}","timeout":10}}"#);
    rt.block_on(db.exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
         (1,'bh1','tcp','{data}',1,0),(2,'bh2','tcp','{data}',1,0),\
         (3,'bh3','tcp','{data}',1,0),(4,'bh4','tcp','{data}',1,0);"
    )));
    wait_until(Duration::from_secs(20), "runs handed to the worker", || {
        let s = status(&rt, &client, ctl)?;
        let w = s["workers"].as_array()?.first()?.clone();
        (w["checks_in_flight"].as_u64()? > 0).then_some(())
    });
    wait_until(Duration::from_secs(10), "both permits taken", || {
        (c.metric(&c.worker_addrs[0], "gobearmon_checks_running")? == 2.0).then_some(())
    });

    // Longer than the controller's 6 s worker timeout plus its 1 s liveness tick, and less
    // than the runs' 10 s timeout: every permit stays taken the whole time.
    let window = Duration::from_secs(9);
    let start = Instant::now();
    let mut looks = 0;
    while start.elapsed() < window {
        let s = status(&rt, &client, ctl).expect("the controller answers /status");
        let w = &s["workers"][0];
        assert_eq!(w["id"], "w1", "{s}");
        assert_eq!(
            w["stale"],
            false,
            "after {:?} the controller took the busy worker for dead: {s}",
            start.elapsed()
        );
        for check in s["checks"].as_array().unwrap() {
            assert_eq!(check["insufficient_quorum"], false, "{check}");
        }
        // Runs the worker accepted: handed out and no longer queued at the controller.
        let accepted = w["checks_in_flight"].as_u64().unwrap() - w["queued"].as_u64().unwrap();
        assert!(
            accepted <= 2,
            "the worker accepted {accepted} runs on 2 permits: {s}"
        );
        let running = c
            .metric(&c.worker_addrs[0], "gobearmon_checks_running")
            .unwrap();
        assert!(running <= 2.0, "{running} runs on 2 permits");
        looks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(looks > 10, "the status was read {looks} times only");
    let log = c.workers[0].log_text();
    assert!(
        !log.contains("worker silent"),
        "the controller declared its busy worker silent:\n{log}"
    );
    drop(c);
    rt.block_on(db.drop_db());
}
