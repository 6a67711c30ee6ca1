//! A local cluster of real `gobearmon` processes on loopback: viewserver members and workers,
//! each with its own config file and log, started, killed and restarted by the tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::partition::Cgroup;

pub const SECRET: &str = "test-cluster-secret-0123";

/// A free TCP port on loopback for a node to listen on (20000 to 25999; tests/notify_support
/// takes 26000 to 31999).
pub fn free_port() -> u16 {
    super::ports::low_range_port(20000, 6000)
}

/// Certificates for a cluster with `[tls]` on every node: one CA, and a certificate per node
/// for `127.0.0.1` (the host every node dials), made with rcgen.
pub struct ClusterPki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM file).
    pub ca_path: PathBuf,
    pub ca_pem: String,
}

impl ClusterPki {
    /// A CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> ClusterPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_path = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_path, cert.pem()).unwrap();
        ClusterPki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_path,
            ca_pem: cert.pem(),
        }
    }

    /// Writes a certificate and key for node `node` (valid for 127.0.0.1 and localhost);
    /// returns their paths.
    pub fn issue(&self, node: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("node key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("node params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let cert_path = self.dir.join(format!("{node}.crt"));
        let key_path = self.dir.join(format!("{node}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A `[tls]` section for node `node`, with a certificate of its own.
    pub fn section(&self, node: &str) -> String {
        let (cert, key) = self.issue(node);
        format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            cert.display(),
            key.display(),
            self.ca_path.display()
        )
    }

    /// A blocking client that trusts this CA and presents no certificate (as a health check
    /// or Prometheus would).
    pub fn client(&self) -> reqwest::blocking::Client {
        gobearmon::tlsutil::install_default_provider();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }
}

/// One node process.
pub struct Proc {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// With `Some`, the process runs in this cgroup, so that a `partition::Cut` can isolate it.
    pub cgroup: Option<Cgroup>,
}

impl Proc {
    pub fn spawn(name: &str, config: PathBuf, log: PathBuf, cgroup: Option<Cgroup>) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            config,
            log,
            child: None,
            cgroup,
        };
        p.start();
        p
    }

    /// Starts (or restarts) the process, appending to its log.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_gobearmon");
        let mut command = match &self.cgroup {
            Some(cg) => cg.command(bin),
            None => Command::new(bin),
        };
        let child = command
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gobearmon");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
                .expect("kill")
                .success();
            assert!(ok, "kill -{sig} {pid} failed");
        }
    }

    /// `kill -9`, waiting until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        let mut c = self.child.take()?;
        for _ in 0..200 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("{} did not exit within 10 s of SIGTERM", self.name);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Timings for fast tests.
#[derive(Clone)]
pub struct Timings {
    pub controller_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            controller_timeout_ms: 2000,
            heartbeat_ms: 250,
            lease_ms: 1500,
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub vs_addrs: Vec<String>,
    pub viewservers: Vec<Proc>,
    pub workers: Vec<Proc>,
    pub worker_ids: Vec<String>,
    pub worker_addrs: Vec<String>,
    pub controller_addrs: Vec<String>,
    pub timings: Timings,
    /// Appended to every worker file after its `[controller]` keys: more controller keys,
    /// then whole sections (`[smtp]`, `[twilio]`). Each `{free_port}` in it becomes a free
    /// port of that worker's own.
    pub worker_extra: String,
    /// With `Some`, every node serves and dials TLS with a certificate from this CA.
    pub pki: Option<ClusterPki>,
    /// Every worker runs in a cgroup of its own ([`Cluster::start_isolable`]).
    isolable: bool,
    http: reqwest::blocking::Client,
}

