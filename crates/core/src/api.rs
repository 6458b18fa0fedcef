//! Request and response bodies of the HTTP API (`/api/v1`). The CLI, the tests and
//! the dashboard's generated types all come from these.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::role::Role;
use crate::service::ServiceSpec;

/// The one error shape: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    pub message: String,
    /// The request field at fault, as a dotted path (`routes[0].path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Present on server errors so an operator can find the logged cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(example = "admin")]
    pub username: String,
    #[schema(example = "correct-horse-battery", format = Password)]
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub created_by: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Send back in `X-CSRF-Token` on every cookie-authenticated mutation.
    pub csrf_token: String,
    pub user: User,
    pub expires_at: DateTime<Utc>,
}

/// Who is calling: the user, and how they authenticated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: User,
    /// The effective role: the token's role for bearer tokens, else the user's.
    pub role: Role,
    /// `session` or `token`.
    pub auth: String,
    /// The session's CSRF token (session auth only), so a reloaded page can act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// The API token in use (token auth only), so a client can revoke it on logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    pub password: Option<String>,
    /// Required to change your own password (and only over a login session, never
    /// with an API token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Password)]
    pub current_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(example = "ci")]
    pub name: String,
    /// At most the creator's own role.
    pub role: Role,
    /// Lifetime in seconds; absent means it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Returned once, at creation: `token` is the secret and is never shown again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    #[schema(example = "shop")]
    pub name: String,
    /// Environment shared by every service of the project (a service's own env wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub service_count: i64,
}

/// A stored service: its spec (secret values redacted) plus bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Service {
    pub id: Uuid,
    pub project_id: Uuid,
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The release that should be serving, once one was deployed.
    pub current_release: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnvVar {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvVar {
    pub name: String,
    /// `********` for secrets.
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    Queued,
    Building,
    Starting,
    Live,
    Failed,
    Retired,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Queued => "queued",
            ReleaseStatus::Building => "building",
            ReleaseStatus::Starting => "starting",
            ReleaseStatus::Live => "live",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Retired => "retired",
        }
    }

    /// Whether a node's report may move a release from `self` to `next`. Releases
    /// only move forward; `retired` is set by the control plane alone, when another
    /// release of the service goes live, and `failed` never becomes anything else.
    pub fn can_become(self, next: ReleaseStatus) -> bool {
        use ReleaseStatus::*;
        match (self, next) {
            (Queued, Building | Starting | Live | Failed) => true,
            (Building, Starting | Live | Failed) => true,
            (Starting, Live | Failed) => true,
            (Queued | Building | Starting | Live | Failed | Retired, _) => false,
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "queued" => ReleaseStatus::Queued,
            "building" => ReleaseStatus::Building,
            "starting" => ReleaseStatus::Starting,
            "live" => ReleaseStatus::Live,
            "failed" => ReleaseStatus::Failed,
            "retired" => ReleaseStatus::Retired,
            _ => return None,
        })
    }
}

/// An immutable, numbered snapshot of a service: spec + resolved commit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub id: Uuid,
    pub service_id: Uuid,
    pub number: i64,
    /// The exact commit SHA every node builds.
    pub commit: String,
    /// The ref the user asked for.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub status: ReleaseStatus,
    pub reason: Option<String>,
    /// Set when this release is a rollback to an earlier one.
    pub rollback_of: Option<Uuid>,
    /// The commit's author and subject line, once a node has fetched the commit.
    pub commit_author: Option<String>,
    pub commit_message: Option<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Deploy this ref instead of the service's `source.ref`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The release to return to: its number or its id.
    pub release: ReleaseSelector,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ReleaseSelector {
    Number(i64),
    Id(Uuid),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeCapacity {
    pub cpus: i64,
    pub memory_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// `pending` (registered, agent not yet connected), `ready`, `unreachable`.
    pub status: String,
    /// `A` (no firewall), `B` (proxy and SSH only), `C` (nothing inbound): the
    /// mode the node should be in. What it is in is `firewall`.
    pub security_mode: String,
    /// Networks SSH is open to in mode B (empty: from anywhere).
    pub ssh_from: Vec<String>,
    /// The node's firewall as its agent last reported it: the mode in force, the
    /// ports open from outside, and whether a change was applied or reverted.
    pub firewall: Option<crate::firewall::FirewallState>,
    pub capacity: NodeCapacity,
    pub desired_version: i64,
    pub applied_version: i64,
    /// Whether the node runs its document: `applied`, `applying`, `degraded`, or
    /// `unknown` before its agent first reports.
    pub convergence: crate::agent::Convergence,
    /// Why the node is degraded, as its agent last reported.
    pub problems: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// CPU, memory, disk and load from the node's last heartbeat.
    pub usage: Option<crate::cluster::NodeUsage>,
}

/// `PATCH /api/v1/nodes/{id}`: what an admin may change of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    /// `A`, `B` or `C`. The node applies it and reverts it by itself when it can
    /// no longer reach the control plane within a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_mode: Option<String>,
    /// Addresses or networks (`203.0.113.0/24`, `2001:db8::/32`) SSH is open to in
    /// mode B; an empty list opens SSH to every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_from: Option<Vec<String>>,
}

