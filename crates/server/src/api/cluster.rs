//! Growing the cluster: join tokens, the install script and binary a new server
//! fetches, the join and certificate renewal on the cluster listener, and node
//! removal.
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use nanoscale_core::cluster::{
    validate_node_name, CreateJoinToken, JoinRequest, JoinToken, JoinTokenCreated, NodeCertificate,
    RenewRequest, JOIN_TOKEN_DEFAULT_TTL_SECS, JOIN_TOKEN_MAX_TTL_SECS,
};
use nanoscale_core::service::validate_label;
use nanoscale_core::validation::{check_range, check_text};
use nanoscale_core::Role;
use serde_json::json;
use uuid::Uuid;

use super::agent::NodeIdentity;
use super::audit_ctx::change;
use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath};
use crate::auth::{hash_secret, Principal};
use crate::cluster::{CsrError, PeerCertificate, Signed};
use crate::state::AppState;
use crate::store::{JoinError, JoiningNode, NewEvent};
use nanoscale_core::api::Node;

/// The install script; `@SERVER_URL@` and `@CLUSTER_ADDR@` are filled in per request.
const INSTALL_SCRIPT: &str = include_str!("../../../../deploy/install.sh");

/// Makes a one-time join token (admins only). The token is in this response only.
#[utoipa::path(post, path = "/api/v1/nodes/join-tokens", tag = "nodes", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenCreated),
              (status = 409, description = "the cluster listener is off")))]
pub async fn create_join_token(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJoinToken>,
) -> ApiResult<(StatusCode, Json<JoinTokenCreated>)> {
    principal.require(Role::Admin)?;
    let ttl = body.ttl_secs.unwrap_or(JOIN_TOKEN_DEFAULT_TTL_SECS);
    check_range("ttl_secs", ttl, 1, JOIN_TOKEN_MAX_TTL_SECS)?;
    let cluster = state.cluster.get().ok_or_else(|| {
        ApiError::Conflict(
            "the cluster listener is off, so no server can join: start the control plane with \
             --cluster-listen ADDR:PORT (config cluster_listen)"
                .into(),
        )
    })?;
    let base = public_base(&state, &headers)?;
    let token = JoinToken {
        ca_sha256: cluster.ca.sha256().to_owned(),
        secret: crate::auth::new_secret(""),
    };
    let id = crate::store::new_id();
    let expires_at = Utc::now() + chrono::Duration::seconds(ttl as i64);
    state
        .store
        .create_join_token(
            id,
            &hash_secret(&token.secret),
            expires_at.timestamp_millis(),
            change(
                &principal,
                "node.join_token.create",
                "join_token",
                id,
                json!({"expires_at": expires_at}),
            ),
        )
        .await?;
    let token = token.to_string();
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            id,
            command: format!("curl -fsSL {base}/install.sh | sh -s -- --join {token}"),
            token,
            expires_at,
        }),
    ))
}

/// Removes a node from the cluster (admins only): its certificate stops being
/// accepted at once and its open channel ends. The control plane's own node cannot
/// be removed.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = Uuid, Path, description = "node id")),
    responses((status = 204, description = "removed"), (status = 409, description = "the control plane's own node")))]
pub async fn remove_node(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    principal.require(Role::Admin)?;
    let node = state
        .store
        .get_node(id)
        .await
        .map_err(store_error("node", "id"))?;
    if node.name == state.config.node_name {
        return Err(ApiError::Conflict(format!(
            "node {} is this control plane's own host; it cannot be removed",
            node.name
        )));
    }
    let mut change = change(
        &principal,
        "node.remove",
        "node",
        id,
        json!({"name": node.name, "address": node.address}),
    );
    change.events.push(NewEvent {
        severity: "warning",
        ..NewEvent::info(
            "node.removed",
            format!("node {} was removed; its certificate is revoked", node.name),
        )
    });
    state
        .store
        .remove_node(id, change)
        .await
        .map_err(store_error("node", "id"))?;
    state.logs.forget(id);
    Ok(StatusCode::NO_CONTENT)
}

