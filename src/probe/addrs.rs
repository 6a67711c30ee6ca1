//! `ip_policy`: which of a name's addresses an `http`, `tcp`, `icmp` or `ssl_expire` run
//! probes, and how their findings make one verdict.
//!
//! - `first` (the default, gobearmon's behaviour): the check type's own resolution and
//!   connection rules, untouched (tcp, tls and http try the addresses in turn until one
//!   answers; icmp pings the first).
//! - `any`: every address is probed; online when at least one is.
//! - `all`: every address is probed; online only when all are. One failing address of a load
//!   balancer no longer hides behind the others (blackbox_exporter #1512).
//!
//! For `any` and `all` the name is resolved once, through the same system resolver the
//! checks use, filtered by `force_ip`, de-duplicated and cut to [`MAX_ADDRESSES`]; the
//! addresses are probed concurrently, each under the check's own deadline, so a run takes
//! as long as its slowest address, not their sum. When the name cannot be resolved, the run
//! falls back to the check type's own code, which reports the lookup error in the usual
//! words. An `Err` from any address (this worker could not run it) is the run's `Err`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout_at};

use super::outcome::{Finding, ProbeError};
use crate::model::CheckStatus;

/// Address family restriction (`force_ip`: 4, 6, anything else means either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    #[default]
    Any,
    V4,
    V6,
}

impl IpFamily {
    pub(crate) fn from_force_ip(v: i64) -> IpFamily {
        match v {
            4 => IpFamily::V4,
            6 => IpFamily::V6,
            _ => IpFamily::Any,
        }
    }

    /// Whether `ip` is allowed by this restriction.
    pub fn allows(self, ip: std::net::IpAddr) -> bool {
        match self {
            IpFamily::Any => true,
            IpFamily::V4 => ip.is_ipv4(),
            IpFamily::V6 => ip.is_ipv6(),
        }
    }
}

/// At most this many addresses of one name are probed by `any` and `all`.
pub const MAX_ADDRESSES: usize = 16;

/// The `ip_policy` parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPolicy {
    #[default]
    First,
    Any,
    All,
}

impl IpPolicy {
    /// `first`, `any` or `all` (ASCII case-insensitive); empty means `first`.
    pub fn parse(s: &str) -> Result<IpPolicy, String> {
        match s.to_ascii_lowercase().as_str() {
            "" | "first" => Ok(IpPolicy::First),
            "any" => Ok(IpPolicy::Any),
            "all" => Ok(IpPolicy::All),
            _ => Err(format!(
                "invalid ip_policy: {s:?} (expected \"first\", \"any\" or \"all\")"
            )),
        }
    }
}

/// Runs `probe` as `policy` says. `First` calls `probe(None)` and never awaits `lookup`;
/// `Any` and `All` await `lookup` and call `probe(Some(address))` for each address.
pub(crate) async fn each<L, F, Fut>(
    policy: IpPolicy,
    lookup: L,
    probe: F,
) -> Result<Finding, ProbeError>
where
    L: Future<Output = io::Result<Vec<SocketAddr>>>,
    F: Fn(Option<SocketAddr>) -> Fut,
    Fut: Future<Output = Result<Finding, ProbeError>>,
{
    if policy == IpPolicy::First {
        return probe(None).await;
    }
    let addrs = match lookup.await {
        Ok(found) => bounded(found),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        // The check type's own path reports the lookup failure in its usual words.
        return probe(None).await;
    }
    let mut findings = Vec::with_capacity(addrs.len());
    for (addr, result) in addrs
        .iter()
        .zip(join_all(addrs.iter().map(|a| probe(Some(*a)))).await)
    {
        findings.push((*addr, result?));
    }
    Ok(combine(policy, findings))
}

/// De-duplicated by IP (ports are the same for one name), in resolver order, at most
/// [`MAX_ADDRESSES`].
fn bounded(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(found.len().min(MAX_ADDRESSES));
    for a in found {
        if out.len() == MAX_ADDRESSES {
            break;
        }
        if !out.iter().any(|o| o.ip() == a.ip()) {
            out.push(a);
        }
    }
    out
}

