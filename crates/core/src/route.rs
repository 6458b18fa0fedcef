//! The route table: what the node's proxy serves. The agent compiles it from the
//! desired-state document and the instances it observes healthy, and hands it to
//! `nanoscale proxy` over a local Unix socket; the proxy swaps it in atomically.
//! One model, rendered by the built-in proxy (and later by the nginx engine).
//!
//! Matching (both listeners): among routes whose `host` equals the request's host
//! (lowercased, port removed; `*.example.com` matches one or more labels in front),
//! the longest `path` prefix on a segment boundary wins; when none matches, the
//! host-less routes are tried the same way. A host-less `/` route is the default.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Everything a proxy serves, as one atomically swapped value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Generation assigned by the agent; the proxy reports the one it serves.
    pub version: u64,
    /// Routes on the external listener (the service specs' `routes`).
    #[serde(default)]
    pub external: Vec<Route>,
    /// Routes on the internal listener: `<service>.svc.internal` and
    /// `<service>.<project>.svc.internal`, host only. The DNS responder answers
    /// exactly these names.
    #[serde(default)]
    pub internal: Vec<Route>,
}

/// Host and path-prefix match to a backend, with its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Names the route in error pages, the access log and metrics labels
    /// (`web:app.example.com/api`).
    pub name: String,
    /// Lowercase host name without port; `None` matches every host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix starting with `/`.
    #[serde(default = "root_path")]
    pub path: String,
    /// Remove `path` from the request path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    pub backend: Backend,
    #[serde(default)]
    pub policy: RoutePolicy,
}

fn root_path() -> String {
    "/".to_owned()
}

/// Where matched requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Backend {
    /// Forward to the healthy instances of a service (empty: 503 naming the route).
    Upstreams {
        service: String,
        targets: Vec<Target>,
    },
    /// Serve files from a directory built by the deploy engine (static sites).
    Static { service: String, root: PathBuf },
}

/// One instance to forward to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub addr: SocketAddr,
    /// The instance id, shown in the access log as the upstream.
    pub instance: String,
}

/// How the proxy picks among a route's targets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
}

/// Per-route limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutePolicy {
    pub balance: Balance,
    /// Request bodies larger than this get 413 (checked against Content-Length up
    /// front and counted while streaming).
    pub max_body_bytes: u64,
    /// Connecting to an instance (a failure is retried on another instance for
    /// idempotent requests, and ejects the instance for a while).
    pub connect_timeout_ms: u64,
    /// From the request sent to the response headers received (504 after).
    pub response_timeout_ms: u64,
    /// Extra attempts on another instance after a connect failure, idempotent
    /// methods only.
    pub retries: u32,
}

pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            balance: Balance::RoundRobin,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_timeout_ms: 3_000,
            response_timeout_ms: 60_000,
            retries: 2,
        }
    }
}

/// What a service's spec may set of a route's policy (each `routes[]` entry's
/// optional fields); anything unset keeps [`RoutePolicy::default`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// Limits of what a spec may set: (field, min, max).
pub const MAX_BODY_MB: (u64, u64) = (1, 10 * 1024);
pub const CONNECT_TIMEOUT_MS: (u64, u64) = (50, 60_000);
pub const RESPONSE_TIMEOUT_SECS: (u64, u64) = (1, 3600);
pub const RETRIES: (u64, u64) = (0, 5);

impl RouteOptions {
    pub fn is_default(&self) -> bool {
        *self == RouteOptions::default()
    }

    /// The proxy's policy: these options over the defaults.
    pub fn policy(&self) -> RoutePolicy {
        let defaults = RoutePolicy::default();
        RoutePolicy {
            balance: self.balance.unwrap_or(defaults.balance),
            max_body_bytes: self
                .max_body_mb
                .map_or(defaults.max_body_bytes, |mb| u64::from(mb) << 20),
            connect_timeout_ms: self
                .connect_timeout_ms
                .map_or(defaults.connect_timeout_ms, u64::from),
            response_timeout_ms: self
                .response_timeout_secs
                .map_or(defaults.response_timeout_ms, |secs| u64::from(secs) * 1000),
            retries: self.retries.unwrap_or(defaults.retries),
        }
    }
}

impl Backend {
    pub fn service(&self) -> &str {
        match self {
            Backend::Upstreams { service, .. } | Backend::Static { service, .. } => service,
        }
    }
}

impl Route {
    /// Whether `path` is under this route's prefix: equal, or continuing with `/`
    /// after it (so `/api` matches `/api` and `/api/x` but not `/apis`).
    pub fn matches_path(&self, path: &str) -> bool {
        prefix_matches(&self.path, path)
    }
}

/// Segment-boundary prefix match (`/` matches everything).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// The path forwarded for a stripped route: `/api/x` under `/api` becomes `/x`,
/// `/api` becomes `/`.
pub fn strip_path_prefix<'a>(prefix: &str, path: &'a str) -> std::borrow::Cow<'a, str> {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => std::borrow::Cow::Borrowed(rest),
        Some(rest) => std::borrow::Cow::Owned(format!("/{rest}")),
        None => std::borrow::Cow::Borrowed(path),
    }
}

/// Whether a route host (possibly `*.example.com`) matches a request host.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|front| front.len() > 1 && front.ends_with('.')),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/users"));
        assert!(prefix_matches("/api/", "/api/users"));
        assert!(prefix_matches("/api", "/api?x=1"));
        assert!(!prefix_matches("/api", "/apis"));
        assert!(!prefix_matches("/api", "/"));
    }

    #[test]
    fn stripping_keeps_a_leading_slash() {
        assert_eq!(strip_path_prefix("/api", "/api/users?x=1"), "/users?x=1");
        assert_eq!(strip_path_prefix("/api", "/api"), "/");
        assert_eq!(strip_path_prefix("/api", "/api?x=1"), "/?x=1");
        assert_eq!(strip_path_prefix("/", "/a"), "/a");
    }

    #[test]
    fn wildcard_hosts_need_a_label_in_front() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(host_matches("example.com", "example.com"));
        assert!(!host_matches("example.com", "www.example.com"));
    }

    #[test]
    fn tables_round_trip_with_defaults() {
        let json = r#"{"version":3,"external":[{"name":"web:/","backend":{"upstreams":{"service":"web","targets":[{"addr":"127.0.0.1:20000","instance":"i1"}]}}}]}"#;
        let table: RouteTable = serde_json::from_str(json).unwrap();
        assert_eq!(table.external[0].path, "/");
        assert_eq!(table.external[0].policy, RoutePolicy::default());
        assert!(table.internal.is_empty());
        let again: RouteTable =
            serde_json::from_str(&serde_json::to_string(&table).unwrap()).unwrap();
        assert_eq!(again, table);
    }
}
