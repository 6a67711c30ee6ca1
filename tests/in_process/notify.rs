//! Notification delivery against real servers: aiosmtpd (STARTTLS, implicit TLS, AUTH), axum
//! receivers for webhooks and a Twilio stand-in, and MariaDB for the outbox.
//!
//! Needs: MariaDB at `GBM_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306/`) and aiosmtpd
//! for `/usr/bin/python3` (Debian `python3-aiosmtpd`; or `GBM_TEST_PYTHON`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gobearmon::config::{DeliveryConfig, SmtpConfig, SmtpTls, TwilioConfig};
use gobearmon::model::{ContactId, ContactKind, ContactRow, Epoch, NodeId};
use gobearmon::notify::admin::AdminNotifier;
use gobearmon::notify::email::EmailSender;
use gobearmon::notify::outbox::Dispatcher;
use gobearmon::notify::{Channels, Deliverer, text, webhook};
use gobearmon::store::{StoreError, fence};
use mysql_async::prelude::Queryable;
use testkit::notify::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A running dispatcher and the token that stops it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), StoreError>>,
}

impl Running {
    async fn stop(self) -> Result<(), StoreError> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("dispatcher stops")
            .expect("dispatcher task")
    }
}

fn channels(
    smtp: &SmtpConfig,
    twilio: &TwilioConfig,
    cfg: &DeliveryConfig,
    pki: Option<&TestPki>,
) -> Arc<Channels> {
    let roots: Vec<_> = pki
        .map(|p| {
            let roots = gobearmon::notify::read_pem_roots(&p.ca_path).unwrap();
            assert_eq!(roots, vec![p.ca_der.clone()]);
            roots
        })
        .unwrap_or_default();
    Arc::new(Channels::with_extra_roots(smtp, twilio, cfg.timeout, &roots).unwrap())
}

fn admin(smtp: &SmtpConfig, cfg: &DeliveryConfig) -> Arc<AdminNotifier> {
    let sender = smtp.host.as_ref().map(|_| EmailSender::new(smtp).unwrap());
    Arc::new(AdminNotifier::with_sender(
        sender,
        smtp.admin.clone(),
        cfg.admin_interval,
    ))
}

