//! The database away: when no database node has answered for `[controller] db_down_alert`,
//! the acting controller tells the admin by the channels that need no database (email and
//! the admin webhook), and again when a node answers.
//!
//! Rules:
//! 1. Only the acting controller opens the alert; it learns that the store is away from the
//!    store's watcher ([`crate::store::nodes`]), which probes every node each second.
//! 2. The alert is a group notice (`database_unreachable`, replicated by the viewserver
//!    group): a node tells the admin only when its claim changed the notice, so one outage
//!    is told once, whichever node sees it, across failovers. When no member answers the
//!    claim, the node tells anyway: twice beats never.
//! 3. The recovery is told by the node whose claim closes the notice: the one that opened
//!    it, or an acting controller that finds it open while the store answers (its opener is
//!    gone).
//! 4. Each message is retried on each channel ([`SEND_ATTEMPTS`]) in a task of its own; the
//!    meta-alert queue cannot hold it, being in the database.
//!
//! Flips decided meanwhile wait in the flip writer's queue (see `flips.rs`) and are written
//! and notified in order once the store answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ControllerHost, ControllerSlot};
use crate::notify::meta::{AlertEvent, AlertKind, Channel, MetaAlert};

/// The group notice's key.
pub const NOTICE: &str = "database_unreachable";
/// How often the store's state is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Attempts per message and channel.
const SEND_ATTEMPTS: u32 = 8;

/// What [`Watch::step`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Claim the notice open, and tell if the claim changed it.
    Open,
    /// Claim the notice closed, and tell the recovery if the claim changed it.
    Close,
}

/// The watch's memory: whether this node holds the notice open, and whether it has looked
/// for a notice left open by another node since it began to act.
#[derive(Debug, Default)]
pub struct Watch {
    opened: bool,
    checked_leftover: bool,
}

impl Watch {
    /// One look: `away` is how long no node has answered (`None`: one answers), `acting`
    /// whether this node acts as controller.
    pub fn step(&mut self, away: Option<Duration>, limit: Duration, acting: bool) -> Step {
        if !acting {
            self.checked_leftover = false;
        }
        match away {
            Some(d) if d >= limit && acting && !self.opened => {
                self.opened = true;
                self.checked_leftover = true;
                Step::Open
            }
            None if self.opened => {
                self.opened = false;
                Step::Close
            }
            None if acting && !self.checked_leftover => {
                self.checked_leftover = true;
                Step::Close
            }
            _ => Step::Nothing,
        }
    }
}

/// Runs the watch on a controller-capable worker until `shutdown`.
pub async fn run(host: Arc<ControllerHost>, slot: ControllerSlot, shutdown: CancellationToken) {
    let mut watch = Watch::default();
    let mut since_ms = 0i64;
    loop {
        let away = host
            .store
            .nodes()
            .unreachable_for(std::time::Instant::now());
        let step = watch.step(away, host.config.meta.db_down, slot.epoch().is_some());
        if step == Step::Open {
            let now_ms = crate::notify::unix_ms(std::time::SystemTime::now());
            since_ms = now_ms - away.map_or(0, |d| d.as_millis() as i64);
        }
        if step != Step::Nothing {
            claim_and_tell(&host, step, since_ms).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn claim_and_tell(host: &Arc<ControllerHost>, step: Step, since_ms: i64) {
    let open = step == Step::Open;
    let tell = match host.membership.claim_notice(NOTICE, open).await {
        Ok(changed) => changed,
        Err(e) => {
            tracing::warn!(error = %e, "the viewserver group did not answer a notice claim; telling anyway");
            // A recovery nobody claimed open is not worth a message.
            open
        }
    };
    if !tell {
        return;
    }
    let alert = MetaAlert {
        kind: AlertKind::DatabaseUnreachable,
        subject: String::new(),
        started_ms: since_ms,
        message: crate::notify::text::database_unreachable(
            host.config.meta.db_down,
            host.store.nodes().len(),
        ),
    };
    let event = if open {
        tracing::error!("no database node answers; telling the admin");
        AlertEvent::Opened
    } else {
        tracing::info!("a database node answers again; telling the admin");
        AlertEvent::Resolved
    };
    for channel in host.meta.channels() {
        let Some(channel) = Channel::parse(channel) else {
            continue;
        };
        let (host, alert) = (host.clone(), alert.clone());
        tokio::spawn(async move { send(&host, channel, &alert, event).await });
    }
}

/// Delivers one message on one channel, with retries.
async fn send(host: &ControllerHost, channel: Channel, alert: &MetaAlert, event: AlertEvent) {
    let mut wait = Duration::from_secs(2);
    for attempt in 1..=SEND_ATTEMPTS {
        match host.meta.attempt(channel, alert, event, &host.node.0).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(?channel, attempt, error = %e, "database alert not delivered yet");
            }
        }
        tokio::time::sleep_until(Instant::now() + wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    tracing::error!(?channel, "database alert not delivered after every attempt");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    fn s(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn an_outage_is_opened_once_after_the_limit_and_closed_once() {
        let mut w = Watch::default();
        // On taking over with the store answering: one look for a leftover notice.
        assert_eq!(w.step(None, LIMIT, true), Step::Close);
        assert_eq!(w.step(None, LIMIT, true), Step::Nothing);
        assert_eq!(w.step(s(10), LIMIT, true), Step::Nothing);
        assert_eq!(w.step(s(30), LIMIT, true), Step::Open);
        assert_eq!(w.step(s(31), LIMIT, true), Step::Nothing);
        assert_eq!(w.step(s(90), LIMIT, true), Step::Nothing);
        assert_eq!(w.step(None, LIMIT, true), Step::Close);
        assert_eq!(w.step(None, LIMIT, true), Step::Nothing);
    }

    #[test]
    fn only_the_acting_controller_opens_and_its_opener_closes_after_stepping_down() {
        let mut standby = Watch::default();
        assert_eq!(standby.step(s(100), LIMIT, false), Step::Nothing);
        assert_eq!(standby.step(None, LIMIT, false), Step::Nothing);
        let mut w = Watch::default();
        assert_eq!(w.step(s(40), LIMIT, true), Step::Open);
        // It steps down while the store is away; it still closes what it opened.
        assert_eq!(w.step(s(50), LIMIT, false), Step::Nothing);
        assert_eq!(w.step(None, LIMIT, false), Step::Close);
        // Acting again later: it looks for a leftover once more.
        assert_eq!(w.step(None, LIMIT, true), Step::Close);
    }
}
