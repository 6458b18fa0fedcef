//! Projects and who may manage them.
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nanoscale_core::api::{CreateGrant, CreateProject, Grant, Project, UpdateProject};
use nanoscale_core::names::check_dns_label;
use nanoscale_core::service::{validate_env_var, MAX_ENV_VARS};
use nanoscale_core::{Role, ValidationError};
use serde_json::json;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::NewEvent;

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if env.len() > MAX_ENV_VARS {
        return Err(ValidationError::new(
            "env",
            format!("at most {MAX_ENV_VARS} variables"),
        ));
    }
    for (key, value) in env {
        validate_env_var(&format!("env.{key}"), key, value)?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", responses((status = 200, body = Vec<Project>)))]
pub async fn list_projects(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Response> {
    let projects = state.store.list_projects().await?;
    let reused = state
        .projects_body
        .lock()
        .ok()
        .and_then(|slot| match &*slot {
            Some((list, body)) if Arc::ptr_eq(list, &projects) => Some(body.clone()),
            _ => None,
        });
    let body = match reused {
        Some(body) => body,
        None => {
            let body = Bytes::from(
                serde_json::to_vec(&*projects)
                    .map_err(|error| ApiError::Internal(error.to_string()))?,
            );
            if let Ok(mut slot) = state.projects_body.lock() {
                *slot = Some((projects, body.clone()));
            }
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Creates a project owned by the caller (deployer or admin).
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = Project)))]
pub async fn create_project(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    principal.require(Role::Deployer)?;
    check_dns_label("name", &body.name)?;
    validate_env(&body.env)?;
    let project = state
        .store
        .create_project(&body.name, &body.env, principal.user.id, |project| {
            change(
                &principal,
                "project.create",
                "project",
                project.id,
                json!({"name": project.name, "env": project.env.keys().collect::<Vec<_>>()}),
            )
            .with_event(NewEvent {
                project_id: Some(project.id),
                actor_id: Some(principal.user.id),
                ..NewEvent::info(
                    "project.created",
                    format!(
                        "project {} created by {}",
                        project.name, principal.user.username
                    ),
                )
            })
        })
        .await
        .map_err(store_error("project", "name"))?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = Uuid, Path, description = "project id")), responses((status = 200, body = Project)))]
pub async fn get_project(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Project>> {
    Ok(Json(
        state
            .store
            .get_project(id)
            .await
            .map_err(store_error("project", "id"))?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects", request_body = UpdateProject,
    params(("id" = Uuid, Path, description = "project id")), responses((status = 200, body = Project)))]
pub async fn update_project(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateProject>,
) -> ApiResult<Json<Project>> {
    let before = state
        .store
        .get_project(id)
        .await
        .map_err(store_error("project", "id"))?;
    principal.require_project(&state, id).await?;
    if let Some(name) = &body.name {
        check_dns_label("name", name)?;
    }
    if let Some(env) = &body.env {
        validate_env(env)?;
    }
    // Names of env variables only: project env values may be secret.
    let summary = json!({
        "before": {"name": before.name, "env": before.env.keys().collect::<Vec<_>>()},
        "after": {
            "name": body.name.as_ref().unwrap_or(&before.name),
            "env": body.env.as_ref().unwrap_or(&before.env).keys().collect::<Vec<_>>(),
        },
    });
    let project = state
        .store
        .update_project(
            id,
            body.name.as_deref(),
            body.env.as_ref(),
            change(&principal, "project.update", "project", id, summary),
        )
        .await
        .map_err(store_error("project", "name"))?;
    Ok(Json(project))
}

/// Deletes a project with all its services and releases.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = Uuid, Path, description = "project id")), responses((status = 204, description = "deleted")))]
pub async fn delete_project(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let project = state
        .store
        .get_project(id)
        .await
        .map_err(store_error("project", "id"))?;
    principal.require_project(&state, id).await?;
    let change = change(
        &principal,
        "project.delete",
        "project",
        id,
        json!({"name": project.name}),
    )
    .with_event(NewEvent {
        project_id: Some(id),
        actor_id: Some(principal.user.id),
        ..NewEvent::info(
            "project.deleted",
            format!(
                "project {} deleted by {}",
                project.name, principal.user.username
            ),
        )
    });
    state
        .store
        .delete_project(id, change)
        .await
        .map_err(store_error("project", "id"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/grants", tag = "projects",
    params(("id" = Uuid, Path, description = "project id")), responses((status = 200, body = Vec<Grant>)))]
pub async fn list_grants(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<Grant>>> {
    state
        .store
        .get_project(id)
        .await
        .map_err(store_error("project", "id"))?;
    Ok(Json(state.store.list_grants(id).await?))
}

/// Lets a user, or every member of a team, manage the project (within their role).
#[utoipa::path(post, path = "/api/v1/projects/{id}/grants", tag = "projects", request_body = CreateGrant,
    params(("id" = Uuid, Path, description = "project id")), responses((status = 201, body = Grant)))]
pub async fn create_grant(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateGrant>,
) -> ApiResult<(StatusCode, Json<Grant>)> {
    state
        .store
        .get_project(id)
        .await
        .map_err(store_error("project", "id"))?;
    principal.require_project(&state, id).await?;
    match (body.user_id, body.team_id) {
        (Some(user_id), None) => {
            state
                .store
                .get_user(user_id)
                .await
                .map_err(|_| ApiError::field("user_id", "no such user"))?;
        }
        (None, Some(team_id)) => {
            state
                .store
                .get_team(team_id)
                .await
                .map_err(|_| ApiError::field("team_id", "no such team"))?;
        }
        _ => {
            return Err(ApiError::field(
                "user_id",
                "give exactly one of user_id and team_id",
            ))
        }
    }
    let grant = state
        .store
        .create_grant(id, body.user_id, body.team_id, |grant| {
            change(
                &principal,
                "project.grant",
                "project",
                id,
                json!({"grant": grant.id, "user_id": grant.user_id, "team_id": grant.team_id}),
            )
        })
        .await
        .map_err(store_error("grant", "user_id"))?;
    Ok((StatusCode::CREATED, Json(grant)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{id}/grants/{grant_id}", tag = "projects",
    params(("id" = Uuid, Path, description = "project id"), ("grant_id" = Uuid, Path, description = "grant id")),
    responses((status = 204, description = "revoked")))]
pub async fn delete_grant(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, grant_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    state
        .store
        .get_project(id)
        .await
        .map_err(store_error("project", "id"))?;
    principal.require_project(&state, id).await?;
    state
        .store
        .delete_grant(
            id,
            grant_id,
            change(
                &principal,
                "project.revoke_grant",
                "project",
                id,
                json!({"grant": grant_id}),
            ),
        )
        .await
        .map_err(store_error("grant", "grant_id"))?;
    Ok(StatusCode::NO_CONTENT)
}