fn start(
    db: &TestDb,
    epoch: u64,
    node: &str,
    cfg: &DeliveryConfig,
    deliverer: Arc<dyn Deliverer>,
    admin: Arc<AdminNotifier>,
) -> Running {
    let dispatcher = Dispatcher::new(
        db.store.clone(),
        Epoch(epoch),
        NodeId(node.into()),
        cfg.clone(),
        deliverer,
        admin,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(dispatcher.run(stop.clone()));
    Running { stop, task }
}

async fn wait_state(db: &TestDb, event: i64, contact: ContactId, state: &str) -> OutboxRow {
    wait_for(
        &format!("outbox row (event {event}, contact {contact}) to be {state}"),
        WAIT,
        || async {
            let r = db.row(event, contact).await;
            (r.state == state).then_some(r)
        },
    )
    .await
}

fn contact(kind: &str, data: &str) -> ContactRow {
    ContactRow {
        id: ContactId(1),
        kind: ContactKind::parse(kind),
        data: data.into(),
    }
}

/// The decoded body; the line ending that SMTP needs before the final `.` is not part of it.
fn body_of(m: &serde_json::Value) -> String {
    let body = m["body"].as_str().unwrap().replace("\r\n", "\n");
    body.strip_suffix('\n').unwrap_or(&body).to_string()
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_a_real_smtp_server_through_every_tls_mode() {
    let pki = TestPki::generate();
    let tls_files = Some((pki.cert_path.clone(), pki.key_path.clone()));
    let starttls = SmtpServer::start(SmtpOptions {
        tls: tls_files.clone(),
        require_auth: true,
        ..Default::default()
    })
    .await;
    let implicit = SmtpServer::start(SmtpOptions {
        tls: tls_files,
        implicit: true,
        require_auth: true,
        ..Default::default()
    })
    .await;
    let plain = SmtpServer::start(SmtpOptions::default()).await;
    let n = flip(42, 7);
    let expected_body = text::email_body(&n);
    assert!(!expected_body.contains("hunter2"));
    let cfg = delivery(1, Duration::from_secs(10), 1);

    // (mode, server, recipient, TLS expected on the session)
    let cases = [
        (SmtpTls::Auto, &starttls, "auto@test", true),
        (SmtpTls::StartTls, &starttls, "starttls@test", true),
        (SmtpTls::Tls, &implicit, "tls@test", true),
        (SmtpTls::None, &starttls, "none@test", false),
    ];
    for (mode, server, rcpt, tls) in cases {
        let smtp = smtp_config(server.port, mode, None);
        let ch = channels(
            &smtp,
            &twilio_config("http://127.0.0.1:9"),
            &cfg,
            Some(&pki),
        );
        ch.deliver(&contact("email", rcpt), &n)
            .await
            .unwrap_or_else(|e| panic!("{mode:?} to {rcpt}: {e}"));
        let m = server.wait_messages_to(rcpt, 1).await.remove(0);
        assert_eq!(m["subject"], "Check offline: web 7", "{mode:?}");
        assert_eq!(body_of(&m), expected_body, "{mode:?}");
        assert_eq!(m["tls"], tls, "{mode:?}: session encryption");
        assert_eq!(m["auth_login"], "monuser", "{mode:?}: AUTH");
        assert_eq!(m["mail_from"], "mon@test");
        assert_eq!(m["to"], rcpt);
        assert_eq!(m["content_transfer_encoding"], "quoted-printable");
        assert!(
            m["content_type"]
                .as_str()
                .unwrap()
                .replace('"', "")
                .eq_ignore_ascii_case("text/plain; charset=utf-8"),
            "{m}"
        );
        assert!(m["message_id"].is_string() && m["date"].is_string(), "{m}");
    }

    // A name outside ASCII survives the subject and the quoted-printable body.
    let mut utf8 = flip(43, 8);
    utf8.name = "Café – ✓ 東京".into();
    let smtp = anonymous_smtp_config(plain.port, SmtpTls::Auto, None);
    let ch = channels(&smtp, &twilio_config("http://127.0.0.1:9"), &cfg, None);
    ch.deliver(&contact("email", "utf8@test"), &utf8)
        .await
        .unwrap();
    let m = plain.wait_messages_to("utf8@test", 1).await.remove(0);
    assert_eq!(m["subject"], "Check offline: Café – ✓ 東京");
    assert_eq!(body_of(&m), text::email_body(&utf8));

    // Several addresses in one contact.
    let smtp = smtp_config(starttls.port, SmtpTls::StartTls, None);
    let ch = channels(
        &smtp,
        &twilio_config("http://127.0.0.1:9"),
        &cfg,
        Some(&pki),
    );
    ch.deliver(&contact("email", "a@test, Ops Team <b@test>"), &n)
        .await
        .unwrap();
    let m = starttls.wait_messages_to("b@test", 1).await.remove(0);
    assert_eq!(m["rcpt_tos"], serde_json::json!(["a@test", "b@test"]));

    // STARTTLS required but not offered: not sent, worth retrying (the server may be fixed).
    let smtp = smtp_config(plain.port, SmtpTls::StartTls, None);
    let ch = channels(
        &smtp,
        &twilio_config("http://127.0.0.1:9"),
        &cfg,
        Some(&pki),
    );
    let err = ch
        .deliver(&contact("email", "never@test"), &n)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(plain.messages_to("never@test").is_empty());

    // A certificate nobody vouches for is refused.
    let smtp = smtp_config(starttls.port, SmtpTls::StartTls, None);
    let ch = channels(&smtp, &twilio_config("http://127.0.0.1:9"), &cfg, None);
    let err = ch
        .deliver(&contact("email", "untrusted@test"), &n)
        .await
        .unwrap_err();
    assert!(starttls.messages_to("untrusted@test").is_empty(), "{err}");
}

/// With `[smtp] username` set, `tls = "auto"` never sends AUTH over a connection the server
/// left unencrypted: against a server without STARTTLS the row fails with an error that says
/// why, and the server's wire shows EHLO and QUIT but no AUTH and no credential in any
/// encoding. Against a server with STARTTLS, AUTH goes only after it. `tls = "none"` sends
/// AUTH in clear: the operator's explicit choice. Without a username `auto` still delivers to
/// a server without STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tls_never_sends_credentials_over_an_unencrypted_connection() {
    use base64::Engine as _;
    let db = TestDb::create("clear_auth").await;
    let plain = SmtpServer::start(SmtpOptions::default()).await;
    let ops = db.add_contact("email", "ops@test").await;
    let cfg = delivery(1, Duration::from_secs(5), 1);
    let twilio = twilio_config("http://127.0.0.1:9");

    // Phase 1: auto with a username, no STARTTLS offered: refused, recorded on the row.
    let smtp = smtp_config(plain.port, SmtpTls::Auto, None);
    db.enqueue(&flip(1, 10), &[ops]).await;
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&smtp, &twilio, &cfg, None),
        admin(&smtp, &cfg),
    );
    let failed = wait_state(&db, 1, ops, "failed").await;
    run.stop().await.unwrap();
    let err = failed.last_error.unwrap();
    assert!(
        err.contains(gobearmon::notify::email::CLEAR_AUTH_REFUSED),
        "{err}"
    );
    assert!(err.contains("does not offer STARTTLS"), "{err}");
    let wire = plain.wait_wire("QUIT", 1).await;
    assert!(wire.iter().any(|(_, l)| is_command(l, "EHLO")), "{wire:?}");
    assert!(
        !wire.iter().any(|(_, l)| is_command(l, "AUTH")),
        "AUTH on the wire: {wire:?}"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        "monpass".to_string(),
        b64("\0monuser\0monpass"),
        b64("monpass"),
    ] {
        assert!(
            !wire.iter().any(|(_, l)| l.contains(&secret)),
            "{secret} on the wire: {wire:?}"
        );
    }
    assert!(plain.messages().is_empty(), "nothing sent without AUTH");

    // Phase 2: tls = "none" with a username: AUTH in clear, as configured.
    let smtp = smtp_config(plain.port, SmtpTls::None, None);
    let ch = channels(&smtp, &twilio, &cfg, None);
    ch.deliver(&contact("email", "none@test"), &flip(2, 10))
        .await
        .unwrap();
    let m = plain.wait_messages_to("none@test", 1).await.remove(0);
    assert_eq!(m["auth_login"], "monuser");
    assert_eq!(m["tls"], false);
    assert!(
        plain
            .wire()
            .iter()
            .any(|(tls, l)| !tls && is_command(l, "AUTH")),
        "AUTH sent in clear with tls = none"
    );

    // Phase 3: no username: auto delivers without STARTTLS, and sends no AUTH.
    let before = plain.wire().len();
    let smtp = anonymous_smtp_config(plain.port, SmtpTls::Auto, None);
    let ch = channels(&smtp, &twilio, &cfg, None);
    ch.deliver(&contact("email", "anon@test"), &flip(3, 10))
        .await
        .unwrap();
    let m = plain.wait_messages_to("anon@test", 1).await.remove(0);
    assert_eq!(m["auth_login"], serde_json::Value::Null);
    let wire = plain.wait_wire("QUIT", 3).await;
    assert!(!wire[before..].iter().any(|(_, l)| is_command(l, "AUTH")));

    // Phase 4: a server that offers STARTTLS: auto authenticates, but only after it.
    let pki = TestPki::generate();
    let starttls = SmtpServer::start(SmtpOptions {
        tls: Some((pki.cert_path.clone(), pki.key_path.clone())),
        require_auth: true,
        ..Default::default()
    })
    .await;
    let smtp = smtp_config(starttls.port, SmtpTls::Auto, None);
    let ch = channels(&smtp, &twilio, &cfg, Some(&pki));
    ch.deliver(&contact("email", "auto@test"), &flip(4, 10))
        .await
        .unwrap();
    let m = starttls.wait_messages_to("auto@test", 1).await.remove(0);
    assert_eq!(
        (m["tls"].clone(), m["auth_login"].clone()),
        (true.into(), "monuser".into())
    );
    let wire = starttls.wait_wire("QUIT", 1).await;
    let auth: Vec<_> = wire.iter().filter(|(_, l)| is_command(l, "AUTH")).collect();
    assert!(
        !auth.is_empty() && auth.iter().all(|(tls, _)| *tls),
        "{wire:?}"
    );
    assert!(
        wire.iter()
            .any(|(tls, l)| !tls && is_command(l, "STARTTLS"))
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_recipient_and_dead_server_end_as_failed_rows_with_one_admin_email() {
    let db = TestDb::create("smtp_fail").await;
    let server = SmtpServer::start(SmtpOptions {
        fail_rcpt: vec!["bad@test".into()],
        ..Default::default()
    })
    .await;
    let bad = db.add_contact("email", "bad@test").await;
    let good = db.add_contact("email", "ops@test").await;
    let cfg = delivery(3, Duration::from_secs(5), 4);

    // Phase 1: 550 for one recipient is final at once; the other is delivered.
    let smtp = anonymous_smtp_config(server.port, SmtpTls::Auto, Some("admin@test"));
    let twilio = twilio_config("http://127.0.0.1:9");
    assert_eq!(db.enqueue(&flip(1, 10), &[bad, good]).await, 2);
    assert_eq!(
        db.enqueue(&flip(1, 10), &[bad, good]).await,
        0,
        "enqueue is idempotent"
    );
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&smtp, &twilio, &cfg, None),
        admin(&smtp, &cfg),
    );
    let sent = wait_state(&db, 1, good, "sent").await;
    assert_eq!(sent.attempts, 1);
    let failed = wait_state(&db, 1, bad, "failed").await;
    assert_eq!(failed.attempts, 1, "a 550 is not retried");
    assert!(
        failed.last_error.as_deref().unwrap().contains("550"),
        "{failed:?}"
    );
    let notices = server.wait_messages_to("admin@test", 1).await;
    assert_eq!(
        notices[0]["subject"],
        "gobearmon: notifications could not be delivered"
    );
    let body = body_of(&notices[0]);
    assert!(
        body.contains(&format!("outbox row {}", failed.id)),
        "{body}"
    );
    assert!(body.contains("550"), "{body}");
    wait_for("admin_notified on the failed row", WAIT, || async {
        db.row(1, bad).await.admin_notified.then_some(())
    })
    .await;
    run.stop().await.unwrap();
    assert_eq!(server.messages_to("ops@test").len(), 1);
    assert_eq!(server.messages_to("admin@test").len(), 1, "one admin email");

    // Phase 2: the SMTP server is dead. Every attempt is retried until attempts run out;
    // the admin email goes out once a server answers again.
    let dead_port = closed_port();
    let smtp = anonymous_smtp_config(dead_port, SmtpTls::Auto, Some("admin@test"));
    db.enqueue(&flip(2, 10), &[good]).await;
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&smtp, &twilio, &cfg, None),
        admin(&smtp, &cfg),
    );
    let failed = wait_state(&db, 2, good, "failed").await;
    assert_eq!(failed.attempts, 3);
    let err = failed.last_error.clone().unwrap();
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    assert!(!failed.admin_notified);
    let revived = SmtpServer::start_on(dead_port, SmtpOptions::default()).await;
    let notices = revived.wait_messages_to("admin@test", 1).await;
    let body = body_of(&notices[0]);
    assert!(
        body.contains(&format!("outbox row {}", failed.id)),
        "{body}"
    );
    assert!(body.contains("gave up after 3 attempts"), "{body}");
    wait_for("admin_notified on the dead-server row", WAIT, || async {
        db.row(2, good).await.admin_notified.then_some(())
    })
    .await;
    run.stop().await.unwrap();
    assert_eq!(
        revived.messages_to("admin@test").len(),
        1,
        "one admin email"
    );
    assert!(
        revived.messages_to("ops@test").is_empty(),
        "a failed row is not sent later"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_sms_and_calls_write_charges_and_retry_only_server_errors() {
    let db = TestDb::create("twilio").await;
    let twilio_server = Receiver::start(Behaviour::Twilio).await;
    let twilio = twilio_config(&twilio_server.url(""));
    let sms_ok = db.add_contact("sms", "+15557770001").await;
    let voice_ok = db.add_contact("voice", "+15557770002").await;
    let sms_400 = db.add_contact("sms", "+15550000401").await;
    let voice_500 = db.add_contact("voice", "+15550000501").await;
    let cfg = delivery(3, Duration::from_secs(5), 4);
    let n = flip(5, 21);
    db.enqueue(&n, &[sms_ok, voice_ok, sms_400, voice_500])
        .await;
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&no_smtp(), &twilio, &cfg, None),
        admin(&no_smtp(), &cfg),
    );
    wait_state(&db, 5, sms_ok, "sent").await;
    wait_state(&db, 5, voice_ok, "sent").await;
    let final_400 = wait_state(&db, 5, sms_400, "failed").await;
    let retried_500 = wait_state(&db, 5, voice_500, "failed").await;
    run.stop().await.unwrap();

    assert_eq!(final_400.attempts, 1, "a 4xx is final");
    let e400 = final_400.last_error.unwrap();
    assert!(
        e400.contains("21211") && e400.contains("not a valid phone number"),
        "{e400}"
    );
    assert_eq!(retried_500.attempts, 3, "a 5xx is retried");
    assert!(retried_500.last_error.unwrap().contains("500"));

    let requests = twilio_server.received();
    let by_to = |to: &str| -> Vec<Received> {
        requests
            .iter()
            .filter(|r| r.field("To").as_deref() == Some(to))
            .cloned()
            .collect()
    };
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.basic_auth(),
            Some((TWILIO_SID.to_string(), TWILIO_TOKEN.to_string()))
        );
        assert_eq!(r.field("From").as_deref(), Some(TWILIO_FROM));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
    }
    let sms = by_to("+15557770001");
    assert_eq!(sms.len(), 1);
    assert_eq!(
        sms[0].path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
    );
    assert_eq!(
        sms[0].field("Body").unwrap(),
        "Check [web 21] is now offline: status mismatch, got 500 but expected 200"
    );
    let call = by_to("+15557770002");
    assert_eq!(call.len(), 1);
    assert_eq!(
        call[0].path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Calls.json")
    );
    assert_eq!(
        call[0].field("Twiml").unwrap(),
        "<Response><Say>This is a monitoring-related call from go bear mon . The check . web 21 . has been recorded . offline . Reason is . status mismatch, got 500 but expected 200</Say></Response>"
    );
    assert!(call[0].field("Url").is_none(), "no twimlets URL");
    assert_eq!(by_to("+15550000401").len(), 1);
    assert_eq!(by_to("+15550000501").len(), 3);

    let charges = db.charges().await;
    assert_eq!(charges.len(), 2, "{charges:?}");
    let kinds: Vec<&str> = charges.iter().map(|c| c.1.as_str()).collect();
    assert!(kinds.contains(&"sms") && kinds.contains(&"voice"));
    assert!(charges.iter().all(|c| c.0 == 21 && c.2.starts_with("SM")));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_count_only_2xx_and_carry_schema_key_and_signature() {
    let db = TestDb::create("webhook").await;
    let ok = Receiver::start(Behaviour::Status(200)).await;
    let err500 = Receiver::start(Behaviour::Status(500)).await;
    let err404 = Receiver::start(Behaviour::Status(404)).await;
    let hang = Receiver::start(Behaviour::Hang).await;
    let closed = closed_port();
    let secret = "whsec-test";
    let signed = db
        .add_contact(
            "webhook",
            &serde_json::json!({"url": ok.url("/signed"), "secret": secret,
                                "headers": {"X-Team": "ops"}})
            .to_string(),
        )
        .await;
    let plain_json = db.add_contact("webhook", &ok.url("/plain")).await;
    let form = db.add_contact("http", &ok.url("/form")).await;
    let c500 = db.add_contact("webhook", &err500.url("/")).await;
    let c404 = db.add_contact("http", &err404.url("/")).await;
    let chang = db.add_contact("webhook", &hang.url("/")).await;
    let cclosed = db
        .add_contact("webhook", &format!("http://127.0.0.1:{closed}/"))
        .await;
    let unknown = db.add_contact("pager", "x").await;
    let deleted = ContactId(999_999);
    // A timeout well above the time the good receivers need even on a loaded machine, so the
    // hanging one is still on its first attempt when they are done.
    let cfg = delivery(2, Duration::from_secs(6), 8);
    let n = flip(77, 3);
    db.enqueue(
        &n,
        &[
            signed, plain_json, form, c500, c404, chang, cclosed, unknown, deleted,
        ],
    )
    .await;
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&no_smtp(), &twilio_config("http://127.0.0.1:9"), &cfg, None),
        admin(&no_smtp(), &cfg),
    );

    // The good receivers get theirs while the hanging one still holds its first attempt.
    wait_state(&db, 77, signed, "sent").await;
    wait_state(&db, 77, plain_json, "sent").await;
    wait_state(&db, 77, form, "sent").await;
    let hanging = db.row(77, chang).await;
    assert_eq!(
        (hanging.state.as_str(), hanging.attempts),
        ("pending", 1),
        "a hanging receiver does not hold up the others"
    );

    let f500 = wait_state(&db, 77, c500, "failed").await;
    assert_eq!(f500.attempts, 2, "5xx is retried");
    assert!(f500.last_error.unwrap().contains("500"));
    let f404 = wait_state(&db, 77, c404, "failed").await;
    assert_eq!(f404.attempts, 1, "4xx is final");
    let fhang = wait_state(&db, 77, chang, "failed").await;
    assert_eq!(fhang.attempts, 2);
    assert!(fhang.last_error.unwrap().contains("timed out"));
    let fclosed = wait_state(&db, 77, cclosed, "failed").await;
    assert_eq!(fclosed.attempts, 2);
    assert!(fclosed.last_error.unwrap().contains("connect"));
    let funknown = wait_state(&db, 77, unknown, "failed").await;
    assert_eq!(
        funknown.last_error.as_deref(),
        Some("alert type pager does not exist")
    );
    let fdeleted = wait_state(&db, 77, deleted, "failed").await;
    assert!(
        fdeleted.last_error.unwrap().contains("no longer exists"),
        "deleted contact"
    );
    run.stop().await.unwrap();

    let got = ok.received();
    let find = |path: &str| got.iter().find(|r| r.path == path).unwrap().clone();

    // webhook with a secret: schema v1, idempotency key, signature over "<ts>.<body>".
    let s = find("/signed");
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(s.header("idempotency-key").as_deref(), Some("77"));
    assert_eq!(s.header("x-team").as_deref(), Some("ops"));
    let ts = s.header("x-gobearmon-timestamp").unwrap();
    let sig = s.header("x-gobearmon-signature").unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed_text = format!("{ts}.").into_bytes();
    signed_text.extend_from_slice(&s.body);
    let hex_sig = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let raw_sig: Vec<u8> = (0..hex_sig.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_sig[i..i + 2], 16).unwrap())
        .collect();
    ring::hmac::verify(&key, &signed_text, &raw_sig).expect("signature verifies");
    assert_eq!(
        sig,
        format!(
            "sha256={}",
            webhook::signature(secret.as_bytes(), &ts, &s.body)
        )
    );
    let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "schema": "gobearmon.webhook.v1",
            "event_id": 77,
            "test": false,
            "check": {"id": 3, "name": "web 3", "type": "http"},
            "old_status": "online",
            "new_status": "offline",
            "message": "status mismatch, got 500 but expected 200",
            "time": "2026-11-18T11:06:40.077Z",
            "confirmed_by": ["w1", "w2"]
        })
    );

    // webhook as a bare URL: no signature.
    let p = find("/plain");
    assert_eq!(p.header("idempotency-key").as_deref(), Some("77"));
    assert!(p.header("x-gobearmon-signature").is_none());

    // http (gobearmon's form post): sorted fields, redacted data, idempotency key.
    let f = find("/form");
    assert_eq!(
        f.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(f.header("idempotency-key").as_deref(), Some("77"));
    let fields = f.form();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["check_id", "data", "message", "name", "status", "type"]
    );
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(field("check_id"), "3");
    assert_eq!(field("status"), "offline");
    assert_eq!(field("name"), "web 3");
    assert_eq!(field("type"), "http");
    assert_eq!(
        field("message"),
        "status mismatch, got 500 but expected 200"
    );
    assert!(!field("data").contains("hunter2"));
    assert!(field("data").contains("<redacted>"));

    // Retries of one event carry the same key.
    let keys500: Vec<_> = err500
        .received()
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(
        keys500,
        vec![Some("77".to_string()), Some("77".to_string())]
    );
    assert_eq!(ok.count(), 3, "each delivered once");
    db.drop_db().await;
}

