//! Node identity (issue 10), with the built binary as separate processes, real MariaDB and
//! real sockets: node keys, who may say what, signed replies, replays, hostile clients and the
//! hand-over request.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gobearmon::config::Secret;
use gobearmon::rpc::RpcClient;
use gobearmon::rpc::sign::{Signer, node_key_hex};
use gobearmon::rpc::work::PATH_RESULTS;
use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, Proc, SECRET, free_port, serial, wait_until};
use testkit::config::{ControllerSection, Ms, NodeFile, ViewserverSection, WorkerSection, keys};
use testkit::db::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toml::Table;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn count(rt: &tokio::runtime::Runtime, db: &TestDb, sql: &str) -> u64 {
    rt.block_on(async {
        let mut c = db.conn().await;
        c.query_first::<u64, _>(sql).await.unwrap().unwrap_or(0)
    })
}

fn node_key(id: &str) -> String {
    node_key_hex(&Secret::new(SECRET), id)
}

fn tcp_check(rt: &tokio::runtime::Runtime, db: &TestDb, id: i64, port: u16) {
    rt.block_on(db.exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
         ({id},'svc-{id}','tcp','{{\"address\":\"127.0.0.1:{port}\"}}',1,0)"
    )));
}

fn metric_or_zero(c: &Cluster, w: usize, name: &str) -> f64 {
    c.metric(&c.worker_addrs[w], name).unwrap_or(0.0)
}

