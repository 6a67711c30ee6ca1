//! Reading a config file: TOML syntax, `${NAME}` substitution, aliases, defaults and
//! validation. Every problem in a file is collected and reported together, each naming the key,
//! what was found and what was expected. Secret values never appear in a problem.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::keys::SECTIONS;
use super::{Config, Secret, SmtpTls};

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
    let mut r = Reader::new(env);
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
/// secret. Built by the declaration in `keys.rs`.
pub(super) struct Key {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub secret: bool,
}

/// The values of one section, keyed by canonical name, after aliases and substitution.
pub(super) struct Section {
    name: &'static str,
    pub present: bool,
    values: Vec<(&'static str, Value)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == key).map(|(_, v)| v)
    }
}

pub(super) struct Reader<'e> {
    problems: Vec<Problem>,
    env: &'e dyn Fn(&str) -> Option<String>,
}

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

impl<'e> Reader<'e> {
    pub(super) fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Reader<'e> {
        Reader {
            problems: Vec::new(),
            env,
        }
    }
}

impl Reader<'_> {
    pub(super) fn problem(
        &mut self,
        key: String,
        found: impl Into<String>,
        expected: impl Into<String>,
    ) {
        self.problems.push(Problem {
            key,
            found: found.into(),
            expected: expected.into(),
        });
    }

    /// Reports the file's tables that are not sections.
    pub(super) fn sections(&mut self, table: &Table) {
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
    }

    /// Collects a section's keys under their canonical names, reporting unknown keys and
    /// substituting `${NAME}` in strings.
    pub(super) fn section(
        &mut self,
        table: &Table,
        name: &'static str,
        keys: &'static [Key],
    ) -> Section {
        let mut section = Section {
            name,
            present: false,
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

    /// Whether a problem was reported for `key` already (a wrongly typed value), so that no
    /// second problem derived from it ("nothing", "an empty list") is added.
    pub(super) fn reported(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    /// Reads one key of `s`: absent or blank reads as `default`, a wrong value is reported
    /// (its TOML form, or only its type when it is secret) and reads as `default` too.
    /// `range` bounds integers.
    pub(super) fn read<T: FromToml>(
        &mut self,
        s: &Section,
        key: &str,
        default: T,
        range: Option<(i64, i64)>,
    ) -> T {
        let Some(v) = s.get(key) else {
            return default;
        };
        match T::from_toml(v, range) {
            Ok(value) => value.unwrap_or(default),
            Err(expected) => {
                self.problem(format!("{}.{key}", s.name), shown(v, T::SECRET), expected);
                default
            }
        }
    }
}

/// A type a key's value is read as.
pub(super) trait FromToml: Sized {
    /// Whether values are secret: never shown in problems.
    const SECRET: bool = false;
    /// `Ok(None)`: blank (an empty string), read as the default. `Err`: what would have been
    /// accepted. `range` is the declared bounds of an integer.
    fn from_toml(v: &Value, range: Option<(i64, i64)>) -> Result<Option<Self>, String>;
}

/// A type read from one string: the values of string keys, optional keys and lists.
pub(super) trait FromText: Sized {
    const SECRET: bool = false;
    /// What a string must look like.
    const EXPECTED: &'static str;
    fn from_text(s: &str) -> Option<Self>;
}

impl FromText for String {
    const EXPECTED: &'static str = "a string";
    fn from_text(s: &str) -> Option<String> {
        Some(s.to_string())
    }
}

impl FromText for Secret {
    const SECRET: bool = true;
    const EXPECTED: &'static str = "a string";
    fn from_text(s: &str) -> Option<Secret> {
        Some(Secret::new(s))
    }
}

impl FromText for PathBuf {
    const EXPECTED: &'static str = "a string";
    fn from_text(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }
}

impl FromText for SocketAddr {
    const EXPECTED: &'static str =
        "an IP address and port, like \"0.0.0.0:8891\" or \"[::1]:8891\"";
    fn from_text(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }
}

impl FromText for SmtpTls {
    const EXPECTED: &'static str = "one of \"auto\", \"starttls\", \"tls\", \"none\"";
    fn from_text(s: &str) -> Option<SmtpTls> {
        match s {
            "auto" => Some(SmtpTls::Auto),
            "starttls" => Some(SmtpTls::StartTls),
            "tls" => Some(SmtpTls::Tls),
            "none" => Some(SmtpTls::None),
            _ => None,
        }
    }
}

/// A string key with a default: an empty string reads as the default.
macro_rules! text_keys {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            const SECRET: bool = <$t as FromText>::SECRET;
            fn from_toml(v: &Value, _: Option<(i64, i64)>) -> Result<Option<$t>, String> {
                match v {
                    Value::String(s) if s.is_empty() => Ok(None),
                    Value::String(s) => <$t>::from_text(s).map(Some).ok_or_else(|| <$t as FromText>::EXPECTED.to_string()),
                    _ => Err(<$t as FromText>::EXPECTED.to_string()),
                }
            }
        }
    )*};
}
text_keys!(String, PathBuf, SocketAddr);

