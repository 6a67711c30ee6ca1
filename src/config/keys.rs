//! Every key of a config file, declared once: its section, name, gobearmon's camelCase
//! alias, type, default and integer bounds, with its doc. The [`sections!`] macro turns each
//! line into a field of the section's `*Keys` struct, an entry of the known-key table (unknown
//! keys, suggestions, which values are secret) and one typed read, so a key cannot be read
//! under a name the table does not know. Rules that span keys or ask more than a type (a
//! listen address on every interface needs `advertise_addr`, `lease` above
//! `heartbeat_interval`) are in `validate.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Secret;
use toml::Table;

use super::read::{FromToml, Key, Reader, Section};

/// Declares the sections. Each section is `/// doc` `name => StructName { keys }`, each key
/// `/// doc` `name ["alias", ...]: Type = default, min..=max;` where the alias list is optional
/// and `min..=max` is for integers only (required for them).
macro_rules! sections {
    ($(
        $(#[doc = $sdoc:literal])*
        $section:ident => $Keys:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident $([$($alias:literal),+])? : $ty:ty = $default:expr
                    $(, $min:literal ..= $max:expr)? ;
            )*
        }
    )*) => {
        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $Keys {
                $( $(#[doc = $doc])* pub $field: $ty, )*
            }

            /// The defaults: what a file that leaves every key out gets.
            impl Default for $Keys {
                fn default() -> $Keys {
                    $Keys { $( $field: $default, )* }
                }
            }

            impl $Keys {
                const KEYS: &'static [Key] = &[$(
                    Key {
                        name: stringify!($field),
                        aliases: &[$($($alias),+)?],
                        secret: <$ty as FromToml>::SECRET,
                    },
                )*];

                /// Reads every key of the section, reporting wrongly typed values (which
                /// then read as their default).
                fn read(r: &mut Reader<'_>, s: &Section) -> $Keys {
                    let d = $Keys::default();
                    $Keys { $(
                        $field: r.read(s, stringify!($field), d.$field, sections!(@range $($min, $max)?)),
                    )* }
                }
            }
        )*

        /// Every section with its keys.
        pub(super) const SECTIONS: &[(&str, &[Key])] = &[$( (stringify!($section), $Keys::KEYS), )*];

        /// A whole file, every key read and typed, nothing validated across keys yet.
        pub(super) struct Files {
            $( pub $section: File<$Keys>, )*
        }

        impl Files {
            /// Whether every key of `section` holds its declared default.
            #[cfg(test)]
            fn is_default(&self, section: &str) -> bool {
                match section {
                    $( stringify!($section) => self.$section.keys == $Keys::default(), )*
                    _ => false,
                }
            }
        }

        /// Collects every section first (unknown keys, `${NAME}`), then reads their keys.
        pub(super) fn read(r: &mut Reader<'_>, table: &Table) -> Files {
            $( let $section = r.section(table, stringify!($section), $Keys::KEYS); )*
            Files {
                $( $section: File { present: $section.present, keys: $Keys::read(r, &$section) }, )*
            }
        }
    };
    (@range) => { None };
    (@range $min:literal, $max:expr) => { Some(($min, $max)) };
}

