//! MySQL/MariaDB access for the controller (mysql_async over rustls).
//!
//! - [`Store`]: one pool per configured URL, tried in turn when one is down.
//! - [`nodes`]: which node of a Galera cluster (or list of addresses) is in use, probed by
//!   the watcher; a node that dies, hangs or leaves the primary component is abandoned.
//! - [`schema`]: the embedded `install.sql`, applied idempotently.
//! - [`rows`]: lenient decoding of `checks`, `contacts` and `alerts` rows: a bad row is kept and
//!   reported, never a crash.
//! - [`catalog`]: the in-memory copy of the operator's rows, kept current by reading only what
//!   the change log says changed.
//! - [`fence`]: the epoch fence that stops a deposed controller from writing.
//! - [`flips`]: a flip's status, event and outbox rows, written together under the fence.
//! - [`results`]: the latest result per check and worker.
//! - [`push`]: push checks' tokens and what their jobs pushed (`check_pushes`).
//! - [`history`]: result history: raw results, hourly and daily rollups, pruning.
//! - [`timeline`]: history read back: flips, incidents and their notifications, uptime,
//!   results over a window.
//! - [`meta`]: vantage health and meta-alerts: the `canaries` list, `meta_alerts` opened
//!   and resolved once across nodes, the controller's alive stamp.
//! - [`outbox`]: the notification outbox's rows: enqueue inside a flip's fenced transaction,
//!   claim due rows, record attempts, report failures, charges.
//!
//! Only the controller opens the database; probe-only workers never need credentials.

pub mod catalog;
pub mod fence;
pub mod flips;
pub mod history;
pub mod meta;
pub mod meta_queue;
pub mod metrics;
pub mod nodes;
pub mod outbox;
pub mod policy;
pub mod push;
pub mod results;
pub mod rows;

pub mod schema;
pub mod storm;
pub mod timeline;
pub mod webusers;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, Transaction, TxOpts};

use crate::config::Secret;
use crate::model::Epoch;

/// A row lock (the fence's, above all) is waited for this long before the statement fails
/// (MySQL error 1205). Short, so a controller blocked by a dead holder finds out in seconds
/// instead of the server's default 50.
pub const LOCK_WAIT_TIMEOUT_SECS: u64 = 3;

/// The server closes one of our sessions after it has been idle this long (the default is
/// 8 hours). This is what finally ends the open transaction of a controller that froze or
/// lost its host when its connection cannot be killed (another account).
pub const SESSION_WAIT_TIMEOUT_SECS: u64 = 120;

/// Set on every session: at connect and after every reset (a pooled connection is reset
/// when it is returned, which would otherwise restore the server's defaults).
fn session_setup() -> String {
    format!(
        "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECS}, \
         wait_timeout = {SESSION_WAIT_TIMEOUT_SECS}"
    )
}

/// Connections per database URL of the web listener's pool ([`Store::for_web`]): enough for
/// a page's parallel reads, small beside the server's `max_connections`.
pub const WEB_POOL_MAX: usize = 4;
/// How long a web request waits for one of them before it is answered 503.
pub const WEB_POOL_WAIT: Duration = Duration::from_secs(5);

/// The time limits of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// How long one attempt to reach one database may take before the next URL is tried.
    pub connect: Duration,
    /// How long a caller waits for a pooled connection while every one of the pool's
    /// connections is in use (the database answers; we are only busy). Never a reason to
    /// switch databases.
    pub pool_wait: Duration,
    /// The bound on one whole store operation (a fence raise, a claim, a record), queries
    /// included.
    pub operation: Duration,
}

impl Default for StoreTimeouts {
    fn default() -> StoreTimeouts {
        StoreTimeouts {
            connect: Duration::from_secs(5),
            pool_wait: Duration::from_secs(20),
            operation: Duration::from_secs(30),
        }
    }
}

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No configured database answered. Worth retrying later.
    #[error("no database reachable ({tried} tried): {last}")]
    Unreachable { tried: usize, last: String },
    /// The database answers but every pooled connection stayed in use for `waited`. Worth
    /// retrying; not a reason to switch databases.
    #[error("database #{database}: every pooled connection stayed in use for {waited:?}")]
    Busy { database: usize, waited: Duration },
    /// An operation did not finish within its bound (a hung server or network). Worth
    /// retrying.
    #[error("database operation timed out after {after:?}: {what}")]
    Timeout { what: &'static str, after: Duration },
    /// A query failed. Usually worth retrying (deadlock, lost connection); a schema problem is
    /// not, and says so in the message.
    #[error("database error: {0}")]
    Query(#[from] mysql_async::Error),
    /// The fence holds another epoch, or this epoch for another node: this controller has
    /// been replaced (or was never the one). Never retry; stop acting as controller.
    #[error("fenced: this controller acts for epoch {ours}, the database holds epoch {stored}")]
    Fenced { ours: Epoch, stored: Epoch },
    /// The fence row stayed locked by another session that [`fence::raise`] could not end:
    /// `holder` is who it is when known (a newer epoch, or a session of another account).
    /// Worth retrying; when it keeps happening the admin must look.
    #[error("the epoch fence is locked by {}", fence::describe_holder(.holder.as_ref()))]
    FenceLocked { holder: Option<fence::FenceHolder> },
    /// The database is not in the expected shape (install.sql not applied).
    #[error("database schema problem: {0}")]
    Schema(String),
}

impl StoreError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::Busy { .. }
                | StoreError::Timeout { .. }
                | StoreError::Query(_)
                | StoreError::FenceLocked { .. }
        )
    }

    /// The server's error code, for a query the server refused.
    pub(crate) fn server_code(&self) -> Option<u16> {
        match self {
            StoreError::Query(mysql_async::Error::Server(e)) => Some(e.code),
            _ => None,
        }
    }
}

