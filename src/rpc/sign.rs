//! Request and reply signing between nodes (DESIGN 2.4).
//!
//! **Keys.** The cluster secret (`[default] password`) never crosses the wire. Two kinds of
//! key are derived from it with HKDF-SHA256:
//!
//! - the *cluster key*, held by every node that holds the secret (viewserver members,
//!   controller-capable workers, the CLI);
//! - one *node key* per node id, printed by `gobearmon node-key ID` and given to a probe-only
//!   worker as `[worker] key` so that it holds no cluster secret.
//!
//! A request signed with the cluster key is *trusted*: it may name any id it likes as its
//! sender. A request signed with a node key can only speak as that node, and a receiver can
//! check it only if it holds the cluster secret (it derives the key) or is that node itself.
//!
//! **Requests** carry six headers: sender id, key kind, timestamp (Unix ms), a random 128-bit
//! nonce, the SHA-256 of the body, and `HMAC-SHA256(key, canonical)` over
//!
//! ```text
//! gbm2 \n KIND \n METHOD \n HOST \n PATH-AND-QUERY \n NODE \n TIMESTAMP \n NONCE \n SHA256(body)
//! ```
//!
//! where HOST is the `host:port` the request is addressed to, which the receiver checks
//! against its own addresses: a request captured on one member cannot be replayed to another.
//! Everything but the body is checked from the headers alone ([`Signer::authenticate`]), so a
//! listener refuses a stranger before it reads a byte of the body; the body is then checked
//! against its signed digest ([`Authenticated::check_body`]).
//!
//! **Replies** carry `HMAC-SHA256(requester's key, "gbm2-reply" \n NONCE \n STATUS \n RESPONDER
//! \n SHA256(body))`: only a node holding the requester's key (the requester itself, or a
//! holder of the cluster secret) can answer it, so a relay cannot rewrite a view or an epoch.
//!
//! **Replays.** Timestamps more than [`MAX_SKEW`] from the receiver's clock, or older than
//! the receiver's start (its nonce cache is empty then), are refused; nonces seen within the
//! window are refused. The cache expires in insertion order (O(1) per request) and is bounded
//! per sender and in all.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf, hmac};

use crate::config::Secret;

pub const HEADER_NODE: &str = "x-gbm-node";
pub const HEADER_KEY: &str = "x-gbm-key";
pub const HEADER_TIMESTAMP: &str = "x-gbm-timestamp";
pub const HEADER_NONCE: &str = "x-gbm-nonce";
pub const HEADER_CONTENT: &str = "x-gbm-content-sha256";
pub const HEADER_SIGNATURE: &str = "x-gbm-signature";
pub const HEADER_REPLY_NODE: &str = "x-gbm-reply-node";
pub const HEADER_REPLY_SIGNATURE: &str = "x-gbm-reply-signature";

/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Nonces remembered at most, in all.
const MAX_NONCES: usize = 1_000_000;
/// Nonces remembered at most for one sender: about 800 requests a second over the window. A
/// node that holds only its own key can fill only its own share.
const MAX_NONCES_PER_SENDER: u32 = 50_000;
/// Refusals from one address are logged at most once per this interval, with a count.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Addresses the refusal log remembers; beyond this it starts over.
const REFUSAL_LOG_PEERS: usize = 4096;
/// Longest node id accepted in a header.
const MAX_NODE_LEN: usize = 128;

const HKDF_SALT: &[u8] = b"gobearmon key derivation v2";

/// Which key signed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Derived from the cluster secret: a trusted node.
    Cluster,
    /// The sender's own node key.
    Node,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Cluster => "cluster",
            KeyKind::Node => "node",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "cluster" => Some(KeyKind::Cluster),
            "node" => Some(KeyKind::Node),
            _ => None,
        }
    }
}

/// Who sent a verified request; handlers read it as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The signed node id.
    pub node: String,
    /// Signed with the cluster key (a node holding the cluster secret).
    pub trusted: bool,
}

/// What a node signs with: the cluster secret or its own node key.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    Cluster(&'a Secret),
    /// A node key as printed by `gobearmon node-key` (64 hex digits).
    NodeKey(&'a Secret),
}