/// One section of a file.
pub(super) struct File<K> {
    /// Whether the file has the section at all.
    pub present: bool,
    pub keys: K,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn any_ip(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

sections! {
    /// `[default]`: keys every node has.
    default => DefaultKeys {
        /// The cluster secret every node key is derived from (at least 16 characters).
        password: Option<Secret> = None;
        /// Debug logging (gobearmon's `debug`).
        debug: bool = false;
    }

    /// `[controller]`: a worker that may become controller.
    controller => ControllerKeys {
        /// Listen address of the controller API (workers and `gobearmon status`).
        addr: SocketAddr = any_ip(8881);
        /// The address other nodes reach the controller API at (default: `addr`).
        advertise_addr ["advertiseAddr"]: Option<String> = None;
        /// MySQL/MariaDB URLs, tried in turn.
        database: Vec<Secret> = Vec::new();
        /// Distinct workers that must agree in one round (overridable per check).
        confirmations: u32 = 2, 1..=100;
        /// How often checks, contacts and alerts are re-read for changes.
        reload_period ["reloadPeriod"]: Duration = secs(10);
        /// A check handed to a worker that has not answered within this is handed out again.
        assignment_timeout ["assignmentTimeout"]: Duration = secs(120);
        /// Attempts per notification before it is marked failed and the admin is mailed.
        delivery_attempts ["deliveryAttempts"]: u32 = 8, 1..=1000;
        /// Wait before the second attempt; it doubles after each failure.
        delivery_backoff ["deliveryBackoff"]: Duration = secs(5);
        /// The longest wait between two attempts.
        delivery_backoff_max ["deliveryBackoffMax"]: Duration = secs(600);
        /// Bound on one delivery attempt (connect plus send).
        delivery_timeout ["deliveryTimeout"]: Duration = secs(30);
        /// Deliveries in flight at once.
        delivery_concurrency ["deliveryConcurrency"]: usize = 16, 1..=1024;
        /// Admin notices of one kind are sent at most once per this period.
        admin_interval ["adminInterval"]: Duration = secs(3600);
        /// Dead man's switch URL, called while this node acts as a healthy controller.
        heartbeat_url ["heartbeatUrl"]: Option<Secret> = None;
        /// How often `heartbeat_url` is called (100ms to 1h).
        heartbeat_interval ["heartbeatInterval"]: Duration = secs(60);
        /// The workers of one round come from different `[worker] location`s.
        distinct_locations ["distinctLocations"]: bool = false;
        /// `/metrics` has per-worker probe series beside the per-check ones.
        metrics_per_worker ["metricsPerWorker"]: bool = true;
        /// More flips than this within `flap_window` is flapping.
        flap_flips: u32 = 5, 1..=10_000;
        /// The window of `flap_flips` (1s to 7 days).
        flap_window: Duration = secs(3600);
        /// More flips than this within `storm_window` is a storm: notifications become digests.
        storm_flips: u32 = 20, 1..=1_000_000;
        /// The window of `storm_flips` (1s to 1 day).
        storm_window: Duration = secs(60);
        /// How long a contact's rows wait for more to fold with them (up to 10m).
        storm_wait: Duration = Duration::ZERO;
        /// A URL that receives every meta-alert as JSON.
        admin_webhook ["adminWebhook"]: Option<Secret> = None;
        /// Signs the admin webhook's body like a contact webhook's `secret`.
        admin_webhook_secret ["adminWebhookSecret"]: Option<Secret> = None;
        /// Meta-alert: no controller has been alive for this long.
        no_controller_alert ["noControllerAlert"]: Duration = secs(60);
        /// Meta-alert: a worker has not polled for this long.
        stale_worker_alert ["staleWorkerAlert"]: Duration = secs(300);
        /// Meta-alert: the oldest pending notification is older than this.
        outbox_stuck_alert ["outboxStuckAlert"]: Duration = secs(600);
        /// Meta-alert: a viewserver member has not answered for this long.
        viewserver_down_alert ["viewserverDownAlert"]: Duration = secs(60);
        /// Meta-alert: no database node has answered for this long (sent without the database).
        db_down_alert: Duration = secs(30);
    }

    /// `[worker]`.
    worker => WorkerKeys {
        /// Stable node id (required); results and votes are counted per id.
        id: Option<String> = None;
        /// Where the worker runs, shown in `gobearmon status`.
        location: String = String::new();
        /// The viewserver group members (`host:port`; required).
        view_addr ["viewAddr"]: Vec<String> = Vec::new();
        /// Checks run at once (gobearmon's `numThreads`).
        num_threads ["numThreads"]: usize = 64, 1..=100_000;
        /// Listen address for `/ready`, `/metrics` and `/disconnect`.
        addr: SocketAddr = any_ip(8891);
        /// How often the worker heartbeats the viewserver group.
        heartbeat_interval ["heartbeatInterval"]: Duration = secs(1);
        /// A controller acts only while its last heartbeat reply is younger than this.
        lease: Duration = secs(3);
        /// Results kept while no controller answers.
        result_buffer ["resultBuffer"]: usize = 10_000, 1..=i64::MAX;
        /// After `SIGUSR1` or `gobearmon disconnect`, how long the worker stays away.
        disconnect_pause ["disconnectPause"]: Duration = secs(60);
        /// This worker's own node key, instead of the cluster secret.
        key: Option<Secret> = None;
        /// Reference targets that judge this worker's own network.
        canaries: Vec<String> = Vec::new();
        /// How often the canaries are probed (at least 200ms).
        canary_interval ["canaryInterval"]: Duration = secs(10);
        /// When set, `/metrics` answers only `Authorization: Bearer` with this token.
        metrics_token ["metricsToken"]: Option<Secret> = None;
    }

    /// `[viewserver]`.
    viewserver => ViewserverKeys {
        /// This member's Raft id: its position in `peers`, from 1.
        id: u64 = 1, 1..=5;
        /// Listen address (Raft RPC and heartbeats).
        addr: SocketAddr = any_ip(7000);
        /// The whole group in id order, this node included (1, 3 or 5 members).
        peers: Vec<String> = Vec::new();
        /// Raft log, vote and snapshots.
        data_dir ["dataDir"]: PathBuf = PathBuf::from("/var/lib/gobearmon/viewserver");
        /// Optional allow-list of worker ids that may be named controller.
        controller: Vec<String> = Vec::new();
        /// A controller silent for this long is replaced.
        controller_timeout ["controllerTimeout"]: Duration = super::DEFAULT_CONTROLLER_TIMEOUT;
        /// Raft heartbeat period between members.
        raft_heartbeat ["raftHeartbeat"]: Duration = ms(250);
        /// Raft election timeout (more than twice `raft_heartbeat`).
        raft_election_timeout ["raftElectionTimeout"]: Duration = ms(1000);
    }

    /// `[listen]`: what every listener of the node admits (see README, "Security").
    listen => ListenKeys {
        /// Unauthenticated connections one listener holds; beyond, the least recently active
        /// one is closed for the newcomer.
        max_connections: usize = 4096, 16..=1_000_000;
        /// Unauthenticated connections one listener holds from one source address; beyond,
        /// that source's new connections are closed at once.
        max_per_source: usize = 128, 1..=1_000_000;
        /// Accept to a complete first request head: TLS handshake, protocol sniff, headers.
        head_timeout: Duration = secs(10);
        /// An unauthenticated connection with no request in flight, or making no progress, for
        /// this long is closed (node connections: 2 minutes).
        idle_timeout: Duration = secs(60);
        /// Bound on reading one request body.
        body_timeout: Duration = secs(30);
    }

    /// `[smtp]`: email contacts and admin notices.
    smtp => SmtpKeys {
        /// SMTP server host; email is not configured without it.
        host: Option<String> = None;
        /// Server port (465 means implicit TLS unless `tls` says otherwise).
        port: u16 = 25, 1..=65535;
        /// The `From:` address.
        from: String = String::from("gobearmon@localhost");
        /// AUTH user; no AUTH without it.
        username: Option<String> = None;
        /// AUTH password.
        password: Option<Secret> = None;
        /// Where admin notices go.
        admin: Option<String> = None;
        /// `auto`, `starttls`, `tls` or `none` (default: `tls` on port 465, else `auto`).
        tls: Option<super::SmtpTls> = None;
        /// A PEM CA trusted for the server's certificate besides the system's roots.
        ca: Option<PathBuf> = None;
        /// Bound on connecting and on a whole send.
        timeout: Duration = secs(30);
    }

    /// `[dns]`.
    dns => DnsKeys {
        /// The default nameserver of dns checks that name none (`ip` or `ip:port`).
        server: Option<String> = None;
    }

    /// `[twilio]`.
    twilio => TwilioKeys {
        /// The Twilio account.
        account_sid ["accountSid"]: String = String::new();
        /// Its auth token.
        auth_token ["authToken"]: Option<Secret> = None;
        /// The calling number.
        from: String = String::new();
        /// The API's base URL; a test points it at a local stand-in.
        base_url ["baseUrl"]: String = String::from("https://api.twilio.com");
        /// Messages an hour to one `sms` or `voice` contact without `contacts.max_per_hour`.
        max_per_hour ["maxPerHour"]: u32 = 30, 1..=100_000;
    }

    /// `[tls]`: TLS on every listener and for node-to-node clients (all three required).
    tls => TlsKeys {
        /// PEM certificate chain this node presents.
        cert: Option<PathBuf> = None;
        /// PEM private key.
        key: Option<PathBuf> = None;
        /// PEM CA that signs the other nodes' certificates.
        ca: Option<PathBuf> = None;
    }

    /// `[history]`: result history kept by the acting controller.
    history => HistoryKeys {
        /// Whether results are kept at all.
        enabled: bool = true;
        /// Raw results older than this are pruned (at least 2h).
        raw_retention ["rawRetention"]: Duration = secs(7 * 86_400);
        /// Rollups older than this are pruned; `"forever"` (`None`) keeps them.
        rollup_retention ["rollupRetention"]: Option<Duration> = None;
    }

    /// `[web]`: the JSON API and dashboard of a controller-capable worker.
    web => WebKeys {
        /// Listen address; no API listener without it.
        addr: Option<SocketAddr> = None;
        /// Bearer tokens that may read the API (required with `addr`).
        api_tokens ["apiTokens"]: Vec<Secret> = Vec::new();
        /// The base URL `gobearmon push-url` prints push URLs with.
        public_url: Option<String> = None;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, parse};

    /// A file with every section, valid as a worker (or, with `viewserver`, as a member).
    fn base(viewserver: bool) -> String {
        let role = if viewserver {
            "[viewserver]\npeers = [\"a:1\"]\n"
        } else {
            "[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n\
             [controller]\naddr = \"127.0.0.1:1\"\ndatabase = \"mysql://u:p@h/d\"\n\
             [web]\naddr = \"127.0.0.1:2\"\napi_tokens = \"token-0123456789abcdef\"\n"
        };
        format!(
            "[default]\npassword = \"0123456789abcdef\"\n{role}[smtp]\n[dns]\n[twilio]\n\
             [tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\n[history]\n[listen]\n"
        )
    }

    /// `text` with `[section] name` set to a table, in place of the key's value in `text`.
    fn with(text: &str, section: &str, key: &Key, name: &str) -> String {
        let mut file: Table = text.parse().unwrap();
        let Some(toml::Value::Table(s)) = file.get_mut(section) else {
            panic!("no [{section}] in the base file");
        };
        s.remove(key.name);
        let mut odd = Table::new();
        odd.insert("x".into(), toml::Value::Integer(1));
        s.insert(name.into(), toml::Value::Table(odd));
        toml::to_string(&file).unwrap()
    }

    /// Every declared key is read under its declared name (and its alias): a value no type
    /// accepts is reported for exactly that key. A key that was declared but looked up under
    /// another name would read as its default and pass silently.
    #[test]
    fn every_declared_key_and_alias_is_read() {
        assert!(parse(&base(false), Path::new("t"), &|_| None).is_ok());
        assert!(parse(&base(true), Path::new("t"), &|_| None).is_ok());
        for (section, keys) in SECTIONS {
            let text = base(*section == "viewserver");
            for key in *keys {
                for name in std::iter::once(key.name).chain(key.aliases.iter().copied()) {
                    let file = with(&text, section, key, name);
                    let problems = match parse(&file, Path::new("t"), &|_| None) {
                        Err(ConfigError::Invalid { problems, .. }) => problems,
                        other => panic!("{section}.{name} = {{..}} accepted: {other:?}"),
                    };
                    let want = format!("{section}.{}", key.name);
                    assert!(
                        problems
                            .iter()
                            .any(|p| p.key == want && p.found.contains("x = 1") != key.secret),
                        "{section}.{name}: {problems:?}"
                    );
                }
            }
        }
    }

    /// The defaults other types offer are the declared ones, which a file that sets nothing
    /// gets.
    #[test]
    fn other_defaults_are_the_declared_ones() {
        let c = parse(&base(false), Path::new("t"), &|_| None).unwrap();
        let ctl = c.controller().unwrap();
        let vote = crate::vote::VoteConfig::default();
        assert_eq!(vote.assignment_timeout, ctl.assignment_timeout);
        assert_eq!(vote.confirmations, ctl.confirmations);
        assert_eq!(vote.distinct_locations, ctl.distinct_locations);
        assert_eq!(
            crate::policy::storm::StormRule::default(),
            ctl.delivery.storm
        );
        assert_eq!(crate::config::HistoryConfig::default(), c.history);
        let vs = parse(&base(true), Path::new("t"), &|_| None).unwrap();
        match vs.role {
            crate::config::Role::Viewserver(v) => {
                assert_eq!(
                    v.controller_timeout,
                    crate::config::DEFAULT_CONTROLLER_TIMEOUT
                )
            }
            _ => panic!("not a viewserver"),
        }
    }

    /// `(section, key, value)` for every "Default VALUE" a sample file states in the comment
    /// right above a key (set or commented out).
    fn stated_defaults(text: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let (mut section, mut comment) = (String::new(), String::new());
        for line in text.lines() {
            let bare = line.trim_start_matches(['#', ' ']);
            if let Some(s) = bare.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.to_string();
                comment.clear();
            } else if let Some((key, _)) = bare.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                if let Some(v) = comment.split("Default ").nth(1) {
                    let v = match v.strip_prefix('"') {
                        Some(q) => format!("\"{}\"", q.split('"').next().unwrap_or("")),
                        None => v
                            .split([' ', ';', ',', ')'])
                            .next()
                            .unwrap_or("")
                            .trim_end_matches('.')
                            .to_string(),
                    };
                    // Only a value, not prose ("Default nameserver of ...").
                    let value_like = v
                        .starts_with(|c: char| c.is_ascii_digit() || c == '"' || c == '[')
                        || v == "true"
                        || v == "false";
                    if value_like {
                        out.push((section.clone(), key.to_string(), v));
                    }
                }
                comment.clear();
            } else if line.starts_with('#') {
                comment.push_str(bare);
                comment.push(' ');
            } else {
                comment.clear();
            }
        }
        out
    }

    /// What a sample file says a key defaults to is what the declaration gives: setting the
    /// key to the stated value reads as the default section.
    #[test]
    fn samples_state_the_declared_defaults() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for file in ["gobearmon.worker.toml", "gobearmon.viewserver.toml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            for (section, key, value) in stated_defaults(&text) {
                let unit = |c: char| c.is_ascii_digit() || c == '.';
                let value = match value.trim_start_matches(unit) {
                    "ms" | "s" | "m" | "h" | "d" => format!("\"{value}\""),
                    _ => value,
                };
                let table: Table = format!("[{section}]\n{key} = {value}\n")
                    .parse()
                    .unwrap_or_else(|e| panic!("{file}: {section}.{key} = {value}: {e}"));
                let mut r = Reader::new(&|_| None);
                let files = read(&mut r, &table);
                assert!(
                    files.is_default(&section),
                    "{file} says {section}.{key} defaults to {value}; the declaration disagrees"
                );
                checked += 1;
            }
        }
        assert!(checked > 25, "only {checked} stated defaults found");
    }
}
