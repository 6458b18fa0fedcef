//! Domain and wire types shared by the control plane, the agent and the CLI.
//!
//! Architecture invariant: this crate does no I/O. It only defines types, their
//! validation and their serialized form, so every other crate (and the dashboard's
//! generated TypeScript) agrees on one shape.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod channel;
pub mod cluster;
pub mod content;
pub mod desired;
pub mod firewall;
pub mod logs;
pub mod names;
pub mod role;
pub mod route;
pub mod service;
pub mod slots;
pub mod validation;

pub use names::{is_dns_label, is_env_name};
pub use role::Role;
pub use validation::ValidationError;
