//! A network namespace joined to the root namespace by a veth pair with private /30
//! addresses (10.213.x.y), so ICMP to [`Netns::host`] reaches a real kernel through a real
//! interface where nftables can drop packets. Names and addresses are unique per process and
//! fixture, so tests can run in parallel; everything is removed on drop.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

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

/// An echo responder inside a namespace that answers every echo request after a delay (the
/// kernel's own replies are switched off). Stops on drop.
pub struct SlowEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SlowEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Netns {
    /// Replaces the namespace kernel's echo replies with ones sent `delay` after each
    /// request, from a raw socket opened inside the namespace.
    pub fn slow_echo(&self, delay: Duration) -> SlowEcho {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            "net.ipv4.icmp_echo_ignore_all=1",
        ]);
        let path = format!("/run/netns/{}", self.name);
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let peer = Ipv4Addr::from(u32::from(self.host) - 1);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
                .expect("raw ICMP socket in the namespace");
            // Bounds each wait so the stop flag is seen.
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                let Ok(n) = (&sock).read(&mut buf) else {
                    continue;
                };
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n < ihl + 8 || buf[ihl] != 8 {
                    continue; // not an echo request
                }
                let mut reply = buf[ihl..n].to_vec();
                reply[0] = 0;
                reply[2..4].copy_from_slice(&[0, 0]);
                let sum = checksum(&reply);
                reply[2..4].copy_from_slice(&sum.to_be_bytes());
                let sock = sock.try_clone().unwrap();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let to = SockAddr::from(SocketAddrV4::new(peer, 0));
                    let _ = sock.send_to(&reply, &to);
                });
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("echo responder started");
        SlowEcho {
            stop,
            thread: Some(thread),
        }
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
