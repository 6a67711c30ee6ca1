//! Typed check definitions: a `checks` row's `type` and `data` parsed once, when the row is
//! loaded, with gobearmon's defaults and clamps applied. A row that cannot be parsed becomes
//! [`CheckSpec::Invalid`], which keeps gobearmon's error text and reports it on every run.
//!
//! Every definition, whatever its source, goes through [`CheckSpec::validated`]: a row parsed
//! here and a definition a worker receives over the network (deserialised from the
//! controller's JSON) get the same clamps, so no peer can hand a worker a spec that a row
//! could not produce (4 billion echo requests, a timeout of `u64::MAX` seconds).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::addrs::IpPolicy;
use super::gojson::{self, Fields};
use super::json::JsonCondition;
use crate::notify::redact;

/// HTTP and TCP timeout when none (or 0) is given, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Smallest HTTP and TCP timeout; smaller values are raised to it.
pub const MIN_TIMEOUT_SECS: u64 = 3;
/// Largest HTTP and TCP timeout; larger values are lowered to it.
pub const MAX_TIMEOUT_SECS: u64 = 30;
/// ICMP echo requests per run when `count` is not given.
pub const DEFAULT_PING_COUNT: u32 = 5;
/// Upper bound of `count`: every packet must fit in the run's deadline.
pub const MAX_PING_COUNT: u32 = 20;

/// gobearmon's timeout clamp: 0 -> 10 s, below 3 -> 3 s, above 30 -> 30 s.
pub fn clamp_timeout(secs: i64) -> u64 {
    match u64::try_from(secs) {
        Ok(s) => clamp_timeout_secs(s),
        // Negative: below the minimum.
        Err(_) => MIN_TIMEOUT_SECS,
    }
}

/// [`clamp_timeout`] on an unsigned value (a definition received over the network).
fn clamp_timeout_secs(secs: u64) -> u64 {
    match secs {
        0 => DEFAULT_TIMEOUT_SECS,
        s => s.clamp(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS),
    }
}

/// `count` as a run uses it: 0 (unset) -> [`DEFAULT_PING_COUNT`], at most [`MAX_PING_COUNT`].
fn clamp_ping_count(count: u32) -> u32 {
    match count {
        0 => DEFAULT_PING_COUNT,
        c => c.min(MAX_PING_COUNT),
    }
}

/// `max_response_ms` as a run uses it: 0 means no limit.
fn clamp_response_ms(ms: Option<u64>) -> Option<u64> {
    ms.filter(|&ms| ms > 0)
}

/// One check, ready to run: the closed set of gobearmon's five types, or the error that makes
/// the row unusable.
///
/// Serialised (tagged by `type`) to send definitions from the controller to workers; the
/// serialised form carries the secrets the worker needs. `Debug` redacts them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", from = "UncheckedSpec")]
// The variants are boxed: the controller keeps one definition per check (100,000 of them in
// the scale benchmark), and an unboxed enum is as large as its largest variant (HTTP's).
pub enum CheckSpec {
    Http(Box<HttpSpec>),
    Tcp(Box<TcpSpec>),
    Icmp(Box<IcmpSpec>),
    SslExpire(Box<TlsSpec>),
    Dns(Box<DnsSpec>),
    /// A row that cannot run: every run reports `offline` with this message
    /// (`invalid check type: ...`, `failed to decode check parameters: ...`,
    /// `invalid record type: ...`, `ping target contains invalid characters`).
    Invalid {
        message: String,
    },
}

