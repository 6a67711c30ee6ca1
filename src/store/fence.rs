//! The epoch fence: one row holding the highest epoch that has taken control and the node it
//! names. A controller raises it when it takes over, and every write that matters runs in a
//! [`FencedTx`], which locks the row and aborts unless it still holds the writer's epoch and
//! node. A deposed controller that has not noticed yet therefore cannot write: the new one
//! raised the fence first.
//!
//! Every fenced transaction (a raise too) *writes* the row, first thing: it records its
//! session (`holder_connection = CONNECTION_ID()`, `holder_seq + 1`). That has two uses:
//!
//! - A successor blocked by a holder that froze, lost its host or its network (its session
//!   stays open on the server, holding the lock) can see who holds it: a dirty read on
//!   another session shows the uncommitted holder, and a `holder_seq` above the committed
//!   one proves the holder wrote it. [`raise`] ends that session with `KILL CONNECTION` when
//!   its epoch is older (any account may end its own sessions), and tries again; the lock
//!   wait is [`super::LOCK_WAIT_TIMEOUT_SECS`], so this takes seconds, not the server's
//!   `wait_timeout`.
//! - On a multi-primary cluster two overlapping fenced transactions write the same row, so
//!   certification refuses one of them instead of letting both through.

use mysql_async::Transaction;
use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::{Epoch, NodeId};

/// The outcome of [`raise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    /// The fence now holds our epoch.
    Raised,
    /// It already held our epoch for us (a restarted attempt of the same take-over).
    AlreadyHeld,
    /// A newer epoch holds it: we have been replaced and must not act.
    Superseded { stored: Epoch },
    /// Our epoch, but for another node: two nodes claim one epoch. Neither may take it from
    /// the other; this one must not act.
    HeldBy { node: NodeId },
}

/// The session that holds the fence row locked, as it recorded itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceHolder {
    /// The server's connection id (`CONNECTION_ID()`, what `KILL` takes).
    pub connection: u64,
    /// The epoch it writes for (for a raise in flight: the epoch it raises to).
    pub epoch: Epoch,
    pub node: NodeId,
}

/// For [`StoreError::FenceLocked`]'s message.
pub(crate) fn describe_holder(holder: Option<&FenceHolder>) -> String {
    match holder {
        Some(h) => format!(
            "connection {} (epoch {}, node {})",
            h.connection, h.epoch, h.node
        ),
        None => "a session that did not record itself".into(),
    }
}

/// MySQL's "Lock wait timeout exceeded".
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// MySQL's "Unknown thread id": the session has ended already.
const ER_NO_SUCH_THREAD: u16 = 1094;

/// How many stale holders one [`raise`] ends before it reports the fence locked.
const KILL_ATTEMPTS: usize = 3;

/// Locks the fence row by writing our session into it, then reads it (our own write, so the
/// latest committed values plus our mark). On a Galera node (`galera`), the statements first
/// wait until the node has applied every write the cluster committed before them
/// (`wsrep_sync_wait`), so a raise made through another node is seen, not merely refused
/// later by certification.
async fn lock_and_mark(
    tx: &mut Transaction<'static>,
    galera: bool,
) -> Result<(Epoch, NodeId), StoreError> {
    if galera {
        // 1: reads, 2: updates and deletes. Reset with the session when the connection
        // goes back to the pool.
        tx.query_drop("SET SESSION wsrep_sync_wait = 3").await?;
    }
    tx.query_drop(
        "UPDATE epoch_fence SET holder_connection = CONNECTION_ID(), holder_seq = holder_seq + 1 \
         WHERE id = 1",
    )
    .await?;
    let stored: Option<(u64, String)> = tx
        .query_first("SELECT epoch, controller FROM epoch_fence WHERE id = 1 FOR UPDATE")
        .await?;
    stored
        .map(|(epoch, node)| (Epoch(epoch), NodeId(node)))
        .ok_or_else(|| StoreError::Schema("epoch_fence has no row 1: run install.sql".into()))
}

/// Raises the fence to `epoch` for `controller` only if it is higher than the stored one.
/// The fence never goes down.
///
/// When the row stays locked past the lock wait by a session with an older epoch, that
/// session is ended and the raise tried again, all within a few seconds. Fails with
/// [`StoreError::FenceLocked`] when the holder cannot be ended: it has a newer or the same
/// epoch, it did not record itself, or `KILL` was refused. A caller retries that and alerts
/// the admin when it persists. Safe to repeat.
pub async fn raise(store: &Store, epoch: Epoch, controller: &NodeId) -> Result<Raise, StoreError> {
    store
        .bounded("raising the epoch fence", async {
            let mut ended = 0;
            let mut unknown = 0;
            loop {
                let err = match try_raise(store, epoch, controller).await {
                    Err(e) if e.server_code() == Some(ER_LOCK_WAIT_TIMEOUT) => e,
                    other => return other,
                };
                match holder(store).await? {
                    Some(h) if h.epoch < epoch && ended < KILL_ATTEMPTS => {
                        end_session(store, &h).await?;
                        ended += 1;
                        tracing::warn!(%epoch, holder_epoch = %h.epoch, holder_node = %h.node,
                            connection = h.connection, error = %err,
                            "ended the session of an older controller that held the epoch fence");
                    }
                    // The holder may have finished between our lock wait and the read: one
                    // more try before calling the holder unknown.
                    None if unknown == 0 => unknown += 1,
                    holder => return Err(StoreError::FenceLocked { holder }),
                }
            }
        })
        .await
}

