use axum::extract::State;
use axum::Json;
use nanoscale_core::api::{Settings, UpdateSettings};
use nanoscale_core::validation::check_text;
use nanoscale_core::Role;
use serde_json::json;

use super::audit_ctx::change;
use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use crate::auth::Principal;
use crate::state::AppState;

/// White-labelling, public so the login page can show it.
#[utoipa::path(get, path = "/api/v1/settings", tag = "settings", responses((status = 200, body = Settings)))]
pub async fn get_settings(State(state): State<AppState>) -> ApiResult<Json<Settings>> {
    Ok(Json(state.store.settings().await?))
}

/// An empty `product_name` or `logo_url` restores the default.
#[utoipa::path(patch, path = "/api/v1/settings", tag = "settings", request_body = UpdateSettings,
    responses((status = 200, body = Settings)))]
pub async fn update_settings(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateSettings>,
) -> ApiResult<Json<Settings>> {
    principal.require(Role::Admin)?;
    let mut values: Vec<(&str, Option<String>)> = Vec::new();
    if let Some(name) = body.product_name {
        check_text("product_name", &name, 60)?;
        values.push((
            "product_name",
            (!name.trim().is_empty()).then(|| name.trim().to_owned()),
        ));
    }
    if let Some(url) = body.logo_url {
        check_text("logo_url", &url, 2048)?;
        // Only https (or a path on this server): an image URL is rendered by every
        // dashboard user's browser, so no javascript:, data: or plain http.
        let ok = url.is_empty()
            || url.starts_with("https://")
            || (url.starts_with('/') && !url.starts_with("//"));
        if !ok {
            return Err(ApiError::field(
                "logo_url",
                "must be an https:// URL or a path starting with /",
            ));
        }
        values.push(("logo_url", (!url.is_empty()).then_some(url)));
    }
    let summary = json!(values
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>());
    let settings = state
        .store
        .put_settings(
            &values,
            change(
                &principal,
                "settings.update",
                "settings",
                "cluster",
                summary,
            ),
        )
        .await?;
    Ok(Json(settings))
}
