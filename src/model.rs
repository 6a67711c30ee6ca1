//! Pure domain types shared by every concept module: ids, statuses, and the rows an operator
//! writes with SQL (`checks`, `contacts`, `alerts`). Nothing here does IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `checks.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckId(pub i64);

/// `contacts.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactId(pub i64);

/// `alerts.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertId(pub i64);

/// A worker's stable node id (`[worker] id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The view number: it only grows, and every controller acts under exactly one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(CheckId, ContactId, AlertId, NodeId, Epoch);

/// The state of a check as recorded in `checks.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Online,
    Offline,
}

impl CheckStatus {
    /// The `ENUM('online','offline')` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Online => "online",
            CheckStatus::Offline => "offline",
        }
    }

    /// Parses the column value exactly; anything else is `None` (the caller decides the
    /// fallback and warns, see [`CheckRow`]).
    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "online" => Some(CheckStatus::Online),
            "offline" => Some(CheckStatus::Offline),
            _ => None,
        }
    }

    pub fn opposite(self) -> CheckStatus {
        match self {
            CheckStatus::Online => CheckStatus::Offline,
            CheckStatus::Offline => CheckStatus::Online,
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `checks` as stored, before its parameters are interpreted. The check types and
/// their parameters are parsed by [`crate::probe::CheckSpec::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRow {
    pub id: CheckId,
    pub name: String,
    /// `checks.type`, verbatim (an unknown type is kept: its runs report
    /// `invalid check type: ...`).
    pub check_type: String,
    /// `checks.data`, the raw JSON parameters, verbatim.
    pub data: String,
    /// Seconds between regular runs (`check_interval`).
    pub interval_secs: i64,
    /// Extra confirmation rounds before a flip (`delay`).
    pub delay: i64,
    /// The recorded status; a NULL or unknown value is read as online (see `status_was_valid`).
    pub status: CheckStatus,
    /// False when the stored status was NULL or not `online`/`offline`.
    pub status_was_valid: bool,
    /// Per-check override of `[controller] confirmations` (NULL = use the global value).
    pub confirmations: Option<u32>,
}

/// The contact kinds of `contacts.type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactKind {
    Email,
    /// gobearmon's form-post webhook.
    Http,
    Sms,
    Voice,
    /// The JSON webhook with an idempotency key and optional signature.
    Webhook,
    /// A type this version does not know; delivery fails with `alert type X does not exist`.
    Unknown(String),
}

impl ContactKind {
    pub fn parse(s: &str) -> ContactKind {
        match s {
            "email" => ContactKind::Email,
            "http" => ContactKind::Http,
            "sms" => ContactKind::Sms,
            "voice" => ContactKind::Voice,
            "webhook" => ContactKind::Webhook,
            other => ContactKind::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ContactKind::Email => "email",
            ContactKind::Http => "http",
            ContactKind::Sms => "sms",
            ContactKind::Voice => "voice",
            ContactKind::Webhook => "webhook",
            ContactKind::Unknown(s) => s,
        }
    }
}

/// One row of `contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRow {
    pub id: ContactId,
    pub kind: ContactKind,
    /// An address, URL, phone number or (for `webhook`) a JSON object, verbatim.
    pub data: String,
}

/// Which flips an alert fires on (`alerts.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Online,
    Offline,
    Both,
}

impl AlertKind {
    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "online" => Some(AlertKind::Online),
            "offline" => Some(AlertKind::Offline),
            "both" => Some(AlertKind::Both),
            _ => None,
        }
    }

    /// Whether a flip to `new_status` selects this alert.
    pub fn matches(self, new_status: CheckStatus) -> bool {
        match self {
            AlertKind::Both => true,
            AlertKind::Online => new_status == CheckStatus::Online,
            AlertKind::Offline => new_status == CheckStatus::Offline,
        }
    }
}

/// One enabled row of `alerts`. A NULL `type` matches nothing (gobearmon's rule) and is
/// kept as `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    pub id: AlertId,
    pub check_id: CheckId,
    pub contact_id: ContactId,
    pub kind: Option<AlertKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_kinds_select_flips() {
        assert!(AlertKind::Both.matches(CheckStatus::Online));
        assert!(AlertKind::Both.matches(CheckStatus::Offline));
        assert!(AlertKind::Offline.matches(CheckStatus::Offline));
        assert!(!AlertKind::Offline.matches(CheckStatus::Online));
        assert!(AlertKind::Online.matches(CheckStatus::Online));
        assert!(!AlertKind::Online.matches(CheckStatus::Offline));
    }

    #[test]
    fn status_parsing_is_exact() {
        assert_eq!(CheckStatus::parse("online"), Some(CheckStatus::Online));
        assert_eq!(CheckStatus::parse("offline"), Some(CheckStatus::Offline));
        assert_eq!(CheckStatus::parse(""), None);
        assert_eq!(CheckStatus::parse("Online"), None);
        assert_eq!(
            ContactKind::parse("pager"),
            ContactKind::Unknown("pager".into())
        );
    }
}
