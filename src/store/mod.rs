//! MySQL/MariaDB access for the controller (mysql_async over rustls).
//!
//! - [`Store`]: one pool per configured URL, tried in turn when one is down.
//! - [`schema`]: the embedded `install.sql`, applied idempotently.
//! - [`rows`]: lenient decoding of `checks`, `contacts` and `alerts` rows: a bad row is kept and
//!   reported, never a crash.
//! - [`catalog`]: the in-memory copy of the operator's rows, kept current by reading only what
//!   the change log says changed.
//! - [`fence`]: the epoch fence that stops a deposed controller from writing.
//! - [`outbox`]: the notification outbox's rows: enqueue inside a flip's fenced transaction,
//!   claim due rows, record attempts, report failures, charges.
//!
//! Only the controller opens the database; probe-only workers never need credentials.

pub mod catalog;
pub mod fence;
pub mod outbox;
pub mod rows;

pub mod schema;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, Transaction, TxOpts};

use crate::config::Secret;
use crate::model::Epoch;

/// How long one attempt to reach one database may take before the next URL is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No configured database answered. Worth retrying later.
    #[error("no database reachable ({tried} tried): {last}")]
    Unreachable { tried: usize, last: String },
    /// A query failed. Usually worth retrying (deadlock, lost connection); a schema problem is
    /// not, and says so in the message.
    #[error("database error: {0}")]
    Query(#[from] mysql_async::Error),
    /// The fence holds another epoch: this controller has been replaced. Never retry; stop
    /// acting as controller.
    #[error("fenced: this controller acts for epoch {ours}, the database holds epoch {stored}")]
    Fenced { ours: Epoch, stored: Epoch },
    /// The database is not in the expected shape (install.sql not applied).
    #[error("database schema problem: {0}")]
    Schema(String),
}

impl StoreError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. } | StoreError::Query(_))
    }
}

/// Database URLs parsed and pooled. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pools: Vec<Pool>,
    /// Index of the pool that answered last; tried first.
    current: AtomicUsize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("databases", &self.inner.pools.len())
            .finish()
    }
}

impl Store {
    /// Prepares pools for every URL; connects lazily. Fails only on an unparsable URL (the
    /// config reader has already checked them, so this names the position, not the URL).
    pub fn new(urls: &[Secret]) -> Result<Store, StoreError> {
        crate::tlsutil::install_default_provider();
        let mut pools = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let opts = Opts::from_url(url.expose()).map_err(|_| {
                StoreError::Schema(format!("database URL #{i} is not a valid mysql:// URL"))
            })?;
            let opts = OptsBuilder::from_opts(opts)
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .prefer_socket(false);
            pools.push(Pool::new(opts));
        }
        if pools.is_empty() {
            return Err(StoreError::Schema("no database URL configured".into()));
        }
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                pools,
                current: AtomicUsize::new(0),
            }),
        })
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
        Fut: std::future::Future<Output = Result<T, mysql_async::Error>>,
    {
        let n = self.inner.pools.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for k in 0..n {
            let i = (start + k) % n;
            match tokio::time::timeout(CONNECT_TIMEOUT, open(self.inner.pools[i].clone())).await {
                Ok(Ok(value)) => {
                    if i != start {
                        tracing::warn!(database = i, "switched to another database URL");
                        self.inner.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Ok(Err(e)) => last = format!("database #{i}: {e}"),
                Err(_) => last = format!("database #{i}: no answer within {CONNECT_TIMEOUT:?}"),
            }
        }
        Err(StoreError::Unreachable { tried: n, last })
    }

    /// Closes every pool, waiting for connections to be returned.
    pub async fn close(self) {
        if let Ok(inner) = std::sync::Arc::try_unwrap(self.inner) {
            for pool in inner.pools {
                let _ = pool.disconnect().await;
            }
        }
    }
}