impl Drop for Cluster {
    /// When a test fails with the cluster still up, the end of every node's log goes to the
    /// test's output, so a failure in CI can be read without the temporary directory.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for p in self.viewservers.iter().chain(&self.workers) {
            let text = p.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- last {} lines of {} ----", tail.len(), p.name);
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Cluster {
    /// Starts `n_vs` viewserver members and `n_workers` controller-capable workers using
    /// `database` (a mysql:// URL).
    pub fn start(n_vs: usize, n_workers: usize, database: &str, timings: Timings) -> Cluster {
        Cluster::start_with(n_vs, n_workers, database, timings, "")
    }

    /// Like [`Cluster::start`], with `worker_extra` appended to each worker's file.
    pub fn start_with(
        n_vs: usize,
        n_workers: usize,
        database: &str,
        timings: Timings,
        worker_extra: &str,
    ) -> Cluster {
        Cluster::start_inner(
            n_vs,
            n_workers,
            database,
            timings,
            worker_extra,
            false,
            false,
        )
    }

    /// Like [`Cluster::start`], with every worker in a cgroup of its own, so that a test can
    /// cut one off from chosen ports (`super::partition::Cut`).
    pub fn start_isolable(
        n_vs: usize,
        n_workers: usize,
        database: &str,
        timings: Timings,
    ) -> Cluster {
        Cluster::start_isolable_with(n_vs, n_workers, database, timings, "")
    }

    /// [`Cluster::start_isolable`] with `worker_extra` appended to each worker's file.
    pub fn start_isolable_with(
        n_vs: usize,
        n_workers: usize,
        database: &str,
        timings: Timings,
        worker_extra: &str,
    ) -> Cluster {
        Cluster::start_inner(
            n_vs,
            n_workers,
            database,
            timings,
            worker_extra,
            false,
            true,
        )
    }

    /// Like [`Cluster::start`] with `[tls]` on every node; the cluster's own requests
    /// (`view`, `get`, `metric`) use https and trust the cluster CA.
    pub fn start_tls(n_vs: usize, n_workers: usize, database: &str, timings: Timings) -> Cluster {
        Cluster::start_inner(n_vs, n_workers, database, timings, "", true, false)
    }

    fn start_inner(
        n_vs: usize,
        n_workers: usize,
        database: &str,
        timings: Timings,
        worker_extra: &str,
        tls: bool,
        isolable: bool,
    ) -> Cluster {
        gobearmon::tlsutil::install_default_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = tls.then(|| ClusterPki::new(dir.path(), "cluster"));
        let tls_section = |node: &str| pki.as_ref().map_or(String::new(), |p| p.section(node));
        let vs_addrs: Vec<String> = (0..n_vs)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = toml_list(&vs_addrs);
        let mut viewservers = Vec::new();
        for (i, addr) in vs_addrs.iter().enumerate() {
            let id = i + 1;
            let config = dir.path().join(format!("vs{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[default]\npassword = \"{SECRET}\"\n[viewserver]\nid = {id}\naddr = \"{addr}\"\npeers = {peers}\ndata_dir = \"{}\"\ncontroller_timeout = \"{}ms\"\nraft_heartbeat = \"100ms\"\nraft_election_timeout = \"500ms\"\n{}",
                    dir.path().join(format!("vs{id}-data")).display(),
                    timings.controller_timeout_ms,
                    tls_section(&format!("vs{id}")),
                ),
            )
            .unwrap();
            viewservers.push(Proc::spawn(
                &format!("vs{id}"),
                config,
                dir.path().join(format!("vs{id}.log")),
                None,
            ));
        }
        let http = match &pki {
            Some(p) => p.client(),
            None => reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .unwrap(),
        };
        let mut cluster = Cluster {
            dir,
            vs_addrs,
            viewservers,
            workers: Vec::new(),
            worker_ids: Vec::new(),
            worker_addrs: Vec::new(),
            controller_addrs: Vec::new(),
            timings,
            worker_extra: worker_extra.to_string(),
            pki,
            isolable,
            http,
        };
        for _ in 0..n_workers {
            cluster.add_worker(database, "");
        }
        cluster
    }

    /// Adds a controller-capable worker; `extra` is appended to its `[worker]` section.
    pub fn add_worker(&mut self, database: &str, extra: &str) {
        let n = self.workers.len() + 1;
        let id = format!("w{n}");
        let addr = format!("127.0.0.1:{}", free_port());
        let caddr = format!("127.0.0.1:{}", free_port());
        let t = &self.timings;
        let config = self.dir.path().join(format!("{id}.toml"));
        let tls = self.pki.as_ref().map_or(String::new(), |p| p.section(&id));
        // A test may set its own reload period in the extra keys.
        let reload = if self.worker_extra.contains("reload_period") {
            ""
        } else {
            "reload_period = \"500ms\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "[default]\npassword = \"{SECRET}\"\n[worker]\nid = \"{id}\"\naddr = \"{addr}\"\nview_addr = {}\nheartbeat_interval = \"{}ms\"\nlease = \"{}ms\"\ndisconnect_pause = \"3s\"\n{extra}\n[controller]\naddr = \"{caddr}\"\ndatabase = [\"{database}\"]\n{reload}{}\n{tls}",
                toml_list(&self.vs_addrs),
                t.heartbeat_ms,
                t.lease_ms,
                // Each worker gets ports of its own where the extra text asks for one.
                self.worker_extra
                    .replace("{free_port}", &free_port().to_string()),
            ),
        )
        .unwrap();
        self.workers.push(Proc::spawn(
            &id,
            config,
            self.dir.path().join(format!("{id}.log")),
            self.isolable.then(Cgroup::new),
        ));
        self.worker_ids.push(id);
        self.worker_addrs.push(addr);
        self.controller_addrs.push(caddr);
    }

