//! Notices to the operator (`[smtp] admin`): no controller can take over, checks without
//! quorum, notifications that failed for good, repeated reload errors. Each kind is sent at
//! most once per `admin_interval` (`[controller] admin_interval`), so an outage sends a
//! handful of mails, not hundreds; the next notice of a kind says how many were held back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::email::EmailSender;
use super::{DeliveryError, NotifyError};
use crate::config::SmtpConfig;

/// What a notice is about; the rate limit is per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminKind {
    /// The viewserver group found no worker that can become controller.
    NoController,
    /// Fewer live workers than a check's confirmations.
    InsufficientQuorum,
    /// Outbox rows that ran out of attempts or were refused for good.
    FailedDeliveries,
    /// The controller keeps failing to read the database.
    ReloadErrors,
    /// A flip could not be written: the check went back to its stored status.
    FlipNotRecorded,
    /// A new controller keeps failing to raise the epoch fence.
    FenceNotRaised,
    /// A worker's canaries fail: its results no longer count (a meta-alert, sent once).
    WorkerImpaired,
    /// A meta-alert about the monitor itself (see [`super::meta`]), sent once.
    MetaAlert,
    /// An `sms` or `voice` contact reached its messages per hour: messages are folded.
    CapReached,
}

impl AdminKind {
    /// The subject line of the notice.
    pub fn subject(self) -> &'static str {
        match self {
            AdminKind::NoController => "gobearmon: controller failed without replacement",
            AdminKind::InsufficientQuorum => "gobearmon: insufficient quorum",
            AdminKind::FailedDeliveries => "gobearmon: notifications could not be delivered",
            AdminKind::ReloadErrors => "gobearmon: successive reload errors",
            AdminKind::FlipNotRecorded => "gobearmon: a status change could not be recorded",
            AdminKind::FenceNotRaised => {
                "gobearmon: the new controller cannot raise the epoch fence"
            }
            AdminKind::WorkerImpaired => "gobearmon: worker impaired",
            AdminKind::MetaAlert => "gobearmon: alert",
            AdminKind::CapReached => "gobearmon: a contact's hourly message cap was reached",
        }
    }
}

/// What [`AdminNotifier::notify`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    Sent,
    /// A notice of this kind went out less than `admin_interval` ago; counted for the next.
    Suppressed,
    /// No `[smtp] host` or no `[smtp] admin`: nothing can be sent.
    NotConfigured,
    /// The mail was not accepted; the kind is not marked sent, so a later call tries again.
    Failed(DeliveryError),
}

#[derive(Debug, Default, Clone, Copy)]
struct KindState {
    last_sent: Option<Instant>,
    suppressed: u32,
}

/// Sends rate-limited notices. Share it behind an `Arc`.
#[derive(Debug)]
pub struct AdminNotifier {
    sender: Option<EmailSender>,
    admin: Option<String>,
    interval: Duration,
    /// Per subject: every kind has its own subject, and free-form notices are limited per
    /// subject too.
    state: Mutex<HashMap<String, KindState>>,
}

impl AdminNotifier {
    /// Notices to `[smtp] admin` through `[smtp]`; `interval` is `admin_interval`.
    pub fn new(smtp: &SmtpConfig, interval: Duration) -> Result<AdminNotifier, NotifyError> {
        let sender = match (&smtp.host, &smtp.admin) {
            (Some(_), Some(_)) => Some(EmailSender::new(smtp)?),
            _ => None,
        };
        Ok(AdminNotifier::with_sender(
            sender,
            smtp.admin.clone(),
            interval,
        ))
    }

