//! The agent protocol: what a node's agent and the control plane say to each other.
//! Today it travels as two HTTP calls over loopback (`GET /api/v1/agent/desired-state`
//! long-poll, `POST /api/v1/agent/report`); the cluster channel carries the same
//! messages. The agent authenticates with its node credential (`nsn_…`).
//!
//! Events are delivered exactly once: the agent gives each one an id when it
//! records it in its own outbox, sends it until the control plane acknowledges it,
//! and the control plane inserts by id, ignoring an id it already has.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::ReleaseStatus;

/// Prefix of node credentials, so a leaked one is recognisable.
pub const NODE_CREDENTIAL_PREFIX: &str = "nsn_";
/// Events the control plane accepts in one report.
pub const MAX_EVENTS_PER_REPORT: usize = 500;
/// Instances and releases one report may describe.
pub const MAX_ITEMS_PER_REPORT: usize = 5_000;
/// Longest long-poll the control plane holds a desired-state request.
pub const MAX_WAIT_SECS: u64 = 60;

/// Where the node stands against its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Convergence {
    /// No report yet.
    Unknown,
    /// Everything in the document runs healthy.
    Applied,
    /// Work in progress, nothing known to be wrong.
    Applying,
    /// Something cannot converge; `problems` says what.
    Degraded,
}

impl Convergence {
    pub fn as_str(self) -> &'static str {
        match self {
            Convergence::Unknown => "unknown",
            Convergence::Applied => "applied",
            Convergence::Applying => "applying",
            Convergence::Degraded => "degraded",
        }
    }

    pub fn parse(value: &str) -> Convergence {
        match value {
            "applied" => Convergence::Applied,
            "applying" => Convergence::Applying,
            "degraded" => Convergence::Degraded,
            _ => Convergence::Unknown,
        }
    }
}

/// Lifecycle of one running copy of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Started; its health check has not passed yet.
    Starting,
    Healthy,
    Unhealthy,
    /// The process is gone; a restart is pending (with backoff).
    Exited,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Starting => "starting",
            InstanceStatus::Healthy => "healthy",
            InstanceStatus::Unhealthy => "unhealthy",
            InstanceStatus::Exited => "exited",
        }
    }

    pub fn parse(value: &str) -> Option<InstanceStatus> {
        Some(match value {
            "starting" => InstanceStatus::Starting,
            "healthy" => InstanceStatus::Healthy,
            "unhealthy" => InstanceStatus::Unhealthy,
            "exited" => InstanceStatus::Exited,
            _ => return None,
        })
    }
}

/// Query of `GET /api/v1/agent/desired-state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DesiredStateQuery {
    /// The version the agent already has: the call waits (up to `wait_secs`) until
    /// the document moves past it.
    pub after_version: Option<i64>,
    /// Longest wait in seconds (at most 60).
    pub wait_secs: Option<u64>,
}

/// One instance as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceReport {
    /// Unique on the node, e.g. `web-r3-0-k2j4`.
    pub id: String,
    pub service_id: Uuid,
    pub release_id: Uuid,
    pub replica: u32,
    pub port: u16,
    /// The app's process id while it runs.
    pub pid: Option<i32>,
    pub status: InstanceStatus,
    pub restarts: u32,
    pub started_at: DateTime<Utc>,
    /// Resident memory of the app's process, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// A service's traffic through this node's proxy: counters since the proxy
/// started (the control plane takes differences between reports, so a proxy
/// restart only looks like a reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceTraffic {
    pub service_id: Uuid,
    pub requests: u64,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    pub latency_sum_micros: u64,
}

/// A release's status as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReport {
    pub release_id: Uuid,
    pub status: ReleaseStatus,
    pub reason: Option<String>,
    /// Who wrote the release's commit and its subject line, once the node has
    /// the commit (the control plane only resolves refs, it never fetches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_info: Option<CommitInfo>,
}

/// A commit's author name and subject line, as git records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitInfo {
    pub author: String,
    pub message: String,
}

/// Longest author or message a report may carry, in bytes.
pub const MAX_COMMIT_TEXT: usize = 1000;

/// Longest event message a report may carry, in bytes.
pub const MAX_EVENT_MESSAGE: usize = 8 * 1024;

/// Longest release reason, convergence problem or firewall message, in bytes.
pub const MAX_PROBLEM: usize = 4 * 1024;

