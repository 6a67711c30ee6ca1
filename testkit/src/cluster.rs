//! A local cluster of real `gobearmon` processes on loopback: viewserver members and workers,
//! each with its own config file (typed, see [`crate::config`]) and log, started, killed and
//! restarted by the tests and the benchmark drivers alike. [`Cluster::builder`] says what to
//! start: how many members and workers, the database, timings, TLS, isolable workers (each in
//! a cgroup of its own, for [`crate::partition::Cut`]), and more keys and sections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use toml::Table;

use crate::config::{
    ControllerSection, Ms, NodeFile, TlsSection, ViewserverSection, WebSection, WorkerSection,
};
use crate::partition::Cgroup;

pub const SECRET: &str = "test-cluster-secret-0123";

/// A free TCP port on loopback for a node to listen on (the one allocator, [`crate::ports`]).
pub fn free_port() -> u16 {
    crate::ports::free_port()
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
    pub fn section(&self, node: &str) -> TlsSection {
        let (cert, key) = self.issue(node);
        TlsSection {
            cert,
            key,
            ca: self.ca_path.clone(),
        }
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
    bin: PathBuf,
    child: Option<Child>,
    /// With `Some`, the process runs in this cgroup, so that a `partition::Cut` can isolate it.
    pub cgroup: Option<Cgroup>,
    /// With `Some` (benchmark drivers), the process dies with the thread that started it
    /// (`PR_SET_PDEATHSIG`) and its pid is appended to this file for the script's trap.
    pid_list: Option<PathBuf>,
}

impl Proc {
    /// Starts `bin run config`, its stderr appended to `log`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        config: PathBuf,
        log: PathBuf,
        cgroup: Option<Cgroup>,
    ) -> Proc {
        Proc::spawn_listed(bin, name, config, log, cgroup, None)
    }

    fn spawn_listed(
        bin: &Path,
        name: &str,
        config: PathBuf,
        log: PathBuf,
        cgroup: Option<Cgroup>,
        pid_list: Option<PathBuf>,
    ) -> Proc {
        let mut p = Proc {
            name: name.to_string(),
            config,
            log,
            bin: bin.to_path_buf(),
            child: None,
            cgroup,
            pid_list,
        };
        p.start();
        p
    }

    /// Starts (or restarts) the process, appending to its log. With a pid list, only ever call
    /// it from the thread that outlives the process: `PR_SET_PDEATHSIG` fires when the thread
    /// that forked the child ends.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let bin = self.bin.to_str().expect("a UTF-8 binary path");
        let mut command = match &self.cgroup {
            Some(cg) => cg.command(bin),
            None => Command::new(bin),
        };
        command
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.pid_list.is_some() {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn gobearmon");
        if let Some(list) = &self.pid_list {
            use std::io::Write;
            let mut pids = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(list)
                .expect("pid list");
            writeln!(pids, "{}", child.id()).expect("write pid list");
        }
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

/// The timing keys written into the node files; `None` leaves a key out (the shipped default
/// holds). [`Timings::default`] is the fast set of the tests, [`Timings::shipped`] writes none.
#[derive(Clone, Debug)]
pub struct Timings {
    /// `[viewserver] controller_timeout`.
    pub controller_timeout: Option<Ms>,
    /// `[viewserver] raft_heartbeat`.
    pub raft_heartbeat: Option<Ms>,
    /// `[viewserver] raft_election_timeout`.
    pub raft_election_timeout: Option<Ms>,
    /// `[worker] heartbeat_interval`.
    pub heartbeat: Option<Ms>,
    /// `[worker] lease`.
    pub lease: Option<Ms>,
    /// `[worker] disconnect_pause`.
    pub disconnect_pause: Option<Ms>,
    /// `[controller] reload_period`, unless the controller keys set their own.
    pub reload_period: Option<Ms>,
}

impl Default for Timings {
    /// Timings for fast tests.
    fn default() -> Timings {
        Timings {
            controller_timeout: Some(Ms(2000)),
            raft_heartbeat: Some(Ms(100)),
            raft_election_timeout: Some(Ms(500)),
            heartbeat: Some(Ms(250)),
            lease: Some(Ms(1500)),
            disconnect_pause: Some(Ms(3000)),
            reload_period: Some(Ms(500)),
        }
    }
}

impl Timings {
    /// No timing key at all: the shipped defaults.
    pub fn shipped() -> Timings {
        Timings {
            controller_timeout: None,
            raft_heartbeat: None,
            raft_election_timeout: None,
            heartbeat: None,
            lease: None,
            disconnect_pause: None,
            reload_period: None,
        }
    }

    /// The controller timeout written, in milliseconds (a test that waits it out sets one).
    pub fn controller_timeout_ms(&self) -> u64 {
        self.controller_timeout
            .expect("a controller_timeout set in the cluster's timings")
            .0
    }
}

/// What [`ClusterBuilder::start`] starts; every setter has a default (1 member, no workers,
/// [`Timings::default`], plain HTTP, no cgroups, a temporary directory).
pub struct ClusterBuilder {
    bin: PathBuf,
    /// `[controller] database` of every worker.
    databases: Vec<String>,
    viewservers: usize,
    workers: usize,
    timings: Timings,
    tls: bool,
    isolable: bool,
    controller_keys: Table,
    sections: Table,
    /// `[listen]` of every node.
    listen: Option<Table>,
    web_tokens: Option<Vec<String>>,
    dir: Option<PathBuf>,
}

impl ClusterBuilder {
    /// Viewserver members.
    pub fn viewservers(mut self, n: usize) -> Self {
        self.viewservers = n;
        self
    }

    /// Controller-capable workers started at once (more with [`Cluster::add_worker`]).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// `[tls]` on every node; the cluster's own requests (`view`, `get`, `metric`) use https
    /// and trust the cluster CA.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Every worker in a cgroup of its own, so that a test can cut one off from chosen ports
    /// ([`crate::partition::Cut`]).
    pub fn isolable(mut self) -> Self {
        self.isolable = true;
        self
    }

    /// More `[controller]` keys of every worker.
    pub fn controller_keys(mut self, keys: Table) -> Self {
        self.controller_keys.extend(keys);
        self
    }

    /// A whole section (`[smtp]`, `[twilio]`) in every worker's file.
    pub fn section(mut self, name: &str, keys: Table) -> Self {
        self.sections.insert(name.to_string(), keys.into());
        self
    }

    /// `[controller] database` of every worker: these URLs (the nodes of a Galera cluster,
    /// say) instead of the one given to [`Cluster::builder`].
    pub fn databases(mut self, urls: &[String]) -> Self {
        self.databases = urls.to_vec();
        self
    }

    /// `[listen]` with `keys` on every node, viewserver members included.
    pub fn listen(mut self, keys: Table) -> Self {
        self.sections
            .insert("listen".to_string(), keys.clone().into());
        self.listen = Some(keys);
        self
    }

    /// `[web]` on every worker, on a port of its own ([`Cluster::web_addr`]), with these API
    /// tokens.
    pub fn web(mut self, api_tokens: &[&str]) -> Self {
        self.web_tokens = Some(api_tokens.iter().map(|t| t.to_string()).collect());
        self
    }

    /// Configs, data and logs under `dir` (kept afterwards), and every process dies with the
    /// thread that started it, its pid listed in `dir/pids`: for benchmark drivers.
    pub fn kept_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> Cluster {
        gobearmon::tlsutil::install_default_provider();
        let (dir, pid_list) = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
                (ClusterDir::Kept(d.clone()), Some(d.join("pids")))
            }
            None => (
                ClusterDir::Temp(tempfile::tempdir().expect("temp dir")),
                None,
            ),
        };
        let pki = self.tls.then(|| ClusterPki::new(dir.path(), "cluster"));
        let vs_addrs: Vec<String> = (0..self.viewservers)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let t = &self.timings;
        let mut viewservers = Vec::new();
        for (i, addr) in vs_addrs.iter().enumerate() {
            let id = i + 1;
            let name = format!("vs{id}");
            let mut file = NodeFile::with_secret(SECRET);
            file.viewserver = Some(ViewserverSection {
                id: id as u64,
                addr: addr.clone(),
                peers: vs_addrs.clone(),
                data_dir: dir.path().join(format!("{name}-data")),
                controller_timeout: t.controller_timeout,
                raft_heartbeat: t.raft_heartbeat,
                raft_election_timeout: t.raft_election_timeout,
            });
            file.tls = pki.as_ref().map(|p| p.section(&name));
            if let Some(listen) = &self.listen {
                file.sections.insert("listen".into(), listen.clone().into());
            }
            let config = dir.path().join(format!("{name}.toml"));
            file.write(&config);
            viewservers.push(Proc::spawn_listed(
                &self.bin,
                &name,
                config,
                dir.path().join(format!("{name}.log")),
                None,
                pid_list.clone(),
            ));
        }
        let http = match &pki {
            Some(p) => p.client(),
            None => reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .expect("http client"),
        };
        let workers = self.workers;
        let mut cluster = Cluster {
            dir,
            vs_addrs,
            viewservers,
            workers: Vec::new(),
            worker_ids: Vec::new(),
            worker_addrs: Vec::new(),
            controller_addrs: Vec::new(),
            web_addrs: Vec::new(),
            timings: self.timings,
            pki,
            bin: self.bin,
            databases: self.databases,
            controller_keys: self.controller_keys,
            sections: self.sections,
            web_tokens: self.web_tokens,
            isolable: self.isolable,
            pid_list,
            http,
        };
        for _ in 0..workers {
            cluster.add_worker(Table::new());
        }
        cluster
    }
}

