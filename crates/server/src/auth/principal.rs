use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};
use nanoscale_core::api::User;
use nanoscale_core::Role;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::secrets::hash_secret;
use crate::api::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "nanoscale_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub enum AuthMethod {
    Session { id: Uuid, csrf_token: String },
    Token { id: Uuid },
}

/// The authenticated caller of a request. Extracting it answers 401 when nobody is
/// authenticated and 403 when a cookie-authenticated mutation lacks its CSRF token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// What this request may do: the token's role, capped by its owner's role.
    pub role: Role,
    pub method: AuthMethod,
}

impl Principal {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            return Ok(());
        }
        Err(ApiError::forbidden())
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may change a project and its services: admins always,
    /// deployers when they created it or were granted it.
    pub async fn can_manage_project(
        &self,
        state: &AppState,
        project_id: Uuid,
    ) -> Result<bool, ApiError> {
        match self.role {
            Role::Admin => Ok(true),
            Role::Viewer => Ok(false),
            Role::Deployer => Ok(state
                .store
                .user_can_manage_project(self.user.id, project_id)
                .await?),
        }
    }

    pub async fn require_project(
        &self,
        state: &AppState,
        project_id: Uuid,
    ) -> Result<(), ApiError> {
        if self.can_manage_project(state, project_id).await? {
            return Ok(());
        }
        Err(ApiError::Forbidden(
            "you neither own this project nor were granted it".into(),
        ))
    }
}

pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let principal = authenticate(parts, state).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(token) = bearer_token(parts) {
        let token_hash = hash_secret(token);
        let record = state
            .store
            .find_token(&token_hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.store.touch_token(&token_hash, &record.token).await?;
        let role = record.token.role.min(record.user.user.role);
        return Ok(Principal {
            user: record.user.user,
            role,
            method: AuthMethod::Token {
                id: record.token.id,
            },
        });
    }
    let cookie = session_cookie(parts).ok_or(ApiError::Unauthorized)?;
    let session = state
        .store
        .find_session(&hash_secret(&cookie))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !is_safe_method(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
            return Err(ApiError::Forbidden(
                "missing or wrong X-CSRF-Token header (it is returned by login and GET /api/v1/me)"
                    .into(),
            ));
        }
    }
    Ok(Principal {
        role: session.user.user.role,
        user: session.user.user,
        method: AuthMethod::Session {
            id: session.id,
            csrf_token: session.csrf_token,
        },
    })
}
