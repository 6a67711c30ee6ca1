//! The five check types against real servers the tests start: axum HTTP and rustls HTTPS
//! servers with rcgen certificates, TCP dialogue servers, dnsmasq and hostile UDP servers,
//! ICMP to loopback and to a network namespace with nftables loss; reference scenarios S6, S7,
//! S8 and S15; and `gobearmon probe` as a user runs it.
//!
//! ICMP and namespace tests need root (CI runs as root); dnsmasq and nftables come from
//! `scripts/test.sh`. A missing one fails the test, it is never skipped.

use std::process::Command;
use std::time::{Duration, Instant};

use gobearmon::model::CheckStatus;
use gobearmon::probe::{self, CheckSpec, ProbeContext, ProbeOutcome};
use serde_json::json;

use testkit::probe::certs::{Ca, ServerCert, hours_from_now};
use testkit::probe::dns::{Dnsmasq, Hostile, HostileDns};
use testkit::probe::http::{start_http, start_https, start_https_with};
use testkit::probe::netns::Netns;
use testkit::probe::openssl::{self, CertVersion, KeyKind};
use testkit::probe::resolver::ResolverNetns;
use testkit::probe::tcp::{self as tcpsrv, Behaviour};
use testkit::probe::{
    assert_offline, assert_offline_prefix, assert_online, probe, probe_with, require_root,
    require_tool, wait_until,
};

fn data(v: serde_json::Value) -> String {
    v.to_string()
}

// ---------------------------------------------------------------------------------------
// http (S6 and the fixes)
// ---------------------------------------------------------------------------------------

/// S6: without expectations any HTTP answer, a 500 too, is online.
#[tokio::test]
async fn s6_http_any_answer_is_online_without_expectations() {
    let srv = start_http().await;
    let out = probe("http", &data(json!({ "url": srv.url("/status/500") }))).await;
    assert_online(&out);
    assert_eq!(out.details.http_status, Some(500));
}

/// S6: `expect_substring` missing from the body.
#[tokio::test]
async fn s6_http_expect_substring_not_found() {
    let srv = start_http().await;
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/text/NOT"), "expect_substring": "READY" })),
    )
    .await;
    assert_offline(
        &out,
        "expected substring [READY] was not found in the response body",
    );
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/text/READY-now"), "expect_substring": "READY" })),
    )
    .await;
    assert_online(&out);
}

/// S6: the server sees `User-Agent: gobearmon`; a body without method is a POST with
/// Content-Length (gobearmon sent it chunked).
#[tokio::test]
async fn s6_http_user_agent_and_post_body_with_content_length() {
    let srv = start_http().await;
    assert_online(&probe("http", &data(json!({ "url": srv.url("/ok") }))).await);
    let r = srv.last("/ok");
    assert_eq!(r.method, "GET");
    assert_eq!(r.headers["user-agent"], "gobearmon");

    assert_online(
        &probe(
            "http",
            &data(json!({ "url": srv.url("/post"), "body": "x=1" })),
        )
        .await,
    );
    let r = srv.last("/post");
    assert_eq!(r.method, "POST");
    assert_eq!(&r.body[..], b"x=1");
    assert_eq!(r.headers["content-length"], "3");
    assert!(r.headers.get("transfer-encoding").is_none(), "{r:?}");

    // An explicit method wins; a header may override the User-Agent.
    let d = json!({ "url": srv.url("/put"), "body": "y", "method": "PUT",
                    "headers": { "user-agent": "custom/1" } });
    assert_online(&probe("http", &data(d)).await);
    let r = srv.last("/put");
    assert_eq!(r.method, "PUT");
    assert_eq!(r.headers["user-agent"], "custom/1");
}

/// S6: basic auth, the Host override (any case) and extra headers.
#[tokio::test]
async fn s6_http_basic_auth_and_headers() {
    let srv = start_http().await;
    let d = json!({ "url": srv.url("/auth"), "username": "u", "password": "p" });
    assert_online(&probe("http", &data(d)).await);
    // base64("u:p")
    assert_eq!(srv.last("/auth").headers["authorization"], "Basic dTpw");

    let d = json!({ "url": srv.url("/vhost"), "headers": { "Host": "vhost.test", "X-A": "b" } });
    assert_online(&probe("http", &data(d)).await);
    let r = srv.last("/vhost");
    assert_eq!(r.headers["host"], "vhost.test");
    assert_eq!(r.headers["x-a"], "b");

    // gobearmon ignored a lowercase "host" key; here it works.
    let d = json!({ "url": srv.url("/vhost2"), "headers": { "host": "lower.test" } });
    assert_online(&probe("http", &data(d)).await);
    assert_eq!(srv.last("/vhost2").headers["host"], "lower.test");
}

/// S6: `timeout: 1` is clamped to 3 s, so a 2 s answer is still online.
#[tokio::test]
async fn s6_http_timeout_is_clamped_to_three_seconds() {
    let srv = start_http().await;
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/slow"), "timeout": 1 })),
    )
    .await;
    assert_online(&out);
}

#[tokio::test]
async fn http_status_mismatch_and_redirects() {
    let srv = start_http().await;
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/status/503"), "expect_status": 200 })),
    )
    .await;
    assert_offline(&out, "status mismatch, got 503 but expected 200");

    // The status that counts is the final one, after redirects.
    let d = json!({ "url": srv.url("/redirect"), "expect_status": 200, "expect_substring": "OK" });
    assert_online(&probe("http", &data(d)).await);
    let d = json!({ "url": srv.url("/redirect-503"), "expect_status": 200 });
    assert_offline(
        &probe("http", &data(d)).await,
        "status mismatch, got 503 but expected 200",
    );
    // follow_redirects: false judges the redirect itself.
    let d = json!({ "url": srv.url("/redirect"), "expect_status": 200, "follow_redirects": false });
    assert_offline(
        &probe("http", &data(d)).await,
        "status mismatch, got 302 but expected 200",
    );
    let d = json!({ "url": srv.url("/redirect"), "expect_status": 302, "follow_redirects": false });
    assert_online(&probe("http", &data(d)).await);
    // A redirect loop ends after 10 redirects.
    let out = probe("http", &data(json!({ "url": srv.url("/loop") }))).await;
    assert_offline_prefix(&out, "error performing HTTP request: ");
    let loops = srv.requests().iter().filter(|r| r.path == "/loop").count();
    assert_eq!(loops, 11, "the first request and 10 redirects");
}

#[tokio::test]
async fn http_transport_errors_and_bad_requests() {
    // A closed port.
    let port = testkit::ports::free_port();
    let out = probe(
        "http",
        &data(json!({ "url": format!("http://127.0.0.1:{port}/") })),
    )
    .await;
    assert_offline_prefix(
        &out,
        &format!("error performing HTTP request: Get \"http://127.0.0.1:{port}/\": "),
    );
    assert!(out.message.contains("connection refused"), "{out:?}");

    let out = probe("http", &data(json!({ "url": "not a url" }))).await;
    assert_offline_prefix(&out, "error creating HTTP request: ");
    let out = probe("http", &data(json!({}))).await;
    assert_offline_prefix(&out, "error creating HTTP request: ");

    // A server that answers garbage instead of HTTP.
    let garbage = tcpsrv::start(Behaviour::Greet("\u{1}\u{2}garbage, not HTTP\n")).await;
    let out = probe(
        "http",
        &data(json!({ "url": format!("http://{}/", garbage.address()) })),
    )
    .await;
    assert_offline_prefix(&out, "error performing HTTP request: ");
}

/// The password in a URL never reaches a message.
#[tokio::test]
async fn http_messages_do_not_leak_url_passwords() {
    let port = testkit::ports::free_port();
    let out = probe(
        "http",
        &data(json!({ "url": format!("http://user:s3cretpw@127.0.0.1:{port}/") })),
    )
    .await;
    assert_offline_prefix(&out, "error performing HTTP request: ");
    assert!(!out.message.contains("s3cretpw"), "{out:?}");
    assert!(out.message.contains("user:redacted@"), "{out:?}");
}

