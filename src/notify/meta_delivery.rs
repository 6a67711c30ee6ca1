//! Delivering the queued meta-alerts (`meta_alert_deliveries`, [`crate::store::meta_queue`])
//! as durably as contacts' notifications.
//!
//! Every controller-capable worker runs one [`MetaDelivery`], acting or not: the no-controller
//! alert is raised exactly when no controller acts, and a pending alert must survive the
//! failover of the node that raised it. Rules:
//!
//! 1. A round claims up to [`BATCH`] due rows for a lease long enough for one attempt each
//!    (they run at once, each bounded by `delivery_timeout`), so two nodes never attempt the
//!    same row at once.
//! 2. Each row is one channel of one alert event: email and webhook succeed or fail apart,
//!    and a channel that took the alert is not sent it again because the other failed.
//! 3. A failed attempt is retried after the outbox's backoff (`delivery_backoff` doubling up
//!    to `delivery_backoff_max`) until `delivery_attempts` are used up ([`judge`]); then the
//!    row is `failed` and the admin is told by mail (a webhook that refused for good) or by
//!    an ERROR log line (a mail that could not be sent: no other way is left).
//! 4. An attempt whose claim ran out before it was recorded (a database slower than the
//!    lease) may be made again by another node: at least once, never lost. The webhook's
//!    `Idempotency-Key` lets a receiver drop the repeat.
//!
//! Rounds run every [`POLL_EVERY`], at once when this node queued an alert (`wake`), and again
//! at once after a round that found rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::admin::AdminNotifier;
use super::meta::{AlertEvent, AlertKind, Channel, MetaAlert, MetaNotifier};
use super::outbox::Dispatcher;
use crate::config::DeliveryConfig;
use crate::store::meta_queue::{self, Delivery, Outcome};
use crate::store::outbox::ClaimToken;
use crate::store::{Store, StoreError};

/// Rows claimed per round at most.
pub const BATCH: usize = 16;
/// How often a node looks for due rows it did not queue itself (retries, and alerts queued by
/// a node that then died): short, as the query is one indexed read.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the deliveries of this node came to, for `/metrics`.
#[derive(Debug, Default)]
pub struct MetaStats {
    /// Deliveries that a channel took.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retried or given up).
    pub attempts_failed: AtomicU64,
    /// Deliveries given up (attempts used up).
    pub failed: AtomicU64,
}

/// What to record after an attempt: `attempts_before` were made before this one.
pub fn judge(config: &DeliveryConfig, attempts_before: u32, result: Result<(), String>) -> Outcome {
    let made = attempts_before.saturating_add(1);
    match result {
        Ok(()) => Outcome::Sent,
        Err(error) if made >= config.attempts => Outcome::Failed { error },
        Err(error) => Outcome::Retry {
            wait: Dispatcher::backoff(config, made),
            error,
        },
    }
}

/// The claim's lease: one attempt (the batch runs at once) with room for the database.
fn lease(config: &DeliveryConfig) -> Duration {
    config.timeout.saturating_mul(2) + Duration::from_secs(10)
}

/// One node's delivery of the queued meta-alerts.
pub struct MetaDelivery {
    pub store: Store,
    pub node: String,
    pub notifier: Arc<MetaNotifier>,
    /// For the notice that a webhook refused an alert for good.
    pub admin: Arc<AdminNotifier>,
    pub config: DeliveryConfig,
    pub stats: Arc<MetaStats>,
    /// Notified when this node queued an alert.
    pub wake: Arc<Notify>,
}