async fn try_raise(store: &Store, epoch: Epoch, controller: &NodeId) -> Result<Raise, StoreError> {
    let mut tx = store.transaction().await?;
    let (stored, holder) = lock_and_mark(&mut tx, store.nodes().is_galera()).await?;
    let outcome = if stored < epoch {
        tx.exec_drop(
            "UPDATE epoch_fence SET epoch = ?, controller = ?, raised_at = CURRENT_TIMESTAMP(3) WHERE id = 1",
            (epoch.0, controller.0.as_str()),
        )
        .await?;
        Raise::Raised
    } else if stored > epoch {
        Raise::Superseded { stored }
    } else if holder == *controller {
        Raise::AlreadyHeld
    } else {
        Raise::HeldBy { node: holder }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Who holds the fence row now, read without waiting for the lock: the uncommitted row of a
/// holder that recorded itself (its `holder_seq` is above the committed one), or `None`.
pub async fn holder(store: &Store) -> Result<Option<FenceHolder>, StoreError> {
    let mut conn = store.conn().await?;
    conn.query_drop("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .await?;
    let dirty: Option<(u64, String, u64, u64)> = conn
        .query_first(
            "SELECT epoch, controller, holder_connection, holder_seq FROM epoch_fence WHERE id = 1",
        )
        .await?;
    let committed: Option<u64> = conn
        .query_first("SELECT holder_seq FROM epoch_fence WHERE id = 1")
        .await?;
    Ok(match (dirty, committed) {
        (Some((epoch, node, connection, seq)), Some(done)) if seq > done => Some(FenceHolder {
            connection,
            epoch: Epoch(epoch),
            node: NodeId(node),
        }),
        _ => None,
    })
}

/// Ends the holder's session, which rolls back its transaction and releases the row. A
/// session that has ended already is fine; a refusal (another account's session) is
/// [`StoreError::FenceLocked`].
async fn end_session(store: &Store, holder: &FenceHolder) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    // An integer, so nothing to escape; KILL takes no placeholders everywhere.
    match conn
        .query_drop(format!("KILL CONNECTION {}", holder.connection))
        .await
        .map_err(StoreError::from)
    {
        Ok(()) => Ok(()),
        Err(e) if e.server_code() == Some(ER_NO_SUCH_THREAD) => Ok(()),
        Err(e) => {
            tracing::warn!(connection = holder.connection, error = %e, "cannot end the fence holder's session");
            Err(StoreError::FenceLocked {
                holder: Some(holder.clone()),
            })
        }
    }
}

/// The epoch the fence holds now.
pub async fn current(store: &Store) -> Result<Epoch, StoreError> {
    store
        .bounded("reading the epoch fence", async {
            let mut conn = store.conn().await?;
            let stored: Option<u64> = conn
                .query_first("SELECT epoch FROM epoch_fence WHERE id = 1")
                .await?;
            stored.map(Epoch).ok_or_else(|| {
                StoreError::Schema("epoch_fence has no row 1: run install.sql".into())
            })
        })
        .await
}

/// A transaction that holds the fence row locked and has checked it still holds `epoch` for
/// its node. Write through [`FencedTx::tx`], then [`FencedTx::commit`]; dropping it rolls
/// everything back. While it is open, a newer controller's [`raise`] waits for it (or, when it
/// stays open past the lock wait, ends its session), so nothing it writes can land after a
/// take-over.
#[derive(Debug)]
pub struct FencedTx {
    tx: Transaction<'static>,
    epoch: Epoch,
    /// [`super::StoreTimeouts::operation`], for commit and rollback.
    bound: std::time::Duration,
}

impl FencedTx {
    /// Opens a transaction, locks the fence and records this session as its holder; fails
    /// with [`StoreError::Fenced`] (writing nothing) unless the fence holds `epoch` for
    /// `node`.
    pub async fn begin(store: &Store, epoch: Epoch, node: &NodeId) -> Result<FencedTx, StoreError> {
        store
            .bounded("opening a fenced transaction", async {
                let mut tx = store.transaction().await?;
                let (stored, holder) = lock_and_mark(&mut tx, store.nodes().is_galera()).await?;
                if stored != epoch || holder != *node {
                    tx.rollback().await?;
                    if stored == epoch {
                        tracing::warn!(%epoch, ours = %node, holder = %holder, "the fence holds our epoch for another node");
                    }
                    return Err(StoreError::Fenced {
                        ours: epoch,
                        stored,
                    });
                }
                Ok(FencedTx {
                    tx,
                    epoch,
                    bound: store.timeouts().operation,
                })
            })
            .await
    }

    /// The epoch this transaction writes for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The transaction, for the writes. Inside the crate only `store/` calls it (every write
    /// that matters is a typed method there); it stays public for the store's integration
    /// tests, which write raw SQL under the fence to test the fence itself.
    pub fn tx(&mut self) -> &mut Transaction<'static> {
        &mut self.tx
    }

    /// Commits every write made through [`FencedTx::tx`].
    pub async fn commit(self) -> Result<(), StoreError> {
        let after = self.bound;
        match tokio::time::timeout(after, self.tx.commit()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout {
                what: "committing a fenced transaction",
                after,
            }),
        }
    }

    /// Discards every write.
    pub async fn rollback(self) -> Result<(), StoreError> {
        let after = self.bound;
        match tokio::time::timeout(after, self.tx.rollback()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout {
                what: "rolling back a fenced transaction",
                after,
            }),
        }
    }
}