/// A message quotes the URL without its query values (and without its password or
/// fragment): the names stay, every value is `redacted`.
#[tokio::test]
async fn http_messages_show_urls_without_query_values() {
    let port = testkit::ports::free_port();
    let url = format!("http://user:pw9@127.0.0.1:{port}/p?token=QT0K3N&page=PG2718#frag");
    let out = probe("http", &data(json!({ "url": url }))).await;
    assert_offline_prefix(
        &out,
        &format!(
            "error performing HTTP request: Get \"http://user:redacted@127.0.0.1:{port}/p?token=redacted&page=redacted\": "
        ),
    );
    for secret in ["QT0K3N", "PG2718", "pw9", "frag"] {
        assert!(!out.message.contains(secret), "{secret}: {out:?}");
    }
    // A URL that does not parse is cut before its query.
    let out = probe(
        "http",
        &data(json!({ "url": "http://127.0.0.1:99999/p?token=QT0K3N" })),
    )
    .await;
    assert_offline_prefix(&out, "error creating HTTP request: ");
    assert!(!out.message.contains("QT0K3N"), "{out:?}");
}

/// A server that accepts and never answers, and an endless body, cannot hold a check.
#[tokio::test]
async fn http_hanging_server_and_endless_body_are_bounded() {
    let srv = start_http().await;
    let started = Instant::now();
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/hang"), "timeout": 3 })),
    )
    .await;
    assert_offline(
        &out,
        &format!(
            "error performing HTTP request: Get \"{}\": timeout (3 s) exceeded",
            srv.url("/hang")
        ),
    );
    assert!(started.elapsed() < Duration::from_secs(6), "{out:?}");

    let silent = tcpsrv::start(Behaviour::Silent).await;
    let started = Instant::now();
    let out = probe(
        "http",
        &data(json!({ "url": format!("http://{}/", silent.address()), "timeout": 3 })),
    )
    .await;
    assert_offline_prefix(&out, "error performing HTTP request: ");
    assert!(started.elapsed() < Duration::from_secs(6), "{out:?}");

    // Without expectations the endless body is not read at all.
    let out = probe("http", &data(json!({ "url": srv.url("/huge") }))).await;
    assert_online(&out);
    // With one, reading stops at the cap.
    let out = probe(
        "http",
        &data(json!({ "url": srv.url("/huge"), "expect_substring": "READY" })),
    )
    .await;
    assert_offline(
        &out,
        "expected substring [READY] was not found in the response body",
    );
}

/// The body read is capped at 1 MiB: a substring after 512 KiB is found, one after 3 MiB
/// is not.
#[tokio::test]
async fn http_body_cap() {
    assert_eq!(probe::BODY_CAP, 1 << 20);
    let srv = start_http().await;
    let d = json!({ "url": srv.url("/late/512"), "expect_substring": "READY" });
    assert_online(&probe("http", &data(d)).await);
    let d = json!({ "url": srv.url("/late/3072"), "expect_substring": "READY" });
    assert_offline(
        &probe("http", &data(d)).await,
        "expected substring [READY] was not found in the response body",
    );
}

// ---------------------------------------------------------------------------------------
// https and ssl_expire (S15)
// ---------------------------------------------------------------------------------------

/// A certificate chain signed by a test CA: trusted through the context, rejected without
/// it unless `insecure`; expired certificates are rejected even when trusted.
#[tokio::test]
async fn https_verification_follows_insecure_and_trust() {
    let ca = Ca::root("Probe Test CA");
    let valid = start_https(ca.leaf("ok.test", hours_from_now(-24), hours_from_now(24 * 90))).await;
    let expired = start_https(ca.leaf(
        "old.test",
        hours_from_now(-24 * 40),
        hours_from_now(-24 * 30),
    ))
    .await;
    let self_signed = start_https(ServerCert::self_signed(
        "self.test",
        hours_from_now(24 * 30),
    ))
    .await;
    let trusting = ProbeContext::default().with_extra_roots(vec![ca.der.clone()]);
    let plain = ProbeContext::default();

    let d = |url: String, insecure: bool| {
        data(json!({ "url": url, "insecure": insecure, "expect_substring": "OK" }))
    };
    assert_online(
        &probe_with(
            &trusting,
            "http",
            &d(valid.https_url("localhost", "/ok"), false),
        )
        .await,
    );
    assert_online(
        &probe_with(
            &trusting,
            "http",
            &d(valid.https_url("127.0.0.1", "/ok"), false),
        )
        .await,
    );
    assert_offline_prefix(
        &probe_with(
            &plain,
            "http",
            &d(valid.https_url("localhost", "/ok"), false),
        )
        .await,
        "error performing HTTP request: ",
    );
    let out = probe_with(
        &trusting,
        "http",
        &d(expired.https_url("localhost", "/ok"), false),
    )
    .await;
    assert_offline_prefix(&out, "error performing HTTP request: ");
    assert!(out.message.to_lowercase().contains("expired"), "{out:?}");
    assert_offline_prefix(
        &probe_with(
            &trusting,
            "http",
            &d(self_signed.https_url("localhost", "/ok"), false),
        )
        .await,
        "error performing HTTP request: ",
    );
    // insecure accepts all of them.
    for srv in [&valid, &expired, &self_signed] {
        let out = probe_with(&plain, "http", &d(srv.https_url("localhost", "/ok"), true)).await;
        assert_online(&out);
        assert_eq!(out.details.http_status, Some(200));
    }
}

/// Issue 11 item 2: every http answer reports its phases, in order, on the run's clock: a
/// name lookup, a TCP connect and a TLS handshake each take time, so each ends after the one
/// before; plain http has no handshake (`tls_ms` = `connect_ms`); with a redirect the phases
/// are the final request's, which all end after the first request's answer.
#[tokio::test]
async fn http_timing_phases_are_reported_in_order() {
    let ca = Ca::root("Timing Test CA");
    let srv = start_https(ca.leaf("ok.test", hours_from_now(-24), hours_from_now(24 * 90))).await;
    let trusting = ProbeContext::default().with_extra_roots(vec![ca.der.clone()]);
    let ordered = |out: &ProbeOutcome| {
        let t = out
            .details
            .timing
            .clone()
            .unwrap_or_else(|| panic!("no timing in {out:?}"));
        assert!(t.dns_ms >= 0.0, "{t:?}");
        assert!(t.dns_ms <= t.connect_ms, "{t:?}");
        assert!(t.connect_ms <= t.tls_ms, "{t:?}");
        assert!(t.tls_ms <= t.first_byte_ms, "{t:?}");
        assert!(t.first_byte_ms <= t.total_ms, "{t:?}");
        assert!(t.total_ms <= out.duration_ms as f64 + 1.0, "{t:?} {out:?}");
        t
    };
    for insecure in [false, true] {
        // By name (a lookup through the system resolver), verified and insecure clients.
        let url = srv.https_url("localhost", "/ok");
        let d = data(json!({ "url": url, "insecure": insecure, "expect_substring": "OK" }));
        let out = probe_with(&trusting, "http", &d).await;
        assert_online(&out);
        let t = ordered(&out);
        assert!(t.dns_ms < t.connect_ms, "the connect takes time: {t:?}");
        assert!(t.connect_ms < t.tls_ms, "the handshake takes time: {t:?}");
        assert!(t.tls_ms < t.first_byte_ms, "the answer takes time: {t:?}");
    }
    // An IP address needs no lookup.
    let out = probe_with(
        &trusting,
        "http",
        &data(json!({ "url": srv.https_url("127.0.0.1", "/ok") })),
    )
    .await;
    let t = ordered(&out);
    assert!(t.connect_ms < t.tls_ms, "{t:?}");

    let plain = start_http().await;
    let out = probe("http", &data(json!({ "url": plain.url("/ok") }))).await;
    let t = ordered(&out);
    assert_eq!(t.tls_ms, t.connect_ms, "no TLS on plain http: {t:?}");
    assert!(t.connect_ms < t.first_byte_ms, "{t:?}");

    // A redirect: two requests on two connections, the phases still in order.
    let out = probe("http", &data(json!({ "url": plain.url("/redirect") }))).await;
    assert_online(&out);
    let redirected = ordered(&out);
    assert_eq!(redirected.tls_ms, redirected.connect_ms, "{redirected:?}");
    let paths: Vec<String> = plain.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/ok", "/redirect", "/ok"]);

    // A failure before any answer has no phases to report.
    let out = probe("http", &data(json!({ "url": "http://127.0.0.1:1/" }))).await;
    assert_eq!(out.details.timing, None, "{out:?}");
}

