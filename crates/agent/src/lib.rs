//! NanoScale node agent: it fetches the node's desired-state document, and its
//! executor runs what the pure planner decides (fetch, build, start, stop,
//! health-check, route, firewall), then reports. `docs/ARCHITECTURE.md` has the map.
//!
//! Architecture invariant: planning does no I/O; the executor does no deciding.
#![forbid(unsafe_code)]

pub mod agent;
pub mod build;
pub mod builder;
pub mod channel;
pub mod cluster;
pub mod context;
pub mod executor;
pub mod firewall;
pub mod health;
pub mod helper;
pub mod low_memory;
pub mod plan;
pub mod protocol;
pub mod runtime;
pub mod sandbox;
pub mod source;
pub mod store;
pub mod supervise;
pub mod traffic;
pub mod usage;
pub mod volumes;
