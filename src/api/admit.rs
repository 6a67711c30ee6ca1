//! Connection admission for one listener: who gets a slot, who is shed to make room, and the
//! per-connection state the serving task and the request handlers share.
//!
//! The rules, in order (README "Security" says the same for operators):
//!
//! 1. Every connection is accepted; admission happens after `accept`, so a full listener
//!    never leaves new connections waiting in the kernel's backlog.
//! 2. A connection is **unauthenticated** until it proves it is a node: a TLS client
//!    certificate signed by the cluster CA, or a request whose node signature verified
//!    ([`ConnState::mark_node`]). Node connections leave the counts below; they are never
//!    shed, and they may idle longer ([`NODE_IDLE_TIMEOUT`]).
//! 3. One source address holds at most `max_per_source` unauthenticated connections; a new
//!    one beyond that is closed at once. One host can only crowd itself out. This host's own
//!    address (`127.0.0.1`, `::1`) is not capped: it is where the node's own CLI, a local
//!    worker or viewserver member, and the quickstart's whole cluster connect from, and a
//!    process on the host is no stranger. Rule 4 still bounds it.
//! 4. The listener holds at most `max_connections` unauthenticated connections; a newcomer
//!    beyond that closes the one that has been inactive longest (no byte read or written).
//!    A node's fresh connection is the most recently active one while it handshakes and
//!    sends its first signed request, so a flood from many addresses must open
//!    `max_connections` connections within that moment to push it out.
//!
//! # Decisions where DESIGN is silent
//! - Shedding picks the least recently active connection, not the oldest: a slow but live
//!   client (a browser on a bad link) outlives an idle one that connected later.
//! - A node's connection is recognised per connection, not per address: nodes and strangers
//!   behind one NAT address share that address's cap until a node's connection has proved
//!   itself (rule 3). Nodes on addresses of their own, the usual deployment, never compete.
//!
//! # Cost
//! One mutex-guarded map entry per open connection; a shed scans the listener's connections
//! (at most `max_connections` plus the node connections) once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::ListenConfig;

/// How long a node's connection may idle: above the RPC clients' pool idle timeout (30 s),
/// so a client never reuses a connection the server is closing.
pub const NODE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source address holds `max_per_source` unauthenticated connections already.
    SourceFull,
}

/// Counters of one listener, for `/metrics` and the admin notice.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections closed at once because their source was at its cap (rule 3).
    pub refused_source: AtomicU64,
    /// Unauthenticated connections closed to make room for a newcomer (rule 4).
    pub shed: AtomicU64,
    /// Connections closed for sending no complete request head in time.
    pub head_timeouts: AtomicU64,
    /// Connections closed for idling, or making no progress, too long.
    pub idle_closed: AtomicU64,
    /// Connections that proved they are nodes.
    pub nodes: AtomicU64,
    /// Open unauthenticated connections.
    pub open_unauthenticated: AtomicUsize,
    /// Open node connections.
    pub open_nodes: AtomicUsize,
}

/// The admission book of one listener.
pub struct Admission {
    limits: ListenConfig,
    base: Instant,
    book: Mutex<Book>,
    pub(crate) stats: Arc<ListenerStats>,
}

#[derive(Default)]
struct Book {
    next_id: u64,
    open: HashMap<u64, Arc<ConnState>>,
    /// Unauthenticated connections per source address.
    per_source: HashMap<IpAddr, usize>,
    unauthenticated: usize,
}

/// What one connection's task, its watchdog and its requests share.
pub struct ConnState {
    id: u64,
    source: IpAddr,
    base: Instant,
    admission: std::sync::Weak<Admission>,
    stats: Arc<ListenerStats>,
    /// Milliseconds since `base` of the last byte read or written.
    last_active_ms: AtomicU64,
    /// Milliseconds since `base` when the last request finished (or the connection was
    /// accepted): when the connection became idle.
    idle_since_ms: AtomicU64,
    in_flight: AtomicUsize,
    served_any: AtomicBool,
    node: AtomicBool,
    /// Cancelled when the connection is shed for a newcomer.
    shed: CancellationToken,
}

