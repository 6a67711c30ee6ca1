//! Push checks in a term: the loop that reads what jobs pushed (`check_pushes`) and hands it
//! to the owner, which judges it with [`crate::push::PushBook`] and sends the flips down the
//! same fenced path as voted flips ([`super::flips`]).
//!
//! - Every [`POLL`] the rows pushed since the last read (less an overlap, for writes that
//!   commit late) are read; every [`FULL_EVERY`] all of them, and the rows of checks that are
//!   no longer push checks are deleted.
//! - Deadlines are judged only on reads that succeeded, so a database that cannot be read
//!   makes no check offline; after [`ALERT_AFTER`] failed reads in a row (and every as many
//!   after) the admin is told that push checks are not being judged.
//! - Push checks are never handed to workers: they are kept out of the voting engine.

use std::time::Duration;

use tokio::time::Instant;

use super::owner::Msg;
use super::term::TermHandle;
use crate::model::CheckRow;
use crate::notify::admin::AdminKind;
use crate::probe::PushSpec;
use crate::push::PushBook;
use crate::store::push as store_push;

/// How often pushes are read.
pub(super) const POLL: Duration = Duration::from_secs(1);
/// How often every row is read (and stale rows pruned).
const FULL_EVERY: Duration = Duration::from_secs(30);
/// Rows whose latest push is this much older than the newest seen are read again.
const OVERLAP_MS: i64 = 5_000;
/// Failed reads in a row before the admin is told (and again every as many).
const ALERT_AFTER: u32 = 10;

/// Whether `row` is a push check (kept out of the voting engine).
pub(super) fn is_push(row: &CheckRow) -> bool {
    row.check_type == "push"
}

/// Watches `row`, a push check, in `book`. Rows whose data does not parse never reach the
/// catalog (`store/rows.rs` skips and reports them).
pub(super) fn watch(book: &mut PushBook, row: &CheckRow, now: Instant) {
    let Ok(spec) = PushSpec::parse(&row.data) else {
        book.remove(row.id);
        return;
    };
    let interval = Duration::from_secs(u64::try_from(row.interval_secs).unwrap_or(0));
    book.upsert(
        row.id,
        interval,
        Duration::from_secs(spec.grace_secs),
        row.status,
        now,
    );
}

/// Reads pushes and hands them to the owner until the term ends.
pub(super) async fn poll_loop(term: TermHandle) {
    let mut cursor: Option<i64> = None;
    let mut last_full: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        if !term.may_act() {
            continue;
        }
        let read_at = Instant::now();
        let full = last_full.is_none_or(|t| read_at.duration_since(t) >= FULL_EVERY);
        let since = if full {
            None
        } else {
            cursor.map(|c| c.saturating_sub(OVERLAP_MS))
        };
        let store = &term.host().store;
        match store_push::read(store, since).await {
            Ok(rows) => {
                failures = 0;
                if let Some(newest) = rows.iter().map(|r| r.last_ms).max() {
                    cursor = Some(cursor.map_or(newest, |c| c.max(newest)));
                }
                if full {
                    last_full = Some(read_at);
                    match store_push::prune(store).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "pushes of former push checks deleted"),
                        Err(e) => tracing::debug!(error = %e, "could not prune pushes"),
                    }
                }
                if !term.tell(Msg::Pushes { rows, read_at }).await {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "cannot read pushes");
                if failures.is_multiple_of(ALERT_AFTER) {
                    term.host().tell_admin(
                        AdminKind::ReloadErrors,
                        format!(
                            "{failures} successive reads of check_pushes failed, so push checks \
                             are not being judged (none goes offline for want of pushes until \
                             a read succeeds). Last error: {e}\n"
                        ),
                    );
                }
            }
        }
    }
}
