//! Email over SMTP (lettre, rustls with ring). `[smtp] tls` picks how the link is secured:
//! `auto` (STARTTLS when the server offers it), `starttls` (required), `tls` (implicit TLS, the
//! default on port 465) or `none`; the server's certificate must chain to the system's roots
//! or to `[smtp] ca` (a private mail server's CA). AUTH is used when `[smtp] username` is set.
//! The connection and every command are bounded by `[smtp] timeout`, and so is the whole send.
//!
//! Credentials never travel in clear unless the operator said so: with a username and
//! `tls = "auto"`, a server that offers no STARTTLS gets no AUTH (and so no message); the
//! send fails with [`CLEAR_AUTH_REFUSED`] in its error. Only `tls = "none"` sends AUTH over
//! an unencrypted connection, and a warning is logged when such a sender is built.
//!
//! A recipient is one address or several separated by commas (`a@x, Ops <b@y>`). The message
//! is plain text, UTF-8, quoted-printable (as gobearmon's).

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, transport::smtp::Error as SmtpError};
use rustls_pki_types::CertificateDer;

use super::{DeliveryError, NotifyError};
use crate::config::{SmtpConfig, SmtpTls};

/// In the error of a send refused because AUTH would have gone unencrypted.
pub const CLEAR_AUTH_REFUSED: &str = "refusing to send the [smtp] username's credentials over \
     an unencrypted connection";

/// How the link to the server is secured, with the TLS parameters it needs.
#[derive(Clone)]
enum Security {
    None,
    /// STARTTLS when the server offers it.
    Auto(TlsParameters),
    /// STARTTLS, or no message.
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Implicit(TlsParameters),
}

/// Sends plain-text mail through the configured server. Cheap to share; every send opens its
/// own connection, so one stuck send never blocks another.
#[derive(Clone)]
pub struct EmailSender {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
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
        let security = match cfg.tls {
            SmtpTls::None => Security::None,
            SmtpTls::Auto => Security::Auto(tls_parameters(cfg, &host, roots)?),
            SmtpTls::StartTls => Security::StartTls(tls_parameters(cfg, &host, roots)?),
            SmtpTls::Tls => Security::Implicit(tls_parameters(cfg, &host, roots)?),
        };
        let credentials = cfg.username.as_ref().map(|user| {
            let password = cfg
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            Credentials::new(user.clone(), password)
        });
        let server = format!("{host}:{}", cfg.port);
        if credentials.is_some() && cfg.tls == SmtpTls::None {
            tracing::warn!(
                %server,
                "[smtp] tls = \"none\" with a username: the credentials are sent unencrypted"
            );
        }
        Ok(EmailSender {
            server,
            host,
            port: cfg.port,
            security,
            credentials,
            hello: ClientId::default(),
            from,
            timeout: cfg.timeout,
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
        let bytes = message.formatted();
        // lettre bounds connect and each command; this bounds the whole exchange.
        match tokio::time::timeout(self.timeout, self.exchange(message.envelope(), &bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ExchangeError::Smtp(e))) => Err(classify(&self.server, &e)),
            Ok(Err(ExchangeError::NoStartTls)) => Err(DeliveryError::later(format!(
                "SMTP {}: the server does not offer STARTTLS ([smtp] tls = \"starttls\")",
                self.server
            ))),
            // The operator's to fix (a server with STARTTLS, `tls = "tls"`, or an explicit
            // `tls = "none"`); retried like an authentication failure.
            Ok(Err(ExchangeError::ClearAuth)) => Err(DeliveryError::later(format!(
                "SMTP {}: the server does not offer STARTTLS; {CLEAR_AUTH_REFUSED} (use \
                 STARTTLS or tls = \"tls\", or set tls = \"none\" to allow it)",
                self.server
            ))),
            Err(_) => Err(DeliveryError::later(format!(
                "SMTP {}: no answer within {:?}",
                self.server, self.timeout
            ))),
        }
    }

    /// One connection: greeting and EHLO, STARTTLS as [`Security`] says, AUTH only over an
    /// encrypted link (or with `tls = "none"`), the message, QUIT.
    async fn exchange(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), ExchangeError> {
        let implicit = match &self.security {
            Security::Implicit(p) => Some(p.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await?;
        let outcome = self.secure_and_send(&mut conn, envelope, bytes).await;
        // QUIT and close after a delivery or a refusal of ours. After an SMTP error the
        // connection is only dropped, as lettre's own transport does: a failed TLS upgrade
        // leaves no stream to write a QUIT to.
        if !matches!(outcome, Err(ExchangeError::Smtp(_))) {
            conn.abort().await;
        }
        outcome
    }

    async fn secure_and_send(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<(), ExchangeError> {
        match &self.security {
            Security::Auto(p) if conn.can_starttls() => {
                conn.starttls(p.clone(), &self.hello).await?
            }
            Security::StartTls(_) if !conn.can_starttls() => return Err(ExchangeError::NoStartTls),
            Security::StartTls(p) => conn.starttls(p.clone(), &self.hello).await?,
            Security::Auto(_) | Security::Implicit(_) | Security::None => {}
        }
        if let Some(credentials) = &self.credentials {
            if !conn.is_encrypted() && !matches!(self.security, Security::None) {
                return Err(ExchangeError::ClearAuth);
            }
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        conn.send(envelope, bytes).await?;
        Ok(())
    }
}

/// Why [`EmailSender::exchange`] ended without delivering: an SMTP or TLS error, or a refusal
/// of ours.
enum ExchangeError {
    Smtp(SmtpError),
    /// `tls = "starttls"` and the server does not offer it.
    NoStartTls,
    /// AUTH would have gone over an unencrypted connection.
    ClearAuth,
}

impl From<SmtpError> for ExchangeError {
    fn from(e: SmtpError) -> ExchangeError {
        ExchangeError::Smtp(e)
    }
}

/// The TLS parameters for `host`: the system's roots, `[smtp] ca` and `roots`.
fn tls_parameters(
    cfg: &SmtpConfig,
    host: &str,
    roots: &[CertificateDer<'static>],
) -> Result<TlsParameters, NotifyError> {
    let mut params = TlsParameters::builder(host.to_owned());
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
    params
        .build_rustls()
        .map_err(|e| NotifyError::Smtp(format!("TLS setup: {e}")))
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
fn classify(server: &str, e: &SmtpError) -> DeliveryError {
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
