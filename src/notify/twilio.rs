//! SMS and voice calls through Twilio's REST API at `[twilio] base_url`:
//! `POST {base}/2010-04-01/Accounts/{sid}/Messages.json` (`From`, `To`, `Body`) and
//! `.../Calls.json` (`From`, `To`, `Twiml`), with HTTP Basic `account_sid:auth_token`.
//!
//! Success is a 2xx answer (Twilio's is 201) with the new resource's `sid`. Twilio's error
//! JSON (`code`, `message`, `more_info`) becomes the error text. A 4xx is final (a bad number,
//! a refused account) except 408 and 429; a 5xx, a timeout or a refused connection is retried.

use serde::Deserialize;

use super::{DeliveryError, Retry};
use crate::config::{Secret, TwilioConfig};

/// A Twilio account. Cheap to clone.
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: Option<Secret>,
    from: String,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .finish()
    }
}

/// The part of Twilio's answer we read, success or error.
#[derive(Debug, Deserialize, Default)]
struct Answer {
    sid: Option<String>,
    code: Option<serde_json::Value>,
    message: Option<String>,
    more_info: Option<String>,
}

impl TwilioClient {
    /// `http` must carry the delivery timeout.
    pub fn new(cfg: &TwilioConfig, http: reqwest::Client) -> TwilioClient {
        TwilioClient {
            http,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            account_sid: cfg.account_sid.clone(),
            auth_token: cfg.auth_token.clone(),
            from: cfg.from.clone(),
        }
    }

    /// Sends `body` to the number `to`; returns the message SID.
    pub async fn sms(&self, to: &str, body: &str) -> Result<String, DeliveryError> {
        self.create("Messages.json", to, ("Body", body)).await
    }

    /// Calls `to` and plays `twiml`; returns the call SID.
    pub async fn call(&self, to: &str, twiml: &str) -> Result<String, DeliveryError> {
        self.create("Calls.json", to, ("Twiml", twiml)).await
    }

    async fn create(
        &self,
        resource: &str,
        to: &str,
        content: (&str, &str),
    ) -> Result<String, DeliveryError> {
        let token = match &self.auth_token {
            Some(t) if !self.account_sid.is_empty() && !self.from.is_empty() => t,
            _ => {
                return Err(DeliveryError::never(
                    "Twilio is not configured ([twilio] account_sid, auth_token and from are required)",
                ));
            }
        };
        let to = to.trim();
        if to.is_empty() {
            return Err(DeliveryError::never("the contact has no phone number"));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.base_url, self.account_sid
        );
        let form = [("From", self.from.as_str()), ("To", to), content];
        let response = self
            .http
            .post(&url)
            .basic_auth(&self.account_sid, Some(token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                DeliveryError::later(format!(
                    "Twilio {resource}: {}",
                    super::webhook::describe(&e)
                ))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            DeliveryError::later(format!(
                "Twilio {resource}: reading the answer: {}",
                super::webhook::describe(&e)
            ))
        })?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            // Accepted: the message or call exists and is billed, so never retry it, even
            // when the answer lacks its SID.
            return Ok(answer.sid.unwrap_or_default());
        }
        let retry = if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408
        {
            Retry::Later
        } else {
            Retry::Never
        };
        let code = match &answer.code {
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => "-".into(),
        };
        let mut message = format!(
            "Twilio {resource}: error({}/{code}): {}",
            status.as_u16(),
            answer
                .message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string())
        );
        if let Some(info) = answer.more_info {
            message.push_str(&format!(" ({info})"));
        }
        Err(DeliveryError { retry, message })
    }
}
