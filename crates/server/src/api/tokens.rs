//! API tokens for the CLI and automation.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use nanoscale_core::api::{ApiToken, CreateToken, CreatedToken};
use nanoscale_core::validation::{check_range, check_text};
use serde_json::json;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::{hash_secret, new_secret, Principal, TOKEN_PREFIX};
use crate::state::AppState;

const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// Creates a token for the caller. The secret `token` is in this response only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken)))]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    if body.name.trim().is_empty() {
        return Err(ApiError::field("name", "must not be empty"));
    }
    check_text("name", &body.name, 100)?;
    if body.role > principal.role {
        return Err(ApiError::field(
            "role",
            format!(
                "a token cannot have more rights than you ({})",
                principal.role
            ),
        ));
    }
    let expires_at = match body.expires_in {
        Some(seconds) => {
            check_range("expires_in", seconds, 60, MAX_LIFETIME_SECS)?;
            Some(Utc::now() + chrono::Duration::seconds(seconds as i64))
        }
        None => None,
    };
    let secret = new_secret(TOKEN_PREFIX);
    let token = state
        .store
        .create_token(
            principal.user.id,
            &body.name,
            body.role,
            &hash_secret(&secret),
            expires_at,
            |token| {
                change(
                    &principal,
                    "token.create",
                    "token",
                    token.id,
                    json!({"name": token.name, "role": token.role, "expires_at": token.expires_at}),
                )
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.id,
            name: token.name,
            role: token.role,
            token: secret,
            created_at: token.created_at,
            expires_at: token.expires_at,
        }),
    ))
}

/// The caller's tokens (an admin sees everyone's). Secrets are never listed.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<ApiToken>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<ApiToken>>> {
    let owner = (!principal.is_admin()).then_some(principal.user.id);
    Ok(Json(state.store.list_tokens(owner).await?))
}

/// Revokes a token at once. Your own, or anyone's for an admin.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path, description = "token id")),
    responses((status = 204, description = "revoked")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let token = state
        .store
        .get_token(id)
        .await
        .map_err(|_| ApiError::NotFound("token"))?;
    if token.user_id != principal.user.id && !principal.is_admin() {
        // Someone else's token: answer as if it did not exist.
        return Err(ApiError::NotFound("token"));
    }
    state
        .store
        .delete_token(
            id,
            change(
                &principal,
                "token.revoke",
                "token",
                id,
                json!({"name": token.name}),
            ),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