impl CheckSpec {
    /// Parses `checks.type` and `checks.data`. Never fails: an unusable row becomes
    /// [`CheckSpec::Invalid`] with gobearmon's message.
    pub fn parse(check_type: &str, data: &str) -> CheckSpec {
        let parsed = match check_type {
            "http" => parse_with(data, "HttpCheckParams", HttpSpec::from_fields)
                .map(|s| Self::Http(Box::new(s))),
            "tcp" => parse_with(data, "TcpCheckParams", TcpSpec::from_fields)
                .map(|s| Self::Tcp(Box::new(s))),
            "icmp" => parse_with(data, "IcmpCheckParams", IcmpSpec::from_fields)
                .map(|s| Self::Icmp(Box::new(s))),
            "ssl_expire" => parse_with(data, "SslExpireCheckParams", TlsSpec::from_fields)
                .map(|s| Self::SslExpire(Box::new(s))),
            "dns" => parse_with(data, "DnsCheckParams", DnsSpec::from_fields)
                .map(|s| Self::Dns(Box::new(s))),
            "push" => Err(PUSH_NOT_PROBED.to_owned()),
            other => Err(format!("invalid check type: {other}")),
        };
        parsed
            .unwrap_or_else(|message| CheckSpec::Invalid { message })
            .validated()
    }

    /// This definition within the bounds every run relies on: timeouts 3..=30 s (0 is the
    /// default 10 s), `count` 1..=20, `max_loss` at most `count`, `max_response_ms` 0 as no
    /// limit, a ping target without shell characters, an `Invalid` message cut to
    /// [`super::MESSAGE_CAP`]. Both sources of definitions go through it: [`CheckSpec::parse`]
    /// (rows) and deserialisation (what a worker is sent), so a peer cannot make a worker
    /// run what no row could. Idempotent.
    pub fn validated(self) -> CheckSpec {
        let checked = match self {
            CheckSpec::Http(mut s) => s.validate().map(|()| CheckSpec::Http(s)),
            CheckSpec::Tcp(mut s) => s.validate().map(|()| CheckSpec::Tcp(s)),
            CheckSpec::Icmp(mut s) => s.validate().map(|()| CheckSpec::Icmp(s)),
            CheckSpec::SslExpire(s) => Ok(CheckSpec::SslExpire(s)),
            CheckSpec::Dns(mut s) => {
                s.max_response_ms = clamp_response_ms(s.max_response_ms);
                Ok(CheckSpec::Dns(s))
            }
            CheckSpec::Invalid { message } => Err(message),
        };
        checked.unwrap_or_else(|message| CheckSpec::Invalid {
            message: super::cut_text(&message, super::MESSAGE_CAP).into_owned(),
        })
    }

    /// The `checks.type` string of this definition (`invalid` for an unusable row).
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckSpec::Http(_) => "http",
            CheckSpec::Tcp(_) => "tcp",
            CheckSpec::Icmp(_) => "icmp",
            CheckSpec::SslExpire(_) => "ssl_expire",
            CheckSpec::Dns(_) => "dns",
            CheckSpec::Invalid { .. } => "invalid",
        }
    }

    /// The longest a run of this check may take, including a margin above the check's own
    /// timeouts; [`super::run`] enforces it as a hard outer bound.
    pub fn max_duration(&self) -> Duration {
        let margin = Duration::from_secs(2);
        let inner = match self {
            CheckSpec::Http(s) => Duration::from_secs(s.timeout_secs),
            CheckSpec::Tcp(s) => Duration::from_secs(s.timeout_secs),
            CheckSpec::Icmp(_) => super::icmp::RUN_DEADLINE,
            CheckSpec::SslExpire(_) => super::tls::HANDSHAKE_TIMEOUT + super::tls::CLOSE_TIMEOUT,
            CheckSpec::Dns(_) => super::dns::TOTAL_TIMEOUT,
            CheckSpec::Invalid { .. } => Duration::ZERO,
        };
        // Validated timeouts are small; saturating keeps a definition built any other way
        // from panicking here.
        inner.saturating_add(margin)
    }
}

/// The deserialised form of [`CheckSpec`], before [`CheckSpec::validated`]: what a peer sent.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum UncheckedSpec {
    Http(Box<HttpSpec>),
    Tcp(Box<TcpSpec>),
    Icmp(Box<IcmpSpec>),
    SslExpire(Box<TlsSpec>),
    Dns(Box<DnsSpec>),
    Invalid { message: String },
}

