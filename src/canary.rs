//! Worker canaries: reference targets a worker probes to judge its own vantage point.
//!
//! A canary is written as a URL and parsed into the ordinary [`CheckSpec`], so the same probe
//! code runs it as any check:
//!
//! | URL | runs as |
//! |---|---|
//! | `tcp://host:port` | a `tcp` check of `host:port` |
//! | `http://...`, `https://...` | an `http` GET; any HTTP answer is up |
//! | `icmp://host` | an `icmp` check of 3 pings; up unless all are lost |
//! | `dns://server/name` (`server` may carry `:port`) | a `dns` A query for `name` at `server` |
//!
//! Every canary runs with the shortest timeout checks allow ([`CANARY_TIMEOUT_SECS`]).
//!
//! # The rule
//!
//! A worker probes all its canaries once per round (`[worker] canary_interval`). It is
//! **impaired** while more than half of the canary runs of its last [`WINDOW`] rounds failed
//! (a down target and a run that could not be made count alike). [`CanaryWindow`] is that
//! rule: pure, no IO, no clock.
//!
//! # Decisions where the design is silent
//!
//! - Before [`WINDOW`] rounds exist the rule judges the rounds there are, so a worker that
//!   starts behind a broken uplink is impaired after its first round.
//! - A change of the canary list (the database's list arriving) starts the window afresh but
//!   keeps the current verdict until the next round decides.
//! - The failing canaries shown are those that failed in the latest round.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::probe::CheckSpec;

/// Rounds the rule looks back over.
pub const WINDOW: usize = 3;
/// The timeout of a canary run, in seconds (the smallest a check may have).
pub const CANARY_TIMEOUT_SECS: u64 = 3;
/// Canaries a worker runs at most (config and database together).
pub const MAX_CANARIES: usize = 32;

/// Why a canary URL cannot be used. Final: the URL must be fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("canary {url:?}: {why}")]
pub struct CanaryError {
    /// The URL as shown (its password and query values masked).
    pub url: String,
    pub why: String,
}

/// One canary: its URL and the check it runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub url: String,
    pub spec: CheckSpec,
}

/// Parses a canary URL (see the module documentation).
pub fn parse(url: &str) -> Result<Canary, CanaryError> {
    let url = url.trim();
    let err = |why: &str| CanaryError {
        url: crate::notify::redact::message_url(url),
        why: why.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| err(&format!("not a URL ({e})")))?;
    let host = parsed.host_str().filter(|h| !h.is_empty());
    let (check_type, data) = match parsed.scheme() {
        "tcp" => {
            let host = host.ok_or_else(|| err("tcp://host:port needs a host"))?;
            let port = parsed
                .port()
                .ok_or_else(|| err("tcp://host:port needs a port"))?;
            let address = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            (
                "tcp",
                serde_json::json!({"address": address, "timeout": CANARY_TIMEOUT_SECS}),
            )
        }
        "http" | "https" => {
            host.ok_or_else(|| err("an http(s) canary needs a host"))?;
            (
                "http",
                serde_json::json!({"url": url, "method": "GET", "timeout": CANARY_TIMEOUT_SECS}),
            )
        }
        "icmp" => {
            let host = host.ok_or_else(|| err("icmp://host needs a host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (
                "icmp",
                serde_json::json!({"target": host, "count": 3, "packetloss": false}),
            )
        }
        "dns" => {
            let host = host.ok_or_else(|| err("dns://server/name needs a server"))?;
            let server = match parsed.port() {
                Some(p) if host.contains(':') && !host.starts_with('[') => {
                    format!("[{host}]:{p}")
                }
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            let name = parsed.path().trim_start_matches('/');
            if name.is_empty() {
                return Err(err("dns://server/name needs a name to look up"));
            }
            (
                "dns",
                serde_json::json!({"server": server, "name": name, "type": "a"}),
            )
        }
        other => {
            return Err(err(&format!(
                "unknown scheme {other:?}: expected tcp://, http://, https://, icmp:// or dns://"
            )));
        }
    };
    let spec = CheckSpec::parse(check_type, &data.to_string());
    if let CheckSpec::Invalid { message } = &spec {
        return Err(err(message));
    }
    Ok(Canary {
        url: url.to_string(),
        spec,
    })
}

/// Parses every URL of `urls` (duplicates dropped, at most [`MAX_CANARIES`]); the ones that
/// cannot be used come back as errors beside the usable ones.
pub fn parse_all<'a>(urls: impl IntoIterator<Item = &'a str>) -> (Vec<Canary>, Vec<CanaryError>) {
    let (good, bad) = parse_each(urls);
    (good, bad.into_iter().map(|(_, e)| e).collect())
}

/// [`parse_all`], each error with the position in `urls` of the URL it is about (so that a
/// table's bad rows can be named by id).
pub fn parse_each<'a>(
    urls: impl IntoIterator<Item = &'a str>,
) -> (Vec<Canary>, Vec<(usize, CanaryError)>) {
    let mut good: Vec<Canary> = Vec::new();
    let mut bad = Vec::new();
    for (i, url) in urls.into_iter().enumerate() {
        if good.iter().any(|c| c.url == url.trim()) {
            continue;
        }
        if good.len() == MAX_CANARIES {
            bad.push((
                i,
                CanaryError {
                    url: crate::notify::redact::message_url(url),
                    why: format!("more than {MAX_CANARIES} canaries; this one is not run"),
                },
            ));
            continue;
        }
        match parse(url) {
            Ok(c) => good.push(c),
            Err(e) => bad.push((i, e)),
        }
    }
    (good, bad)
}

