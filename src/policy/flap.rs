//! Flapping (`[controller] flap_flips`, `flap_window`), derived from the check's flips
//! (`check_events`, durable): a flip is *suppressed* when more than `flips` flips fall within
//! the window that ends at it, or when the flip before it was suppressed and came less than a
//! window earlier. The first suppressed flip of a run (the trigger) sends one "flapping"
//! message (slot [`FLAP_SLOT`] of the trigger); the run ends once the check has been stable for
//! a window after its last flip, which then sends one message with the current state (slot 0
//! of that flip).
//!
//! # Decisions
//! - Only the newest [`EVENTS`] flips are read. A run that reaches past them began earlier:
//!   its "flapping" message was sent then, so no trigger is reported for it (nothing repeats).
//! - A "flapping" message goes to every contact of the check whatever its `type`, and the
//!   message at the end with the current state too (each was told it is flapping).

use super::Event;

/// The slot of the "flapping" message, above any reminder's.
pub const FLAP_SLOT: u32 = 1_000_000;
/// How many of a check's newest flips are read.
pub const EVENTS: usize = 256;

/// When a check is flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapRule {
    /// More flips than this within `window_ms` is flapping.
    pub flips: u32,
    pub window_ms: i64,
}

/// The run of suppressed flips the latest flip belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// The flip that began it; `None` when it began before the flips read.
    pub trigger: Option<i64>,
    /// When the check has been stable for a window after the latest flip.
    pub stable_at: i64,
}

/// Which of `events` (oldest first) are suppressed. `truncated`: older flips exist that were
/// not read.
pub fn suppressed(events: &[Event], rule: FlapRule, truncated: bool) -> Vec<bool> {
    let mut out = Vec::with_capacity(events.len());
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        while events[start].time_ms <= e.time_ms - rule.window_ms {
            start += 1;
        }
        // With older flips unread, a window reaching before the first flip read is taken as
        // full (the run it belongs to began earlier).
        let unknown = truncated && e.time_ms - rule.window_ms < events[0].time_ms;
        let dense = unknown || (i + 1 - start) as u64 > u64::from(rule.flips);
        let carried = match i.checked_sub(1) {
            Some(p) => out[p] && e.time_ms - events[p].time_ms < rule.window_ms,
            None => false,
        };
        out.push(dense || carried);
    }
    out
}

/// The episode of the latest of `events` (oldest first), if it is suppressed.
pub fn episode(events: &[Event], rule: FlapRule, truncated: bool) -> Option<Episode> {
    let flags = suppressed(events, rule, truncated);
    let last = events.len().checked_sub(1)?;
    if !flags[last] {
        return None;
    }
    let first = (0..=last).rev().take_while(|&i| flags[i]).last()?;
    let trigger = (!(first == 0 && truncated)).then(|| events[first].id);
    Some(Episode {
        trigger,
        stable_at: events[last].time_ms + rule.window_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const RULE: FlapRule = FlapRule {
        flips: 3,
        window_ms: 20 * S,
    };

    fn flips(times: &[i64]) -> Vec<Event> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| Event {
                id: i as i64 + 1,
                offline: i % 2 == 0,
                time_ms: t * S,
            })
            .collect()
    }

    #[test]
    fn more_than_flips_within_the_window_is_flapping() {
        let e = flips(&[0, 2, 4]);
        assert_eq!(suppressed(&e, RULE, false), vec![false; 3]);
        let e = flips(&[0, 2, 4, 6]);
        assert_eq!(suppressed(&e, RULE, false), vec![false, false, false, true]);
        assert_eq!(
            episode(&e, RULE, false),
            Some(Episode {
                trigger: Some(4),
                stable_at: 26 * S
            })
        );
        // Spread over more than the window: never flapping.
        let e = flips(&[0, 10, 20, 30, 40, 50]);
        assert!(suppressed(&e, RULE, false).iter().all(|s| !s));
    }

    #[test]
    fn a_run_lasts_while_flips_come_within_a_window_of_each_other() {
        // Dense at 6, then one flip every 15 s: each carried on, one trigger.
        let e = flips(&[0, 2, 4, 6, 21, 36, 51]);
        let s = suppressed(&e, RULE, false);
        assert_eq!(s, vec![false, false, false, true, true, true, true]);
        assert_eq!(episode(&e, RULE, false).unwrap().trigger, Some(4));
        // A gap of a window ends the run; the next flip starts afresh.
        let e = flips(&[0, 2, 4, 6, 26]);
        assert_eq!(episode(&e, RULE, false), None);
    }

    #[test]
    fn a_storm_of_flips_has_one_trigger_and_one_end() {
        let times: Vec<i64> = (0..200).collect();
        let e = flips(&times);
        let ep = episode(&e, RULE, false).unwrap();
        assert_eq!(ep.trigger, Some(4));
        assert_eq!(ep.stable_at, 219 * S);
        // Read truncated (older flips exist): the run began earlier, no trigger to send.
        let ep = episode(&e[100..], RULE, true).unwrap();
        assert_eq!(ep.trigger, None);
    }
}