    /// Notices through an already built sender (for example one trusting a private CA).
    pub fn with_sender(
        sender: Option<EmailSender>,
        admin: Option<String>,
        interval: Duration,
    ) -> AdminNotifier {
        AdminNotifier {
            sender,
            admin,
            interval,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Whether notices can be sent at all.
    pub fn is_configured(&self) -> bool {
        self.sender.is_some() && self.admin.is_some()
    }

    /// Whether a notice of `kind` would be sent now (configured and not rate-limited).
    pub fn is_due(&self, kind: AdminKind) -> bool {
        self.is_configured() && {
            let state = self.lock();
            due(
                state.get(kind.subject()).copied().unwrap_or_default(),
                self.interval,
            )
        }
    }

    /// Sends `body` under `kind`'s subject unless one went out within `admin_interval`.
    pub async fn notify(&self, kind: AdminKind, body: &str) -> AdminOutcome {
        self.notify_subject(kind.subject(), body).await
    }

    /// Sends `body` under `subject`, rate-limited per subject like [`AdminNotifier::notify`].
    pub async fn notify_subject(&self, subject: &str, body: &str) -> AdminOutcome {
        let (Some(sender), Some(admin)) = (&self.sender, &self.admin) else {
            tracing::warn!(
                subject,
                "admin notice not sent: [smtp] host or admin is not set"
            );
            return AdminOutcome::NotConfigured;
        };
        // Reserve the slot before sending so concurrent callers do not both send.
        let (previous, suppressed) = {
            let mut state = self.lock();
            let entry = state.entry(subject.to_string()).or_default();
            if !due(*entry, self.interval) {
                entry.suppressed += 1;
                return AdminOutcome::Suppressed;
            }
            let previous = *entry;
            entry.last_sent = Some(Instant::now());
            entry.suppressed = 0;
            (previous, previous.suppressed)
        };
        let mut text = body.to_string();
        if suppressed > 0 {
            text.push_str(&format!(
                "\n\n({suppressed} more notice(s) of this kind were held back since the last one.)"
            ));
        }
        text.push_str("\n\ngobearmon");
        match sender.send(admin, subject, &text).await {
            Ok(()) => {
                tracing::info!(subject, "admin notice sent");
                AdminOutcome::Sent
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "admin notice not sent");
                let mut state = self.lock();
                let entry = state.entry(subject.to_string()).or_default();
                entry.last_sent = previous.last_sent;
                entry.suppressed += previous.suppressed;
                AdminOutcome::Failed(e)
            }
        }
    }

    /// Sends `body` under `subject` now, without the rate limit: for notices that are
    /// deduplicated elsewhere (the meta-alerts, once per outage through MySQL).
    pub async fn send_once(&self, subject: &str, body: &str) -> AdminOutcome {
        let (Some(sender), Some(admin)) = (&self.sender, &self.admin) else {
            return AdminOutcome::NotConfigured;
        };
        match sender
            .send(admin, subject, &format!("{body}\n\ngobearmon"))
            .await
        {
            Ok(()) => {
                tracing::info!(subject, "admin notice sent");
                AdminOutcome::Sent
            }
            Err(e) => {
                tracing::warn!(subject, error = %e, "admin notice not sent");
                AdminOutcome::Failed(e)
            }
        }
    }

    /// Sends every `(subject, body)` that arrives on `notices` through
    /// [`AdminNotifier::notify_subject`], until every sender is dropped.
    pub async fn serve(&self, mut notices: tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
        while let Some((subject, body)) = notices.recv().await {
            self.notify_subject(&subject, &body).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KindState>> {
        // A panic while holding this lock leaves only counters behind; keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A node's one admin notifier and the channel its roles send notices on. Built once per
/// node ([`Admin::start`]); clones share the notifier, so every notice of a node is
/// rate-limited by the same state.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Notices `(subject, body)` for the notifier's serving task; sending never blocks.
    pub notices: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    /// The notifier itself, for callers that need the outcome (the outbox's failed
    /// deliveries report, meta-alerts).
    pub mail: std::sync::Arc<AdminNotifier>,
}

impl Admin {
    /// Builds the notifier for `[smtp]` and spawns the task that serves
    /// [`Admin::notices`]. When `[smtp]` cannot be used the notices are only logged (an
    /// ERROR each), and `mail` sends nothing.
    pub fn start(smtp: &SmtpConfig, interval: Duration) -> Admin {
        let (notices, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let mail = match AdminNotifier::new(smtp, interval) {
            Ok(notifier) => {
                let notifier = std::sync::Arc::new(notifier);
                let serving = notifier.clone();
                tokio::spawn(async move { serving.serve(rx).await });
                notifier
            }
            Err(e) => {
                tracing::error!(error = %e, "admin notices cannot be mailed; they are only logged");
                tokio::spawn(async move {
                    while let Some((subject, body)) = rx.recv().await {
                        tracing::error!(%subject, %body, "admin notice");
                    }
                });
                std::sync::Arc::new(AdminNotifier::with_sender(None, None, interval))
            }
        };
        Admin { notices, mail }
    }
}

fn due(state: KindState, interval: Duration) -> bool {
    state.last_sent.is_none_or(|t| t.elapsed() >= interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_is_per_interval() {
        let interval = Duration::from_secs(60);
        assert!(due(KindState::default(), interval));
        let just_now = KindState {
            last_sent: Some(Instant::now()),
            suppressed: 0,
        };
        assert!(!due(just_now, interval));
        let long_ago = KindState {
            last_sent: Instant::now().checked_sub(Duration::from_secs(61)),
            suppressed: 3,
        };
        assert!(due(long_ago, interval));
    }

    #[tokio::test]
    async fn unconfigured_sends_nothing() {
        let n = AdminNotifier::with_sender(None, Some("a@b".into()), Duration::ZERO);
        assert!(!n.is_configured());
        assert!(!n.is_due(AdminKind::NoController));
        assert_eq!(
            n.notify(AdminKind::NoController, "x").await,
            AdminOutcome::NotConfigured
        );
    }
}
