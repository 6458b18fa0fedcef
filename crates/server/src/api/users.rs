//! User administration.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nanoscale_core::api::{CreateUser, UpdateUser, User};
use nanoscale_core::names::{check_password, check_username};
use nanoscale_core::Role;
use serde_json::json;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::{hash_password, verify_password, AuthMethod, Principal};
use crate::state::AppState;
use crate::store::StoreError;

#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, body = Vec<User>)))]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<User>>> {
    principal.require(Role::Admin)?;
    Ok(Json(state.store.list_users().await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User)))]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    principal.require(Role::Admin)?;
    check_username("username", &body.username)?;
    check_password("password", &body.password)?;
    let hash = hash_password(body.password).await?;
    let user = state
        .store
        .create_user(
            &body.username,
            &hash,
            body.role,
            principal.user.id,
            |user| {
                change(
                    &principal,
                    "user.create",
                    "user",
                    user.id,
                    json!({"username": user.username, "role": user.role}),
                )
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// A user; admins see anyone, others only themselves.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "user id")), responses((status = 200, body = User)))]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<User>> {
    if id != principal.user.id {
        principal.require(Role::Admin)?;
    }
    let record = state
        .store
        .get_user(id)
        .await
        .map_err(|_| ApiError::NotFound("user"))?;
    Ok(Json(record.user))
}

/// Changes a user's role (admin) or password (admin, or the user themselves).
/// Changing the password logs the user out everywhere.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = Uuid, Path, description = "user id")), responses((status = 200, body = User)))]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<Json<User>> {
    let self_password_only = id == principal.user.id && body.role.is_none();
    if !self_password_only {
        principal.require(Role::Admin)?;
    }
    let before = state
        .store
        .get_user(id)
        .await
        .map_err(|_| ApiError::NotFound("user"))?;
    if let Some(password) = &body.password {
        check_password("password", password)?;
        if id == principal.user.id {
            // A stolen token or an unattended session must not be able to take the
            // account over: changing your own password proves the current one.
            if !matches!(principal.method, AuthMethod::Session { .. }) {
                return Err(ApiError::Forbidden(
                    "change your own password from a login session, not with an API token".into(),
                ));
            }
            let current = body.current_password.clone().unwrap_or_default();
            if !verify_password(current, Some(before.password_hash.clone())).await? {
                return Err(ApiError::field("current_password", "is missing or wrong"));
            }
        }
    }
    let hash = match body.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let summary = json!({
        "username": before.user.username,
        "before": {"role": before.user.role},
        "after": {"role": body.role.unwrap_or(before.user.role)},
        "password_changed": hash.is_some(),
    });
    let user = state
        .store
        .update_user(
            id,
            body.role,
            hash.as_deref(),
            change(&principal, "user.update", "user", id, summary),
        )
        .await
        .map_err(|error| match error {
            StoreError::NotFound => ApiError::NotFound("user"),
            other => other.into(),
        })?;
    Ok(Json(user))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "user id")), responses((status = 204, description = "deleted")))]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    let record = state
        .store
        .get_user(id)
        .await
        .map_err(|_| ApiError::NotFound("user"))?;
    state
        .store
        .delete_user(
            id,
            change(
                &principal,
                "user.delete",
                "user",
                id,
                json!({"username": record.user.username}),
            ),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