/// S15: a self-signed leaf (CN t.test) expiring in 5.5 days is 5 days away.
#[tokio::test]
async fn s15_ssl_expire_days_threshold() {
    let srv = start_https(ServerCert::self_signed("t.test", hours_from_now(132))).await;
    let address = srv.addr.to_string();
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": address, "days": 5 })),
    )
    .await;
    assert_offline(&out, "certificate (t.test) expires in 5 days");
    assert_eq!(out.details.days_remaining, Some(5));
    assert_eq!(out.details.common_name.as_deref(), Some("t.test"));
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": address, "days": 4 })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.days_remaining, Some(5));
    assert!(out.details.not_after.is_some());
}

/// Expired certificates give negative days; the message is gobearmon's.
#[tokio::test]
async fn ssl_expire_expired_and_healthy() {
    let ca = Ca::root("Probe Test CA");
    let expired = start_https(ca.leaf(
        "old.test",
        hours_from_now(-24 * 40),
        hours_from_now(-24 * 30 - 1),
    ))
    .await;
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": expired.addr.to_string(), "days": 0 })),
    )
    .await;
    assert_offline(&out, "certificate (old.test) expires in -30 days");

    let healthy =
        start_https(ca.leaf("ok.test", hours_from_now(-24), hours_from_now(24 * 90 + 1))).await;
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": healthy.addr.to_string(), "days": 30 })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.days_remaining, Some(90));
    assert_eq!(out.details.chain_position, Some(0));
    assert_eq!(out.details.certificates, Some(1));
}

/// Every presented certificate counts: an intermediate expiring before the leaf is reported
/// (gobearmon looked only at the leaf).
#[tokio::test]
async fn ssl_expire_reports_the_intermediate_that_expires_first() {
    let root = Ca::root("Probe Test Root");
    let inter = root.intermediate("Probe Test Intermediate", hours_from_now(24 * 3 + 12));
    let leaf = inter
        .leaf("leaf.test", hours_from_now(-24), hours_from_now(24 * 60))
        .with(&inter);
    let srv = start_https(leaf).await;
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": srv.addr.to_string(), "days": 7 })),
    )
    .await;
    assert_offline(
        &out,
        "certificate (Probe Test Intermediate) expires in 3 days",
    );
    assert_eq!(out.details.chain_position, Some(1));
    assert_eq!(out.details.certificates, Some(2));
    let out = probe(
        "ssl_expire",
        &data(json!({ "address": srv.addr.to_string(), "days": 2 })),
    )
    .await;
    assert_online(&out);
}

/// SNI is the host part for names and absent for IP literals; no verification happens.
#[tokio::test]
async fn ssl_expire_sni_and_errors() {
    let srv = start_https(ServerCert::self_signed(
        "other.example",
        hours_from_now(24 * 30),
    ))
    .await;
    let port = srv.addr.port();
    assert_online(
        &probe(
            "ssl_expire",
            &data(json!({ "address": format!("localhost:{port}") })),
        )
        .await,
    );
    assert_online(
        &probe(
            "ssl_expire",
            &data(json!({ "address": format!("127.0.0.1:{port}") })),
        )
        .await,
    );
    let sni = srv.sni.clone();
    wait_until("two handshakes", Duration::from_secs(5), || {
        sni.lock().unwrap().len() == 2
    })
    .await;
    let mut seen = srv.sni.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![None, Some("localhost".to_owned())]);

    // Not TLS at all, a silent server, a closed port, a missing port.
    let plain = tcpsrv::start(Behaviour::Greet("SSH-2.0-OpenSSH\r\n")).await;
    let out = probe("ssl_expire", &data(json!({ "address": plain.address() }))).await;
    assert_offline_prefix(&out, "tls: ");
    let silent = tcpsrv::start(Behaviour::Silent).await;
    let out = probe("ssl_expire", &data(json!({ "address": silent.address() }))).await;
    assert_offline(&out, &format!("dial tcp {}: i/o timeout", silent.address()));
    let out = probe("ssl_expire", &data(json!({ "address": "127.0.0.1" }))).await;
    assert_offline_prefix(&out, "dial tcp 127.0.0.1: ");
    assert!(out.message.contains("missing port"), "{out:?}");
}

/// Issue 11: certificates made with stock `openssl ca`, X.509 v1 (no extensions section) and
/// v3, RSA and ECDSA keys, healthy, expiring and expired: `ssl_expire` reads them all and
/// `http` with `insecure` accepts them all.
#[tokio::test]
async fn ssl_expire_reads_v1_and_v3_certificates_from_stock_openssl() {
    let cases = [
        (
            hours_from_now(24 * 5 + 12),
            7,
            Some("expires in 5 days"),
            5i64,
        ),
        (hours_from_now(24 * 90 + 1), 30, None, 90),
        (
            hours_from_now(-24 * 30 - 1),
            0,
            Some("expires in -30 days"),
            -30,
        ),
    ];
    for kind in [KeyKind::Rsa, KeyKind::Ecdsa] {
        for version in [CertVersion::V1, CertVersion::V3] {
            for (not_after, days, want, remaining) in cases {
                let what = format!("{kind:?} {version:?} {remaining} days");
                let cn = format!("{}.stock.test", remaining.abs());
                let cert = openssl::issue(kind, version, &cn, hours_from_now(-24 * 60), not_after);
                let srv = start_https(cert).await;
                let address = srv.addr.to_string();
                let out = probe(
                    "ssl_expire",
                    &data(json!({ "address": address, "days": days })),
                )
                .await;
                match want {
                    Some(m) => assert_offline(&out, &format!("certificate ({cn}) {m}")),
                    None => assert_online(&out),
                }
                let d = &out.details;
                assert_eq!(d.days_remaining, Some(remaining), "{what}: {out:?}");
                assert_eq!(d.issuer.as_deref(), Some("CN=Stock OpenSSL CA"), "{what}");
                assert_eq!(d.serial.as_deref(), Some("10:00"), "{what}");
                assert_eq!(d.tls_version.as_deref(), Some("1.3"), "{what}");
                assert!(
                    d.cipher_suite
                        .as_deref()
                        .is_some_and(|c| c.starts_with("TLS13_"))
                );
                let names = match version {
                    CertVersion::V1 => vec![cn.clone()],
                    CertVersion::V3 => vec![cn.clone(), "localhost".into(), "127.0.0.1".into()],
                };
                assert_eq!(d.subject_alt_names.as_ref(), Some(&names), "{what}");

                let url = srv.https_url("127.0.0.1", "/ok");
                let out = probe("http", &data(json!({ "url": url, "insecure": true }))).await;
                assert_online(&out);
                assert_eq!(
                    out.details.days_remaining,
                    Some(remaining),
                    "{what}: {out:?}"
                );
                assert_eq!(out.details.common_name.as_deref(), Some(cn.as_str()));
            }
        }
    }
}