impl From<UncheckedSpec> for CheckSpec {
    fn from(u: UncheckedSpec) -> CheckSpec {
        let spec = match u {
            UncheckedSpec::Http(s) => CheckSpec::Http(s),
            UncheckedSpec::Tcp(s) => CheckSpec::Tcp(s),
            UncheckedSpec::Icmp(s) => CheckSpec::Icmp(s),
            UncheckedSpec::SslExpire(s) => CheckSpec::SslExpire(s),
            UncheckedSpec::Dns(s) => CheckSpec::Dns(s),
            UncheckedSpec::Invalid { message } => CheckSpec::Invalid { message },
        };
        spec.validated()
    }
}

fn parse_with<T>(
    data: &str,
    go_struct: &'static str,
    build: fn(&Fields<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let decode_error = |e: String| format!("failed to decode check parameters: {e}");
    let doc = gojson::parse(data).map_err(decode_error)?;
    let fields = Fields::of(go_struct, &doc).map_err(decode_error)?;
    build(&fields).map_err(|e| {
        // Type mismatches are decode errors; semantic errors (record type, ping target) are
        // reported as they are.
        if e.starts_with("json: ") {
            decode_error(e)
        } else {
            e
        }
    })
}

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
    fn from_force_ip(v: i64) -> IpFamily {
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

/// `ip_policy` (see `addrs.rs`); absent or empty is `first`.
fn ip_policy(f: &Fields<'_>) -> Result<IpPolicy, String> {
    IpPolicy::parse(&f.string("ip_policy")?.unwrap_or_default())
}

/// `http`: one request; see `http.rs` for how it is sent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSpec {
    pub url: String,
    /// `GET`, or `POST` when a body is set and no method is given.
    pub method: String,
    /// Sent (with `Content-Length`) when not empty.
    pub body: String,
    /// Request headers in order; names are unique case-insensitively (a later key replaced
    /// an earlier one, like Go's `Header.Set`). `Host` overrides the request's host.
    pub headers: Vec<(String, String)>,
    /// Whole exchange (connect, TLS, redirects, headers, body), clamped 3..=30 s.
    pub timeout_secs: u64,
    /// Accept any certificate.
    pub insecure: bool,
    /// Basic auth when not empty; it replaces an `Authorization` header.
    pub username: String,
    pub password: String,
    /// When not 0, the final status must equal it.
    pub expect_status: i64,
    /// When not empty, the (capped) body must contain it.
    pub expect_substring: String,
    /// Follow up to 10 redirects (default); `false` judges the first answer.
    pub follow_redirects: bool,
    /// Which of the URL host's addresses are requested (`ip_policy`).
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// `expect_json`: conditions on the JSON body, all of which must hold.
    #[serde(default)]
    pub expect_json: Vec<JsonCondition>,
    /// When set, response headers (after any redirects) later than this many ms fail.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
}

impl HttpSpec {
    fn from_fields(f: &Fields<'_>) -> Result<HttpSpec, String> {
        let url = f.string("url")?.unwrap_or_default();
        let method = f.string("method")?.unwrap_or_default();
        let body = f.string("body")?.unwrap_or_default();
        let raw_headers = f.string_map("headers")?.unwrap_or_default();
        let timeout = f.int("timeout")?.unwrap_or(0);
        let insecure = f.bool("insecure")?.unwrap_or(false);
        let username = f.string("username")?.unwrap_or_default();
        let password = f.string("password")?.unwrap_or_default();
        let expect_status = f.int("expect_status")?.unwrap_or(0);
        let expect_substring = f.string("expect_substring")?.unwrap_or_default();
        let follow_redirects = f.bool("follow_redirects")?.unwrap_or(true);
        let ip_policy = ip_policy(f)?;
        let expect_json = match f.raw("expect_json") {
            Some(v) => super::json::parse_conditions(v)?,
            None => Vec::new(),
        };
        let max_response_ms = max_response_ms(f)?;

        let mut headers: Vec<(String, String)> = Vec::with_capacity(raw_headers.len());
        for (k, v) in raw_headers {
            match headers
                .iter_mut()
                .find(|(name, _)| name.eq_ignore_ascii_case(&k))
            {
                Some(slot) => *slot = (k, v),
                None => headers.push((k, v)),
            }
        }
        let method = if !method.is_empty() {
            method
        } else if body.is_empty() {
            "GET".to_owned()
        } else {
            "POST".to_owned()
        };
        Ok(HttpSpec {
            url,
            method,
            body,
            headers,
            timeout_secs: clamp_timeout(timeout),
            insecure,
            username,
            password,
            expect_status,
            expect_substring,
            follow_redirects,
            ip_policy,
            expect_json,
            max_response_ms,
        })
    }

    fn validate(&mut self) -> Result<(), String> {
        self.timeout_secs = clamp_timeout_secs(self.timeout_secs);
        self.max_response_ms = clamp_response_ms(self.max_response_ms);
        Ok(())
    }
}

impl fmt::Debug for HttpSpec {
    /// The check with its secrets masked by the notification rules ([`redact`]): no body,
    /// no password, only harmless header values, no secret query values in the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |v: &str| if v.is_empty() { "" } else { redact::REDACTED };
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if redact::is_harmless_header(k) {
                    v.as_str()
                } else {
                    masked(v)
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpSpec")
            .field("url", &redact::data_url(&self.url))
            .field("method", &self.method)
            .field("body", &masked(&self.body))
            .field("headers", &headers)
            .field("timeout_secs", &self.timeout_secs)
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("expect_status", &self.expect_status)
            .field("expect_substring", &self.expect_substring)
            .field("follow_redirects", &self.follow_redirects)
            .field("ip_policy", &self.ip_policy)
            .field("expect_json", &self.expect_json)
            .field("max_response_ms", &self.max_response_ms)
            .finish()
    }
}

/// `tcp`: connect, optionally send a line and read one back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
    /// Bounds the whole exchange (connect, send, read), clamped 3..=30 s.
    pub timeout_secs: u64,
    pub force_ip: IpFamily,
    /// Sent as `payload + "\n"` when not empty.
    pub payload: String,
    /// When not empty, the first line read must contain it.
    pub expect: String,
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// When set, an exchange (connect, send, read) longer than this many ms fails.
    #[serde(default)]
    pub max_response_ms: Option<u64>,
}

