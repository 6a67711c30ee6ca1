//! The `dns` check: one query to a chosen nameserver, built and parsed with hickory-proto and
//! sent over tokio sockets. A resolver library is not used on purpose: the check must ask one
//! given server, see its raw answer section and response code, and not cache or chase.
//!
//! As in gobearmon: RD set, no EDNS, the server is `server` or else `[dns] server` (else the
//! local host), port 53 appended when missing, any answer section counts (a CNAME in an `a`
//! answer too), `expect` is a case-sensitive substring of an answer's presentation line
//! `name\tTTL\tIN\tTYPE\trdata`, and the response code alone fails nothing (NXDOMAIN and
//! SERVFAIL have no answers, so they give `query returned no results`). Fixed: IPv6 server
//! literals (`::1`, `[::1]:53`), `cname` and `caa`, a truncated UDP answer retried over TCP,
//! the response code reported.
//!
//! Timing: the UDP query is sent again after [`UDP_RETRY_AFTER`] without an answer and
//! given up after [`UDP_TIMEOUT`] (gobearmon's 2 s read); the TCP retry has [`TCP_TIMEOUT`];
//! a run never exceeds [`TOTAL_TIMEOUT`]. Datagrams that are not the answer to this query
//! (another id, another question, garbage) are ignored while waiting.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::gojson::Fields;
use super::net::io_text;
use super::outcome::{Details, Finding, ProbeError, is_local_exhaustion, online_within};
use super::params::max_response_ms;
use serde::{Deserialize, Serialize};

/// The record types a `dns` check can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecordType {
    A,
    Aaaa,
    Cname,
    Caa,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    /// Also what `spf` asks for (the SPF record type is obsolete; SPF lives in TXT).
    Txt,
}

impl DnsRecordType {
    /// gobearmon's names, case-insensitive.
    pub fn parse(s: &str) -> Option<DnsRecordType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "a" => DnsRecordType::A,
            "aaaa" => DnsRecordType::Aaaa,
            "cname" => DnsRecordType::Cname,
            "caa" => DnsRecordType::Caa,
            "mx" => DnsRecordType::Mx,
            "ns" => DnsRecordType::Ns,
            "ptr" => DnsRecordType::Ptr,
            "soa" => DnsRecordType::Soa,
            "srv" => DnsRecordType::Srv,
            "txt" | "spf" => DnsRecordType::Txt,
            _ => return None,
        })
    }
}

/// `dns`: one query to a chosen nameserver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DnsSpec {
    /// `ip`, `ip:port`, `[v6]:port`, `host` or `host:port`; `None` uses the worker's
    /// `[dns] server`.
    pub server: Option<String>,
    /// The name asked for, as given (a trailing dot is added when querying).
    pub name: String,
    pub record_type: DnsRecordType,
    /// When not empty, some answer's presentation line must contain it.
    pub expect: String,
    /// When set, an answer (UDP, plus the TCP retry) later than this many ms fails.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
}

impl DnsSpec {
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<DnsSpec, String> {
        let server = f.string("server")?.filter(|s| !s.is_empty());
        let name = f.string("name")?.unwrap_or_default();
        let rtype = f.string("type")?.unwrap_or_default();
        let expect = f.string("expect")?.unwrap_or_default();
        let record_type =
            DnsRecordType::parse(&rtype).ok_or_else(|| format!("invalid record type: {rtype}"))?;
        Ok(DnsSpec {
            server,
            name,
            record_type,
            expect,
            max_response_ms: max_response_ms(f)?,
        })
    }
}

/// Without an answer by then, the UDP query is sent once more.
pub const UDP_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Wait for a UDP answer.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the TCP retry (connect, send, read).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on a whole run.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(6);

/// Answers listed in the details.
const MAX_LISTED_ANSWERS: usize = 32;

