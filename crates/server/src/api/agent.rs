//! The agent protocol over HTTP: a node's agent long-polls its desired-state
//! document and reports what it runs. Only node credentials (`nsn_…`) are accepted;
//! user tokens and sessions get 401 here, and node credentials get 401 everywhere
//! else.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoscale_core::agent::{
    AgentReport, DesiredStateQuery, LogAnswer, LogRequest, LogRequestsQuery, ReportAck,
    MAX_COMMIT_TEXT, MAX_EVENTS_PER_REPORT, MAX_EVENT_KIND, MAX_EVENT_MESSAGE,
    MAX_ITEMS_PER_REPORT, MAX_PROBLEM, MAX_WAIT_SECS, NODE_CREDENTIAL_PREFIX,
};
use nanoscale_core::api::Node;
use nanoscale_core::desired::DesiredDocument;
use nanoscale_core::validation::plain_text;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::auth::{bearer_token, hash_secret};
use crate::state::AppState;

/// The node whose credential authenticated the request.
pub struct NodeIdentity(pub Node);

impl FromRequestParts<AppState> for NodeIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = NodeAuth::from_parts(parts)?;
        // Boxed, as the certificate query's future is 720 bytes (see `NodeId`).
        Box::pin(auth.node(&state.store))
            .await?
            .map(NodeIdentity)
            .ok_or(ApiError::Unauthorized)
    }
}

/// What a request presented to say which node it comes from, kept by a channel
/// to check again at every report (a removed node, or a certificate no longer
/// the node's, stops working at once, as over HTTP).
#[derive(Debug, Clone)]
pub enum NodeAuth {
    /// The SHA-256 of the client certificate (the cluster listener).
    Certificate(String),
    /// The hash of an `nsn_…` bearer credential (loopback).
    Credential(String),
}

impl NodeAuth {
    pub fn from_parts(parts: &Parts) -> Result<NodeAuth, ApiError> {
        // On the cluster listener only the client certificate counts.
        if let Some(peer) = parts.extensions.get::<crate::cluster::PeerCertificate>() {
            let fingerprint = peer.0.as_deref().ok_or(ApiError::Unauthorized)?;
            return Ok(NodeAuth::Certificate(fingerprint.to_owned()));
        }
        let credential = bearer_token(parts)
            .filter(|token| token.starts_with(NODE_CREDENTIAL_PREFIX))
            .ok_or(ApiError::Unauthorized)?;
        Ok(NodeAuth::Credential(hash_secret(credential)))
    }

    /// The node this names, if it still exists.
    pub async fn node(
        &self,
        store: &crate::store::Store,
    ) -> crate::store::StoreResult<Option<Node>> {
        match self {
            NodeAuth::Certificate(fingerprint) => store.node_by_certificate(fingerprint).await,
            NodeAuth::Credential(hash) => store.node_by_credential(hash).await,
        }
    }
}

/// Only the id of the node whose credential authenticated the request.
///
/// For the long-poll every agent keeps waiting: a handler's future keeps its
/// arguments for its whole life and is as large as the largest state it passes
/// through, so with the whole [`Node`] (and the query that finds it inline) each
/// of 10,000 waiting requests held about 0.5 KiB more.
pub struct NodeId(pub Uuid);

impl FromRequestParts<AppState> for NodeId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let NodeIdentity(node) = NodeIdentity::from_request_parts(parts, state).await?;
        Ok(NodeId(node.id))
    }
}

/// The calling node's document, with secrets (the agent needs them to run apps).
/// With `after_version`, waits up to `wait_secs` until the document moves past it,
/// or until a log request waits for the node (then the answer carries
/// `X-Nanoscale-Log-Requests: 1` and the same document).
#[utoipa::path(get, path = "/api/v1/agent/desired-state", tag = "agent",
    params(DesiredStateQuery), responses((status = 200, body = DesiredDocument)))]