impl TcpSpec {
    fn from_fields(f: &Fields<'_>) -> Result<TcpSpec, String> {
        Ok(TcpSpec {
            address: f.string("address")?.unwrap_or_default(),
            timeout_secs: clamp_timeout(f.int("timeout")?.unwrap_or(0)),
            force_ip: IpFamily::from_force_ip(f.int("force_ip")?.unwrap_or(0)),
            payload: f.string("payload")?.unwrap_or_default(),
            expect: f.string("expect")?.unwrap_or_default(),
            ip_policy: ip_policy(f)?,
            max_response_ms: max_response_ms(f)?,
        })
    }

    fn validate(&mut self) -> Result<(), String> {
        self.timeout_secs = clamp_timeout_secs(self.timeout_secs);
        self.max_response_ms = clamp_response_ms(self.max_response_ms);
        Ok(())
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
    fn from_fields(f: &Fields<'_>) -> Result<IcmpSpec, String> {
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

    fn validate(&mut self) -> Result<(), String> {
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

/// `max_response_ms`: absent, 0 or negative means no limit.
fn max_response_ms(f: &Fields<'_>) -> Result<Option<u64>, String> {
    Ok(clamp_response_ms(
        f.int("max_response_ms")?
            .and_then(|ms| u64::try_from(ms).ok()),
    ))
}

/// `ssl_expire`: the earliest expiry among the certificates a TLS server presents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// `host:port` (no default port).
    pub address: String,
    /// Fails when the days remaining are at most this.
    pub days: i64,
    #[serde(default)]
    pub ip_policy: IpPolicy,
    /// When set, a lower negotiated TLS version fails.
    #[serde(default)]
    pub min_tls_version: Option<TlsVersion>,
    /// When not empty, a host name or IP address the leaf certificate must cover.
    #[serde(default)]
    pub expect_name: String,
}

impl TlsSpec {
    fn from_fields(f: &Fields<'_>) -> Result<TlsSpec, String> {
        let min_tls_version = match f.string("min_tls_version")?.unwrap_or_default().as_str() {
            "" => None,
            "1.2" => Some(TlsVersion::V1_2),
            "1.3" => Some(TlsVersion::V1_3),
            other => {
                return Err(format!(
                    "invalid min_tls_version: {other} (expected \"1.2\" or \"1.3\")"
                ));
            }
        };
        Ok(TlsSpec {
            address: f.string("address")?.unwrap_or_default(),
            days: f.int("days")?.unwrap_or(0),
            ip_policy: ip_policy(f)?,
            min_tls_version,
            expect_name: f.string("expect_name")?.unwrap_or_default(),
        })
    }
}

/// A TLS protocol version this build can negotiate, ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    /// `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// The version rustls negotiated; `None` for versions below 1.2.
    pub(crate) fn from_rustls(v: rustls::ProtocolVersion) -> Option<TlsVersion> {
        match v {
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::V1_2),
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::V1_3),
            _ => None,
        }
    }
}

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
    fn from_fields(f: &Fields<'_>) -> Result<DnsSpec, String> {
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

/// What a run of a `push` check would report: nothing is probed (workers are never sent
/// push checks; the acting controller judges them from the pushes received).
pub const PUSH_NOT_PROBED: &str = "a push check has nothing to probe: the job it watches calls \
     the push URL (`gobearmon push-url CHECK --config FILE` prints it)";

/// Shortest and longest push token, in characters.
pub const PUSH_TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// `grace` when `data` has none, in seconds.
pub const DEFAULT_PUSH_GRACE_SECS: u64 = 30;
/// Largest `grace`, in seconds (a day).
pub const MAX_PUSH_GRACE_SECS: u64 = 86_400;

/// A `push` check's `data`: `{"token": "...", "grace": 30}`. The check is online while pushes
/// arrive at least every `check_interval + grace` seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSpec {
    /// The secret part of the push URL (`/push/{token}`): 16 to 128 characters from
    /// `A-Z a-z 0-9 - _ . ~`, so it needs no escaping in a URL.
    pub token: String,
    /// Seconds allowed past `check_interval` before a missing push makes the check offline.
    pub grace_secs: u64,
}

