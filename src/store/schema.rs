//! The schema in `install.sql`, embedded so the binary and the tests apply exactly the file
//! operators run.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};

/// The text of `install.sql` at the repository root.
pub const INSTALL_SQL: &str = include_str!("../../install.sql");

/// The tables a usable database has (gobearmon's five and the new ones).
pub const TABLES: &[&str] = &[
    "checks",
    "contacts",
    "alerts",
    "check_events",
    "charges",
    "epoch_fence",
    "notification_outbox",
    "check_results",
    "config_changes",
    "result_history",
    "result_rollups",
    "history_cursor",
    "check_pushes",
    "canaries",
    "meta_alerts",
    "controller_alive",
    "meta_alert_deliveries",
    "maintenance",
    "incident_acks",
    "check_dependencies",
    "flapping_checks",
    "web_users",
    "web_sessions",
    "status_pages",
    "status_page_checks",
];

/// Applies `install.sql`. Idempotent: safe on an empty database, on an installed one, and on a
/// database made by gobearmon's original schema (which it upgrades, keeping every row).
pub async fn install(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    conn.query_drop(INSTALL_SQL).await?;
    Ok(())
}

/// Fails with a clear message when a table of the schema is missing.
pub async fn verify(store: &Store) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    let present: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
        .await?;
    let missing: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| !present.iter().any(|p| p.eq_ignore_ascii_case(t)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "missing table(s) {}: run install.sql on this database",
            missing.join(", ")
        )))
    }
}
