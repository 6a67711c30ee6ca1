//! Email over SMTP (lettre, rustls with ring). `[smtp] tls` picks how the link is secured:
//! `auto` (STARTTLS when the server offers it), `starttls` (required), `tls` (implicit TLS, the
//! default on port 465) or `none`; the server's certificate must chain to the system's roots
//! or to `[smtp] ca` (a private mail server's CA). AUTH is used when `[smtp] username` is set.
//! The connection and every command are bounded by `[smtp] timeout`, and so is the whole send.
//!
//! A recipient is one address or several separated by commas (`a@x, Ops <b@y>`). The message
//! is plain text, UTF-8, quoted-printable (as gobearmon's).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls_pki_types::CertificateDer;

use super::{DeliveryError, NotifyError};
use crate::config::{SmtpConfig, SmtpTls};

/// Sends plain-text mail through the configured server. Cheap to share; every send opens its
/// own connection, so one stuck send never blocks another.
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
    server: String,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl EmailSender {
    /// A sender for `[smtp]`, trusting the system's root certificates and `[smtp] ca`.
    pub fn new(cfg: &SmtpConfig) -> Result<EmailSender, NotifyError> {
        EmailSender::with_extra_roots(cfg, &[])
    }

    /// A sender for `[smtp]` that also trusts `roots` (DER) for the server's certificate.
    /// Fails when `[smtp] host` is unset, `[smtp] from` is not an address or `[smtp] ca`
    /// cannot be read.
    pub fn with_extra_roots(
        cfg: &SmtpConfig,
        roots: &[CertificateDer<'static>],
    ) -> Result<EmailSender, NotifyError> {
        crate::tlsutil::install_default_provider();
        let host = cfg
            .host
            .clone()
            .ok_or_else(|| NotifyError::Smtp("[smtp] host is not set".into()))?;
        let from: Mailbox = cfg.from.parse().map_err(|e| {
            NotifyError::Smtp(format!("[smtp] from {:?} is not an address: {e}", cfg.from))
        })?;
        let tls = if cfg.tls == SmtpTls::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(host.clone());
            let configured = match &cfg.ca {
                Some(path) => crate::tlsutil::read_certs("[smtp] ca", path)
                    .map_err(|e| NotifyError::Smtp(e.to_string()))?,
                None => Vec::new(),
            };
            for root in configured.iter().chain(roots) {
                let cert = Certificate::from_der(root.to_vec())
                    .map_err(|e| NotifyError::Smtp(format!("extra root certificate: {e}")))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| NotifyError::Smtp(format!("TLS setup: {e}")))?;
            match cfg.tls {
                SmtpTls::Auto => Tls::Opportunistic(params),
                SmtpTls::StartTls => Tls::Required(params),
                SmtpTls::Tls => Tls::Wrapper(params),
                SmtpTls::None => Tls::None,
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        if let Some(user) = &cfg.username {
            let password = cfg
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from,
            timeout: cfg.timeout,
            server: format!("{host}:{}", cfg.port),
        })
    }

    /// Sends `subject` and `body` to every address in `to` (comma-separated). Success means
    /// the server accepted the message for every recipient.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), DeliveryError> {
        let recipients = parse_recipients(to)?;
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for r in recipients {
            message = message.to(r);
        }
        let message = message
            .body(
                lettre::message::Body::new_with_encoding(
                    body.to_string(),
                    lettre::message::header::ContentTransferEncoding::QuotedPrintable,
                )
                .map_err(|_| DeliveryError::never("the message body cannot be encoded"))?,
            )
            .map_err(|e| DeliveryError::never(format!("building the message: {e}")))?;
        // lettre bounds connect and each command; this bounds the whole exchange.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&self.server, &e)),
            Err(_) => Err(DeliveryError::later(format!(
                "SMTP {}: no answer within {:?}",
                self.server, self.timeout
            ))),
        }
    }
}

/// The mailboxes of a contact's `data`: one address or several separated by commas.
pub fn parse_recipients(data: &str) -> Result<Vec<Mailbox>, DeliveryError> {
    let trimmed = data.trim().trim_end_matches(',');
    let boxes: Mailboxes = trimmed.parse().map_err(|e| {
        DeliveryError::never(format!(
            "email contact {data:?} is not a valid address list: {e}"
        ))
    })?;
    let list: Vec<Mailbox> = boxes.into_iter().collect();
    if list.is_empty() {
        return Err(DeliveryError::never("email contact has no address"));
    }
    Ok(list)
}

/// SMTP replies that the same message to the same recipient will always get: bad mailbox or
/// address (550, 551, 553, 501), message refused (552, 554). Authentication failures (530,
/// 534, 535, 538) and every 4xx, timeout, TLS or connection error are worth retrying: they
/// are the server's or the operator's to fix.
fn classify(server: &str, e: &lettre::transport::smtp::Error) -> DeliveryError {
    let message = format!("SMTP {server}: {e}");
    match e.status().map(u16::from) {
        Some(code) if e.is_permanent() && !matches!(code, 530 | 534 | 535 | 538) => {
            DeliveryError::never(message)
        }
        _ => DeliveryError::later(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_one_or_many() {
        assert_eq!(parse_recipients("ops@example.com").unwrap().len(), 1);
        let many = parse_recipients("a@example.com, Ops Team <b@example.com>,").unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].email.to_string(), "b@example.com");
        let err = parse_recipients("not an address").unwrap_err();
        assert!(!err.is_retryable());
        assert!(!parse_recipients("  ").unwrap_err().is_retryable());
    }
}