/// Where a cluster's files live.
pub enum ClusterDir {
    /// Removed with the cluster (tests).
    Temp(tempfile::TempDir),
    /// Kept (benchmark drivers, for the script's logs).
    Kept(PathBuf),
}

impl ClusterDir {
    pub fn path(&self) -> &Path {
        match self {
            ClusterDir::Temp(d) => d.path(),
            ClusterDir::Kept(p) => p,
        }
    }
}

pub struct Cluster {
    pub dir: ClusterDir,
    pub vs_addrs: Vec<String>,
    pub viewservers: Vec<Proc>,
    pub workers: Vec<Proc>,
    pub worker_ids: Vec<String>,
    pub worker_addrs: Vec<String>,
    /// `[controller] addr` of each worker (empty for a custom worker).
    pub controller_addrs: Vec<String>,
    /// `[web] addr` of each worker that has one.
    pub web_addrs: Vec<Option<String>>,
    pub timings: Timings,
    /// With `Some`, every node serves and dials TLS with a certificate from this CA.
    pub pki: Option<ClusterPki>,
    bin: PathBuf,
    /// `[controller] database` of every worker.
    databases: Vec<String>,
    controller_keys: Table,
    sections: Table,
    web_tokens: Option<Vec<String>>,
    isolable: bool,
    pid_list: Option<PathBuf>,
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
    /// A cluster of `bin` (the `gobearmon` binary) nodes using `database` (a mysql:// URL).
    pub fn builder(bin: impl Into<PathBuf>, database: &str) -> ClusterBuilder {
        ClusterBuilder {
            bin: bin.into(),
            databases: vec![database.to_string()],
            viewservers: 1,
            workers: 0,
            timings: Timings::default(),
            tls: false,
            isolable: false,
            controller_keys: Table::new(),
            sections: Table::new(),
            listen: None,
            web_tokens: None,
            dir: None,
        }
    }

