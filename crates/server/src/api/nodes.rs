use axum::extract::State;
use axum::Json;
use nanoscale_core::api::Node;
use nanoscale_core::desired::DesiredDocument;
use nanoscale_core::Role;
use uuid::Uuid;

use super::error::{store_error, ApiError, ApiResult};
use super::extract::ApiPath;
use crate::auth::Principal;
use crate::state::AppState;

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
