//! A real DNS server (dnsmasq, started with a config the test writes) and hostile UDP
//! servers built on hickory-proto.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// dnsmasq on 127.0.0.1 and ::1, answering only from its config (never forwarding). Stops on
/// drop.
pub struct Dnsmasq {
    pub port: u16,
    child: Child,
    dir: TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The zone every DNS test uses.
pub fn test_zone() -> String {
    let mut z = String::from(
        "host-record=a.test,10.0.0.1\n\
         host-record=web1.test,127.0.0.11,::11\n\
         cname=www.test,web1.test\n\
         mx-host=test,mail.test,10\n\
         host-record=mail.test,127.0.0.25\n\
         txt-record=test,\"v=spf1 -all\"\n\
         txt-record=_monitor.test,\"token=abc123\",\"second string\"\n\
         srv-host=_http._tcp.test,web1.test,8080,0,10\n",
    );
    // CAA 0 issue "ca.test" (type 257), NS and SOA of zone.test, as raw records.
    writeln!(
        z,
        "dns-rr=caa.test,257,{}",
        hex(&caa_rdata(0, "issue", "ca.test"))
    )
    .unwrap();
    writeln!(z, "dns-rr=zone.test,2,{}", hex(&wire_name("ns1.zone.test"))).unwrap();
    let mut soa = wire_name("ns1.zone.test");
    soa.extend(wire_name("hostmaster.zone.test"));
    for n in [2026112101u32, 3600, 600, 86400, 300] {
        soa.extend(n.to_be_bytes());
    }
    writeln!(z, "dns-rr=zone.test,6,{}", hex(&soa)).unwrap();
    // Five 250-byte TXT records: over 512 bytes, so the UDP answer is truncated.
    for i in 0..5 {
        writeln!(z, "txt-record=big.test,\"{}{}\"", i, "y".repeat(249)).unwrap();
    }
    // Everything else under .test is NXDOMAIN.
    z.push_str("local=/test/\n");
    z
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend(label.as_bytes());
    }
    out.push(0);
    out
}

fn caa_rdata(flags: u8, tag: &str, value: &str) -> Vec<u8> {
    let mut out = vec![flags, tag.len() as u8];
    out.extend(tag.as_bytes());
    out.extend(value.as_bytes());
    out
}

/// A port free for both UDP and TCP on 127.0.0.1 and ::1 right now, from the shared allocator
/// (below the ephemeral range), so that no outgoing socket takes it before dnsmasq binds it.
fn free_port() -> u16 {
    crate::ports::free_port_where(|port| {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
            && std::net::TcpListener::bind(("::1", port)).is_ok()
    })
}

impl Dnsmasq {
    /// Starts dnsmasq with [`test_zone`] and waits (bounded) until it accepts connections.
    pub fn start() -> Dnsmasq {
        super::require_tool("dnsmasq", "dnsmasq-base");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("dnsmasq.conf");
        let text = format!(
            "port={port}\nlisten-address=127.0.0.1\nlisten-address=::1\nbind-interfaces\n\
             no-resolv\nno-hosts\nno-poll\nno-dhcp-interface=\nuser=root\n{}",
            test_zone()
        );
        std::fs::write(&conf, text).expect("write dnsmasq.conf");
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("log file");
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        let mut d = Dnsmasq { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("dnsmasq exited ({status}): {}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

/// How a hostile UDP "DNS server" answers each datagram.
#[derive(Clone, Copy, Debug)]
pub enum Hostile {
    /// Never answers.
    Silent,
    /// Answers (`A 10.9.9.9`) after this delay: the slow answer under test.
    Slow(Duration),
    /// Answers with bytes that are not a DNS message.
    Garbage,
    /// Answers first with the wrong id, then with garbage, then the real answer
    /// (`A 10.9.9.9`).
    NoiseThenAnswer,
}

/// A UDP server on 127.0.0.1 with the given behaviour; stops on drop.
pub struct HostileDns {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HostileDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileDns {
    pub async fn start(kind: Hostile) -> HostileDns {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind udp");
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                match kind {
                    Hostile::Silent => {}
                    Hostile::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        let _ = socket
                            .send_to(&answer(&query).to_vec().unwrap(), peer)
                            .await;
                    }
                    Hostile::Garbage => {
                        let _ = socket.send_to(b"\xde\xad\xbe\xef garbage", peer).await;
                    }
                    Hostile::NoiseThenAnswer => {
                        let mut wrong = answer(&query);
                        wrong.set_id(query.id().wrapping_add(1));
                        let _ = socket.send_to(&wrong.to_vec().unwrap(), peer).await;
                        let _ = socket.send_to(b"\x00\x01garbage", peer).await;
                        let _ = socket
                            .send_to(&answer(&query).to_vec().unwrap(), peer)
                            .await;
                    }
                }
            }
        });
        HostileDns { addr, task }
    }
}

fn answer(query: &Message) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true);
    for q in query.queries() {
        m.add_query(q.clone());
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(10, 9, 9, 9))),
        ));
    }
    m
}
