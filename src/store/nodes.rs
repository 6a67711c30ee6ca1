//! Which configured database node the store uses, and whether any answers at all.
//!
//! `[controller] database` lists one server, or the nodes of a Galera cluster (MariaDB
//! Galera; MySQL Group Replication and InnoDB Cluster follow the same rules). Writes go to one
//! node at a time. A watcher ([`super::Store::watch`]) probes every node each
//! [`PROBE_EVERY`] over a connection of its own, bounded by [`PROBE_TIMEOUT`]:
//!
//! 1. A node is **ready** when it answers and, if it runs Galera, reports `wsrep_ready = ON`
//!    in the primary component. A node that does not answer (refused, reset, hung), or
//!    answers but is not ready (it left the primary component: error 1047, `wsrep_ready =
//!    OFF`), is **not ready**.
//! 2. When the node in use stops being ready and another is, the store switches to the
//!    first ready one, and operations running on the abandoned node are cut short (they fail
//!    as [`super::StoreError::Unreachable`] and their callers retry on the new node) instead
//!    of waiting out their bound. So a node that dies, hangs or leaves the primary component
//!    is abandoned within `PROBE_EVERY + PROBE_TIMEOUT`.
//! 3. A node that answers as part of another cluster than the first node that answered, or
//!    as a plain server beside Galera nodes, is **foreign**: never used (that would split the
//!    store), and reported.
//! 4. When no node is ready, the store is **unreachable** from that moment
//!    ([`Nodes::unreachable_for`]) until one is again: the controller tells the admin by
//!    channels that need no database.
//!
//! Without the watcher (tools, tests) every node counts as ready and the store tries them in
//! turn, as before.
//!
//! # Decisions where DESIGN is silent
//! - The node in use is kept while it is ready, even when an earlier node of the list is
//!   ready again: switching back and forth costs certification conflicts for nothing.
//! - The watcher's probe connection is not from the pool, so a pool exhausted by slow
//!   queries never reads as a dead node.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often every node is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one probe may take before the node counts as not answering.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the last probe of a node found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not probed (no watcher): usable.
    Unknown = 0,
    Ready = 1,
    /// Answers, but not in a state to take writes (a Galera node outside the primary
    /// component, or not synced).
    NotReady = 2,
    /// Refused, reset or no answer within [`PROBE_TIMEOUT`].
    NoAnswer = 3,
    /// Part of another cluster, or a plain server beside Galera nodes: never used.
    Foreign = 4,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Ready,
            2 => Health::NotReady,
            3 => Health::NoAnswer,
            4 => Health::Foreign,
            _ => Health::Unknown,
        }
    }

    /// Whether operations may be sent to the node.
    pub fn usable(self) -> bool {
        matches!(self, Health::Unknown | Health::Ready)
    }
}

/// What one probe read from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `wsrep_cluster_state_uuid` for a Galera node; `None` for a plain server.
    pub cluster: Option<String>,
    /// Ready for writes: a plain server always; a Galera node when `wsrep_ready = ON` and
    /// `wsrep_cluster_status = Primary`.
    pub ready: bool,
}

impl Probe {
    /// From `SHOW GLOBAL STATUS` rows of `wsrep_ready`, `wsrep_cluster_status` and
    /// `wsrep_cluster_state_uuid` (none on a plain server).
    pub fn from_status(rows: &[(String, String)]) -> Probe {
        let get = |name: &str| {
            rows.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        match get("wsrep_cluster_state_uuid") {
            // A server built with wsrep but running without it reports an empty uuid.
            Some(uuid) if !uuid.is_empty() => Probe {
                cluster: Some(uuid.to_string()),
                ready: get("wsrep_ready") == Some("ON")
                    && get("wsrep_cluster_status") == Some("Primary"),
            },
            _ => Probe {
                cluster: None,
                ready: true,
            },
        }
    }
}

/// The health of every configured node.
pub struct Nodes {
    health: Vec<AtomicU8>,
    /// Cancelled when the node stops being ready: operations running on it give up.
    abandon: Vec<Mutex<CancellationToken>>,
    /// Whether the nodes are a Galera cluster (some node reported a cluster).
    galera: AtomicBool,
    /// The cluster the first answering Galera node belongs to.
    cluster: Mutex<Option<String>>,
    /// Since when no node has been ready; `None` while one is.
    unreachable_since: Mutex<Option<Instant>>,
}

impl Nodes {
    pub fn new(n: usize) -> Nodes {
        Nodes {
            health: (0..n)
                .map(|_| AtomicU8::new(Health::Unknown as u8))
                .collect(),
            abandon: (0..n)
                .map(|_| Mutex::new(CancellationToken::new()))
                .collect(),
            galera: AtomicBool::new(false),
            cluster: Mutex::new(None),
            unreachable_since: Mutex::new(None),
        }
    }

    /// How many nodes are configured.
    pub fn len(&self) -> usize {
        self.health.len()
    }

    /// Whether no node is configured (never, for a built store).
    pub fn is_empty(&self) -> bool {
        self.health.is_empty()
    }

    pub fn health(&self, i: usize) -> Health {
        Health::from_u8(self.health[i].load(Ordering::Relaxed))
    }

    /// Whether the nodes run Galera (known once the watcher has probed one).
    pub fn is_galera(&self) -> bool {
        self.galera.load(Ordering::Relaxed)
    }

    /// The token that is cancelled when node `i` is abandoned.
    pub fn abandon_token(&self, i: usize) -> CancellationToken {
        lock(&self.abandon[i]).clone()
    }

    /// How long no node has been ready, at `now`; `None` while one is.
    pub fn unreachable_for(&self, now: Instant) -> Option<Duration> {
        lock(&self.unreachable_since).map(|since| now.saturating_duration_since(since))
    }

