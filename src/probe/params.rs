//! What several check types share in their `data`: the Go-JSON decoding of a row
//! ([`parse_with`]), the timeout and `max_response_ms` clamps, and `ip_policy`.

use super::addrs::IpPolicy;
use super::gojson::{self, Fields};

/// HTTP and TCP timeout when none (or 0) is given, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Smallest HTTP and TCP timeout; smaller values are raised to it.
pub const MIN_TIMEOUT_SECS: u64 = 3;
/// Largest HTTP and TCP timeout; larger values are lowered to it.
pub const MAX_TIMEOUT_SECS: u64 = 30;
/// gobearmon's timeout clamp: 0 -> 10 s, below 3 -> 3 s, above 30 -> 30 s.
pub fn clamp_timeout(secs: i64) -> u64 {
    match u64::try_from(secs) {
        Ok(s) => clamp_timeout_secs(s),
        // Negative: below the minimum.
        Err(_) => MIN_TIMEOUT_SECS,
    }
}

/// [`clamp_timeout`] on an unsigned value (a definition received over the network).
pub(crate) fn clamp_timeout_secs(secs: u64) -> u64 {
    match secs {
        0 => DEFAULT_TIMEOUT_SECS,
        s => s.clamp(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS),
    }
}

/// `max_response_ms` as a run uses it: 0 means no limit.
pub(crate) fn clamp_response_ms(ms: Option<u64>) -> Option<u64> {
    ms.filter(|&ms| ms > 0)
}
pub(crate) fn parse_with<T>(
    data: &str,
    go_struct: &'static str,
    build: fn(&Fields<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let decode_error = |e: String| format!("failed to decode check parameters: {e}");
    let doc = gojson::parse(data).map_err(decode_error)?;
    let fields = Fields::of(go_struct, &doc).map_err(decode_error)?;
    build(&fields).map_err(|e| {
        // Type mismatches are decode errors; semantic errors (record type, ping target) are
        // reported as they are.
        if e.starts_with("json: ") {
            decode_error(e)
        } else {
            e
        }
    })
}

/// `ip_policy` (see `addrs.rs`); absent or empty is `first`.
pub(crate) fn ip_policy(f: &Fields<'_>) -> Result<IpPolicy, String> {
    IpPolicy::parse(&f.string("ip_policy")?.unwrap_or_default())
}

/// `max_response_ms`: absent, 0 or negative means no limit.
pub(crate) fn max_response_ms(f: &Fields<'_>) -> Result<Option<u64>, String> {
    Ok(clamp_response_ms(
        f.int("max_response_ms")?
            .and_then(|ms| u64::try_from(ms).ok()),
    ))
}