/// A probe-only worker holding only its node key runs checks and its results are recorded.
/// The same key under another id is refused and its results count for nothing; a node key
/// cannot post results in another worker's name, cannot touch the group's Raft paths, and a
/// node-key worker with a `[controller]` section is never named controller.
#[test]
fn a_probe_worker_with_its_node_key_speaks_only_as_itself() {
    let _serial = serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("identity_key"));
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp_check(&rt, &db, 1, target.local_addr().unwrap().port());
    let mut c = Cluster::builder(crate::BIN, &db.url).workers(1).start();
    c.wait_acting(0, true, Duration::from_secs(30));
    let (epoch, _) = c.current().unwrap();

    let key = node_key("p1");
    let p1 = c.add_custom_worker(
        "p1",
        Some(Table::new()),
        keys([("key", key.clone().into())]),
        None,
    );
    wait_until(
        Duration::from_secs(30),
        "p1's results to be recorded",
        || {
            (count(
                &rt,
                &db,
                "SELECT COUNT(*) FROM check_results WHERE node_id = 'p1'",
            ) > 0)
                .then_some(())
        },
    );
    assert!(
        metric_or_zero(&c, p1, "gobearmon_heartbeats_answered_total") > 0.0,
        "p1's heartbeats are answered"
    );

    // p1's key under the id w9: every heartbeat and poll is refused.
    let liar = c.add_custom_worker(
        "w9",
        Some(Table::new()),
        keys([("key", key.clone().into())]),
        None,
    );
    wait_until(
        Duration::from_secs(20),
        "w9's heartbeats to be refused",
        || (metric_or_zero(&c, liar, "gobearmon_heartbeats_failed_total") >= 5.0).then_some(()),
    );
    assert_eq!(
        metric_or_zero(&c, liar, "gobearmon_heartbeats_answered_total"),
        0.0
    );
    let log = c.workers[liar].log_text();
    assert!(
        log.contains("the viewserver group refused this node's heartbeat") && log.contains("401"),
        "the operator is told why: {log}"
    );

    // Straight at the controller: results signed with p1's key, but in w1's name.
    let forger = RpcClient::with_tls(
        Arc::new(Signer::node_key(&Secret::new(key.clone()), "w1").unwrap()),
        None,
    )
    .unwrap();
    let results = serde_json::json!({
        "node": "w1",
        "epoch": epoch,
        "results": [{"check": 1, "ticket": 0, "epoch": epoch, "status": "offline", "message": "forged", "duration_ms": 1}]
    });
    let err = rt
        .block_on(forger.post::<_, serde_json::Value>(
            &c.controller_addrs[0],
            PATH_RESULTS,
            &results,
            Duration::from_secs(5),
        ))
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    // As itself, p1's key is let through to the controller (the 401 above is the name).
    let own = RpcClient::with_tls(
        Arc::new(Signer::node_key(&Secret::new(key.clone()), "p1").unwrap()),
        None,
    )
    .unwrap();
    let empty = serde_json::json!({ "node": "p1", "epoch": epoch, "results": [] });
    // Signed as p1 but naming w1 in the body: refused as well.
    let named = serde_json::json!({ "node": "w1", "epoch": epoch, "results": [] });
    let err = rt
        .block_on(own.post::<_, serde_json::Value>(
            &c.controller_addrs[0],
            PATH_RESULTS,
            &named,
            Duration::from_secs(5),
        ))
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let answer = rt.block_on(own.post::<_, serde_json::Value>(
        &c.controller_addrs[0],
        PATH_RESULTS,
        &empty,
        Duration::from_secs(5),
    ));
    assert!(
        answer.is_ok() || answer.as_ref().unwrap_err().status().map(|s| s.as_u16()) == Some(409),
        "{answer:?}"
    );
    // The group's Raft paths take only members.
    for path in [
        "/raft/append",
        "/raft/vote",
        "/raft/snapshot",
        "/raft/state",
    ] {
        let err = rt
            .block_on(own.post::<_, serde_json::Value>(
                &c.vs_addrs[0],
                path,
                &serde_json::json!({}),
                Duration::from_secs(5),
            ))
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{path}: {err}");
    }
    assert_eq!(
        count(
            &rt,
            &db,
            "SELECT COUNT(*) FROM check_results WHERE node_id IN ('w9', 'w1') AND message = 'forged'"
        ),
        0
    );
    assert_eq!(
        count(
            &rt,
            &db,
            "SELECT COUNT(*) FROM check_results WHERE node_id = 'w9'"
        ),
        0,
        "w9's results count for nothing"
    );

    // A node key with a [controller] section: it says it could be controller, and is not
    // believed. With the only trusted worker gone, the group names nobody.
    let caddr = format!("127.0.0.1:{}", free_port());
    let p2 = c.add_custom_worker(
        "p2",
        Some(Table::new()),
        keys([("key", node_key("p2").into())]),
        Some(ControllerSection {
            addr: caddr,
            database: vec![db.url.clone()],
            reload_period: None,
            extra: Table::new(),
        }),
    );
    wait_until(Duration::from_secs(20), "p2 to heartbeat", || {
        (metric_or_zero(&c, p2, "gobearmon_heartbeats_answered_total") > 2.0).then_some(())
    });
    c.workers[0].kill9();
    let (next, named) = wait_until(
        Duration::from_secs(30),
        "the group to replace w1",
        || match c.current() {
            Some((e, named)) if e > epoch => Some((e, named)),
            _ => None,
        },
    );
    assert_eq!(named, None, "epoch {next} names nobody, not p2");
    assert!(
        c.workers[p2]
            .log_text()
            .contains("can never be named controller"),
        "p2 says why its [controller] has no effect"
    );
    drop(target);
    rt.block_on(db.drop_db());
}