impl fmt::Debug for PushSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSpec")
            .field("token", &"<redacted>")
            .field("grace_secs", &self.grace_secs)
            .finish()
    }
}

/// Whether `token` has the shape of a push token (length and characters); says what is wrong.
pub fn push_token_problem(token: &str) -> Option<String> {
    let n = token.chars().count();
    if !PUSH_TOKEN_LEN.contains(&n) {
        return Some(format!(
            "token is {n} characters long; expected {} to {}",
            PUSH_TOKEN_LEN.start(),
            PUSH_TOKEN_LEN.end()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Some(format!(
            "token contains {c:?}; expected only A-Z a-z 0-9 - _ . ~"
        ));
    }
    None
}

impl PushSpec {
    /// Parses and validates a push check's `data`; the error names the key and what was
    /// expected.
    pub fn parse(data: &str) -> Result<PushSpec, String> {
        parse_with(data, "PushCheckParams", |f| {
            let token = f.string("token")?.unwrap_or_default();
            if let Some(problem) = push_token_problem(&token) {
                return Err(problem);
            }
            let grace = f.int("grace")?;
            let grace_secs = match grace {
                None => DEFAULT_PUSH_GRACE_SECS,
                Some(g) => match u64::try_from(g) {
                    Ok(g) if g <= MAX_PUSH_GRACE_SECS => g,
                    _ => {
                        return Err(format!(
                            "grace is {g}; expected 0 to {MAX_PUSH_GRACE_SECS} seconds"
                        ));
                    }
                },
            };
            Ok(PushSpec { token, grace_secs })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(spec: CheckSpec) -> String {
        match spec {
            CheckSpec::Invalid { message } => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn timeout_clamp() {
        assert_eq!(clamp_timeout(0), 10);
        assert_eq!(clamp_timeout(1), 3);
        assert_eq!(clamp_timeout(-5), 3);
        assert_eq!(clamp_timeout(3), 3);
        assert_eq!(clamp_timeout(15), 15);
        assert_eq!(clamp_timeout(30), 30);
        assert_eq!(clamp_timeout(31), 30);
        let CheckSpec::Http(h) = CheckSpec::parse("http", r#"{"url":"http://x/","timeout":1}"#)
        else {
            panic!()
        };
        assert_eq!(h.timeout_secs, 3);
        let CheckSpec::Tcp(t) = CheckSpec::parse("tcp", r#"{"address":"x:1"}"#) else {
            panic!()
        };
        assert_eq!(t.timeout_secs, 10);
    }

    #[test]
    fn unknown_type_and_bad_json() {
        assert_eq!(
            invalid(CheckSpec::parse("bogus", "{}")),
            "invalid check type: bogus"
        );
        assert_eq!(
            invalid(CheckSpec::parse("HTTP", "{}")),
            "invalid check type: HTTP"
        );
        assert!(
            invalid(CheckSpec::parse("http", "{not json"))
                .starts_with("failed to decode check parameters: ")
        );
        assert_eq!(
            invalid(CheckSpec::parse("tcp", r#"{"timeout":"15"}"#)),
            "failed to decode check parameters: json: cannot unmarshal string into Go struct \
             field TcpCheckParams.timeout of type int"
        );
        assert_eq!(
            invalid(CheckSpec::parse("http", "")),
            "failed to decode check parameters: unexpected end of JSON input"
        );
    }

    #[test]
    fn http_defaults_and_case_insensitive_keys() {
        let CheckSpec::Http(h) = CheckSpec::parse(
            "http",
            r#"{"URL":"http://a/","Body":"x=1","HEADERS":{"host":"v.test","X-A":"b","HOST":"w.test"},
                "Expect_Status":200,"unknown":[1,2]}"#,
        ) else {
            panic!()
        };
        assert_eq!(h.url, "http://a/");
        assert_eq!(h.method, "POST");
        assert_eq!(h.expect_status, 200);
        assert!(h.follow_redirects);
        assert_eq!(
            h.headers,
            vec![
                ("HOST".to_owned(), "w.test".to_owned()),
                ("X-A".to_owned(), "b".to_owned())
            ]
        );
        let CheckSpec::Http(h) = CheckSpec::parse("http", r#"{"url":"http://a/"}"#) else {
            panic!()
        };
        assert_eq!(h.method, "GET");
        let CheckSpec::Http(h) = CheckSpec::parse(
            "http",
            r#"{"body":"x","method":"PUT","follow_redirects":false}"#,
        ) else {
            panic!()
        };
        assert_eq!(h.method, "PUT");
        assert!(!h.follow_redirects);
    }

    #[test]
    fn debug_redacts_secrets() {
        let spec = CheckSpec::parse(
            "http",
            r#"{"url":"http://u:urlpw@a/?api_key=qk3y&page=2","username":"u","password":"hunter2",
                "body":"b0dy","headers":{"authorization":"Bearer tok3n","Cookie":"s=c00kie",
                "X-A":"x-v4lue","Accept":"text/html"}}"#,
        );
        let dbg = format!("{spec:?}");
        for secret in [
            "hunter2", "tok3n", "c00kie", "urlpw", "qk3y", "b0dy", "x-v4lue",
        ] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
        }
        assert!(dbg.contains("X-A") && dbg.contains("text/html") && dbg.contains("page=2"));
        // The serialised form keeps them: the worker needs them.
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("hunter2"));
        let back: CheckSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn icmp_rules() {
        let CheckSpec::Icmp(i) = CheckSpec::parse("icmp", r#"{"target":"127.0.0.1"}"#) else {
            panic!()
        };
        assert_eq!(i.count, 5);
        assert_eq!(i.loss_rule, LossRule::AllLost);
        assert_eq!(i.force_ip, IpFamily::Any);
        let CheckSpec::Icmp(i) =
            CheckSpec::parse("icmp", r#"{"target":"h","packetloss":true,"force_ip":6}"#)
        else {
            panic!()
        };
        assert_eq!(i.loss_rule, LossRule::Over30Percent);
        assert_eq!(i.force_ip, IpFamily::V6);
        let CheckSpec::Icmp(i) = CheckSpec::parse(
            "icmp",
            r#"{"target":"h","packetloss":true,"max_loss":2,"count":100}"#,
        ) else {
            panic!()
        };
        assert_eq!(i.loss_rule, LossRule::MaxLost(2));
        assert_eq!(i.count, MAX_PING_COUNT);
        for bad in ["a;b$", "a&b", "<x>", "a!", "a/b", "a\\b", "a\"b", "a'b"] {
            let data = serde_json::json!({ "target": bad }).to_string();
            assert_eq!(
                invalid(CheckSpec::parse("icmp", &data)),
                "ping target contains invalid characters"
            );
        }
    }

    /// What a peer sends is held to the rules of a row: the same clamps, applied when the
    /// definition is deserialised.
    #[test]
    fn received_definitions_are_clamped_like_rows() {
        let icmp: CheckSpec = serde_json::from_value(serde_json::json!({
            "type": "icmp", "target": "127.0.0.1", "force_ip": "any", "count": 4_000_000_000u32,
            "loss_rule": {"max_lost": u32::MAX}, "max_response_ms": 0,
        }))
        .unwrap();
        let CheckSpec::Icmp(i) = &icmp else {
            panic!("{icmp:?}")
        };
        assert_eq!(i.count, MAX_PING_COUNT);
        assert_eq!(i.loss_rule, LossRule::MaxLost(MAX_PING_COUNT));
        assert_eq!(i.max_response_ms, None);
        let zero: CheckSpec = serde_json::from_value(serde_json::json!({
            "type": "icmp", "target": "h", "force_ip": "v4", "count": 0, "loss_rule": "all_lost",
        }))
        .unwrap();
        assert!(matches!(&zero, CheckSpec::Icmp(i) if i.count == DEFAULT_PING_COUNT));
        let shell: CheckSpec = serde_json::from_value(serde_json::json!({
            "type": "icmp", "target": "a;b$(reboot)", "force_ip": "any", "count": 1,
            "loss_rule": "all_lost",
        }))
        .unwrap();
        assert_eq!(invalid(shell), "ping target contains invalid characters");

        for (ty, extra) in [
            (
                "tcp",
                serde_json::json!({"address": "x:1", "force_ip": "any", "payload": "",
                                        "expect": ""}),
            ),
            (
                "http",
                serde_json::json!({"url": "http://x/", "method": "GET", "body": "",
                "headers": [], "insecure": false, "username": "", "password": "",
                "expect_status": 0, "expect_substring": "", "follow_redirects": true}),
            ),
        ] {
            for (sent, kept) in [
                (u64::MAX, MAX_TIMEOUT_SECS),
                (0, DEFAULT_TIMEOUT_SECS),
                (1, 3),
            ] {
                let mut v = extra.clone();
                v["type"] = ty.into();
                v["timeout_secs"] = sent.into();
                v["max_response_ms"] = u64::MAX.into();
                let spec: CheckSpec = serde_json::from_value(v).unwrap();
                let (timeout, limit) = match &spec {
                    CheckSpec::Http(h) => (h.timeout_secs, h.max_response_ms),
                    CheckSpec::Tcp(t) => (t.timeout_secs, t.max_response_ms),
                    other => panic!("{other:?}"),
                };
                assert_eq!(timeout, kept, "{ty} timeout {sent}");
                assert_eq!(limit, Some(u64::MAX), "a limit is only compared");
                assert_eq!(spec.max_duration(), Duration::from_secs(kept + 2));
            }
        }
        let long: CheckSpec = serde_json::from_value(
            serde_json::json!({"type": "invalid", "message": "m".repeat(100_000)}),
        )
        .unwrap();
        assert!(invalid(long).len() <= crate::probe::MESSAGE_CAP);
        // Validation is idempotent: a parsed row goes through it unchanged.
        let row = CheckSpec::parse("icmp", r#"{"target":"h","count":100,"max_loss":50}"#);
        let back: CheckSpec = serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn max_response_ms_zero_or_negative_is_no_limit() {
        let limit = |data: &str| match CheckSpec::parse("tcp", data) {
            CheckSpec::Tcp(t) => t.max_response_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(limit(r#"{"address":"x:1"}"#), None);
        assert_eq!(limit(r#"{"address":"x:1","max_response_ms":0}"#), None);
        assert_eq!(limit(r#"{"address":"x:1","max_response_ms":-5}"#), None);
        assert_eq!(
            limit(r#"{"address":"x:1","max_response_ms":250}"#),
            Some(250)
        );
        assert!(
            invalid(CheckSpec::parse(
                "dns",
                r#"{"name":"x","type":"A","max_response_ms":"1"}"#
            ))
            .starts_with("failed to decode check parameters: ")
        );
    }

    #[test]
    fn dns_types() {
        for (t, want) in [
            ("a", DnsRecordType::A),
            ("AAAA", DnsRecordType::Aaaa),
            ("CNAME", DnsRecordType::Cname),
            ("caa", DnsRecordType::Caa),
            ("Mx", DnsRecordType::Mx),
            ("ns", DnsRecordType::Ns),
            ("ptr", DnsRecordType::Ptr),
            ("soa", DnsRecordType::Soa),
            ("srv", DnsRecordType::Srv),
            ("txt", DnsRecordType::Txt),
            ("SPF", DnsRecordType::Txt),
        ] {
            let data = serde_json::json!({ "name": "x.test", "type": t }).to_string();
            let CheckSpec::Dns(d) = CheckSpec::parse("dns", &data) else {
                panic!("{t}")
            };
            assert_eq!(d.record_type, want);
        }
        assert_eq!(
            invalid(CheckSpec::parse("dns", r#"{"name":"x","type":"BOGUS"}"#)),
            "invalid record type: BOGUS"
        );
        assert_eq!(
            invalid(CheckSpec::parse("dns", r#"{"name":"x"}"#)),
            "invalid record type: "
        );
    }

    #[test]
    fn push_data_is_validated() {
        let ok = PushSpec::parse(r#"{"token":"abcdefghijklmnop","grace":5}"#).unwrap();
        assert_eq!((ok.token.as_str(), ok.grace_secs), ("abcdefghijklmnop", 5));
        let default = PushSpec::parse(r#"{"Token":"abcdefghijklmnop-_.~"}"#).unwrap();
        assert_eq!(default.grace_secs, DEFAULT_PUSH_GRACE_SECS);
        assert!(!format!("{default:?}").contains("abcdefghijklmnop"));
        let err = |d: &str| PushSpec::parse(d).unwrap_err();
        assert_eq!(
            err(r#"{"token":"short"}"#),
            "token is 5 characters long; expected 16 to 128"
        );
        assert_eq!(
            err(&format!(r#"{{"token":"{}"}}"#, "a".repeat(129))),
            "token is 129 characters long; expected 16 to 128"
        );
        assert_eq!(
            err(r#"{"token":"abcdefghijklmnop/x"}"#),
            "token contains '/'; expected only A-Z a-z 0-9 - _ . ~"
        );
        assert_eq!(
            err(r#"{"token":"abcdefghijklmnop","grace":86401}"#),
            "grace is 86401; expected 0 to 86400 seconds"
        );
        assert_eq!(
            err(r#"{"token":"abcdefghijklmnop","grace":-1}"#),
            "grace is -1; expected 0 to 86400 seconds"
        );
        assert!(err("{").starts_with("failed to decode check parameters"));
        assert_eq!(
            CheckSpec::parse("push", r#"{"token":"abcdefghijklmnop"}"#),
            CheckSpec::Invalid {
                message: PUSH_NOT_PROBED.to_owned()
            }
        );
    }
}
