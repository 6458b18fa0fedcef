//! First-run setup, login, logout and "who am I".
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoscale_core::api::{Credentials, LoginResponse, Me, SetupStatus, User};
use nanoscale_core::names::{check_password, check_username};
use serde_json::json;

use super::audit_ctx::audit;
use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use crate::auth::{
    hash_password, hash_secret, new_secret, verify_password, AuthMethod, Principal, SESSION_COOKIE,
};
use crate::metrics::LOGIN_FAILURES;
use crate::state::AppState;
use crate::store::{Change, NewEvent, SESSION_LIFETIME};

/// Whether the first admin still has to be created.
#[utoipa::path(get, path = "/api/v1/setup", tag = "auth",
    responses((status = 200, body = SetupStatus)))]
pub async fn setup_status(State(state): State<AppState>) -> ApiResult<Json<SetupStatus>> {
    Ok(Json(SetupStatus {
        needed: state.store.count_users().await? == 0,
    }))
}

/// Creates the first admin. Answers 409 once any user exists.
#[utoipa::path(post, path = "/api/v1/setup", tag = "auth", request_body = Credentials,
    responses((status = 201, body = User)))]
pub async fn setup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<User>)> {
    if state.store.count_users().await? > 0 {
        return Err(ApiError::Conflict(
            "setup is already done; log in instead".into(),
        ));
    }
    check_username("username", &body.username)?;
    check_password("password", &body.password)?;
    let hash = hash_password(body.password).await?;
    let user = state
        .store
        .create_first_admin(&body.username, &hash, |user| Change {
            audit: audit(
                Some(user),
                "setup",
                "user",
                Some(user.id.to_string()),
                json!({"username": user.username, "role": "admin"}),
            ),
            events: vec![NewEvent {
                actor_id: Some(user.id),
                ..NewEvent::info(
                    "cluster.setup",
                    format!("first admin {} created", user.username),
                )
            }],
        })
        .await
        .map_err(|error| match error {
            crate::store::StoreError::Conflict(_) => {
                ApiError::Conflict("setup is already done; log in instead".into())
            }
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Logs in with a password: sets the session cookie and returns the CSRF token.
/// Rate-limited per client address.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = LoginResponse, headers(("set-cookie" = String, description = "the session cookie")))))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Response> {
    if let Err(not_until) = state.login_limiter.check_key(&rate_limit_key(peer.ip())) {
        metrics::counter!(LOGIN_FAILURES, "reason" => "rate_limited").increment(1);
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    let record = state.store.find_user_by_name(&body.username).await?;
    let stored = record.as_ref().map(|r| r.password_hash.clone());
    if !verify_password(body.password, stored).await? {
        metrics::counter!(LOGIN_FAILURES, "reason" => "bad_credentials").increment(1);
        return Err(ApiError::InvalidCredentials);
    }
    let Some(record) = record else {
        return Err(ApiError::InvalidCredentials);
    };
    let secret = new_secret("");
    let csrf_token = new_secret("");
    let expires_at = state
        .store
        .create_session(
            record.user.id,
            &hash_secret(&secret),
            &csrf_token,
            &peer.ip().to_string(),
            Change {
                audit: audit(
                    Some(&record.user),
                    "auth.login",
                    "session",
                    None,
                    json!({"client": peer.ip().to_string()}),
                ),
                events: Vec::new(),
            },
        )
        .await?;
    let mut cookie = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    if state.config.secure_cookies() {
        cookie.push_str("; Secure");
    }
    let body = LoginResponse {
        csrf_token,
        user: record.user,
        expires_at,
    };
    let mut response = Json(body).into_response();
    let value =
        HeaderValue::from_str(&cookie).map_err(|error| ApiError::Internal(error.to_string()))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// Ends the current session (a no-op for bearer tokens: revoke those instead).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<(StatusCode, HeaderMap)> {
    if let AuthMethod::Session { id, .. } = principal.method {
        let change = super::audit_ctx::change(&principal, "auth.logout", "session", id, json!({}));
        state.store.delete_session(id, change).await?;
    }
    let mut headers = HeaderMap::new();
    let mut cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if state.config.secure_cookies() {
        cookie.push_str("; Secure");
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    Ok((StatusCode::NO_CONTENT, headers))
}

/// The authenticated user, the effective role, and (for sessions) the CSRF token.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = Me)))]
pub async fn me(principal: Principal) -> Json<Me> {
    let (auth, csrf_token, token_id) = match principal.method {
        AuthMethod::Session { csrf_token, .. } => ("session", Some(csrf_token), None),
        AuthMethod::Token { id } => ("token", None, Some(id)),
    };
    Json(Me {
        user: principal.user,
        role: principal.role,
        auth: auth.to_owned(),
        csrf_token,
        token_id,
    })
}

/// One bucket per IPv4 address and per IPv6 /64 (what one customer usually holds),
/// so a single host cannot get fresh buckets by cycling its IPv6 addresses.
pub fn rate_limit_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::rate_limit_key;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a = rate_limit_key("2001:db8:1:2::1".parse().expect("ip"));
        let b = rate_limit_key("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let c = rate_limit_key("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            rate_limit_key("::ffff:10.0.0.1".parse().expect("ip")),
            "10.0.0.1".parse::<std::net::IpAddr>().expect("ip")
        );
    }
}