/// Accepting any certificate still authenticates the handshake: a server that presents a
/// certificate without holding its key is offline, for ssl_expire and for insecure http.
#[tokio::test]
async fn ssl_expire_and_insecure_http_check_the_handshake_signature() {
    let far = hours_from_now(24 * 90);
    for version in [CertVersion::V1, CertVersion::V3] {
        let shown = openssl::issue(KeyKind::Rsa, version, "shown.test", hours_from_now(-1), far);
        let other = openssl::issue(KeyKind::Rsa, version, "other.test", hours_from_now(-1), far);
        let srv = start_https(ServerCert {
            chain: shown.chain,
            key: other.key,
        })
        .await;
        let out = probe(
            "ssl_expire",
            &data(json!({ "address": srv.addr.to_string() })),
        )
        .await;
        assert_offline(&out, "tls: invalid peer certificate: BadSignature");
        let url = srv.https_url("127.0.0.1", "/ok");
        let out = probe("http", &data(json!({ "url": url, "insecure": true }))).await;
        assert_offline_prefix(&out, "error performing HTTP request: ");
        assert!(out.message.contains("BadSignature"), "{version:?}: {out:?}");
    }
}

/// `expect_name` against subject alternative names (v3) and the common name (v1);
/// `min_tls_version` against a server that speaks TLS 1.2 only and one that speaks 1.3.
#[tokio::test]
async fn ssl_expire_expect_name_and_min_tls_version() {
    let far = hours_from_now(24 * 90);
    let v3 = start_https(ServerCert::self_signed("name.test", far)).await;
    let v1 = openssl::issue(
        KeyKind::Ecdsa,
        CertVersion::V1,
        "v1.test",
        hours_from_now(-1),
        far,
    );
    let v1 = start_https(v1).await;
    let run = |addr: std::net::SocketAddr, extra: serde_json::Value| {
        let mut d = json!({ "address": addr.to_string() });
        d.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        async move { probe("ssl_expire", &data(d)).await }
    };
    for name in ["name.test", "NAME.test.", "localhost", "127.0.0.1"] {
        assert_online(&run(v3.addr, json!({ "expect_name": name })).await);
    }
    assert_offline(
        &run(v3.addr, json!({ "expect_name": "other.test" })).await,
        "certificate is valid for name.test, localhost, 127.0.0.1, not other.test",
    );
    assert_online(&run(v1.addr, json!({ "expect_name": "v1.test" })).await);
    assert_offline(
        &run(v1.addr, json!({ "expect_name": "localhost" })).await,
        "certificate is valid for v1.test, not localhost",
    );

    let tls12 = start_https_with(
        ServerCert::self_signed("old.test", far),
        &[&rustls::version::TLS12],
    )
    .await;
    let out = run(tls12.addr, json!({ "min_tls_version": "1.2" })).await;
    assert_online(&out);
    assert_eq!(out.details.tls_version.as_deref(), Some("1.2"));
    assert_offline(
        &run(tls12.addr, json!({ "min_tls_version": "1.3" })).await,
        "TLS 1.2 negotiated, below min_tls_version 1.3",
    );
    assert_online(&run(v3.addr, json!({ "min_tls_version": "1.3" })).await);
    assert_offline(
        &run(v3.addr, json!({ "min_tls_version": "1.1" })).await,
        "invalid min_tls_version: 1.1 (expected \"1.2\" or \"1.3\")",
    );
}

// ---------------------------------------------------------------------------------------
// tcp (S7 and the fixes)
// ---------------------------------------------------------------------------------------

/// S7: PING answered with PONG.
#[tokio::test]
async fn s7_tcp_payload_and_expect() {
    let srv = tcpsrv::start(Behaviour::Reply("PONG\n")).await;
    let d = json!({ "address": srv.address(), "payload": "PING", "expect": "PONG" });
    let out = probe("tcp", &data(d)).await;
    assert_online(&out);
    assert_eq!(out.details.address.as_deref(), Some("127.0.0.1"));
    wait_until("the server's record", Duration::from_secs(5), || {
        !srv.received().is_empty()
    })
    .await;
    assert_eq!(srv.received()[0], b"PING\n");
}

/// S7: a wrong answer.
#[tokio::test]
async fn s7_tcp_response_mismatch() {
    let srv = tcpsrv::start(Behaviour::Reply("NOPE\n")).await;
    let d = json!({ "address": srv.address(), "payload": "PING", "expect": "PONG" });
    assert_offline(
        &probe("tcp", &data(d)).await,
        "response mismatch, expected [PONG] but got [NOPE]",
    );
}

/// A 60 KB answer that does not match: the message quotes its start, within about 1 KiB, cut
/// on a character boundary and marked as cut (it used to quote all 60 KB).
#[tokio::test]
async fn tcp_huge_mismatching_answer_gives_a_bounded_message() {
    // Three-byte characters, so a cut at a byte count would likely split one.
    let answer: &'static str = Box::leak(format!("{}\n", "€".repeat(20_000)).into_boxed_str());
    let srv = tcpsrv::start(Behaviour::Reply(answer)).await;
    let d = json!({ "address": srv.address(), "payload": "PING", "expect": "PONG" });
    let out = probe("tcp", &data(d)).await;
    assert_eq!(out.status, CheckStatus::Offline, "{out:?}");
    assert!(
        out.message.len() <= probe::MESSAGE_CAP,
        "message of {} bytes",
        out.message.len()
    );
    assert!(
        out.message
            .starts_with("response mismatch, expected [PONG] but got [€€€"),
        "{}",
        out.message.chars().take(80).collect::<String>()
    );
    let whole = "response mismatch, expected [PONG] but got []".len() + 60_000;
    assert!(
        out.message
            .ends_with(&format!("… [cut, {whole} bytes in all]")),
        "{}",
        out.message.chars().rev().take(80).collect::<String>()
    );
}

/// S7 as fixed: a payload without expect is sent (gobearmon dropped it); connecting is
/// enough to be online.
#[tokio::test]
async fn s7_tcp_payload_without_expect_is_sent() {
    let srv = tcpsrv::start(Behaviour::Silent).await;
    let d = json!({ "address": srv.address(), "payload": "HELLO" });
    assert_online(&probe("tcp", &data(d)).await);
    wait_until("the payload", Duration::from_secs(5), || {
        srv.received().iter().any(|r| r == b"HELLO\n")
    })
    .await;
    // Without payload and expect nothing is sent.
    assert_online(&probe("tcp", &data(json!({ "address": srv.address() }))).await);
    wait_until("the second connection", Duration::from_secs(5), || {
        srv.received().len() == 2
    })
    .await;
    assert!(srv.received().iter().any(|r| r.is_empty()));
}

