//! The controller's HTTP handlers. They hold no state: each finds the running term through the
//! slot, sends its owner a message and answers with the reply.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio::time::Instant;

use super::ControllerSlot;
use super::owner::Msg;
use super::term::TermHandle;
use crate::model::NodeId;
use crate::rpc::Sender;
use crate::rpc::work::{PollReply, PollRequest, ResultsRequest, WrongEpoch};

/// Longest a poll is held when nothing is due.
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

/// A worker speaks only as itself: a body naming another node than the signed sender is
/// refused, so that no worker can vote or report in another's name.
// The error is the response itself, returned straight to axum on a cold path.
#[allow(clippy::result_large_err)]
fn as_sender(sender: Sender, named: &str) -> Result<NodeId, Response> {
    if sender.node == named {
        Ok(NodeId(sender.node))
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            format!(
                "signed by {:?}, but the request names {named:?}\n",
                sender.node
            ),
        )
            .into_response())
    }
}

fn not_controller() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "not the controller\n").into_response()
}

/// The running term if it acts for `epoch`; otherwise the answer a worker gets (503 when this
/// node is not the controller, 409 with our epoch when the epochs differ).
// The error is the response itself, returned straight to axum on a cold path.
#[allow(clippy::result_large_err)]
fn term_for(slot: &ControllerSlot, epoch: u64) -> Result<TermHandle, Response> {
    let term = slot.handle().ok_or_else(not_controller)?;
    if term.epoch.0 != epoch {
        let refusal = WrongEpoch {
            controller_epoch: term.epoch.0,
        };
        return Err((StatusCode::CONFLICT, Json(refusal)).into_response());
    }
    Ok(term)
}

pub(super) async fn poll(
    State(slot): State<ControllerSlot>,
    Extension(sender): Extension<Sender>,
    Json(req): Json<PollRequest>,
) -> Response {
    let node = match as_sender(sender, &req.node) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    let term = match term_for(&slot, req.epoch) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_POLL_WAIT);
    // 0 is a busy worker saying it is alive: it is marked seen and given nothing.
    let capacity = req.capacity as usize;
    loop {
        let asked = term
            .ask(|reply| Msg::Poll {
                node: node.clone(),
                location: req.location.clone(),
                capacity,
                canaries: req.canaries.clone(),
                reply,
            })
            .await;
        let Some(taken) = asked else {
            return not_controller();
        };
        let may_act = term.may_act();
        if !taken.items.is_empty() || Instant::now() >= deadline || !may_act {
            return Json(PollReply {
                epoch: term.epoch.0,
                assignments: if may_act { taken.items } else { Vec::new() },
                canaries: term.host().vantage.canaries(),
            })
            .into_response();
        }
        tokio::select! {
            _ = taken.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = term.token.cancelled() => {}
        }
    }
}

pub(super) async fn results(
    State(slot): State<ControllerSlot>,
    Extension(sender): Extension<Sender>,
    Json(req): Json<ResultsRequest>,
) -> Response {
    let node = match as_sender(sender, &req.node) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    let term = match term_for(&slot, req.epoch) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    let results = req.results;
    match term
        .ask(|reply| Msg::Results {
            node,
            results,
            reply,
        })
        .await
    {
        Some(reply) => Json(reply).into_response(),
        None => not_controller(),
    }
}

/// One check's live state; 404 when the term does not hold it.
pub(super) async fn check_status(
    State(slot): State<ControllerSlot>,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    let Some(term) = slot.handle() else {
        return not_controller();
    };
    match term
        .ask(|reply| Msg::CheckStatus {
            id: crate::model::CheckId(id),
            reply,
        })
        .await
    {
        Some(Some(view)) => Json(view).into_response(),
        Some(None) => (StatusCode::NOT_FOUND, "no such check\n").into_response(),
        None => not_controller(),
    }
}

/// The running term's answer to one question, as JSON; 503 when this node holds no term.
async fn answer<R: serde::Serialize>(
    slot: &ControllerSlot,
    make: impl FnOnce(tokio::sync::oneshot::Sender<R>) -> Msg,
) -> Response {
    let Some(term) = slot.handle() else {
        return not_controller();
    };
    match term.ask(make).await {
        Some(answer) => Json(answer).into_response(),
        None => not_controller(),
    }
}

/// The cluster in brief (the dashboard's workers page and quorum marks).
pub(super) async fn summary(State(slot): State<ControllerSlot>) -> Response {
    answer(&slot, |reply| Msg::Summary { reply }).await
}

/// The term's state, with the outbox's decisions read from the database (left out, with the
/// error said, when it cannot be read).
pub(super) async fn status(State(slot): State<ControllerSlot>) -> Response {
    let Some(term) = slot.handle() else {
        return not_controller();
    };
    let Some(mut answer) = term.ask(|reply| Msg::Status { reply }).await else {
        return not_controller();
    };
    answer.outbox = Some(
        super::status::outbox(&term.host().store)
            .await
            .unwrap_or_else(|e| super::status::OutboxStatus {
                error: Some(e.to_string()),
                ..Default::default()
            }),
    );
    Json(answer).into_response()
}
