//! A network namespace whose system resolver is dnsmasq, for checks that resolve names the
//! way a worker does (getaddrinfo through `/etc/resolv.conf`), with no test hook in the
//! probe code.
//!
//! `ip netns exec NAME` bind-mounts `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`
//! for the command it runs, so a test binary re-run there as a child (one `#[ignore]`d test,
//! selected by name) resolves from the dnsmasq started on 127.0.0.1:53 inside the namespace,
//! where the whole of 127.0.0.0/8 is the namespace's own loopback. Everything is removed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

use super::netns::Netns;

/// Set in the child's environment; the child test refuses to run without it.
pub const CHILD_ENV: &str = "GBM_RESOLVER_NETNS_CHILD";

pub struct ResolverNetns {
    pub netns: Netns,
    etc_dir: PathBuf,
    dnsmasq: Child,
    dir: TempDir,
}

impl Drop for ResolverNetns {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = std::fs::remove_dir_all(&self.etc_dir);
        // Only removed when no other namespace's files are left in it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

impl ResolverNetns {
    /// A namespace with dnsmasq answering `config` (dnsmasq lines such as
    /// `host-record=...`) and nothing else under `.test`.
    pub fn start(config: &str) -> ResolverNetns {
        super::require_tool("dnsmasq", "dnsmasq-base");
        let netns = Netns::create();
        let etc_dir = PathBuf::from("/etc/netns").join(&netns.name);
        std::fs::create_dir_all(&etc_dir).expect("create /etc/netns/NAME");
        std::fs::write(
            etc_dir.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n",
        )
        .expect("write the namespace's resolv.conf");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("dnsmasq.conf");
        std::fs::write(
            &conf,
            format!(
                "port=53\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 no-poll\nuser=root\n{config}\nlocal=/test/\n"
            ),
        )
        .expect("write dnsmasq.conf");
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log file");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq in the namespace");
        ResolverNetns {
            netns,
            etc_dir,
            dnsmasq,
            dir,
        }
    }

    /// Runs the test `name` (its full path in the binary) of this test binary inside the namespace (it must be
    /// `#[ignore]`d so ordinary runs skip it) and returns what it printed.
    pub fn run_test(&self, name: &str) -> Output {
        let exe = std::env::current_exe().expect("current test binary");
        Command::new("ip")
            .args(["netns", "exec", &self.netns.name])
            .arg(exe)
            .args([
                name,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run the child test")
    }

    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}
