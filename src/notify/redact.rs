//! What of a check's data may be shown outside the database: in notifications (email body,
//! the form and JSON webhooks, SMS and calls), in probe messages (which travel into all of
//! those and into `check_results`), in logs and in `Debug` output. Check data carries
//! credentials: basic-auth passwords, API keys in query strings and headers, request bodies.
//! gobearmon mailed the raw JSON; here every such value is masked.
//!
//! # Rules
//!
//! In check data ([`check_data`]), these values become `<redacted>` (empty values stay empty):
//! - the value of any key (at any depth, case-insensitive) whose name looks like a secret
//!   ([`is_secret_name`]: it contains `token`, `secret`, `pass`, `pwd`, `auth`, `sig`,
//!   `session`, `cred`, `key`, `cookie`, `jwt`, `otp`, `bearer` or `private`, ignoring `-`,
//!   `_` and case);
//! - an http `body` and a tcp `payload`: never echoed (a payload is often a login line);
//! - every header value under `headers`, except those of a short list of harmless headers
//!   ([`is_harmless_header`]: `Host`, `User-Agent`, `Accept`, `Content-Type`, ...).
//!
//! In every string of the data that is a URL ([`data_url`]):
//! - the password of its user-info becomes `redacted` (`https://bob:redacted@host/`);
//! - every token-like path segment becomes `redacted` ([`is_token_segment`]): webhook and
//!   ping services put the credential in the path (Slack `/services/T0/B0/XXXX`, Telegram
//!   `/bot123:AAH.../sendMessage`, healthchecks-style `/ping/<uuid>`);
//! - the value of each query or fragment parameter whose name looks like a secret becomes
//!   `redacted` (`?token=redacted&page=2`).
//!
//! In messages, a URL shows no query values at all ([`message_url`]: `?token=redacted&page=
//! redacted`), no password, no fragment and no token-like path segment. Probe messages are written that way; a
//! notification's message is also passed through [`message`], which masks the URLs in it and
//! every secret of the check's data it quotes, whatever the worker that wrote it.
//!
//! Data that needs no redaction is returned verbatim; otherwise it is re-serialized (keys
//! sorted). Data that is not JSON is not shown at all, since nothing can tell where a secret
//! in it would be.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// What replaces a secret inside a URL (plain letters: a URL stays a URL).
pub const URL_MASK: &str = "redacted";

/// What replaces check data that is not JSON.
pub const UNPARSABLE: &str = "(not valid JSON; not shown)";

/// Secrets shorter than this are not searched for in messages: replacing every `ok` or `1`
/// would garble the text and hide nothing of worth.
const MIN_QUOTED_SECRET: usize = 4;

/// Whether a key or query parameter called `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "token", "secret", "pass", "pwd", "auth", "sig", "session", "cred", "key", "cookie", "jwt",
        "otp", "bearer", "private",
    ];
    let folded: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    WORDS.iter().any(|w| folded.contains(w))
}

/// Path segments this long or longer may be tokens. Slack's secret is 24 characters, a UUID
/// 36, a Telegram bot token 45; the shorter ids beside them (`T0123ABCD`) are not secrets.
const MIN_TOKEN_SEGMENT: usize = 16;

/// Whether a URL path segment looks like a credential: at least [`MIN_TOKEN_SEGMENT`]
/// characters from the token alphabet (letters, digits, `-`, `_`, `:`, `.`, `~`), and either
/// holding a digit or holding no separator (`-`, `_`, `.`) at all. A readable path such as
/// `/status-page-for-customers` stays; a UUID, a Slack secret or `bot123:AAH...` goes.
pub fn is_token_segment(segment: &str) -> bool {
    let token_chars = segment
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '~' | '%'));
    let has_digit = segment.chars().any(|c| c.is_ascii_digit());
    let unbroken = !segment.contains(['-', '_', '.']);
    segment.len() >= MIN_TOKEN_SEGMENT && token_chars && (has_digit || unbroken)
}

/// Whether the value of header `name` may be shown: a short list of headers that describe
/// the request and never carry credentials. Every other header value is masked.
pub fn is_harmless_header(name: &str) -> bool {
    const HARMLESS: &[&str] = &[
        "host",
        "user-agent",
        "accept",
        "accept-language",
        "accept-encoding",
        "accept-charset",
        "content-type",
        "content-length",
        "cache-control",
        "pragma",
        "connection",
    ];
    HARMLESS.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// `data` (a check's JSON parameters) with every secret replaced by [`REDACTED`].
pub fn check_data(data: &str) -> String {
    let mut value: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(_) => return UNPARSABLE.to_string(),
    };
    if redact_value(&mut value, &mut |_| {}) {
        value.to_string()
    } else {
        data.to_string()
    }
}