/// The signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub node: String,
    pub kind: KeyKind,
    pub timestamp_ms: u64,
    pub nonce: String,
    /// hex SHA-256 of the body.
    pub content: String,
    pub signature: String,
}

impl Signed {
    /// The request headers that carry the signature.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            (HEADER_NODE, self.node.clone()),
            (HEADER_KEY, self.kind.as_str().to_string()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_CONTENT, self.content.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// Why a request was refused. Each is answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("missing or malformed signature headers")]
    Malformed,
    #[error("timestamp {skew_ms} ms away from this node's clock (allowed {max_ms} ms)")]
    Stale { skew_ms: u64, max_ms: u64 },
    #[error("timestamp older than this node's start")]
    BeforeStart,
    #[error("addressed to {0:?}, which is not this node")]
    WrongDestination(String),
    #[error("cannot check a request from {0:?}: this node holds only its own key")]
    UnknownSender(String),
    #[error("bad signature")]
    BadSignature,
    #[error("body does not match its signed digest")]
    BodyMismatch,
    #[error("replayed nonce")]
    Replay,
    #[error("too many requests in the replay window")]
    TooMany,
}

/// Why a node key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node key is 64 hex digits, as printed by `gobearmon node-key ID --config FILE`")]
pub struct BadNodeKey;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

fn derive(secret: &Secret, info: &[&[u8]]) -> [u8; 32] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret.expose().as_bytes());
    let mut out = [0u8; 32];
    // HKDF-SHA256 yields up to 8160 bytes; 32 always succeed.
    if let Ok(okm) = prk.expand(info, hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out);
    }
    out
}

fn node_key_bytes(secret: &Secret, node: &str) -> [u8; 32] {
    derive(secret, &[b"node\0", node.as_bytes()])
}

/// The node key of `node`, as `gobearmon node-key` prints it.
pub fn node_key_hex(secret: &Secret, node: &str) -> String {
    hex::encode(node_key_bytes(secret, node))
}

/// Parses a node key (64 hex digits).
pub fn parse_node_key(key: &Secret) -> Result<[u8; 32], BadNodeKey> {
    let raw = hex::decode(key.expose().trim()).map_err(|_| BadNodeKey)?;
    raw.try_into().map_err(|_| BadNodeKey)
}

#[allow(clippy::too_many_arguments)]
fn canonical(
    kind: KeyKind,
    method: &str,
    host: &str,
    path: &str,
    node: &str,
    ts: u64,
    nonce: &str,
    content: &str,
) -> String {
    format!(
        "gbm2\n{}\n{method}\n{host}\n{path}\n{node}\n{ts}\n{nonce}\n{content}",
        kind.as_str()
    )
}

fn reply_text(nonce: &str, status: u16, responder: &str, body: &[u8]) -> String {
    format!(
        "gbm2-reply\n{nonce}\n{status}\n{responder}\n{}",
        sha256_hex(body)
    )
}

/// What a receiver can check signatures with.
enum Keyring {
    /// The cluster secret: every sender's key can be derived.
    Cluster { secret: Secret, cluster: hmac::Key },
    /// Only this node's own key.
    Own { key: hmac::Key },
}

