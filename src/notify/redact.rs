//! Secrets removed from a check's data before it goes into a notification. gobearmon mails
//! the raw JSON, basic-auth password included; here these values become `<redacted>`:
//!
//! - the value of any key (at any depth, matched case-insensitively) that contains
//!   `password`, `passwd`, `secret`, `token` or `api_key`/`apikey`/`api-key`, or that is
//!   `authorization`, `proxy-authorization`, `cookie`, `set-cookie` or `x-auth`;
//! - the password of any string value that is a URL with credentials
//!   (`https://user:pw@host/` becomes `https://user:<redacted>@host/`).
//!
//! Data that needs no redaction is returned verbatim; otherwise it is re-serialized (keys
//! sorted). Data that is not JSON is not shown at all, since nothing can tell where a secret
//! in it would be.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// What replaces check data that is not JSON.
pub const UNPARSABLE: &str = "(not valid JSON; not shown)";

/// Whether the value under `key` is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const CONTAINS: &[&str] = &[
        "password", "passwd", "secret", "token", "api_key", "apikey", "api-key",
    ];
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "proxy_authorization",
        "cookie",
        "set-cookie",
        "x-auth",
    ];
    CONTAINS.iter().any(|c| k.contains(c)) || EXACT.contains(&k.as_str())
}

/// `data` (a check's JSON parameters) with every secret replaced by [`REDACTED`].
pub fn check_data(data: &str) -> String {
    let mut value: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(_) => return UNPARSABLE.to_string(),
    };
    if redact_value(&mut value) {
        value.to_string()
    } else {
        data.to_string()
    }
}

/// Redacts in place; true when anything changed.
fn redact_value(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) {
                    if !matches!(v, Value::Null) && v.as_str() != Some("") {
                        *v = Value::String(REDACTED.into());
                        changed = true;
                    }
                } else {
                    changed |= redact_value(v);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| redact_value(v) | changed),
        Value::String(s) => match redact_url(s) {
            Some(clean) => {
                *s = clean;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// The URL `s` with its password replaced, or `None` when `s` is not a URL with a password.
fn redact_url(s: &str) -> Option<String> {
    if !s.contains('@') || !s.contains("://") {
        return None;
    }
    let mut url = url::Url::parse(s).ok()?;
    url.password()?;
    url.set_password(Some(REDACTED)).ok()?;
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_data_is_verbatim() {
        let raw = r#"{"url": "http://example.com/", "expect_status": 200}"#;
        assert_eq!(check_data(raw), raw);
    }

    #[test]
    fn passwords_headers_and_tokens_are_redacted() {
        let raw = r#"{"url":"http://x/","username":"u","Password":"hunter2",
            "headers":{"Authorization":"Bearer abc","proxy-authorization":"Basic Zm9v",
                       "Cookie":"sid=1","X-Api-Key":"k1","Accept":"text/html"},
            "nested":[{"client_secret":"s"},{"AccessToken":"t"}]}"#;
        let out = check_data(raw);
        for secret in [
            "hunter2",
            "Bearer abc",
            "Zm9v",
            "sid=1",
            "k1",
            "\"s\"",
            "\"t\"",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Password"], REDACTED);
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["Accept"], "text/html");
        assert_eq!(v["username"], "u");
        assert_eq!(v["nested"][1]["AccessToken"], REDACTED);
    }

    #[test]
    fn url_credentials_are_redacted() {
        let out = check_data(r#"{"url":"https://bob:pw123@example.com/status"}"#);
        assert!(!out.contains("pw123"), "{out}");
        assert!(out.contains("bob:"), "{out}");
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