/// A relay between a worker and the group that rewrites the epoch in heartbeat replies:
/// the worker refuses every rewritten reply (naming the peer), stops acting when its lease
/// runs out, and the epoch fence never moves; when the relay is honest again the worker acts
/// again under the same epoch.
#[test]
fn a_relay_that_rewrites_the_epoch_in_a_reply_is_refused() {
    let _serial = serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("identity_relay"));
    let dir = tempfile::tempdir().unwrap();
    let real = format!("127.0.0.1:{}", free_port());
    let relay = format!("127.0.0.1:{}", free_port());
    // The member knows itself by the relay's address, as behind a NAT or a proxy.
    let vs_config = dir.path().join("vs1.toml");
    NodeFile {
        viewserver: Some(ViewserverSection {
            id: 1,
            addr: real.clone(),
            peers: vec![relay.clone()],
            data_dir: dir.path().join("vs1-data"),
            controller_timeout: Some(Ms(2000)),
            raft_heartbeat: Some(Ms(100)),
            raft_election_timeout: Some(Ms(500)),
        }),
        ..NodeFile::with_secret(SECRET)
    }
    .write(&vs_config);
    let waddr = format!("127.0.0.1:{}", free_port());
    let caddr = format!("127.0.0.1:{}", free_port());
    let w_config = dir.path().join("w1.toml");
    NodeFile {
        worker: Some(WorkerSection {
            id: "w1".into(),
            addr: waddr.clone(),
            view_addr: vec![relay.clone()],
            heartbeat_interval: Some(Ms(250)),
            lease: Some(Ms(1500)),
            disconnect_pause: None,
            extra: Table::new(),
        }),
        controller: Some(ControllerSection {
            addr: caddr,
            database: vec![db.url.clone()],
            reload_period: Some(Ms(500)),
            extra: Table::new(),
        }),
        ..NodeFile::with_secret(SECRET)
    }
    .write(&w_config);

    let rewrite = Arc::new(AtomicBool::new(false));
    let rewritten = Arc::new(AtomicU64::new(0));
    let relay_listener = rt.block_on(tokio::net::TcpListener::bind(&relay)).unwrap();
    rt.spawn(run_relay(
        relay_listener,
        real.clone(),
        rewrite.clone(),
        rewritten.clone(),
    ));
    let bin = std::path::Path::new(crate::BIN);
    let mut vs = Proc::spawn(bin, "vs1", vs_config, dir.path().join("vs1.log"), None);
    let mut w1 = Proc::spawn(bin, "w1", w_config, dir.path().join("w1.log"), None);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap();
    let metric = |name: &str| -> Option<f64> {
        let text = http
            .get(format!("http://{waddr}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok())?
        })
    };
    let acting = |want: f64| {
        wait_until(Duration::from_secs(30), "w1's acting state", || {
            (metric("gobearmon_is_controller")? == want).then_some(())
        })
    };
    acting(1.0);
    let fence = wait_until(Duration::from_secs(20), "the fence to be raised", || {
        let e = rt.block_on(db.fence_epoch());
        (e > 0).then_some(e)
    });

    rewrite.store(true, Ordering::SeqCst);
    acting(0.0);
    assert!(
        rewritten.load(Ordering::SeqCst) > 0,
        "the relay rewrote replies"
    );
    let log = std::fs::read_to_string(dir.path().join("w1.log")).unwrap();
    assert!(
        log.contains("refused a reply not signed under this node's key")
            && log.contains(&format!("peer=\"{relay}\"")),
        "the refusal names the peer: {log}"
    );
    assert_eq!(
        rt.block_on(db.fence_epoch()),
        fence,
        "the fence did not move"
    );
    let seen = metric("gobearmon_view_epoch").unwrap();
    assert!(seen < 1e6, "the worker never took the forged epoch: {seen}");

    rewrite.store(false, Ordering::SeqCst);
    acting(1.0);
    assert_eq!(rt.block_on(db.fence_epoch()), fence);
    w1.kill9();
    vs.kill9();
    rt.block_on(db.drop_db());
}

/// An HTTP relay: forwards every request unchanged (Host header included) to `upstream`; in
/// rewrite mode it sets the view's epoch in heartbeat replies to u64::MAX.
async fn run_relay(
    listener: tokio::net::TcpListener,
    upstream: String,
    rewrite: Arc<AtomicBool>,
    rewritten: Arc<AtomicU64>,
) {
    use axum::body::Bytes;
    use axum::extract::Request;
    use axum::response::{IntoResponse, Response};
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let handler = move |request: Request| {
        let client = client.clone();
        let upstream = upstream.clone();
        let rewrite = rewrite.clone();
        let rewritten = rewritten.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let mut out = client.request(parts.method.clone(), format!("http://{upstream}{path}"));
            for (name, value) in &parts.headers {
                if name != "content-length" {
                    out = out.header(name, value);
                }
            }
            let Ok(answer) = out.body(body).send().await else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            let status = answer.status();
            let headers = answer.headers().clone();
            let mut bytes: Bytes = answer.bytes().await.unwrap_or_default();
            if rewrite.load(Ordering::SeqCst)
                && path == "/view/heartbeat"
                && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                v["view"]["epoch"] = serde_json::json!(u64::MAX);
                bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
                rewritten.fetch_add(1, Ordering::SeqCst);
            }
            let mut response = Response::new(axum::body::Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
    };
    let app = axum::Router::new().fallback(handler);
    let _ = axum::serve(listener, app).await;
}

