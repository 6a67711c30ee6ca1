//! Real servers for the notification tests: a MariaDB database per test, an aiosmtpd capture
//! server (child process), axum HTTP receivers standing in for webhooks and Twilio, and a test
//! CA. Every helper fails loudly, naming what is missing.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gobearmon::config::{DeliveryConfig, Secret, SmtpConfig, SmtpTls, TwilioConfig};
use gobearmon::model::{CheckId, CheckStatus, ContactId, Epoch, NodeId};
use gobearmon::notify::{EventId, Notification, outbox};
use gobearmon::store::{Store, fence, fence::FencedTx, schema};
use mysql_async::prelude::Queryable;
use rustls_pki_types::CertificateDer;

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// MariaDB

/// The server URL without a database (`GBM_TEST_MYSQL`, default root on 127.0.0.1:3306).
pub fn mysql_base() -> String {
    std::env::var("GBM_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

/// A database of its own for one test, with install.sql applied and the fence at epoch 1.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    admin: mysql_async::Pool,
}

pub const NODE: &str = "n1";

impl TestDb {
    pub async fn create(test: &str) -> TestDb {
        let name = format!("gbm_t_notify_{test}_{}", std::process::id());
        let base = mysql_base();
        let admin = mysql_async::Pool::new(
            mysql_async::Opts::from_url(&base)
                .unwrap_or_else(|e| panic!("GBM_TEST_MYSQL={base:?} is not a mysql URL: {e}")),
        );
        let mut conn = admin.get_conn().await.unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL is not reachable at {base:?} ({e}); start it or set GBM_TEST_MYSQL"
            )
        });
        // Databases left by earlier runs that panicked, whose process is gone.
        let stale: Vec<String> = conn
            .query("SHOW DATABASES LIKE 'gbm\\_t\\_notify\\_%'")
            .await
            .unwrap();
        for db in stale {
            let pid = db.rsplit('_').next().unwrap_or("");
            if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await
                    .unwrap();
            }
        }
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await
            .unwrap();
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        drop(conn);
        let mut url = url::Url::parse(&base).expect("GBM_TEST_MYSQL is a URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let store = Store::new(&[Secret::new(url.clone())]).unwrap();
        schema::install(&store).await.expect("install.sql applies");
        let raised = fence::raise(&store, Epoch(1), &NodeId(NODE.into()))
            .await
            .unwrap();
        assert_eq!(raised, fence::Raise::Raised);
        TestDb {
            name,
            url,
            store,
            admin,
        }
    }

    /// Drops the database (call at the end of the test).
    pub async fn drop_db(self) {
        self.store.close().await;
        let mut conn = self.admin.get_conn().await.unwrap();
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .unwrap();
        drop(conn);
        let _ = self.admin.disconnect().await;
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        self.store.conn().await.unwrap()
    }

    /// A connection of its own, outside the store's pool (a stand-in for another process),
    /// over TCP like the store's, so it is the same account (`user@127.0.0.1`, not
    /// `user@localhost` through the socket) and sees the store's sessions.
    pub async fn raw_conn(&self) -> mysql_async::Conn {
        let opts = mysql_async::Opts::from_url(&self.url).expect("test database URL");
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// Statements running now, on this database, in sessions other than `observer`'s, that
    /// touch the fence (a session's own statements are visible without PROCESS).
    pub async fn fence_statements(&self, observer: &mut mysql_async::Conn) -> Vec<String> {
        observer
            .query(
                "SELECT INFO FROM information_schema.PROCESSLIST \
                 WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND INFO LIKE '%epoch_fence%'",
            )
            .await
            .unwrap()
    }

    /// Adds an outbox row with plain SQL (no fenced transaction), for a test that holds the
    /// fence itself.
    pub async fn insert_row(
        &self,
        conn: &mut mysql_async::Conn,
        n: &Notification,
        contact: ContactId,
    ) {
        conn.exec_drop(
            "INSERT INTO notification_outbox (event_id, check_id, contact_id, payload) \
             VALUES (?, ?, ?, ?)",
            (
                n.event_id.0,
                n.check_id.0,
                contact.0,
                serde_json::to_string(n).unwrap(),
            ),
        )
        .await
        .unwrap();
    }

    pub async fn add_contact(&self, kind: &str, data: &str) -> ContactId {
        let mut conn = self.conn().await;
        conn.exec_drop(
            "INSERT INTO contacts (type, data) VALUES (?, ?)",
            (kind, data),
        )
        .await
        .unwrap();
        ContactId(conn.last_insert_id().unwrap() as i64)
    }

    /// Enqueues `n` for `contacts` in a fenced transaction of epoch 1.
    pub async fn enqueue(&self, n: &Notification, contacts: &[ContactId]) -> u64 {
        let mut tx = FencedTx::begin(&self.store, Epoch(1), &NodeId(NODE.into()))
            .await
            .unwrap();
        let added = outbox::enqueue(&mut tx, n, contacts).await.unwrap();
        tx.commit().await.unwrap();
        added
    }

    /// Enqueues many single-contact events in one transaction (bulk set-up).
    pub async fn enqueue_many(&self, items: &[(Notification, ContactId)]) {
        let mut tx = FencedTx::begin(&self.store, Epoch(1), &NodeId(NODE.into()))
            .await
            .unwrap();
        for (n, c) in items {
            outbox::enqueue(&mut tx, n, &[*c]).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    pub async fn rows(&self) -> Vec<OutboxRow> {
        let mut conn = self.conn().await;
        let rows: Vec<RawRow> = conn
            .query(
                "SELECT id, event_id, contact_id, state, attempts, last_error, admin_notified, \
                 CAST(sent_at AS CHAR) FROM notification_outbox ORDER BY id",
            )
            .await
            .unwrap();
        rows.into_iter()
            .map(
                |(id, event_id, contact_id, state, attempts, last_error, admin, sent_at)| {
                    OutboxRow {
                        id,
                        event_id,
                        contact_id,
                        state,
                        attempts,
                        last_error,
                        admin_notified: admin != 0,
                        sent_at,
                    }
                },
            )
            .collect()
    }

    pub async fn row(&self, event: i64, contact: ContactId) -> OutboxRow {
        self.rows()
            .await
            .into_iter()
            .find(|r| r.event_id == event && r.contact_id == contact.0)
            .unwrap_or_else(|| panic!("no outbox row for event {event}, contact {contact}"))
    }

    /// Counts of rows per state.
    pub async fn states(&self) -> HashMap<String, i64> {
        let mut conn = self.conn().await;
        let rows: Vec<(String, i64)> = conn
            .query("SELECT state, COUNT(*) FROM notification_outbox GROUP BY state")
            .await
            .unwrap();
        rows.into_iter().collect()
    }

    pub async fn charges(&self) -> Vec<(i64, String, String)> {
        let mut conn = self.conn().await;
        conn.query("SELECT check_id, type, data FROM charges ORDER BY id")
            .await
            .unwrap()
    }
}

/// `id, event_id, contact_id, state, attempts, last_error, admin_notified, sent_at`.
type RawRow = (
    i64,
    i64,
    i64,
    String,
    i64,
    Option<String>,
    i64,
    Option<String>,
);

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: i64,
    pub contact_id: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub admin_notified: bool,
    pub sent_at: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Notifications and configs

/// An offline flip of check `check` with a password in its data.
pub fn flip(event: i64, check: i64) -> Notification {
    Notification {
        event_id: EventId(event),
        check_id: CheckId(check),
        name: format!("web {check}"),
        check_type: "http".into(),
        data: r#"{"url":"http://web.example/health","username":"mon","password":"hunter2"}"#.into(),
        old_status: CheckStatus::Online,
        new_status: CheckStatus::Offline,
        message: "status mismatch, got 500 but expected 200".into(),
        time_ms: 1_795_000_000_000 + event,
        confirmed_by: vec![NodeId("w1".into()), NodeId("w2".into())],
        test: false,
        reminder: 0,
        folded: Vec::new(),
    }
}

pub fn delivery(attempts: u32, timeout: Duration, concurrency: usize) -> DeliveryConfig {
    DeliveryConfig {
        attempts,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        timeout,
        concurrency,
        admin_interval: Duration::from_millis(100),
        // Storm control is tested on its own (tests/notify.rs, storm_*); here it stays out of
        // the way of tests that flip many checks.
        storm: gobearmon::policy::storm::StormRule {
            flips: 1_000_000,
            ..Default::default()
        },
        paid_max_per_hour: 1_000_000,
    }
}

pub fn smtp_config(port: u16, tls: SmtpTls, admin: Option<&str>) -> SmtpConfig {
    SmtpConfig {
        host: Some("127.0.0.1".into()),
        port,
        from: "gobearmon <mon@test>".into(),
        username: Some("monuser".into()),
        password: Some(Secret::new("monpass")),
        admin: admin.map(str::to_string),
        tls,
        ca: None,
        timeout: Duration::from_secs(5),
    }
}

/// [`smtp_config`] without a username: no AUTH, whatever the link.
pub fn anonymous_smtp_config(port: u16, tls: SmtpTls, admin: Option<&str>) -> SmtpConfig {
    SmtpConfig {
        username: None,
        password: None,
        ..smtp_config(port, tls, admin)
    }
}

pub fn no_smtp() -> SmtpConfig {
    SmtpConfig {
        host: None,
        port: 25,
        from: "mon@test".into(),
        username: None,
        password: None,
        admin: None,
        tls: SmtpTls::Auto,
        ca: None,
        timeout: Duration::from_secs(5),
    }
}

pub const TWILIO_SID: &str = "ACtest123";
pub const TWILIO_TOKEN: &str = "twilio-token";
pub const TWILIO_FROM: &str = "+15550001111";

pub fn twilio_config(base_url: &str) -> TwilioConfig {
    TwilioConfig {
        account_sid: TWILIO_SID.into(),
        auth_token: Some(Secret::new(TWILIO_TOKEN)),
        from: TWILIO_FROM.into(),
        base_url: base_url.into(),
        max_per_hour: 30,
    }
}

/// A port nothing listens on now, for a server the test starts on it later (or never).
pub fn closed_port() -> u16 {
    crate::ports::free_port()
}

// ---------------------------------------------------------------------------------------
// TLS

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestPki {
    pub ca_der: CertificateDer<'static>,
    /// The CA certificate as PEM, for [`gobearmon::notify::read_pem_roots`].
    pub ca_path: PathBuf,
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestPki {
    /// A fresh CA and a server certificate from it, written under a temporary directory.
    pub fn generate() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gobearmon test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
        TestPki {
            ca_der: ca_cert.der().clone(),
            ca_path,
            dir,
            cert_path,
            key_path,
        }
    }
}

// ---------------------------------------------------------------------------------------
// SMTP (aiosmtpd)

const SMTP_SCRIPT: &str = include_str!("smtp_capture.py");

/// The Python that has aiosmtpd: `GBM_TEST_PYTHON`, else Debian's `/usr/bin/python3`.
fn python() -> String {
    std::env::var("GBM_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

#[derive(Default, Clone)]
pub struct SmtpOptions {
    /// Offer STARTTLS (or with `implicit`, TLS from the first byte) with this PKI.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub implicit: bool,
    pub fail_rcpt: Vec<String>,
    pub require_auth: bool,
}

/// A running aiosmtpd capture server; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    out: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    pub async fn start(opts: SmtpOptions) -> SmtpServer {
        SmtpServer::start_on(closed_port(), opts).await
    }

    pub async fn start_on(port: u16, opts: SmtpOptions) -> SmtpServer {
        let out = tempfile::tempdir().unwrap();
        let script = out.path().join("smtp_capture.py");
        std::fs::write(&script, SMTP_SCRIPT).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(&script)
            .arg(out.path().join("mail"))
            .arg("--port")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        if opts.implicit {
            cmd.arg("--implicit-tls");
        }
        if opts.require_auth {
            cmd.arg("--require-auth");
        }
        for r in &opts.fail_rcpt {
            cmd.arg("--fail-rcpt").arg(r);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {} for the SMTP capture server: {e}", python())
        });
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "the SMTP capture server exited ({status}); it needs aiosmtpd for {} \
                     (apt-get install python3-aiosmtpd, or set GBM_TEST_PYTHON): {err}",
                    python()
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("the SMTP capture server did not listen on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        SmtpServer { port, out, child }
    }

    /// Every captured message, in arrival order.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let dir = self.out.path().join("mail");
        let mut names: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => return Vec::new(),
        };
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Messages whose envelope includes `rcpt`.
    pub fn messages_to(&self, rcpt: &str) -> Vec<serde_json::Value> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r == rcpt))
            })
            .collect()
    }

    /// Every line clients sent this server, in order, with whether the connection was
    /// encrypted when it arrived.
    pub fn wire(&self) -> Vec<(bool, String)> {
        let Ok(text) = std::fs::read_to_string(self.out.path().join("wire.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let tls = v["tls"].as_bool().unwrap_or(false);
                (tls, v["line"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// [`SmtpServer::wire`] once `n` lines starting with `command` (case-insensitive) came.
    pub async fn wait_wire(&self, command: &str, n: usize) -> Vec<(bool, String)> {
        wait_for(
            &format!("{n} {command} line(s) on port {}", self.port),
            Duration::from_secs(30),
            || async {
                let wire = self.wire();
                let seen = wire.iter().filter(|(_, l)| is_command(l, command)).count();
                (seen >= n).then_some(wire)
            },
        )
        .await
    }

    pub async fn wait_messages_to(&self, rcpt: &str, n: usize) -> Vec<serde_json::Value> {
        wait_for(
            &format!("{n} message(s) to {rcpt} on port {}", self.port),
            Duration::from_secs(30),
            || async {
                let m = self.messages_to(rcpt);
                (m.len() >= n).then_some(m)
            },
        )
        .await
    }
}

/// Whether `line` is the SMTP command `command` (`AUTH PLAIN ...` is `AUTH`).
pub fn is_command(line: &str, command: &str) -> bool {
    line.split(' ')
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(command))
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// HTTP receivers (webhooks and a Twilio stand-in)

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The status it was answered with (0: never answered).
    pub status: u16,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The url-encoded form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Decoded HTTP Basic credentials.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        use base64::Engine;
        let h = self.header("authorization")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ")?)
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// This status with an empty body.
    Status(u16),
    /// 200 after a pause.
    SlowOk(Duration),
    /// Never answers.
    Hang,
    /// This status for this long after the first request, then 200 (a receiver that is down
    /// for a while and recovers).
    FailFirst(u16, Duration),
    /// Twilio: by the `To` field: `+1555000040x` -> a 400 error JSON, `+1555000050x` -> 500,
    /// anything else -> 201 with a new SID.
    Twilio,
}

#[derive(Clone)]
struct ReceiverState {
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Received>>>,
    /// When the first request arrived.
    first: Arc<Mutex<Option<Instant>>>,
}

/// An axum server on 127.0.0.1:0 that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            behaviour,
            log: log.clone(),
            first: Arc::default(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, log, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub async fn wait_count(&self, n: usize) -> Vec<Received> {
        wait_for(
            &format!("{n} request(s) at {}", self.addr),
            Duration::from_secs(60),
            || async {
                let r = self.received();
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }

    /// The count once no request has arrived for `quiet` (bounded by 30 s): requests a
    /// stopped sender had already written may still be landing.
    pub async fn settled_count(&self, quiet: Duration) -> usize {
        let mut last = (self.count(), Instant::now());
        wait_for("requests to stop arriving", Duration::from_secs(30), || {
            let now = self.count();
            if now != last.0 {
                last = (now, Instant::now());
            }
            let quiet_for = last.1.elapsed();
            async move { (quiet_for >= quiet).then_some(now) }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        status: 0,
        method: method.to_string(),
        path: uri.path().to_string(),
        headers,
        body,
    };
    let to = received.field("To").unwrap_or_default();
    let first = *state.first.lock().unwrap().get_or_insert_with(Instant::now);
    let status = match state.behaviour {
        Behaviour::Status(code) => code,
        Behaviour::FailFirst(code, period) if first.elapsed() < period => code,
        Behaviour::FailFirst(..) | Behaviour::SlowOk(_) => 200,
        Behaviour::Hang => 0,
        Behaviour::Twilio if to.starts_with("+1555000040") => 400,
        Behaviour::Twilio if to.starts_with("+1555000050") => 500,
        Behaviour::Twilio => 201,
    };
    state
        .log
        .lock()
        .unwrap()
        .push(Received { status, ..received });
    match state.behaviour {
        Behaviour::FailFirst(..) => StatusCode::from_u16(status).unwrap().into_response(),
        Behaviour::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Behaviour::SlowOk(pause) => {
            tokio::time::sleep(pause).await;
            StatusCode::OK.into_response()
        }
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Twilio => twilio_answer(&to),
    }
}

fn twilio_answer(to: &str) -> Response {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let json = |code: u16, v: serde_json::Value| {
        (
            StatusCode::from_u16(code).unwrap(),
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    if to.starts_with("+1555000040") {
        json(
            400,
            serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
        )
    } else if to.starts_with("+1555000050") {
        json(
            500,
            serde_json::json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
        )
    } else {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        json(
            201,
            serde_json::json!({"sid": format!("SM{n:032x}"), "status": "queued", "to": to}),
        )
    }
}