impl MetaDelivery {
    /// Delivers until `shutdown`. A database that does not answer is retried every round.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let found = match self.round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot claim meta-alert deliveries");
                    0
                }
            };
            if found > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    async fn round(&self) -> Result<usize, StoreError> {
        let (token, rows) =
            meta_queue::claim(&self.store, &self.node, BATCH, lease(&self.config)).await?;
        let found = rows.len();
        futures_util::future::join_all(rows.into_iter().map(|d| self.deliver(token, d))).await;
        Ok(found)
    }

    async fn deliver(&self, token: ClaimToken, d: Delivery) {
        let result = match (
            AlertKind::parse(&d.kind),
            AlertEvent::parse(&d.event),
            Channel::parse(&d.channel),
        ) {
            (Some(kind), Some(event), Some(channel)) => {
                let alert = MetaAlert {
                    kind,
                    subject: d.subject.clone(),
                    started_ms: d.started_ms,
                    message: d.message.clone(),
                };
                self.notifier
                    .attempt(channel, &alert, event, &d.reported_by)
                    .await
            }
            _ => Err(format!(
                "unknown kind, event or channel ({}, {}, {}): queued by a newer version?",
                d.kind, d.event, d.channel
            )),
        };
        let outcome = judge(&self.config, d.attempts, result);
        self.count(&d, &outcome);
        match meta_queue::record(&self.store, d.id, token, &outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                row = d.id,
                "meta-alert delivery claimed by another node before its outcome was recorded"
            ),
            Err(e) => tracing::warn!(
                row = d.id,
                error = %e,
                "cannot record a meta-alert delivery; it is tried again when its claim runs out"
            ),
        }
        if let Outcome::Failed { error } = &outcome {
            self.tell_failed(&d, error).await;
        }
    }

    fn count(&self, d: &Delivery, outcome: &Outcome) {
        let (kind, subject, channel) = (&d.kind, &d.subject, &d.channel);
        match outcome {
            Outcome::Sent => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%kind, %subject, %channel, event = %d.event, "meta-alert delivered");
            }
            Outcome::Retry { wait, error } => {
                self.stats.attempts_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%kind, %subject, %channel, attempts = d.attempts + 1, retry_in = ?wait, %error, "meta-alert not delivered; will retry");
            }
            Outcome::Failed { error } => {
                self.stats.attempts_failed.fetch_add(1, Ordering::Relaxed);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%kind, %subject, %channel, attempts = d.attempts + 1, %error, "meta-alert could not be delivered; attempts used up");
            }
        }
    }

    /// A webhook that refused for good is reported by mail (rate-limited); a mail that could
    /// not be sent has only the log line of [`MetaDelivery::count`] left.
    async fn tell_failed(&self, d: &Delivery, error: &str) {
        if d.channel == Channel::Email.as_str() {
            return;
        }
        let subject = AlertKind::parse(&d.kind)
            .map(|k| k.subject(&d.subject, d.event == AlertEvent::Resolved.as_str()))
            .unwrap_or_else(|| d.kind.clone());
        let body = super::text::meta_undelivered(&d.channel, &subject, &d.message, error);
        self.admin
            .notify_subject("gobearmon: a meta-alert could not be delivered", &body)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(attempts: u32) -> DeliveryConfig {
        DeliveryConfig {
            attempts,
            backoff: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            concurrency: 16,
            admin_interval: Duration::from_secs(3600),
            storm: crate::policy::storm::StormRule::default(),
            paid_max_per_hour: 30,
        }
    }

    #[test]
    fn failed_attempts_back_off_until_the_attempts_are_used_up() {
        let c = config(4);
        assert_eq!(judge(&c, 0, Ok(())), Outcome::Sent);
        assert_eq!(judge(&c, 3, Ok(())), Outcome::Sent);
        let err = || Err("answered 503".to_string());
        let waits: Vec<Option<Duration>> = (0..3)
            .map(|before| match judge(&c, before, err()) {
                Outcome::Retry { wait, .. } => Some(wait),
                _ => None,
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [Some(ms(200)), Some(ms(400)), Some(ms(800))]);
        assert_eq!(
            judge(&c, 3, err()),
            Outcome::Failed {
                error: "answered 503".into()
            }
        );
        // The wait never passes delivery_backoff_max.
        match judge(&config(100), 50, err()) {
            Outcome::Retry { wait, .. } => assert_eq!(wait, Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        // One attempt allowed: the first failure is final.
        assert!(matches!(
            judge(&config(1), 0, err()),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn a_claim_outlasts_one_attempt() {
        let c = config(4);
        assert!(lease(&c) > c.timeout);
    }
}
