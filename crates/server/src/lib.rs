//! NanoScale control plane: HTTP API, authentication, RBAC, audit, store and events.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod desired;
pub mod git;
pub mod log_broker;
pub mod metrics;
pub mod metrics_history;
pub mod state;
pub mod store;

pub use app::Server;
pub use config::ServerConfig;
