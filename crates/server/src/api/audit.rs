use axum::extract::State;
use axum::Json;
use nanoscale_core::api::{AuditEntry, AuditFilter};
use nanoscale_core::Role;

use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::auth::Principal;
use crate::state::AppState;

/// Every mutation, newest first (admins only).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Vec<AuditEntry>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    principal.require(Role::Admin)?;
    if let Some(limit) = filter.limit {
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest {
                message: "limit must be between 1 and 1000".into(),
                field: Some("limit".into()),
            });
        }
    }
    Ok(Json(state.store.list_audit(&filter).await?))
}