/// One line of an instance's or a build's output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// When the line was written (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The instance id, or `build-<number>` for build output.
    pub source: String,
    pub text: String,
}

/// Query of `GET /api/v1/services/{id}/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// How many of the newest lines (1–10000, default 100).
    pub tail: Option<u32>,
    /// The build output of this release number instead of the instances' logs.
    pub build: Option<i64>,
}

/// A service's recent traffic and memory, summed over its nodes
/// (`GET /api/v1/services/{id}/metrics`). Kept in the control plane's memory: a
/// restart of the control plane starts the history afresh.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceMetrics {
    /// Width of one point.
    pub interval_secs: u32,
    /// Oldest first; intervals without any report are absent.
    pub points: Vec<MetricsPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsPoint {
    /// Start of the interval.
    pub at: DateTime<Utc>,
    /// Requests through the proxies in the interval.
    pub requests: u64,
    pub requests_per_second: f64,
    /// Responses with a 5xx status in the interval.
    pub server_errors: u64,
    /// Mean response time of the interval's requests; `null` without requests.
    pub mean_latency_ms: Option<f64>,
    /// Resident memory of the service's instances (the newest report of each node
    /// in the interval), `null` when none ran.
    pub memory_bytes: Option<u64>,
}

/// One running copy of a release on a node, as its agent last reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub id: String,
    /// Name of the node it runs on.
    pub node: String,
    pub node_id: Uuid,
    pub service_id: Uuid,
    /// Id of the release it runs.
    pub release: Uuid,
    pub release_number: i64,
    pub replica: u32,
    /// The port the app listens on (its `PORT`).
    pub port: u16,
    pub pid: Option<i32>,
    /// As its agent last reported it: see `node_reachable`.
    pub status: crate::agent::InstanceStatus,
    pub restarts: u32,
    pub started_at: DateTime<Utc>,
    /// When its agent last reported it.
    pub updated_at: DateTime<Utc>,
    /// False while its node misses heartbeats: `status` is then only the last one
    /// heard, and the instance may well be gone.
    pub node_reachable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub time: DateTime<Utc>,
    /// Dotted kind such as `project.created`, `release.queued`, `node.registered`.
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub message: String,
    pub project_id: Option<Uuid>,
    pub service_id: Option<Uuid>,
    pub release_id: Option<Uuid>,
    pub node_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    pub project_id: Option<Uuid>,
    pub service_id: Option<Uuid>,
    pub node_id: Option<Uuid>,
    /// A kind (`release.queued`) or a kind prefix ending in `.` (`release.`).
    pub kind: Option<String>,
    /// Only events older than this event id (paging backwards).
    pub before: Option<Uuid>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub time: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    /// e.g. `project.create`, `token.revoke`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// What changed, without secrets.
    pub summary: serde_json::Value,
    pub request_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub before: Option<Uuid>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// White-labelling and cluster-wide preferences.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    pub product_name: String,
    pub logo_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// `https://` URL of a logo; `null` to clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub members: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
}

/// Lets a deployer (or every deployer in a team) manage a project they did not create.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub id: Uuid,
    pub project_id: Uuid,
    pub user_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` or `unavailable`.
    pub status: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetupStatus {
    /// True until the first admin exists.
    pub needed: bool,
}
