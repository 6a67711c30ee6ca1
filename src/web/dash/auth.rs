//! Logins, sessions and the CSRF tokens of the dashboard.
//!
//! - A password is kept as an argon2id PHC string (`web_users.password_hash`).
//! - A session is 32 random bytes (ring's `SystemRandom`) in the session cookie (HttpOnly,
//!   SameSite=Strict; under `[tls]` Secure and named `__Host-gbm_session`, so no other host or
//!   path can set it); `web_sessions` holds its SHA-256 only, so a database dump opens no
//!   session, and every controller-capable worker accepts it. A session ends when its user's
//!   password changes (`web_sessions.password_stamp`).
//! - Every POST carries the session's CSRF token (a hidden field), compared in constant time.
//!   The login form, before any session, carries a token that must match its own cookie
//!   (double submit), so no other site can log a browser in under another account.
//!
//! # What a login costs, and who can be locked out
//!
//! - Each attempt is counted before its password is hashed ([`LoginLimiter::admit`]), so a
//!   burst of concurrent attempts is limited as a sequence is. Counts are kept per (user,
//!   address) ([`MAX_USER_FAILURES`]) and per address ([`MAX_ADDR_FAILURES`]) for
//!   [`FAILURE_WINDOW`]; a right password gives its attempt back and clears the (user,
//!   address) count. There is no count per user alone: a flood of wrong passwords for a user
//!   from other addresses never locks that user out of their own address.
//! - User names are counted case-insensitively, as `web_users` compares them; names are cut
//!   to 64 bytes and IPv6 addresses counted per /64; the table holds at most
//!   [`MAX_LIMITER_KEYS`] keys (the oldest window goes first when full).
//! - At most [`hash_slots`] argon2 hashes run at once (about 19 MiB each); an attempt waits
//!   at most [`HASH_WAIT`] for a slot, and no more than [`MAX_HASH_WAITERS`] wait: the rest
//!   are answered 503 at once. Memory stays flat whatever the number of attempts.

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

/// The session cookie over plain HTTP.
pub const COOKIE: &str = "gbm_session";
/// The session cookie under `[tls]`: the `__Host-` prefix makes browsers refuse it unless it
/// is Secure, host-only and for `/`.
pub const COOKIE_TLS: &str = "__Host-gbm_session";
/// The login form's CSRF cookie, plain and under `[tls]`.
pub const LOGIN_COOKIE: &str = "gbm_login";
pub const LOGIN_COOKIE_TLS: &str = "__Host-gbm_login";
/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
/// How long a login form may be left open before it must be reloaded.
pub const LOGIN_FORM_SECS: i64 = 3600;
/// Failed logins allowed per (user, address) within [`FAILURE_WINDOW`].
pub const MAX_USER_FAILURES: u32 = 5;
/// Failed logins allowed per address within [`FAILURE_WINDOW`], whatever the users: room for
/// an office behind one address, none for a dictionary.
pub const MAX_ADDR_FAILURES: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Keys the limiter holds at most (each under 100 bytes).
pub const MAX_LIMITER_KEYS: usize = 10_000;
/// The longest user name counted as itself (`web_users.name` is `VARCHAR(64)`).
const MAX_NAME_KEY: usize = 64;
/// How long an attempt waits for a hash slot before it is answered 503.
pub const HASH_WAIT: Duration = Duration::from_secs(2);
/// Attempts waiting for a hash slot at most; more are answered 503 at once.
pub const MAX_HASH_WAITERS: usize = 32;
/// The longest password hashed; longer is refused before hashing.
pub const MAX_PASSWORD: usize = 1024;

/// Concurrent argon2 hashes: one per core, at most 4 (each holds about 19 MiB).
pub fn hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

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

/// Why a login was not checked.
#[derive(Debug)]
pub enum LoginError {
    /// Every hash slot stayed busy: try again shortly (503).
    Busy,
    Store(StoreError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> LoginError {
        LoginError::Store(e)
    }
}

/// Runs password hashes, at most [`hash_slots`] at once, with a bounded wait.
pub struct HashGate {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for HashGate {
    fn default() -> HashGate {
        HashGate::new(hash_slots())
    }
}

impl HashGate {
    pub fn new(slots: usize) -> HashGate {
        HashGate {
            slots: tokio::sync::Semaphore::new(slots),
            waiting: Default::default(),
        }
    }

