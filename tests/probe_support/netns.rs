//! A network namespace joined to the root namespace by a veth pair with private /30
//! addresses (10.213.x.y), so ICMP to [`Netns::host`] reaches a real kernel through a real
//! interface where nftables can drop packets. Names and addresses are unique per process and
//! fixture, so tests can run in parallel; everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    /// The namespace side's interface.
    pub inner_if: String,
    /// The namespace's address, reachable from the root namespace.
    pub host: Ipv4Addr,
}

#[track_caller]
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn create() -> Netns {
        super::require_root("network namespaces");
        super::require_tool("ip", "iproute2");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("gbm-probe-{pid}-{n}");
        let outer_if = format!("gb{}r{n}", pid % 10_000_000);
        let inner_if = format!("gb{}n{n}", pid % 10_000_000);
        // 10.213.0.0/16 holds 16384 /30 blocks; pick one from the pid and the counter.
        let block = ((pid % 4096) * 4 + n) % 16384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        let outer = Ipv4Addr::from(base + 1);
        let host = Ipv4Addr::from(base + 2);

        // A namespace left over by a killed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            inner_if: inner_if.clone(),
            host,
        };
        run(&[
            "ip", "link", "add", &outer_if, "type", "veth", "peer", "name", &inner_if, "netns",
            &name,
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{outer}/30"),
            "dev",
            &outer_if,
        ]);
        run(&["ip", "link", "set", &outer_if, "up"]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &format!("{host}/30"),
            "dev",
            &inner_if,
        ]);
        run(&["ip", "-n", &name, "link", "set", &inner_if, "up"]);
        ns
    }

    /// Loads an nftables ruleset inside the namespace.
    #[track_caller]
    pub fn nft(&self, ruleset: &str) {
        super::require_tool("nft", "nftables");
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, ruleset).expect("write nft ruleset");
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "nft",
            "-f",
            path.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(path);
    }

    /// Drops ICMP echo replies leaving the namespace: `numgen inc mod 5 < 2` drops 2 of every
    /// 5 (deterministic 40 %), `1 == 1`-style conditions drop all.
    pub fn drop_icmp_egress(&self, condition: &str) {
        self.nft(&format!(
            "table netdev impair {{\n  chain egr {{\n    type filter hook egress device \"{}\" priority 0; policy accept;\n    meta l4proto icmp {condition} drop\n  }}\n}}\n",
            self.inner_if
        ));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end and with it the peer in the root
        // namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
