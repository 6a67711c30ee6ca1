//! When a controller-capable worker acts as controller (DESIGN 2.2), as a pure state machine
//! like [`crate::vote`]: no IO, no clock reads. [`Supervisor::step`] takes what the node knows
//! now ([`Inputs`], plus the answer to a fence read it asked for) and returns [`Action`]s:
//! start a term for an epoch, stop it with a reason, read the fence, wake at a time. The
//! worker's supervisor loop (`role::worker`) observes, steps and executes.
//!
//! # The rules
//!
//! 1. **Lease.** A term for epoch E runs only while the latest view names this node for E and
//!    a heartbeat sent less than `lease` ago was answered. It stops at the lease's end, with
//!    or without news (the step asks to be woken then).
//! 2. **Never two terms.** A start always follows the stop of the running term, in the same
//!    step; there is at most one term, whatever the inputs.
//! 3. **A newer view naming this node** stops the old epoch's term and starts the new one.
//! 4. **The group unreachable.** When no member answers and the last view names this node,
//!    it waits until `fence_alone_at` (by then a working group would have named a successor,
//!    which raises the fence), then reads the fence: a newer epoch there rules its own out
//!    for good; its own epoch means the group is down, and it acts under the fence alone
//!    (S14). While it acts that way it reads the fence every heartbeat interval and stops at
//!    the first newer epoch. An unreadable fence changes nothing; it is read again later.
//! 5. **Superseded for good.** An epoch that a fence read showed older than the fence's is
//!    never acted for again, and neither is any older one. A lease for such an epoch is
//!    reported ([`Action::NotActing`]), so the group can name a controller past the fence.
//! 6. **A term that ended by itself** (a fenced write, or it could not act) is stopped and
//!    reaped; its epoch is ruled out only if a fence read shows a newer one, so a term that
//!    merely lost its database comes back with the next lease.
//! 7. **Shutdown** stops the running term.
//!
//! # Decisions where DESIGN is silent
//!
//! - A lease that comes back for the epoch it already acts for under the fence alone keeps
//!   the term (no restart): the epoch, and so the fence, are the same.
//! - The lease end logged for a stop is the lease's own end when that has passed, else the
//!   moment of the stop (stepping down, a newer view): the interval in which the node may
//!   have acted, so that intervals can be compared across nodes.

use std::ops::ControlFlow;
use std::time::Duration;

use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// A held controller lease: the node may act for `epoch` until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
    pub until: Instant,
}

/// What the node knows at the moment of a step.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The lease this node holds now, if any (the view names it, it is not stepping down, the
    /// last answered heartbeat is younger than `lease`).
    pub lease: Option<Lease>,
    /// The epoch of the latest view received.
    pub view_epoch: u64,
    /// The latest view names this node as controller.
    pub named: bool,
    /// The node is stepping down for a hand-over.
    pub stepping_down: bool,
    /// While the group is unreachable and the last view names this node: from when it may act
    /// under the fence alone.
    pub fence_alone_at: Option<Instant>,
    /// The running term has ended by itself and waits to be reaped.
    pub term_ended: bool,
    /// The node is shutting down.
    pub shutdown: bool,
}

/// What a fence read found, for the epoch it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The fence holds a newer epoch: this one has been superseded.
    Newer,
    /// The fence holds this epoch or an older one.
    NotNewer,
    /// The fence could not be read (in time).
    Unreadable,
}

/// The answer to an [`Action::ReadFence`], handed to the next [`Supervisor::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceReading {
    pub epoch: u64,
    pub fence: Fence,
}

/// How a term acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Under a lease from the viewserver group.
    Lease,
    /// Under the epoch fence alone, the group being unreachable (rule 4).
    FenceAlone,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lease => "lease",
            Mode::FenceAlone => "fence_alone",
        }
    }
}

/// Why a term stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The lease ran out and the view still names this node.
    LeaseExpired,
    /// The node steps down for a hand-over.
    SteppingDown,
    /// The latest view names another controller.
    OtherController,
    /// A newer view names this node: the term of the newer epoch replaces this one.
    NewerView,
    /// A fence read found a newer epoch.
    NewerFence,
    /// The term ended by itself and the fence holds no newer epoch.
    StoppedItself,
    /// The node shuts down.
    ShuttingDown,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::LeaseExpired => "lease expired",
            StopReason::SteppingDown => "stepping down",
            StopReason::OtherController => "the view names another controller",
            StopReason::NewerView => "a newer epoch names this node",
            StopReason::NewerFence => "a newer epoch holds the fence",
            StopReason::StoppedItself => "the term stopped itself",
            StopReason::ShuttingDown => "shutting down",
        }
    }
}

