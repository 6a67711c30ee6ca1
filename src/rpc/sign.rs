//! Request signing between nodes (DESIGN 2.4).
//!
//! Every request carries four headers: the sender's node id, a timestamp (Unix milliseconds),
//! a random nonce, and `HMAC-SHA256(secret, canonical)` where `canonical` is
//!
//! ```text
//! METHOD \n PATH-AND-QUERY \n NODE \n TIMESTAMP \n NONCE \n hex(SHA-256(body))
//! ```
//!
//! The secret never crosses the wire. The receiver recomputes the MAC and compares it in
//! constant time (`ring::hmac::verify`), refuses timestamps more than [`MAX_SKEW`] away from
//! its clock, and refuses a nonce it has already seen within the window (a replay).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Secret;

pub const HEADER_NODE: &str = "x-gbm-node";
pub const HEADER_TIMESTAMP: &str = "x-gbm-timestamp";
pub const HEADER_NONCE: &str = "x-gbm-nonce";
pub const HEADER_SIGNATURE: &str = "x-gbm-signature";

/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Nonces remembered at most; only correctly signed requests add one, so only a holder of the
/// secret could fill it.
const MAX_NONCES: usize = 1_000_000;

/// The signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub node: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

/// Why a request was refused. Each is answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing or malformed signature headers")]
    Malformed,
    #[error("timestamp {skew_ms} ms away from this node's clock (allowed {max_ms} ms)")]
    Stale { skew_ms: u64, max_ms: u64 },
    #[error("bad signature")]
    BadSignature,
    #[error("replayed nonce")]
    Replay,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn canonical(method: &str, path: &str, node: &str, ts: u64, nonce: &str, body: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "{method}\n{path}\n{node}\n{ts}\n{nonce}\n{}",
        hex::encode(digest)
    )
}

/// Signs and verifies with the cluster secret, and remembers recent nonces.
pub struct Signer {
    key: hmac::Key,
    node: String,
    rng: SystemRandom,
    seen: Mutex<Nonces>,
    refused: std::sync::atomic::AtomicU64,
}

struct Nonces {
    /// nonce -> when it may be forgotten (ms).
    expires: HashMap<String, u64>,
    last_prune_ms: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("node", &self.node).finish()
    }
}

impl Signer {
    /// `node` is this node's id, sent with every request it signs.
    pub fn new(secret: &Secret, node: impl Into<String>) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
            node: node.into(),
            rng: SystemRandom::new(),
            seen: Mutex::new(Nonces {
                expires: HashMap::new(),
                last_prune_ms: 0,
            }),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The headers for a request.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> Signed {
        let mut raw = [0u8; 16];
        // SystemRandom only fails when the OS has no randomness source at all; a timestamp
        // plus the counter-free fallback still keeps nonces distinct enough for replay checks.
        if self.rng.fill(&mut raw).is_err() {
            raw[..8].copy_from_slice(&now_ms().to_le_bytes());
        }
        let nonce = hex::encode(raw);
        let ts = now_ms();
        let text = canonical(method, path, &self.node, ts, &nonce, body);
        let tag = hmac::sign(&self.key, text.as_bytes());
        Signed {
            node: self.node.clone(),
            timestamp_ms: ts,
            nonce,
            signature: hex::encode(tag),
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a request refused before its headers could be read.
    pub fn note_refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks a request's headers against its method, path and body, and records its nonce.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        signed: &Signed,
    ) -> Result<(), SignError> {
        let verdict = self.check(method, path, body, signed);
        if verdict.is_err() {
            self.note_refused();
        }
        verdict
    }

    fn check(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        signed: &Signed,
    ) -> Result<(), SignError> {
        if signed.nonce.is_empty() || signed.nonce.len() > 64 || signed.node.len() > 128 {
            return Err(SignError::Malformed);
        }
        let now = now_ms();
        let skew = now.abs_diff(signed.timestamp_ms);
        let max = MAX_SKEW.as_millis() as u64;
        if skew > max {
            return Err(SignError::Stale {
                skew_ms: skew,
                max_ms: max,
            });
        }
        let tag = hex::decode(&signed.signature).map_err(|_| SignError::Malformed)?;
        let text = canonical(
            method,
            path,
            &signed.node,
            signed.timestamp_ms,
            &signed.nonce,
            body,
        );
        hmac::verify(&self.key, text.as_bytes(), &tag).map_err(|_| SignError::BadSignature)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(seen.last_prune_ms) > 1_000 || seen.expires.len() >= MAX_NONCES {
            seen.expires.retain(|_, exp| *exp > now);
            seen.last_prune_ms = now;
        }
        if seen.expires.contains_key(&signed.nonce) {
            return Err(SignError::Replay);
        }
        if seen.expires.len() >= MAX_NONCES {
            // Full of live nonces: refuse rather than forget one that could then be replayed.
            return Err(SignError::Replay);
        }
        // A nonce must be remembered for as long as its timestamp is acceptable.
        seen.expires
            .insert(signed.nonce.clone(), signed.timestamp_ms + 2 * max);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secret: &str) -> Signer {
        Signer::new(&Secret::new(secret), "w1")
    }

    #[test]
    fn round_trip_then_replay_refused() {
        let a = signer("cluster-secret-1234");
        let b = signer("cluster-secret-1234");
        let s = a.sign("POST", "/view/heartbeat", b"{}");
        assert_eq!(b.verify("POST", "/view/heartbeat", b"{}", &s), Ok(()));
        assert_eq!(
            b.verify("POST", "/view/heartbeat", b"{}", &s),
            Err(SignError::Replay)
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let a = signer("cluster-secret-1234");
        let s = a.sign("POST", "/work", b"{\"a\":1}");
        let b = signer("cluster-secret-1234");
        assert_eq!(
            b.verify("POST", "/work", b"{\"a\":2}", &s),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            b.verify("GET", "/work", b"{\"a\":1}", &s),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            b.verify("POST", "/other", b"{\"a\":1}", &s),
            Err(SignError::BadSignature)
        );
        let mut other_node = s.clone();
        other_node.node = "w2".into();
        assert_eq!(
            b.verify("POST", "/work", b"{\"a\":1}", &other_node),
            Err(SignError::BadSignature)
        );
        let wrong = signer("another-secret-999");
        assert_eq!(
            wrong.verify("POST", "/work", b"{\"a\":1}", &s),
            Err(SignError::BadSignature)
        );
        let mut garbled = s.clone();
        garbled.signature = "zz".into();
        assert_eq!(
            b.verify("POST", "/work", b"{\"a\":1}", &garbled),
            Err(SignError::Malformed)
        );
    }

    #[test]
    fn stale_timestamps_refused() {
        let a = signer("cluster-secret-1234");
        let mut s = a.sign("POST", "/work", b"");
        s.timestamp_ms -= 31_000;
        // Re-sign with the old timestamp so only the age is wrong.
        let text = canonical("POST", "/work", "w1", s.timestamp_ms, &s.nonce, b"");
        s.signature = hex::encode(hmac::sign(&a.key, text.as_bytes()));
        assert!(matches!(
            a.verify("POST", "/work", b"", &s),
            Err(SignError::Stale { .. })
        ));
    }
}