/// The install script a new server runs: `curl -fsSL <url>/install.sh | sh -s --
/// --join <token>`. It fetches this control plane's own binary, so a cluster needs
/// no outside download.
#[utoipa::path(get, path = "/install.sh", tag = "nodes",
    responses((status = 200, description = "POSIX shell script", content_type = "text/x-shellscript")))]
pub async fn install_script(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let base = public_base(&state, &headers)?;
    let cluster = match state.cluster.get() {
        Some(cluster) => cluster_addr(&state, &base, cluster.local_addr)?,
        None => String::new(),
    };
    let script = INSTALL_SCRIPT
        .replace("@SERVER_URL@", &base)
        .replace("@CLUSTER_ADDR@", &cluster);
    Ok((
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
        .into_response())
}

/// This control plane's own `nanoscale` binary, for servers joining the cluster,
/// authorized by a valid (unused, unexpired) join token as the bearer: the binary
/// is large, so it is not served to anyone who asks. `X-Nanoscale-Arch` and
/// `X-Nanoscale-Sha256` describe it.
#[utoipa::path(get, path = "/api/v1/cluster/binary", tag = "nodes",
    responses((status = 200, description = "the executable", content_type = "application/octet-stream"),
              (status = 401, description = "no valid join token")))]
pub async fn binary(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| JoinToken::parse(token).ok())
        .ok_or(ApiError::Unauthorized)?;
    if !state
        .store
        .join_token_usable(&hash_secret(&token.secret))
        .await?
    {
        return Err(ApiError::Unauthorized);
    }
    let digest = own_binary_sha256().await?;
    let file = tokio::fs::File::open("/proc/self/exe")
        .await
        .map_err(|error| ApiError::Internal(format!("cannot read this program: {error}")))?;
    let length = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::HeaderName::from_static("x-nanoscale-arch"),
                std::env::consts::ARCH.to_owned(),
            ),
            (
                header::HeaderName::from_static("x-nanoscale-sha256"),
                digest,
            ),
        ],
        body,
    )
        .into_response())
}

/// `<sha256>  nanoscale <arch>`: lets the install script skip a download it has.
#[utoipa::path(get, path = "/api/v1/cluster/binary/sha256", tag = "nodes",
    responses((status = 200, description = "digest and architecture", content_type = "text/plain")))]
pub async fn binary_sha256(State(_state): State<AppState>) -> ApiResult<Response> {
    let digest = own_binary_sha256().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{digest} {}\n", std::env::consts::ARCH),
    )
        .into_response())
}

async fn own_binary_sha256() -> ApiResult<String> {
    static DIGEST: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DIGEST
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(|| {
                use sha2::{Digest, Sha256};
                let mut file = std::fs::File::open("/proc/self/exe")?;
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher)?;
                Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
            })
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(|error| ApiError::Internal(format!("cannot read this program: {error}")))
        })
        .await
        .cloned()
}

