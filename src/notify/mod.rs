//! Delivering notifications: what a flip tells the check's contacts, and how it gets there.
//!
//! - [`Notification`]: one flip as it was when it happened; stored as the outbox `payload`.
//! - [`text`]: gobearmon's texts (email subject and body, SMS, voice) and the webhook bodies.
//! - [`redact`]: secrets removed from the check data before it is shown to anyone.
//! - [`email`], [`twilio`], [`webhook`]: one channel each, every network call bounded by a
//!   timeout.
//! - [`Channels`]: the [`Deliverer`] that picks the channel from the contact's type.
//! - [`outbox`]: [`outbox::enqueue`] (inside the flip's fenced transaction) and the
//!   [`outbox::Dispatcher`] that delivers pending rows with retries.
//! - [`admin`]: rate-limited notices to `[smtp] admin`.
//! - [`meta`], [`meta_delivery`]: meta-alerts (the monitor about itself), queued in MySQL and
//!   delivered with retries by email and to the admin webhook.
//! - [`contact_test`]: one test message to one contact, for `gobearmon contact test`.

pub mod admin;
pub mod email;
pub mod meta;
pub mod meta_delivery;
pub mod outbox;
pub mod redact;
pub mod text;
pub mod twilio;
pub mod webhook;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::config::{SmtpConfig, TwilioConfig};
use crate::model::{CheckId, CheckStatus, ContactId, ContactKind, ContactRow, NodeId};
use crate::store::{Store, StoreError};

/// `check_events.id`: the flip a notification tells about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One flip, frozen at the moment it happened. Serialized as JSON into
/// `notification_outbox.payload`, so a later edit of the check does not change what is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The `check_events` row of the flip; also the webhooks' idempotency key.
    pub event_id: EventId,
    pub check_id: CheckId,
    /// `checks.name`.
    pub name: String,
    /// `checks.type`.
    pub check_type: String,
    /// `checks.data`, raw. Every text built from it goes through [`redact::check_data`].
    pub data: String,
    pub old_status: CheckStatus,
    pub new_status: CheckStatus,
    /// The result message that caused the flip (empty for most flips to online).
    pub message: String,
    /// When the flip happened, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// The workers whose results made the flip, when known.
    #[serde(default)]
    pub confirmed_by: Vec<NodeId>,
    /// True only for `gobearmon contact test`.
    #[serde(default)]
    pub test: bool,
    /// 0 for a flip's notice, k for its k-th reminder (alert policy).
    #[serde(default)]
    pub reminder: u32,
    /// A digest (storm control, per-contact caps): the other notifications this message
    /// carries besides its own, oldest first. Empty for a single notification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<Notification>,
}

impl Notification {
    /// The message `gobearmon contact test` sends: an offline flip of a check that does not
    /// exist (check id 0, event id 0), marked `test`.
    pub fn test_message(now: SystemTime) -> Notification {
        Notification {
            event_id: EventId(0),
            check_id: CheckId(0),
            name: "gobearmon test notification".into(),
            check_type: "test".into(),
            data: "{}".into(),
            old_status: CheckStatus::Online,
            new_status: CheckStatus::Offline,
            message: "this is a test sent by `gobearmon contact test`; no check has changed".into(),
            time_ms: unix_ms(now),
            confirmed_by: Vec::new(),
            test: true,
            reminder: 0,
            folded: Vec::new(),
        }
    }

    /// `self` carrying `others` as one digest: every notification of both, flattened (a
    /// digest folded into another lists each of its own), in the order given.
    pub fn digest(mut self, others: Vec<Notification>) -> Notification {
        for mut n in others {
            let inner = std::mem::take(&mut n.folded);
            self.folded.push(n);
            self.folded.extend(inner);
        }
        self
    }

    /// Every notification a message carries: itself, then the folded ones.
    pub fn all(&self) -> impl Iterator<Item = &Notification> {
        std::iter::once(self).chain(self.folded.iter())
    }

    /// The `Idempotency-Key` header of webhooks: the event id, or a unique `test-<ms>` for a
    /// test message so receivers that deduplicate still show every test, and
    /// `<event id>-r<k>` for the k-th reminder of a flip.
    pub fn idempotency_key(&self) -> String {
        if self.test {
            format!("test-{}", self.time_ms)
        } else if !self.folded.is_empty() {
            format!("{}-digest{}", self.event_id, self.folded.len())
        } else if self.reminder > 0 {
            format!("{}-r{}", self.event_id, self.reminder)
        } else {
            self.event_id.to_string()
        }
    }
}

/// Milliseconds since the Unix epoch; a time before 1970 is 0.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a successful delivery left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// A Twilio message or call: `(charges.type, SID)`, written to `charges`.
    pub charge: Option<(&'static str, String)>,
}

/// Whether trying the same delivery again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Timeouts, refused connections, 5xx, 429, SMTP 4xx: try again after the backoff.
    Later,
    /// The recipient or the request was refused for good (Twilio 4xx, SMTP 5xx, a webhook
    /// 4xx, a contact that no longer exists or cannot be parsed): fail the row now.
    Never,
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub retry: Retry,
    /// What went wrong, for `notification_outbox.last_error` and the admin notice. Never
    /// holds a secret.
    pub message: String,
}

impl DeliveryError {
    pub fn later(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retry: Retry::Later,
            message: message.into(),
        }
    }

    pub fn never(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retry: Retry::Never,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Later
    }
}