impl Admission {
    #[cfg(test)]
    pub fn new(limits: ListenConfig) -> Arc<Admission> {
        Admission::with_stats(limits, Arc::default())
    }

    /// An admission book counting into `stats`.
    pub fn with_stats(limits: ListenConfig, stats: Arc<ListenerStats>) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            base: Instant::now(),
            book: Mutex::new(Book::default()),
            stats,
        })
    }

    pub fn limits(&self) -> &ListenConfig {
        &self.limits
    }

    /// Admits a connection from `source`, shedding the least recently active
    /// unauthenticated connection when the listener is full. The returned state leaves the
    /// book when dropped by its last holder ([`Ticket`]).
    pub fn admit(self: &Arc<Admission>, source: IpAddr) -> Result<Ticket, Refusal> {
        let mut book = self.lock();
        let from_source = book.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_per_source && !is_this_host(source) {
            self.stats.refused_source.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceFull);
        }
        if book.unauthenticated >= self.limits.max_connections {
            self.shed_one(&mut book);
        }
        let id = book.next_id;
        book.next_id += 1;
        let now = self.now_ms();
        let state = Arc::new(ConnState {
            id,
            source,
            base: self.base,
            admission: Arc::downgrade(self),
            stats: self.stats.clone(),
            last_active_ms: AtomicU64::new(now),
            idle_since_ms: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
            served_any: AtomicBool::new(false),
            node: AtomicBool::new(false),
            shed: CancellationToken::new(),
        });
        book.open.insert(id, state.clone());
        *book.per_source.entry(source).or_insert(0) += 1;
        book.unauthenticated += 1;
        self.publish(&book);
        Ok(Ticket(state))
    }

    /// Closes the least recently active unauthenticated connection, if any: it leaves the
    /// counts now, and its task closes it when it sees the cancellation.
    ///
    /// Returns whether one was shed (also used when the process runs out of descriptors).
    pub fn shed_least_active(&self) -> bool {
        let mut book = self.lock();
        let shed = self.shed_one(&mut book);
        self.publish(&book);
        shed
    }

    fn shed_one(&self, book: &mut Book) -> bool {
        let victim = book
            .open
            .values()
            .filter(|c| !c.is_node())
            .min_by_key(|c| c.last_active_ms.load(Ordering::Relaxed))
            .cloned();
        let Some(victim) = victim else { return false };
        book.forget(&victim);
        victim.shed.cancel();
        self.stats.shed.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn promote(&self, c: &ConnState) {
        let mut book = self.lock();
        if book.open.contains_key(&c.id) {
            book.release_source(c.source);
            book.unauthenticated -= 1;
        }
        self.stats.nodes.fetch_add(1, Ordering::Relaxed);
        self.publish(&book);
    }

    fn close(&self, c: &ConnState) {
        let mut book = self.lock();
        if c.is_node() {
            book.open.remove(&c.id);
        } else {
            book.forget(c);
        }
        self.publish(&book);
    }

    fn publish(&self, book: &Book) {
        self.stats
            .open_unauthenticated
            .store(book.unauthenticated, Ordering::Relaxed);
        self.stats
            .open_nodes
            .store(book.open.len() - book.unauthenticated, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Only counters live under this lock; a panic elsewhere leaves them usable.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Book {
    /// Removes an unauthenticated connection from the book, once.
    fn forget(&mut self, c: &ConnState) {
        if self.open.remove(&c.id).is_some() {
            self.release_source(c.source);
            self.unauthenticated -= 1;
        }
    }

    fn release_source(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// The host's own canonical loopback addresses (not the rest of 127.0.0.0/8, which tests use
/// to stand for other hosts).
fn is_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

/// A connection's place in the book; dropping it (when the connection ends) frees it.
pub struct Ticket(Arc<ConnState>);

impl Ticket {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(a) = self.0.admission.upgrade() {
            a.close(&self.0);
        }
    }
}

/// What the watchdog should do with a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again after this long.
    Keep(Duration),
    /// No complete request head arrived within `head_timeout` of the accept.
    HeadTimeout,
    /// Idle, or making no progress, beyond its idle limit.
    Idle,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The counters of the connection's listener.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// A byte was read or written.
    pub fn touch(&self) {
        self.touch_at(self.now_ms());
    }

    fn touch_at(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether the connection has proved it is a node.
    pub fn is_node(&self) -> bool {
        self.node.load(Ordering::Relaxed)
    }

    /// The connection carries node traffic (a CA-signed client certificate, or a request
    /// whose node signature verified): it leaves the unauthenticated counts for good.
    pub fn mark_node(&self) {
        if self.node.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(a) = self.admission.upgrade() {
            a.promote(self);
        }
    }

    /// Cancelled when the connection is shed for a newcomer.
    pub fn shed(&self) -> &CancellationToken {
        &self.shed
    }

    /// A request started: the connection is no longer idle. The returned guard ends it.
    pub fn request_started(self: &Arc<ConnState>) -> InFlight {
        self.served_any.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Whether the connection may live on, by `limits` (node connections idle up to
    /// [`NODE_IDLE_TIMEOUT`]).
    pub fn verdict(&self, limits: &ListenConfig) -> Verdict {
        self.verdict_at(self.now_ms(), limits)
    }

    fn verdict_at(&self, now: u64, limits: &ListenConfig) -> Verdict {
        let node = self.is_node();
        let idle_limit = if node {
            NODE_IDLE_TIMEOUT
        } else {
            limits.idle_timeout
        };
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A request in flight: nodes wait for their handlers; others must keep moving.
            if node {
                return Verdict::Keep(idle_limit);
            }
            let since = self.last_active_ms.load(Ordering::Relaxed);
            return left(now, since, idle_limit).map_or(Verdict::Idle, Verdict::Keep);
        }
        let since = self.idle_since_ms.load(Ordering::Relaxed);
        if !self.served_any.load(Ordering::Relaxed) {
            let limit = if node {
                idle_limit
            } else {
                limits.head_timeout
            };
            return left(now, since, limit).map_or(Verdict::HeadTimeout, Verdict::Keep);
        }
        left(now, since, idle_limit).map_or(Verdict::Idle, Verdict::Keep)
    }
}

/// How long is left of `limit` counted from `since`, or `None` when it has passed.
fn left(now_ms: u64, since_ms: u64, limit: Duration) -> Option<Duration> {
    let elapsed = Duration::from_millis(now_ms.saturating_sub(since_ms));
    limit
        .checked_sub(elapsed)
        .filter(|d| !d.is_zero())
        // Wake a little after the deadline rather than spin just before it.
        .map(|d| d + Duration::from_millis(5))
}

/// One request in flight on a connection; dropped when its response has been sent (or
/// abandoned), which makes the connection idle again when it was the last.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        if c.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            c.idle_since_ms.store(c.now_ms(), Ordering::Relaxed);
        }
        c.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_source: usize) -> ListenConfig {
        ListenConfig {
            max_connections,
            max_per_source,
            ..ListenConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_source_at_its_cap_is_refused_and_others_are_not() {
        let a = Admission::new(limits(100, 2));
        let _t1 = a.admit(ip(2)).unwrap();
        let t2 = a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(2)).err(), Some(Refusal::SourceFull));
        let _other = a.admit(ip(3)).unwrap();
        // Closing one frees its source's slot.
        drop(t2);
        let _t3 = a.admit(ip(2)).unwrap();
        assert_eq!(a.stats.refused_source.load(Ordering::Relaxed), 1);
        // This host's own address is not capped per source.
        let local: Vec<Ticket> = (0..5).map(|_| a.admit(ip(1)).unwrap()).collect();
        assert_eq!(local.len(), 5);
    }

    #[test]
    fn a_full_listener_sheds_the_least_recently_active() {
        let a = Admission::new(limits(3, 10));
        let t1 = a.admit(ip(2)).unwrap();
        let t2 = a.admit(ip(3)).unwrap();
        let t3 = a.admit(ip(4)).unwrap();
        // The oldest one was active last, the second longest ago.
        t1.state().touch_at(1_000_000);
        t2.state().touch_at(10);
        t3.state().touch_at(20);
        let t4 = a.admit(ip(5)).unwrap();
        assert!(t2.state().shed().is_cancelled(), "the least active is shed");
        assert!(!t1.state().shed().is_cancelled());
        assert!(!t3.state().shed().is_cancelled());
        assert!(!t4.state().shed().is_cancelled());
        assert_eq!(a.stats.shed.load(Ordering::Relaxed), 1);
        assert_eq!(a.stats.open_unauthenticated.load(Ordering::Relaxed), 3);
        // The shed connection's ticket, dropped later, does not count twice.
        drop(t2);
        assert_eq!(a.stats.open_unauthenticated.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn node_connections_are_never_shed_and_leave_the_counts() {
        let a = Admission::new(limits(2, 2));
        let node = a.admit(ip(7)).unwrap();
        node.state().mark_node();
        // The node's source has room again, and the listener two unauthenticated slots.
        let s1 = a.admit(ip(7)).unwrap();
        let s2 = a.admit(ip(7)).unwrap();
        assert_eq!(a.admit(ip(7)).err(), Some(Refusal::SourceFull));
        s1.state().touch_at(0);
        s2.state().touch_at(0);
        let mut strangers = Vec::new();
        for i in 0..5 {
            if let Ok(t) = a.admit(ip(9)) {
                t.state().touch_at(1000 + i);
                strangers.push(t);
            }
        }
        // Two fit under ip 9's cap; each came in by shedding one of the idle pair.
        assert_eq!(strangers.len(), 2);
        assert!(!node.state().shed().is_cancelled());
        assert!(s1.state().shed().is_cancelled() && s2.state().shed().is_cancelled());
        assert_eq!(a.stats.open_nodes.load(Ordering::Relaxed), 1);
        drop(node);
        assert_eq!(a.stats.open_nodes.load(Ordering::Relaxed), 0);
        // Only unauthenticated connections can be shed.
        let b = Admission::new(limits(16, 2));
        let n = b.admit(ip(7)).unwrap();
        n.state().mark_node();
        assert!(!b.shed_least_active());
    }

    #[test]
    fn verdicts_follow_head_idle_and_progress_limits() {
        let l = ListenConfig {
            head_timeout: Duration::from_millis(40),
            idle_timeout: Duration::from_millis(80),
            ..ListenConfig::default()
        };
        let a = Admission::new(l);
        let t = a.admit(ip(2)).unwrap();
        let c = t.state().clone();
        let stamp = |s: &AtomicU64| s.load(Ordering::Relaxed);
        let accepted = stamp(&c.idle_since_ms);
        assert!(matches!(c.verdict_at(accepted + 39, &l), Verdict::Keep(_)));
        assert_eq!(c.verdict_at(accepted + 41, &l), Verdict::HeadTimeout);
        // A request in flight that makes progress is kept; one that stalls is not.
        let request = c.request_started();
        let started = stamp(&c.last_active_ms);
        assert!(matches!(c.verdict_at(started + 79, &l), Verdict::Keep(_)));
        assert_eq!(c.verdict_at(started + 81, &l), Verdict::Idle);
        c.touch_at(started + 60);
        assert!(matches!(c.verdict_at(started + 81, &l), Verdict::Keep(_)));
        drop(request);
        // Idle after a request: the idle limit, not the head limit, applies.
        let idle = stamp(&c.idle_since_ms);
        assert!(matches!(c.verdict_at(idle + 79, &l), Verdict::Keep(_)));
        assert_eq!(c.verdict_at(idle + 81, &l), Verdict::Idle);
        // A node's connection idles up to NODE_IDLE_TIMEOUT.
        c.mark_node();
        assert!(
            matches!(c.verdict_at(idle + 81, &l), Verdict::Keep(d) if d > Duration::from_secs(100))
        );
    }
}
