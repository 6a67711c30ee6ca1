//! The JSON API v1 against a real MariaDB, served by the real router on 127.0.0.1:0: every
//! endpoint's answer is validated against `openapi.v1.json` with a JSON Schema validator,
//! requests without a token or with a wrong one get 401, and no secret of a check or a
//! contact appears in any answer.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use gobearmon::config::Secret;
use gobearmon::history::rollup::{HOUR, Outcome};
use gobearmon::model::{CheckId, Epoch, NodeId};
use gobearmon::store::history::{self, RawResult};
use gobearmon::store::results::{self, LatestResult};
use gobearmon::store::{Store, fence};
use serde_json::Value;
use testkit::db::TestDb;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "api-token-0123456789abcdef";
const CHECK_SECRET: &str = "s3cret-check-password";
const HEADER_SECRET: &str = "Bearer s3cret-header-token";
const CONTACT_SECRET: &str = "s3cret-webhook-signing-key";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Api {
    base: String,
    http: reqwest::Client,
    doc: Value,
    stop: CancellationToken,
}

impl Api {
    async fn start(store: Store) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = gobearmon::web::router(gobearmon::web::Web::new(
            store,
            &[
                Secret::new("another-token-of-some-length"),
                Secret::new(TOKEN),
            ],
        ));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move { gobearmon::api::serve(listener, router, s).await });
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.v1.json"))
            .expect("openapi.v1.json at the repository root");
        Api {
            base,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            doc: serde_json::from_str(&text).expect("the OpenAPI document is JSON"),
            stop,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The schema of `template`'s answer with `status`, with the document's components so
    /// that its `$ref`s resolve.
    fn schema(&self, template: &str, status: u16) -> Value {
        let op = &self.doc["paths"][template]["get"];
        assert!(op.is_object(), "{template} is not in the OpenAPI document");
        let schema =
            op["responses"][status.to_string()]["content"]["application/json"]["schema"].clone();
        assert!(
            schema.is_object(),
            "{template} documents no {status} answer"
        );
        let mut wrapped = schema.as_object().unwrap().clone();
        wrapped.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        wrapped.insert("components".into(), self.doc["components"].clone());
        Value::Object(wrapped)
    }

    /// GETs `path` with the token, expects `status`, validates the body against the schema
    /// of `template` for that status, and returns the body.
    async fn checked(&self, template: &str, path: &str, status: u16) -> Value {
        let (code, body) = self.get(path, Some(TOKEN)).await;
        assert_eq!(code, status, "{path}: {body}");
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&self.schema(template, status))
            .unwrap_or_else(|e| panic!("schema of {template}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{path} does not match the document: {errors:?}\n{body}"
        );
        value
    }
}

/// A database with two checks (one with secrets in its data), a webhook contact with a
/// secret, three workers' results over the last two hours (rolled up), latest results, two
/// incidents (one closed, one open) and their notifications.
async fn seed(tag: &str) -> (TestDb, Store, i64) {
    let (db, store) = TestDb::installed(tag).await;
    let data = format!(
        r#"{{"url":"http://127.0.0.1:9/","username":"u","password":"{CHECK_SECRET}","headers":{{"Authorization":"{HEADER_SECRET}"}}}}"#
    );
    db.exec(&format!(
        "INSERT INTO checks (id, name, type, data, status) VALUES (1, 'web', 'http', '{data}', 'offline'), (2, 'db', 'tcp', '{{}}', 'online');
         INSERT INTO contacts (id, type, data) VALUES (1, 'webhook', '{{\"url\":\"http://127.0.0.1:9/h\",\"secret\":\"{CONTACT_SECRET}\"}}');"
    ))
    .await;
    let epoch = Epoch(1);
    let ctl = NodeId("w1".into());
    fence::raise(&store, epoch, &ctl).await.unwrap();
    let t = now();
    let mut raw = Vec::new();
    for (i, s) in (t - 2 * HOUR..t).step_by(60).enumerate() {
        for (w, loc) in [("w1", "fra1"), ("w2", "ams1"), ("w3", "nyc1")] {
            let outcome = if i % 10 == 0 {
                Outcome::Offline
            } else {
                Outcome::Online
            };
            raw.push(RawResult {
                check: CheckId(1),
                at_ms: s * 1000,
                node: NodeId(w.into()),
                location: loc.into(),
                outcome,
                duration_ms: 20 + (i as u64 * 7) % 90,
                message: if outcome == Outcome::Online {
                    String::new()
                } else {
                    "status mismatch, got 500 but expected 200".into()
                },
            });
        }
    }
    history::write_raw(&store, epoch, &ctl, &raw).await.unwrap();
    history::roll_up(&store, epoch, &ctl, t + HOUR, 10)
        .await
        .unwrap();
    let latest: Vec<LatestResult> = ["w1", "w2"]
        .iter()
        .map(|w| LatestResult {
            check: CheckId(1),
            node: NodeId(w.to_string()),
            location: format!("{w}-loc"),
            status: "offline",
            message: "status mismatch, got 500 but expected 200".into(),
            duration_ms: 12,
            http_status: Some(500),
            cert_expiry: None,
            timing: None,
        })
        .collect();
    results::write_latest(&store, epoch, &latest).await.unwrap();
    db.exec(&format!(
        "INSERT INTO check_events (id, check_id, type, time, message, confirmed_by) VALUES
           (1, 1, 'offline', FROM_UNIXTIME({a}), 'status mismatch, got 500 but expected 200', 'w1,w2'),
           (2, 1, 'online', FROM_UNIXTIME({b}), '', 'w2,w3'),
           (3, 1, 'offline', FROM_UNIXTIME({c}), 'status mismatch, got 503 but expected 200', 'w3,w1');
         INSERT INTO notification_outbox (event_id, check_id, contact_id, payload, state, attempts, sent_at, last_error) VALUES
           (1, 1, 1, '{{}}', 'sent', 1, NOW(3), NULL),
           (2, 1, 1, '{{}}', 'sent', 2, NOW(3), 'connection refused'),
           (3, 1, 1, '{{}}', 'failed', 8, NULL, 'webhook answered 500');
         INSERT INTO notification_outbox (event_id, check_id, contact_id, payload, state, reason, folded_into) VALUES
           (1, 1, 2, '{{}}', 'folded', 'digest: sent inside the storm digest of row 1', 1),
           (3, 1, 2, '{{}}', 'held', 'maintenance: held until the window ends', NULL);",
        a = t - 3000,
        b = t - 2400,
        c = t - 600,
    ))
    .await;
    (db, store, t)
}