pub(crate) async fn run(
    spec: &DnsSpec,
    default_server: Option<&str>,
) -> Result<Finding, ProbeError> {
    let deadline = Instant::now() + TOTAL_TIMEOUT;
    let mut details = Details::default();
    let failed =
        |e: String, details: Details| Ok(Finding::offline(format!("query failed: {e}"), details));

    let server_text = spec.server.as_deref().or(default_server).unwrap_or("");
    let server = match server_address(server_text, deadline).await {
        Ok(a) => a,
        Err(e) => return failed(e, details),
    };
    details.address = Some(server.to_string());

    let name = match query_name(&spec.name) {
        Ok(n) => n,
        Err(e) => return failed(e, details),
    };
    let query = build_query(name.clone(), record_type(spec.record_type));
    let wire = match query.to_vec() {
        Ok(w) => w,
        Err(e) => return failed(e.to_string(), details),
    };

    let asked = Instant::now();
    let udp_deadline = (asked + UDP_TIMEOUT).min(deadline);
    let mut response = match udp_exchange(server, &wire, &query, udp_deadline).await {
        Ok(r) => r,
        Err(e) if is_local_exhaustion(&e) => return Err(ProbeError::Resources(e)),
        Err(e) => return failed(exchange_error("udp", server, &e), details),
    };
    details.transport = Some("udp".to_owned());
    if response.truncated() {
        let tcp_deadline = (Instant::now() + TCP_TIMEOUT).min(deadline);
        response = match tcp_exchange(server, &wire, &query, tcp_deadline).await {
            Ok(r) => r,
            Err(e) if is_local_exhaustion(&e) => return Err(ProbeError::Resources(e)),
            Err(e) => {
                return failed(
                    format!(
                        "answer truncated over UDP and the TCP retry failed: {}",
                        exchange_error("tcp", server, &e)
                    ),
                    details,
                );
            }
        };
        details.transport = Some("tcp".to_owned());
    }

    let took = asked.elapsed();
    details.rcode = Some(rcode_name(response.response_code()));
    let answers: Vec<String> = response.answers().iter().map(presentation).collect();
    details.answers = Some(answers.iter().take(MAX_LISTED_ANSWERS).cloned().collect());
    let Some(first) = answers.first() else {
        return Ok(Finding::offline("query returned no results", details));
    };
    if !spec.expect.is_empty() && !answers.iter().any(|a| a.contains(spec.expect.as_str())) {
        return Ok(Finding::offline(
            format!(
                "query answer does not contain expected string (answer is {first}, expected {})",
                spec.expect
            ),
            details,
        ));
    }
    Ok(online_within(spec.max_response_ms, took, details))
}

fn record_type(t: DnsRecordType) -> RecordType {
    match t {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Cname => RecordType::CNAME,
        DnsRecordType::Caa => RecordType::CAA,
        DnsRecordType::Mx => RecordType::MX,
        DnsRecordType::Ns => RecordType::NS,
        DnsRecordType::Ptr => RecordType::PTR,
        DnsRecordType::Soa => RecordType::SOA,
        DnsRecordType::Srv => RecordType::SRV,
        DnsRecordType::Txt => RecordType::TXT,
    }
}

/// `name` made fully qualified (gobearmon's `dns.Fqdn`).
fn query_name(name: &str) -> Result<Name, String> {
    let mut n = if name.is_ascii() {
        Name::from_ascii(name)
    } else {
        Name::from_utf8(name)
    }
    .map_err(|e| format!("invalid name {name:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

fn build_query(name: Name, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(random_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, rtype));
    m
}

fn random_id() -> u16 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 2];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // Only the spoofing resistance of the id suffers; mix in the clock instead.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return (nanos ^ (nanos >> 16)) as u16;
    }
    u16::from_be_bytes(b)
}

/// The nameserver address, the way gobearmon reads `server` (port 53 when none is given, the
/// local host when empty), plus IPv6 literals with or without brackets and port.
async fn server_address(text: &str, deadline: Instant) -> Result<SocketAddr, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<Ipv6Addr>()
    {
        return Ok(SocketAddr::new(IpAddr::V6(ip), 53));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let with_port = if text.contains(':') {
        text.to_owned()
    } else {
        format!("{text}:53")
    };
    match timeout_at(deadline, tokio::net::lookup_host(with_port.as_str())).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| format!("lookup {text}: no addresses")),
        Ok(Err(e)) => Err(format!("lookup {text}: {e}")),
        Err(_) => Err(format!("lookup {text}: i/o timeout")),
    }
}

fn exchange_error(net: &str, server: SocketAddr, e: &io::Error) -> String {
    format!("{net} {server}: {}", io_text(e))
}

/// Whether `m` answers `query`: same id, a response, and the same question when it has one.
fn answers_query(m: &Message, query: &Message) -> bool {
    if m.id() != query.id() || m.message_type() != MessageType::Response {
        return false;
    }
    match (m.queries().first(), query.queries().first()) {
        // Name equality is case-insensitive (answers may use 0x20 case randomisation).
        (Some(got), Some(asked)) => {
            got.query_type() == asked.query_type() && got.name() == asked.name()
        }
        _ => true,
    }
}