    /// Whether `password` matches `hash`, verified off the async threads under a slot.
    async fn verify(&self, password: String, hash: String) -> Result<bool, LoginError> {
        use std::sync::atomic::Ordering;
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let permit = if before >= MAX_HASH_WAITERS {
            None
        } else {
            tokio::time::timeout(HASH_WAIT, self.slots.acquire())
                .await
                .ok()
                .and_then(Result::ok)
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let Some(permit) = permit else {
            return Err(LoginError::Busy);
        };
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        drop(permit);
        Ok(ok)
    }
}

/// Checks `name` and `password` against `web_users`, the hash under `gate`.
pub async fn check_login(
    store: &Store,
    gate: &HashGate,
    name: &str,
    password: &str,
) -> Result<Option<webusers::User>, LoginError> {
    let user = webusers::user_by_name(store, name).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
    let ok = gate.verify(password.to_string(), hash).await?;
    Ok(user.filter(|_| ok))
}

fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Schema("the system random source failed".into()))?;
    Ok(hex::encode(bytes))
}

/// Starts a session for `user` (as checked, with the hash it was checked against); returns
/// the cookie's token.
pub async fn start_session(store: &Store, user: &webusers::User) -> Result<String, StoreError> {
    let token = random_hex(32)?;
    let csrf = random_hex(16)?;
    webusers::create_session(
        store,
        &super::super::sha256(token.as_bytes()),
        user,
        &csrf,
        SESSION_SECS,
    )
    .await?;
    Ok(token)
}

/// A fresh login-form token.
pub fn login_token() -> Result<String, StoreError> {
    random_hex(16)
}

/// The value of cookie `name` in `headers`.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The session cookie's token in `headers` (either name: a listener's TLS does not change
/// between requests, but a cookie set before an upgrade may still be sent).
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE_TLS).or_else(|| cookie_value(headers, COOKIE))
}

/// Whether the login form's posted token matches its cookie (double submit).
pub fn login_csrf_ok(headers: &HeaderMap, posted: &str) -> bool {
    let cookie =
        cookie_value(headers, LOGIN_COOKIE_TLS).or_else(|| cookie_value(headers, LOGIN_COOKIE));
    cookie.is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(posted.as_bytes())))
}

/// The `Set-Cookie` value of the login form's token.
pub fn login_cookie(token: &str, secure: bool) -> String {
    let (name, secure) = if secure {
        (LOGIN_COOKIE_TLS, "; Secure")
    } else {
        (LOGIN_COOKIE, "")
    };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LOGIN_FORM_SECS}{secure}")
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
    let (name, secure) = if secure {
        (COOKIE_TLS, "; Secure")
    } else {
        (COOKIE, "")
    };
    match token {
        Some(t) => {
            format!("{name}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{secure}")
        }
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether the posted CSRF token is the session's.
pub fn csrf_ok(session: &SessionUser, posted: &str) -> bool {
    !posted.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(posted.as_bytes()))
}

/// What the limiter counts: an address (IPv6 by its /64), and a user at an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Addr(IpAddr),
    User(String, IpAddr),
}