#[tokio::test]
async fn every_endpoint_answers_as_the_openapi_document_says() {
    let (db, store, t) = seed("api_doc").await;
    let api = Api::start(store.clone()).await;
    let mut called = BTreeSet::new();
    let mut bodies = String::new();
    let from = gobearmon_time(t - 2 * HOUR);
    let to = gobearmon_time(t);
    let calls: Vec<(&str, String)> = vec![
        ("/api/v1/checks", "/api/v1/checks".into()),
        ("/api/v1/checks", "/api/v1/checks?limit=1".into()),
        ("/api/v1/checks/{id}", "/api/v1/checks/1".into()),
        (
            "/api/v1/checks/{id}/results",
            format!("/api/v1/checks/1/results?from={from}&to={to}&limit=50"),
        ),
        (
            "/api/v1/checks/{id}/results",
            format!("/api/v1/checks/1/results?from={from}&to={to}&step=3600&location=ams1"),
        ),
        (
            "/api/v1/checks/{id}/uptime",
            format!("/api/v1/checks/1/uptime?from={from}&to={to}"),
        ),
        (
            "/api/v1/checks/{id}/incidents",
            "/api/v1/checks/1/incidents".into(),
        ),
        ("/api/v1/incidents", "/api/v1/incidents?open=true".into()),
        ("/api/v1/workers", "/api/v1/workers".into()),
        (
            "/api/v1/notifications",
            "/api/v1/notifications?state=failed".into(),
        ),
        (
            "/api/v1/notifications",
            "/api/v1/notifications?state=held".into(),
        ),
        ("/api/v1/notifications", "/api/v1/notifications".into()),
    ];
    for (template, path) in &calls {
        let v = api.checked(template, path, 200).await;
        bodies.push_str(&v.to_string());
        called.insert(template.to_string());
    }
    let documented: BTreeSet<String> = api.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(called, documented, "every documented endpoint is exercised");

    // Errors are documented too.
    for (template, path, status) in [
        ("/api/v1/checks/{id}", "/api/v1/checks/99", 404),
        (
            "/api/v1/checks/{id}/uptime",
            "/api/v1/checks/1/uptime?from=yesterday",
            400,
        ),
        (
            "/api/v1/notifications",
            "/api/v1/notifications?state=lost",
            400,
        ),
        ("/api/v1/checks", "/api/v1/checks?limit=0", 400),
    ] {
        let v = api.checked(template, path, status).await;
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // The answers say what was stored.
    let list = api
        .checked("/api/v1/checks", "/api/v1/checks?limit=1", 200)
        .await;
    assert_eq!(list["checks"][0]["id"], 1);
    assert_eq!(list["next_cursor"], "1");
    let next = api
        .checked("/api/v1/checks", "/api/v1/checks?limit=1&cursor=1", 200)
        .await;
    assert_eq!(next["checks"][0]["id"], 2);
    let one = api
        .checked("/api/v1/checks/{id}", "/api/v1/checks/1", 200)
        .await;
    assert_eq!(one["status"], "offline");
    assert_eq!(one["last_results"].as_array().unwrap().len(), 2);
    assert_eq!(one["last_results"][0]["location"], "w1-loc");
    assert!(one["latency_p50_ms_24h"].is_u64(), "{one}");
    let incidents = api
        .checked(
            "/api/v1/checks/{id}/incidents",
            "/api/v1/checks/1/incidents",
            200,
        )
        .await;
    let list = incidents["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["id"].as_i64(), list[0]["open"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(list[1]["duration_seconds"], 600);
    assert_eq!(list[1]["confirmed_by"], serde_json::json!(["w1", "w2"]));
    assert_eq!(list[1]["notifications"].as_array().unwrap().len(), 3);
    assert_eq!(list[0]["notifications"][0]["state"], "failed");
    // Every row says why it was held, folded or dropped.
    let held = api
        .checked(
            "/api/v1/notifications",
            "/api/v1/notifications?state=held",
            200,
        )
        .await;
    let held = held["notifications"].as_array().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["reason"], "maintenance: held until the window ends");
    assert_eq!(held[0]["folded_into"], serde_json::Value::Null);
    let folded = &list[1]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["state"] == "folded")
        .cloned()
        .expect("the folded row in its incident");
    assert_eq!(folded["folded_into"], 1);
    assert!(folded["reason"].as_str().unwrap().starts_with("digest"));
    let open = api
        .checked("/api/v1/incidents", "/api/v1/incidents?open=true", 200)
        .await;
    assert_eq!(open["incidents"].as_array().unwrap().len(), 1);
    let up = api
        .checked(
            "/api/v1/checks/{id}/uptime",
            &format!("/api/v1/checks/1/uptime?from={from}&to={to}"),
            200,
        )
        .await;
    // History began with the first result, two hours ago: the window is covered; down from
    // t-3000 to t-2400 and from t-600 on.
    assert_eq!(up["complete"], true, "{up}");
    assert_eq!(up["down_seconds"], 600 + 600);
    assert_eq!(up["locations"].as_array().unwrap().len(), 3);
    let before = api
        .checked(
            "/api/v1/checks/{id}/uptime",
            &format!(
                "/api/v1/checks/1/uptime?from={}&to={to}",
                gobearmon_time(t - 30 * 86_400)
            ),
            200,
        )
        .await;
    assert_eq!(
        before["complete"], false,
        "a window before the history says so: {before}"
    );
    assert_eq!(before["covered_from"], from);
    let workers = api.checked("/api/v1/workers", "/api/v1/workers", 200).await;
    assert_eq!(workers["controller"]["node"], "w1");

    // Raw results page without gaps or repeats.
    let all = api
        .checked(
            "/api/v1/checks/{id}/results",
            &format!("/api/v1/checks/1/results?from={from}&to={to}&limit=1000"),
            200,
        )
        .await;
    let all = all["results"].as_array().unwrap().clone();
    assert_eq!(all.len(), 360);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .checked(
                "/api/v1/checks/{id}/results",
                &format!("/api/v1/checks/1/results?from={from}&to={to}&limit=7{cursor}"),
                200,
            )
            .await;
        paged.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all);

    for secret in [CHECK_SECRET, HEADER_SECRET, CONTACT_SECRET, TOKEN] {
        assert!(!bodies.contains(secret), "{secret} appears in an answer");
    }
    api.stop.cancel();
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn no_token_or_a_wrong_one_gets_401_everywhere() {
    let (db, store) = TestDb::installed("api_auth").await;
    let api = Api::start(store.clone()).await;
    let paths: Vec<String> = api.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| p.replace("{id}", "1"))
        .chain(["/api/v1/nothing-here".to_string()])
        .collect();
    for path in &paths {
        for token in [
            None,
            Some("wrong-token-0123456789"),
            Some(&TOKEN[..TOKEN.len() - 1]),
        ] {
            let (code, body) = api.get(path, token).await;
            assert_eq!(code, 401, "{path} with {token:?}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string(), "{body}");
        }
    }
    let (code, _) = api.get("/api/v1/workers", Some(TOKEN)).await;
    assert_eq!(code, 200);
    api.stop.cancel();
    store.close().await;
    db.drop_db().await;
}

/// RFC 3339 of Unix second `s`, escaped for a query string.
fn gobearmon_time(s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(s)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