fn send_raw(
    http: &reqwest::blocking::Client,
    to: &str,
    host: &str,
    signed: &gobearmon::rpc::sign::Signed,
    body: &[u8],
) -> (u16, String) {
    let mut request = http
        .post(format!("http://{to}/view/heartbeat"))
        .header("host", host)
        .header("content-type", "application/json");
    for (name, value) in signed.headers() {
        request = request.header(name, value);
    }
    let answer = request.body(body.to_vec()).send().unwrap();
    (answer.status().as_u16(), answer.text().unwrap_or_default())
}

/// A request captured on one member and replayed to another is refused (its destination is
/// signed); one replayed to a member restarted within the replay window is refused too (the
/// member refuses timestamps older than its start, so its empty nonce cache cannot be used).
#[test]
fn captured_requests_cannot_be_replayed_to_another_member_or_after_a_restart() {
    let _serial = serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("identity_replay"));
    let mut c = Cluster::builder(crate::BIN, &db.url)
        .viewservers(3)
        .workers(1)
        .start();
    wait_until(Duration::from_secs(30), "a controller", || {
        match c.current() {
            Some((_, Some(n))) => Some(n),
            _ => None,
        }
    });
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap();
    let tester = Signer::cluster(&Secret::new(SECRET), "tester");
    let body = serde_json::to_vec(&serde_json::json!({
        "node": "tester", "controller_addr": null, "up_since_ms": 0, "stepping_down": false
    }))
    .unwrap();
    let (vs1, vs2, vs3) = (&c.vs_addrs[0], &c.vs_addrs[1], &c.vs_addrs[2]);
    let captured = tester.sign("POST", vs1, "/view/heartbeat", &body);
    assert_eq!(send_raw(&http, vs1, vs1, &captured, &body).0, 200);
    // To vs2, with the Host header it was captured with, and with vs2's own.
    let (status, why) = send_raw(&http, vs2, vs1, &captured, &body);
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("not this node"), "{why}");
    let (status, why) = send_raw(&http, vs2, vs2, &captured, &body);
    assert_eq!(status, 401, "{why}");

    // Accepted by vs3, which then restarts; replayed at once, well within the window.
    let captured = tester.sign("POST", vs3, "/view/heartbeat", &body);
    assert_eq!(send_raw(&http, vs3, vs3, &captured, &body).0, 200);
    c.viewservers[2].kill9();
    c.viewservers[2].start();
    wait_until(Duration::from_secs(20), "vs3 to serve again", || {
        c.view(2).map(|_| ())
    });
    let (status, why) = send_raw(&http, vs3, vs3, &captured, &body);
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("older than this node's start"), "{why}");
    // A fresh request is still fine.
    let fresh = tester.sign("POST", vs3, "/view/heartbeat", &body);
    assert_eq!(send_raw(&http, vs3, vs3, &fresh, &body).0, 200);
    rt.block_on(db.drop_db());
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 500 connections that send their headers a byte a second, one client streaming a 100 MB
/// body without a signature and one declaring 100 MB under a valid signature, all against
/// the only viewserver member: the member drops the slow ones at its header timeout and
/// refuses both bodies unread; the worker's heartbeats keep being answered, the controller
/// does not change, and the member's memory stays flat.
#[test]
fn slow_and_oversized_clients_do_not_stop_heartbeats() {
    let _serial = serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("identity_hostile"));
    let c = Cluster::builder(crate::BIN, &db.url).workers(1).start();
    c.wait_acting(0, true, Duration::from_secs(30));
    let view_before = c.current().unwrap();
    let addr = c.vs_addrs[0].clone();
    let pid = c.viewservers[0].pid().unwrap();
    let rss_before = rss_kib(pid);
    let answered_before = metric_or_zero(&c, 0, "gobearmon_heartbeats_answered_total");

    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut slow = Vec::new();
    for _ in 0..500 {
        let (addr, stop, dropped) = (addr.clone(), stop.clone(), dropped.clone());
        slow.push(rt.spawn(async move {
            let head = b"POST /view/heartbeat HTTP/1.1\r\nHost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            'connect: while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                for b in head.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break 'connect;
                    }
                    if s.write_all(&[*b]).await.is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue 'connect;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    // 100 MB, unsigned, chunked: refused from its headers. The answer is read while the body
    // is still being written (a server that closes on unread data resets the connection).
    let big = {
        let addr = addr.clone();
        rt.spawn(async move {
            let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut rx, mut tx) = s.into_split();
            let reader = tokio::spawn(async move {
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(10), rx.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&answer).into_owned()
            });
            let mut sent = 0usize;
            if tx
                .write_all(b"POST /view/heartbeat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .is_ok()
            {
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..100 {
                    let head = format!("{:x}\r\n", chunk.len());
                    if tx.write_all(head.as_bytes()).await.is_err()
                        || tx.write_all(&chunk).await.is_err()
                        || tx.write_all(b"\r\n").await.is_err()
                    {
                        break;
                    }
                    sent += chunk.len();
                }
            }
            (sent, reader.await.unwrap_or_default())
        })
    };
    // 100 MB declared under a valid signature: refused by its length, unread.
    let signer = Signer::cluster(&Secret::new(SECRET), "tester");
    let declared = {
        let addr = addr.clone();
        let signed = signer.sign("POST", &addr, "/view/heartbeat", b"");
        rt.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut head = format!(
                "POST /view/heartbeat HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
                100 * 1024 * 1024
            );
            for (name, value) in signed.headers() {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            String::from_utf8_lossy(&answer[..n]).into_owned()
        })
    };

    let started = Instant::now();
    let mut rss_peak = rss_before;
    while started.elapsed() < Duration::from_secs(25) {
        rss_peak = rss_peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    let answered = metric_or_zero(&c, 0, "gobearmon_heartbeats_answered_total") - answered_before;
    let view_after = c.current().unwrap();
    stop.store(true, Ordering::Relaxed);
    let (big_sent, big_answer) = rt.block_on(big).unwrap();
    let declared_answer = rt.block_on(declared).unwrap();
    for t in slow {
        let _ = rt.block_on(t);
    }
    let grew_kib = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "measured: {answered} heartbeats answered in 25 s under attack, {} slow connections dropped by the header timeout, member RSS {rss_before} KiB before, peak {rss_peak} KiB (+{grew_kib} KiB); the 100 MB client got through {big_sent} bytes",
        dropped.load(Ordering::Relaxed)
    );
    assert!(
        answered >= 40.0,
        "heartbeats kept flowing: {answered} in 25 s"
    );
    assert_eq!(view_after, view_before, "no controller change");
    assert!(
        dropped.load(Ordering::Relaxed) >= 500,
        "every slow connection was dropped at the header timeout"
    );
    assert!(big_answer.starts_with("HTTP/1.1 401"), "{big_answer}");
    assert!(
        declared_answer.starts_with("HTTP/1.1 413"),
        "{declared_answer}"
    );
    assert!(
        grew_kib < 64 * 1024,
        "the member's memory stays flat: +{grew_kib} KiB"
    );
    rt.block_on(db.drop_db());
}