impl LimitKey {
    fn pair(addr: IpAddr, name: &str) -> [(LimitKey, u32); 2] {
        let addr = match addr {
            IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => {
                let mut o = a.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let mut name = name.to_lowercase();
        if name.len() > MAX_NAME_KEY {
            let mut cut = MAX_NAME_KEY;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        [
            (LimitKey::User(name, addr), MAX_USER_FAILURES),
            (LimitKey::Addr(addr), MAX_ADDR_FAILURES),
        ]
    }
}

/// Login attempts per key in their window (see the module's rules).
#[derive(Default)]
pub struct LoginLimiter {
    counts: Mutex<HashMap<LimitKey, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Counts an attempt from `addr` for `name`, before its password is checked; or, when a
    /// count is used up, the seconds until it is allowed again (nothing is counted then).
    pub fn admit(&self, addr: IpAddr, name: &str, now: Instant) -> Result<(), u64> {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let keys = LimitKey::pair(addr, name);
        let live = |since: &Instant| now.duration_since(*since) < FAILURE_WINDOW;
        let refused = keys
            .iter()
            .filter_map(|(k, max)| map.get(k).filter(|(n, at)| *n >= *max && live(at)))
            .map(|(_, at)| (FAILURE_WINDOW - now.duration_since(*at)).as_secs() + 1)
            .max();
        if let Some(secs) = refused {
            return Err(secs);
        }
        for (k, _) in keys {
            if !map.contains_key(&k) && map.len() >= MAX_LIMITER_KEYS {
                make_room(&mut map, now);
            }
            let e = map.entry(k).or_insert((0, now));
            if !live(&e.1) {
                *e = (0, now);
            }
            e.0 += 1;
        }
        Ok(())
    }

    /// A right password gives its attempt back and clears the (user, address) count.
    pub fn succeeded(&self, addr: IpAddr, name: &str) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let [(user, _), (addr, _)] = LimitKey::pair(addr, name);
        map.remove(&user);
        if let Some(e) = map.get_mut(&addr) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// An attempt that was never checked (no hash slot, the database did not answer) is
    /// given back whole.
    pub fn unchecked(&self, addr: IpAddr, name: &str) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (k, _) in LimitKey::pair(addr, name) {
            if let Some(e) = map.get_mut(&k) {
                e.0 = e.0.saturating_sub(1);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counts.lock().unwrap().len()
    }
}

/// Drops the expired windows; when none had, the oldest one.
fn make_room(map: &mut HashMap<LimitKey, (u32, Instant)>, now: Instant) {
    map.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
    if map.len() >= MAX_LIMITER_KEYS
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
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
    fn attempts_are_counted_before_the_check_per_user_at_an_address_and_per_address() {
        let l = LoginLimiter::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Instant::now();
        // Counted on admission: a burst is cut at the limit before any hash.
        for _ in 0..MAX_USER_FAILURES {
            assert_eq!(l.admit(a, "ann", t), Ok(()));
        }
        assert!(l.admit(a, "ann", t).is_err());
        assert!(
            l.admit(a, "ANN", t).is_err(),
            "names compare case-insensitively"
        );
        // Ann at her own address, and another user from the flooding address, still may.
        assert_eq!(l.admit(b, "ann", t), Ok(()));
        l.succeeded(b, "ann");
        assert_eq!(l.admit(a, "bob", t), Ok(()));
        // The address as a whole runs out too, whatever the names.
        for k in 0..MAX_ADDR_FAILURES {
            let _ = l.admit(a, &format!("user{k}"), t);
        }
        assert!(l.admit(a, "carol", t).is_err());
        assert_eq!(l.admit(a, "ann", t + FAILURE_WINDOW), Ok(()));
        // An IPv6 address counts by its /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2:3".parse().unwrap();
        for _ in 0..MAX_USER_FAILURES {
            l.admit(v6a, "dan", t).unwrap();
        }
        assert!(l.admit(v6b, "dan", t).is_err());
    }

    #[test]
    fn the_limiter_holds_a_bounded_number_of_short_keys() {
        let l = LoginLimiter::default();
        let t = Instant::now();
        let long = "x".repeat(10_000);
        for k in 0..(MAX_LIMITER_KEYS as u32) {
            let addr = IpAddr::from(k.to_be_bytes());
            let _ = l.admit(addr, &long, t);
        }
        assert!(l.len() <= MAX_LIMITER_KEYS, "{}", l.len());
        let keys = l.counts.lock().unwrap();
        assert!(keys.keys().all(|k| match k {
            LimitKey::User(n, _) => n.len() <= MAX_NAME_KEY,
            LimitKey::Addr(_) => true,
        }));
    }

    #[tokio::test]
    async fn hashes_wait_a_bounded_time_for_a_bounded_number_of_slots() {
        let gate = std::sync::Arc::new(HashGate::new(1));
        let hash = hash_password("pw").unwrap();
        // One slot held: a check waits HASH_WAIT at most and is answered Busy.
        let held = gate.slots.acquire().await.unwrap();
        tokio::time::pause();
        let r = gate.verify("pw".into(), hash.clone()).await;
        assert!(matches!(r, Err(LoginError::Busy)));
        tokio::time::resume();
        drop(held);
        assert!(matches!(gate.verify("pw".into(), hash).await, Ok(true)));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_host_prefixed_under_tls() {
        assert_eq!(
            cookie(Some("ab"), true),
            "__Host-gbm_session=ab; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            "__Host-gbm_session=tls; gbm_login=form1".parse().unwrap(),
        );
        assert_eq!(token_of(&h).as_deref(), Some("tls"));
        assert!(login_csrf_ok(&h, "form1"));
        assert!(!login_csrf_ok(&h, "form2"));
        assert!(!login_csrf_ok(&HeaderMap::new(), ""));
        assert!(login_cookie("t", true).starts_with("__Host-gbm_login=t; Path=/;"));
        assert!(!cookie(Some("ab"), false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("cookie", "x=1; gbm_session=tok; y=2".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("tok"));
    }
}
