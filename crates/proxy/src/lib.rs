//! The traffic layer: `nanoscale proxy`, a separate process the agent starts and
//! feeds with a [`RouteTable`](nanoscale_core::route::RouteTable) over a Unix
//! socket. See docs/ARCHITECTURE.md, "Traffic layer".
// Unsafe code only in `memory`, which allows it for its one documented call.
#![deny(unsafe_code)]

pub mod access_log;
pub mod conn;
pub mod dns;
pub mod forward;
pub mod linger;
pub mod memory;
pub mod metrics;
pub mod park;
pub mod server;
pub mod static_files;
pub mod table;

use bytes::Bytes;

/// Errors a response body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every handler of the proxy answers with.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub use server::{run, ControlClient, ControlRequest, ControlResponse, ProxyConfig};