/// Signs this node's requests and checks other nodes' requests and replies.
pub struct Signer {
    node: String,
    kind: KeyKind,
    /// What this node signs with.
    key: hmac::Key,
    keyring: Keyring,
    /// `host:port` values this node answers to; empty: any (a client only).
    hosts: Vec<String>,
    /// Ports this node answers to on any host (it listens on all interfaces).
    any_host_ports: Vec<u16>,
    started_ms: u64,
    rng: SystemRandom,
    nonces: Mutex<Nonces>,
    refused: AtomicU64,
    refusal_log: Mutex<HashMap<String, (Instant, u64)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("node", &self.node)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Signer {
    /// Signs as `node` with the cluster key derived from `secret`.
    pub fn cluster(secret: &Secret, node: impl Into<String>) -> Signer {
        let cluster = hmac::Key::new(hmac::HMAC_SHA256, &derive(secret, &[b"cluster"]));
        Signer::build(
            node.into(),
            KeyKind::Cluster,
            cluster.clone(),
            Keyring::Cluster {
                secret: secret.clone(),
                cluster,
            },
        )
    }

    /// Signs as `node` with its node key; checks only requests `node` itself signed.
    pub fn node_key(key: &Secret, node: impl Into<String>) -> Result<Signer, BadNodeKey> {
        let raw = parse_node_key(key)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
        Ok(Signer::build(
            node.into(),
            KeyKind::Node,
            key.clone(),
            Keyring::Own { key },
        ))
    }

    /// Signs as `node` with `credential`.
    pub fn new(credential: Credential<'_>, node: impl Into<String>) -> Result<Signer, BadNodeKey> {
        match credential {
            Credential::Cluster(secret) => Ok(Signer::cluster(secret, node)),
            Credential::NodeKey(key) => Signer::node_key(key, node),
        }
    }

    fn build(node: String, kind: KeyKind, key: hmac::Key, keyring: Keyring) -> Signer {
        Signer {
            node,
            kind,
            key,
            keyring,
            hosts: Vec::new(),
            any_host_ports: Vec::new(),
            started_ms: now_ms(),
            rng: SystemRandom::new(),
            nonces: Mutex::new(Nonces::default()),
            refused: AtomicU64::new(0),
            refusal_log: Mutex::new(HashMap::new()),
        }
    }

    /// The addresses this node answers to, as the other nodes address it (`host:port`). An
    /// address on all interfaces (`0.0.0.0:P`, `[::]:P`) accepts any host on port P.
    pub fn answering_to<S: AsRef<str>>(mut self, addrs: &[S]) -> Signer {
        for a in addrs {
            let a = a.as_ref().trim().to_ascii_lowercase();
            if let Ok(sock) = a.parse::<std::net::SocketAddr>()
                && sock.ip().is_unspecified()
            {
                self.any_host_ports.push(sock.port());
                continue;
            }
            if !a.is_empty() && !self.hosts.contains(&a) {
                self.hosts.push(a);
            }
        }
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this node holds the cluster secret.
    pub fn holds_cluster_secret(&self) -> bool {
        matches!(self.keyring, Keyring::Cluster { .. })
    }

    /// The headers for a request to `host` (the `host:port` it is addressed to).
    pub fn sign(&self, method: &str, host: &str, path: &str, body: &[u8]) -> Signed {
        let mut raw = [0u8; 16];
        if self.rng.fill(&mut raw).is_err() {
            // Only when the OS has no randomness at all: time and a counter keep nonces
            // distinct, which is all the replay check needs.
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            raw[..8].copy_from_slice(&now_ms().to_le_bytes());
            raw[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        }
        let nonce = hex::encode(raw);
        let ts = now_ms();
        let content = sha256_hex(body);
        let host = host.to_ascii_lowercase();
        let text = canonical(
            self.kind, method, &host, path, &self.node, ts, &nonce, &content,
        );
        Signed {
            node: self.node.clone(),
            kind: self.kind,
            timestamp_ms: ts,
            nonce,
            content,
            signature: hex::encode(hmac::sign(&self.key, text.as_bytes())),
        }
    }

    /// Whether a reply to the request `sent` is authentic: signed under this node's key over
    /// the request's nonce, the status, the responder and the body.
    pub fn reply_is_authentic(
        &self,
        sent: &Signed,
        status: u16,
        responder: &str,
        body: &[u8],
        tag_hex: &str,
    ) -> bool {
        let Ok(tag) = hex::decode(tag_hex) else {
            return false;
        };
        let text = reply_text(&sent.nonce, status, responder, body);
        hmac::verify(&self.key, text.as_bytes(), &tag).is_ok()
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a refused request and logs it, at most once per [`REFUSAL_LOG_INTERVAL`] per
    /// address (with the number of refusals not logged since), so a flood cannot fill the
    /// disk.
    pub fn note_refused(&self, peer: Option<IpAddr>, path: &str, why: &dyn std::fmt::Display) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        if let Some(unlogged) = self.may_log(format!("request {peer}")) {
            tracing::warn!(
                %peer,
                path,
                reason = %why,
                refused_since_last_log = unlogged,
                "refused a request"
            );
        }
    }

    /// Logs a refused reply from `addr` like [`Signer::note_refused`].
    pub fn note_refused_reply(&self, addr: &str, path: &str, why: &str) {
        if let Some(unlogged) = self.may_log(format!("reply {addr}")) {
            tracing::warn!(
                peer = addr,
                path,
                reason = why,
                refused_since_last_log = unlogged,
                "refused a reply not signed under this node's key"
            );
        }
    }

    /// Whether a refusal under `key` may be logged now, and how many were not logged since
    /// the last time.
    fn may_log(&self, key: String) -> Option<u64> {
        let now = Instant::now();
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= REFUSAL_LOG_PEERS && !log.contains_key(&key) {
            log.clear();
        }
        match log.get_mut(&key) {
            Some(entry) if now.duration_since(entry.0) < REFUSAL_LOG_INTERVAL => {
                entry.1 += 1;
                None
            }
            Some(entry) => {
                let unlogged = entry.1;
                *entry = (now, 0);
                Some(unlogged)
            }
            None => {
                log.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    /// Checks a request's headers (everything but the body) and records its nonce. On
    /// success, [`Authenticated::check_body`] must still pass once the body is read.
    pub fn authenticate(
        &self,
        method: &str,
        host: &str,
        path: &str,
        signed: &Signed,
    ) -> Result<Authenticated, SignError> {
        if signed.node.is_empty()
            || signed.node.len() > MAX_NODE_LEN
            || signed.content.len() != 64
            || signed.nonce.len() != 32
        {
            return Err(SignError::Malformed);
        }
        let nonce = u128::from_str_radix(&signed.nonce, 16).map_err(|_| SignError::Malformed)?;
        let host = host.to_ascii_lowercase();
        if !self.answers_to(&host) {
            return Err(SignError::WrongDestination(host));
        }
        let now = now_ms();
        let max = MAX_SKEW.as_millis() as u64;
        let skew = now.abs_diff(signed.timestamp_ms);
        if skew > max {
            return Err(SignError::Stale {
                skew_ms: skew,
                max_ms: max,
            });
        }
        if signed.timestamp_ms < self.started_ms {
            return Err(SignError::BeforeStart);
        }
        let key = self.key_of(signed)?;
        let tag = hex::decode(&signed.signature).map_err(|_| SignError::Malformed)?;
        let text = canonical(
            signed.kind,
            method,
            &host,
            path,
            &signed.node,
            signed.timestamp_ms,
            &signed.nonce,
            &signed.content,
        );
        hmac::verify(&key, text.as_bytes(), &tag).map_err(|_| SignError::BadSignature)?;
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&signed.node, nonce, Instant::now())?;
        Ok(Authenticated {
            sender: Sender {
                node: signed.node.clone(),
                trusted: signed.kind == KeyKind::Cluster,
            },
            key,
            nonce: signed.nonce.clone(),
            content: signed.content.clone(),
        })
    }

    fn answers_to(&self, host: &str) -> bool {
        if self.hosts.is_empty() && self.any_host_ports.is_empty() {
            return true;
        }
        if self.hosts.iter().any(|h| h == host) {
            return true;
        }
        let port = host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        port.is_some_and(|p| self.any_host_ports.contains(&p))
    }

    /// The key `signed` claims to be signed with, if this node can know it.
    fn key_of(&self, signed: &Signed) -> Result<hmac::Key, SignError> {
        match (&self.keyring, signed.kind) {
            (Keyring::Cluster { cluster, .. }, KeyKind::Cluster) => Ok(cluster.clone()),
            (Keyring::Cluster { secret, .. }, KeyKind::Node) => Ok(hmac::Key::new(
                hmac::HMAC_SHA256,
                &node_key_bytes(secret, &signed.node),
            )),
            (Keyring::Own { key }, KeyKind::Node) if signed.node == self.node => Ok(key.clone()),
            (Keyring::Own { .. }, _) => Err(SignError::UnknownSender(signed.node.clone())),
        }
    }
}

/// A request whose headers verified.
pub struct Authenticated {
    pub sender: Sender,
    /// The requester's key, which signs the reply.
    key: hmac::Key,
    nonce: String,
    content: String,
}

impl Authenticated {
    /// Checks the body against the digest the signature covers.
    pub fn check_body(&self, body: &[u8]) -> Result<(), SignError> {
        let digest = digest::digest(&digest::SHA256, body);
        let Ok(want) = hex::decode(&self.content) else {
            return Err(SignError::Malformed);
        };
        // The digest is no secret: a plain comparison leaks nothing.
        if digest.as_ref() == want.as_slice() {
            Ok(())
        } else {
            Err(SignError::BodyMismatch)
        }
    }

    /// The reply MAC for `status` and `body`, sent by `responder`.
    pub fn sign_reply(&self, status: u16, responder: &str, body: &[u8]) -> String {
        let text = reply_text(&self.nonce, status, responder, body);
        hex::encode(hmac::sign(&self.key, text.as_bytes()))
    }
}

/// Recently seen nonces, oldest first.
#[derive(Default)]
struct Nonces {
    /// (when it may be forgotten, nonce, sender), in insertion order: `Instant`s only grow, so
    /// the front is always the first to expire.
    queue: VecDeque<(Instant, u128, Arc<str>)>,
    live: HashSet<u128>,
    per_sender: HashMap<Arc<str>, u32>,
}

impl Nonces {
    fn record(&mut self, sender: &str, nonce: u128, now: Instant) -> Result<(), SignError> {
        while let Some((until, _, _)) = self.queue.front() {
            if *until > now {
                break;
            }
            let Some((_, old, who)) = self.queue.pop_front() else {
                break;
            };
            self.live.remove(&old);
            if let Some(n) = self.per_sender.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    self.per_sender.remove(&who);
                }
            }
        }
        if self.live.contains(&nonce) {
            return Err(SignError::Replay);
        }
        // Full: refuse rather than forget a nonce that could then be replayed.
        let mine = self.per_sender.get(sender).copied().unwrap_or(0);
        if mine >= MAX_NONCES_PER_SENDER || self.live.len() >= MAX_NONCES {
            return Err(SignError::TooMany);
        }
        // A request accepted now has a timestamp of at least `now - MAX_SKEW` and so stays
        // acceptable until at most `now + 2 * MAX_SKEW`.
        let who: Arc<str> = match self.per_sender.get_key_value(sender) {
            Some((k, _)) => k.clone(),
            None => Arc::from(sender),
        };
        *self.per_sender.entry(who.clone()).or_insert(0) += 1;
        self.live.insert(nonce);
        self.queue.push_back((now + 2 * MAX_SKEW, nonce, who));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "cluster-secret-1234";

    fn cluster(node: &str) -> Signer {
        Signer::cluster(&Secret::new(SECRET), node)
    }

    fn verify(
        to: &Signer,
        method: &str,
        host: &str,
        path: &str,
        body: &[u8],
        s: &Signed,
    ) -> Result<Sender, SignError> {
        let auth = to.authenticate(method, host, path, s)?;
        auth.check_body(body)?;
        Ok(auth.sender)
    }

    #[test]
    fn round_trip_then_replay_refused() {
        let a = cluster("w1");
        let b = cluster("vs1").answering_to(&["127.0.0.1:7000"]);
        let s = a.sign("POST", "127.0.0.1:7000", "/view/heartbeat", b"{}");
        let who = verify(&b, "POST", "127.0.0.1:7000", "/view/heartbeat", b"{}", &s).unwrap();
        assert_eq!(
            who,
            Sender {
                node: "w1".into(),
                trusted: true
            }
        );
        assert_eq!(
            verify(&b, "POST", "127.0.0.1:7000", "/view/heartbeat", b"{}", &s),
            Err(SignError::Replay)
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let a = cluster("w1");
        let b = cluster("vs1");
        // Receivers refuse requests signed before they started.
        let wrong = Signer::cluster(&Secret::new("another-secret-999"), "vs1");
        let s = a.sign("POST", "h:1", "/work", b"{\"a\":1}");
        assert_eq!(
            verify(&b, "POST", "h:1", "/work", b"{\"a\":2}", &s),
            Err(SignError::BodyMismatch)
        );
        for (method, host, path) in [
            ("GET", "h:1", "/work"),
            ("POST", "h:2", "/work"),
            ("POST", "h:1", "/other"),
        ] {
            assert_eq!(
                verify(&b, method, host, path, b"{\"a\":1}", &s),
                Err(SignError::BadSignature),
                "{method} {host} {path}"
            );
        }
        let mut other_node = s.clone();
        other_node.node = "w2".into();
        assert_eq!(
            verify(&b, "POST", "h:1", "/work", b"{\"a\":1}", &other_node),
            Err(SignError::BadSignature)
        );
        let mut other_kind = s.clone();
        other_kind.kind = KeyKind::Node;
        assert_eq!(
            verify(&b, "POST", "h:1", "/work", b"{\"a\":1}", &other_kind),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            verify(&wrong, "POST", "h:1", "/work", b"{\"a\":1}", &s),
            Err(SignError::BadSignature)
        );
        let mut garbled = s.clone();
        garbled.signature = "zz".into();
        assert_eq!(
            verify(&b, "POST", "h:1", "/work", b"{\"a\":1}", &garbled),
            Err(SignError::Malformed)
        );
    }

    #[test]
    fn a_node_key_speaks_only_as_its_node() {
        let secret = Secret::new(SECRET);
        let key = Secret::new(node_key_hex(&secret, "w7"));
        let probe = Signer::node_key(&key, "w7").unwrap();
        let member = cluster("vs1");
        let s = probe.sign("POST", "h:1", "/view/heartbeat", b"x");
        let who = verify(&member, "POST", "h:1", "/view/heartbeat", b"x", &s).unwrap();
        assert_eq!(
            who,
            Sender {
                node: "w7".into(),
                trusted: false
            }
        );
        // The same key claiming another id.
        let liar = Signer::node_key(&key, "w1").unwrap();
        let s = liar.sign("POST", "h:1", "/view/heartbeat", b"x");
        assert_eq!(
            verify(&member, "POST", "h:1", "/view/heartbeat", b"x", &s),
            Err(SignError::BadSignature)
        );
        // A node key cannot pass for the cluster key.
        let mut s = probe.sign("POST", "h:1", "/raft/vote", b"x");
        s.kind = KeyKind::Cluster;
        assert_eq!(
            verify(&member, "POST", "h:1", "/raft/vote", b"x", &s),
            Err(SignError::BadSignature)
        );
        // A node holding only its key checks only its own requests.
        let own = Signer::node_key(&key, "w7").unwrap();
        let s = probe.sign("POST", "h:1", "/disconnect", b"");
        assert!(verify(&own, "POST", "h:1", "/disconnect", b"", &s).is_ok());
        let s = member.sign("POST", "h:1", "/disconnect", b"");
        assert_eq!(
            verify(&own, "POST", "h:1", "/disconnect", b"", &s),
            Err(SignError::UnknownSender("vs1".into()))
        );
        assert_eq!(
            Signer::node_key(&Secret::new("not-hex"), "w7").err(),
            Some(BadNodeKey)
        );
    }

    #[test]
    fn a_request_for_another_destination_is_refused() {
        let a = cluster("w1");
        let vs1 = cluster("vs1").answering_to(&["127.0.0.1:7001"]);
        let vs2 = cluster("vs2").answering_to(&["127.0.0.1:7002"]);
        let s = a.sign("POST", "127.0.0.1:7001", "/view/heartbeat", b"");
        // Replayed to vs2 with its original Host header.
        assert_eq!(
            verify(&vs2, "POST", "127.0.0.1:7001", "/view/heartbeat", b"", &s),
            Err(SignError::WrongDestination("127.0.0.1:7001".into()))
        );
        assert!(verify(&vs1, "POST", "127.0.0.1:7001", "/view/heartbeat", b"", &s).is_ok());
        // All interfaces: any host on the port.
        let wide = cluster("w2").answering_to(&["0.0.0.0:8891"]);
        let s = a.sign("POST", "10.1.2.3:8891", "/x", b"");
        assert!(verify(&wide, "POST", "10.1.2.3:8891", "/x", b"", &s).is_ok());
        let s = a.sign("POST", "10.1.2.3:8892", "/x", b"");
        assert!(matches!(
            verify(&wide, "POST", "10.1.2.3:8892", "/x", b"", &s),
            Err(SignError::WrongDestination(_))
        ));
    }

    fn resign(by: &Signer, s: &mut Signed, method: &str, host: &str, path: &str) {
        let text = canonical(
            s.kind,
            method,
            host,
            path,
            &s.node,
            s.timestamp_ms,
            &s.nonce,
            &s.content,
        );
        s.signature = hex::encode(hmac::sign(&by.key, text.as_bytes()));
    }

    #[test]
    fn stale_and_pre_start_timestamps_refused() {
        let a = cluster("w1");
        let mut s = a.sign("POST", "h:1", "/work", b"");
        s.timestamp_ms -= 31_000;
        resign(&a, &mut s, "POST", "h:1", "/work");
        assert!(matches!(
            verify(&a, "POST", "h:1", "/work", b"", &s),
            Err(SignError::Stale { .. })
        ));
        // Signed a moment before the receiver started: within the skew, but its nonce
        // cannot be in the new cache.
        let mut s = a.sign("POST", "h:1", "/work", b"");
        s.timestamp_ms -= 2_000;
        resign(&a, &mut s, "POST", "h:1", "/work");
        let restarted = cluster("vs1");
        assert_eq!(
            verify(&restarted, "POST", "h:1", "/work", b"", &s),
            Err(SignError::BeforeStart)
        );
    }

    #[test]
    fn replies_verify_only_under_the_requesters_key() {
        let secret = Secret::new(SECRET);
        let probe = Signer::node_key(&Secret::new(node_key_hex(&secret, "w7")), "w7").unwrap();
        let member = cluster("vs1");
        let s = probe.sign("POST", "h:1", "/view/heartbeat", b"{}");
        let auth = member
            .authenticate("POST", "h:1", "/view/heartbeat", &s)
            .unwrap();
        let tag = auth.sign_reply(200, "vs1", b"{\"epoch\":3}");
        assert!(probe.reply_is_authentic(&s, 200, "vs1", b"{\"epoch\":3}", &tag));
        assert!(!probe.reply_is_authentic(&s, 200, "vs1", b"{\"epoch\":4}", &tag));
        assert!(!probe.reply_is_authentic(&s, 409, "vs1", b"{\"epoch\":3}", &tag));
        assert!(!probe.reply_is_authentic(&s, 200, "vs2", b"{\"epoch\":3}", &tag));
        let other = probe.sign("POST", "h:1", "/view/heartbeat", b"{}");
        assert!(!probe.reply_is_authentic(&other, 200, "vs1", b"{\"epoch\":3}", &tag));
        // Another node key (another probe worker) cannot answer for w7.
        let w8 = Signer::node_key(&Secret::new(node_key_hex(&secret, "w8")), "w8").unwrap();
        let forged = {
            let s8 = w8.sign("POST", "h:1", "/x", b"");
            let a8 = member.authenticate("POST", "h:1", "/x", &s8).unwrap();
            a8.sign_reply(200, "vs1", b"{\"epoch\":3}")
        };
        assert!(!probe.reply_is_authentic(&s, 200, "vs1", b"{\"epoch\":3}", &forged));
    }

    #[test]
    fn the_nonce_cache_expires_in_order_and_is_bounded_per_sender() {
        let mut n = Nonces::default();
        let t0 = Instant::now();
        n.record("w1", 1, t0).unwrap();
        assert_eq!(n.record("w1", 1, t0), Err(SignError::Replay));
        n.record("w2", 2, t0 + Duration::from_secs(1)).unwrap();
        // Past the first one's window, before the second's.
        let later = t0 + 2 * MAX_SKEW + Duration::from_millis(500);
        n.record("w3", 3, later).unwrap();
        assert!(!n.live.contains(&1));
        assert!(n.live.contains(&2));
        assert_eq!(n.per_sender.get("w1"), None);
        for i in 0..MAX_NONCES_PER_SENDER {
            n.record("flood", 1000 + u128::from(i), later).unwrap();
        }
        assert_eq!(n.record("flood", 1, later), Err(SignError::TooMany));
        // Others still get in.
        n.record("w1", 4, later).unwrap();
    }
}