/// Longest event kind, in bytes.
pub const MAX_EVENT_KIND: usize = 100;

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` where
/// something was cut.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    const MARK: &str = "…";
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mark = if max >= MARK.len() { MARK } else { "" };
    let mut end = max - mark.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{mark}", &text[..end]))
}

/// A transition the agent observed, recorded in its outbox until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentEvent {
    /// Made by the agent; the control plane ignores an id it already has.
    pub id: Uuid,
    pub time: DateTime<Utc>,
    /// Dotted kind: `build.started`, `instance.crashed`, `document.applied`, …
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub message: String,
    pub service_id: Option<Uuid>,
    pub release_id: Option<Uuid>,
}

/// `POST /api/v1/agent/report`: the node's whole state (level-triggered: each report
/// replaces the last) plus the events not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// The document version the agent is converging to.
    pub target_version: i64,
    /// The last document version the agent fully applied.
    pub applied_version: i64,
    pub convergence: Convergence,
    /// Why the node is degraded, one line per problem.
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
    #[serde(default)]
    pub releases: Vec<ReleaseReport>,
    #[serde(default)]
    pub events: Vec<AgentEvent>,
    /// The node's own CPU, memory, disk and load (the heartbeat).
    #[serde(default)]
    pub usage: Option<crate::cluster::NodeUsage>,
    /// Requests per service through this node's proxy. Left out when empty, so
    /// a control plane that predates it still takes the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<ServiceTraffic>,
    /// The node's firewall: mode in force and exposure (left out by agents that
    /// manage none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<crate::firewall::FirewallState>,
}

impl AgentReport {
    /// Cuts every free text to the size the control plane takes. A report it
    /// refuses is sent again and again, holding every event behind it, so the
    /// agent never sends one that is too long (an app's output ends up in
    /// release reasons and events, at any length).
    pub fn clip_texts(&mut self) {
        fn cut(text: &mut String, max: usize) {
            if let std::borrow::Cow::Owned(clipped) = clip(text, max) {
                *text = clipped;
            }
        }
        for problem in &mut self.problems {
            cut(problem, MAX_PROBLEM);
        }
        for release in &mut self.releases {
            if let Some(reason) = &mut release.reason {
                cut(reason, MAX_PROBLEM);
            }
            if let Some(info) = &mut release.commit_info {
                cut(&mut info.author, MAX_COMMIT_TEXT);
                cut(&mut info.message, MAX_COMMIT_TEXT);
            }
        }
        for event in &mut self.events {
            cut(&mut event.message, MAX_EVENT_MESSAGE);
        }
        if let Some(message) = self.firewall.as_mut().and_then(|f| f.message.as_mut()) {
            cut(message, MAX_PROBLEM);
        }
    }
}

/// The control plane's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReportAck {
    /// Ids of the events now stored (including ones stored by an earlier report):
    /// the agent drops them from its outbox.
    pub acknowledged: Vec<Uuid>,
}

/// What the control plane asks a node for on a user's behalf: the newest lines of
/// some of its instances, or of one release's build (`GET
/// /api/v1/agent/log-requests`, long-polled by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    pub id: Uuid,
    /// The service's name (a DNS label: its directory on the node).
    pub service: String,
    /// Instance ids on this node; empty with `build`.
    #[serde(default)]
    pub instances: Vec<String>,
    /// A release number: its build output instead of instances.
    #[serde(default)]
    pub build: Option<i64>,
    pub tail: u32,
}

/// `POST /api/v1/agent/log-requests/{id}`: the node's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogAnswer {
    pub entries: Vec<crate::api::LogEntry>,
}

/// Whether an instance id is acceptable (it is a directory name on its node):
/// letters, digits and `-`, at most 100 bytes.
pub fn is_instance_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Query of `GET /api/v1/agent/log-requests`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogRequestsQuery {
    /// Longest wait in seconds for a request to come (at most 60).
    pub wait_secs: Option<u64>,
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    #[test]
    fn clips_on_a_character_boundary_and_marks_the_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 10), "abcdefghij");
        let cut = clip("ééééé", 6);
        assert!(cut.len() <= 6, "{cut}");
        assert_eq!(cut, "é…");
        // No room for the mark: just cut.
        assert_eq!(clip("xyz", 2), "xy");
    }

    #[test]
    fn a_report_with_an_apps_long_output_fits_every_limit() {
        let long = "x".repeat(100_000);
        let mut report = AgentReport {
            target_version: 1,
            applied_version: 1,
            convergence: Convergence::Degraded,
            problems: vec![long.clone()],
            instances: Vec::new(),
            releases: vec![ReleaseReport {
                release_id: Uuid::nil(),
                status: ReleaseStatus::Failed,
                reason: Some(long.clone()),
                commit_info: Some(CommitInfo {
                    author: long.clone(),
                    message: "é".repeat(5_000),
                }),
            }],
            events: vec![AgentEvent {
                id: Uuid::nil(),
                time: Utc::now(),
                kind: "build.failed".into(),
                severity: "error".into(),
                message: long.clone(),
                service_id: None,
                release_id: None,
            }],
            usage: None,
            traffic: Vec::new(),
            firewall: None,
        };
        report.clip_texts();
        assert!(report.problems[0].len() <= MAX_PROBLEM);
        assert!(report.problems[0].ends_with('…'));
        let release = &report.releases[0];
        assert!(release
            .reason
            .as_ref()
            .is_some_and(|r| r.len() <= MAX_PROBLEM));
        let info = release.commit_info.as_ref().expect("info");
        assert!(info.author.len() <= MAX_COMMIT_TEXT && info.message.len() <= MAX_COMMIT_TEXT);
        assert!(report.events[0].message.len() <= MAX_EVENT_MESSAGE);
    }
}