    /// The `[worker]` section of a new worker `id` listening on `addr`.
    fn worker_section(&self, id: &str, addr: &str, extra: Table) -> WorkerSection {
        let t = &self.timings;
        WorkerSection {
            id: id.to_string(),
            addr: addr.to_string(),
            view_addr: self.vs_addrs.clone(),
            heartbeat_interval: t.heartbeat,
            lease: t.lease,
            disconnect_pause: t.disconnect_pause,
            extra,
        }
    }

    fn spawn_worker(&mut self, id: &str, file: &NodeFile) -> Proc {
        let config = self.dir.path().join(format!("{id}.toml"));
        file.write(&config);
        Proc::spawn_listed(
            &self.bin,
            id,
            config,
            self.dir.path().join(format!("{id}.log")),
            self.isolable.then(Cgroup::create),
            self.pid_list.clone(),
        )
    }

    /// Adds a controller-capable worker; `worker_keys` go into its `[worker]` section.
    pub fn add_worker(&mut self, worker_keys: Table) {
        let n = self.workers.len() + 1;
        let id = format!("w{n}");
        let addr = format!("127.0.0.1:{}", free_port());
        let caddr = format!("127.0.0.1:{}", free_port());
        let mut file = NodeFile::with_secret(SECRET);
        file.worker = Some(self.worker_section(&id, &addr, worker_keys));
        // A test may set its own reload period in the controller keys.
        let reload_period = if self.controller_keys.contains_key("reload_period") {
            None
        } else {
            self.timings.reload_period
        };
        file.controller = Some(ControllerSection {
            addr: caddr.clone(),
            database: self.databases.clone(),
            reload_period,
            extra: self.controller_keys.clone(),
        });
        file.sections = self.sections.clone();
        let web_addr = self.web_tokens.as_ref().map(|tokens| {
            let addr = format!("127.0.0.1:{}", free_port());
            let web = WebSection {
                addr: addr.clone(),
                api_tokens: tokens.clone(),
            };
            file.sections
                .insert("web".into(), crate::config::section(web).into());
            addr
        });
        file.tls = self.pki.as_ref().map(|p| p.section(&id));
        let proc = self.spawn_worker(&id, &file);
        self.workers.push(proc);
        self.worker_ids.push(id);
        self.worker_addrs.push(addr);
        self.controller_addrs.push(caddr);
        self.web_addrs.push(web_addr);
    }

    /// Adds a worker `id` whose file the test shapes: `default` is the whole `[default]`
    /// section (the cluster secret when `None`), `worker_keys` go into `[worker]` (a `key`,
    /// say), and `controller` is its `[controller]` section, if any. Returns its index.
    pub fn add_custom_worker(
        &mut self,
        id: &str,
        default: Option<Table>,
        worker_keys: Table,
        controller: Option<ControllerSection>,
    ) -> usize {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut file = NodeFile::with_secret(SECRET);
        if default.is_some() {
            file.default = default;
        }
        file.worker = Some(self.worker_section(id, &addr, worker_keys));
        file.controller = controller;
        let proc = self.spawn_worker(id, &file);
        self.workers.push(proc);
        self.worker_ids.push(id.to_string());
        self.worker_addrs.push(addr);
        self.controller_addrs.push(String::new());
        self.web_addrs.push(None);
        self.workers.len() - 1
    }

    /// The `[web] addr` of worker `w` (started with [`ClusterBuilder::web`]).
    pub fn web_addr(&self, w: usize) -> &str {
        self.web_addrs[w]
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no [web] section", self.worker_ids[w]))
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