    /// Adds a worker `id` whose file the test shapes: `default` is the whole `[default]`
    /// section (the cluster secret when `None`), `worker_extra` is appended to `[worker]`
    /// (a `key`, say), and `tail` after it (a `[controller]` section, say). Returns its index.
    pub fn add_custom_worker(
        &mut self,
        id: &str,
        default: Option<&str>,
        worker_extra: &str,
        tail: &str,
    ) -> usize {
        let addr = format!("127.0.0.1:{}", free_port());
        let t = &self.timings;
        let config = self.dir.path().join(format!("{id}.toml"));
        let default = default.map_or(
            format!("[default]\npassword = \"{SECRET}\"\n"),
            str::to_string,
        );
        std::fs::write(
            &config,
            format!(
                "{default}\n[worker]\nid = \"{id}\"\naddr = \"{addr}\"\nview_addr = {}\nheartbeat_interval = \"{}ms\"\nlease = \"{}ms\"\ndisconnect_pause = \"3s\"\n{worker_extra}\n{tail}\n",
                toml_list(&self.vs_addrs),
                t.heartbeat_ms,
                t.lease_ms,
            ),
        )
        .unwrap();
        self.workers.push(Proc::spawn(
            id,
            config,
            self.dir.path().join(format!("{id}.log")),
            self.isolable.then(Cgroup::new),
        ));
        self.worker_ids.push(id.to_string());
        self.worker_addrs.push(addr);
        self.controller_addrs.push(String::new());
        self.workers.len() - 1
    }

    /// Waits (up to `limit`) until worker `w`'s `/metrics` say it acts as controller (`true`)
    /// or not. It acts from the moment it takes the lease; its fence write follows.
    pub fn wait_acting(&self, w: usize, acting: bool, limit: Duration) {
        let want = if acting { 1.0 } else { 0.0 };
        let what = format!(
            "{} to {}",
            self.worker_ids[w],
            if acting {
                "act as controller"
            } else {
                "stop acting as controller"
            }
        );
        wait_until(limit, &what, || {
            self.metric(&self.worker_addrs[w], "gobearmon_is_controller")
                .filter(|v| *v == want)
        });
    }