/// What the caller does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a term for `epoch`.
    Start { epoch: u64, mode: Mode },
    /// Stop the term for `epoch` and wait for it to end. `lease_end` is when it could last
    /// have acted (logged).
    Stop {
        epoch: u64,
        reason: StopReason,
        lease_end: Instant,
    },
    /// Read the fence and step again with the answer; the step stopped there.
    ReadFence { epoch: u64 },
    /// The fence holds a newer epoch than `epoch`, which the view names this node for: it will
    /// not act for it (reported once per epoch). The group may be unreachable, or it may have
    /// named this node for an epoch the fence has passed.
    NotActing { epoch: u64 },
    /// Step again at this time at the latest, even if nothing changes.
    WakeAt(Instant),
}

/// The lease and fence decision of one node; see the module documentation.
#[derive(Debug, Clone)]
pub struct Supervisor {
    heartbeat: Duration,
    /// The epoch a term runs for, and how.
    acting: Option<(u64, Mode)>,
    /// The lease of the running term, for the lease end of its stop.
    held: Option<Lease>,
    /// Epochs up to this one are never acted for (rule 5).
    superseded: u64,
    /// The highest superseded epoch a lease was refused for (reported once).
    refused: u64,
}

impl Supervisor {
    /// A supervisor for a node heartbeating every `heartbeat`.
    pub fn new(heartbeat: Duration) -> Supervisor {
        Supervisor {
            heartbeat,
            acting: None,
            held: None,
            superseded: 0,
            refused: 0,
        }
    }

    /// The epoch a term runs for now.
    pub fn acting(&self) -> Option<(u64, Mode)> {
        self.acting
    }

    /// Epochs up to this one are never acted for again.
    pub fn superseded(&self) -> u64 {
        self.superseded
    }

    /// One decision at `now`. `reading` answers the [`Action::ReadFence`] of the previous step,
    /// if it asked for one.
    pub fn step(
        &mut self,
        inputs: &Inputs,
        reading: Option<FenceReading>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if inputs.shutdown {
            if let Some((epoch, _)) = self.acting {
                self.stop(&mut out, epoch, StopReason::ShuttingDown, now);
            }
            return out;
        }
        if self.term_ended(inputs, reading, &mut out, now).is_break() {
            return out;
        }
        let lease = inputs.lease.filter(|l| l.epoch > self.superseded);
        self.refuse_superseded(inputs, &mut out);
        if self
            .decide(inputs, lease, reading, &mut out, now)
            .is_break()
        {
            return out;
        }
        if let Some(at) = self.wake_at(inputs, lease, now) {
            out.push(Action::WakeAt(at));
        }
        out
    }

    /// Rule 6: a term that ended by itself stops, after a fence read says why. `Break` while
    /// that read is asked for.
    fn term_ended(
        &mut self,
        inputs: &Inputs,
        reading: Option<FenceReading>,
        out: &mut Vec<Action>,
        now: Instant,
    ) -> ControlFlow<()> {
        let (true, Some((epoch, _))) = (inputs.term_ended, self.acting) else {
            return ControlFlow::Continue(());
        };
        let reason = match read(reading, epoch) {
            None => {
                out.push(Action::ReadFence { epoch });
                return ControlFlow::Break(());
            }
            Some(Fence::Newer) => {
                self.superseded = self.superseded.max(epoch);
                StopReason::NewerFence
            }
            Some(_) => StopReason::StoppedItself,
        };
        self.stop(out, epoch, reason, now);
        ControlFlow::Continue(())
    }

    /// Named for an epoch the fence has ruled out (a group that lost its data counts from
    /// zero again): say so, once per epoch, so the group names a controller past the fence.
    fn refuse_superseded(&mut self, inputs: &Inputs, out: &mut Vec<Action>) {
        if let Some(l) = inputs
            .lease
            .filter(|l| l.epoch <= self.superseded && l.epoch > self.refused)
        {
            self.refused = l.epoch;
            out.push(Action::NotActing { epoch: l.epoch });
        }
    }