/// `message` (a result message about a check with `data`) with the URLs in it shown as
/// [`message_url`] shows them, and every secret of `data` it quotes replaced by [`REDACTED`].
pub fn message(message: &str, data: &str) -> String {
    let mut out = urls_in_text(message);
    let Ok(mut value) = serde_json::from_str::<Value>(data) else {
        return out;
    };
    let mut secrets = Vec::new();
    redact_value(&mut value, &mut |s| {
        if s.len() >= MIN_QUOTED_SECRET {
            secrets.push(s.to_owned());
            // A URL quotes its parts percent-encoded.
            let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            if encoded != s {
                secrets.push(encoded);
            }
        }
    });
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in &secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// Redacts in place, passing every secret it masks to `found`; true when anything changed.
fn redact_value(value: &mut Value, found: &mut dyn FnMut(&str)) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                changed |= if key.eq_ignore_ascii_case("headers") && v.is_object() {
                    redact_headers(v, found)
                } else if is_secret_name(key)
                    || key.eq_ignore_ascii_case("body")
                    || key.eq_ignore_ascii_case("payload")
                {
                    mask(v, found)
                } else {
                    redact_value(v, found)
                };
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| redact_value(v, found) | changed),
        Value::String(s) => match url_secrets(s) {
            Some((clean, secrets)) => {
                secrets.iter().for_each(|x| found(x));
                *s = clean;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Every header value but a harmless header's is masked.
fn redact_headers(headers: &mut Value, found: &mut dyn FnMut(&str)) -> bool {
    let Value::Object(map) = headers else {
        return false;
    };
    map.iter_mut()
        .filter(|(name, _)| !is_harmless_header(name))
        .fold(false, |changed, (_, v)| mask(v, found) | changed)
}

/// Replaces a value that holds something (not null, not an empty string) with [`REDACTED`].
fn mask(v: &mut Value, found: &mut dyn FnMut(&str)) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) if s.is_empty() => false,
        Value::String(s) => {
            found(s);
            *v = Value::String(REDACTED.into());
            true
        }
        other => {
            found(&other.to_string());
            *other = Value::String(REDACTED.into());
            true
        }
    }
}

/// A URL in check data as [`check_data`] shows it: its password and the values of its
/// secret-looking query and fragment parameters masked. Anything that is not a URL comes
/// back unchanged.
pub fn data_url(raw: &str) -> String {
    url_secrets(raw).map_or_else(|| raw.to_owned(), |(clean, _)| clean)
}

/// `raw` with its password and secret query values masked, and what was masked; `None` when
/// it is not a URL or holds nothing to mask.
fn url_secrets(raw: &str) -> Option<(String, Vec<String>)> {
    if !raw.contains("://") {
        return None;
    }
    let mut u = url::Url::parse(raw).ok()?;
    let mut secrets = Vec::new();
    if let Some(pw) = u.password().filter(|p| !p.is_empty()) {
        secrets.push(decoded(pw));
        secrets.push(pw.to_owned());
        u.set_password(Some(URL_MASK)).ok()?;
    }
    mask_path(&mut u, &mut secrets);
    if let Some(q) = u.query().map(str::to_owned) {
        let masked = mask_pairs(&q, is_secret_name, &mut secrets);
        u.set_query(Some(&masked));
    }
    if let Some(f) = u.fragment().map(str::to_owned) {
        let masked = mask_pairs(&f, is_secret_name, &mut secrets);
        u.set_fragment(Some(&masked));
    }
    (!secrets.is_empty()).then(|| (u.to_string(), secrets))
}

/// A URL as a message may quote it: user name, host, port and path; every query value
/// replaced by `redacted` (the names stay, to tell which URL it was), no password, no
/// fragment. A string that is not a URL is cut before its first `?` or `#` and loses any
/// user-info, so a malformed URL leaks no more.
pub fn message_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw) else {
        return unparsable_url(raw);
    };
    if u.password().is_some() && u.set_password(Some(URL_MASK)).is_err() {
        return unparsable_url(raw);
    }
    mask_path(&mut u, &mut Vec::new());
    if let Some(q) = u.query().map(str::to_owned) {
        let masked = mask_pairs(&q, |_| true, &mut Vec::new());
        u.set_query(Some(&masked));
    }
    u.set_fragment(None);
    u.to_string()
}

