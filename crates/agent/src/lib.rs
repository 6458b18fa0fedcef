//! NanoScale node agent. Today: the pure reconciliation planner. The executor that
//! fetches, builds, supervises and health-checks (issue 3) will run its actions.
//!
//! Architecture invariant: planning does no I/O; the executor does no deciding.
#![forbid(unsafe_code)]

pub mod build;
pub mod plan;
pub mod runtime;
pub mod source;