/// One canary run: the URL and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRun {
    pub url: String,
    pub failure: Option<String>,
}

/// A failing canary as workers report it and `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingCanary {
    /// The URL with its password and query values masked.
    pub url: String,
    pub message: String,
}

/// What a worker tells the controller about its canaries with every poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// More than half of the canary runs of the last rounds failed: this worker cannot judge.
    pub impaired: bool,
    /// Canaries this worker runs.
    pub canaries: u32,
    /// Rounds judged so far (at most [`WINDOW`] count).
    pub rounds: u32,
    /// The canaries that failed in the latest round.
    #[serde(default)]
    pub failing: Vec<FailingCanary>,
}

/// Failing canaries from the JSON a `worker_impaired` meta-alert keeps (`[]` when unreadable).
pub fn failing_from_json(detail: Option<&str>) -> Vec<FailingCanary> {
    detail
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default()
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Impaired,
    Recovered,
}

/// The last [`WINDOW`] rounds and the verdict on them.
#[derive(Debug, Default)]
pub struct CanaryWindow {
    /// Per round: (runs, failed runs); newest last.
    rounds: VecDeque<(u32, u32)>,
    latest: Vec<CanaryRun>,
    impaired: bool,
    canaries: u32,
    judged: u32,
}

impl CanaryWindow {
    pub fn new() -> CanaryWindow {
        CanaryWindow::default()
    }

    /// Whether the worker is impaired now.
    pub fn impaired(&self) -> bool {
        self.impaired
    }

    /// The canary list changed: earlier rounds no longer say anything about it.
    pub fn reset(&mut self, canaries: usize) {
        self.rounds.clear();
        self.canaries = canaries as u32;
    }

    /// Records one round's runs; returns the change of verdict it makes, if any. An empty
    /// round (no canaries) clears the window and the verdict: with no canaries nothing is
    /// judged.
    pub fn record(&mut self, runs: Vec<CanaryRun>) -> Option<Turn> {
        self.canaries = runs.len() as u32;
        if runs.is_empty() {
            self.rounds.clear();
            self.latest.clear();
            let was = std::mem::replace(&mut self.impaired, false);
            return was.then_some(Turn::Recovered);
        }
        let failed = runs.iter().filter(|r| r.failure.is_some()).count() as u32;
        self.rounds.push_back((runs.len() as u32, failed));
        while self.rounds.len() > WINDOW {
            self.rounds.pop_front();
        }
        self.latest = runs;
        self.judged = self.judged.saturating_add(1);
        let (total, failed) = self
            .rounds
            .iter()
            .fold((0u32, 0u32), |(t, f), (rt, rf)| (t + rt, f + rf));
        let impaired = failed * 2 > total;
        match (self.impaired, impaired) {
            (false, true) => {
                self.impaired = true;
                Some(Turn::Impaired)
            }
            (true, false) => {
                self.impaired = false;
                Some(Turn::Recovered)
            }
            _ => None,
        }
    }

