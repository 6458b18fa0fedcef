use axum::extract::State;
use axum::Json;
use nanoscale_core::api::{Node, UpdateNode};
use nanoscale_core::desired::DesiredDocument;
use nanoscale_core::Role;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::NewEvent;

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", responses((status = 200, body = Vec<Node>)))]
pub async fn list_nodes(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(state.store.list_nodes().await?))
}

#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = Uuid, Path, description = "node id")), responses((status = 200, body = Node)))]
pub async fn get_node(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Node>> {
    Ok(Json(
        state
            .store
            .get_node(id)
            .await
            .map_err(store_error("node", "id"))?,
    ))
}

/// Changes a node's security mode and the networks SSH is open to (admins only).
/// The node applies the firewall of the new mode and keeps it only once it has
/// reached the control plane again through it; otherwise it reverts by itself
/// within a minute (`firewall.status` says `reverted`).
#[utoipa::path(patch, path = "/api/v1/nodes/{id}", tag = "nodes", request_body = UpdateNode,
    params(("id" = Uuid, Path, description = "node id")), responses((status = 200, body = Node)))]
pub async fn update_node(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(update): ApiJson<UpdateNode>,
) -> ApiResult<Json<Node>> {
    principal.require(Role::Admin)?;
    if let Some(mode) = &update.security_mode {
        if !matches!(mode.as_str(), "A" | "B" | "C") {
            return Err(ApiError::field(
                "security_mode",
                "must be A (no firewall), B (proxy and SSH only) or C (nothing inbound)",
            ));
        }
    }
    if let Some(networks) = &update.ssh_from {
        if networks.len() > 64 {
            return Err(ApiError::field("ssh_from", "at most 64 networks"));
        }
        for network in networks {
            nanoscale_core::firewall::parse_network(network)
                .map_err(|message| ApiError::field("ssh_from", message))?;
        }
    }
    let node = state
        .store
        .get_node(id)
        .await
        .map_err(store_error("node", "id"))?;
    let mode = update
        .security_mode
        .as_deref()
        .unwrap_or(&node.security_mode);
    let summary = serde_json::json!({
        "before": {"security_mode": node.security_mode, "ssh_from": node.ssh_from},
        "after": {"security_mode": mode, "ssh_from": update.ssh_from.as_ref().unwrap_or(&node.ssh_from)},
    });
    let change = change(&principal, "node.security", "node", id, summary).with_event(NewEvent {
        node_id: Some(id),
        actor_id: Some(principal.user.id),
        ..NewEvent::info(
            "node.security_changed",
            format!(
                "{} set to security mode {mode} by {}",
                node.name, principal.user.username
            ),
        )
    });
    let updated = state
        .store
        .update_node_security(
            id,
            update.security_mode.as_deref(),
            update.ssh_from.as_deref(),
            change,
        )
        .await
        .map_err(store_error("node", "id"))?;
    Ok(Json(updated))
}

/// The desired-state document the node converges to, as its agent will receive it
/// but with secret values redacted. Admins only: it maps the whole node.
#[utoipa::path(get, path = "/api/v1/nodes/{id}/desired-state", tag = "nodes",
    params(("id" = Uuid, Path, description = "node id")), responses((status = 200, body = DesiredDocument)))]
pub async fn get_desired_state(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DesiredDocument>> {
    principal.require(Role::Admin)?;
    let mut document = state
        .desired
        .document(&state.store, id)
        .await?
        .ok_or(ApiError::NotFound("node"))?
        .as_ref()
        .clone();
    document.state = document.state.redacted();
    Ok(Json(document))
}
