//! Maintenance windows (`maintenance` rows) as intervals in time: a one-off window
//! (`starts_at`, `ends_at`) or a weekly one (`weekday` 1 = Monday .. 7 = Sunday,
//! `start_time` as seconds after local midnight, `duration` seconds, `time_zone`).
//!
//! Time zones are fixed offsets (`UTC`, `+02:00`, `-05:30`): a weekly window does not follow
//! daylight saving time.

/// One `maintenance` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    Once {
        start_ms: i64,
        end_ms: i64,
    },
    Weekly {
        /// 1 = Monday .. 7 = Sunday.
        weekday: u8,
        /// Seconds after local midnight.
        start_s: i64,
        duration_s: i64,
        /// Offset of the time zone from UTC, seconds.
        offset_s: i64,
    },
}

/// Parses a `time_zone` value: `UTC`, `Z`, or `+HH:MM` / `-HH:MM`.
pub fn parse_offset(tz: &str) -> Result<i64, String> {
    let t = tz.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(0);
    }
    let bad = || format!("time_zone {tz:?} is not UTC or an offset such as +02:00");
    let (sign, rest) = match t.as_bytes()[0] {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

impl Window {
    /// The occurrences of the window that overlap `[from, to)`, as `[start, end)` in ms.
    pub fn intervals(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        match *self {
            Window::Once { start_ms, end_ms } => {
                if start_ms < to && from < end_ms && start_ms < end_ms {
                    vec![(start_ms, end_ms)]
                } else {
                    Vec::new()
                }
            }
            Window::Weekly {
                weekday,
                start_s,
                duration_s,
                offset_s,
            } => {
                if !(1..=7).contains(&weekday) || duration_s <= 0 {
                    return Vec::new();
                }
                // 1970-01-01 was a Thursday (weekday 4): local Monday 00:00 of week 0 is
                // 3 days before the epoch, in local time.
                let week0 = -3 * DAY_MS - offset_s * 1000;
                let first = week0 + i64::from(weekday - 1) * DAY_MS + start_s * 1000;
                let len = duration_s * 1000;
                let mut k = (from - len - first).div_euclid(WEEK_MS);
                let mut out = Vec::new();
                loop {
                    let s = first + k * WEEK_MS;
                    if s >= to {
                        break;
                    }
                    if s + len > from {
                        out.push((s, s + len));
                    }
                    k += 1;
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_and_refuse() {
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("+02:00"), Ok(7200));
        assert_eq!(parse_offset("-05:30"), Ok(-19800));
        assert!(parse_offset("Europe/Berlin").is_err());
        assert!(parse_offset("+25:00").is_err());
    }

    #[test]
    fn weekly_window_in_a_time_zone() {
        // Monday 2026-11-30 02:00 at +02:00 is 2026-11-30 00:00 UTC = 1_795_996_800 s.
        let w = Window::Weekly {
            weekday: 1,
            start_s: 2 * 3600,
            duration_s: 3600,
            offset_s: 7200,
        };
        let monday = 1_795_996_800_000;
        let got = w.intervals(monday - DAY_MS, monday + DAY_MS);
        assert_eq!(got, vec![(monday, monday + 3_600_000)]);
        let next = w.intervals(monday + DAY_MS, monday + 8 * DAY_MS);
        assert_eq!(next, vec![(monday + WEEK_MS, monday + WEEK_MS + 3_600_000)]);
        // An occurrence that began before `from` still counts.
        assert_eq!(w.intervals(monday + 1000, monday + 2000).len(), 1);
    }

    #[test]
    fn once_window_overlap() {
        let w = Window::Once {
            start_ms: 10,
            end_ms: 20,
        };
        assert_eq!(w.intervals(0, 11), vec![(10, 20)]);
        assert!(w.intervals(20, 30).is_empty());
    }
}
