//! The viewserver group: "who is the controller" as a fact replicated with openraft.
//!
//! - [`types`]: the view, the commands that change it, and the type config.
//! - [`log_store`]: the Raft log and vote on disk, fsynced before acknowledged.
//! - [`state_machine`]: the view, with durable snapshots.
//! - [`network`]: Raft RPCs over signed HTTP.
//! - [`group`]: bootstrap, worker liveness, and the election of controllers.

// openraft's StorageError is large by design; the storage API must return it as is.
#![allow(clippy::result_large_err)]

mod fsutil;
pub mod group;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

pub use types::{ControllerRef, View, ViewCommand};