/// Check data full of secrets and a result message that quotes them (as a worker of an older
/// version may write it), delivered to a real SMTP server, a form webhook and a JSON webhook:
/// on each, every rule holds. Secret query values, the URL password, the `password` key, the
/// `body` and non-harmless header values are masked in the data; harmless headers and other
/// query values stay; the message shows the URL without any query value or password, and
/// none of the data's secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redaction_rule_holds_on_email_and_both_webhooks() {
    let smtp_server = SmtpServer::start(SmtpOptions::default()).await;
    let hook = Receiver::start(Behaviour::Status(200)).await;
    let cfg = delivery(1, Duration::from_secs(5), 1);
    let smtp = anonymous_smtp_config(smtp_server.port, SmtpTls::Auto, None);
    let ch = channels(&smtp, &twilio_config("http://127.0.0.1:9"), &cfg, None);
    let url = "http://alice:URLPW1@127.0.0.1:9/probe?token=QTOKEN1&page=7&api_key=QKEY1";
    let mut n = flip(5, 6);
    n.data = serde_json::json!({
        "url": url, "method": "POST", "body": "BODYSECRET1", "username": "bob",
        "password": "PWFIELD1",
        "headers": {"Authorization": "Bearer HAUTH1", "X-Custom": "HCUSTOM1",
                    "Accept": "text/plain", "User-Agent": "probe-ua"},
    })
    .to_string();
    n.message = format!(
        "error performing HTTP request: Post \"{url}\": refused; said HCUSTOM1 BODYSECRET1"
    );
    let secrets = [
        "URLPW1",
        "QTOKEN1",
        "QKEY1",
        "BODYSECRET1",
        "PWFIELD1",
        "HAUTH1",
        "HCUSTOM1",
    ];
    let shown_message = "error performing HTTP request: Post \"http://alice:redacted@127.0.0.1:9\
        /probe?token=redacted&page=redacted&api_key=redacted\": refused; said <redacted> <redacted>";
    let check_shown = |data: &str| {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            v["url"],
            "http://alice:redacted@127.0.0.1:9/probe?token=redacted&page=7&api_key=redacted"
        );
        assert_eq!(v["body"], "<redacted>");
        assert_eq!(v["password"], "<redacted>");
        assert_eq!(v["username"], "bob");
        assert_eq!(v["headers"]["Authorization"], "<redacted>");
        assert_eq!(v["headers"]["X-Custom"], "<redacted>");
        assert_eq!(v["headers"]["Accept"], "text/plain");
        assert_eq!(v["headers"]["User-Agent"], "probe-ua");
    };
    let no_secret = |surface: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked in the {surface}: {text}");
        }
    };

    // Email, through the real SMTP server.
    ch.deliver(&contact("email", "ops@test"), &n).await.unwrap();
    let mail = smtp_server.wait_messages_to("ops@test", 1).await.remove(0);
    let body = body_of(&mail);
    no_secret("email", &format!("{} {body}", mail["subject"]));
    assert!(
        body.starts_with(&format!("Check [web 6] is now offline: {shown_message}\n")),
        "{body}"
    );
    let data_line = body.lines().find_map(|l| l.strip_prefix("Data: ")).unwrap();
    check_shown(data_line);

    // Form webhook (gobearmon's `http` contact).
    ch.deliver(&contact("http", &hook.url("/form")), &n)
        .await
        .unwrap();
    // JSON webhook.
    ch.deliver(&contact("webhook", &hook.url("/json")), &n)
        .await
        .unwrap();
    let got = hook.wait_count(2).await;
    let form = got.iter().find(|r| r.path == "/form").unwrap();
    no_secret("form webhook", &String::from_utf8_lossy(&form.body));
    assert_eq!(form.field("message").as_deref(), Some(shown_message));
    check_shown(&form.field("data").unwrap());
    let json = got.iter().find(|r| r.path == "/json").unwrap();
    no_secret("JSON webhook", &String::from_utf8_lossy(&json.body));
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["message"], shown_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_leaves_nothing_undelivered_and_repeats_only_sends_in_flight() {
    let db = TestDb::create("crash").await;
    let receiver = Receiver::start(Behaviour::SlowOk(Duration::from_millis(30))).await;
    let hook = db.add_contact("webhook", &receiver.url("/h")).await;
    let cfg = delivery(5, Duration::from_secs(2), 8);
    let total = 240usize;
    let items: Vec<_> = (1..=total as i64).map(|e| (flip(e, e), hook)).collect();
    db.enqueue_many(&items).await;
    let deliverer = channels(&no_smtp(), &twilio_config("http://127.0.0.1:9"), &cfg, None);

    // Graceful stop after about a quarter: sends in flight finish and are recorded.
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        deliverer.clone(),
        admin(&no_smtp(), &cfg),
    );
    receiver.wait_count(total / 4).await;
    run.stop().await.unwrap();
    let after_stop = db.states().await;
    let sent_so_far = *after_stop.get("sent").unwrap_or(&0) as usize;
    assert_eq!(
        receiver.count(),
        sent_so_far,
        "a graceful stop records every send"
    );

    // Abrupt kill (task aborted) in the middle of the next part of the batch.
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        deliverer.clone(),
        admin(&no_smtp(), &cfg),
    );
    receiver.wait_count(total / 2).await;
    run.task.abort();
    let _ = run.task.await;
    // Requests already written by the killed dispatcher's connections may still land.
    let at_kill = receiver.settled_count(Duration::from_millis(500)).await;

    // A new controller takes over with a higher epoch; the old epoch can no longer act.
    assert_eq!(
        fence::raise(&db.store, Epoch(2), &NodeId("n2".into()))
            .await
            .unwrap(),
        fence::Raise::Raised
    );
    let stale = start(
        &db,
        1,
        NODE,
        &cfg,
        deliverer.clone(),
        admin(&no_smtp(), &cfg),
    );
    let stale_result = tokio::time::timeout(WAIT, stale.task)
        .await
        .expect("a fenced dispatcher stops by itself")
        .unwrap();
    assert!(
        matches!(stale_result, Err(StoreError::Fenced { .. })),
        "{stale_result:?}"
    );
    assert_eq!(
        receiver.count(),
        at_kill,
        "a fenced dispatcher sends nothing"
    );

    let run = start(&db, 2, "n2", &cfg, deliverer, admin(&no_smtp(), &cfg));
    wait_for("every row sent", Duration::from_secs(60), || async {
        let s = db.states().await;
        (s.get("sent").copied().unwrap_or(0) as usize == total).then_some(())
    })
    .await;
    run.stop().await.unwrap();

    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_key
            .entry(r.header("idempotency-key").unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_key.len(), total, "every event delivered");
    let repeated: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.iter().all(|(_, n)| **n == 2),
        "nothing sent three times: {repeated:?}"
    );
    assert!(
        repeated.len() <= cfg.concurrency,
        "only sends in flight at the kill are repeated ({} > {}): {repeated:?}",
        repeated.len(),
        cfg.concurrency
    );
    eprintln!(
        "crash test: {total} rows, {} repeated after the kill (concurrency {})",
        repeated.len(),
        cfg.concurrency
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rows_to_a_mix_of_contacts_are_all_delivered() {
    let db = TestDb::create("thousand").await;
    let smtp_server = SmtpServer::start(SmtpOptions::default()).await;
    let hooks = Receiver::start(Behaviour::Status(204)).await;
    let twilio_server = Receiver::start(Behaviour::Twilio).await;
    let contacts = [
        db.add_contact("email", "bulk@test").await,
        db.add_contact("webhook", &hooks.url("/json")).await,
        db.add_contact("http", &hooks.url("/form")).await,
        db.add_contact("sms", "+15557770010").await,
        db.add_contact("voice", "+15557770011").await,
    ];
    let events = 200i64;
    let mut tx_items = Vec::new();
    for e in 1..=events {
        for c in contacts {
            tx_items.push((flip(e, 1000 + e), c));
        }
    }
    db.enqueue_many(&tx_items).await;
    let total = tx_items.len();
    assert_eq!(total, 1000);
    let cfg = delivery(5, Duration::from_secs(10), 32);
    let smtp = smtp_config(smtp_server.port, SmtpTls::None, None);
    let started = Instant::now();
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&smtp, &twilio_config(&twilio_server.url("")), &cfg, None),
        admin(&smtp, &cfg),
    );
    wait_for("1000 rows sent", Duration::from_secs(120), || async {
        let s = db.states().await;
        (s.get("sent").copied().unwrap_or(0) as usize == total).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    run.stop().await.unwrap();
    eprintln!(
        "1000 rows (200 each email, webhook, http, sms, voice) delivered in {:.2} s, concurrency {}",
        elapsed.as_secs_f64(),
        cfg.concurrency
    );
    assert_eq!(smtp_server.messages_to("bulk@test").len(), 200);
    let hook_requests = hooks.received();
    assert_eq!(
        hook_requests.iter().filter(|r| r.path == "/json").count(),
        200
    );
    assert_eq!(
        hook_requests.iter().filter(|r| r.path == "/form").count(),
        200
    );
    assert_eq!(twilio_server.count(), 400);
    assert_eq!(db.charges().await.len(), 400);
    let rows = db.rows().await;
    assert!(rows.iter().all(|r| r.attempts == 1 && r.sent_at.is_some()));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_test_command_reports_delivered_or_the_error() {
    let db = TestDb::create("cli").await;
    let ok = Receiver::start(Behaviour::Status(200)).await;
    let good = db.add_contact("webhook", &ok.url("/test")).await;
    let broken = db
        .add_contact("http", &format!("http://127.0.0.1:{}/", closed_port()))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gobearmon.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\npassword = \"0123456789abcdef\"\n[worker]\nid = \"w1\"\n\
             view_addr = \"127.0.0.1:1\"\n[controller]\nadvertise_addr = \"127.0.0.1:8881\"\ndatabase = [\"{}\"]\n\
             delivery_timeout = \"2s\"\n",
            db.url
        ),
    )
    .unwrap();
    let run = |id: i64| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_gobearmon"))
                    .args(["contact", "test", &id.to_string(), "--config"])
                    .arg(&config)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(good.0).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "delivered");
    let got = ok.wait_count(1).await;
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["test"], true);
    assert!(
        got[0]
            .header("idempotency-key")
            .unwrap()
            .starts_with("test-")
    );

    let out = run(broken.0).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("connect"), "{err}");

    let out = run(424_242).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contact 424242 does not exist"));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_notices_are_rate_limited_per_kind() {
    use gobearmon::notify::admin::{AdminKind, AdminOutcome};
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let smtp = anonymous_smtp_config(server.port, SmtpTls::Auto, Some("admin@test"));
    let notifier = AdminNotifier::with_sender(
        Some(EmailSender::new(&smtp).unwrap()),
        smtp.admin.clone(),
        // Long enough that the first send finishing late on a loaded machine cannot let the
        // second notice through; the test waits for it to pass further down.
        Duration::from_secs(4),
    );

    // An outage reporting the same thing a hundred times sends one mail.
    let mut outcomes = Vec::new();
    for i in 0..100 {
        outcomes.push(
            notifier
                .notify(AdminKind::NoController, &format!("controller gone ({i})"))
                .await,
        );
    }
    assert_eq!(outcomes[0], AdminOutcome::Sent);
    assert!(outcomes[1..].iter().all(|o| *o == AdminOutcome::Suppressed));
    // Another kind has its own limit; so has a free-form subject.
    assert_eq!(
        notifier
            .notify(
                AdminKind::InsufficientQuorum,
                "check 3 needs 3 workers, 2 alive"
            )
            .await,
        AdminOutcome::Sent
    );
    assert_eq!(
        notifier.notify_subject("gobearmon: custom", "x").await,
        AdminOutcome::Sent
    );
    let first = server.wait_messages_to("admin@test", 3).await;
    assert_eq!(
        first[0]["subject"],
        "gobearmon: controller failed without replacement"
    );
    assert!(body_of(&first[0]).starts_with("controller gone (0)"));
    assert_eq!(first[1]["subject"], "gobearmon: insufficient quorum");

    // After the interval the next notice goes out and counts what was held back.
    wait_for("the rate limit to pass", WAIT, || async {
        notifier.is_due(AdminKind::NoController).then_some(())
    })
    .await;
    assert_eq!(
        notifier.notify(AdminKind::NoController, "still gone").await,
        AdminOutcome::Sent
    );
    let all = server.wait_messages_to("admin@test", 4).await;
    let last = body_of(&all[3]);
    assert!(last.starts_with("still gone"), "{last}");
    assert!(last.contains("99 more notice(s)"), "{last}");
    assert_eq!(all.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_dispatcher_never_waits_on_the_fence() {
    let db = TestDb::create("idle").await;
    let receiver = Receiver::start(Behaviour::Status(200)).await;
    let hook = db.add_contact("webhook", &receiver.url("/h")).await;
    let cfg = delivery(3, Duration::from_secs(5), 4);
    // Another session holds the fence row locked, as a hung writer would.
    let mut locker = db.raw_conn().await;
    locker.query_drop("START TRANSACTION").await.unwrap();
    locker
        .query_drop("SELECT epoch FROM epoch_fence WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let mut observer = db.raw_conn().await;

    let dispatcher = Dispatcher::new(
        db.store.clone(),
        Epoch(1),
        NodeId(NODE.into()),
        cfg.clone(),
        channels(&no_smtp(), &twilio_config("http://127.0.0.1:9"), &cfg, None),
        admin(&no_smtp(), &cfg),
    )
    .with_poll_interval(Duration::from_millis(10));
    let stop = CancellationToken::new();
    let run = Running {
        stop: stop.clone(),
        task: tokio::spawn(dispatcher.run(stop)),
    };

    // Nothing is due: over many of its polls the dispatcher never asks for the fence.
    for _ in 0..50 {
        let waiting = db.fence_statements(&mut observer).await;
        assert!(
            waiting.is_empty(),
            "an idle dispatcher waits on the fence: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once a row is due it does ask (the observation above would have seen it) ...
    db.insert_row(&mut observer, &flip(1, 11), hook).await;
    let asked = Instant::now();
    while db.fence_statements(&mut observer).await.is_empty() {
        assert!(
            asked.elapsed() < WAIT,
            "the dispatcher never asked for the fence for a due row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and delivers once the fence is free.
    locker.query_drop("COMMIT").await.unwrap();
    wait_state(&db, 1, hook, "sent").await;
    assert_eq!(receiver.count(), 1);
    run.stop().await.unwrap();
    drop((locker, observer));
    db.drop_db().await;
}

#[tokio::test]
async fn a_taken_over_claim_records_nothing_and_a_repeated_record_adds_no_charge() {
    use gobearmon::store::outbox::{self as rows, Attempt, AttemptRecord, ClaimedRow};
    let db = TestDb::create("claim").await;
    let sms = db.add_contact("sms", "+15557770001").await;
    db.enqueue(&flip(1, 11), &[sms]).await;
    let node = NodeId(NODE.into());
    let record = |row: &ClaimedRow, attempt: Attempt| AttemptRecord {
        id: row.id,
        claim: row.claim,
        check_id: row.check_id,
        attempt,
    };

    // A claim that runs out at once (a slow database call outlived it), and another
    // dispatcher's claim of the same row.
    let first = rows::claim_due(&db.store, Epoch(1), &node, 10, Duration::ZERO)
        .await
        .unwrap();
    let second = rows::claim_due(&db.store, Epoch(1), &node, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].claim, second[0].claim);

    // The first claimer's late outcome is not recorded over the second claim.
    let late = record(
        &first[0],
        Attempt::Failed {
            error: "late".into(),
        },
    );
    let done = rows::record(&db.store, Epoch(1), &node, &[late])
        .await
        .unwrap();
    assert_eq!(done.taken_over, vec![first[0].id]);
    let row = db.row(1, sms).await;
    assert_eq!((row.state.as_str(), row.last_error), ("pending", None));

    // The second claimer records its send, then records it again (a commit whose answer was
    // lost is retried): one sent row, one charge.
    let sent = record(
        &second[0],
        Attempt::Sent {
            charge: Some(("sms", "SM0001".into())),
        },
    );
    for _ in 0..2 {
        let done = rows::record(&db.store, Epoch(1), &node, std::slice::from_ref(&sent))
            .await
            .unwrap();
        assert!(done.taken_over.is_empty(), "{done:?}");
    }
    assert_eq!(db.row(1, sms).await.state, "sent");
    assert_eq!(
        db.charges().await,
        vec![(11, "sms".to_string(), "SM0001".to_string())]
    );
    db.drop_db().await;
}

/// Adds `n` flips of check 1 to `check_events`, now (storm control counts them).
async fn add_flips(db: &TestDb, n: usize) {
    let mut conn = db.conn().await;
    for _ in 0..n {
        conn.exec_drop(
            "INSERT INTO check_events (check_id, type) VALUES (1, 'offline')",
            (),
        )
        .await
        .unwrap();
    }
}

/// (state, reason, folded_into) of every row, by event.
async fn decisions(db: &TestDb) -> Vec<(i64, i64, String, Option<String>, Option<i64>)> {
    db.conn()
        .await
        .query(
            "SELECT event_id, contact_id, state, reason, folded_into FROM notification_outbox \
             ORDER BY id",
        )
        .await
        .unwrap()
}

/// A dispatcher of epoch 1 sending mail through `smtp` (no Twilio).
fn start_mailing(db: &TestDb, smtp: &SmtpConfig, cfg: &DeliveryConfig) -> Running {
    let twilio = twilio_config("http://127.0.0.1:9");
    start(
        db,
        1,
        NODE,
        cfg,
        channels(smtp, &twilio, cfg, None),
        admin(smtp, cfg),
    )
}

fn storm_delivery(flips: u32, wait: Duration) -> DeliveryConfig {
    let mut cfg = delivery(3, Duration::from_secs(5), 8);
    cfg.storm = gobearmon::policy::storm::StormRule {
        flips,
        window_ms: 60_000,
        wait_ms: wait.as_millis() as i64,
    };
    cfg.paid_max_per_hour = 30;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_forty_flips_reaches_each_contact_as_one_digest() {
    let db = TestDb::create("storm").await;
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let smtp = anonymous_smtp_config(server.port, SmtpTls::Auto, Some("admin@test"));
    let hook = Receiver::start(Behaviour::Status(200)).await;
    let mail = db.add_contact("email", "ops@test").await;
    let web = db
        .add_contact("webhook", &format!(r#"{{"url":"{}"}}"#, hook.url("/storm")))
        .await;
    add_flips(&db, 40).await;
    let items: Vec<_> = (1..=40)
        .flat_map(|i| [(flip(i, i), mail), (flip(i, i), web)])
        .collect();
    db.enqueue_many(&items).await;
    let cfg = storm_delivery(20, Duration::ZERO);
    let run = start_mailing(&db, &smtp, &cfg);
    let mails = server.wait_messages_to("ops@test", 1).await;
    wait_for("the webhook digest", WAIT, || async {
        (!hook.received().is_empty()).then_some(())
    })
    .await;
    wait_for("every row decided", WAIT, || async {
        let s = db.states().await;
        (s.get("sent") == Some(&2) && s.get("folded") == Some(&78)).then_some(())
    })
    .await;
    run.stop().await.unwrap();

    assert_eq!(server.messages_to("ops@test").len(), 1, "one digest mail");
    assert_eq!(
        mails[0]["subject"],
        "gobearmon: 40 checks changed (40 offline, 0 online)"
    );
    let body = body_of(&mails[0]);
    for i in 1..=40 {
        assert!(
            body.contains(&format!("Check [web {i}] is now offline")),
            "web {i} missing: {body}"
        );
    }
    assert!(!body.contains("hunter2"), "{body}");
    let posts = hook.received();
    assert_eq!(posts.len(), 1, "one digest webhook");
    let json: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(json["digest"].as_array().unwrap().len(), 40);
    assert_eq!(
        posts[0].header("idempotency-key").as_deref(),
        Some("1-digest39")
    );
    // Every folded row says into which row, and why.
    let rows = decisions(&db).await;
    let carriers: Vec<_> = rows.iter().filter(|r| r.2 == "sent").collect();
    assert_eq!(carriers.len(), 2);
    for c in &carriers {
        assert_eq!(c.0, 1, "the oldest row carries the digest");
        assert_eq!(c.3.as_deref(), Some("digest: carries 39 more"));
    }
    let ids: HashMap<(i64, i64), i64> = {
        let all: Vec<(i64, i64, i64)> = db
            .conn()
            .await
            .query("SELECT id, event_id, contact_id FROM notification_outbox")
            .await
            .unwrap();
        all.into_iter().map(|(id, e, c)| ((e, c), id)).collect()
    };
    for r in rows.iter().filter(|r| r.2 == "folded") {
        let carrier = ids[&(1, r.1)];
        assert_eq!(r.4, Some(carrier), "{r:?}");
        assert_eq!(
            r.3.as_deref(),
            Some(format!("digest: sent inside the storm digest of row {carrier}").as_str())
        );
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_storm_flips_every_flip_is_its_own_message() {
    let db = TestDb::create("nostorm").await;
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let smtp = anonymous_smtp_config(server.port, SmtpTls::Auto, None);
    let mail = db.add_contact("email", "ops@test").await;
    add_flips(&db, 20).await;
    let items: Vec<_> = (1..=20).map(|i| (flip(i, i), mail)).collect();
    db.enqueue_many(&items).await;
    let cfg = storm_delivery(20, Duration::ZERO);
    let run = start_mailing(&db, &smtp, &cfg);
    let mails = server.wait_messages_to("ops@test", 20).await;
    run.stop().await.unwrap();
    assert_eq!(mails.len(), 20);
    assert!(mails.iter().all(|m| {
        m["subject"]
            .as_str()
            .unwrap()
            .starts_with("Check offline: web ")
    }));
    assert_eq!(db.states().await.get("sent"), Some(&20));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_hourly_cap_an_sms_contact_gets_one_message_carrying_the_rest() {
    let db = TestDb::create("smscap").await;
    let twilio_server = Receiver::start(Behaviour::Twilio).await;
    let twilio = twilio_config(&twilio_server.url(""));
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let smtp = anonymous_smtp_config(server.port, SmtpTls::Auto, Some("admin@test"));
    let capped = db.add_contact("sms", "+15557770001").await;
    let free = db.add_contact("sms", "+15557770002").await;
    db.conn()
        .await
        .exec_drop(
            "UPDATE contacts SET max_per_hour = 2 WHERE id = ?",
            (capped.0,),
        )
        .await
        .unwrap();
    let mut cfg = storm_delivery(1000, Duration::ZERO);
    // "Told once an hour": the cap notice's rate limit is admin_interval.
    cfg.admin_interval = Duration::from_secs(3600);
    let run = start(
        &db,
        1,
        NODE,
        &cfg,
        channels(&smtp, &twilio, &cfg, None),
        admin(&smtp, &cfg),
    );
    // One message: under the cap.
    db.enqueue(&flip(1, 1), &[capped, free]).await;
    wait_state(&db, 1, capped, "sent").await;
    // Three at once with one message left this hour: one message carrying all three.
    let items: Vec<_> = (2..=4)
        .flat_map(|i| [(flip(i, i), capped), (flip(i, i), free)])
        .collect();
    db.enqueue_many(&items).await;
    wait_state(&db, 2, capped, "sent").await;
    wait_state(&db, 4, free, "sent").await;
    // The cap is used up: the next waits, the admin is told once.
    db.enqueue(&flip(5, 5), &[capped]).await;
    wait_state(&db, 5, capped, "held").await;
    db.enqueue(&flip(6, 6), &[capped]).await;
    wait_state(&db, 6, capped, "held").await;
    let admin_mail = server.wait_messages_to("admin@test", 1).await;
    run.stop().await.unwrap();

    let to = |n: &str| -> Vec<String> {
        twilio_server
            .received()
            .iter()
            .filter(|r| r.field("To").as_deref() == Some(n))
            .filter_map(|r| r.field("Body"))
            .collect()
    };
    let sent = to("+15557770001");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].starts_with("gobearmon: 3 checks changed (3 offline, 0 online).")
            && sent[1].contains("web 2")
            && sent[1].contains("web 4"),
        "{}",
        sent[1]
    );
    assert_eq!(to("+15557770002").len(), 4, "an uncapped contact gets each");
    let rows = decisions(&db).await;
    let of = |event: i64| {
        rows.iter()
            .find(|r| r.0 == event && r.1 == capped.0)
            .unwrap()
    };
    assert_eq!(of(3).2, "folded");
    assert_eq!(
        of(3).3.as_deref().map(|r| r.starts_with("cap: ")),
        Some(true)
    );
    assert_eq!(
        of(5).3.as_deref(),
        Some("cap: the contact's messages per hour are used up")
    );
    assert_eq!(
        admin_mail[0]["subject"],
        "gobearmon: a contact's hourly message cap was reached"
    );
    assert!(body_of(&admin_mail[0]).contains(&capped.to_string()));
    assert_eq!(server.messages_to("admin@test").len(), 1, "told once");
    // A held row is not an outbox stuck in the meta-alert's sense.
    assert_eq!(
        gobearmon::store::outbox::oldest_pending(&db.store)
            .await
            .unwrap(),
        None
    );
    db.drop_db().await;
}
