//! Hostile clients against every listener of a running cluster (issue 24): strangers hold
//! 1,030 bad connections against each listener of each node (idle, slow heads and bodies,
//! idle HTTP/2, half-open TLS), re-opened whenever dropped, while a real outage must still be
//! paged, the controller must not change, a worker's `/ready` must keep answering, and a
//! controller killed under the flood must be replaced and the recovery paged.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use testkit::cluster::{Cluster, wait_until};
use testkit::config::{Ms, keys};
use testkit::db::TestDb;
use testkit::flood::{Flood, Kind, Plan};
use testkit::notify::{Behaviour, Receiver};
use testkit::probe::tcp::Port;

/// Connections held against each listener by strangers.
const PER_LISTENER: usize = 1030;
/// The listeners' `[listen] max_connections` in these tests: below the flood, so every
/// listener sheds as well as holds.
const MAX_CONNECTIONS: i64 = 512;

struct Edge {
    rt: tokio::runtime::Runtime,
    db: Option<TestDb>,
    cluster: Cluster,
    hook: Receiver,
    target: Port,
}

impl Edge {
    fn start(tag: &str, tls: bool) -> Edge {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, _) = rt.block_on(TestDb::installed(tag));
        let hook = rt.block_on(Receiver::start(Behaviour::Status(200)));
        let target = Port::new();
        rt.block_on(db.exec(&format!(
            "INSERT INTO checks (id,name,type,data,check_interval,delay) VALUES \
             (1,'target','tcp','{{\"address\":\"127.0.0.1:{}\",\"timeout\":2}}',1,0);
             INSERT INTO contacts (id,type,data) VALUES (1,'webhook','{}');
             INSERT INTO alerts (check_id,contact_id,type) VALUES (1,1,'both');",
            target.port,
            hook.url("/hook")
        )));
        let mut builder = Cluster::builder(crate::BIN, &db.url)
            .viewservers(1)
            .workers(2)
            .web(&["edge-test-token-0123456789"])
            .listen(keys([("max_connections", MAX_CONNECTIONS.into())]))
            // One vote flips: the failover phase leaves one worker alive.
            .controller_keys(keys([
                ("confirmations", 1.into()),
                ("delivery_backoff", Ms(200).into()),
                ("delivery_backoff_max", Ms(1000).into()),
            ]));
        if tls {
            builder = builder.tls();
        }
        let cluster = builder.start();
        Edge {
            rt,
            db: Some(db),
            cluster,
            hook,
            target,
        }
    }

    /// Waits for an acting controller and both workers ready; returns (epoch, controller).
    fn wait_ready(&self) -> (u64, String) {
        let current = wait_until(Duration::from_secs(30), "a controller", || {
            match self.cluster.current() {
                Some((epoch, Some(node))) if epoch > 0 => Some((epoch, node)),
                _ => None,
            }
        });
        for w in &self.cluster.worker_addrs {
            wait_until(Duration::from_secs(30), "workers ready", || {
                let (code, _) = self.cluster.get(w, "/ready")?;
                (code == 200).then_some(())
            });
        }
        current
    }

    /// Every listener of every node.
    fn listeners(&self) -> Vec<std::net::SocketAddr> {
        let c = &self.cluster;
        c.vs_addrs
            .iter()
            .chain(&c.worker_addrs)
            .chain(&c.controller_addrs)
            .chain(c.web_addrs.iter().flatten())
            .map(|a| a.parse().unwrap())
            .collect()
    }

    /// Starts the flood against every listener: `PER_LISTENER` idle connections from ten
    /// addresses (each under its per-source cap), 200 idle ones from one address over its cap,
    /// and 100 more of each of `kinds` from ten other addresses. Returns once every
    /// connection has been opened at least once.
    fn flood(&self, kinds: Vec<Kind>) -> Vec<Flood> {
        let _in_rt = self.rt.enter();
        let targets = self.listeners();
        let addrs = |first: u8, n: u8| {
            (0..n)
                .map(|i| Ipv4Addr::new(127, 0, 0, first + i))
                .collect()
        };
        let plan = |per_target, sources, kinds| Plan {
            per_target,
            sources,
            kinds,
            reopen_after: Duration::from_secs(1),
        };
        let plans = [
            plan(PER_LISTENER, addrs(2, 10), vec![Kind::Idle]),
            plan(200, addrs(20, 1), vec![Kind::Idle]),
            plan(100 * kinds.len(), addrs(30, 10), kinds),
        ];
        let floods: Vec<Flood> = plans.iter().map(|p| Flood::start(&targets, p)).collect();
        for (f, p) in floods.iter().zip(&plans) {
            wait_until(Duration::from_secs(60), "the flood to open", || {
                let opened = f.stats.opened.load(Ordering::Relaxed);
                (opened >= (targets.len() * p.per_target) as u64).then_some(())
            });
        }
        floods
    }

    /// Counts the webhooks that say the target went `state`.
    fn pages(&self, state: &str) -> usize {
        self.hook
            .received()
            .iter()
            .filter(|r| {
                let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                b["new_status"] == state
            })
            .count()
    }

    fn fence(&self) -> (u64, String) {
        self.rt.block_on(async {
            let mut c = self.db.as_ref().unwrap().conn().await;
            c.query_first("SELECT epoch, controller FROM epoch_fence WHERE id = 1")
                .await
                .unwrap()
                .unwrap()
        })
    }

    /// A listener counter of worker `w`, summed over the listeners.
    fn listener_counter(&self, w: usize, name: &str) -> f64 {
        let Some((_, text)) = self.cluster.get(&self.cluster.worker_addrs[w], "/metrics") else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.rt.block_on(db.drop_db());
        }
    }
}