/// An optional key: an empty string reads as unset.
impl<T: FromText> FromToml for Option<T> {
    const SECRET: bool = T::SECRET;
    fn from_toml(v: &Value, _: Option<(i64, i64)>) -> Result<Option<Option<T>>, String> {
        match v {
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => T::from_text(s)
                .map(|t| Some(Some(t)))
                .ok_or_else(|| T::EXPECTED.to_string()),
            _ => Err(T::EXPECTED.to_string()),
        }
    }
}

/// A list of strings; a single string is accepted as a list of one, empty strings are
/// left out.
impl<T: FromText> FromToml for Vec<T> {
    const SECRET: bool = T::SECRET;
    fn from_toml(v: &Value, _: Option<(i64, i64)>) -> Result<Option<Vec<T>>, String> {
        let expected = || "a string or an array of strings".to_string();
        let items: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(expected)?,
            _ => return Err(expected()),
        };
        let parsed = items
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(T::from_text);
        parsed
            .collect::<Option<Vec<T>>>()
            .map(Some)
            .ok_or_else(expected)
    }
}

impl FromToml for bool {
    fn from_toml(v: &Value, _: Option<(i64, i64)>) -> Result<Option<bool>, String> {
        v.as_bool()
            .map(Some)
            .ok_or_else(|| "true or false".to_string())
    }
}

const DURATION: &str =
    "a positive duration: seconds as a number, or a string like \"500ms\", \"4s\", \"2m\"";

/// A duration: a number of seconds (`4`, `0.5`) or a string with a unit (`"250ms"`, `"4s"`,
/// `"2m"`, `"1h"`). Must be positive.
impl FromToml for Duration {
    fn from_toml(v: &Value, _: Option<(i64, i64)>) -> Result<Option<Duration>, String> {
        let parsed = match v {
            Value::Integer(i) if *i > 0 => Some(Duration::from_secs(*i as u64)),
            Value::Float(f) if *f > 0.0 && f.is_finite() => Duration::try_from_secs_f64(*f).ok(),
            Value::String(text) => parse_duration(text).filter(|d| !d.is_zero()),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| DURATION.to_string())
    }
}

/// A retention: a duration, or `"forever"` (`None`).
impl FromToml for Option<Duration> {
    fn from_toml(v: &Value, r: Option<(i64, i64)>) -> Result<Option<Option<Duration>>, String> {
        match v {
            Value::String(s) if s == "forever" => Ok(Some(None)),
            v => Ok(Duration::from_toml(v, r)?.map(Some)),
        }
    }
}

/// An integer within the declared bounds.
macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl FromToml for $t {
            fn from_toml(v: &Value, range: Option<(i64, i64)>) -> Result<Option<$t>, String> {
                let (min, max) = range.unwrap_or((0, i64::MAX));
                match v {
                    Value::Integer(i) if (min..=max).contains(i) => {
                        <$t>::try_from(*i).map(Some).map_err(|_| format!("an integer that fits {}", stringify!($t)))
                    }
                    _ if max == i64::MAX => Err(format!("an integer of at least {min}")),
                    _ => Err(format!("an integer from {min} to {max}")),
                }
            }
        }
    )*};
}
int_keys!(u16, u32, u64, usize);

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
    use super::super::{HistoryConfig, Role};
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
        assert_eq!(c.web.addr, Some("127.0.0.1:8080".parse().unwrap()));
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
