//! The `icmp` check: native ICMP echo with surge-ping (no `ping` subprocess).
//!
//! Timing: `count` echo requests (default 5) go out [`PACKET_INTERVAL`] apart (200 ms, so five
//! packets take 0.8 s, not gobearmon's 4 s at ping's 1 s interval); a reply later than
//! [`PACKET_TIMEOUT`] (2 s, like `ping -W 2`) counts as lost; the run never takes longer
//! than [`RUN_DEADLINE`] (10 s, gobearmon's `ping -w 10`). A five-packet run to a dead host
//! therefore ends after about 2.8 s.
//!
//! Verdict: `packetloss: false` fails only at 100 % loss, `packetloss: true` above 30 %, and
//! `max_loss: N` when more than N packets are lost (100 % always fails). The message is
//! gobearmon's `ping: N% packet loss`.
//!
//! One socket per address family is shared by every run of a [`super::ProbeContext`]: raw
//! sockets see every ICMP packet the host receives, so a socket per run would make each
//! reply wake every concurrent run. Sequence numbers come from one counter per socket so
//! concurrent runs never wait for the same reply.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use surge_ping::{Client, Config, ICMP, PingIdentifier, PingSequence, SurgeError};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::addrs::IpFamily;
use super::addrs::IpPolicy;
use super::gojson::Fields;
use super::outcome::{Details, Finding, ProbeError, is_local_exhaustion, online_within};
use super::params::{clamp_response_ms, ip_policy, max_response_ms};
use serde::{Deserialize, Serialize};

/// ICMP echo requests per run when `count` is not given.
pub const DEFAULT_PING_COUNT: u32 = 5;
/// Upper bound of `count`: every packet must fit in the run's deadline.
pub const MAX_PING_COUNT: u32 = 20;
/// `count` as a run uses it: 0 (unset) -> [`DEFAULT_PING_COUNT`], at most [`MAX_PING_COUNT`].
fn clamp_ping_count(count: u32) -> u32 {
    match count {
        0 => DEFAULT_PING_COUNT,
        c => c.min(MAX_PING_COUNT),
    }
}

/// How many lost echo replies an `icmp` run tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossRule {
    /// `packetloss: false` (the default): only 100 % loss fails.
    AllLost,
    /// `packetloss: true`: more than 30 % loss fails.
    Over30Percent,
    /// `max_loss: N`: more than N lost packets fail (and 100 % loss always fails).
    MaxLost(u32),
}

/// `icmp`: echo requests with surge-ping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IcmpSpec {
    /// Host name or IP address.
    pub target: String,
    pub force_ip: IpFamily,
    /// Echo requests per run (default 5, 1..=20).
    pub count: u32,
    pub loss_rule: LossRule,
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// When set, a mean round trip longer than this many ms fails.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
}

impl IcmpSpec {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<IcmpSpec, String> {
        let target = f.string("target")?.unwrap_or_default();
        let packetloss = f.bool("packetloss")?.unwrap_or(false);
        let force_ip = IpFamily::from_force_ip(f.int("force_ip")?.unwrap_or(0));
        // Negative counts are unset, as in gobearmon; `validate` applies the bounds.
        let count = u32::try_from(f.int("count")?.unwrap_or(0).max(0)).unwrap_or(u32::MAX);
        let max_loss = f.int("max_loss")?;
        let loss_rule = match max_loss {
            // Clamped to `count` by `validate`.
            Some(n) => LossRule::MaxLost(u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
            None if packetloss => LossRule::Over30Percent,
            None => LossRule::AllLost,
        };
        Ok(IcmpSpec {
            target,
            force_ip,
            count,
            loss_rule,
            ip_policy: ip_policy(f)?,
            max_response_ms: max_response_ms(f)?,
        })
    }

