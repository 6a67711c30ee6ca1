//! The push endpoints: `POST /push/{token}` and `GET /push/{token}` (for cron one-liners),
//! with `?status=fail&msg=...` to report a failure. The token is the credential: no bearer
//! token is needed.
//!
//! - The token is looked up among the enabled push checks, whose tokens this node reads from
//!   MySQL (again at most every [`REFRESH`], and at once, at most once per [`MISS_REFRESH`],
//!   when a token is not known, so a new check can be pushed to right away). Every known
//!   token is compared, each in constant time (SHA-256 digests, `subtle`).
//! - An unknown token gets 404 and nothing else: nothing is written, no limit is charged.
//! - Each check may be pushed [`BURST`] times at once, then once per [`REFILL`] on average; a
//!   push beyond that gets 429 with `Retry-After`.
//! - A push is recorded in `check_pushes` (`store/push.rs`), so any controller-capable worker
//!   may receive it; the acting controller judges it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::{ApiError, Web, sha256};
use crate::model::CheckId;
use crate::probe::{PushSpec, push_token_problem};
use crate::store::{Store, push as store_push};

/// Known tokens are read again at most this often.
pub const REFRESH: Duration = Duration::from_secs(10);
/// An unknown token reads the tokens again, at most this often.
pub const MISS_REFRESH: Duration = Duration::from_secs(1);
/// Pushes a check may send at once.
pub const BURST: f64 = 10.0;
/// After a burst, one more push is allowed per this much time.
pub const REFILL: Duration = Duration::from_secs(1);

/// The push checks' tokens as last read, and each check's rate limit.
pub(super) struct PushDesk {
    tokens: tokio::sync::Mutex<Tokens>,
    buckets: Mutex<HashMap<CheckId, Bucket>>,
}

#[derive(Default)]
struct Tokens {
    /// SHA-256 of each enabled push check's token.
    known: Vec<([u8; 32], CheckId)>,
    read_at: Option<Instant>,
}

impl Tokens {
    /// The checks whose token is `digest`; every entry is compared, in constant time.
    fn find(&self, digest: &[u8; 32]) -> Vec<CheckId> {
        let mut found = Vec::new();
        for (d, check) in &self.known {
            if bool::from(d.ct_eq(digest)) {
                found.push(*check);
            }
        }
        found
    }

    fn stale(&self, now: Instant, after: Duration) -> bool {
        self.read_at.is_none_or(|t| now.duration_since(t) >= after)
    }

    async fn read(&mut self, store: &Store, now: Instant) -> Result<(), crate::store::StoreError> {
        let rows = store_push::push_checks(store).await?;
        self.known = rows
            .into_iter()
            // A row with bad data is skipped by the controller too (and reported there).
            .filter_map(|(id, data)| {
                Some((sha256(PushSpec::parse(&data).ok()?.token.as_bytes()), id))
            })
            .collect();
        self.read_at = Some(now);
        Ok(())
    }
}

/// A token bucket: `level` pushes may be sent now.
struct Bucket {
    level: f64,
    at: Instant,
}

impl PushDesk {
    pub(super) fn new() -> PushDesk {
        PushDesk {
            tokens: tokio::sync::Mutex::new(Tokens::default()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The checks `token` belongs to (none for an unknown token).
    async fn lookup(&self, store: &Store, token: &str) -> Result<Vec<CheckId>, ApiError> {
        if push_token_problem(token).is_some() {
            return Ok(Vec::new());
        }
        let digest = sha256(token.as_bytes());
        let mut tokens = self.tokens.lock().await;
        let now = Instant::now();
        if tokens.stale(now, REFRESH) {
            tokens.read(store, now).await?;
            return Ok(tokens.find(&digest));
        }
        let found = tokens.find(&digest);
        if found.is_empty() && tokens.stale(now, MISS_REFRESH) {
            tokens.read(store, now).await?;
            return Ok(tokens.find(&digest));
        }
        Ok(found)
    }

    /// Takes one push from `check`'s bucket; `Err` with the wait until the next is allowed.
    fn admit(&self, check: CheckId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(check).or_insert(Bucket {
            level: BURST,
            at: now,
        });
        let refilled = now.duration_since(b.at).as_secs_f64() / REFILL.as_secs_f64();
        b.level = (b.level + refilled).min(BURST);
        b.at = now;
        if b.level >= 1.0 {
            b.level -= 1.0;
            Ok(())
        } else {
            Err(REFILL.mul_f64(1.0 - b.level))
        }
    }
}

pub(super) fn routes() -> Router<Web> {
    Router::new().route("/push/{token}", get(push).post(push))
}

/// `status` and `msg` from the query: (ok, message).
fn parse_query(query: Option<&str>) -> Result<(bool, String), ApiError> {
    let mut ok = true;
    let mut message = String::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "status" => {
                ok = match v.to_ascii_lowercase().as_str() {
                    "" | "ok" | "up" => true,
                    "fail" | "down" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "status: expected ok or fail, found {other:?}"
                        )));
                    }
                }
            }
            "msg" => {
                message = crate::probe::cut_text(&v, crate::probe::MESSAGE_CAP).into_owned();
            }
            _ => {}
        }
    }
    Ok((ok, message))
}

async fn push(
    State(web): State<Web>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let checks = match web.push.lookup(&web.store, &token).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if checks.is_empty() {
        return ApiError::not_found("no push check has this token");
    }
    let (ok, message) = match parse_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let now = Instant::now();
    for check in &checks {
        if let Err(wait) = web.push.admit(*check, now) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many pushes for this check: at most {BURST} at once, then one per {} s; \
                     retry in {secs} s",
                    REFILL.as_secs()
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    for check in &checks {
        if let Err(e) = store_push::record(&web.store, *check, ok, &message).await {
            return ApiError::from(e).into_response();
        }
    }
    let status = if ok { "ok" } else { "fail" };
    axum::Json(serde_json::json!({ "recorded": status })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        assert_eq!(parse_query(None).ok(), Some((true, String::new())));
        assert_eq!(
            parse_query(Some("status=fail&msg=disk%20full")).ok(),
            Some((false, "disk full".to_owned()))
        );
        assert_eq!(
            parse_query(Some("status=UP")).ok(),
            Some((true, String::new()))
        );
        let e = parse_query(Some("status=maybe")).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("status: expected ok or fail, found \"maybe\"")
        );
        let long = format!("status=fail&msg={}", "x".repeat(5000));
        let (_, m) = parse_query(Some(&long)).ok().unwrap();
        assert!(m.len() <= crate::probe::MESSAGE_CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_are_limited_per_check() {
        let desk = PushDesk::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(desk.admit(CheckId(1), t0).is_ok());
        }
        assert_eq!(desk.admit(CheckId(1), t0), Err(Duration::from_secs(1)));
        // Another check has its own bucket.
        assert!(desk.admit(CheckId(2), t0).is_ok());
        // One more per second.
        assert!(desk.admit(CheckId(1), t0 + Duration::from_secs(1)).is_ok());
        assert!(desk.admit(CheckId(1), t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn tokens_are_found_by_digest() {
        let t = Tokens {
            known: vec![
                (sha256(b"aaaaaaaaaaaaaaaa"), CheckId(1)),
                (sha256(b"bbbbbbbbbbbbbbbb"), CheckId(2)),
            ],
            read_at: None,
        };
        assert_eq!(t.find(&sha256(b"bbbbbbbbbbbbbbbb")), vec![CheckId(2)]);
        assert!(t.find(&sha256(b"cccccccccccccccc")).is_empty());
    }
}