    /// Whether the fence alone lets this node act for `epoch` now.
    fn alone(inputs: &Inputs, epoch: u64, now: Instant) -> bool {
        inputs.view_epoch == epoch && inputs.fence_alone_at.is_some_and(|at| now >= at)
    }

    /// Start, keep or stop acting from the valid `lease` and what this node does now.
    /// `Break` while a fence read is asked for.
    fn decide(
        &mut self,
        inputs: &Inputs,
        lease: Option<Lease>,
        reading: Option<FenceReading>,
        out: &mut Vec<Action>,
        now: Instant,
    ) -> ControlFlow<()> {
        match (lease, self.acting) {
            (Some(l), Some((epoch, _))) if l.epoch == epoch => {
                self.held = Some(l);
                self.acting = Some((epoch, Mode::Lease));
            }
            (None, Some((epoch, _))) if Self::alone(inputs, epoch, now) => {
                match read(reading, epoch) {
                    None => {
                        out.push(Action::ReadFence { epoch });
                        return ControlFlow::Break(());
                    }
                    Some(Fence::Newer) => {
                        self.superseded = self.superseded.max(epoch);
                        self.stop(out, epoch, StopReason::NewerFence, now);
                    }
                    Some(_) => self.acting = Some((epoch, Mode::FenceAlone)),
                }
            }
            (Some(l), acting) => {
                if let Some((epoch, _)) = acting {
                    self.stop(out, epoch, StopReason::NewerView, now);
                }
                self.acting = Some((l.epoch, Mode::Lease));
                self.held = Some(l);
                out.push(Action::Start {
                    epoch: l.epoch,
                    mode: Mode::Lease,
                });
            }
            (None, Some((epoch, _))) => {
                let reason = if inputs.stepping_down {
                    StopReason::SteppingDown
                } else if inputs.named && inputs.view_epoch == epoch {
                    StopReason::LeaseExpired
                } else if inputs.named {
                    StopReason::NewerView
                } else {
                    StopReason::OtherController
                };
                self.stop(out, epoch, reason, now);
            }
            (None, None) => return self.start_alone(inputs, reading, out, now),
        }
        ControlFlow::Continue(())
    }

    /// Neither a lease nor a term: start under the fence alone when it allows. `Break` while
    /// a fence read is asked for.
    fn start_alone(
        &mut self,
        inputs: &Inputs,
        reading: Option<FenceReading>,
        out: &mut Vec<Action>,
        now: Instant,
    ) -> ControlFlow<()> {
        let epoch = inputs.view_epoch;
        if epoch <= self.superseded || !Self::alone(inputs, epoch, now) {
            return ControlFlow::Continue(());
        }
        match read(reading, epoch) {
            None => {
                out.push(Action::ReadFence { epoch });
                return ControlFlow::Break(());
            }
            Some(Fence::Newer) => {
                self.superseded = epoch;
                out.push(Action::NotActing { epoch });
            }
            Some(Fence::Unreadable) => {}
            Some(Fence::NotNewer) => {
                self.acting = Some((epoch, Mode::FenceAlone));
                self.held = None;
                out.push(Action::Start {
                    epoch,
                    mode: Mode::FenceAlone,
                });
            }
        }
        ControlFlow::Continue(())
    }

    /// When to be woken for the next step.
    fn wake_at(&self, inputs: &Inputs, lease: Option<Lease>, now: Instant) -> Option<Instant> {
        let beat = now + self.heartbeat;
        match (lease, self.acting) {
            (Some(l), _) => Some(l.until),
            // Under the fence alone: read it again each heartbeat interval.
            (None, Some(_)) => Some(beat),
            (None, None) => inputs
                .fence_alone_at
                .filter(|_| inputs.view_epoch > self.superseded)
                .map(|at| at.max(beat)),
        }
    }

    fn stop(&mut self, out: &mut Vec<Action>, epoch: u64, reason: StopReason, now: Instant) {
        let lease_end = self.held.map_or(now, |l| l.until.min(now));
        self.acting = None;
        self.held = None;
        out.push(Action::Stop {
            epoch,
            reason,
            lease_end,
        });
    }
}

/// The fence as `reading` found it for `epoch`, if it was read for that epoch.
fn read(reading: Option<FenceReading>, epoch: u64) -> Option<Fence> {
    reading.filter(|r| r.epoch == epoch).map(|r| r.fence)
}
