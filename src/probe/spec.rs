//! Typed check definitions: a `checks` row's `type` and `data` parsed once, when the row is
//! loaded, with gobearmon's defaults and clamps applied. A row that cannot be parsed becomes
//! [`CheckSpec::Invalid`], which keeps gobearmon's error text and reports it on every run.
//!
//! Every definition, whatever its source, goes through [`CheckSpec::validated`]: a row parsed
//! here and a definition a worker receives over the network (deserialised from the
//! controller's JSON) get the same clamps, so no peer can hand a worker a spec that a row
//! could not produce (4 billion echo requests, a timeout of `u64::MAX` seconds).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dns::{self, DnsSpec};
use super::http::HttpSpec;
use super::icmp::{self, IcmpSpec};
use super::params::{clamp_response_ms, parse_with};
use super::push::PUSH_NOT_PROBED;
use super::tcp::TcpSpec;
use super::tls::{self, TlsSpec};

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
            CheckSpec::Icmp(_) => icmp::RUN_DEADLINE,
            CheckSpec::SslExpire(_) => tls::HANDSHAKE_TIMEOUT + tls::CLOSE_TIMEOUT,
            CheckSpec::Dns(_) => dns::TOTAL_TIMEOUT,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::icmp::DEFAULT_PING_COUNT;
    use crate::probe::params::{DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};
    use crate::probe::push::DEFAULT_PUSH_GRACE_SECS;
    use crate::probe::{
        DnsRecordType, IpFamily, LossRule, MAX_PING_COUNT, PushSpec, clamp_timeout,
    };

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
