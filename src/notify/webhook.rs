//! The two webhook contact types. Both POST once per notification, with the delivery timeout,
//! no redirects followed, and count only a 2xx answer as delivered (a 5xx, 408 or 429, a
//! timeout or a refused connection is retried; any other answer is final).
//!
//! **`http`** (gobearmon's, kept): `contacts.data` is the URL. The body is a form
//! (`application/x-www-form-urlencoded`) with gobearmon's fields, keys sorted:
//! `check_id`, `data` (the check's parameters, secrets redacted), `message`, `name`,
//! `status` (the new status), `type`. Header `Idempotency-Key: <event id>`.
//!
//! **`webhook`** (new): `contacts.data` is either a URL
//!
//! ```text
//! https://hooks.example.com/gobearmon
//! ```
//!
//! or a JSON object with the URL, an optional signing secret and optional extra headers:
//!
//! ```json
//! {"url": "https://hooks.example.com/gobearmon",
//!  "secret": "s3cret",
//!  "headers": {"X-Team": "ops"}}
//! ```
//!
//! The body is JSON, schema `gobearmon.webhook.v1` (see [`super::text::WebhookBody`]).
//! Headers: `Content-Type: application/json`, `Idempotency-Key: <event id>` (the same for
//! every retry of one event, so a receiver can drop a repeat; a test message sends
//! `test-<ms>`), `X-Gobearmon-Timestamp: <unix seconds>`, and, when a secret is set,
//! `X-Gobearmon-Signature: sha256=<hex>`: the HMAC-SHA256 under the secret of the text
//! `<timestamp>.<body>` (the timestamp header's value, a dot, the raw body bytes). A receiver
//! recomputes it, compares in constant time, and refuses timestamps older than a few
//! minutes. Extra headers are sent as given, but cannot replace the four above.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::{DeliveryError, Notification, NotifyError, Retry, text};

/// The idempotency header of both webhook types.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Unix seconds when the request was signed.
pub const TIMESTAMP_HEADER: &str = "X-Gobearmon-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, sent when a secret is set.
pub const SIGNATURE_HEADER: &str = "X-Gobearmon-Signature";

/// The HTTP client of the webhooks and of Twilio: rustls with ring, the system's roots plus
/// `roots`, no redirects, `timeout` on connect and on the whole request.
pub fn http_client(
    timeout: Duration,
    roots: &[CertificateDer<'static>],
) -> Result<reqwest::Client, NotifyError> {
    crate::tlsutil::install_default_provider();
    let mut certs = Vec::with_capacity(roots.len());
    for root in roots {
        certs.push(
            reqwest::Certificate::from_der(root)
                .map_err(|e| NotifyError::Http(format!("extra root certificate: {e}")))?,
        );
    }
    reqwest::Client::builder()
        .user_agent(concat!("gobearmon/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| NotifyError::Http(describe(&e)))
}

/// A reqwest error as text, with its causes and without the URL (a URL may carry a token).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A `webhook` contact's `data`, parsed. `Debug` shows only the URL's host and the header
/// names: no secret, path or header value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            // Webhook paths are often secrets themselves (Slack's are): show the host only.
            .field(
                "host",
                &url::Url::parse(&self.url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string)),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebhookTarget {
    /// A URL, or the JSON object form. Errors are final: the contact row must be fixed.
    pub fn parse(data: &str) -> Result<WebhookTarget, DeliveryError> {
        let data = data.trim();
        let target = if data.starts_with('{') {
            // Not serde's message: it quotes the offending value, which may be the secret,
            // and this text is kept in `last_error` and shown on the dashboard.
            serde_json::from_str::<WebhookTarget>(data).map_err(|e| {
                DeliveryError::never(format!(
                    "webhook contact data is not {{\"url\":..,\"secret\":..,\"headers\":{{..}}}}: \
                     {} at line {} column {}",
                    json_problem(&e),
                    e.line(),
                    e.column()
                ))
            })?
        } else {
            WebhookTarget {
                url: data.to_string(),
                secret: None,
                headers: BTreeMap::new(),
            }
        };
        check_url(&target.url)?;
        Ok(target)
    }
}

/// What kind of JSON problem `e` is, in words that quote nothing of the data.
fn json_problem(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => "not valid JSON",
        // A wrong type, an unknown field, a missing `url`.
        Category::Data => "a field is missing, unknown or of the wrong type",
        Category::Io => "unreadable",
    }
}

fn check_url(url: &str) -> Result<(), DeliveryError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(DeliveryError::never(
            "webhook contact data is not an http:// or https:// URL",
        )),
    }
}