    /// Records a probe of node `i` (`None`: no answer). Returns the node's new health and
    /// whether a foreign node was found.
    pub fn record(&self, i: usize, probe: Option<&Probe>) -> Health {
        let health = match probe {
            None => Health::NoAnswer,
            Some(p) if self.is_foreign(p) => Health::Foreign,
            Some(p) if p.ready => Health::Ready,
            Some(_) => Health::NotReady,
        };
        let before = Health::from_u8(self.health[i].swap(health as u8, Ordering::Relaxed));
        if before.usable() && !health.usable() {
            let mut token = lock(&self.abandon[i]);
            token.cancel();
            *token = CancellationToken::new();
        }
        health
    }

    /// A node that belongs elsewhere: another cluster than the first one seen, or a plain
    /// server among Galera nodes (or a Galera node among plain servers already in use).
    fn is_foreign(&self, p: &Probe) -> bool {
        let mut cluster = lock(&self.cluster);
        let galera = self.galera.load(Ordering::Relaxed);
        match (&p.cluster, cluster.as_ref()) {
            (Some(c), Some(known)) => c != known,
            (Some(c), None) => {
                // The first Galera node seen sets the cluster, unless plain servers came
                // first (they are in use: a Galera node beside them is the odd one).
                if self.any_plain_ready() {
                    return true;
                }
                *cluster = Some(c.clone());
                self.galera.store(true, Ordering::Relaxed);
                false
            }
            (None, _) => galera,
        }
    }

    fn any_plain_ready(&self) -> bool {
        !self.galera.load(Ordering::Relaxed)
            && self
                .health
                .iter()
                .any(|h| Health::from_u8(h.load(Ordering::Relaxed)) == Health::Ready)
    }

    /// After a round of probes: notes whether any node is ready (at `now`), and returns the
    /// node to use: `current` while it is usable, else the first usable one.
    pub fn choose(&self, current: usize, now: Instant) -> usize {
        let n = self.health.len();
        let ready = (0..n).any(|i| self.health(i) == Health::Ready);
        {
            let mut since = lock(&self.unreachable_since);
            if ready {
                *since = None;
            } else if since.is_none() {
                *since = Some(now);
            }
        }
        if self.health(current).usable() {
            return current;
        }
        (1..n)
            .map(|k| (current + k) % n)
            .find(|&i| self.health(i).usable())
            .unwrap_or(current)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn galera(cluster: &str, ready: bool) -> Probe {
        Probe {
            cluster: Some(cluster.into()),
            ready,
        }
    }

    fn plain() -> Probe {
        Probe {
            cluster: None,
            ready: true,
        }
    }

    fn at(ms: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn a_node_that_stops_being_ready_is_left_for_the_next_ready_one() {
        let nodes = Nodes::new(3);
        for i in 0..3 {
            nodes.record(i, Some(&galera("c1", true)));
        }
        assert_eq!(nodes.choose(0, at(1000)), 0);
        let running_on_0 = nodes.abandon_token(0);
        // Node 1 (index 0) leaves the primary component; node 2 does not answer.
        assert_eq!(
            nodes.record(0, Some(&galera("c1", false))),
            Health::NotReady
        );
        assert!(running_on_0.is_cancelled(), "work on the node is cut short");
        assert!(
            !nodes.abandon_token(0).is_cancelled(),
            "a new token for new work"
        );
        assert_eq!(nodes.record(1, None), Health::NoAnswer);
        assert_eq!(nodes.choose(0, at(1000)), 2);
        // Node 1 is ready again: the one in use is kept.
        nodes.record(0, Some(&galera("c1", true)));
        assert_eq!(nodes.choose(2, at(1000)), 2);
        assert_eq!(nodes.unreachable_for(at(5000)), None);
    }

    #[test]
    fn no_ready_node_is_an_unreachable_store_from_the_first_round() {
        let nodes = Nodes::new(2);
        nodes.record(0, None);
        nodes.record(1, Some(&galera("c1", false)));
        assert_eq!(nodes.choose(0, at(10_000)), 0);
        nodes.choose(0, at(12_000));
        assert_eq!(
            nodes.unreachable_for(at(40_000)),
            Some(Duration::from_secs(30)),
            "counted from the first round that found none"
        );
        nodes.record(1, Some(&galera("c1", true)));
        assert_eq!(nodes.choose(0, at(41_000)), 1);
        assert_eq!(nodes.unreachable_for(at(41_000)), None);
    }

    #[test]
    fn a_node_of_another_cluster_or_a_plain_server_among_galera_nodes_is_foreign() {
        let nodes = Nodes::new(3);
        assert_eq!(nodes.record(0, Some(&galera("c1", true))), Health::Ready);
        assert!(nodes.is_galera());
        assert_eq!(nodes.record(1, Some(&plain())), Health::Foreign);
        assert_eq!(nodes.record(2, Some(&galera("c2", true))), Health::Foreign);
        // Never chosen, even when the node in use fails.
        nodes.record(0, None);
        assert_eq!(nodes.choose(0, at(1)), 0);
        // Plain servers first: a Galera node beside them is the foreign one.
        let plain_first = Nodes::new(2);
        assert_eq!(plain_first.record(0, Some(&plain())), Health::Ready);
        assert_eq!(
            plain_first.record(1, Some(&galera("c1", true))),
            Health::Foreign
        );
        assert!(!plain_first.is_galera());
    }

    #[test]
    fn unprobed_nodes_are_all_usable() {
        let nodes = Nodes::new(2);
        assert!(nodes.health(0).usable() && nodes.health(1).usable());
        assert_eq!(nodes.unreachable_for(at(1)), None);
    }
}