/// An http check that redirects to the worker's own `/disconnect`: the probe does not follow
/// it, and nothing steps down. A bare request from loopback is refused as well; only the
/// signed `gobearmon disconnect --config FILE` starts a hand-over.
#[test]
fn a_redirect_to_the_workers_own_disconnect_changes_nothing() {
    let _serial = serial();
    let rt = rt();
    let (db, _store) = rt.block_on(TestDb::installed("identity_redirect"));
    let c = Cluster::builder(crate::BIN, &db.url).workers(1).start();
    c.wait_acting(0, true, Duration::from_secs(30));
    let before = c.current().unwrap();
    let disconnect = format!("http://{}/disconnect", c.worker_addrs[0]);
    let redirector = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let raddr = redirector.local_addr().unwrap();
    let target = disconnect.clone();
    rt.spawn(async move {
        let app = axum::Router::new().fallback(move || {
            let target = target.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", target)],
                )
            }
        });
        let _ = axum::serve(redirector, app).await;
    });
    rt.block_on(db.exec(&format!(
        "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
         (1,'redirect','http','{{\"url\":\"http://{raddr}/\",\"method\":\"POST\"}}',1,0)"
    )));
    let message = wait_until(Duration::from_secs(30), "the check's result", || {
        rt.block_on(async {
            let mut conn = db.conn().await;
            conn.query_first::<String, _>("SELECT message FROM check_results WHERE check_id = 1")
                .await
                .unwrap()
        })
    });
    assert!(
        message.contains("a listener of this gobearmon node; not followed"),
        "{message}"
    );
    // The same request, straight from loopback and unsigned.
    let status = reqwest::blocking::Client::new()
        .post(&disconnect)
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401);
    let log = c.workers[0].log_text();
    assert!(!log.contains("disconnecting for a hand-over"), "{log}");
    assert_eq!(c.current().unwrap(), before);
    assert_eq!(
        c.metric(&c.worker_addrs[0], "gobearmon_is_controller"),
        Some(1.0)
    );

    // The operator's signed request does start one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .args(["disconnect", "--config"])
        .arg(&c.workers[0].config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("w1 is handing over"), "{stdout}");
    c.wait_acting(0, false, Duration::from_secs(10));
    assert!(
        c.workers[0]
            .log_text()
            .contains("disconnecting for a hand-over")
    );
    rt.block_on(db.drop_db());
}

