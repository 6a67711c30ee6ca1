//! The alert policy task of a term: every [`TICK`], reads the durable policy state of the
//! checks with policy rows ([`crate::store::policy::load`]), asks the rules
//! ([`crate::policy::due`]) what is due, and writes it to the outbox under the fence. All
//! pending state (held notices, escalations, reminders) is derived from MySQL each time, so
//! the next controller after a failover carries on where this one stopped, and the unique key
//! of the outbox rows means nothing is written twice.

use std::collections::HashSet;
use std::time::Duration;

use super::term::TermHandle;
use crate::notify::admin::AdminKind;
use crate::notify::outbox::WakeHandle;
use crate::store::StoreError;
use crate::store::policy::{self, Loaded, PolicyRow};

/// How often the task looks for due sends.
const TICK: Duration = Duration::from_secs(1);
/// Failed rounds in a row before the admin is told.
const TELL_AFTER: u32 = 30;

pub(super) async fn run(term: TermHandle, outbox: WakeHandle) {
    let mut failures = 0u32;
    let mut told_bad: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if !term.may_act() {
            continue;
        }
        match round(&term, &mut told_bad).await {
            Ok(added) => {
                failures = 0;
                if added > 0 {
                    outbox.wake();
                }
            }
            Err(StoreError::Fenced { ours, stored }) => {
                tracing::error!(%ours, %stored, "policy fenced: a newer controller took over");
                term.host().membership.report_fenced_out(ours.0, stored.0);
                term.token.cancel();
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "alert policy round failed");
                if failures == TELL_AFTER {
                    term.host().tell_admin(
                        AdminKind::ReloadErrors,
                        format!(
                            "The alert policy task failed {failures} times in a row: {e}\n\
                             Held, escalated and reminder notifications are not sent until it \
                             succeeds again (nothing is lost: they are derived from the database).\n"
                        ),
                    );
                }
            }
        }
    }
}

async fn round(term: &TermHandle, told_bad: &mut HashSet<String>) -> Result<u64, StoreError> {
    let host = term.host();
    let now = policy::now_ms(&host.store).await?;
    let snapshot = policy::load(&host.store, now, host.config.flap).await?;
    for problem in &snapshot.refused {
        if told_bad.insert(problem.clone()) {
            tracing::error!(%problem, "check_dependencies row refused");
            host.tell_admin_subject(
                format!("gobearmon: {problem}"),
                format!(
                    "A check_dependencies row is refused: {problem}\n\
                     The other rows still apply; the checks of the refused rows are notified \
                     as if the row did not exist.\n"
                ),
            );
        }
    }
    let mut sends = Vec::new();
    let mut unflap = snapshot.not_flapping.clone();
    for l in &snapshot.checks {
        for bad in &l.bad_windows {
            if told_bad.insert(bad.clone()) {
                tracing::error!(check = %l.check, problem = %bad, "maintenance row ignored");
                host.tell_admin(
                    AdminKind::ReloadErrors,
                    format!("A maintenance window is ignored: {bad}\n"),
                );
            }
        }
        let due = crate::policy::due(&l.state, now);
        let unsent = crate::policy::decide::unsent(&l.state, now, &due);
        // A flapping candidate stable for its window, with its state told: no longer one.
        if l.flap_only
            && due.is_empty()
            && unsent.is_empty()
            && let (Some(ep), Some(latest)) = (l.state.flap.latest, l.state.latest)
            && now >= ep.stable_at
        {
            unflap.push((l.check, latest.id));
        }
        for send in due {
            sends.push(PolicyRow {
                send,
                notification: policy::notification(l, &send, now),
                state: "pending",
                reason: sent_reason(l, &send),
            });
        }
        for d in unsent {
            let reason = d.verdict.reason(crate::notify::text::rfc3339_ms);
            let key = (d.send.event, d.send.contact, d.send.slot);
            let recorded = l.recorded.get(&key);
            if recorded.is_some_and(|(s, r)| s == d.verdict.state() && r.as_ref() == Some(&reason))
            {
                continue;
            }
            sends.push(PolicyRow {
                send: d.send,
                notification: policy::notification(l, &d.send, now),
                state: d.verdict.state(),
                reason: Some(reason),
            });
        }
    }
    if !term.may_act() {
        return Ok(0);
    }
    let added = policy::write(
        &host.store,
        term.epoch,
        &host.node,
        &sends,
        &snapshot.superseded,
        &unflap,
    )
    .await?;
    if added > 0 {
        tracing::info!(added, "alert policy sends written");
    }
    Ok(added)
}

/// Why a send of the policy task goes out, for its row's `reason` (`None`: the flip's own
/// notice, as without policy; one released from a hold keeps the hold's reason).
fn sent_reason(l: &Loaded, send: &crate::policy::Send) -> Option<String> {
    if send.slot == crate::policy::flap::FLAP_SLOT {
        Some("flapping: one message, then none until stable".into())
    } else if send.slot > 0 {
        Some(format!("reminder {}", send.slot))
    } else if l.state.flap.latest.is_some() {
        Some("stable after flapping: the current state".into())
    } else {
        None
    }
}
