//! The dead man's switch (`[controller] heartbeat_url`): the acting controller calls an
//! outside URL every `heartbeat_interval`, but only while it is healthy, so that a service of
//! the healthchecks.io kind pages when the monitor is down, cut off or stuck. Healthy means
//! ([`verdict`]): the term may act (lease and fence), a write transaction under the fence
//! commits in time, no notification has been pending longer than `delivery_timeout` ×
//! `delivery_attempts`, and at most half of the checks are in insufficient quorum.
//!
//! The beat is one of the term's tasks: a new controller starts beating as soon as its term
//! has loaded, so a failover skips at most the beats of the time without a controller.

use std::time::Duration;

use tokio::time::Instant;

use super::owner::Msg;
use super::term::TermHandle;
use crate::store::fence::FencedTx;

/// What the health of a term is judged on, read once per beat.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub may_act: bool,
    /// A fenced write transaction committed within the bound; the error otherwise.
    pub writes: Result<(), String>,
    /// Age of the oldest pending notification; `None` when nothing is pending (or unknown
    /// because the database did not answer, which `writes` already reports).
    pub oldest_pending: Option<Duration>,
    pub checks: usize,
    pub insufficient_quorum: usize,
}

/// Why no beat is sent, or `Ok` to send one.
pub fn verdict(h: &Health, outbox_limit: Duration) -> Result<(), String> {
    if !h.may_act {
        return Err("this controller's lease or fence does not hold".into());
    }
    if let Err(e) = &h.writes {
        return Err(format!("MySQL does not accept writes under the fence: {e}"));
    }
    if let Some(age) = h.oldest_pending
        && age > outbox_limit
    {
        return Err(format!(
            "a notification has been pending for {} s, longer than delivery_timeout x delivery_attempts ({} s)",
            age.as_secs(),
            outbox_limit.as_secs()
        ));
    }
    if h.insufficient_quorum * 2 > h.checks {
        return Err(format!(
            "{} of {} checks are in insufficient quorum",
            h.insufficient_quorum, h.checks
        ));
    }
    Ok(())
}

/// Beats while the term lasts.
pub(super) async fn run(term: TermHandle, url: String, interval: Duration) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(interval.clamp(Duration::from_secs(1), Duration::from_secs(10)))
        .user_agent(concat!("gobearmon/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the heartbeat_url client; no beats");
            return term.token.cancelled().await;
        }
    };
    let delivery = &term.host().config.delivery;
    let outbox_limit = delivery.timeout.saturating_mul(delivery.attempts);
    // Such URLs carry their secret in the path: only the scheme and host are logged.
    let shown = url::Url::parse(&url).map_or_else(
        |_| "(unparsable)".to_string(),
        |u| format!("{}://{}/...", u.scheme(), u.host_str().unwrap_or("")),
    );
    let mut last_problem: Option<String> = None;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = term.token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + interval;
        let Some(health) = health(&term, interval).await else {
            return;
        };
        let judged = verdict(&health, outbox_limit);
        match &judged {
            Ok(()) => match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    term.host()
                        .beats
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(r) => {
                    tracing::warn!(url = %shown, status = %r.status(), "heartbeat_url refused the beat")
                }
                Err(e) => tracing::warn!(url = %shown, error = %e, "heartbeat_url not reached"),
            },
            Err(why) if last_problem.as_deref() != Some(why.as_str()) => {
                tracing::warn!(reason = %why, "not healthy: the dead man's switch beat is withheld");
            }
            Err(_) => {}
        }
        match judged {
            Ok(()) if last_problem.take().is_some() => {
                tracing::info!("healthy again: dead man's switch beats resumed");
            }
            Ok(()) => {}
            Err(why) => last_problem = Some(why),
        }
    }
}

/// Reads the term's health; `None` once the term has ended.
async fn health(term: &TermHandle, interval: Duration) -> Option<Health> {
    let host = term.host();
    let bound = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let writes = match tokio::time::timeout(bound, async {
        let tx = FencedTx::begin(&host.store, term.epoch, &host.node).await?;
        tx.commit().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no commit within {} ms", bound.as_millis())),
    };
    let oldest_pending = if writes.is_ok() {
        tokio::time::timeout(bound, crate::store::outbox::oldest_pending(&host.store))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    } else {
        None
    };
    let (checks, insufficient_quorum) = term.ask(|reply| Msg::Quorum { reply }).await?;
    Some(Health {
        may_act: term.may_act(),
        writes,
        oldest_pending,
        checks,
        insufficient_quorum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            may_act: true,
            writes: Ok(()),
            oldest_pending: None,
            checks: 10,
            insufficient_quorum: 0,
        }
    }

    #[test]
    fn beats_only_while_every_condition_holds() {
        let limit = Duration::from_secs(240);
        assert_eq!(verdict(&healthy(), limit), Ok(()));
        let cases = [
            (
                Health {
                    may_act: false,
                    ..healthy()
                },
                "lease or fence",
            ),
            (
                Health {
                    writes: Err("lock wait".into()),
                    ..healthy()
                },
                "does not accept writes",
            ),
            (
                Health {
                    oldest_pending: Some(Duration::from_secs(241)),
                    ..healthy()
                },
                "pending for 241 s",
            ),
            (
                Health {
                    insufficient_quorum: 6,
                    ..healthy()
                },
                "6 of 10 checks",
            ),
        ];
        for (h, says) in cases {
            let why = verdict(&h, limit).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
        // The edges: exactly half in insufficient quorum, a notice exactly at the limit.
        let edge = Health {
            insufficient_quorum: 5,
            oldest_pending: Some(limit),
            ..healthy()
        };
        assert_eq!(verdict(&edge, limit), Ok(()));
        let none = Health {
            checks: 0,
            ..healthy()
        };
        assert_eq!(verdict(&none, limit), Ok(()));
    }
}