pub async fn desired_state(
    State(state): State<AppState>,
    NodeId(node_id): NodeId,
    ApiQuery(query): ApiQuery<DesiredStateQuery>,
) -> ApiResult<Response> {
    let wait = query.wait_secs.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::field(
            "wait_secs",
            format!("must be at most {MAX_WAIT_SECS}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Subscribed before compiling, so a change between the two is not missed.
    let mut changes = state.store.subscribe();
    let answer = |document: Arc<DesiredDocument>, logs: bool| {
        let mut response = Json(document).into_response();
        if logs {
            response.headers_mut().insert(
                crate::log_broker::LOG_REQUESTS_HEADER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        Ok(response)
    };
    loop {
        // A removed node's channel ends at once; a relabelled one sees its new
        // placement.
        // Boxed: the compile's state (queries and all) is needed only while it
        // runs, not in every waiting agent's future (10,000 of them wait).
        let document = Box::pin(state.desired.document(&state.store, node_id))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let logs_ready = state.logs.ready(node_id);
        let moved = query
            .after_version
            .is_none_or(|known| document.version > known);
        if moved || tokio::time::Instant::now() >= deadline {
            return answer(document, false);
        }
        tokio::select! {
            received = changes.recv() => {
                if let Err(RecvError::Closed) = received {
                    return answer(document, false);
                }
            }
            // A log request came: the same document, and the signal.
            _ = logs_ready.notified() => return answer(document, true),
            _ = tokio::time::sleep_until(deadline) => return answer(document, false),
        }
    }
}

/// The node's whole state and its unacknowledged events. The answer lists the event
/// ids now stored, which the agent drops from its outbox.
#[utoipa::path(post, path = "/api/v1/agent/report", tag = "agent",
    request_body = AgentReport, responses((status = 200, body = ReportAck)))]
pub async fn report(
    State(state): State<AppState>,
    NodeIdentity(node): NodeIdentity,
    ApiJson(report): ApiJson<AgentReport>,
) -> ApiResult<Json<ReportAck>> {
    Ok(Json(accept_report(&state, &node, report).await?))
}

/// Checks and stores one report of `node` (from the report route or the
/// channel).
pub async fn accept_report(
    state: &AppState,
    node: &Node,
    mut report: AgentReport,
) -> ApiResult<ReportAck> {
    validate(&report)?;
    // A node speaks for the services and releases of its own document only: its
    // traffic, memory and commit descriptions of anything else are dropped.
    let (services, releases): (HashSet<Uuid>, HashSet<Uuid>) = state
        .desired
        .cached(node.id)
        .map(|document| {
            document
                .state
                .workloads
                .iter()
                .map(|w| (w.service_id, w.release_id))
                .unzip()
        })
        .unwrap_or_default();
    for release in &mut report.releases {
        if !releases.contains(&release.release_id) {
            release.commit_info = None;
        }
        if let Some(info) = &mut release.commit_info {
            info.author = plain_text(&info.author, 200);
            info.message = plain_text(&info.message, 200);
        }
    }
    let acknowledged =
        state
            .store
            .apply_report(node, &report)
            .await
            .map_err(|error| match error {
                // Removed while the report was on its way.
                crate::store::StoreError::NotFound => ApiError::Unauthorized,
                other => other.into(),
            })?;
    state.service_metrics.record(
        node.id,
        chrono::Utc::now(),
        &report.traffic,
        &report.instances,
        &services,
    );
    Ok(ReportAck { acknowledged })
}

/// Opens the node's channel (`nanoscale_core::channel`): an HTTP/1.1 upgrade to
/// `nanoscale-channel/1` that carries the node's document the moment it changes,
/// log requests, reports and log answers until either side closes it. The
/// long-poll and the report and log routes do the same work where an upgrade
/// cannot pass.
#[utoipa::path(get, path = "/api/v1/agent/channel", tag = "agent",
    responses((status = 101, description = "switched to nanoscale-channel/1; frames follow"),
              (status = 400, description = "the request did not ask for the upgrade (field `upgrade`)",
               body = nanoscale_core::api::ErrorBody)))]
pub async fn channel(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (mut parts, _) = request.into_parts();
    let auth = NodeAuth::from_parts(&parts)?;
    let node = Box::pin(auth.node(&state.store))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let names = |name: axum::http::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let protocol = nanoscale_core::channel::PROTOCOL;
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let (true, true, Some(on_upgrade)) = (
        names(axum::http::header::CONNECTION, "upgrade"),
        names(axum::http::header::UPGRADE, protocol),
        on_upgrade,
    ) else {
        return Err(ApiError::BadRequest {
            message: format!(
                "ask for the channel over HTTP/1.1 with `Connection: upgrade` and `Upgrade: {protocol}`"
            ),
            field: Some("upgrade".into()),
        });
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                crate::channel::serve(state, auth, node.id, io).await;
            }
            Err(error) => tracing::debug!(%error, node = %node.id, "channel upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        axum::http::header::UPGRADE,
        axum::http::HeaderValue::from_static(protocol),
    );
    Ok(response)
}

