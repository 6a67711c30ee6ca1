//! Per-node configuration: the typed sections of a `gobearmon.*.toml` file, how a file is read
//! (`${NAME}` from the environment, gobearmon's camelCase aliases, every problem reported at
//! once), and the [`Secret`] wrapper that keeps passwords out of `Debug`, logs and errors.
//!
//! Layout: `keys.rs` declares every key once (type, default, bounds, alias, doc); `read.rs`
//! reads a file against that declaration ([`load`] / [`parse`]); `validate.rs` checks what
//! spans keys and builds the structs here, which are what the rest of the program sees, with
//! every default applied and ids and addresses in their domain types.

mod keys;
mod read;
mod secret;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::NodeId;

pub use keys::{
    ControllerKeys, DefaultKeys, DnsKeys, HistoryKeys, ListenKeys, SmtpKeys, TlsKeys, TwilioKeys,
    ViewserverKeys, WebKeys, WorkerKeys,
};
pub use read::{ConfigError, Problem, known_keys, load, parse, parse_duration, valid_node_id};
pub use secret::Secret;

/// `[viewserver] controller_timeout` when the file does not set it.
pub const DEFAULT_CONTROLLER_TIMEOUT: Duration = Duration::from_secs(4);

/// A whole node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub default: DefaultConfig,
    pub role: Role,
    pub smtp: SmtpConfig,
    pub dns: DnsConfig,
    pub twilio: TwilioConfig,
    /// TLS for every listener and for node-to-node clients; `None` means plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `[history]`: what the acting controller keeps of results.
    pub history: HistoryConfig,
    /// `[web]`: the read-only JSON API of a controller-capable worker.
    pub web: WebConfig,
    /// `[listen]`: what every listener of the node admits.
    pub listen: ListenConfig,
}

/// `[listen]`: connection admission on every listener of a node (see `crate::api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenConfig {
    /// Unauthenticated connections one listener holds at once; a newcomer beyond it closes
    /// the least recently active of them.
    pub max_connections: usize,
    /// Unauthenticated connections one listener holds from one source address; beyond it,
    /// that source's new connections are closed at once.
    pub max_per_source: usize,
    /// Accept to a complete first request head (TLS handshake, protocol sniff, headers).
    pub head_timeout: Duration,
    /// An unauthenticated connection idle (no request in flight) or making no progress for
    /// this long is closed.
    pub idle_timeout: Duration,
    /// Bound on reading one request body.
    pub body_timeout: Duration,
}

impl Default for ListenConfig {
    fn default() -> ListenConfig {
        ListenConfig::from(ListenKeys::default())
    }
}

impl From<ListenKeys> for ListenConfig {
    fn from(k: ListenKeys) -> ListenConfig {
        ListenConfig {
            max_connections: k.max_connections,
            max_per_source: k.max_per_source,
            head_timeout: k.head_timeout,
            idle_timeout: k.idle_timeout,
            body_timeout: k.body_timeout,
        }
    }
}

/// `[web]`: the JSON API (`/api/v1/...`), served by controller-capable workers only.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// Listen address; no API listener when `None`.
    pub addr: Option<SocketAddr>,
    /// Bearer tokens that may read the API (at least one when `addr` is set).
    pub api_tokens: Vec<Secret>,
    /// The base URL `gobearmon push-url` prints push URLs with (a load balancer in front of
    /// the workers, say); `None`: `http://` and `addr`.
    pub public_url: Option<String>,
}

/// `[history]`: result history kept by the acting controller (read by controller-capable
/// workers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Whether results are kept at all (raw rows and rollups).
    pub enabled: bool,
    /// Raw results older than this are pruned (they are rolled up first).
    pub raw_retention: Duration,
    /// Hourly and daily rollups older than this are pruned; `None` keeps them forever.
    pub rollup_retention: Option<Duration>,
}

/// The declared defaults ([`HistoryKeys`]).
impl Default for HistoryConfig {
    fn default() -> HistoryConfig {
        let k = HistoryKeys::default();
        HistoryConfig {
            enabled: k.enabled,
            raw_retention: k.raw_retention,
            rollup_retention: k.rollup_retention,
        }
    }
}

/// What this node is, decided by which sections the file has (DESIGN 2).
// One per node, built once: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Role {
    /// `[worker]`, with `[controller]` when it may become controller.
    Worker {
        worker: WorkerConfig,
        controller: Option<ControllerConfig>,
    },
    /// `[viewserver]`: a member of the viewserver group.
    Viewserver(ViewserverConfig),
}

