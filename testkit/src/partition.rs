//! Cutting one node process off from chosen ports while it keeps every other path: the process
//! runs in a cgroup (v2) of its own, and an nftables rule drops every packet that sockets of
//! that cgroup send to those ports. Needs root, a cgroup2 mount and nftables; without them the
//! test fails and says what is missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(at))
        })
        .expect("no cgroup2 mount: the partition tests need one (they run as root on Linux)")
}

/// A cgroup directly under the cgroup2 root, removed (anything still in it killed) on drop.
pub struct Cgroup {
    dir: PathBuf,
    /// The path nftables resolves, relative to /sys/fs/cgroup.
    nft_path: String,
}

/// Removes what an earlier test process that was killed outright (no unwinding) left behind:
/// cgroups (their processes killed first) and nftables tables named after a dead process.
fn sweep_stale(root: &std::path::Path) {
    let dead = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('_').next())
            .is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists())
    };
    if let Ok(dir) = std::fs::read_dir(root) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name, "gbm_test_") {
                remove_cgroup(&entry.path());
            }
        }
    }
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.strip_prefix("table inet ")
                && dead(name, "gbm_cut_")
            {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", name])
                    .status();
            }
        }
    }
}

impl Cgroup {
    /// Creates a cgroup of its own under the cgroup2 root.
    pub fn create() -> Cgroup {
        let root = cgroup2_mount();
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep_stale(&root));
        let name = unique("gbm_test");
        let dir = root.join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e} (needs root)", dir.display()));
        let rel = root
            .strip_prefix("/sys/fs/cgroup")
            .expect("cgroup2 mounted under /sys/fs/cgroup");
        let nft_path = rel.join(&name).to_string_lossy().into_owned();
        Cgroup { dir, nft_path }
    }

    /// `program args...` run so that the process enters this cgroup before it starts (its
    /// sockets then all belong to the cgroup).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.dir)
            .arg(program);
        c
    }
}

impl Drop for Cgroup {
    /// Its process has been killed by then ([`crate::cluster::Proc`] drops it last).
    fn drop(&mut self) {
        remove_cgroup(&self.dir);
    }
}

/// Kills whatever is still in the cgroup at `dir`, then removes it (waiting, bounded, while
/// the kill completes).
fn remove_cgroup(dir: &std::path::Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(16) => {
                // EBUSY: the kill has not finished yet.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return,
        }
    }
    eprintln!("cgroup {} could not be removed", dir.display());
}

/// An nftables table dropping what sockets of a cgroup send to some TCP ports; removed on
/// drop (the cut heals).
pub struct Cut {
    table: String,
}

impl Cut {
    pub fn new(cgroup: &Cgroup, ports: &[u16]) -> Cut {
        let table = unique("gbm_cut");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  socket cgroupv2 level 1 \"{}\" tcp dport {{ {} }} drop\n }}\n}}\n",
            cgroup.nft_path,
            ports.join(", ")
        );
        nft_apply(&rules);
        let cut = Cut { table };
        // The rule counts cgroup levels from the kernel's root: inside a cgroup namespace it
        // would match nothing. Make sure a connection from the cgroup to a listening port
        // hangs (dropped), rather than connecting or being refused.
        if let Some(port) = ports.first() {
            let probe = cgroup
                .command("bash")
                .arg("-c")
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run bash");
            let exit = exit_within(probe, std::time::Duration::from_secs(1));
            assert!(
                exit.is_none(),
                "the nftables rule did not cut the cgroup off from port {port}: the connection \
                 attempt ended at once ({exit:?})"
            );
        }
        cut
    }
}

/// How `child` exited if it did within `limit`; `None` (and killed) if it was still running.
fn exit_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Loads an nftables ruleset given as text (needs root and the nftables package).
pub fn nft_apply(rules: &str) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (Debian package nftables; the test runs as root)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}