/// One verdict from the per-address findings (in resolver order, never empty).
fn combine(policy: IpPolicy, findings: Vec<(SocketAddr, Finding)>) -> Finding {
    let total = findings.len();
    let (online, failed): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .partition(|(_, f)| f.status == CheckStatus::Online);
    let verdict_online = match policy {
        IpPolicy::All => failed.is_empty(),
        IpPolicy::Any | IpPolicy::First => !online.is_empty(),
    };
    if verdict_online {
        // `online` is not empty here: `all` with no failure had `total >= 1` findings.
        return match online.into_iter().next() {
            Some((_, f)) => f,
            None => Finding::offline("no address was probed", Default::default()),
        };
    }
    let listed: Vec<String> = failed
        .iter()
        .map(|(a, f)| format!("{} ({})", a.ip(), f.message))
        .collect();
    let head = match policy {
        IpPolicy::All => format!(
            "ip_policy all: {} of {total} addresses failed: ",
            failed.len()
        ),
        _ => format!("ip_policy any: all {total} addresses failed: "),
    };
    let message = head + &listed.join("; ");
    let details = failed
        .into_iter()
        .next()
        .map(|(a, f)| {
            let mut d = f.details;
            d.address = Some(a.ip().to_string());
            d
        })
        .unwrap_or_default();
    Finding::offline(message, details)
}

/// `host` (an IP literal, bracketed or not, or a name) with `port`, resolved by the system
/// resolver within `deadline` and filtered by `family`.
pub(crate) async fn lookup(
    host: &str,
    port: u16,
    family: IpFamily,
    deadline: Instant,
) -> io::Result<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let found: Vec<SocketAddr> = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match timeout_at(deadline, tokio::net::lookup_host((bare, port))).await {
            Ok(r) => r?.collect(),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "i/o timeout")),
        },
    };
    Ok(found
        .into_iter()
        .filter(|a| family.allows(a.ip()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Details;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 80))
    }

    fn up() -> Finding {
        Finding::online(Details::default())
    }

    fn down(why: &str) -> Finding {
        Finding::offline(why, Details::default())
    }

    #[test]
    fn policy_names() {
        assert_eq!(IpPolicy::parse(""), Ok(IpPolicy::First));
        assert_eq!(IpPolicy::parse("first"), Ok(IpPolicy::First));
        assert_eq!(IpPolicy::parse("ANY"), Ok(IpPolicy::Any));
        assert_eq!(IpPolicy::parse("all"), Ok(IpPolicy::All));
        assert_eq!(
            IpPolicy::parse("every").unwrap_err(),
            "invalid ip_policy: \"every\" (expected \"first\", \"any\" or \"all\")"
        );
    }

    #[test]
    fn all_fails_naming_each_failing_address() {
        let f = combine(
            IpPolicy::All,
            vec![
                (addr(2), up()),
                (addr(3), down("refused")),
                (addr(4), down("timeout")),
            ],
        );
        assert_eq!(f.status, CheckStatus::Offline);
        assert_eq!(
            f.message,
            "ip_policy all: 2 of 3 addresses failed: 127.0.0.3 (refused); 127.0.0.4 (timeout)"
        );
        assert_eq!(f.details.address.as_deref(), Some("127.0.0.3"));
        let f = combine(IpPolicy::All, vec![(addr(2), up()), (addr(3), up())]);
        assert_eq!(f.status, CheckStatus::Online);
    }

    #[test]
    fn any_needs_one() {
        let f = combine(IpPolicy::Any, vec![(addr(2), down("x")), (addr(3), up())]);
        assert_eq!(f.status, CheckStatus::Online);
        let f = combine(
            IpPolicy::Any,
            vec![(addr(2), down("x")), (addr(3), down("y"))],
        );
        assert_eq!(
            f.message,
            "ip_policy any: all 2 addresses failed: 127.0.0.2 (x); 127.0.0.3 (y)"
        );
    }

    #[test]
    fn addresses_are_deduplicated_and_bounded() {
        let many: Vec<SocketAddr> = (1..=40).chain(1..=3).map(addr).collect();
        let b = bounded(many);
        assert_eq!(b.len(), MAX_ADDRESSES);
        assert_eq!(b[0], addr(1));
        assert_eq!(
            bounded(vec![addr(1), addr(1), addr(2)]),
            vec![addr(1), addr(2)]
        );
    }
}