/// Asks each address's `/ready` over a new connection every 500 ms until stopped; records
/// the slowest answer and every request that got none within 3 s.
struct ReadyPoll {
    stop: Arc<AtomicBool>,
    addrs: Arc<Mutex<Vec<String>>>,
    slowest_ms: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyPoll {
    fn start(
        addrs: Vec<String>,
        client: reqwest::blocking::Client,
        scheme: &'static str,
    ) -> ReadyPoll {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs = Arc::new(Mutex::new(addrs));
        let slowest_ms = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, a, slow, f) = (
            stop.clone(),
            addrs.clone(),
            slowest_ms.clone(),
            failures.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // Held for the whole round, so that `forget` waits for it to end.
                let now = a.lock().unwrap();
                for addr in now.iter() {
                    let started = Instant::now();
                    // On a thread of its own, waited for 4 s at most: a request that hangs
                    // past its client's timeout is a failure, not a stuck test.
                    let (tx, rx) = std::sync::mpsc::channel();
                    let (c, url) = (client.clone(), format!("{scheme}://{addr}/ready"));
                    std::thread::spawn(move || {
                        let _ = tx.send(c.get(url).send().map(|r| r.status()));
                    });
                    let r = rx.recv_timeout(Duration::from_secs(4));
                    let took = started.elapsed();
                    slow.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
                    let failure = match r {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => format!("{addr} after {took:?}: {e}"),
                        Err(_) => format!("{addr}: no answer in 4 s"),
                    };
                    f.lock().unwrap().push(failure);
                }
                drop(now);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        ReadyPoll {
            stop,
            addrs,
            slowest_ms,
            failures,
            thread: Some(thread),
        }
    }

    fn forget(&self, addr: &str) {
        self.addrs.lock().unwrap().retain(|a| a != addr);
    }

    /// Stops polling; returns (slowest answer, failures).
    fn finish(mut self) -> (Duration, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let slowest = Duration::from_millis(self.slowest_ms.load(Ordering::Relaxed));
        (slowest, self.failures.lock().unwrap().clone())
    }
}

/// A client with a new connection per request, so every poll goes through the flooded
/// accept path, bounded at 3 s.
fn fresh_client(cluster: &Cluster) -> reqwest::blocking::Client {
    gobearmon::tlsutil::install_default_provider();
    let mut b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .no_proxy();
    if let Some(pki) = &cluster.pki {
        b = b.tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()]);
    }
    b.build().unwrap()
}

