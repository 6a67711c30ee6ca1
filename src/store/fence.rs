//! The epoch fence: one row holding the highest epoch that has taken control. A controller
//! raises it when it takes over, and every write that matters runs in a [`FencedTx`], which
//! locks the row and aborts unless it still holds the writer's epoch. A deposed controller
//! that has not noticed yet therefore cannot write: the new one raised the fence first.

use mysql_async::Transaction;
use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::{Epoch, NodeId};

/// The outcome of [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// The fence now holds our epoch.
    Raised,
    /// It already held our epoch (a restarted attempt of the same take-over).
    AlreadyHeld,
    /// A newer epoch holds it: we have been replaced and must not act.
    Superseded { stored: Epoch },
}

const LOCK_FENCE: &str = "SELECT epoch FROM epoch_fence WHERE id = 1 FOR UPDATE";

async fn locked_epoch(tx: &mut Transaction<'static>) -> Result<Epoch, StoreError> {
    let stored: Option<u64> = tx.query_first(LOCK_FENCE).await?;
    stored
        .map(Epoch)
        .ok_or_else(|| StoreError::Schema("epoch_fence has no row 1: run install.sql".into()))
}

/// Raises the fence to `epoch` only if it is higher than the stored one. The fence never goes
/// down.
pub async fn raise(store: &Store, epoch: Epoch, controller: &NodeId) -> Result<Raise, StoreError> {
    let mut tx = store.transaction().await?;
    let stored = locked_epoch(&mut tx).await?;
    let outcome = if stored < epoch {
        tx.exec_drop(
            "UPDATE epoch_fence SET epoch = ?, controller = ?, raised_at = CURRENT_TIMESTAMP(3) WHERE id = 1",
            (epoch.0, controller.0.as_str()),
        )
        .await?;
        Raise::Raised
    } else if stored == epoch {
        Raise::AlreadyHeld
    } else {
        Raise::Superseded { stored }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The epoch the fence holds now.
pub async fn current(store: &Store) -> Result<Epoch, StoreError> {
    let mut conn = store.conn().await?;
    let stored: Option<u64> = conn
        .query_first("SELECT epoch FROM epoch_fence WHERE id = 1")
        .await?;
    stored
        .map(Epoch)
        .ok_or_else(|| StoreError::Schema("epoch_fence has no row 1: run install.sql".into()))
}

/// A transaction that holds the fence row locked and has checked it still holds `epoch`.
/// Write through [`FencedTx::tx`], then [`FencedTx::commit`]; dropping it rolls everything
/// back. While it is open, a newer controller's [`raise`] waits, so nothing it writes can
/// land after a take-over.
#[derive(Debug)]
pub struct FencedTx {
    tx: Transaction<'static>,
    epoch: Epoch,
}

impl FencedTx {
    /// Opens a transaction and locks the fence; fails with [`StoreError::Fenced`] (writing
    /// nothing) when the stored epoch is not `epoch`.
    pub async fn begin(store: &Store, epoch: Epoch) -> Result<FencedTx, StoreError> {
        let mut tx = store.transaction().await?;
        let stored = locked_epoch(&mut tx).await?;
        if stored != epoch {
            tx.rollback().await?;
            return Err(StoreError::Fenced {
                ours: epoch,
                stored,
            });
        }
        Ok(FencedTx { tx, epoch })
    }

    /// The epoch this transaction writes for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The transaction, for the writes.
    pub fn tx(&mut self) -> &mut Transaction<'static> {
        &mut self.tx
    }

    /// Commits every write made through [`FencedTx::tx`].
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Discards every write.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