    pub(crate) fn validate(&mut self) -> Result<(), String> {
        if self
            .target
            .chars()
            .any(|c| matches!(c, '$' | '&' | '<' | '>' | '!' | '/' | '\\' | '"' | '\''))
        {
            return Err("ping target contains invalid characters".to_owned());
        }
        self.count = clamp_ping_count(self.count);
        if let LossRule::MaxLost(n) = &mut self.loss_rule {
            *n = (*n).min(self.count);
        }
        self.max_response_ms = clamp_response_ms(self.max_response_ms);
        Ok(())
    }
}

/// Time between two echo requests of one run.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(200);
/// A reply later than this after its request counts as lost.
pub const PACKET_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a whole run, resolution included.
pub const RUN_DEADLINE: Duration = Duration::from_secs(10);

const PAYLOAD: &[u8] = b"gobearmon probe.";

/// The shared ICMP sockets of a [`super::ProbeContext`], one per family, opened on first use.
#[derive(Default)]
pub(crate) struct Pingers {
    v4: tokio::sync::Mutex<Option<Pinger>>,
    v6: tokio::sync::Mutex<Option<Pinger>>,
}

impl Pingers {
    async fn get(&self, ip: std::net::IpAddr) -> Result<Pinger, ProbeError> {
        let slot = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let mut guard = slot.lock().await;
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        // A failure is not cached: permissions or limits may change.
        let p = Pinger::new(ip.is_ipv6())?;
        *guard = Some(p.clone());
        Ok(p)
    }
}

/// A shared ICMP socket of one family with its sequence counter.
#[derive(Clone)]
pub(crate) struct Pinger {
    // Behind an Arc: dropping any clone of a surge-ping `Client` shuts the shared socket down
    // for all clones.
    client: Arc<Client>,
    next_seq: Arc<AtomicU16>,
    next_ident: Arc<AtomicU16>,
}

impl Pinger {
    pub(crate) fn new(v6: bool) -> Result<Pinger, ProbeError> {
        let kind = if v6 { ICMP::V6 } else { ICMP::V4 };
        // surge-ping tries an unprivileged datagram ICMP socket first and falls back to raw.
        let config = Config::builder().kind(kind).build();
        let client = Client::new(&config).map_err(|e| {
            if is_local_exhaustion(&e) {
                ProbeError::Resources(e)
            } else {
                ProbeError::IcmpSocket(e)
            }
        })?;
        let socket = client.get_socket();
        tune_socket(
            socket.get_native_sock(),
            v6,
            socket.get_type() == socket2::Type::RAW,
        );
        // Random starting points: raw sockets of other contexts and processes see our replies
        // too, and must not take them for theirs.
        let [a, b, c, d] = random_bytes();
        Ok(Pinger {
            client: Arc::new(client),
            next_seq: Arc::new(AtomicU16::new(u16::from_be_bytes([a, b]))),
            next_ident: Arc::new(AtomicU16::new(u16::from_be_bytes([c, d]))),
        })
    }
}

fn random_bytes() -> [u8; 4] {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // Without the OS generator, the clock and the pid still spread the starting points.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    b
}

/// Receive buffer asked for on the shared ICMP sockets (4 MiB): hundreds of runs in flight
/// must not lose replies to a full socket buffer.
const RECV_BUFFER: usize = 4 << 20;

/// Deepens the receive buffer and, on raw sockets (which get a copy of every ICMP packet the
/// host receives), installs the kernel filter that passes only echo replies. Best effort:
/// the check works without either.
#[cfg(target_os = "linux")]
fn tune_socket(fd: std::os::fd::RawFd, v6: bool, raw: bool) {
    use std::mem::size_of;
    use std::os::fd::BorrowedFd;

    // Linux values (asm-generic/socket.h, linux/icmp.h, linux/icmpv6.h).
    const SO_RCVBUFFORCE: libc::c_int = 33;
    const ICMP_FILTER: libc::c_int = 1;
    const ICMPV6_FILTER: libc::c_int = 1;
    const ECHO_REPLY_V4: u32 = 0;
    const ECHO_REPLY_V6: u32 = 129;

    fn set<T>(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
        // SAFETY: `value` points to a live, initialised `T` of exactly the length passed, and
        // setsockopt only reads it; a bad fd or option only makes the call fail.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            ) == 0
        }
    }

