//! Logins, sessions and the CSRF token of the dashboard.
//!
//! - A password is kept as an argon2id PHC string (`web_users.password_hash`).
//! - A session is 32 random bytes (ring's `SystemRandom`) in the cookie `gbm_session`
//!   (HttpOnly, SameSite=Strict, Secure under `[tls]`); `web_sessions` holds its SHA-256 only,
//!   so a database dump opens no session, and every controller-capable worker accepts it.
//! - Every POST carries the session's CSRF token (a hidden field), compared in constant time.
//! - Failed logins are counted per address and per user name on this worker: after
//!   [`MAX_FAILURES`] within [`FAILURE_WINDOW`] a login is refused until the window passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::store::webusers::{self, SessionUser};
use crate::store::{Store, StoreError};

pub const COOKIE: &str = "gbm_session";
/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Failed logins allowed per address and per user within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// The argon2id hash (PHC string) of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random source failed".to_string())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| format!("a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `password` matches `hash`; an unreadable hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash no password matches, verified for unknown users so that their answer takes as long.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy: no user has this").unwrap_or_default())
}

/// Checks `name` and `password` against `web_users` (argon2 off the async threads).
pub async fn check_login(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<Option<webusers::User>, StoreError> {
    let user = webusers::user_by_name(store, name).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    Ok(user.filter(|_| ok))
}

fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Schema("the system random source failed".into()))?;
    Ok(hex::encode(bytes))
}

/// Starts a session for `user_id`; returns the cookie's token.
pub async fn start_session(store: &Store, user_id: i64) -> Result<String, StoreError> {
    let token = random_hex(32)?;
    let csrf = random_hex(16)?;
    webusers::create_session(
        store,
        &super::super::sha256(token.as_bytes()),
        user_id,
        &csrf,
        SESSION_SECS,
    )
    .await?;
    Ok(token)
}

/// The session cookie's token in `headers`.
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The session of the request, if its cookie names a live one.
pub async fn session_of(
    store: &Store,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, StoreError> {
    match token_of(headers) {
        Some(t) => webusers::session(store, &super::super::sha256(t.as_bytes())).await,
        None => Ok(None),
    }
}

pub async fn end_session(store: &Store, headers: &HeaderMap) -> Result<(), StoreError> {
    if let Some(t) = token_of(headers) {
        webusers::delete_session(store, &super::super::sha256(t.as_bytes())).await?;
    }
    Ok(())
}

/// The `Set-Cookie` value of a session token (or of its removal, for `None`).
pub fn cookie(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{secure}"
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether the posted CSRF token is the session's.
pub fn csrf_ok(session: &SessionUser, posted: &str) -> bool {
    !posted.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(posted.as_bytes()))
}

/// Failed logins per key ("addr:IP", "user:NAME") in their window.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    fn keys(addr: IpAddr, name: &str) -> [String; 2] {
        [format!("addr:{addr}"), format!("user:{name}")]
    }

    /// Seconds until a login from `addr` for `name` is allowed again, if it is refused now.
    pub fn refused_for(&self, addr: IpAddr, name: &str, now: Instant) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        Self::keys(addr, name)
            .iter()
            .filter_map(|k| map.get(k))
            .filter(|(n, _)| *n >= MAX_FAILURES)
            .map(|(_, since)| (FAILURE_WINDOW - now.duration_since(*since)).as_secs() + 1)
            .max()
    }

    pub fn failed(&self, addr: IpAddr, name: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in Self::keys(addr, name) {
            map.entry(k).or_insert((0, now)).0 += 1;
        }
    }

    /// A right password clears the user's count (not the address's).
    pub fn succeeded(&self, name: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn the_limiter_refuses_after_the_limit_per_user_and_per_address() {
        let l = LoginLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(a, "ann", t);
        }
        assert_eq!(l.refused_for(a, "ann", t), None);
        l.failed(a, "ann", t);
        assert!(l.refused_for(a, "ann", t).is_some());
        // The same user from elsewhere, and another user from the same address.
        assert!(l.refused_for(b, "ann", t).is_some());
        assert!(l.refused_for(a, "bob", t).is_some());
        assert_eq!(l.refused_for(b, "bob", t), None);
        assert_eq!(l.refused_for(a, "ann", t + FAILURE_WINDOW), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        assert_eq!(
            cookie(Some("ab"), true),
            "gbm_session=ab; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        assert!(!cookie(Some("ab"), false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("cookie", "x=1; gbm_session=tok; y=2".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("tok"));
    }
}
