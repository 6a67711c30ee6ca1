//! Push checks in MySQL: the enabled push checks and their tokens (read by the web face to
//! recognise a push), and `check_pushes`, one row per check counting what its job reported
//! (written by whichever controller-capable worker received a push, read by the acting
//! controller).
//!
//! A push is an input, like a worker's result: it is recorded without the epoch fence, so a
//! push is never lost to a change of controller. Times are the database's clock, so the nodes'
//! clocks never meet in one comparison.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::CheckId;
pub use crate::push::PushRow;

/// Characters of a failure message kept (`check_pushes.fail_message` is a `VARCHAR(1024)`).
const MESSAGE_CHARS: usize = 1024;

/// The database's clock in Unix milliseconds, as SQL.
const DB_NOW_MS: &str = "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)";

/// Every enabled push check: its id and its `data` (which holds the token).
pub async fn push_checks(store: &Store) -> Result<Vec<(CheckId, String)>, StoreError> {
    store
        .bounded("reading the push checks", async {
            let mut conn = store.conn().await?;
            let rows: Vec<(i64, Option<String>)> = conn
                .query("SELECT id, data FROM checks WHERE type = 'push' AND enabled = 1")
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, data)| (CheckId(id), data.unwrap_or_default()))
                .collect())
        })
        .await
}

/// The `data` of check `check`, if it exists.
pub async fn data_of(store: &Store, check: CheckId) -> Result<Option<String>, StoreError> {
    store
        .bounded("reading a check's data", async {
            let mut conn = store.conn().await?;
            let data: Option<Option<String>> = conn
                .exec_first("SELECT data FROM checks WHERE id = ?", (check.0,))
                .await?;
            Ok(data.map(Option::unwrap_or_default))
        })
        .await
}

/// Records one push of `check`: a success, or a failure with `message`.
pub async fn record(
    store: &Store,
    check: CheckId,
    ok: bool,
    message: &str,
) -> Result<(), StoreError> {
    let message: String = if ok {
        String::new()
    } else {
        message.chars().take(MESSAGE_CHARS).collect()
    };
    let fail = u64::from(!ok);
    store
        .bounded("recording a push", async {
            let mut conn = store.conn().await?;
            conn.exec_drop(
                format!(
                    "INSERT INTO check_pushes (check_id, last_ms, last_ok, pushes, fails, fail_message) \
                     VALUES (?, {DB_NOW_MS}, ?, 1, ?, ?) \
                     ON DUPLICATE KEY UPDATE last_ms = VALUES(last_ms), last_ok = VALUES(last_ok), \
                     pushes = pushes + 1, fails = fails + VALUES(fails), \
                     fail_message = IF(VALUES(last_ok), fail_message, VALUES(fail_message))"
                ),
                (check.0, ok, fail, message),
            )
            .await?;
            Ok(())
        })
        .await
}

/// The rows whose latest push arrived at or after `since_ms` (every row when `None`).
pub async fn read(store: &Store, since_ms: Option<i64>) -> Result<Vec<PushRow>, StoreError> {
    store
        .bounded("reading pushes", async {
            let mut conn = store.conn().await?;
            type Raw = (i64, u64, u64, bool, String, i64, i64);
            let sql = format!(
                "SELECT check_id, pushes, fails, last_ok, fail_message, last_ms, {DB_NOW_MS} \
                 FROM check_pushes WHERE last_ms >= ?"
            );
            let rows: Vec<Raw> = conn.exec(sql, (since_ms.unwrap_or(i64::MIN),)).await?;
            Ok(rows
                .into_iter()
                .map(
                    |(check, pushes, fails, last_ok, fail_message, last_ms, now)| PushRow {
                        check: CheckId(check),
                        pushes,
                        fails,
                        last_ok,
                        fail_message,
                        age_ms: u64::try_from(now.saturating_sub(last_ms)).unwrap_or(0),
                        last_ms,
                    },
                )
                .collect())
        })
        .await
}

/// Deletes the rows of checks that are no longer push checks (deleted, or retyped).
pub async fn prune(store: &Store) -> Result<u64, StoreError> {
    store
        .bounded("pruning pushes", async {
            let mut conn = store.conn().await?;
            conn.query_drop(
                "DELETE FROM check_pushes WHERE check_id NOT IN \
                 (SELECT id FROM checks WHERE type = 'push')",
            )
            .await?;
            Ok(conn.affected_rows())
        })
        .await
}