/// Database URLs parsed and pooled. Cheap to clone.
///
/// The URLs are addresses of one primary, tried in turn: a URL is left only when its server
/// does not answer, never because our own pool is busy.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pools: Vec<Pooled>,
    /// Index of the pool that answered last; tried first.
    current: AtomicUsize,
    timeouts: StoreTimeouts,
    /// What the watcher knows of each node.
    nodes: nodes::Nodes,
}

struct Pooled {
    pool: Pool,
    /// The pool's `pool_max`.
    max: usize,
    /// The options the pool connects with, for the watcher's own connection.
    opts: Opts,
}

impl Pooled {
    /// Every connection the pool may open is open and none is idle in the pool: each is
    /// checked out by us, or on its way back (a returned connection is cleaned up by the
    /// pool's recycler before the next waiter gets it, and no longer counts as in use then).
    fn all_in_use(&self) -> bool {
        let m = self.pool.metrics();
        m.connections_in_use.load(Ordering::Relaxed) >= self.max
            || (m.connection_count.load(Ordering::Relaxed) >= self.max
                && m.connections_in_pool.load(Ordering::Relaxed) == 0)
    }
}

/// Why one database gave no connection.
enum Miss {
    /// It does not answer (refused, unreachable, no answer within the connect timeout).
    NoAnswer(String),
    /// It answers, but our pool stayed full.
    Busy(Duration),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("databases", &self.inner.pools.len())
            .field("timeouts", &self.inner.timeouts)
            .finish()
    }
}

impl Store {
    /// Prepares pools for every URL; connects lazily. Fails only on an unparsable URL (the
    /// config reader has already checked them, so this names the position, not the URL).
    pub fn new(urls: &[Secret]) -> Result<Store, StoreError> {
        Store::with_timeouts(urls, StoreTimeouts::default())
    }

    /// [`Store::new`] with other time limits (tests use short ones).
    pub fn with_timeouts(urls: &[Secret], timeouts: StoreTimeouts) -> Result<Store, StoreError> {
        Store::build(urls, timeouts, None)
    }

    /// The web listener's own small pools (at most [`WEB_POOL_MAX`] connections per URL,
    /// [`WEB_POOL_WAIT`] for one): the dashboard, the API, status pages, push endpoints and
    /// `/metrics` use these, so however many requests arrive they can hold no connection
    /// that the fence, flip and outbox transactions of the main pool need (DESIGN 8).
    pub fn for_web(urls: &[Secret]) -> Result<Store, StoreError> {
        let timeouts = StoreTimeouts {
            pool_wait: WEB_POOL_WAIT,
            operation: Duration::from_secs(15),
            ..StoreTimeouts::default()
        };
        Store::build(urls, timeouts, Some(WEB_POOL_MAX))
    }