#[test]
fn a_flooded_cluster_pages_outages_keeps_its_controller_and_fails_over() {
    let _serial = testkit::cluster::serial();
    let mut e = Edge::start("edges_flood", false);
    let (epoch, controller) = e.wait_ready();
    let fence = e.fence();
    let flood = e.flood(vec![
        Kind::SlowHead,
        Kind::SlowBody,
        Kind::IdleHttp2,
        Kind::PartialTls,
    ]);
    let poll = ReadyPoll::start(
        e.cluster.worker_addrs.clone(),
        fresh_client(&e.cluster),
        e.cluster.scheme(),
    );
    let acting = e.cluster.worker_index(&controller);
    // The flood reached the listeners: they shed to make room, and refused the address
    // over its cap.
    wait_until(Duration::from_secs(30), "the listeners to shed", || {
        (e.listener_counter(acting, "gobearmon_listener_shed_total") > 0.0
            && e.listener_counter(acting, "gobearmon_listener_refused_total") > 0.0)
            .then_some(())
    });

    // A real outage is paged within 30 s, by the same controller under the same fence.
    e.target.down();
    let down = Instant::now();
    wait_until(Duration::from_secs(30), "the outage to be paged", || {
        (e.pages("offline") == 1).then_some(())
    });
    let paged_after = down.elapsed();
    assert_eq!(e.cluster.current(), Some((epoch, Some(controller.clone()))));
    assert_eq!(e.fence(), fence, "the fence did not move under the flood");

    // The acting controller dies; its successor connects through the flooded listeners,
    // takes over, and pages the recovery.
    poll.forget(&e.cluster.worker_addrs[acting]);
    e.cluster.workers[acting].kill9();
    let (epoch2, successor) = wait_until(Duration::from_secs(30), "a new controller", || {
        match e.cluster.current() {
            Some((n, Some(node))) if n > epoch && node != controller => Some((n, node)),
            _ => None,
        }
    });
    e.cluster.wait_acting(
        e.cluster.worker_index(&successor),
        true,
        Duration::from_secs(30),
    );
    e.target.up();
    wait_until(Duration::from_secs(60), "the recovery to be paged", || {
        (e.pages("online") == 1).then_some(())
    });
    assert!(epoch2 > epoch);
    let (slowest, failures) = poll.finish();
    assert!(
        failures.is_empty(),
        "/ready went unanswered for 3 s under the flood: {failures:?}"
    );
    assert_eq!(e.pages("offline"), 1, "paged once");
    eprintln!(
        "outage paged {paged_after:?} after the target went down; slowest /ready {slowest:?}"
    );
    e.rt.block_on(async {
        for f in flood {
            f.stop().await;
        }
    });
}

#[test]
fn half_open_tls_floods_do_not_silence_a_tls_cluster() {
    let _serial = testkit::cluster::serial();
    let mut e = Edge::start("edges_tls_flood", true);
    let (epoch, controller) = e.wait_ready();
    let ca = e.cluster.pki.as_ref().unwrap().ca_path.clone();
    // Handshakes that never start, that stop inside the ClientHello, and finished ones that
    // then say nothing.
    let flood = e.flood(vec![
        Kind::PartialTls,
        Kind::TlsIdle(testkit::flood::tls_client(&ca)),
    ]);
    let poll = ReadyPoll::start(
        e.cluster.worker_addrs.clone(),
        fresh_client(&e.cluster),
        e.cluster.scheme(),
    );
    e.target.down();
    wait_until(Duration::from_secs(30), "the outage to be paged", || {
        (e.pages("offline") == 1).then_some(())
    });
    e.target.up();
    wait_until(Duration::from_secs(30), "the recovery to be paged", || {
        (e.pages("online") == 1).then_some(())
    });
    assert_eq!(e.cluster.current(), Some((epoch, Some(controller))));
    let (_, failures) = poll.finish();
    assert!(
        failures.is_empty(),
        "/ready unanswered under the flood: {failures:?}"
    );
    e.rt.block_on(async {
        for f in flood {
            f.stop().await;
        }
    });
}
