use axum::extract::State;
use axum::Json;
use nanoscale_core::api::Node;
use uuid::Uuid;

use super::error::{store_error, ApiResult};
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