    /// Pools for `urls`; `max` overrides each URL's `pool_max`.
    fn build(
        urls: &[Secret],
        timeouts: StoreTimeouts,
        max: Option<usize>,
    ) -> Result<Store, StoreError> {
        crate::tlsutil::install_default_provider();
        let mut pools = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let mut opts = Opts::from_url(url.expose()).map_err(|_| {
                StoreError::Schema(format!("database URL #{i} is not a valid mysql:// URL"))
            })?;
            if let Some(constraints) = max.and_then(|m| PoolConstraints::new(0, m)) {
                let pool = opts.pool_opts().clone().with_constraints(constraints);
                opts = OptsBuilder::from_opts(opts).pool_opts(pool).into();
            }
            let max = opts.pool_opts().constraints().max();
            let opts = OptsBuilder::from_opts(opts)
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .prefer_socket(false)
                .setup(vec![session_setup()])
                // Drop idle connections before the server's shorter wait_timeout ends them.
                .conn_ttl(Some(Duration::from_secs(SESSION_WAIT_TIMEOUT_SECS * 3 / 4)));
            let opts = Opts::from(opts);
            pools.push(Pooled {
                pool: Pool::new(opts.clone()),
                max,
                opts,
            });
        }
        if pools.is_empty() {
            return Err(StoreError::Schema("no database URL configured".into()));
        }
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                nodes: nodes::Nodes::new(pools.len()),
                pools,
                current: AtomicUsize::new(0),
                timeouts,
            }),
        })
    }

    /// The time limits in force.
    pub fn timeouts(&self) -> StoreTimeouts {
        self.inner.timeouts
    }

    /// Runs one store operation within [`StoreTimeouts::operation`]; a hung server or network
    /// becomes [`StoreError::Timeout`] instead of a wait without end. Dropping the operation
    /// drops its connection, which rolls back an open transaction.
    pub async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let after = self.inner.timeouts.operation;
        // Cut short when the watcher abandons the node in use (it died, hung or left the
        // primary component): the caller retries on the next one.
        let node = self.inner.current.load(Ordering::Relaxed);
        let abandoned = self.inner.nodes.abandon_token(node);
        tokio::select! {
            r = tokio::time::timeout(after, op) => match r {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout { what, after }),
            },
            _ = abandoned.cancelled() => Err(StoreError::Unreachable {
                tried: 1,
                last: format!("database #{node} was abandoned during {what}"),
            }),
        }
    }

    /// The health of the configured nodes (known once [`Store::watch`] runs).
    pub fn nodes(&self) -> &nodes::Nodes {
        &self.inner.nodes
    }

    /// Probes every node each [`nodes::PROBE_EVERY`] until `stop`, switching away from a
    /// node that stops being ready (see [`nodes`]).
    pub fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            let n = store.inner.pools.len();
            let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
            loop {
                let probes = futures_util::future::join_all(
                    conns
                        .iter_mut()
                        .enumerate()
                        .map(|(i, c)| probe_node(&store.inner.pools[i].opts, c)),
                )
                .await;
                store.after_probes(&probes);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(nodes::PROBE_EVERY) => {}
                }
            }
        });
    }

    /// Probes every node once and fails when one that answers belongs to another cluster than
    /// the others, or is a plain server among Galera nodes: writing through it would split
    /// the store. Nodes that do not answer now are not judged.
    pub async fn verify_nodes(&self) -> Result<(), StoreError> {
        let mut conns: Vec<Option<Conn>> = (0..self.inner.pools.len()).map(|_| None).collect();
        let probes = futures_util::future::join_all(
            conns
                .iter_mut()
                .enumerate()
                .map(|(i, c)| probe_node(&self.inner.pools[i].opts, c)),
        )
        .await;
        self.after_probes(&probes);
        for c in conns.into_iter().flatten() {
            let _ = c.disconnect().await;
        }
        let nodes = &self.inner.nodes;
        let foreign: Vec<String> = (0..probes.len())
            .filter(|&i| nodes.health(i) == nodes::Health::Foreign)
            .map(|i| format!("#{i}"))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        let what = if nodes.is_galera() {
            "not a node of the Galera cluster the others belong to"
        } else {
            "a Galera node listed beside a plain server"
        };
        Err(StoreError::Schema(format!(
            "[controller] database: URL {} is {what}; list the nodes of one cluster, or one \
             server's addresses",
            foreign.join(", ")
        )))
    }

    fn after_probes(&self, probes: &[Option<nodes::Probe>]) {
        let nodes = &self.inner.nodes;
        for (i, p) in probes.iter().enumerate() {
            let before = nodes.health(i);
            let now = nodes.record(i, p.as_ref());
            if now != before && before != nodes::Health::Unknown {
                tracing::warn!(database = i, ?before, ?now, "database node changed state");
            }
            if now == nodes::Health::Foreign && before != now {
                tracing::error!(
                    database = i,
                    "database URL #{i} is not a node of the same cluster as the others; it is never used"
                );
            }
        }
        let current = self.inner.current.load(Ordering::Relaxed);
        let next = nodes.choose(current, std::time::Instant::now());
        if next != current {
            tracing::warn!(
                from = current,
                to = next,
                "switched to another database node"
            );
            self.inner.current.store(next, Ordering::Relaxed);
        }
    }

    /// A connection from the first database that answers, starting with the one that answered
    /// last.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        self.first_answering(|pool| pool.get_conn()).await
    }

    /// Starts a transaction on the first database that answers.
    pub async fn transaction(&self) -> Result<Transaction<'static>, StoreError> {
        self.first_answering(|pool| async move { pool.start_transaction(TxOpts::default()).await })
            .await
    }

    async fn first_answering<T, F, Fut>(&self, open: F) -> Result<T, StoreError>
    where
        F: Fn(Pool) -> Fut,
        Fut: Future<Output = Result<T, mysql_async::Error>>,
    {
        let n = self.inner.pools.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let nodes = &self.inner.nodes;
        // Nodes the watcher found ready (or not yet probed) first; when none is, every node
        // but a foreign one, in turn.
        let any_usable = (0..n).any(|i| nodes.health(i).usable());
        let mut last = String::new();
        for k in 0..n {
            let i = (start + k) % n;
            let health = nodes.health(i);
            if health == nodes::Health::Foreign || (any_usable && !health.usable()) {
                continue;
            }
            match self.open_on(i, &open).await {
                Ok(value) => {
                    if i != start {
                        tracing::warn!(database = i, "switched to another database URL");
                        self.inner.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(Miss::NoAnswer(why)) => last = why,
                Err(Miss::Busy(waited)) => {
                    return Err(StoreError::Busy {
                        database: i,
                        waited,
                    });
                }
            }
        }
        Err(StoreError::Unreachable { tried: n, last })
    }

    /// One attempt on database `i`. A connect that does not finish in time while every
    /// pooled connection is checked out is a wait for one of ours to come back, not a server
    /// that does not answer: it goes on waiting (in its place in the pool's queue) up to
    /// [`StoreTimeouts::pool_wait`].
    async fn open_on<T, F, Fut>(&self, i: usize, open: &F) -> Result<T, Miss>
    where
        F: Fn(Pool) -> Fut,
        Fut: Future<Output = Result<T, mysql_async::Error>>,
    {
        let pooled = &self.inner.pools[i];
        let t = self.inner.timeouts;
        let started = tokio::time::Instant::now();
        let attempt = open(pooled.pool.clone());
        tokio::pin!(attempt);
        loop {
            match tokio::time::timeout(t.connect, &mut attempt).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => return Err(Miss::NoAnswer(format!("database #{i}: {e}"))),
                Err(_) if pooled.all_in_use() => {
                    let waited = started.elapsed();
                    if waited >= t.pool_wait {
                        return Err(Miss::Busy(waited));
                    }
                    tracing::debug!(
                        database = i,
                        ?waited,
                        "every pooled connection is in use; waiting"
                    );
                }
                Err(_) => {
                    return Err(Miss::NoAnswer(format!(
                        "database #{i}: no answer within {:?}",
                        t.connect
                    )));
                }
            }
        }
    }

    /// Closes every pool, waiting for connections to be returned.
    pub async fn close(self) {
        if let Ok(inner) = std::sync::Arc::try_unwrap(self.inner) {
            for pooled in inner.pools {
                let _ = pooled.pool.disconnect().await;
            }
        }
    }
}

