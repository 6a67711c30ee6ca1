//! Dashboard users and sessions (`web_users`, `web_sessions`) and the checks' `enabled` flag
//! as the dashboard's pause and resume write it.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::CheckId;

/// A dashboard role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads every page.
    Viewer,
    /// Also pauses, resumes, acknowledges and sends test notifications.
    Operator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// A user as the login form needs it.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
}

/// A live session's user and its CSRF token.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

/// Adds `name` with `role`, or replaces its hash and role when it exists (a password reset).
/// Returns whether it was new.
pub async fn upsert_user(
    store: &Store,
    name: &str,
    password_hash: &str,
    role: Role,
) -> Result<bool, StoreError> {
    let mut conn = store.conn().await?;
    conn.exec_drop(
        "INSERT INTO web_users (name, password_hash, role) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE password_hash = VALUES(password_hash), role = VALUES(role)",
        (name, password_hash, role.as_str()),
    )
    .await?;
    // 1: inserted, 2: updated, 0: the same values again.
    Ok(conn.affected_rows() == 1)
}

pub async fn user_by_name(store: &Store, name: &str) -> Result<Option<User>, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<(i64, String, String, String)> = conn
        .exec_first(
            "SELECT id, name, password_hash, role FROM web_users WHERE name = ?",
            (name,),
        )
        .await?;
    Ok(row.map(|(id, name, password_hash, role)| User {
        id,
        name,
        password_hash,
        // An unknown role reads as the lesser one.
        role: Role::parse(&role).unwrap_or(Role::Viewer),
    }))
}

/// Stores a session by the digest of its token, stamped with the password hash the login was
/// checked against: [`session`] honours it only while the user's hash is still that one.
pub async fn create_session(
    store: &Store,
    token_sha256: &[u8; 32],
    user: &User,
    csrf: &str,
    lifetime_secs: i64,
) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    conn.exec_drop(
        "DELETE FROM web_sessions WHERE expires_at < CURRENT_TIMESTAMP(3)",
        (),
    )
    .await?;
    conn.exec_drop(
        "INSERT INTO web_sessions (token_sha256, user_id, csrf, expires_at, password_stamp) \
         VALUES (?, ?, ?, CURRENT_TIMESTAMP(3) + INTERVAL ? SECOND, SHA2(?, 256))",
        (
            token_sha256.as_slice(),
            user.id,
            csrf,
            lifetime_secs,
            &user.password_hash,
        ),
    )
    .await?;
    Ok(())
}

/// The unexpired session with this token digest, while its user's password is the one it
/// began under.
pub async fn session(
    store: &Store,
    token_sha256: &[u8; 32],
) -> Result<Option<SessionUser>, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<(i64, String, String, String)> = conn
        .exec_first(
            "SELECT u.id, u.name, u.role, s.csrf FROM web_sessions s \
             JOIN web_users u ON u.id = s.user_id \
             WHERE s.token_sha256 = ? AND s.expires_at > CURRENT_TIMESTAMP(3) \
             AND s.password_stamp = SHA2(u.password_hash, 256)",
            (token_sha256.as_slice(),),
        )
        .await?;
    Ok(row.map(|(user_id, name, role, csrf)| SessionUser {
        user_id,
        name,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        csrf,
    }))
}

pub async fn delete_session(store: &Store, token_sha256: &[u8; 32]) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    conn.exec_drop(
        "DELETE FROM web_sessions WHERE token_sha256 = ?",
        (token_sha256.as_slice(),),
    )
    .await?;
    Ok(())
}

/// Sets `checks.enabled`; false when there is no such check.
pub async fn set_enabled(store: &Store, check: CheckId, enabled: bool) -> Result<bool, StoreError> {
    let mut conn = store.conn().await?;
    let exists: Option<i64> = conn
        .exec_first("SELECT id FROM checks WHERE id = ?", (check.0,))
        .await?;
    if exists.is_none() {
        return Ok(false);
    }
    conn.exec_drop(
        "UPDATE checks SET enabled = ? WHERE id = ?",
        (i32::from(enabled), check.0),
    )
    .await?;
    Ok(true)
}

/// A public status page (`status_pages`).
#[derive(Debug, Clone)]
pub struct StatusPage {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub description: String,
}

/// A check on a status page (`status_page_checks`), in display order.
#[derive(Debug, Clone)]
pub struct PageCheck {
    pub check: CheckId,
    pub group: String,
    /// The name shown; empty: the check's own name.
    pub display_name: String,
}

pub async fn status_page(store: &Store, slug: &str) -> Result<Option<StatusPage>, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<(i64, String, String, String)> = conn
        .exec_first(
            "SELECT id, slug, title, description FROM status_pages WHERE slug = ?",
            (slug,),
        )
        .await?;
    Ok(row.map(|(id, slug, title, description)| StatusPage {
        id,
        slug,
        title,
        description,
    }))
}

pub async fn page_checks(store: &Store, page: i64) -> Result<Vec<PageCheck>, StoreError> {
    let mut conn = store.conn().await?;
    let rows: Vec<(i64, String, String)> = conn
        .exec(
            "SELECT check_id, group_name, display_name FROM status_page_checks \
             WHERE page_id = ? ORDER BY group_name, sort_order, check_id",
            (page,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(check, group, display_name)| PageCheck {
            check: CheckId(check),
            group,
            display_name,
        })
        .collect())
}

/// Whether `check` is on some public status page (only those have badges).
pub async fn is_public(store: &Store, check: CheckId) -> Result<bool, StoreError> {
    let mut conn = store.conn().await?;
    let row: Option<i64> = conn
        .exec_first(
            "SELECT check_id FROM status_page_checks WHERE check_id = ? LIMIT 1",
            (check.0,),
        )
        .await?;
    Ok(row.is_some())
}

/// `checks.type` and `checks.data` of `check`, for its parameters as the dashboard shows them
/// (redacted; the raw text never leaves the server).
pub async fn check_definition(
    store: &Store,
    check: CheckId,
) -> Result<Option<(String, String)>, StoreError> {
    let mut conn = store.conn().await?;
    Ok(conn
        .exec_first("SELECT type, data FROM checks WHERE id = ?", (check.0,))
        .await?)
}