/// `gobearmon node-key` prints the key a probe-only worker is given, and `check-config`
/// explains a missing or malformed one.
#[test]
fn node_key_is_printed_and_a_bad_one_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.toml");
    std::fs::write(
        &trusted,
        format!(
            "[default]\npassword = \"{SECRET}\"\n[viewserver]\nid = 1\naddr = \"127.0.0.1:7000\"\npeers = [\"127.0.0.1:7000\"]\ndata_dir = \"{}\"\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_gobearmon");
    let out = std::process::Command::new(bin)
        .args(["node-key", "p1", "--config"])
        .arg(&trusted)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(printed, node_key("p1"));
    assert_ne!(printed, node_key("p2"));

    let probe = |worker_extra: &str, default: &str| {
        let f = dir.path().join("probe.toml");
        std::fs::write(
            &f,
            format!(
                "{default}[worker]\nid = \"p1\"\nview_addr = [\"127.0.0.1:7000\"]\n{worker_extra}"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(bin)
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(probe(&format!("key = \"{printed}\"\n"), "").0, Some(0));
    let (code, text) = probe("key = \"0123-not-a-key-but-secret\"\n", "");
    assert_eq!(code, Some(64), "{text}");
    assert!(
        text.contains("worker.key") && text.contains("gobearmon node-key"),
        "{text}"
    );
    assert!(
        !text.contains("0123-not-a-key-but-secret"),
        "never shown: {text}"
    );
    let (code, text) = probe("", "");
    assert_eq!(code, Some(64), "{text}");
    assert!(
        text.contains("default.password") && text.contains("worker.key"),
        "{text}"
    );
    // A node key alone cannot print other keys.
    let f = dir.path().join("probe.toml");
    std::fs::write(
        &f,
        format!("[worker]\nid = \"p1\"\nview_addr = [\"127.0.0.1:7000\"]\nkey = \"{printed}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["node-key", "p2", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