/// One probe of a node over the watcher's own connection `conn` (opened or re-opened as
/// needed): `None` when it does not answer within [`nodes::PROBE_TIMEOUT`].
async fn probe_node(opts: &Opts, conn: &mut Option<Conn>) -> Option<nodes::Probe> {
    use mysql_async::prelude::Queryable;
    let probe = async {
        if conn.is_none() {
            *conn = Some(Conn::new(opts.clone()).await?);
        }
        let c = conn.as_mut().expect("opened above");
        // Empty on a plain server; the three variables on a Galera node.
        let rows: Vec<(String, String)> = c
            .query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN \
                 ('wsrep_ready', 'wsrep_cluster_status', 'wsrep_cluster_state_uuid')",
            )
            .await?;
        Ok::<_, mysql_async::Error>(nodes::Probe::from_status(&rows))
    };
    match tokio::time::timeout(nodes::PROBE_TIMEOUT, probe).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "database probe failed");
            *conn = None;
            None
        }
        Err(_) => {
            // A hung server: drop the connection, open a new one next round.
            *conn = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The web pools are small whatever the URL says, so web traffic can hold no more than
    /// this many connections; the controller's pools keep the URL's size.
    #[test]
    fn the_web_pools_are_small_whatever_the_url_says() {
        let urls = [
            Secret::new("mysql://u:p@127.0.0.1:9/d?pool_max=100"),
            Secret::new("mysql://u:p@127.0.0.2:9/d"),
        ];
        let web = Store::for_web(&urls).unwrap();
        assert!(web.inner.pools.iter().all(|p| p.max == WEB_POOL_MAX));
        assert_eq!(web.timeouts().pool_wait, WEB_POOL_WAIT);
        let main = Store::new(&urls).unwrap();
        assert_eq!(main.inner.pools[0].max, 100);
        assert!(main.inner.pools[1].max > WEB_POOL_MAX);
    }
}