fn validate(report: &AgentReport) -> Result<(), ApiError> {
    for (index, release) in report.releases.iter().enumerate() {
        let Some(info) = &release.commit_info else {
            continue;
        };
        for (name, text) in [("author", &info.author), ("message", &info.message)] {
            if text.len() > MAX_COMMIT_TEXT {
                return Err(ApiError::field(
                    &format!("releases[{index}].commit_info.{name}"),
                    format!("at most {MAX_COMMIT_TEXT} bytes"),
                ));
            }
        }
    }
    if report.events.len() > MAX_EVENTS_PER_REPORT {
        return Err(ApiError::field(
            "events",
            format!("at most {MAX_EVENTS_PER_REPORT} per report"),
        ));
    }
    for (field, count) in [
        ("instances", report.instances.len()),
        ("releases", report.releases.len()),
        ("problems", report.problems.len()),
        ("traffic", report.traffic.len()),
    ] {
        if count > MAX_ITEMS_PER_REPORT {
            return Err(ApiError::field(
                field,
                format!("at most {MAX_ITEMS_PER_REPORT} per report"),
            ));
        }
    }
    if report.target_version < 0 || report.applied_version < 0 {
        return Err(ApiError::field(
            "target_version",
            "versions are never negative",
        ));
    }
    for (index, event) in report.events.iter().enumerate() {
        let kind_ok = !event.kind.is_empty()
            && event.kind.len() <= MAX_EVENT_KIND
            && event
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
        if !kind_ok {
            return Err(ApiError::field(
                &format!("events[{index}].kind"),
                "a dotted lowercase kind such as instance.crashed",
            ));
        }
        if event.message.len() > MAX_EVENT_MESSAGE {
            return Err(ApiError::field(
                &format!("events[{index}].message"),
                format!("at most {MAX_EVENT_MESSAGE} bytes"),
            ));
        }
        // The dashboard and the CLI colour by severity: nothing else gets in.
        if !matches!(event.severity.as_str(), "info" | "warning" | "error") {
            return Err(ApiError::field(
                &format!("events[{index}].severity"),
                "info, warning or error",
            ));
        }
    }
    for (index, release) in report.releases.iter().enumerate() {
        if release
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_PROBLEM)
        {
            return Err(ApiError::field(
                &format!("releases[{index}].reason"),
                format!("at most {MAX_PROBLEM} bytes"),
            ));
        }
    }
    if let Some(firewall) = &report.firewall {
        validate_firewall(firewall)?;
    }
    for (index, instance) in report.instances.iter().enumerate() {
        if !nanoscale_core::agent::is_instance_id(&instance.id) {
            return Err(ApiError::field(
                &format!("instances[{index}].id"),
                "letters, digits and '-' only, at most 100",
            ));
        }
    }
    if let Some(index) = report.problems.iter().position(|p| p.len() > MAX_PROBLEM) {
        return Err(ApiError::field(
            &format!("problems[{index}]"),
            format!("at most {MAX_PROBLEM} bytes"),
        ));
    }
    Ok(())
}

/// A node's firewall report is shown as its exposure: only statuses the agent
/// makes, and networks that parse.
fn validate_firewall(firewall: &nanoscale_core::firewall::FirewallState) -> Result<(), ApiError> {
    const STATUSES: [&str; 5] = ["applied", "confirming", "reverted", "failed", "unavailable"];
    if !STATUSES.contains(&firewall.status.as_str()) {
        return Err(ApiError::field(
            "firewall.status",
            "applied, confirming, reverted, failed or unavailable",
        ));
    }
    if firewall
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_PROBLEM)
    {
        return Err(ApiError::field(
            "firewall.message",
            format!("at most {MAX_PROBLEM} bytes"),
        ));
    }
    if firewall.ssh_from.len() > MAX_ITEMS_PER_REPORT {
        return Err(ApiError::field(
            "firewall.ssh_from",
            format!("at most {MAX_ITEMS_PER_REPORT} networks"),
        ));
    }
    for (index, network) in firewall.ssh_from.iter().enumerate() {
        if network != "any" {
            nanoscale_core::firewall::parse_network(network).map_err(|message| {
                ApiError::field(&format!("firewall.ssh_from[{index}]"), message)
            })?;
        }
    }
    Ok(())
}

/// Log requests for the calling node, made on users' behalf; waits up to
/// `wait_secs` for one to come.
#[utoipa::path(get, path = "/api/v1/agent/log-requests", tag = "agent",
    params(LogRequestsQuery), responses((status = 200, body = Vec<LogRequest>)))]
pub async fn log_requests(
    State(state): State<AppState>,
    NodeIdentity(node): NodeIdentity,
    ApiQuery(query): ApiQuery<LogRequestsQuery>,
) -> ApiResult<Json<Vec<LogRequest>>> {
    let wait = query.wait_secs.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::field(
            "wait_secs",
            format!("must be at most {MAX_WAIT_SECS}"),
        ));
    }
    Ok(Json(
        state.logs.collect(node.id, Duration::from_secs(wait)).await,
    ))
}

/// The calling node's answer to one of its log requests.
#[utoipa::path(post, path = "/api/v1/agent/log-requests/{id}", tag = "agent",
    params(("id" = Uuid, Path, description = "log request id")), request_body = LogAnswer,
    responses((status = 204, description = "delivered"),
              (status = 404, description = "no such request waits for this node (answered too late)")))]
pub async fn answer_log_request(
    State(state): State<AppState>,
    NodeIdentity(node): NodeIdentity,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(answer): ApiJson<LogAnswer>,
) -> ApiResult<StatusCode> {
    check_log_answer(&answer, "entries")?;
    if state.logs.answer(node.id, id, answer.entries) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("log request"))
    }
}

/// As many lines as a user may ask for.
const MAX_LOG_ANSWER_LINES: usize = 10_000;

/// Refuses an answer with more lines than were asked for at most; `field` names
/// its lines where the answer came (the route's body, or a channel message).
pub(crate) fn check_log_answer(answer: &LogAnswer, field: &str) -> ApiResult<()> {
    if answer.entries.len() > MAX_LOG_ANSWER_LINES {
        return Err(ApiError::field(
            field,
            format!("at most {MAX_LOG_ANSWER_LINES} lines"),
        ));
    }
    Ok(())
}
