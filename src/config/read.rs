//! Reading a config file: TOML syntax, `${NAME}` substitution, aliases, defaults and
//! validation. Every problem in a file is collected and reported together, each naming the key,
//! what was found and what was expected. Secret values never appear in a problem.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::{
    Config, ControllerConfig, DefaultConfig, DeliveryConfig, DnsConfig, HistoryConfig,
    MetaAlertConfig, Role, Secret, SmtpConfig, SmtpTls, TlsConfig, TwilioConfig, ViewserverConfig,
    WebConfig, WorkerConfig,
};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`, or `section` for a whole section.
    pub key: String,
    /// What the file holds (secrets are never shown).
    pub found: String,
    /// What would be accepted.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: found {}, expected {}",
            self.key, self.found, self.expected
        )
    }
}

/// Why a config file could not be used. Not worth retrying: the file must be fixed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path} has {n} problem(s):\n{list}", n = problems.len(), list = list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Parses config text. `env` looks up `${NAME}` substitutions (the process environment in
/// [`load`]); `path` is only used in messages.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
    let mut r = Reader {
        problems: Vec::new(),
        env,
    };
    let config = r.config(&table, path);
    match config {
        Some(c) if r.problems.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: r.problems,
        }),
    }
}

/// A known key: its canonical snake_case name, gobearmon's aliases, and whether its value is
/// secret.
struct Key {
    name: &'static str,
    aliases: &'static [&'static str],
    secret: bool,
}

const fn k(name: &'static str) -> Key {
    Key {
        name,
        aliases: &[],
        secret: false,
    }
}

const fn alias(name: &'static str, aliases: &'static [&'static str]) -> Key {
    Key {
        name,
        aliases,
        secret: false,
    }
}

const fn secret(name: &'static str, aliases: &'static [&'static str]) -> Key {
    Key {
        name,
        aliases,
        secret: true,
    }
}

const SECTIONS: &[(&str, &[Key])] = &[
    ("default", &[secret("password", &[]), k("debug")]),
    (
        "controller",
        &[
            k("addr"),
            alias("advertise_addr", &["advertiseAddr"]),
            secret("database", &[]),
            k("confirmations"),
            alias("reload_period", &["reloadPeriod"]),
            alias("assignment_timeout", &["assignmentTimeout"]),
            alias("delivery_attempts", &["deliveryAttempts"]),
            alias("delivery_backoff", &["deliveryBackoff"]),
            alias("delivery_backoff_max", &["deliveryBackoffMax"]),
            alias("delivery_timeout", &["deliveryTimeout"]),
            alias("delivery_concurrency", &["deliveryConcurrency"]),
            alias("admin_interval", &["adminInterval"]),
            secret("heartbeat_url", &["heartbeatUrl"]),
            alias("heartbeat_interval", &["heartbeatInterval"]),
            alias("distinct_locations", &["distinctLocations"]),
            alias("metrics_per_worker", &["metricsPerWorker"]),
            k("flap_flips"),
            k("flap_window"),
            k("storm_flips"),
            k("storm_window"),
            k("storm_wait"),
            secret("admin_webhook", &["adminWebhook"]),
            secret("admin_webhook_secret", &["adminWebhookSecret"]),
            alias("no_controller_alert", &["noControllerAlert"]),
            alias("stale_worker_alert", &["staleWorkerAlert"]),
            alias("outbox_stuck_alert", &["outboxStuckAlert"]),
            alias("viewserver_down_alert", &["viewserverDownAlert"]),
        ],
    ),
    (
        "worker",
        &[
            k("id"),
            k("location"),
            alias("view_addr", &["viewAddr"]),
            alias("num_threads", &["numThreads"]),
            k("addr"),
            alias("heartbeat_interval", &["heartbeatInterval"]),
            k("lease"),
            alias("result_buffer", &["resultBuffer"]),
            alias("disconnect_pause", &["disconnectPause"]),
            secret("key", &[]),
            k("canaries"),
            alias("canary_interval", &["canaryInterval"]),
        ],
    ),
    (
        "viewserver",
        &[
            k("id"),
            k("addr"),
            k("peers"),
            alias("data_dir", &["dataDir"]),
            k("controller"),
            alias("controller_timeout", &["controllerTimeout"]),
            alias("raft_heartbeat", &["raftHeartbeat"]),
            alias("raft_election_timeout", &["raftElectionTimeout"]),
        ],
    ),
    (
        "smtp",
        &[
            k("host"),
            k("port"),
            k("from"),
            k("username"),
            secret("password", &[]),
            k("admin"),
            k("tls"),
            k("ca"),
            k("timeout"),
        ],
    ),
    ("dns", &[k("server")]),
    (
        "twilio",
        &[
            alias("account_sid", &["accountSid"]),
            secret("auth_token", &["authToken"]),
            k("from"),
            alias("base_url", &["baseUrl"]),
            alias("max_per_hour", &["maxPerHour"]),
        ],
    ),
    ("tls", &[k("cert"), k("key"), k("ca")]),
    (
        "history",
        &[
            k("enabled"),
            alias("raw_retention", &["rawRetention"]),
            alias("rollup_retention", &["rollupRetention"]),
        ],
    ),
    (
        "web",
        &[
            k("addr"),
            secret("api_tokens", &["apiTokens"]),
            k("public_url"),
        ],
    ),
];

/// The values of one section, keyed by canonical name, after aliases and substitution.
struct Section<'k> {
    name: &'static str,
    present: bool,
    keys: &'k [Key],
    values: Vec<(&'static str, Value)>,
}

struct Reader<'e> {
    problems: Vec<Problem>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

/// Lower-cases and maps `-` to `_`, the way gcfg compared names.
fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let name = normalize(name);
    candidates
        .map(|c| (strsim::levenshtein(&name, &normalize(c)), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// How a value is shown in a problem: its TOML form, or only its type when it is secret.
fn shown(v: &Value, secret: bool) -> String {
    if secret {
        return format!("{} (value hidden)", type_name(v));
    }
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Reader<'_> {
    fn problem(&mut self, key: String, found: impl Into<String>, expected: impl Into<String>) {
        self.problems.push(Problem {
            key,
            found: found.into(),
            expected: expected.into(),
        });
    }

    fn config(&mut self, table: &Table, path: &Path) -> Option<Config> {
        for (name, value) in table {
            let known = SECTIONS.iter().any(|(s, _)| normalize(name) == *s);
            if !known {
                let hint = match closest(name, SECTIONS.iter().map(|(s, _)| *s)) {
                    Some(c) => format!("a known section (did you mean [{c}]?)"),
                    None => format!(
                        "one of the sections {}",
                        SECTIONS
                            .iter()
                            .map(|(s, _)| format!("[{s}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.problem(name.clone(), "an unknown section", hint);
            } else if !value.is_table() {
                self.problem(name.clone(), type_name(value), "a [section] table");
            }
        }
        let mut sections: Vec<Section<'static>> = SECTIONS
            .iter()
            .map(|(name, keys)| self.section(table, name, keys))
            .collect();
        let mut take = |name: &str| {
            let i = sections.iter().position(|s| s.name == name);
            // Every name passed below is in SECTIONS.
            sections.remove(i.unwrap_or(0))
        };
        let default = take("default");
        let controller = take("controller");
        let worker = take("worker");
        let viewserver = take("viewserver");
        let smtp = take("smtp");
        let dns = take("dns");
        let twilio = take("twilio");
        let tls = take("tls");
        let history = take("history");
        let web = take("web");

        let default_config = self.default_section(&default);
        let role = self.role(&controller, &worker, &viewserver);
        if let (Some(d), Some(r)) = (&default_config, &role) {
            self.credentials(&default, d.password.is_some(), r);
        }
        let default = default_config;
        let smtp = self.smtp(&smtp);
        let dns = DnsConfig {
            server: self.opt_string(&dns, "server"),
        };
        let twilio = self.twilio(&twilio);
        let tls = self.tls(&tls);
        let history = self.history(&history);
        let web = self.web(&web, controller.present);
        Some(Config {
            path: path.to_path_buf(),
            default: default?,
            role: role?,
            smtp,
            dns,
            twilio,
            tls,
            history,
            web,
        })
    }

    /// Collects a section's keys under their canonical names, reporting unknown keys and
    /// substituting `${NAME}` in strings.
    fn section(
        &mut self,
        table: &Table,
        name: &'static str,
        keys: &'static [Key],
    ) -> Section<'static> {
        let mut section = Section {
            name,
            present: false,
            keys,
            values: Vec::new(),
        };
        let Some((_, Value::Table(t))) = table.iter().find(|(n, _)| normalize(n) == name) else {
            return section;
        };
        section.present = true;
        for (raw_key, value) in t {
            let norm = normalize(raw_key);
            let key = keys
                .iter()
                .find(|k| k.name == norm || k.aliases.iter().any(|a| normalize(a) == norm));
            let Some(key) = key else {
                let names = keys
                    .iter()
                    .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()));
                let expected = match closest(raw_key, names) {
                    Some(c) => {
                        let canonical = keys
                            .iter()
                            .find(|k| k.name == c || k.aliases.contains(&c))
                            .map_or(c, |k| k.name);
                        format!("a known key (did you mean `{canonical}`?)")
                    }
                    None => format!(
                        "one of {}",
                        keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                    ),
                };
                self.problem(format!("{name}.{raw_key}"), "an unknown key", expected);
                continue;
            };
            if section.values.iter().any(|(n, _)| *n == key.name) {
                self.problem(
                    format!("{name}.{raw_key}"),
                    "a second spelling of a key already set",
                    format!("`{}` set once", key.name),
                );
                continue;
            }
            let value = self.substitute(&format!("{name}.{}", key.name), value, key.secret);
            section.values.push((key.name, value));
        }
        section
    }

    fn substitute(&mut self, key: &str, value: &Value, secret: bool) -> Value {
        match value {
            Value::String(s) => Value::String(self.substitute_str(key, s, secret)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute(key, v, secret))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn substitute_str(&mut self, key: &str, s: &str, secret: bool) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.problem(
                    key.to_string(),
                    if secret {
                        "an unclosed ${ (value hidden)".to_string()
                    } else {
                        format!("{s:?} with an unclosed ${{")
                    },
                    "${NAME} with a closing brace",
                );
                return out;
            };
            let var = &after[..end];
            match (self.env)(var) {
                Some(v) => out.push_str(&v),
                None => {
                    // Keep the reference as written so no second, derived problem
                    // ("nothing", "too short") is reported for the same key.
                    out.push_str(&rest[start..start + 2 + end + 1]);
                    self.problem(
                        key.to_string(),
                        format!("${{{var}}}"),
                        format!("the environment variable {var} to be set"),
                    )
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn get<'s>(&self, s: &'s Section, key: &str) -> Option<&'s Value> {
        s.values.iter().find(|(n, _)| *n == key).map(|(_, v)| v)
    }

    fn is_secret(s: &Section, key: &str) -> bool {
        s.keys.iter().any(|k| k.name == key && k.secret)
    }

    fn wrong(&mut self, s: &Section, key: &str, v: &Value, expected: &str) {
        let secret = Self::is_secret(s, key);
        self.problem(format!("{}.{key}", s.name), shown(v, secret), expected);
    }

    fn opt_string(&mut self, s: &Section, key: &str) -> Option<String> {
        match self.get(s, key)? {
            Value::String(v) if v.is_empty() => None,
            Value::String(v) => Some(v.clone()),
            v => {
                let v = v.clone();
                self.wrong(s, key, &v, "a string");
                None
            }
        }
    }

    fn string_or(&mut self, s: &Section, key: &str, default: &str) -> String {
        self.opt_string(s, key)
            .unwrap_or_else(|| default.to_string())
    }

    fn required_string(&mut self, s: &Section, key: &str, what: &str) -> Option<String> {
        let v = self.opt_string(s, key);
        if v.is_none() && !matches!(self.get(s, key), Some(v) if !v.is_str()) {
            self.problem(format!("{}.{key}", s.name), "nothing", what.to_string());
        }
        v
    }

    fn bool_or(&mut self, s: &Section, key: &str, default: bool) -> bool {
        match self.get(s, key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(v) => {
                let v = v.clone();
                self.wrong(s, key, &v, "true or false");
                default
            }
        }
    }

    /// An integer in `min..=max`.
    fn int_or(&mut self, s: &Section, key: &str, default: i64, min: i64, max: i64) -> i64 {
        match self.get(s, key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(i) => *i,
            Some(v) => {
                let v = v.clone();
                let expected = if max == i64::MAX {
                    format!("an integer of at least {min}")
                } else {
                    format!("an integer from {min} to {max}")
                };
                self.wrong(s, key, &v, &expected);
                default
            }
        }
    }

    /// A duration: a number of seconds (`4`, `0.5`) or a string with a unit (`"250ms"`,
    /// `"4s"`, `"2m"`, `"1h"`). Must be positive.
    fn duration_or(&mut self, s: &Section, key: &str, default: Duration) -> Duration {
        let Some(v) = self.get(s, key) else {
            return default;
        };
        let parsed = match v {
            Value::Integer(i) if *i > 0 => Some(Duration::from_secs(*i as u64)),
            Value::Float(f) if *f > 0.0 && f.is_finite() => Duration::try_from_secs_f64(*f).ok(),
            Value::String(text) => parse_duration(text).filter(|d| !d.is_zero()),
            _ => None,
        };
        match parsed {
            Some(d) => d,
            None => {
                let v = v.clone();
                self.wrong(
                    s,
                    key,
                    &v,
                    "a positive duration: seconds as a number, or a string like \"500ms\", \"4s\", \"2m\"",
                );
                default
            }
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    fn string_list(&mut self, s: &Section, key: &str) -> Vec<String> {
        match self.get(s, key) {
            None => Vec::new(),
            Some(Value::String(v)) if v.is_empty() => Vec::new(),
            Some(Value::String(v)) => vec![v.clone()],
            Some(Value::Array(items)) if items.iter().all(Value::is_str) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .filter(|v| !v.is_empty())
                .collect(),
            Some(v) => {
                let v = v.clone();
                self.wrong(s, key, &v, "a string or an array of strings");
                Vec::new()
            }
        }
    }

    fn default_section(&mut self, s: &Section) -> Option<DefaultConfig> {
        let password = self.opt_string(s, "password");
        if let Some(p) = &password
            && p.chars().count() < 16
        {
            self.problem(
                "default.password".into(),
                format!("a secret of {} characters", p.chars().count()),
                "at least 16 characters",
            );
        }
        let debug = self.bool_or(s, "debug", false);
        Some(DefaultConfig {
            password: password.map(Secret::new),
            debug,
        })
    }

    /// Every node needs the cluster secret, except a worker given its own node key instead.
    fn credentials(&mut self, default: &Section, password: bool, role: &Role) {
        let key = match role {
            Role::Worker { worker, .. } => worker.key.is_some(),
            Role::Viewserver(_) => false,
        };
        let wrongly_typed = self.get(default, "password").is_some_and(|v| !v.is_str());
        match (password, key) {
            (false, false) if !wrongly_typed => {
                let expected = match role {
                    Role::Viewserver(_) => {
                        "the cluster secret shared by every node (at least 16 characters)"
                    }
                    Role::Worker { .. } => {
                        "the cluster secret shared by every node (at least 16 characters), or, on a probe-only worker, its node key as worker.key"
                    }
                };
                self.problem("default.password".into(), "nothing", expected);
            }
            (true, true) => self.problem(
                "worker.key".into(),
                "both default.password and worker.key",
                "one of them: the cluster secret, or only this worker's node key",
            ),
            _ => {}
        }
    }

    fn role(
        &mut self,
        controller: &Section,
        worker: &Section,
        viewserver: &Section,
    ) -> Option<Role> {
        let worker_role = worker.present || controller.present;
        match (worker_role, viewserver.present) {
            (true, true) => {
                self.problem(
                    "viewserver".into(),
                    "both [viewserver] and [worker]/[controller] in one file".to_string(),
                    "one role per file: a viewserver file or a worker file",
                );
                None
            }
            (false, false) => {
                self.problem(
                    "worker".into(),
                    "neither [worker] nor [viewserver]".to_string(),
                    "one role per file: [viewserver] for a viewserver node, [worker] (with [controller] when it may become controller) for a worker node",
                );
                None
            }
            (true, false) => {
                if !worker.present {
                    self.problem(
                        "worker".into(),
                        "[controller] without [worker]".to_string(),
                        "a [worker] section: a controller is a worker that may be elected",
                    );
                    return None;
                }
                let worker = self.worker(worker);
                let controller = if controller.present {
                    Some(self.controller(controller)?)
                } else {
                    None
                };
                Some(Role::Worker {
                    worker: worker?,
                    controller,
                })
            }
            (false, true) => Some(Role::Viewserver(self.viewserver(viewserver)?)),
        }
    }

    fn controller(&mut self, s: &Section) -> Option<ControllerConfig> {
        let addr = self.string_or(s, "addr", "0.0.0.0:8881");
        let advertise_addr = match self.opt_string(s, "advertise_addr") {
            Some(a) => a,
            None if addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:") => {
                self.problem(
                    "controller.advertise_addr".into(),
                    "nothing".to_string(),
                    format!("the address workers reach this controller at (controller.addr {addr:?} listens on every interface)"),
                );
                addr.clone()
            }
            None => addr.clone(),
        };
        let database: Vec<Secret> = self
            .string_list(s, "database")
            .into_iter()
            .map(Secret::new)
            .collect();
        if database.is_empty()
            && self
                .get(s, "database")
                .is_none_or(|v| v.is_str() || v.is_array())
        {
            self.problem(
                "controller.database".into(),
                "an empty list",
                "at least one MySQL URL like \"mysql://user:password@host:3306/gobearmon\"",
            );
        }
        for (i, dsn) in database.iter().enumerate() {
            if let Err(why) = mysql_async::Opts::from_url(dsn.expose()) {
                let kind = match why {
                    mysql_async::UrlError::UnsupportedScheme { .. } => "an unsupported URL scheme",
                    mysql_async::UrlError::Parse(_) => "an unparsable URL",
                    _ => "an invalid URL",
                };
                self.problem(
                    format!("controller.database[{i}]"),
                    format!("{kind} (value hidden)"),
                    "a URL like \"mysql://user:password@host:3306/gobearmon\"",
                );
            }
        }
        let confirmations = self.int_or(s, "confirmations", 2, 1, 100) as u32;
        let reload_period = self.duration_or(s, "reload_period", Duration::from_secs(10));
        let assignment_timeout =
            self.duration_or(s, "assignment_timeout", Duration::from_secs(120));
        let delivery = DeliveryConfig {
            attempts: self.int_or(s, "delivery_attempts", 8, 1, 1000) as u32,
            backoff: self.duration_or(s, "delivery_backoff", Duration::from_secs(5)),
            backoff_max: self.duration_or(s, "delivery_backoff_max", Duration::from_secs(600)),
            timeout: self.duration_or(s, "delivery_timeout", Duration::from_secs(30)),
            concurrency: self.int_or(s, "delivery_concurrency", 16, 1, 1024) as usize,
            admin_interval: self.duration_or(s, "admin_interval", Duration::from_secs(3600)),
            storm: self.storm(s),
            paid_max_per_hour: 30,
        };
        let heartbeat_url = self.opt_string(s, "heartbeat_url").map(Secret::new);
        if let Some(u) = &heartbeat_url
            && !url::Url::parse(u.expose()).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            self.problem(
                "controller.heartbeat_url".into(),
                "a value that is not an http(s) URL (value hidden)",
                "the URL a dead man's switch service gave you, like \"https://hc-ping.com/<uuid>\"",
            );
        }
        let heartbeat_interval = self.duration_or(s, "heartbeat_interval", Duration::from_secs(60));
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&heartbeat_interval) {
            self.problem(
                "controller.heartbeat_interval".into(),
                format!("{heartbeat_interval:?}"),
                "from 100ms to 1h",
            );
        }
        let meta = self.meta_alerts(s);
        let flap_window = self.duration_or(s, "flap_window", Duration::from_secs(3600));
        if !(Duration::from_secs(1)..=Duration::from_secs(7 * 86_400)).contains(&flap_window) {
            self.problem(
                "controller.flap_window".into(),
                format!("{flap_window:?}"),
                "from 1s to 7 days",
            );
        }
        let flap = crate::policy::flap::FlapRule {
            flips: self.int_or(s, "flap_flips", 5, 1, 10_000) as u32,
            window_ms: flap_window.as_millis() as i64,
        };
        Some(ControllerConfig {
            meta,
            flap,
            addr,
            advertise_addr,
            database,
            confirmations,
            reload_period,
            assignment_timeout,
            delivery,
            heartbeat_url,
            heartbeat_interval,
            distinct_locations: self.bool_or(s, "distinct_locations", false),
            metrics_per_worker: self.bool_or(s, "metrics_per_worker", true),
        })
    }

    fn worker(&mut self, s: &Section) -> Option<WorkerConfig> {
        let id = self.required_string(s, "id", "a stable node id such as \"w1\"");
        if let Some(id) = &id
            && !valid_node_id(id)
        {
            self.problem(
                "worker.id".into(),
                format!("{id:?}"),
                "1 to 64 characters from A-Z a-z 0-9 . _ -",
            );
        }
        let location = self.string_or(s, "location", "");
        let view_addr = self.string_list(s, "view_addr");
        if view_addr.is_empty()
            && self
                .get(s, "view_addr")
                .is_none_or(|v| v.is_str() || v.is_array())
        {
            self.problem(
                "worker.view_addr".into(),
                "nothing",
                "the viewserver group members, like [\"vs1:7000\", \"vs2:7000\", \"vs3:7000\"]",
            );
        }
        let num_threads = self.int_or(s, "num_threads", 64, 1, 100_000) as usize;
        let addr = self.string_or(s, "addr", "0.0.0.0:8891");
        let heartbeat_interval = self.duration_or(s, "heartbeat_interval", Duration::from_secs(1));
        let lease = self.duration_or(s, "lease", Duration::from_secs(3));
        if lease <= heartbeat_interval {
            self.problem(
                "worker.lease".into(),
                format!("{lease:?}"),
                format!("longer than worker.heartbeat_interval ({heartbeat_interval:?})"),
            );
        }
        let result_buffer = self.int_or(s, "result_buffer", 10_000, 1, i64::MAX) as usize;
        let disconnect_pause = self.duration_or(s, "disconnect_pause", Duration::from_secs(60));
        let key = self.opt_string(s, "key").map(Secret::new);
        if let Some(k) = &key
            && crate::rpc::sign::parse_node_key(k).is_err()
        {
            self.problem(
                "worker.key".into(),
                format!("a value of {} characters", k.expose().chars().count()),
                "64 hex digits, as printed by `gobearmon node-key ID --config FILE`",
            );
        }
        let canaries = self.string_list(s, "canaries");
        for (i, url) in canaries.iter().enumerate() {
            if let Err(e) = crate::canary::parse(url) {
                self.problem(
                    format!("worker.canaries[{i}]"),
                    format!("{:?}: {}", e.url, e.why),
                    "tcp://host:port, http(s)://..., icmp://host or dns://server/name",
                );
            }
        }
        let canary_interval = self.duration_or(s, "canary_interval", Duration::from_secs(10));
        if canary_interval < Duration::from_millis(200) {
            self.problem(
                "worker.canary_interval".into(),
                format!("{canary_interval:?}"),
                "at least 200ms",
            );
        }
        Some(WorkerConfig {
            canaries,
            canary_interval,
            id: id?,
            location,
            view_addr,
            num_threads,
            addr,
            heartbeat_interval,
            lease,
            result_buffer,
            disconnect_pause,
            key,
        })
    }

    /// The meta-alert keys of `[controller]`.
    fn meta_alerts(&mut self, s: &Section) -> MetaAlertConfig {
        let admin_webhook = self.opt_string(s, "admin_webhook").map(Secret::new);
        if let Some(u) = &admin_webhook
            && !url::Url::parse(u.expose()).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            self.problem(
                "controller.admin_webhook".into(),
                "a value that is not an http(s) URL (value hidden)",
                "the http(s) URL that receives the meta-alerts as JSON",
            );
        }
        MetaAlertConfig {
            admin_webhook,
            admin_webhook_secret: self.opt_string(s, "admin_webhook_secret").map(Secret::new),
            no_controller: self.duration_or(s, "no_controller_alert", Duration::from_secs(60)),
            stale_worker: self.duration_or(s, "stale_worker_alert", Duration::from_secs(300)),
            outbox_stuck: self.duration_or(s, "outbox_stuck_alert", Duration::from_secs(600)),
            viewserver_down: self.duration_or(s, "viewserver_down_alert", Duration::from_secs(60)),
        }
    }

    fn viewserver(&mut self, s: &Section) -> Option<ViewserverConfig> {
        let id = self.int_or(s, "id", 1, 1, 5) as u64;
        let addr = self.string_or(s, "addr", "0.0.0.0:7000");
        let peers = self.string_list(s, "peers");
        if ![1, 3, 5].contains(&peers.len()) {
            self.problem(
                "viewserver.peers".into(),
                format!("{} member(s)", peers.len()),
                "1, 3 or 5 members, this node included",
            );
        } else if id as usize > peers.len() {
            self.problem(
                "viewserver.id".into(),
                id.to_string(),
                format!(
                    "this node's position in viewserver.peers (1 to {})",
                    peers.len()
                ),
            );
        }
        let data_dir =
            PathBuf::from(self.string_or(s, "data_dir", "/var/lib/gobearmon/viewserver"));
        let controller = self.string_list(s, "controller");
        let controller_timeout =
            self.duration_or(s, "controller_timeout", super::DEFAULT_CONTROLLER_TIMEOUT);
        let raft_heartbeat = self.duration_or(s, "raft_heartbeat", Duration::from_millis(250));
        let raft_election_timeout =
            self.duration_or(s, "raft_election_timeout", Duration::from_millis(1000));
        if raft_election_timeout <= raft_heartbeat * 2 {
            self.problem(
                "viewserver.raft_election_timeout".into(),
                format!("{raft_election_timeout:?}"),
                format!("more than twice viewserver.raft_heartbeat ({raft_heartbeat:?})"),
            );
        }
        Some(ViewserverConfig {
            id,
            addr,
            peers,
            data_dir,
            controller,
            controller_timeout,
            raft_heartbeat,
            raft_election_timeout,
        })
    }

    fn smtp(&mut self, s: &Section) -> SmtpConfig {
        let host = self.opt_string(s, "host");
        let port = self.int_or(s, "port", 25, 1, 65535) as u16;
        let tls = match self.opt_string(s, "tls").as_deref() {
            None if port == 465 => SmtpTls::Tls,
            None | Some("auto") => SmtpTls::Auto,
            Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(other) => {
                self.problem(
                    "smtp.tls".into(),
                    format!("{other:?}"),
                    "one of \"auto\", \"starttls\", \"tls\", \"none\"",
                );
                SmtpTls::Auto
            }
        };
        let from = self.string_or(s, "from", "gobearmon@localhost");
        let username = self.opt_string(s, "username");
        let password = self.opt_string(s, "password").map(Secret::new);
        let admin = self.opt_string(s, "admin");
        let timeout = self.duration_or(s, "timeout", Duration::from_secs(30));
        let ca = self.opt_string(s, "ca").map(PathBuf::from);
        if ca.is_some() && tls == SmtpTls::None {
            self.problem(
                "smtp.ca".into(),
                "a CA with smtp.tls = \"none\"".to_string(),
                "smtp.tls \"auto\", \"starttls\" or \"tls\", or no smtp.ca",
            );
        }
        SmtpConfig {
            host,
            port,
            from,
            username,
            password,
            admin,
            tls,
            ca,
            timeout,
        }
    }

    /// `storm_flips`, `storm_window`, `storm_wait`.
    fn storm(&mut self, s: &Section) -> crate::policy::storm::StormRule {
        let d = crate::policy::storm::StormRule::default();
        let window = self.duration_or(s, "storm_window", Duration::from_millis(d.window_ms as u64));
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&window) {
            self.problem(
                "controller.storm_window".into(),
                format!("{window:?}"),
                "from 1s to 1 day",
            );
        }
        let wait = self.duration_or(s, "storm_wait", Duration::ZERO);
        if wait > Duration::from_secs(600) {
            self.problem(
                "controller.storm_wait".into(),
                format!("{wait:?}"),
                "from 0s to 10m",
            );
        }
        crate::policy::storm::StormRule {
            flips: self.int_or(s, "storm_flips", i64::from(d.flips), 1, 1_000_000) as u32,
            window_ms: window.as_millis() as i64,
            wait_ms: wait.as_millis() as i64,
        }
    }

    fn twilio(&mut self, s: &Section) -> TwilioConfig {
        let base_url = self.string_or(s, "base_url", "https://api.twilio.com");
        match url::Url::parse(&base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => self.problem(
                "twilio.base_url".into(),
                format!("{base_url:?}"),
                "an http:// or https:// URL",
            ),
        }
        TwilioConfig {
            account_sid: self.string_or(s, "account_sid", ""),
            auth_token: self.opt_string(s, "auth_token").map(Secret::new),
            from: self.string_or(s, "from", ""),
            base_url: base_url.trim_end_matches('/').to_string(),
            max_per_hour: self.int_or(s, "max_per_hour", 30, 1, 100_000) as u32,
        }
    }

    fn history(&mut self, s: &Section) -> HistoryConfig {
        let d = HistoryConfig::default();
        let enabled = self.bool_or(s, "enabled", d.enabled);
        let raw_retention = self.duration_or(s, "raw_retention", d.raw_retention);
        // Raw rows are rolled up an hour and some minutes after they were written; a shorter
        // retention would prune them first (the pruning waits for the roll-up instead).
        let min = Duration::from_secs(2 * 3600);
        if raw_retention < min {
            self.problem(
                "history.raw_retention".into(),
                format!("{raw_retention:?}"),
                "at least 2 hours (\"2h\"), so raw results are rolled up before they are pruned",
            );
        }
        let rollup_retention = match self.get(s, "rollup_retention") {
            Some(Value::String(v)) if v == "forever" => None,
            None => d.rollup_retention,
            Some(_) => Some(self.duration_or(s, "rollup_retention", Duration::from_secs(1))),
        };
        HistoryConfig {
            enabled,
            raw_retention,
            rollup_retention,
        }
    }

    fn web(&mut self, s: &Section, controller: bool) -> WebConfig {
        let addr = self.opt_string(s, "addr");
        let tokens = self.string_list(s, "api_tokens");
        if addr.is_some() && !controller {
            self.problem(
                "web.addr".into(),
                "an API address on a node without [controller]".to_string(),
                "a [controller] section (the API reads the database), or no web.addr",
            );
        }
        if addr.is_some()
            && tokens.is_empty()
            && self
                .get(s, "api_tokens")
                .is_none_or(|v| v.is_str() || v.is_array())
        {
            self.problem(
                "web.api_tokens".into(),
                "nothing",
                "at least one bearer token (16 characters or more) when web.addr is set",
            );
        }
        for (i, t) in tokens.iter().enumerate() {
            if t.chars().count() < 16 {
                self.problem(
                    format!("web.api_tokens[{i}]"),
                    format!("a token of {} characters (value hidden)", t.chars().count()),
                    "at least 16 characters",
                );
            }
        }
        let public_url = self.opt_string(s, "public_url");
        if let Some(u) = &public_url
            && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            self.problem(
                "web.public_url".into(),
                format!("{u:?}"),
                "an http:// or https:// URL (the base of the push URLs printed)",
            );
        }
        WebConfig {
            addr,
            api_tokens: tokens.into_iter().map(Secret::new).collect(),
            public_url,
        }
    }

    fn tls(&mut self, s: &Section) -> Option<TlsConfig> {
        if !s.present {
            return None;
        }
        let cert = self.required_string(s, "cert", "a PEM certificate chain file");
        let key = self.required_string(s, "key", "a PEM private key file");
        let ca = self.required_string(s, "ca", "a PEM CA file that signs every node");
        Some(TlsConfig {
            cert: cert?.into(),
            key: key?.into(),
            ca: ca?.into(),
        })
    }
}

pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses `"500ms"`, `"4s"`, `"1.5s"`, `"2m"`, `"1h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Names every key of every section, for documentation tests.
pub fn known_keys() -> BTreeSet<String> {
    SECTIONS
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{s}.{}", k.name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "password = \"0123456789abcdef\"";

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"), &|n| {
            (n == "GBM_PW").then(|| "from-the-environment".to_string())
        })
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse_str(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn minimal_worker_gets_defaults() {
        let c = parse_str(&format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"127.0.0.1:7000\"\n"
        ))
        .unwrap();
        let w = c.worker().unwrap();
        assert_eq!(w.num_threads, 64);
        assert_eq!(w.view_addr, vec!["127.0.0.1:7000"]);
        assert_eq!(w.lease, Duration::from_secs(3));
        assert!(c.controller().is_none());
        assert_eq!(c.smtp.tls, SmtpTls::Auto);
        assert!(w.canaries.is_empty());
        assert_eq!(w.canary_interval, Duration::from_secs(10));
    }

    #[test]
    fn canaries_and_meta_alert_keys_are_read_and_checked() {
        let base = "[default]\npassword = \"0123456789abcdef\"\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n";
        let db = "[controller]\naddr = \"127.0.0.1:1\"\ndatabase = [\"mysql://u:p@h:3306/d\"]\n";
        let c = parse_str(&format!(
            "{base}canaries = [\"tcp://127.0.0.1:9\", \"dns://127.0.0.1:5353/up.test\"]\ncanaryInterval = \"2s\"\n{db}no_controller_alert = \"30s\"\nadmin_webhook = \"https://hook.test/x\"\n"
        ))
        .unwrap();
        let w = c.worker().unwrap();
        assert_eq!(w.canaries.len(), 2);
        assert_eq!(w.canary_interval, Duration::from_secs(2));
        let m = &c.controller().unwrap().meta;
        assert_eq!(m.no_controller, Duration::from_secs(30));
        assert_eq!(m.stale_worker, Duration::from_secs(300));
        assert_eq!(m.outbox_stuck, Duration::from_secs(600));
        assert!(m.admin_webhook.is_some());
        let p = problems(&format!(
            "{base}canaries = [\"tcp://127.0.0.1:9\", \"ftp://x/\"]\ncanary_interval = \"10ms\"\n{db}admin_webhook = \"not a url\"\n"
        ));
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "worker.canaries[1]",
                "worker.canary_interval",
                "controller.admin_webhook"
            ],
            "{p:?}"
        );
        assert!(
            !p[2].found.contains("not a url"),
            "secret shown: {}",
            p[2].found
        );
    }

    #[test]
    fn camel_case_aliases_and_env() {
        let c = parse_str(
            "[default]\npassword = \"${GBM_PW}\"\n[worker]\nid = \"w1\"\nviewAddr = [\"a:1\"]\nnumThreads = 3\n[twilio]\naccountSid = \"AC1\"\nauthToken = \"t\"\nbaseUrl = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap();
        assert_eq!(
            c.default.password.as_ref().map(Secret::expose),
            Some("from-the-environment")
        );
        assert_eq!(c.worker().unwrap().num_threads, 3);
        assert_eq!(c.twilio.account_sid, "AC1");
        assert_eq!(c.twilio.base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn every_problem_at_once_with_suggestions() {
        let p = problems(&format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\nnum_thread = 4\nlease = true\n[controller]\ndatabase = []\nconfirmations = 0\n"
        ));
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"worker.num_thread"), "{p:?}");
        assert!(keys.contains(&"worker.lease"), "{p:?}");
        assert!(keys.contains(&"controller.database"), "{p:?}");
        assert!(keys.contains(&"controller.confirmations"), "{p:?}");
        let typo = p.iter().find(|p| p.key == "worker.num_thread").unwrap();
        assert!(typo.expected.contains("num_threads"), "{typo}");
    }

    #[test]
    fn zero_threads_and_bad_roles() {
        let p = problems(&format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\nnum_threads = 0\n"
        ));
        assert_eq!(p[0].key, "worker.num_threads");
        let both = problems(&format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n[viewserver]\npeers = [\"a:1\"]\n"
        ));
        assert!(both[0].found.contains("both"), "{both:?}");
        let neither = problems(&format!("[default]\n{PW}\n"));
        assert!(neither[0].found.contains("neither"), "{neither:?}");
    }

    #[test]
    fn secrets_never_in_problems() {
        let text = "[default]\npassword = \"short-secret\"\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n[controller]\ndatabase = [\"postgres://u:topsecretpw@h/db\"]\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(!err.contains("short-secret"), "{err}");
        assert!(!err.contains("topsecretpw"), "{err}");
        assert!(err.contains("controller.database[0]"), "{err}");
        assert!(err.contains("default.password"), "{err}");
        let debug = format!("{:?}", parse_str(&format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n[controller]\naddr = \"127.0.0.1:1\"\ndatabase = \"mysql://u:topsecretpw@h/db\"\n"
        )).unwrap());
        assert!(
            !debug.contains("topsecretpw") && !debug.contains("0123456789abcdef"),
            "{debug}"
        );
    }

    #[test]
    fn missing_env_and_unknown_section() {
        let p = problems(
            "[default]\npassword = \"${NOPE_NOT_SET}\"\n[workr]\nid = 1\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n",
        );
        assert!(
            p.iter().any(|p| p.expected.contains("NOPE_NOT_SET")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.key == "workr" && p.expected.contains("[worker]")),
            "{p:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("4s"), Some(Duration::from_secs(4)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("4"), None);
        assert_eq!(parse_duration("4 parsecs"), None);
    }

    #[test]
    fn smtp_ca_is_a_path_and_needs_tls() {
        let base = format!("[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n");
        let c = parse_str(&format!(
            "{base}[smtp]\nhost = \"mail\"\nca = \"/etc/mail-ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(c.smtp.ca, Some(PathBuf::from("/etc/mail-ca.pem")));
        assert_eq!(parse_str(&base).unwrap().smtp.ca, None);
        let p = problems(&format!(
            "{base}[smtp]\nhost = \"mail\"\ntls = \"none\"\nca = \"/etc/mail-ca.pem\"\n"
        ));
        assert_eq!(p[0].key, "smtp.ca", "{p:?}");
    }

    #[test]
    fn history_defaults_forever_and_bounds() {
        let base = format!("[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n");
        let c = parse_str(&base).unwrap();
        assert_eq!(c.history, HistoryConfig::default());
        assert_eq!(c.history.raw_retention, Duration::from_secs(7 * 86_400));
        let c = parse_str(&format!(
            "{base}[history]\nenabled = false\nraw_retention = \"3d\"\nrollup_retention = \"400d\"\n"
        ))
        .unwrap();
        assert!(!c.history.enabled);
        assert_eq!(c.history.raw_retention, Duration::from_secs(3 * 86_400));
        assert_eq!(
            c.history.rollup_retention,
            Some(Duration::from_secs(400 * 86_400))
        );
        let c = parse_str(&format!(
            "{base}[history]\nrollup_retention = \"forever\"\n"
        ))
        .unwrap();
        assert_eq!(c.history.rollup_retention, None);
        let p = problems(&format!("{base}[history]\nraw_retention = \"10m\"\n"));
        assert_eq!(p[0].key, "history.raw_retention", "{p:?}");
        let p = problems(&format!("{base}[history]\nrollup_retention = \"never\"\n"));
        assert_eq!(p[0].key, "history.rollup_retention", "{p:?}");
    }

    #[test]
    fn web_needs_a_controller_and_tokens_that_stay_hidden() {
        let base = format!("[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n");
        let ctl = "[controller]\naddr = \"127.0.0.1:8881\"\ndatabase = \"mysql://u:p@h/db\"\n";
        let c = parse_str(&format!(
            "{base}{ctl}[web]\naddr = \"127.0.0.1:8080\"\napi_tokens = [\"token-0123456789abcdef\"]\n"
        ))
        .unwrap();
        assert_eq!(c.web.addr.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(c.web.api_tokens[0].expose(), "token-0123456789abcdef");
        assert!(!format!("{c:?}").contains("token-0123456789abcdef"));
        let p = problems(&format!(
            "{base}[web]\naddr = \"127.0.0.1:8080\"\napi_tokens = \"token-0123456789abcdef\"\n"
        ));
        assert_eq!(p[0].key, "web.addr", "{p:?}");
        let p = problems(&format!("{base}{ctl}[web]\naddr = \"127.0.0.1:8080\"\n"));
        assert_eq!(p[0].key, "web.api_tokens", "{p:?}");
        let text =
            format!("{base}{ctl}[web]\naddr = \"127.0.0.1:8080\"\napi_tokens = [\"short-tok\"]\n");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("web.api_tokens[0]") && !err.contains("short-tok"),
            "{err}"
        );
    }

    #[test]
    fn web_public_url_is_an_http_url() {
        let base = format!(
            "[default]\n{PW}\n[worker]\nid = \"w1\"\nview_addr = \"a:1\"\n\
             [controller]\naddr = \"127.0.0.1:8881\"\ndatabase = \"mysql://u:p@h/db\"\n\
             [web]\naddr = \"127.0.0.1:8080\"\napi_tokens = [\"token-0123456789abcdef\"]\n"
        );
        let c = parse_str(&format!(
            "{base}public_url = \"https://mon.example.com/\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.web.public_url.as_deref(),
            Some("https://mon.example.com/")
        );
        assert_eq!(parse_str(&base).unwrap().web.public_url, None);
        let p = problems(&format!("{base}public_url = \"mon.example.com\"\n"));
        assert_eq!(p[0].key, "web.public_url", "{p:?}");
    }

    #[test]
    fn viewserver_peers_and_id() {
        let c = parse_str(&format!(
            "[default]\n{PW}\n[viewserver]\nid = 2\npeers = [\"a:1\", \"b:1\", \"c:1\"]\ndata_dir = \"/tmp/x\"\ncontroller_timeout = \"2s\"\n"
        ))
        .unwrap();
        match c.role {
            Role::Viewserver(v) => {
                assert_eq!(v.id, 2);
                assert_eq!(v.controller_timeout, Duration::from_secs(2));
            }
            _ => panic!("not a viewserver"),
        }
        let p = problems(&format!(
            "[default]\n{PW}\n[viewserver]\nid = 1\npeers = [\"a:1\", \"b:1\"]\n"
        ));
        assert_eq!(p[0].key, "viewserver.peers");
    }
}