    /// The report sent with polls.
    pub fn report(&self) -> CanaryReport {
        CanaryReport {
            impaired: self.impaired,
            canaries: self.canaries,
            rounds: self.judged,
            failing: self
                .latest
                .iter()
                .filter_map(|r| {
                    r.failure.as_ref().map(|m| FailingCanary {
                        url: crate::notify::redact::message_url(&r.url),
                        message: m.clone(),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(failed: &[bool]) -> Vec<CanaryRun> {
        failed
            .iter()
            .enumerate()
            .map(|(i, f)| CanaryRun {
                url: format!("tcp://127.0.0.1:{}", 1000 + i),
                failure: f.then(|| "down".to_string()),
            })
            .collect()
    }

    #[test]
    fn urls_become_the_ordinary_check_specs() {
        let CheckSpec::Tcp(t) = parse("tcp://127.0.0.1:5000").unwrap().spec else {
            panic!()
        };
        assert_eq!(t.address, "127.0.0.1:5000");
        assert_eq!(t.timeout_secs, CANARY_TIMEOUT_SECS);
        let CheckSpec::Tcp(t) = parse("tcp://[::1]:53").unwrap().spec else {
            panic!()
        };
        assert_eq!(t.address, "[::1]:53");
        let CheckSpec::Http(h) = parse("https://example.com/health?x=1").unwrap().spec else {
            panic!()
        };
        assert_eq!(h.url, "https://example.com/health?x=1");
        assert_eq!(h.expect_status, 0);
        let CheckSpec::Icmp(i) = parse("icmp://192.0.2.1").unwrap().spec else {
            panic!()
        };
        assert_eq!(i.target, "192.0.2.1");
        let CheckSpec::Dns(d) = parse("dns://127.0.0.1:5353/up.test").unwrap().spec else {
            panic!()
        };
        assert_eq!(d.server.as_deref(), Some("127.0.0.1:5353"));
        assert_eq!(d.name, "up.test");
    }

    #[test]
    fn unusable_urls_say_why_and_hide_secrets() {
        for (url, says) in [
            ("tcp://127.0.0.1", "needs a port"),
            ("ftp://x/", "unknown scheme"),
            ("dns://127.0.0.1/", "needs a name"),
            ("not a url", "not a URL"),
            ("icmp://", "needs a host"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.why.contains(says), "{url}: {e}");
        }
        let e = parse("gopher://u:hunter2@h/?token=abc").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!e.to_string().contains("abc"), "{e}");
        let (good, bad) = parse_all(["tcp://a:1", "tcp://a:1", "bogus://", "tcp://b:2"]);
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn impaired_when_more_than_half_of_the_last_three_rounds_failed() {
        let mut w = CanaryWindow::new();
        assert_eq!(w.record(round(&[false, false])), None);
        assert_eq!(w.record(round(&[false, false])), None);
        assert_eq!(w.record(round(&[false, false])), None);
        // Cut: 2 of 6, then 4 of 6 failed.
        assert_eq!(w.record(round(&[true, true])), None);
        assert_eq!(w.record(round(&[true, true])), Some(Turn::Impaired));
        assert!(w.impaired());
        let r = w.report();
        assert!(r.impaired);
        assert_eq!(r.failing.len(), 2);
        assert_eq!(r.canaries, 2);
        assert_eq!(w.record(round(&[true, true])), None);
        // Heal: 4 of 6 still failed, then 2 of 6.
        assert_eq!(w.record(round(&[false, false])), None);
        assert!(w.report().failing.is_empty());
        assert_eq!(w.record(round(&[false, false])), Some(Turn::Recovered));
        assert!(!w.report().impaired);
    }

    #[test]
    fn exactly_half_is_not_impaired_and_one_bad_canary_of_three_never_is() {
        let mut w = CanaryWindow::new();
        for _ in 0..3 {
            assert_eq!(w.record(round(&[true, false])), None);
        }
        let mut w = CanaryWindow::new();
        for _ in 0..10 {
            assert_eq!(w.record(round(&[true, false, false])), None);
        }
        // A worker that starts cut off is judged on the rounds it has.
        let mut w = CanaryWindow::new();
        assert_eq!(w.record(round(&[true])), Some(Turn::Impaired));
    }

    #[test]
    fn no_canaries_judge_nothing() {
        let mut w = CanaryWindow::new();
        assert_eq!(w.record(round(&[true])), Some(Turn::Impaired));
        assert_eq!(w.record(Vec::new()), Some(Turn::Recovered));
        assert_eq!(w.record(Vec::new()), None);
        assert!(!w.report().impaired);
        assert_eq!(w.report().canaries, 0);
    }
}