    // Root may exceed net.core.rmem_max; others get what SO_RCVBUF allows.
    let size = RECV_BUFFER as libc::c_int;
    if !set(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, &size) {
        // SAFETY: the fd belongs to the client created just before and stays open for this
        // call; SockRef does not close it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = socket2::SockRef::from(&borrowed).set_recv_buffer_size(RECV_BUFFER);
    }
    if raw {
        if v6 {
            // A set bit blocks that type.
            let mut filter = [u32::MAX; 8];
            filter[(ECHO_REPLY_V6 >> 5) as usize] &= !(1 << (ECHO_REPLY_V6 & 31));
            set(fd, libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &filter);
        } else {
            let filter: u32 = !(1 << ECHO_REPLY_V4);
            set(fd, libc::SOL_RAW, ICMP_FILTER, &filter);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn tune_socket(_fd: std::os::fd::RawFd, _v6: bool, _raw: bool) {}

pub(crate) async fn run(spec: &IcmpSpec, pingers: &Pingers) -> Result<Finding, ProbeError> {
    let deadline = Instant::now() + RUN_DEADLINE;
    let lookup = super::addrs::lookup(&spec.target, 0, spec.force_ip, deadline);
    super::addrs::each(spec.ip_policy, lookup, |pin| {
        run_at(spec, pingers, pin, deadline)
    })
    .await
}

/// One series of echo requests; with `pin`, to that address.
async fn run_at(
    spec: &IcmpSpec,
    pingers: &Pingers,
    pin: Option<std::net::SocketAddr>,
    deadline: Instant,
) -> Result<Finding, ProbeError> {
    let mut details = Details::default();
    let resolved = match pin {
        Some(addr) => Ok(addr.ip()),
        None => resolve(&spec.target, spec.force_ip, deadline).await,
    };
    let ip = match resolved {
        Ok(ip) => ip,
        Err(message) => return Ok(Finding::offline(message, details)),
    };
    details.address = Some(ip.to_string());
    let pinger = pingers.get(ip).await?;

    // Validated definitions hold 1..=20; the clamp keeps any other from allocating a
    // future per packet beyond that.
    let count = spec.count.clamp(1, MAX_PING_COUNT);
    let rtts = ping_series(&pinger, ip, count, deadline).await?;
    let mean = (!rtts.is_empty()).then(|| rtts.iter().sum::<Duration>() / rtts.len() as u32);
    let lost = count - rtts.len() as u32;
    describe_replies(&mut details, count, &rtts);
    if fails(spec.loss_rule, count, lost) {
        // ping prints whole percents for whole results; truncate like it does.
        let percent = lost * 100 / count;
        Ok(Finding::offline(
            format!("ping: {percent}% packet loss"),
            details,
        ))
    } else {
        Ok(online_within(
            spec.max_response_ms,
            mean.unwrap_or_default(),
            details,
        ))
    }
}

/// `count` echo requests to `ip`, spaced to fit before `deadline`: the round trip of each
/// reply (lost packets have none).
async fn ping_series(
    pinger: &Pinger,
    ip: std::net::IpAddr,
    count: u32,
    deadline: Instant,
) -> Result<Vec<Duration>, ProbeError> {
    // Every packet, and the wait for its reply, must fit before the deadline.
    let room = RUN_DEADLINE.saturating_sub(PACKET_TIMEOUT + Duration::from_secs(1));
    let interval = PACKET_INTERVAL.min(room / count);
    let ident = PingIdentifier(pinger.next_ident.fetch_add(1, Ordering::Relaxed));
    let start = Instant::now();

    let packets = (0..count).map(|i| {
        let pinger = pinger.clone();
        let seq = PingSequence(pinger.next_seq.fetch_add(1, Ordering::Relaxed));
        async move {
            // The first packet goes at once: even an elapsed timer waits for the timer
            // driver's next millisecond tick.
            if i > 0 {
                sleep_until(start + interval * i).await;
            }
            let mut p = pinger.client.pinger(ip, ident).await;
            p.timeout(PACKET_TIMEOUT);
            match timeout_at(deadline, p.ping(seq, PAYLOAD)).await {
                Ok(Ok((_, rtt))) => Ok(Some(rtt)),
                Ok(Err(SurgeError::ClientDestroyed)) => Err(ProbeError::IcmpSocket(
                    std::io::Error::other("ICMP client destroyed"),
                )),
                // Timeouts, send errors (unreachable networks, filtered packets) and
                // duplicates all mean no reply: the packet is lost, as ping counts it.
                Ok(Err(_)) | Err(_) => Ok(None),
            }
        }
    });
    let mut rtts = Vec::with_capacity(count as usize);
    for r in join_all(packets).await {
        if let Some(rtt) = r? {
            rtts.push(rtt);
        }
    }

    Ok(rtts)
}

/// Packets sent and received, loss and round trips, for the details.
fn describe_replies(details: &mut Details, count: u32, rtts: &[Duration]) {
    let received = rtts.len() as u32;
    let lost = count - received;
    details.packets_sent = Some(count);
    details.packets_received = Some(received);
    details.loss_percent = Some(f64::from(lost) * 100.0 / f64::from(count));
    if !rtts.is_empty() {
        // Milliseconds with microsecond resolution.
        let ms = |d: Duration| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let total: Duration = rtts.iter().sum();
        details.rtt_min_ms = rtts.iter().copied().min().map(ms);
        details.rtt_max_ms = rtts.iter().copied().max().map(ms);
        details.rtt_avg_ms = Some(ms(total / rtts.len() as u32));
    }
}

/// Whether `lost` of `sent` packets fails the check.
pub(crate) fn fails(rule: LossRule, sent: u32, lost: u32) -> bool {
    if lost >= sent {
        return true;
    }
    match rule {
        LossRule::AllLost => false,
        LossRule::Over30Percent => u64::from(lost) * 100 > 30 * u64::from(sent),
        LossRule::MaxLost(n) => lost > n,
    }
}

async fn resolve(target: &str, family: IpFamily, deadline: Instant) -> Result<IpAddr, String> {
    if target.is_empty() {
        return Err("ping: missing target".to_owned());
    }
    let literal = target
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(target);
    let candidates: Vec<IpAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match timeout_at(deadline, tokio::net::lookup_host((target, 0))).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            Ok(Err(e)) => return Err(format!("ping: unknown host {target}: {e}")),
            Err(_) => return Err(format!("ping: unknown host {target}: lookup timed out")),
        },
    };
    let which = match family {
        IpFamily::V4 => "IPv4 ",
        IpFamily::V6 => "IPv6 ",
        IpFamily::Any => "",
    };
    candidates
        .into_iter()
        .find(|ip| family.allows(*ip))
        .ok_or_else(|| format!("ping: no {which}address for {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rules() {
        // packetloss false: only 100 % fails.
        assert!(!fails(LossRule::AllLost, 5, 4));
        assert!(fails(LossRule::AllLost, 5, 5));
        // packetloss true: more than 30 %, so 2 of 5 fails and 1 of 5 does not.
        assert!(!fails(LossRule::Over30Percent, 5, 1));
        assert!(fails(LossRule::Over30Percent, 5, 2));
        assert!(!fails(LossRule::Over30Percent, 10, 3));
        assert!(fails(LossRule::Over30Percent, 10, 4));
        // max_loss: that many lost packets are allowed; all lost always fails.
        assert!(!fails(LossRule::MaxLost(2), 5, 2));
        assert!(fails(LossRule::MaxLost(2), 5, 3));
        assert!(fails(LossRule::MaxLost(5), 5, 5));
        assert!(!fails(LossRule::MaxLost(0), 5, 0));
        assert!(fails(LossRule::MaxLost(0), 5, 1));
    }

    /// Needs root (raw ICMP sockets), as CI has.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn shared_sockets_are_tuned() {
        fn get<T: Default>(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> T {
            let mut value = T::default();
            let mut len = std::mem::size_of::<T>() as libc::socklen_t;
            // SAFETY: `value` is a live `T` and `len` its exact size; getsockopt writes at
            // most `len` bytes.
            let rc = unsafe {
                libc::getsockopt(fd, level, name, (&mut value as *mut T).cast(), &mut len)
            };
            assert_eq!(rc, 0, "getsockopt({level}, {name})");
            value
        }
        for v6 in [false, true] {
            let p = Pinger::new(v6).expect("ICMP socket (run the tests as root)");
            let socket = p.client.get_socket();
            let fd = socket.get_native_sock();
            let rcvbuf: libc::c_int = get(fd, libc::SOL_SOCKET, libc::SO_RCVBUF);
            assert!(rcvbuf as usize >= RECV_BUFFER, "SO_RCVBUF {rcvbuf}");
            if socket.get_type() == socket2::Type::RAW {
                if v6 {
                    let filter: [u32; 8] = get(fd, libc::IPPROTO_ICMPV6, 1);
                    assert_eq!(filter[4], !(1 << 1), "only type 129 passes");
                    assert_eq!(filter[0], u32::MAX);
                } else {
                    let filter: u32 = get(fd, libc::SOL_RAW, 1);
                    assert_eq!(filter, !1, "only echo replies pass");
                }
            }
        }
    }

    #[tokio::test]
    async fn family_restrictions() {
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            resolve("127.0.0.1", IpFamily::V4, far).await.unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve("[::1]", IpFamily::Any, far).await.unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1", IpFamily::V6, far).await.unwrap_err(),
            "ping: no IPv6 address for 127.0.0.1"
        );
        assert_eq!(
            resolve("::1", IpFamily::V4, far).await.unwrap_err(),
            "ping: no IPv4 address for ::1"
        );
    }
}
