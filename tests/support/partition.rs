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

/// A cgroup directly under the cgroup2 root, removed (its processes moved back to the root)
/// on drop.
pub struct Cgroup {
    dir: PathBuf,
    /// The path nftables resolves, relative to /sys/fs/cgroup.
    nft_path: String,
}

impl Cgroup {
    pub fn new() -> Cgroup {
        let root = cgroup2_mount();
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
    fn drop(&mut self) {
        let root = self.dir.parent().unwrap().join("cgroup.procs");
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write(&root, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
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
        nft(&["-f", "-"], Some(&rules));
        Cut { table }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

fn nft(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (Debian package nftables)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