/// The timeout bounds the whole exchange: a server that accepts and never answers fails the
/// check after `timeout`, it does not hold it.
#[tokio::test]
async fn tcp_silent_server_is_bounded_by_timeout() {
    let srv = tcpsrv::start(Behaviour::Silent).await;
    let started = Instant::now();
    let d = json!({ "address": srv.address(), "payload": "PING", "expect": "PONG", "timeout": 3 });
    let out = probe("tcp", &data(d)).await;
    assert_offline(&out, "failed to read response: i/o timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn tcp_read_errors() {
    // The peer closes before a newline: gobearmon's EOF error, even with the text present.
    let srv = tcpsrv::start(Behaviour::Greet("PONG")).await;
    let d = json!({ "address": srv.address(), "expect": "PONG" });
    assert_offline(
        &probe("tcp", &data(d)).await,
        "failed to read response: EOF",
    );
    // A greeting line is matched without a payload.
    let srv = tcpsrv::start(Behaviour::GreetAndHold("220 smtp.test ESMTP ready\r\n")).await;
    let d = json!({ "address": srv.address(), "expect": "ESMTP" });
    assert_online(&probe("tcp", &data(d)).await);
    // An endless line is cut at 64 KiB.
    let srv = tcpsrv::start(Behaviour::Flood(200 * 1024)).await;
    let d = json!({ "address": srv.address(), "expect": "x" });
    assert_offline(
        &probe("tcp", &data(d)).await,
        "failed to read response: line longer than 65536 bytes",
    );
}

#[tokio::test]
async fn tcp_connection_errors_and_force_ip() {
    let port = testkit::ports::free_port();
    let out = probe(
        "tcp",
        &data(json!({ "address": format!("127.0.0.1:{port}") })),
    )
    .await;
    assert_offline(
        &out,
        &format!("TCP connection error: dial tcp 127.0.0.1:{port}: connection refused"),
    );
    let out = probe("tcp", &data(json!({ "address": "127.0.0.1" }))).await;
    assert_offline_prefix(&out, "TCP connection error: ");

    let v4 = tcpsrv::start(Behaviour::Silent).await;
    let v6 = tcpsrv::start_on("[::1]:0", Behaviour::Silent).await;
    assert_online(&probe("tcp", &data(json!({ "address": v6.address() }))).await);
    assert_online(
        &probe(
            "tcp",
            &data(json!({ "address": v6.address(), "force_ip": 6 })),
        )
        .await,
    );
    assert_online(
        &probe(
            "tcp",
            &data(json!({ "address": v4.address(), "force_ip": 4 })),
        )
        .await,
    );
    let out = probe(
        "tcp",
        &data(json!({ "address": v4.address(), "force_ip": 6 })),
    )
    .await;
    assert_offline_prefix(
        &out,
        &format!("TCP connection error: dial tcp6 {}: ", v4.address()),
    );
    let out = probe(
        "tcp",
        &data(json!({ "address": v6.address(), "force_ip": 4 })),
    )
    .await;
    assert_offline_prefix(
        &out,
        &format!("TCP connection error: dial tcp4 {}: ", v6.address()),
    );
    // A name resolves through the system resolver, filtered by family.
    let out = probe(
        "tcp",
        &data(json!({ "address": format!("localhost:{}", v4.addr.port()), "force_ip": 4 })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.address.as_deref(), Some("127.0.0.1"));
}

// ---------------------------------------------------------------------------------------
// icmp
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn icmp_loopback_v4_and_v6() {
    require_root("raw ICMP sockets");
    let out = probe("icmp", &data(json!({ "target": "127.0.0.1" }))).await;
    assert_online(&out);
    assert_eq!(out.details.packets_sent, Some(5));
    assert_eq!(out.details.packets_received, Some(5));
    assert_eq!(out.details.loss_percent, Some(0.0));
    let (min, avg, max) = (
        out.details.rtt_min_ms.unwrap(),
        out.details.rtt_avg_ms.unwrap(),
        out.details.rtt_max_ms.unwrap(),
    );
    assert!(min <= avg && avg <= max, "{out:?}");
    // Five packets 200 ms apart (0.8 s), not ping's 1 s (4 s); generous for a loaded machine.
    assert!(out.duration_ms < 3000, "{out:?}");

    let out = probe("icmp", &data(json!({ "target": "::1", "count": 3 }))).await;
    assert_online(&out);
    assert_eq!(out.details.packets_received, Some(3));
    assert_eq!(out.details.address.as_deref(), Some("::1"));
}

#[tokio::test]
async fn icmp_force_ip_and_bad_targets() {
    require_root("raw ICMP sockets");
    let out = probe(
        "icmp",
        &data(json!({ "target": "localhost", "force_ip": 4, "count": 1 })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.address.as_deref(), Some("127.0.0.1"));
    let out = probe(
        "icmp",
        &data(json!({ "target": "127.0.0.1", "force_ip": 6 })),
    )
    .await;
    assert_offline(&out, "ping: no IPv6 address for 127.0.0.1");
    let out = probe("icmp", &data(json!({ "target": "::1", "force_ip": 4 }))).await;
    assert_offline(&out, "ping: no IPv4 address for ::1");
    let out = probe("icmp", &data(json!({ "target": "127.0.0.1; rm -rf /" }))).await;
    assert_offline(&out, "ping target contains invalid characters");
    let out = probe("icmp", &data(json!({ "target": "" }))).await;
    assert_offline(&out, "ping: missing target");
}

/// Many concurrent runs share one socket per family and never steal each other's replies.
#[tokio::test]
async fn icmp_concurrent_runs_share_a_socket() {
    require_root("raw ICMP sockets");
    let ctx = ProbeContext::default();
    let v4 = CheckSpec::parse("icmp", r#"{"target":"127.0.0.1","count":3}"#);
    let v6 = CheckSpec::parse("icmp", r#"{"target":"::1","count":3}"#);
    let runs = (0..64).map(|i| {
        let spec = if i % 2 == 0 { v4.clone() } else { v6.clone() };
        let ctx = ctx.clone();
        async move { probe::run(&spec, &ctx).await.unwrap() }
    });
    for out in futures_util::future::join_all(runs).await {
        assert_online(&out);
        assert_eq!(out.details.packets_received, Some(3), "{out:?}");
    }
}

/// A host in a network namespace, with nftables dropping 0 %, 40 % (deterministic) and 100 %
/// of the echo replies.
#[tokio::test]
async fn icmp_netns_packet_loss_rules() {
    require_root("network namespaces and raw ICMP sockets");
    let ns = Netns::create();
    let target = ns.host.to_string();
    let ctx = ProbeContext::default();

    // 0 % loss.
    let out = probe_with(
        &ctx,
        "icmp",
        &data(json!({ "target": target, "packetloss": true })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.packets_received, Some(5));

    // 40 %: exactly 2 of each 5 replies are dropped.
    ns.drop_icmp_egress("numgen inc mod 5 < 2");
    let cases = [
        (json!({ "target": target }), None),
        (
            json!({ "target": target, "packetloss": true }),
            Some("ping: 40% packet loss"),
        ),
        (json!({ "target": target, "max_loss": 2 }), None),
        (
            json!({ "target": target, "max_loss": 1 }),
            Some("ping: 40% packet loss"),
        ),
    ];
    for (d, want) in cases {
        let out = probe_with(&ctx, "icmp", &data(d.clone())).await;
        assert_eq!(out.details.packets_sent, Some(5), "{d} {out:?}");
        assert_eq!(out.details.packets_received, Some(3), "{d} {out:?}");
        assert_eq!(out.details.loss_percent, Some(40.0), "{d} {out:?}");
        match want {
            None => assert_online(&out),
            Some(m) => assert_offline(&out, m),
        }
    }
}

#[tokio::test]
async fn icmp_netns_total_loss_is_bounded() {
    require_root("network namespaces and raw ICMP sockets");
    let ns = Netns::create();
    ns.drop_icmp_egress("");
    let started = Instant::now();
    let out = probe("icmp", &data(json!({ "target": ns.host.to_string() }))).await;
    assert_offline(&out, "ping: 100% packet loss");
    assert_eq!(out.details.packets_received, Some(0));
    assert!(out.details.rtt_avg_ms.is_none());
    // 4 x 200 ms interval + 2 s reply timeout, well inside gobearmon's 10 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    // max_loss cannot make a host that answers nothing online.
    let out = probe(
        "icmp",
        &data(json!({ "target": ns.host.to_string(), "max_loss": 5 })),
    )
    .await;
    assert_offline(&out, "ping: 100% packet loss");
}

// ---------------------------------------------------------------------------------------
// max_response_ms (issue 11)
// ---------------------------------------------------------------------------------------

/// The N of `response took N ms, over the limit of {limit} ms`.
#[track_caller]
fn took_over_limit(out: &ProbeOutcome, limit: u64) -> u64 {
    assert_eq!(out.status, CheckStatus::Offline, "{out:?}");
    let n = out
        .message
        .strip_prefix("response took ")
        .and_then(|m| m.strip_suffix(&format!(" ms, over the limit of {limit} ms")))
        .unwrap_or_else(|| panic!("not a latency message: {out:?}"));
    n.parse()
        .unwrap_or_else(|_| panic!("not a number: {out:?}"))
}

/// http, tcp and dns servers that answer after a delay: a limit below the delay is offline
/// with the time taken, a limit above it is online.
#[tokio::test]
async fn max_response_ms_http_tcp_dns() {
    let http = start_http().await;
    let url = http.url("/slow"); // answers after 2 s
    let out = probe("http", &data(json!({ "url": url, "max_response_ms": 500 }))).await;
    assert!(took_over_limit(&out, 500) >= 2000, "{out:?}");
    assert_eq!(out.details.http_status, Some(200));
    let out = probe(
        "http",
        &data(json!({ "url": url, "max_response_ms": 9000 })),
    )
    .await;
    assert_online(&out);

    let tcp = tcpsrv::start(Behaviour::ReplyAfter(Duration::from_millis(300), "PONG\n")).await;
    let d = |limit: u64| {
        data(
            json!({ "address": tcp.address(), "payload": "PING", "expect": "PONG",
                     "max_response_ms": limit }),
        )
    };
    let out = probe("tcp", &d(100)).await;
    assert!(took_over_limit(&out, 100) >= 300, "{out:?}");
    assert_online(&probe("tcp", &d(5000)).await);

    let dns = HostileDns::start(Hostile::Slow(Duration::from_millis(300))).await;
    let d = |limit: u64| {
        data(
            json!({ "server": dns.addr.to_string(), "name": "slow.test", "type": "A",
                     "max_response_ms": limit }),
        )
    };
    let out = probe("dns", &d(100)).await;
    assert!(took_over_limit(&out, 100) >= 300, "{out:?}");
    assert_online(&probe("dns", &d(5000)).await);
}

/// icmp judges the mean round trip: loopback is well inside a limit; a namespace host whose
/// echo replies leave 300 ms after each request is over it.
#[tokio::test]
async fn max_response_ms_icmp_mean_rtt() {
    require_root("network namespaces and raw ICMP sockets");
    let ctx = ProbeContext::default();
    let d = |target: &str, limit: u64| {
        data(json!({ "target": target, "count": 2, "max_response_ms": limit }))
    };
    assert_online(&probe_with(&ctx, "icmp", &d("127.0.0.1", 1000)).await);

    let ns = Netns::create();
    let _echo = ns.slow_echo(Duration::from_millis(300));
    let target = ns.host.to_string();
    let out = probe_with(&ctx, "icmp", &d(&target, 100)).await;
    assert_eq!(out.details.packets_received, Some(2), "{out:?}");
    let mean = took_over_limit(&out, 100);
    assert!(mean >= 300, "{out:?}");
    let avg = out.details.rtt_avg_ms.expect("mean RTT reported");
    assert!((mean as f64 - avg).abs() < 1.0, "{out:?}");
    assert_online(&probe_with(&ctx, "icmp", &d(&target, 1500)).await);
}

// ---------------------------------------------------------------------------------------
// dns (S15 and the fixes)
// ---------------------------------------------------------------------------------------

/// S15: A record, expect matched and not matched, NXDOMAIN.
#[tokio::test]
async fn s15_dns_expect_and_nxdomain() {
    let dns = Dnsmasq::start();
    let server = dns.server();
    let out = probe(
        "dns",
        &data(json!({ "server": server, "name": "a.test", "type": "a", "expect": "10.0.0.1" })),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.rcode.as_deref(), Some("NOERROR"));
    let answers = out.details.answers.clone().unwrap();
    assert_eq!(answers.len(), 1);
    assert!(answers[0].starts_with("a.test.\t"), "{answers:?}");
    assert!(answers[0].ends_with("\tIN\tA\t10.0.0.1"), "{answers:?}");

    let out = probe(
        "dns",
        &data(json!({ "server": server, "name": "a.test", "type": "a", "expect": "10.0.0.2" })),
    )
    .await;
    assert_offline_prefix(
        &out,
        "query answer does not contain expected string (answer is a.test.",
    );
    assert!(out.message.ends_with(", expected 10.0.0.2)"), "{out:?}");

    let out = probe(
        "dns",
        &data(json!({ "server": server, "name": "nothere.test", "type": "a" })),
    )
    .await;
    assert_offline(&out, "query returned no results");
    assert_eq!(out.details.rcode.as_deref(), Some("NXDOMAIN"));
}

/// Every record type, in gobearmon's presentation format.
#[tokio::test]
async fn dns_record_types() {
    let dns = Dnsmasq::start();
    let server = dns.server();
    let cases = [
        ("web1.test", "AAAA", "\tIN\tAAAA\t::11"),
        ("www.test", "cname", "www.test.\t0\tIN\tCNAME\tweb1.test."),
        // An `a` query answers with the CNAME too, and it counts.
        ("www.test", "a", "\tIN\tCNAME\tweb1.test."),
        ("www.test", "a", "web1.test.\t0\tIN\tA\t127.0.0.11"),
        ("test", "mx", "\tIN\tMX\t10 mail.test."),
        ("test", "txt", "\tIN\tTXT\t\"v=spf1 -all\""),
        ("test", "spf", "\"v=spf1 -all\""),
        ("_monitor.test", "txt", "\"token=abc123\" \"second string\""),
        ("_http._tcp.test", "srv", "\tIN\tSRV\t0 10 8080 web1.test."),
        ("caa.test", "caa", "\tIN\tCAA\t0 issue \"ca.test\""),
        ("zone.test", "ns", "\tIN\tNS\tns1.zone.test."),
        (
            "zone.test",
            "soa",
            "\tIN\tSOA\tns1.zone.test. hostmaster.zone.test. 2026112101 3600 600 86400 300",
        ),
        ("1.0.0.10.in-addr.arpa", "ptr", "\tIN\tPTR\ta.test."),
    ];
    for (name, rtype, expect) in cases {
        let out = probe(
            "dns",
            &data(json!({ "server": server, "name": name, "type": rtype, "expect": expect })),
        )
        .await;
        assert_online(&out);
    }
}

/// IPv6 server literals (gobearmon could not use them) and the `[dns] server` default.
#[tokio::test]
async fn dns_server_forms_and_default() {
    let dns = Dnsmasq::start();
    let port = dns.port;
    for server in [format!("[::1]:{port}"), format!("127.0.0.1:{port}")] {
        let out = probe(
            "dns",
            &data(json!({ "server": server, "name": "a.test", "type": "A", "expect": "10.0.0.1" })),
        )
        .await;
        assert_online(&out);
    }
    // No `server`: the worker's default.
    let ctx = ProbeContext::new(Some(format!("[::1]:{port}")));
    let out = probe_with(&ctx, "dns", r#"{"name":"a.test","type":"a"}"#).await;
    assert_online(&out);
    assert_eq!(out.details.address, Some(format!("[::1]:{port}")));
    // A check's own server wins over the default.
    let ctx = ProbeContext::new(Some("127.0.0.1:1".to_owned()));
    let d = data(json!({ "server": format!("127.0.0.1:{port}"), "name": "a.test", "type": "a" }));
    assert_online(&probe_with(&ctx, "dns", &d).await);
}

/// A UDP answer over 512 bytes comes back truncated and is asked again over TCP.
#[tokio::test]
async fn dns_truncated_answer_retried_over_tcp() {
    let dns = Dnsmasq::start();
    let out = probe(
        "dns",
        &data(
            json!({ "server": dns.server(), "name": "big.test", "type": "txt", "expect": "4yyy" }),
        ),
    )
    .await;
    assert_online(&out);
    assert_eq!(out.details.transport.as_deref(), Some("tcp"));
    assert_eq!(out.details.answers.as_ref().map(Vec::len), Some(5));
}

/// Servers that never answer, answer garbage or answer someone else cannot fool or hold
/// the check.
#[tokio::test]
async fn dns_hostile_servers() {
    let silent = HostileDns::start(Hostile::Silent).await;
    let started = Instant::now();
    let out = probe(
        "dns",
        &data(json!({ "server": silent.addr.to_string(), "name": "a.test", "type": "a" })),
    )
    .await;
    assert_offline(
        &out,
        &format!("query failed: udp {}: i/o timeout", silent.addr),
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    let garbage = HostileDns::start(Hostile::Garbage).await;
    let out = probe(
        "dns",
        &data(json!({ "server": garbage.addr.to_string(), "name": "a.test", "type": "a" })),
    )
    .await;
    assert_offline_prefix(&out, "query failed: ");
    assert!(out.message.contains("ignored"), "{out:?}");

    let noisy = HostileDns::start(Hostile::NoiseThenAnswer).await;
    let out = probe(
        "dns",
        &data(json!({ "server": noisy.addr.to_string(), "name": "a.test", "type": "a", "expect": "10.9.9.9" })),
    )
    .await;
    assert_online(&out);

    // Nothing listening: the port-unreachable comes back as a refused connection.
    let port =
        testkit::ports::free_port_where(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
    let out = probe(
        "dns",
        &data(json!({ "server": format!("127.0.0.1:{port}"), "name": "a.test", "type": "a" })),
    )
    .await;
    assert_offline(
        &out,
        &format!("query failed: udp 127.0.0.1:{port}: connection refused"),
    );
}

// ---------------------------------------------------------------------------------------
// S8: invalid definitions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn s8_invalid_definitions_are_offline_with_gobearmons_messages() {
    assert_offline(&probe("bogus", "{}").await, "invalid check type: bogus");
    assert_offline_prefix(
        &probe("http", "{not json").await,
        "failed to decode check parameters: ",
    );
    assert_offline(
        &probe("tcp", r#"{"address":"127.0.0.1:1","timeout":"15"}"#).await,
        "failed to decode check parameters: json: cannot unmarshal string into Go struct \
         field TcpCheckParams.timeout of type int",
    );
    assert_offline(
        &probe("dns", r#"{"name":"a.test","type":"BOGUS"}"#).await,
        "invalid record type: BOGUS",
    );
    // The reference's S8 used CNAME as the invalid type; CNAME is supported now.
    assert!(matches!(
        CheckSpec::parse("dns", r#"{"name":"a.test","type":"CNAME"}"#),
        CheckSpec::Dns(_)
    ));
}

// ---------------------------------------------------------------------------------------
// gobearmon probe
// ---------------------------------------------------------------------------------------

fn gobearmon(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gobearmon"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gobearmon");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().expect("exited");
    let lines: Vec<&str> = stdout.lines().collect();
    let json = match lines.as_slice() {
        [line] => serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}")),
        [] => serde_json::Value::Null,
        _ => panic!("more than one line: {stdout}"),
    };
    (code, json, stderr)
}

// Multi-threaded: the blocking child process must not starve the in-process server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_probe_exit_codes_and_json_line() {
    let srv = tcpsrv::start(Behaviour::Reply("PONG\n")).await;
    let d = data(json!({ "address": srv.address(), "payload": "PING", "expect": "PONG" }));
    let (code, out, err) = gobearmon(&["probe", "tcp", &d]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["status"], "online");
    assert_eq!(out["message"], "");
    assert!(out["duration_ms"].is_u64(), "{out}");
    let parsed: ProbeOutcome = serde_json::from_value(out).unwrap();
    assert_eq!(parsed.status, CheckStatus::Online);

    let (code, out, _) = gobearmon(&["probe", "tcp", r#"{"address":"127.0.0.1:1"}"#]);
    assert_eq!(code, 1);
    assert_eq!(out["status"], "offline");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("TCP connection error: ")
    );

    let (code, out, _) = gobearmon(&["probe", "bogus", "{}"]);
    assert_eq!(code, 1);
    assert_eq!(out["message"], "invalid check type: bogus");
    let (code, out, _) = gobearmon(&["probe", "http", "{not json"]);
    assert_eq!(code, 1);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .starts_with("failed to decode check parameters: ")
    );

    let (code, out, err) = gobearmon(&["probe", "tcp"]);
    assert_eq!(code, 2, "{out} {err}");
    let (code, _, err) = gobearmon(&[
        "probe",
        "tcp",
        "{}",
        "--config",
        "/nonexistent/gobearmon.toml",
    ]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn cli_probe_reads_dns_default_from_config() {
    let dns = Dnsmasq::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\npassword = \"a-cluster-secret-of-some-length\"\n\
             [worker]\nid = \"w1\"\nview_addr = \"127.0.0.1:7000\"\n\
             [dns]\nserver = \"[::1]:{}\"\n",
            dns.port
        ),
    )
    .unwrap();
    let (code, out, err) = gobearmon(&[
        "probe",
        "dns",
        r#"{"name":"a.test","type":"a","expect":"10.0.0.1"}"#,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["details"]["rcode"], "NOERROR");
}

// ---------------------------------------------------------------------------------------
// ip_policy: every address of a name
// ---------------------------------------------------------------------------------------

/// The name of [`ip_policy_every_address`]: three addresses, 127.0.0.4 without listeners.
const MULTI: &str = "host-record=multi.test,127.0.0.2\nhost-record=multi.test,127.0.0.3\n\
                     host-record=multi.test,127.0.0.4";

/// A name with three addresses in dnsmasq, one of them refusing: `first` and `any` are
/// online, `all` is offline naming that address; for tcp, http, ssl_expire and icmp. The
/// checks resolve through the system resolver, so they run in a child process inside a
/// namespace whose resolv.conf names the dnsmasq ([`ip_policy_child_in_netns`]).
#[test]
fn ip_policy_every_address() {
    require_root("network namespaces");
    let ns = ResolverNetns::start(MULTI);
    // Test names in this binary carry their module (tests/in_process/main.rs).
    let out = ns.run_test("probes::ip_policy_child_in_netns");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the child test failed: {text}\ndnsmasq: {}",
        ns.dnsmasq_log()
    );
    assert!(
        text.contains("1 passed"),
        "the child test did not run: {text}"
    );
}

#[tokio::test]
#[ignore = "run inside a namespace by ip_policy_every_address"]
async fn ip_policy_child_in_netns() {
    assert!(
        std::env::var_os(testkit::probe::resolver::CHILD_ENV).is_some(),
        "run by ip_policy_every_address inside its namespace, not by hand"
    );
    // dnsmasq was just started: wait (bounded) until it serves all three addresses.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::net::lookup_host("multi.test:1")
            .await
            .map(|a| a.count())
            .unwrap_or(0);
        if n == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "dnsmasq never served multi.test");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let good = ["127.0.0.2", "127.0.0.3"];
    let policies = |base: serde_json::Value| {
        ["first", "any", "all"].map(|p| {
            let mut d = base.clone();
            d["ip_policy"] = json!(p);
            d.to_string()
        })
    };

    // tcp
    let a = tcpsrv::start_on("127.0.0.2:0", Behaviour::Greet("hi\n")).await;
    let port = a.addr.port();
    let _b = tcpsrv::start_on(&format!("127.0.0.3:{port}"), Behaviour::Greet("hi\n")).await;
    let [first, any, all] = policies(json!({ "address": format!("multi.test:{port}") }));
    assert_online(&probe("tcp", &first).await);
    assert_online(&probe("tcp", &any).await);
    let out = probe("tcp", &all).await;
    assert_offline(
        &out,
        &format!(
            "ip_policy all: 1 of 3 addresses failed: 127.0.0.4 (TCP connection error: dial tcp \
             multi.test:{port}: connection refused)"
        ),
    );
    assert_eq!(out.details.address.as_deref(), Some("127.0.0.4"));

    // http: each address is asked with the URL's host
    let h2 = testkit::probe::http::start_http_on("127.0.0.2:0").await;
    let port = h2.addr.port();
    let h3 = testkit::probe::http::start_http_on(&format!("127.0.0.3:{port}")).await;
    let [first, any, all] = policies(json!({ "url": format!("http://multi.test:{port}/ok") }));
    assert_online(&probe("http", &first).await);
    assert_online(&probe("http", &any).await);
    let out = probe("http", &all).await;
    assert_offline_prefix(
        &out,
        &format!(
            "ip_policy all: 1 of 3 addresses failed: 127.0.0.4 (error performing HTTP request: \
             Get \"http://multi.test:{port}/ok\": "
        ),
    );
    for ip in good {
        assert!(!out.message.contains(ip), "{out:?}");
    }
    for srv in [&h2, &h3] {
        assert_eq!(
            srv.last("/ok").headers["host"],
            format!("multi.test:{port}")
        );
    }

    // ssl_expire: SNI stays the name
    let cert = || ServerCert::self_signed("multi.test", hours_from_now(24 * 90));
    let s2 = testkit::probe::http::start_https_on("127.0.0.2:0", cert()).await;
    let port = s2.addr.port();
    let s3 = testkit::probe::http::start_https_on(&format!("127.0.0.3:{port}"), cert()).await;
    let [first, any, all] = policies(json!({ "address": format!("multi.test:{port}"), "days": 7 }));
    assert_online(&probe("ssl_expire", &first).await);
    assert_online(&probe("ssl_expire", &any).await);
    assert_offline(
        &probe("ssl_expire", &all).await,
        &format!(
            "ip_policy all: 1 of 3 addresses failed: 127.0.0.4 (dial tcp multi.test:{port}: \
             connection refused)"
        ),
    );
    for srv in [&s2, &s3] {
        assert!(
            srv.sni
                .lock()
                .unwrap()
                .contains(&Some("multi.test".to_owned())),
            "{:?}",
            srv.sni
        );
    }

    // icmp: echo requests to 127.0.0.4 are dropped inside the namespace
    require_tool("nft", "nftables");
    let rules = "table inet gbm_drop {\n chain out {\n  type filter hook output priority 0;\n  \
                 ip daddr 127.0.0.4 icmp type echo-request drop\n }\n}\n";
    let path = std::env::temp_dir().join(format!("gbm-drop-{}.nft", std::process::id()));
    std::fs::write(&path, rules).expect("write the nft rules");
    let nft = Command::new("nft")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run nft");
    let _ = std::fs::remove_file(&path);
    assert!(
        nft.status.success(),
        "{}",
        String::from_utf8_lossy(&nft.stderr)
    );
    let [_, any, all] = policies(json!({ "target": "multi.test", "count": 1 }));
    assert_online(&probe("icmp", &any).await);
    let out = probe("icmp", &all).await;
    assert_offline(
        &out,
        "ip_policy all: 1 of 3 addresses failed: 127.0.0.4 (ping: 100% packet loss)",
    );
}

#[tokio::test]
async fn ip_policy_spec_errors() {
    assert_offline(
        &probe("tcp", r#"{"address":"127.0.0.1:1","ip_policy":"every"}"#).await,
        "invalid ip_policy: \"every\" (expected \"first\", \"any\" or \"all\")",
    );
    // An IP literal is one address: `all` probes just it.
    let srv = tcpsrv::start(Behaviour::Greet("hi\n")).await;
    let d = data(json!({ "address": srv.address(), "ip_policy": "all" }));
    assert_online(&probe("tcp", &d).await);
}

// ---------------------------------------------------------------------------------------
// http expect_json
// ---------------------------------------------------------------------------------------

/// Each operator passing and failing on the server's `/json`, a missing path, a body that is
/// not JSON, and a bad condition as a spec error.
#[tokio::test]
async fn http_expect_json_operators() {
    let srv = start_http().await;
    let check = |conds: serde_json::Value, path: &str| {
        data(json!({ "url": srv.url(path), "expect_json": conds }))
    };
    let passing = json!([
        { "path": "$.status", "equals": "ok" },
        { "path": "$.status", "not_equals": "down" },
        { "path": "$.queue.depth", "less_than": 100 },
        { "path": "$.queue.depth", "greater_than": 6.5 },
        { "path": "$.version", "contains": ".2." },
        { "path": "$.items", "min_length": 1 },
        { "path": "$.items", "max_length": 2 },
        { "path": "$.queue", "exists": true },
        { "path": "$.gone", "exists": false },
        { "path": "$.items[*].state", "equals": "up", "match": "any" },
        { "path": "$.items[1].state", "equals": "down" },
    ]);
    assert_online(&probe("http", &check(passing, "/json")).await);

    for (cond, message) in [
        (
            json!({ "path": "$.status", "equals": "up" }),
            "$.status equals \"up\": found \"ok\"",
        ),
        (
            json!({ "path": "$.status", "not_equals": "ok" }),
            "$.status not_equals \"ok\": found \"ok\"",
        ),
        (
            json!({ "path": "$.queue.depth", "less_than": 5 }),
            "$.queue.depth less_than 5: found 7",
        ),
        (
            json!({ "path": "$.queue.depth", "greater_than": 7 }),
            "$.queue.depth greater_than 7: found 7",
        ),
        (
            json!({ "path": "$.version", "contains": "2.0" }),
            "$.version contains \"2.0\": found \"1.2.3\"",
        ),
        (
            json!({ "path": "$.items", "min_length": 3 }),
            "$.items min_length 3: found [{\"state\":\"up\"},{\"state\":\"down\"}]",
        ),
        (
            json!({ "path": "$.version", "max_length": 3 }),
            "$.version max_length 3: found \"1.2.3\"",
        ),
        (
            json!({ "path": "$.status", "exists": false }),
            "$.status exists false: found \"ok\" at $['status']",
        ),
        (
            json!({ "path": "$.items[*].state", "equals": "up" }),
            "$.items[*].state equals \"up\": found \"down\" at $['items'][1]['state']",
        ),
        (
            json!({ "path": "$.queue.missing", "exists": true }),
            "$.queue.missing exists true: nothing found at that path",
        ),
        (
            json!({ "path": "$.nothere", "equals": 1 }),
            "$.nothere equals 1: nothing found at that path",
        ),
    ] {
        let conds = json!([{ "path": "$.status", "equals": "ok" }, cond]);
        let out = probe("http", &check(conds, "/json")).await;
        assert_offline(&out, &format!("expect_json condition 2 failed: {message}"));
        assert_eq!(out.details.http_status, Some(200));
    }

    let out = probe(
        "http",
        &check(json!([{ "path": "$.status", "equals": "ok" }]), "/ok"),
    )
    .await;
    assert_offline(
        &out,
        "expect_json: the response body is not JSON: expected value at line 1 column 1",
    );
    let out = probe(
        "http",
        &check(json!([{ "path": "$.a", "exists": true }]), "/huge"),
    )
    .await;
    assert_offline(
        &out,
        "expect_json: the response body is larger than 1048576 bytes",
    );
    assert_offline(
        &probe(
            "http",
            &check(json!([{ "path": "$.a", "equal": 1 }]), "/json"),
        )
        .await,
        "invalid expect_json[0]: unknown operator \"equal\" (expected equals, not_equals, \
         less_than, greater_than, contains, min_length, max_length or exists)",
    );
    assert_offline_prefix(
        &probe(
            "http",
            &check(json!([{ "path": "status", "equals": 1 }]), "/json"),
        )
        .await,
        "invalid expect_json[0]: invalid path \"status\": ",
    );
}