/// The hex HMAC-SHA256 under `secret` of `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign())
}

/// Posts notifications to webhook contacts.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl WebhookClient {
    /// `http` must carry the delivery timeout (see [`http_client`]).
    pub fn new(http: reqwest::Client) -> WebhookClient {
        WebhookClient { http }
    }

    /// Contact type `http`: gobearmon's form post to the URL in `data`.
    pub async fn post_form(&self, data: &str, n: &Notification) -> Result<(), DeliveryError> {
        let url = data.trim();
        check_url(url)?;
        let request = self
            .http
            .post(url)
            .header(IDEMPOTENCY_KEY, n.idempotency_key())
            .form(&text::form_fields(n));
        send(request).await
    }

    /// Contact type `webhook`: the JSON body, idempotency key and optional signature.
    pub async fn post_json(&self, data: &str, n: &Notification) -> Result<(), DeliveryError> {
        let target = WebhookTarget::parse(data)?;
        let body = text::webhook_json(n);
        let mut headers = HeaderMap::new();
        for (k, (name, value)) in target.headers.iter().enumerate() {
            // Not the name itself: a misplaced token may be what is in it.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                DeliveryError::never(format!(
                    "webhook header #{} (in name order) has a name that is not valid",
                    k + 1
                ))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                DeliveryError::never(format!("webhook header {name} has an invalid value"))
            })?;
            headers.insert(name, value);
        }
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let mut ours = vec![
            (CONTENT_TYPE.as_str(), "application/json".to_string()),
            (IDEMPOTENCY_KEY, n.idempotency_key()),
            (TIMESTAMP_HEADER, timestamp.clone()),
        ];
        if let Some(secret) = target.secret.as_deref().filter(|s| !s.is_empty()) {
            ours.push((
                SIGNATURE_HEADER,
                format!("sha256={}", signature(secret.as_bytes(), &timestamp, &body)),
            ));
        }
        for (name, value) in ours {
            // Our names are static and valid, the values ASCII digits, hex or a fixed type.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        let request = self.http.post(&target.url).headers(headers).body(body);
        send(request).await
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    let response = request
        .send()
        .await
        .map_err(|e| DeliveryError::later(format!("webhook: {}", describe(&e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry = if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        Retry::Later
    } else {
        Retry::Never
    };
    Err(DeliveryError {
        retry,
        message: format!("webhook answered {status}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_data_forms() {
        let t = WebhookTarget::parse(" https://h.example/x ").unwrap();
        assert_eq!(t.url, "https://h.example/x");
        assert_eq!(t.secret, None);
        let t = WebhookTarget::parse(
            r#"{"url":"http://127.0.0.1:9/h","secret":"k","headers":{"X-Team":"ops"}}"#,
        )
        .unwrap();
        assert_eq!(t.secret.as_deref(), Some("k"));
        assert_eq!(t.headers["X-Team"], "ops");
        assert!(!format!("{t:?}").contains("\"k\""), "{t:?}");
        assert!(!WebhookTarget::parse("ftp://x/").unwrap_err().is_retryable());
        assert!(
            !WebhookTarget::parse("{\"uri\":1}")
                .unwrap_err()
                .is_retryable()
        );
    }

    /// `last_error` keeps these messages and the dashboard shows them: none quotes the data.
    #[tokio::test]
    async fn config_errors_never_echo_the_offending_value() {
        for data in [
            r#"{"url":"http://h/","headers":"Bearer tok-SECRET-2"}"#,
            r#"{"url":"http://h/","tok-SECRET-3":1}"#,
            r#"{"url":"http://h/","secret":["tok-SECRET-4"]}"#,
            r#"{"url":"tok-SECRET-5"}"#,
            r#"{"url":"http://h/" "tok-SECRET-6"}"#,
        ] {
            let e = WebhookTarget::parse(data).unwrap_err();
            assert!(!e.is_retryable(), "{data}");
            assert!(!e.message.contains("SECRET"), "{data}: {}", e.message);
        }
        crate::tlsutil::install_default_provider();
        let client = WebhookClient::new(reqwest::Client::new());
        let n = crate::notify::Notification::test_message(SystemTime::now());
        let e = client
            .post_json(
                r#"{"url":"http://127.0.0.1:9/","headers":{"Bearer tok-SECRET-7":"x"}}"#,
                &n,
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("header #1"), "{}", e.message);
        assert!(!e.message.contains("SECRET"), "{}", e.message);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Checked against Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            signature(b"Jefe", "1700000000", br#"{"a":1}"#),
            "fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
