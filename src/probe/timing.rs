//! The phases of an `http` run ([`Timing`]): when the name lookup, the TCP connect, the TLS
//! handshake, the response headers and the whole run ended.
//!
//! reqwest does the lookup, the connect and the handshake inside one request future, so the
//! phases are marked from inside it by three hooks on the shared client, each a few clock
//! reads and no allocation:
//!
//! - the resolver ([`TimedResolver`], the same `getaddrinfo` on the blocking pool as
//!   reqwest's own) marks the end of a lookup;
//! - a connector layer ([`TimedConnectLayer`]) marks the start and the end of every
//!   connection (for https the end is the end of the handshake);
//! - the TLS session store ([`TlsStartMark`], wrapping the store the config would have had)
//!   is asked for a session when rustls writes its ClientHello, which is the moment TCP has
//!   connected and the handshake begins.
//!
//! The marks live in a task-local [`Marks`] set around the request ([`MARKS`]); outside such a
//! scope the hooks do nothing. No pooled connection is ever reused (`pool_max_idle_per_host`
//! is 0), so every request connects inside its own future, in the task that set the marks.
//!
//! With redirects each request overwrites the marks of the one before, so the phases are the
//! final request's, on the run's clock: everything the earlier requests took lies before the
//! final request's `dns_ms`.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::Inspect;
use rustls::client::ClientSessionStore;
use rustls::client::Tls12ClientSessionValue;
use rustls::client::Tls13ClientSessionValue;
use rustls::{NamedGroup, pki_types::ServerName};
use serde::{Deserialize, Serialize};

/// http: when each phase ended, in milliseconds since the run started (cumulative, so
/// dns_ms <= connect_ms <= tls_ms <= first_byte_ms <= total_ms).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub dns_ms: f64,
    pub connect_ms: f64,
    pub tls_ms: f64,
    pub first_byte_ms: f64,
    pub total_ms: f64,
}

/// The marks of one request, set by the hooks while it runs.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// The lookup ended; a connection that needed none sets it when it starts.
    dns: Cell<Option<Instant>>,
    /// The TLS handshake began, i.e. TCP connected (https only).
    tls_start: Cell<Option<Instant>>,
    /// The last connection: TCP connected.
    connect: Cell<Option<Instant>>,
    /// The last connection was ready (TLS done for https, TCP for http).
    ready: Cell<Option<Instant>>,
}

tokio::task_local! {
    /// The marks of the request being run in this task.
    pub(crate) static MARKS: Marks;
}

fn mark(f: impl FnOnce(&Marks)) {
    // Outside a scope (a client used elsewhere) there is nothing to mark.
    let _ = MARKS.try_with(f);
}

fn ms(since: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(since).as_secs_f64() * 1000.0
}

impl Marks {
    /// The phases on the clock that started at `started`, the response headers having come at
    /// `first_byte` and the run ending at `end`. A phase that left no mark (none should, once
    /// a response came) ends with the phase after it, so the order always holds.
    pub(crate) fn timing(&self, started: Instant, first_byte: Instant, end: Instant) -> Timing {
        let ready = self.ready.get().unwrap_or(first_byte).min(first_byte);
        let connect = self.connect.get().unwrap_or(ready).min(ready);
        let dns = self.dns.get().unwrap_or(connect).min(connect);
        Timing {
            dns_ms: ms(started, dns),
            connect_ms: ms(started, connect),
            tls_ms: ms(started, ready),
            first_byte_ms: ms(started, first_byte),
            total_ms: ms(started, end.max(first_byte)),
        }
    }
}

/// reqwest's resolver (`getaddrinfo` on tokio's blocking pool), marking when a lookup ends.
#[derive(Debug, Default)]
pub(crate) struct TimedResolver;

impl reqwest::dns::Resolve for TimedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await;
            mark(|m| m.dns.set(Some(Instant::now())));
            let addrs: Vec<SocketAddr> = found?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Marks the start and the end of every connection reqwest makes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimedConnectLayer;

impl<S> tower::Layer<S> for TimedConnectLayer {
    type Service = TimedConnect<S>;

    fn layer(&self, inner: S) -> TimedConnect<S> {
        TimedConnect(inner)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct TimedConnect<S>(S);

type Done<R, E> = fn(&Result<R, E>);

impl<S, Req> tower::Service<Req> for TimedConnect<S>
where
    S: tower::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Inspect<S::Future, Done<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        mark(|m| {
            // Until the resolver says otherwise (an IP address needs no lookup).
            m.dns.set(Some(Instant::now()));
            m.tls_start.set(None);
        });
        let done: Done<S::Response, S::Error> = |_| {
            mark(|m| {
                let end = Instant::now();
                m.connect.set(Some(m.tls_start.get().unwrap_or(end)));
                m.ready.set(Some(end));
            })
        };
        self.0.call(req).inspect(done)
    }
}

/// A TLS session store that marks the start of the handshake and otherwise is the store it
/// wraps, or keeps nothing (`None`: no resumption, so every run sees the certificates).
///
/// rustls asks the store for a ticket to resume (and for a key share hint) when it builds the
/// ClientHello, the first thing it does on a freshly connected socket.
#[derive(Debug)]
pub(crate) struct TlsStartMark(pub Option<Arc<dyn ClientSessionStore>>);

fn handshake_starts() {
    mark(|m| {
        if m.tls_start.get().is_none() {
            m.tls_start.set(Some(Instant::now()));
        }
    })
}

impl ClientSessionStore for TlsStartMark {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(s) = &self.0 {
            s.set_kx_hint(server_name, group)
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        handshake_starts();
        self.0.as_ref()?.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(s) = &self.0 {
            s.set_tls12_session(server_name, value)
        }
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        handshake_starts();
        self.0.as_ref()?.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(s) = &self.0 {
            s.remove_tls12_session(server_name)
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        if let Some(s) = &self.0 {
            s.insert_tls13_ticket(server_name, value)
        }
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        handshake_starts();
        self.0.as_ref()?.take_tls13_ticket(server_name)
    }
}

/// Runs `request` with fresh marks; returns its output and the marks it left.
pub(crate) async fn marked<F: Future>(request: F) -> (F::Output, Marks) {
    let mut scoped = std::pin::pin!(MARKS.scope(Marks::default(), request));
    let out = scoped.as_mut().await;
    let marks = scoped.as_mut().take_value().unwrap_or_default();
    (out, marks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phases_are_ordered_even_with_missing_marks() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let m = Marks::default();
        m.dns.set(Some(at(1)));
        m.connect.set(Some(at(2)));
        m.ready.set(Some(at(5)));
        let t = m.timing(t0, at(7), at(9));
        assert_eq!(
            (
                t.dns_ms,
                t.connect_ms,
                t.tls_ms,
                t.first_byte_ms,
                t.total_ms
            ),
            (1.0, 2.0, 5.0, 7.0, 9.0)
        );
        // No marks at all (a response without a connection of ours): everything ends with the
        // response headers, never after them.
        let t = Marks::default().timing(t0, at(7), at(9));
        assert_eq!((t.dns_ms, t.connect_ms, t.tls_ms), (7.0, 7.0, 7.0));
        // A mark left by an earlier request after the later ones cannot break the order.
        let m = Marks::default();
        m.dns.set(Some(at(6)));
        m.connect.set(Some(at(3)));
        m.ready.set(Some(at(4)));
        let t = m.timing(t0, at(7), at(9));
        assert!(t.dns_ms <= t.connect_ms && t.connect_ms <= t.tls_ms);
    }
}