/// `[default]`: keys every node has.
#[derive(Debug, Clone)]
pub struct DefaultConfig {
    /// The cluster secret every node key is derived from. Every node holds it except a
    /// probe-only worker given only its own node key (`[worker] key`).
    pub password: Option<Secret>,
    /// Debug logging (gobearmon's `debug`).
    pub debug: bool,
}

/// `[controller]`: a worker that may become controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Listen address of the controller API (workers and `gobearmon status`).
    pub addr: SocketAddr,
    /// The address other nodes use to reach the controller API (default: `addr`; required
    /// when `addr` listens on all interfaces).
    pub advertise_addr: String,
    /// MySQL/MariaDB URLs (`mysql://user:pw@host:3306/db`), tried in turn.
    pub database: Vec<Secret>,
    /// Distinct workers that must agree in one round (overridable per check).
    pub confirmations: u32,
    /// How often checks, contacts and alerts are re-read for changes.
    pub reload_period: Duration,
    /// A check handed to a worker that has not answered within this is handed out again.
    pub assignment_timeout: Duration,
    /// The notification outbox.
    pub delivery: DeliveryConfig,
    /// Dead man's switch: called every `heartbeat_interval` while this node acts as a healthy
    /// controller (a secret: such URLs carry their key).
    pub heartbeat_url: Option<Secret>,
    pub heartbeat_interval: Duration,
    /// The workers of one round come from different `[worker] location`s where enough exist.
    pub distinct_locations: bool,
    /// `/metrics` has per-worker probe series (`probe_success` and the others) beside the
    /// per-check ones.
    pub metrics_per_worker: bool,
    /// Meta-alerts: when the monitor itself is down or stuck.
    pub meta: MetaAlertConfig,
    /// `flap_flips` and `flap_window`: more flips than this within the window is flapping.
    pub flap: crate::policy::flap::FlapRule,
}

/// `[controller]` keys of the meta-alerts (`[smtp] admin` and `admin_webhook`).
#[derive(Debug, Clone)]
pub struct MetaAlertConfig {
    /// A URL that receives every meta-alert as JSON (a secret: such URLs carry tokens).
    pub admin_webhook: Option<Secret>,
    /// Signs the webhook's body like a contact webhook's `secret`.
    pub admin_webhook_secret: Option<Secret>,
    /// No controller has been alive for this long.
    pub no_controller: Duration,
    /// A worker has not polled for this long.
    pub stale_worker: Duration,
    /// The oldest pending notification is older than this.
    pub outbox_stuck: Duration,
    /// A viewserver member has not answered for this long.
    pub viewserver_down: Duration,
    /// No database node has answered for this long.
    pub db_down: Duration,
}

/// `[controller]` keys of the notification outbox.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Attempts per notification before it is marked failed and the admin is mailed.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles after each failure.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// Bound on one delivery attempt (connect plus send).
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Admin notices of one kind are sent at most once per this period.
    pub admin_interval: Duration,
    /// `storm_flips`, `storm_window`, `storm_wait`: digests during a storm.
    pub storm: crate::policy::storm::StormRule,
    /// Messages an hour to an `sms` or `voice` contact without `contacts.max_per_hour`
    /// (`[twilio] max_per_hour`; set from `[twilio]` once both sections are read).
    pub paid_max_per_hour: u32,
}

/// `[worker]`.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Stable node id; results and votes are counted per id.
    pub id: NodeId,
    /// Where the worker runs, shown in `gobearmon status`.
    pub location: String,
    /// The viewserver group members (`host:port`).
    pub view_addr: Vec<String>,
    /// Checks run at once (gobearmon's `numThreads`).
    pub num_threads: usize,
    /// Listen address for `/ready`, `/metrics` and `/disconnect`.
    pub addr: SocketAddr,
    /// How often the worker heartbeats the viewserver group.
    pub heartbeat_interval: Duration,
    /// A controller acts only while its last heartbeat reply is younger than this.
    pub lease: Duration,
    /// Results kept while no controller answers; the oldest are dropped first.
    pub result_buffer: usize,
    /// After `SIGUSR1` or `gobearmon disconnect`, how long the worker stays away.
    pub disconnect_pause: Duration,
    /// This worker's own node key, instead of the cluster secret (a probe-only worker outside
    /// the trusted zone).
    pub key: Option<Secret>,
    /// Reference targets that judge this worker's own network (see [`crate::canary`]).
    pub canaries: Vec<String>,
    /// How often the canaries are probed.
    pub canary_interval: Duration,
    /// `/metrics` answers only `Authorization: Bearer <this>` when set (16 characters or
    /// more); otherwise it answers anyone who reaches the listener.
    pub metrics_token: Option<Secret>,
}

