//! NanoScale node agent. Today: the pure reconciliation planner. The executor that
//! fetches, builds, supervises and health-checks (issue 3) will run its actions.
//!
//! Architecture invariant: planning does no I/O; the executor does no deciding.
#![forbid(unsafe_code)]

pub mod agent;
pub mod build;
pub mod builder;
pub mod cluster;
pub mod context;
pub mod executor;
pub mod firewall;
pub mod health;
pub mod helper;
pub mod plan;
pub mod protocol;
pub mod runtime;
pub mod sandbox;
pub mod source;
pub mod store;
pub mod supervise;
pub mod traffic;
pub mod usage;
