//! The latest result of each check from each worker (`check_results`), written in batches.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::{CheckId, Epoch, NodeId};

/// Characters of a message kept in `check_results.message` (a `VARCHAR(1024)`).
const MESSAGE_CHARS: usize = 1024;

/// Rows per statement.
const ROWS_PER_STATEMENT: usize = 500;

/// One worker's latest result of one check.
#[derive(Debug, Clone)]
pub struct LatestResult {
    pub check: CheckId,
    pub node: NodeId,
    /// The worker's location, or its node id when it has none.
    pub location: String,
    /// `online`, `offline` or `fail`.
    pub status: &'static str,
    pub message: String,
    pub duration_ms: u64,
}

/// Writes (inserts or replaces) the latest results, tagged with the writer's epoch.
pub async fn write_latest(
    store: &Store,
    epoch: Epoch,
    batch: &[LatestResult],
) -> Result<(), StoreError> {
    store
        .bounded("writing the latest results", write(store, epoch, batch))
        .await
}

async fn write(store: &Store, epoch: Epoch, batch: &[LatestResult]) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO check_results (check_id, node_id, location, status, message, duration_ms, epoch) VALUES ",
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 7);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
            let message: String = r.message.chars().take(MESSAGE_CHARS).collect();
            params.extend([
                r.check.0.into(),
                r.node.0.clone().into(),
                r.location.chars().take(64).collect::<String>().into(),
                r.status.into(),
                message.into(),
                r.duration_ms.min(i32::MAX as u64).into(),
                epoch.0.into(),
            ]);
        }
        sql.push_str(
            " ON DUPLICATE KEY UPDATE location = VALUES(location), status = VALUES(status), message = VALUES(message), \
             duration_ms = VALUES(duration_ms), epoch = VALUES(epoch), updated_at = CURRENT_TIMESTAMP(3)",
        );
        conn.exec_drop(sql, mysql_async::Params::Positional(params))
            .await?;
    }
    Ok(())
}
