//! The roles a node can play: wiring and loops only; the logic lives in the concept modules.

pub mod canaries;
pub mod controller;
pub mod membership;
pub mod runner;
pub mod viewserver;
pub mod worker;
