//! A node's config file as typed values, written with `toml::to_string`: the harness's own
//! small description of the keys it sets (the product's reader in `gobearmon::config` stays the
//! judge of what they mean). Keys the harness does not model go in as `toml::Table`s of typed
//! values ([`keys`], [`section`]).

use std::path::{Path, PathBuf};

use serde::Serialize;
use toml::{Table, Value};

/// A duration in milliseconds, written as `"250ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ms(pub u64);

impl Serialize for Ms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0))
    }
}

impl From<Ms> for Value {
    fn from(ms: Ms) -> Value {
        Value::String(format!("{}ms", ms.0))
    }
}

/// A table of `key = value` pairs (more keys of a section).
pub fn keys<const N: usize>(pairs: [(&str, Value); N]) -> Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A typed section (a struct of its keys) as a table, for [`NodeFile::sections`].
pub fn section(value: impl Serialize) -> Table {
    Table::try_from(value).expect("a section serializes to a table")
}

/// The whole file: the sections in the order the reader documents them, then any other
/// (`[smtp]`, `[twilio]`, `[web]`).
#[derive(Serialize, Default)]
pub struct NodeFile {
    /// `[default]`: the cluster secret as `password`, or what a test wants there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewserver: Option<ViewserverSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    #[serde(flatten)]
    pub sections: Table,
}

impl NodeFile {
    /// `[default]` with `password = secret`.
    pub fn with_secret(secret: &str) -> NodeFile {
        NodeFile {
            default: Some(keys([("password", secret.into())])),
            ..NodeFile::default()
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a node file serializes")
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// `[viewserver]`. A timing left `None` is not written (the shipped default holds).
#[derive(Serialize)]
pub struct ViewserverSection {
    pub id: u64,
    pub addr: String,
    pub peers: Vec<String>,
    pub data_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_timeout: Option<Ms>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_heartbeat: Option<Ms>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_election_timeout: Option<Ms>,
}

/// `[worker]`, with `extra` keys after the ones the harness sets.
#[derive(Serialize)]
pub struct WorkerSection {
    pub id: String,
    pub addr: String,
    pub view_addr: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<Ms>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Ms>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_pause: Option<Ms>,
    #[serde(flatten)]
    pub extra: Table,
}

/// `[controller]`, with `extra` keys after the ones the harness sets.
#[derive(Serialize)]
pub struct ControllerSection {
    pub addr: String,
    pub database: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_period: Option<Ms>,
    #[serde(flatten)]
    pub extra: Table,
}

/// `[tls]`: this node's certificate and key, and the cluster CA.
#[derive(Serialize)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// `[smtp]` as the notification tests set it.
#[derive(Serialize)]
pub struct SmtpSection {
    pub host: String,
    pub port: u16,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    pub tls: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Ms>,
}

impl SmtpSection {
    /// A plain-text capture server on 127.0.0.1:`port`, from `gobearmon@test`, admin mail to
    /// `admin@test`.
    pub fn capture(port: u16) -> SmtpSection {
        SmtpSection {
            host: "127.0.0.1".into(),
            port,
            from: "gobearmon@test".into(),
            admin: Some("admin@test".into()),
            tls: "none".into(),
            timeout: None,
        }
    }
}

/// `[twilio]`.
#[derive(Serialize)]
pub struct TwilioSection {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    pub base_url: String,
}

/// `[web]` (the dashboard and the JSON API).
#[derive(Serialize)]
pub struct WebSection {
    pub addr: String,
    pub api_tokens: Vec<String>,
}