async fn udp_exchange(
    server: SocketAddr,
    wire: &[u8],
    query: &Message,
    deadline: Instant,
) -> io::Result<Message> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(wire).await?;
    let retry_at = Instant::now() + UDP_RETRY_AFTER;
    let mut retried = false;
    // We send no EDNS, so a conforming answer fits in 512 bytes; 4 KiB leaves room for
    // servers that send more, and a longer datagram is cut and ignored as unreadable.
    let mut buf = vec![0u8; 4096];
    // Datagrams that were not our answer, and why the last one was not.
    let mut ignored = 0u32;
    let mut last_ignored = String::new();
    loop {
        let wake = if retried {
            deadline
        } else {
            retry_at.min(deadline)
        };
        tokio::select! {
            r = socket.recv(&mut buf) => {
                let n = r?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if answers_query(&m, query) => return Ok(m),
                    Ok(m) => {
                        ignored += 1;
                        last_ignored = format!("a message with id {} that does not answer the query", m.id());
                    }
                    Err(e) => {
                        ignored += 1;
                        last_ignored = format!("unreadable: {e}");
                    }
                }
            }
            _ = sleep_until(wake) => {
                if wake >= deadline {
                    let why = if ignored == 0 {
                        "i/o timeout".to_owned()
                    } else {
                        format!("i/o timeout (ignored {ignored} datagrams; the last was {last_ignored})")
                    };
                    return Err(io::Error::new(io::ErrorKind::TimedOut, why));
                }
                retried = true;
                socket.send(wire).await?;
            }
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    wire: &[u8],
    query: &Message,
    deadline: Instant,
) -> io::Result<Message> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "i/o timeout");
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let len = u16::try_from(wire.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(wire);
        stream.write_all(&framed).await?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            let m = Message::from_vec(&buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if answers_query(&m, query) {
                return Ok(m);
            }
        }
    };
    match timeout_at(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    }
}

/// The response code's usual name.
fn rcode_name(code: ResponseCode) -> String {
    let n = u16::from(code);
    let name = match n {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return format!("RCODE{n}"),
    };
    name.to_owned()
}

/// One answer as miekg/dns prints it: `name\tTTL\tCLASS\tTYPE\trdata`.
pub(crate) fn presentation(r: &Record) -> String {
    let class = match r.dns_class() {
        DNSClass::IN => "IN".to_owned(),
        DNSClass::CH => "CH".to_owned(),
        DNSClass::HS => "HS".to_owned(),
        other => format!("CLASS{}", u16::from(other)),
    };
    let rtype = match r.record_type() {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    };
    format!(
        "{}\t{}\t{class}\t{rtype}\t{}",
        r.name(),
        r.ttl(),
        rdata_text(r.data())
    )
}

fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data()
            .iter()
            .map(|s| quote_character_string(s))
            .collect::<Vec<_>>()
            .join(" "),
        RData::Unknown { rdata, .. } => {
            let bytes = rdata.anything();
            let mut hex = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                let _ = write!(hex, "{b:02x}");
            }
            format!("\\# {} {hex}", bytes.len())
        }
        other => other.to_string(),
    }
}

/// A TXT character-string in presentation form: quoted, with `"` and `\` escaped and
/// unprintable bytes as `\DDD`.
fn quote_character_string(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, MX, TXT};

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn server_forms() {
        assert_eq!(
            server_address("", far()).await.unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            server_address("127.0.0.1", far()).await.unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            server_address("127.0.0.1:5353", far()).await.unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            server_address("::1", far()).await.unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            server_address("[::1]", far()).await.unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            server_address("[::1]:5353", far()).await.unwrap(),
            "[::1]:5353".parse().unwrap()
        );
    }

    #[test]
    fn presentation_lines() {
        let name = Name::from_str("a.test.").unwrap();
        let a = Record::from_rdata(name.clone(), 300, RData::A(A(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(presentation(&a), "a.test.\t300\tIN\tA\t10.0.0.1");
        let mx = Record::from_rdata(
            name.clone(),
            60,
            RData::MX(MX::new(10, Name::from_str("mail.test.").unwrap())),
        );
        assert_eq!(presentation(&mx), "a.test.\t60\tIN\tMX\t10 mail.test.");
        let txt = Record::from_rdata(
            name,
            0,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into(), "say \"hi\"".into()])),
        );
        assert_eq!(
            presentation(&txt),
            "a.test.\t0\tIN\tTXT\t\"v=spf1 -all\" \"say \\\"hi\\\"\""
        );
    }

    #[test]
    fn rcodes() {
        assert_eq!(rcode_name(ResponseCode::NoError), "NOERROR");
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
    }
}