/// Replaces every token-like segment of `u`'s path with [`URL_MASK`], passing each (decoded
/// and as written) to `secrets`.
fn mask_path(u: &mut url::Url, secrets: &mut Vec<String>) {
    if u.cannot_be_a_base()
        || !u
            .path_segments()
            .is_some_and(|mut s| s.any(is_token_segment))
    {
        return;
    }
    let path: Vec<String> = u
        .path()
        .split('/')
        .map(|seg| {
            if is_token_segment(seg) {
                secrets.push(decoded(seg));
                secrets.push(seg.to_owned());
                URL_MASK.to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect();
    u.set_path(&path.join("/"));
}

fn unparsable_url(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let head = &raw[..end];
    let cut = if end < raw.len() { "?redacted" } else { "" };
    // `scheme://userinfo@host...`: the user-info goes whole.
    let shown = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{URL_MASK}@{}", &rest[at + 1..]),
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    let shown: Vec<&str> = shown
        .split('/')
        .map(|seg| if is_token_segment(seg) { URL_MASK } else { seg })
        .collect();
    format!("{}{cut}", shown.join("/"))
}

/// `pairs` (`a=1&b=2`, as written in a URL) with the value of every parameter whose decoded
/// name `masks` replaced by [`URL_MASK`]; the masked values, decoded and as written, go to
/// `secrets`. Parameters without a value and empty values stay as they are.
fn mask_pairs(pairs: &str, masks: impl Fn(&str) -> bool, secrets: &mut Vec<String>) -> String {
    pairs
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() && masks(&decoded(name)) => {
                secrets.push(decoded(value));
                secrets.push(value.to_owned());
                format!("{name}={URL_MASK}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A query component decoded as a form would be (`+` is a space).
fn decoded(part: &str) -> String {
    url::form_urlencoded::parse(format!("x={part}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| part.to_owned())
}

/// `text` with every `http://` or `https://` URL in it shown as [`message_url`] shows it. A
/// URL ends at white space or a quote.
fn urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(tail.len());
        out.push_str(&message_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_data_is_verbatim() {
        let raw = r#"{"url": "http://example.com/?page=2", "expect_status": 200}"#;
        assert_eq!(check_data(raw), raw);
    }

    #[test]
    fn secret_named_keys_are_redacted_at_any_depth() {
        let raw = r#"{"url":"http://x/","username":"u","Password":"hunter2",
            "nested":[{"client_secret":"s"},{"AccessToken":"t"},{"api-key":7}],
            "expect_json":[{"path":"$.session","equals":"up"}]}"#;
        let out = check_data(raw);
        for secret in ["hunter2", "\"s\"", "\"t\"", "7"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Password"], REDACTED);
        assert_eq!(v["username"], "u");
        assert_eq!(v["nested"][1]["AccessToken"], REDACTED);
        assert_eq!(v["nested"][2]["api-key"], REDACTED);
        assert_eq!(
            v["expect_json"][0]["equals"], "up",
            "a JSONPath is not a secret"
        );
        for name in [
            "token",
            "X-Auth-Token",
            "secret",
            "password",
            "pass",
            "pwd",
            "auth",
            "sig",
            "signature",
            "session",
            "sessionid",
            "credential",
            "apikey",
            "api_key",
            "key",
            "X-Amz-Signature",
            "jwt",
            "otp",
            "client-private",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "url",
            "page",
            "id",
            "q",
            "username",
            "expect_status",
            "timeout",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn header_values_are_masked_unless_harmless() {
        let raw = r#"{"url":"http://x/","headers":{"Authorization":"Bearer abc",
            "proxy-authorization":"Basic Zm9v","Cookie":"sid=1","X-Api-Key":"k1",
            "X-Team":"ops-team","Accept":"text/html","user-agent":"probe/1","HOST":"v.test",
            "Content-Type":"application/json"}}"#;
        let out = check_data(raw);
        for secret in ["Bearer abc", "Zm9v", "sid=1", "k1", "ops-team"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["X-Team"], REDACTED, "not on the harmless list");
        assert_eq!(v["headers"]["Accept"], "text/html");
        assert_eq!(v["headers"]["user-agent"], "probe/1");
        assert_eq!(v["headers"]["HOST"], "v.test");
        assert_eq!(v["headers"]["Content-Type"], "application/json");
    }

    #[test]
    fn a_body_is_never_echoed() {
        let out = check_data(r#"{"url":"http://x/","body":"user=a&pin=1234","method":"POST"}"#);
        assert!(!out.contains("1234"), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["body"], REDACTED);
        assert_eq!(v["method"], "POST");
        assert_eq!(check_data(r#"{"body":""}"#), r#"{"body":""}"#);
    }

    #[test]
    fn url_credentials_and_secret_query_values_are_redacted() {
        let out = check_data(
            r#"{"url":"https://bob:pw123@example.com/status?token=T0K&page=2&X-Api-Key=K3Y&sig=&flag#access_token=FR4G"}"#,
        );
        for secret in ["pw123", "T0K", "K3Y", "FR4G"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["url"],
            "https://bob:redacted@example.com/status?token=redacted&page=2&X-Api-Key=redacted&sig=&flag#access_token=redacted"
        );
        // An encoded name is recognised.
        assert_eq!(
            data_url("http://h/?api%5Fkey=v4lue&q=a+b"),
            "http://h/?api%5Fkey=redacted&q=a+b"
        );
        assert_eq!(data_url("not a url?token=x"), "not a url?token=x");
    }

    #[test]
    fn message_urls_show_no_query_values() {
        assert_eq!(
            message_url("http://u:pw@h:8080/p?token=abc&page=2#frag"),
            "http://u:redacted@h:8080/p?token=redacted&page=redacted"
        );
        assert_eq!(message_url("http://h/p"), "http://h/p");
        assert_eq!(
            message_url("http://u:pw@h:99999/x?token=abc"),
            "http://redacted@h:99999/x?redacted",
            "a URL that does not parse"
        );
    }

    #[test]
    fn messages_lose_url_query_values_and_quoted_secrets() {
        let data = r#"{"url":"http://h/?token=T0KEN&page=2","headers":{"X-Key":"HEADERVAL"},
            "body":"BODYTEXT","password":"pw"}"#;
        let msg = r#"error performing HTTP request: Get "http://h/?token=T0KEN&page=2": refused; echoed HEADERVAL and BODYTEXT and pw"#;
        let out = message(msg, data);
        assert_eq!(
            out,
            r#"error performing HTTP request: Get "http://h/?token=redacted&page=redacted": refused; echoed <redacted> and <redacted> and pw"#,
            "secrets under 4 bytes are left"
        );
        // Form-encoded, as a query string quotes it.
        let out = message("saw a+b%26c+d", r#"{"headers":{"X-Q":"a b&c d"}}"#);
        assert_eq!(out, "saw <redacted>");
        assert_eq!(message("plain text", "not json"), "plain text");
    }

    #[test]
    fn token_like_path_segments_are_redacted() {
        let slack = "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/XXXXXXXXXXXXXXXXXXXXXXXX";
        assert_eq!(
            data_url(slack),
            "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/redacted"
        );
        let telegram = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage?chat_id=42";
        assert_eq!(
            message_url(telegram),
            "https://api.telegram.org/redacted/sendMessage?chat_id=redacted"
        );
        let ping = "https://hc-ping.com/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(data_url(ping), "https://hc-ping.com/redacted");
        // Readable paths and short ids stay.
        let plain = "https://example.com/status-page-for-customers/v2/health";
        assert_eq!(data_url(plain), plain);
        assert_eq!(message_url(plain), plain);
        // In check data and in messages, the token is gone wherever it is quoted.
        let data = format!(r#"{{"url":"{slack}"}}"#);
        assert!(!check_data(&data).contains("XXXXXXXX"));
        let msg = message("POST XXXXXXXXXXXXXXXXXXXXXXXX failed", &data);
        assert_eq!(msg, "POST <redacted> failed");
        assert_eq!(
            message_url("http://h:99999/ping/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d?x=1"),
            "http://h:99999/ping/redacted?redacted",
            "a URL that does not parse"
        );
    }

    #[test]
    fn a_tcp_payload_is_never_echoed() {
        let out = check_data(r#"{"address":"db:6379","payload":"AUTH hunter22","expect":"+OK"}"#);
        assert!(!out.contains("hunter22"), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["payload"], REDACTED);
        assert_eq!(v["expect"], "+OK");
    }

    #[test]
    fn non_json_is_hidden() {
        assert_eq!(check_data("password=hunter2"), UNPARSABLE);
    }

    #[test]
    fn empty_secrets_stay_empty() {
        let raw = r#"{"password":""}"#;
        assert_eq!(check_data(raw), raw);
    }
}