/// Sends one notification to one contact.
///
/// An `Err` means the contact was not reached; [`DeliveryError::retry`] says whether another
/// attempt may succeed. A call may be repeated after an error, but a repeat after a lost
/// success sends the message twice: delivery is at-least-once, which is why webhooks carry an
/// idempotency key.
pub trait Deliverer: Send + Sync + 'static {
    fn deliver<'a>(
        &'a self,
        contact: &'a ContactRow,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
}

/// Problems building the channels from the config.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("SMTP setup: {0}")]
    Smtp(String),
    #[error("HTTP client setup: {0}")]
    Http(String),
}

/// The real [`Deliverer`]: email over SMTP, SMS and calls through Twilio, and the two webhook
/// kinds. Every attempt is bounded by the delivery timeout given to [`Channels::new`].
pub struct Channels {
    email: Option<email::EmailSender>,
    twilio: twilio::TwilioClient,
    webhook: webhook::WebhookClient,
    timeout: Duration,
}

impl Channels {
    /// Channels from the config, trusting the system's root certificates.
    pub fn new(
        smtp: &SmtpConfig,
        twilio: &TwilioConfig,
        timeout: Duration,
    ) -> Result<Channels, NotifyError> {
        Channels::with_extra_roots(smtp, twilio, timeout, &[])
    }

    /// Like [`Channels::new`], also trusting `roots` (DER certificates) for SMTP and HTTPS: a
    /// private CA, or a test server's self-signed certificate.
    pub fn with_extra_roots(
        smtp: &SmtpConfig,
        twilio: &TwilioConfig,
        timeout: Duration,
        roots: &[CertificateDer<'static>],
    ) -> Result<Channels, NotifyError> {
        let email = match smtp.host {
            Some(_) => Some(email::EmailSender::with_extra_roots(smtp, roots)?),
            None => None,
        };
        let http = webhook::http_client(timeout, roots)?;
        Ok(Channels {
            email,
            twilio: twilio::TwilioClient::new(twilio, http.clone()),
            webhook: webhook::WebhookClient::new(http),
            timeout,
        })
    }

    async fn deliver_now(
        &self,
        contact: &ContactRow,
        n: &Notification,
    ) -> Result<Delivered, DeliveryError> {
        match &contact.kind {
            ContactKind::Email => {
                let sender = self.email.as_ref().ok_or_else(|| {
                    DeliveryError::never("email is not configured ([smtp] host is not set)")
                })?;
                sender
                    .send(&contact.data, &text::email_subject(n), &text::email_body(n))
                    .await?;
                Ok(Delivered::default())
            }
            ContactKind::Sms => {
                let sid = self.twilio.sms(&contact.data, &text::sms(n)).await?;
                Ok(Delivered {
                    charge: Some(("sms", sid)),
                })
            }
            ContactKind::Voice => {
                let sid = self
                    .twilio
                    .call(&contact.data, &text::voice_twiml(n))
                    .await?;
                Ok(Delivered {
                    charge: Some(("voice", sid)),
                })
            }
            ContactKind::Http => {
                self.webhook.post_form(&contact.data, n).await?;
                Ok(Delivered::default())
            }
            ContactKind::Webhook => {
                self.webhook.post_json(&contact.data, n).await?;
                Ok(Delivered::default())
            }
            ContactKind::Unknown(kind) => Err(DeliveryError::never(format!(
                "alert type {kind} does not exist"
            ))),
        }
    }
}

impl Deliverer for Channels {
    fn deliver<'a>(
        &'a self,
        contact: &'a ContactRow,
        notification: &'a Notification,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.deliver_now(contact, notification)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(DeliveryError::later(format!(
                    "{} delivery timed out after {:?}",
                    contact.kind.as_str(),
                    self.timeout
                ))),
            }
        })
    }
}

/// Reads the PEM certificates in `path`, to pass as extra roots to
/// [`Channels::with_extra_roots`] (a private CA for the SMTP server or webhooks).
pub fn read_pem_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, NotifyError> {
    use rustls_pki_types::pem::PemObject;
    let what = |e: &dyn fmt::Display| NotifyError::Smtp(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if certs.is_empty() {
        return Err(what(&"no PEM certificate found"));
    }
    Ok(certs)
}

/// What `gobearmon contact test` can run into.
#[derive(Debug, thiserror::Error)]
pub enum ContactTestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("contact {0} does not exist")]
    NoSuchContact(ContactId),
    #[error("{0}")]
    Delivery(#[from] DeliveryError),
}

/// Reads contact `id` from the database and sends it [`Notification::test_message`] through
/// `deliverer`, exactly as the dispatcher would. A Twilio message or call is recorded in
/// `charges` with check id 0.
pub async fn contact_test(
    store: &Store,
    deliverer: &dyn Deliverer,
    id: ContactId,
) -> Result<Delivered, ContactTestError> {
    let contact = outbox::load_contact(store, id)
        .await?
        .ok_or(ContactTestError::NoSuchContact(id))?;
    let n = Notification::test_message(SystemTime::now());
    let delivered = deliverer.deliver(&contact, &n).await?;
    if let Some((kind, sid)) = &delivered.charge {
        outbox::record_charge(store, n.check_id, kind, sid).await?;
    }
    Ok(delivered)
}
