//! The `push` check's `data`: a token and a grace period. Nothing is probed: the job a push
//! check watches calls the push URL, and the acting controller judges the check.

use std::fmt;

use super::params::parse_with;

/// What a run of a `push` check would report: nothing is probed (workers are never sent
/// push checks; the acting controller judges them from the pushes received).
pub const PUSH_NOT_PROBED: &str = "a push check has nothing to probe: the job it watches calls \
     the push URL (`gobearmon push-url CHECK --config FILE` prints it)";

/// Shortest and longest push token, in characters.
pub const PUSH_TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// `grace` when `data` has none, in seconds.
pub const DEFAULT_PUSH_GRACE_SECS: u64 = 30;
/// Largest `grace`, in seconds (a day).
pub const MAX_PUSH_GRACE_SECS: u64 = 86_400;

/// A `push` check's `data`: `{"token": "...", "grace": 30}`. The check is online while pushes
/// arrive at least every `check_interval + grace` seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSpec {
    /// The secret part of the push URL (`/push/{token}`): 16 to 128 characters from
    /// `A-Z a-z 0-9 - _ . ~`, so it needs no escaping in a URL.
    pub token: String,
    /// Seconds allowed past `check_interval` before a missing push makes the check offline.
    pub grace_secs: u64,
}

impl fmt::Debug for PushSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSpec")
            .field("token", &"<redacted>")
            .field("grace_secs", &self.grace_secs)
            .finish()
    }
}

/// Whether `token` has the shape of a push token (length and characters); says what is wrong.
pub fn push_token_problem(token: &str) -> Option<String> {
    let n = token.chars().count();
    if !PUSH_TOKEN_LEN.contains(&n) {
        return Some(format!(
            "token is {n} characters long; expected {} to {}",
            PUSH_TOKEN_LEN.start(),
            PUSH_TOKEN_LEN.end()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Some(format!(
            "token contains {c:?}; expected only A-Z a-z 0-9 - _ . ~"
        ));
    }
    None
}

impl PushSpec {
    /// Parses and validates a push check's `data`; the error names the key and what was
    /// expected.
    pub fn parse(data: &str) -> Result<PushSpec, String> {
        parse_with(data, "PushCheckParams", |f| {
            let token = f.string("token")?.unwrap_or_default();
            if let Some(problem) = push_token_problem(&token) {
                return Err(problem);
            }
            let grace = f.int("grace")?;
            let grace_secs = match grace {
                None => DEFAULT_PUSH_GRACE_SECS,
                Some(g) => match u64::try_from(g) {
                    Ok(g) if g <= MAX_PUSH_GRACE_SECS => g,
                    _ => {
                        return Err(format!(
                            "grace is {g}; expected 0 to {MAX_PUSH_GRACE_SECS} seconds"
                        ));
                    }
                },
            };
            Ok(PushSpec { token, grace_secs })
        })
    }
}
