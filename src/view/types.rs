//! The replicated state of the viewserver group and the one type config that pins openraft's
//! generics.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Raft types of the viewserver group: members are numbered from 1 and addressed by
    /// `host:port`; the log carries [`ViewCommand`]s.
    pub TypeConfig:
        D = ViewCommand,
        R = ViewReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type LogId = openraft::LogId<u64>;

/// The controller a view names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRef {
    /// The worker's node id.
    pub node: String,
    /// Its controller API address, as workers must reach it.
    pub addr: String,
}

/// Who the controller is. Only ever replaced by a view with a higher epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Grows by one with every change of controller (including "nobody").
    pub epoch: u64,
    /// `None` before the first election, and when no worker could take over.
    pub controller: Option<ControllerRef>,
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.controller {
            Some(c) => write!(f, "epoch {} controller {} ({})", self.epoch, c.node, c.addr),
            None => write!(f, "epoch {} without controller", self.epoch),
        }
    }
}

/// A change to the view, proposed by the Raft leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewCommand {
    /// Names a new controller (or nobody) for `epoch`. Applied only when the current epoch is
    /// `after` (one less than `epoch` when absent, as in logs written before it existed) and
    /// `epoch` is higher, so two proposals made from the same view cannot both take effect.
    /// `epoch` is more than one past `after` only when the view has to jump past the epoch
    /// fence (a group that lost its data).
    Name {
        epoch: u64,
        controller: Option<ControllerRef>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Opens (`open`) or closes the notice `key`: a fact about the cluster that one node must
    /// tell the admin once, whichever node sees it (the database away). Accepted only when
    /// it changes the notice's state, so of two nodes that try, one tells.
    Notice { key: String, open: bool },
}

impl fmt::Display for ViewCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewCommand::Name {
                epoch,
                controller,
                reason,
                ..
            } => write!(
                f,
                "name {} for epoch {epoch} ({reason})",
                controller.as_ref().map_or("nobody", |c| c.node.as_str())
            ),
            ViewCommand::Notice { key, open } => {
                write!(f, "{} notice {key}", if *open { "open" } else { "close" })
            }
        }
    }
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReply {
    pub accepted: bool,
    pub view: View,
}

/// A node's request to open or close a group notice ([`ViewCommand::Notice`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRequest {
    pub key: String,
    pub open: bool,
    /// Set by a member forwarding the request to the leader.
    #[serde(default)]
    pub forwarded: bool,
}

/// Whether the request changed the notice: `true` means the asker is the one to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeReply {
    pub changed: bool,
}