/// `POST /cluster/v1/join` (cluster listener only, no client certificate): checks
/// and consumes the token, registers the node and signs its certificate.
pub async fn join(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<JoinRequest>,
) -> ApiResult<Json<NodeCertificate>> {
    let cluster = state.cluster.get().ok_or(ApiError::Unauthorized)?;
    let token = JoinToken::parse(&body.token)?;
    if token.ca_sha256 != cluster.ca.sha256() {
        return Err(ApiError::field(
            "token",
            "was made by another cluster (its CA fingerprint is not this cluster's)",
        ));
    }
    validate_node_name(&body.name)?;
    for (key, value) in &body.labels {
        validate_label(&format!("labels.{key}"), key, value)?;
    }
    check_text("arch", &body.arch, 32)?;
    if !(1..=65_536).contains(&body.cpus) {
        return Err(ApiError::field("cpus", "must be between 1 and 65536"));
    }
    if body.memory_bytes < 0 {
        return Err(ApiError::field("memory_bytes", "must not be negative"));
    }
    let id = crate::store::new_id();
    let signed = cluster
        .ca
        .sign_node(&body.csr, id)
        .map_err(|error| match error {
            CsrError::Invalid(_) | CsrError::TooLong => ApiError::field("csr", error.to_string()),
        })?;
    let node = state
        .store
        .join_node(
            &hash_secret(&token.secret),
            JoiningNode {
                id,
                name: body.name.clone(),
                address: remote.ip().to_canonical().to_string(),
                labels: body.labels.clone(),
                arch: body.arch.clone(),
                cpus: body.cpus,
                memory_bytes: body.memory_bytes,
                cert_sha256: signed.sha256.clone(),
            },
        )
        .await
        .map_err(|error| match error {
            JoinError::UnknownToken | JoinError::UsedToken | JoinError::ExpiredToken => {
                ApiError::Forbidden(error.to_string())
            }
            JoinError::NameTaken(_) => ApiError::ConflictField {
                field: "name",
                message: error.to_string(),
            },
            JoinError::Store(error) => error.into(),
        })?;
    tracing::info!(node = %node.name, address = %node.address, "node joined");
    Ok(Json(issued(&cluster.ca, node, signed)))
}

fn issued(ca: &crate::cluster::ClusterCa, node: Node, signed: Signed) -> NodeCertificate {
    NodeCertificate {
        node_id: node.id,
        node_name: node.name,
        certificate: signed.pem,
        ca_certificate: ca.cert_pem().to_owned(),
        not_after: signed.not_after,
    }
}

/// `POST /cluster/v1/renew`: a new certificate for the node whose current one
/// authenticated the request.
pub async fn renew(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerCertificate>,
    NodeIdentity(node): NodeIdentity,
    ApiJson(body): ApiJson<RenewRequest>,
) -> ApiResult<Json<NodeCertificate>> {
    let cluster = state.cluster.get().ok_or(ApiError::Unauthorized)?;
    let used = peer.0.ok_or(ApiError::Unauthorized)?;
    let signed = cluster
        .ca
        .sign_node(&body.csr, node.id)
        .map_err(|error| ApiError::field("csr", error.to_string()))?;
    state
        .store
        .renew_node_certificate(node.id, &used, &signed.sha256)
        .await
        .map_err(store_error("node", "id"))?;
    Ok(Json(issued(&cluster.ca, node, signed)))
}

/// The URL servers reach this control plane at: the configured public URL, else
/// the scheme-less `Host` the request came in on (strictly checked: it ends up in
/// a shell script).
fn public_base(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    if state.config.public_url_configured {
        return Ok(state.config.public_url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| is_plain_host(host))
        .ok_or_else(|| ApiError::BadRequest {
            message: "the Host header is missing or not a plain host[:port]; set public_url".into(),
            field: None,
        })?;
    Ok(format!("http://{host}"))
}

/// Where agents dial the cluster listener: `cluster_advertise` if set, else the
/// host of `base` with the listener's port.
fn cluster_addr(state: &AppState, base: &str, listen: SocketAddr) -> ApiResult<String> {
    if let Some(advertise) = &state.config.cluster_advertise {
        return Ok(advertise.clone());
    }
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    let host = match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !authority.ends_with(']') =>
        {
            host
        }
        _ => authority,
    };
    if !is_plain_host(host) {
        return Err(ApiError::Internal("public_url has no plain host".into()));
    }
    Ok(format!("{host}:{}", listen.port()))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` made of safe characters only.
fn is_plain_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::is_plain_host;

    #[test]
    fn only_plain_hosts_reach_the_script() {
        for good in ["example.com", "10.0.0.1:7000", "[::1]:80", "a-b.c"] {
            assert!(is_plain_host(good), "{good}");
        }
        for bad in ["", "a b", "x;rm -rf /", "$(id)", "a\"b", "a/b", "`x`"] {
            assert!(!is_plain_host(bad), "{bad}");
        }
    }
}