    /// The viewserver members' ports.
    pub fn vs_ports(&self) -> Vec<u16> {
        self.vs_addrs
            .iter()
            .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    /// `GET /view` of member `i` (0-based).
    pub fn view(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}://{}/view", self.scheme(), self.vs_addrs[i]))
            .send()
            .ok()?;
        r.json().ok()
    }

    /// The view as the first answering member applied it: (epoch, controller node).
    pub fn current(&self) -> Option<(u64, Option<String>)> {
        (0..self.vs_addrs.len()).find_map(|i| {
            let v = self.view(i)?;
            let epoch = v["view"]["epoch"].as_u64()?;
            let node = v["view"]["controller"]["node"].as_str().map(str::to_string);
            Some((epoch, node))
        })
    }

    /// The Raft leader (1-based member id) as member `i` sees it.
    pub fn leader(&self, i: usize) -> Option<u64> {
        self.view(i)?["leader"].as_u64()
    }

    pub fn worker_index(&self, id: &str) -> usize {
        self.worker_ids
            .iter()
            .position(|w| w == id)
            .expect("known worker")
    }

    pub fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("{}://{addr}{path}", self.scheme()))
            .send()
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().unwrap_or_default()))
    }

    /// A metric value from `/metrics` of `addr`.
    pub fn metric(&self, addr: &str, name: &str) -> Option<f64> {
        let (_, text) = self.get(addr, "/metrics")?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok())?
        })
    }

    /// The node id of the worker acting as controller now (its `/metrics` say so).
    pub fn acting_controller(&self) -> Option<usize> {
        (0..self.workers.len())
            .find(|&i| self.metric(&self.worker_addrs[i], "gobearmon_is_controller") == Some(1.0))
    }

    /// `https` when the nodes serve TLS.
    pub fn scheme(&self) -> &'static str {
        if self.pki.is_some() { "https" } else { "http" }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The structured field of the line a node logs when it starts acting as controller (under a
/// lease or under the fence alone).
pub const LEASE_START: &str = "lease_event=\"start\"";
/// ... when it stops.
pub const LEASE_STOP: &str = "lease_event=\"stop\"";
/// ... when the group is unreachable and a newer epoch holds the fence, so it does not act.
pub const NOT_ACTING: &str = "lease_event=\"not_acting\"";
/// The mode field of a start under the epoch fence alone.
pub const FENCE_ALONE: &str = "mode=\"fence_alone\"";

/// Lease intervals `(node, epoch, start_ms, end_ms)` read from the workers' logs. A lease
/// still held (or held by a killed process) ends at `open_end_ms`.
pub fn lease_intervals(
    logs: &[(String, String)],
    open_end_ms: u64,
) -> Vec<(String, u64, u64, u64)> {
    let field = log_number;
    let mut out = Vec::new();
    for (node, text) in logs {
        let mut open: Option<(u64, u64)> = None;
        for line in text.lines() {
            // A lease, or acting under the fence alone, opens an interval.
            if line.contains(LEASE_START) {
                if let Some((epoch, start)) = open.take() {
                    out.push((node.clone(), epoch, start, open_end_ms));
                }
                if let (Some(e), Some(s)) = (field(line, "epoch"), field(line, "at_ms")) {
                    open = Some((e, s));
                }
            } else if line.contains(LEASE_STOP)
                && let Some((epoch, start)) = open.take()
            {
                let end = field(line, "lease_end_ms").unwrap_or(open_end_ms);
                out.push((node.clone(), epoch, start, end));
            }
        }
        if let Some((epoch, start)) = open {
            out.push((node.clone(), epoch, start, open_end_ms));
        }
    }
    out
}

/// The number logged as `key=` in `line` (tracing's key=value fields).
pub fn log_number(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Reads a file path under the cluster dir.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Cluster tests start six processes each; run them one at a time so a loaded 2-core machine
/// does not turn timing into flakiness. Hold the guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