/// `[viewserver]`.
#[derive(Debug, Clone)]
pub struct ViewserverConfig {
    /// This member's Raft id (1-based; its position in `peers`).
    pub id: u64,
    /// Listen address (Raft RPC and heartbeats).
    pub addr: SocketAddr,
    /// The whole group, this node included, in id order: `peers[id - 1]` is this node.
    pub peers: Vec<String>,
    /// Raft log, vote and snapshots.
    pub data_dir: PathBuf,
    /// Optional allow-list of the workers that may be named controller, by id or by
    /// advertised address (empty: any).
    pub controller: Vec<String>,
    /// A controller silent for this long is replaced.
    pub controller_timeout: Duration,
    /// Raft heartbeat period between members.
    pub raft_heartbeat: Duration,
    /// Raft election timeout (lower bound; the upper bound is twice this).
    pub raft_election_timeout: Duration,
}

/// `[smtp]`: email contacts and admin notices.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// SMTP server host; `None` means email is not configured.
    pub host: Option<String>,
    pub port: u16,
    /// The `From:` address.
    pub from: String,
    /// AUTH user; no AUTH when `None`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Where admin notices go; none are sent when `None`.
    pub admin: Option<String>,
    pub tls: SmtpTls,
    /// `[smtp] ca`: a PEM CA trusted for the server's certificate besides the system's roots
    /// (a private mail server).
    pub ca: Option<PathBuf>,
    /// Bound on connecting and on a whole send.
    pub timeout: Duration,
}

/// `[smtp] tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS when the server offers it, plain otherwise.
    Auto,
    /// STARTTLS required.
    StartTls,
    /// Implicit TLS from the first byte (the default on port 465).
    Tls,
    /// Never TLS.
    None,
}

/// `[dns]`.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// The default nameserver of dns checks that name none (`ip` or `ip:port`).
    pub server: Option<String>,
}

/// `[twilio]`.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: Option<Secret>,
    /// The calling number.
    pub from: String,
    /// Default `https://api.twilio.com`; a test points it at a local stand-in.
    pub base_url: String,
    /// Messages an hour to one `sms` or `voice` contact without `contacts.max_per_hour`.
    pub max_per_hour: u32,
}

/// `[tls]`: optional TLS on every listener and for node-to-node clients.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain this node presents.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA that signs the other nodes' certificates.
    pub ca: PathBuf,
}

impl Config {
    /// What this node signs with: its node key when it has one, otherwise the cluster secret.
    /// `None` only for a file [`load`] would have refused.
    pub fn credential(&self) -> Option<crate::rpc::sign::Credential<'_>> {
        use crate::rpc::sign::Credential;
        match (
            self.worker().and_then(|w| w.key.as_ref()),
            &self.default.password,
        ) {
            (Some(key), _) => Some(Credential::NodeKey(key)),
            (None, Some(secret)) => Some(Credential::Cluster(secret)),
            (None, None) => None,
        }
    }

    /// The signer this node uses as `node`.
    pub fn signer(
        &self,
        node: impl Into<String>,
    ) -> Result<crate::rpc::sign::Signer, crate::rpc::sign::BadNodeKey> {
        match self.credential() {
            Some(c) => crate::rpc::sign::Signer::new(c, node),
            None => Err(crate::rpc::sign::BadNodeKey),
        }
    }

    /// The worker section, when this is a worker node.
    pub fn worker(&self) -> Option<&WorkerConfig> {
        match &self.role {
            Role::Worker { worker, .. } => Some(worker),
            Role::Viewserver(_) => None,
        }
    }

    /// The controller section, when this node may become controller.
    pub fn controller(&self) -> Option<&ControllerConfig> {
        match &self.role {
            Role::Worker { controller, .. } => controller.as_ref(),
            Role::Viewserver(_) => None,
        }
    }
}
