//! A three-node MariaDB Galera cluster on loopback (Debian's `mariadb-server` and `galera-4`),
//! for the tests and benchmarks of the replicated store: each node its own `mariadbd`
//! process with its own data directory, ports from the allocator, `wsrep_sst_method=rsync`.
//! Nodes can be killed (`kill -9`), frozen (`SIGSTOP`), thawed and started again (they rejoin
//! by IST). Starting the three takes about 30 s. Every node dies with the thread that started
//! it: start and restart them from the test's own thread.
//!
//! The test user is `gbm_test` with the password `gbm_test_pw`, allowed on every database;
//! the anonymous users `mariadb-install-db` makes are dropped (they would shadow it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::ports::free_port;

/// One node of the cluster.
pub struct Node {
    /// Client port (SQL).
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The node's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running three-node cluster; dropping it kills every node and removes its files.
pub struct Galera {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// Ports of one node: SQL, group communication, IST, SST.
struct NodePorts {
    sql: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
}

impl Galera {
    /// Makes and starts three nodes (the first bootstraps the cluster), waits until all three
    /// are synced, and creates the test user. Panics, saying what is missing, when the
    /// packages are not installed.
    pub fn start() -> Galera {
        let provider = Path::new("/usr/lib/galera/libgalera_smm.so");
        assert!(
            provider.exists() && which("mariadbd") && which("mariadb-install-db"),
            "a Galera test needs mariadbd, mariadb-install-db and {} (apt-get install mariadb-server galera-4 rsync)",
            provider.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("gbm-galera-")
            .tempdir()
            .expect("a directory for the cluster");
        // mariadbd runs as mysql: it must be able to enter the directory.
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        let ports: Vec<NodePorts> = (0..3)
            .map(|_| NodePorts {
                sql: free_port(),
                gcomm: free_port(),
                ist: free_port(),
                sst: free_port(),
            })
            .collect();
        let gcomm: Vec<String> = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.gcomm))
            .collect();
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let node_dir = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&node_dir).unwrap();
            write_cnf(&node_dir, i + 1, p, &gcomm.join(","));
            install_db(&node_dir);
            nodes.push(Node {
                port: p.sql,
                dir: node_dir,
                child: None,
            });
        }
        let mut g = Galera { nodes, _dir: dir };
        g.spawn(0, true);
        g.wait_synced(0, Duration::from_secs(60));
        g.create_test_user();
        for i in 1..3 {
            g.spawn(i, false);
            g.wait_synced(i, Duration::from_secs(90));
        }
        g
    }

    /// `mysql://` URL of node `i` (0-based) for the test user, database `db`.
    pub fn url(&self, i: usize, db: &str) -> String {
        format!(
            "mysql://gbm_test:gbm_test_pw@127.0.0.1:{}/{db}",
            self.nodes[i].port
        )
    }

    /// `mysql://` URL of node `i` for root (over 127.0.0.1, no password).
    pub fn root_url(&self, i: usize) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.nodes[i].port)
    }

    fn spawn(&mut self, i: usize, bootstrap: bool) {
        let node = &mut self.nodes[i];
        let mut cmd = Command::new("mariadbd");
        cmd.arg(format!("--defaults-file={}", node.cnf().display()));
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The node dies with the thread that started it, however the test ends.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        node.child = Some(cmd.spawn().expect("start mariadbd"));
    }

    /// Starts node `i` again after [`Galera::kill9`]: it rejoins the cluster (IST) and is
    /// synced when this returns.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i, false);
        self.wait_synced(i, Duration::from_secs(90));
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes node `i` (`SIGSTOP`): its sockets stay open, nothing answers.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Thaws a frozen node (`SIGCONT`).
    pub fn thaw(&self, i: usize) {
        self.signal(i, "CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].pid().expect("a running node");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid}");
    }

    /// `wsrep_local_state_comment` of node `i` (`Synced` when it serves), or why not.
    pub fn state(&self, i: usize) -> Result<String, String> {
        let url = self.root_url(i);
        block_on(async move {
            let opts = mysql_async::Opts::from_url(&url).map_err(|e| e.to_string())?;
            let connect = mysql_async::Conn::new(opts);
            let mut c = tokio::time::timeout(Duration::from_secs(3), connect)
                .await
                .map_err(|_| "no answer".to_string())?
                .map_err(|e| e.to_string())?;
            let row: Option<(String, String)> = c
                .query_first("SHOW STATUS LIKE 'wsrep_local_state_comment'")
                .await
                .map_err(|e| e.to_string())?;
            let _ = c.disconnect().await;
            row.map(|r| r.1)
                .ok_or_else(|| "no wsrep status".to_string())
        })
    }

    /// Waits until node `i` is `Synced`.
    pub fn wait_synced(&self, i: usize, limit: Duration) {
        let started = Instant::now();
        loop {
            match self.state(i) {
                Ok(s) if s == "Synced" => return,
                other if started.elapsed() > limit => panic!(
                    "Galera node {} not synced after {limit:?} ({other:?}); its log:\n{}",
                    i + 1,
                    tail(&self.nodes[i].log(), 30)
                ),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// Runs `sql` as root on node `i`.
    pub fn root_exec(&self, i: usize, sql: &str) {
        let (url, sql) = (self.root_url(i), sql.to_string());
        block_on(async move {
            let mut c = mysql_async::Conn::from_url(url)
                .await
                .expect("root on a node");
            c.query_drop(sql).await.expect("root statement");
            let _ = c.disconnect().await;
        });
    }

    fn create_test_user(&self) {
        self.root_exec(
            0,
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER IF NOT EXISTS 'gbm_test'@'127.0.0.1' IDENTIFIED BY 'gbm_test_pw'; \
             GRANT ALL ON *.* TO 'gbm_test'@'127.0.0.1'",
        );
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() {
                // A frozen node must be thawed to die cleanly of SIGKILL's cleanup.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.nodes[i].pid().unwrap_or(0).to_string())
                    .status();
            }
            self.kill9(i);
        }
    }
}

fn write_cnf(dir: &Path, n: usize, p: &NodePorts, gcomm: &str) {
    let d = dir.display();
    let cnf = format!(
        "[mysqld]\n\
         user=mysql\n\
         datadir={d}/data\n\
         socket={d}/sock\n\
         port={sql}\n\
         bind-address=127.0.0.1\n\
         pid-file={d}/pid\n\
         log-error={d}/err.log\n\
         binlog_format=ROW\n\
         default_storage_engine=InnoDB\n\
         innodb_autoinc_lock_mode=2\n\
         innodb_buffer_pool_size=64M\n\
         innodb_log_file_size=48M\n\
         performance_schema=OFF\n\
         skip-name-resolve\n\
         wsrep_on=ON\n\
         wsrep_provider=/usr/lib/galera/libgalera_smm.so\n\
         wsrep_cluster_name=gbm\n\
         wsrep_cluster_address=gcomm://{gcomm}\n\
         wsrep_node_address=127.0.0.1:{gc}\n\
         wsrep_provider_options=\"gmcast.listen_addr=tcp://127.0.0.1:{gc};ist.recv_addr=127.0.0.1:{ist};gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;evs.install_timeout=PT4S\"\n\
         wsrep_sst_method=rsync\n\
         wsrep_sst_receive_address=127.0.0.1:{sst}\n\
         wsrep_node_name=n{n}\n",
        sql = p.sql,
        gc = p.gcomm,
        ist = p.ist,
        sst = p.sst,
    );
    std::fs::write(dir.join("my.cnf"), cnf).unwrap();
    let _ = Command::new("chown")
        .arg("-R")
        .arg("mysql:mysql")
        .arg(dir)
        .status();
}

fn install_db(dir: &Path) {
    let out = Command::new("mariadb-install-db")
        .arg("--user=mysql")
        .arg(format!("--datadir={}/data", dir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .output()
        .expect("run mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f` on a small runtime of its own (callers may be inside another runtime's
/// blocking context, or none).
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    })
    .join()
    .expect("the Galera helper's thread")
}
