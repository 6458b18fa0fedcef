//! Teams: groups of users that projects can be granted to.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nanoscale_core::api::{CreateTeam, Team};
use nanoscale_core::names::check_dns_label;
use nanoscale_core::Role;
use serde_json::json;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::Principal;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", responses((status = 200, body = Vec<Team>)))]
pub async fn list_teams(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<Vec<Team>>> {
    Ok(Json(state.store.list_teams().await?))
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = CreateTeam,
    responses((status = 201, body = Team)))]
pub async fn create_team(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    principal.require(Role::Admin)?;
    check_dns_label("name", &body.name)?;
    let team = state
        .store
        .create_team(&body.name, |team| {
            change(
                &principal,
                "team.create",
                "team",
                team.id,
                json!({"name": team.name}),
            )
        })
        .await
        .map_err(store_error("team", "name"))?;
    Ok((StatusCode::CREATED, Json(team)))
}

#[utoipa::path(delete, path = "/api/v1/teams/{id}", tag = "teams",
    params(("id" = Uuid, Path, description = "team id")), responses((status = 204, description = "deleted")))]
pub async fn delete_team(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    let team = state
        .store
        .get_team(id)
        .await
        .map_err(store_error("team", "id"))?;
    state
        .store
        .delete_team(
            id,
            change(
                &principal,
                "team.delete",
                "team",
                id,
                json!({"name": team.name}),
            ),
        )
        .await
        .map_err(store_error("team", "id"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/v1/teams/{id}/members/{user_id}", tag = "teams",
    params(("id" = Uuid, Path, description = "team id"), ("user_id" = Uuid, Path, description = "user id")),
    responses((status = 204, description = "the user is a member")))]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    set_member(state, principal, id, user_id, true).await
}

#[utoipa::path(delete, path = "/api/v1/teams/{id}/members/{user_id}", tag = "teams",
    params(("id" = Uuid, Path, description = "team id"), ("user_id" = Uuid, Path, description = "user id")),
    responses((status = 204, description = "the user is not a member")))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    set_member(state, principal, id, user_id, false).await
}

async fn set_member(
    state: AppState,
    principal: Principal,
    id: Uuid,
    user_id: Uuid,
    member: bool,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    state
        .store
        .get_team(id)
        .await
        .map_err(store_error("team", "id"))?;
    state
        .store
        .get_user(user_id)
        .await
        .map_err(|_| ApiError::NotFound("user"))?;
    let action = if member {
        "team.add_member"
    } else {
        "team.remove_member"
    };
    state
        .store
        .set_team_member(
            id,
            user_id,
            member,
            change(&principal, action, "team", id, json!({"user_id": user_id})),
        )
        .await
        .map_err(store_error("team", "id"))?;
    Ok(StatusCode::NO_CONTENT)
}
