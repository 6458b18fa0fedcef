//! Services, their environment, deploys and rollbacks.
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use nanoscale_core::api::{
    DeployRequest, EnvVar, Instance, Release, ReleaseSelector, ReleaseStatus, RollbackRequest,
    Service, ServiceMetrics, SetEnvVar,
};
use nanoscale_core::service::{
    validate_env_entry, validate_git_ref, ServicePatch, ServiceSpec, REDACTED,
};
use serde_json::json;
use uuid::Uuid;

use super::audit_ctx::change;
use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiJson, ApiOptionalJson, ApiPath};
use crate::auth::Principal;
use crate::git::GitError;
use crate::state::AppState;
use crate::store::{NewEvent, NewRelease, StoreError};

/// What the API shows of a service: secrets redacted.
fn shown(mut service: Service) -> Service {
    service.spec = service.spec.redacted();
    service
}

/// Audit summary of a spec: everything but env values.
fn summary(spec: &ServiceSpec) -> serde_json::Value {
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(env) = value.get_mut("env") {
        *env = json!(spec.env.keys().collect::<Vec<_>>());
    }
    value
}

async fn load(state: &AppState, id: Uuid) -> ApiResult<Service> {
    state
        .store
        .get_service(id)
        .await
        .map_err(store_error("service", "id"))
}

#[utoipa::path(get, path = "/api/v1/projects/{project_id}/services", tag = "services",
    params(("project_id" = Uuid, Path, description = "project id")), responses((status = 200, body = Vec<Service>)))]
pub async fn list_project_services(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<Service>>> {
    state
        .store
        .get_project(project_id)
        .await
        .map_err(store_error("project", "project_id"))?;
    let services = state.store.list_services(Some(project_id)).await?;
    Ok(Json(services.into_iter().map(shown).collect()))
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services", responses((status = 200, body = Vec<Service>)))]
pub async fn list_services(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<Vec<Service>>> {
    let services = state.store.list_services(None).await?;
    Ok(Json(services.into_iter().map(shown).collect()))
}

/// A `file://` source outside the control plane's allowed roots is refused when
/// saved (deploy checks it again, on the path as it is then).
fn check_source(state: &AppState, url: &str) -> Result<(), ApiError> {
    state
        .git
        .check_source(url)
        .map_err(|error| ApiError::field("source.git", error.to_string()))
}

#[utoipa::path(post, path = "/api/v1/projects/{project_id}/services", tag = "services", request_body = ServiceSpec,
    params(("project_id" = Uuid, Path, description = "project id")), responses((status = 201, body = Service)))]
pub async fn create_service(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(project_id): ApiPath<Uuid>,
    ApiJson(spec): ApiJson<ServiceSpec>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    state
        .store
        .get_project(project_id)
        .await
        .map_err(store_error("project", "project_id"))?;
    principal.require_project(&state, project_id).await?;
    spec.validate()?;
    check_source(&state, &spec.source.git)?;
    let service = state
        .store
        .create_service(project_id, &spec, principal.user.id, |service| {
            change(
                &principal,
                "service.create",
                "service",
                service.id,
                summary(&service.spec),
            )
            .with_event(NewEvent {
                project_id: Some(project_id),
                service_id: Some(service.id),
                actor_id: Some(principal.user.id),
                ..NewEvent::info(
                    "service.created",
                    format!(
                        "service {} created by {}",
                        service.spec.name, principal.user.username
                    ),
                )
            })
        })
        .await
        .map_err(store_error("service", "name"))?;
    Ok((StatusCode::CREATED, Json(shown(service))))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = Service)))]
pub async fn get_service(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Service>> {
    Ok(Json(shown(load(&state, id).await?)))
}

/// Changes any fields of the spec. Secret values sent back as `********` are kept.
#[utoipa::path(patch, path = "/api/v1/services/{id}", tag = "services", request_body = ServicePatch,
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = Service)))]
pub async fn update_service(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<ServicePatch>,
) -> ApiResult<Json<Service>> {
    let service = load(&state, id).await?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    service.spec.check_patch(&patch)?;
    let next = service.spec.apply(patch);
    next.validate()?;
    if next.source.git != service.spec.source.git {
        check_source(&state, &next.source.git)?;
    }
    let change = change(
        &principal,
        "service.update",
        "service",
        id,
        json!({"before": summary(&service.spec), "after": summary(&next)}),
    )
    .with_event(NewEvent {
        project_id: Some(service.project_id),
        service_id: Some(id),
        actor_id: Some(principal.user.id),
        ..NewEvent::info(
            "service.updated",
            format!(
                "service {} updated by {}",
                next.name, principal.user.username
            ),
        )
    });
    let updated = state
        .store
        .update_service(id, &service.spec, &next, change)
        .await
        .map_err(store_error("service", "name"))?;
    Ok(Json(shown(updated)))
}

/// Deletes the service and its releases; nodes stop its instances.
#[utoipa::path(delete, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 204, description = "deleted")))]
pub async fn delete_service(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let service = load(&state, id).await?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    let change = change(
        &principal,
        "service.delete",
        "service",
        id,
        json!({"name": service.spec.name}),
    )
    .with_event(NewEvent {
        project_id: Some(service.project_id),
        service_id: Some(id),
        actor_id: Some(principal.user.id),
        ..NewEvent::info(
            "service.deleted",
            format!(
                "service {} deleted by {}",
                service.spec.name, principal.user.username
            ),
        )
    });
    state
        .store
        .delete_service(id, change)
        .await
        .map_err(store_error("service", "id"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/services/{id}/env", tag = "services",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = Vec<EnvVar>)))]
pub async fn list_env(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<EnvVar>>> {
    let spec = load(&state, id).await?.spec;
    Ok(Json(
        spec.env
            .iter()
            .map(|(name, value)| {
                let secret = spec.secrets.contains(name);
                EnvVar {
                    name: name.clone(),
                    value: if secret {
                        REDACTED.to_owned()
                    } else {
                        value.clone()
                    },
                    secret,
                }
            })
            .collect(),
    ))
}

/// Shows one variable's value, a secret's included, to those who may edit the
/// service. Every reveal is written to the audit log (the name, never the value).
#[utoipa::path(post, path = "/api/v1/services/{id}/env/{name}/reveal", tag = "services",
    params(("id" = Uuid, Path, description = "service id"), ("name" = String, Path, description = "variable name")),
    responses((status = 200, body = EnvVar), (status = 404, description = "no such variable")))]
pub async fn reveal_env(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, name)): ApiPath<(Uuid, String)>,
) -> ApiResult<Json<EnvVar>> {
    let service = load(&state, id).await?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    let Some(value) = service.spec.env.get(&name) else {
        return Err(ApiError::NotFound("variable"));
    };
    let secret = service.spec.secrets.contains(&name);
    state
        .store
        .record_change(change(
            &principal,
            "service.env.reveal",
            "service",
            id,
            json!({"name": name, "secret": secret}),
        ))
        .await?;
    Ok(Json(EnvVar {
        name,
        value: value.clone(),
        secret,
    }))
}

/// Sets one variable (a secret when `secret` is true). Takes effect at the next deploy.
#[utoipa::path(put, path = "/api/v1/services/{id}/env/{name}", tag = "services", request_body = SetEnvVar,
    params(("id" = Uuid, Path, description = "service id"), ("name" = String, Path, description = "variable name")),
    responses((status = 204, description = "set")))]
pub async fn set_env(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, name)): ApiPath<(Uuid, String)>,
    ApiJson(body): ApiJson<SetEnvVar>,
) -> ApiResult<StatusCode> {
    validate_env_entry("name", "value", &name, &body.value)?;
    let summary = json!({"name": name, "secret": body.secret});
    edit_service(&state, &principal, id, "service.env.set", summary, |spec| {
        spec.env.insert(name.clone(), body.value.clone());
        if body.secret {
            spec.secrets.insert(name.clone());
        } else {
            spec.secrets.remove(&name);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/services/{id}/env/{name}", tag = "services",
    params(("id" = Uuid, Path, description = "service id"), ("name" = String, Path, description = "variable name")),
    responses((status = 204, description = "removed")))]
pub async fn unset_env(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, name)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    let summary = json!({"name": name});
    edit_service(
        &state,
        &principal,
        id,
        "service.env.unset",
        summary,
        |spec| {
            if spec.env.remove(&name).is_none() {
                return Err(ApiError::NotFound("variable"));
            }
            spec.secrets.remove(&name);
            Ok(())
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies `edit` to the service's current spec and stores it, reading again and
/// retrying when a concurrent write got there first, so concurrent env changes all
/// land instead of overwriting each other.
async fn edit_service(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    action: &str,
    summary: serde_json::Value,
    edit: impl Fn(&mut ServiceSpec) -> ApiResult<()>,
) -> ApiResult<()> {
    for attempt in 0..16u32 {
        if attempt > 0 {
            // Jittered backoff so concurrent writers stop colliding.
            let ceiling = 2u64.pow(attempt.min(6));
            let wait = rand::random_range(0..=ceiling);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        let service = load(state, id).await?;
        principal.require_project(state, service.project_id).await?;
        let mut next = service.spec.clone();
        edit(&mut next)?;
        next.validate()?;
        let change = change(principal, action, "service", id, summary.clone());
        match state
            .store
            .update_service(id, &service.spec, &next, change)
            .await
        {
            Err(StoreError::Stale) => continue,
            result => {
                result.map_err(store_error("service", "id"))?;
                return Ok(());
            }
        }
    }
    Err(ApiError::Conflict(
        "too many concurrent changes to this service; retry".into(),
    ))
}

/// Creates a release: the ref is resolved to an exact commit here, so every node
/// runs the same code. The deploy engine builds and switches to it.
#[utoipa::path(post, path = "/api/v1/services/{id}/deploy", tag = "releases", request_body(content = DeployRequest, description = "optional: deploy another ref"),
    params(("id" = Uuid, Path, description = "service id")), responses((status = 201, body = Release)))]
pub async fn deploy(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiOptionalJson(body): ApiOptionalJson<DeployRequest>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let service = load(&state, id).await?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    let request = body.unwrap_or_default();
    let git_ref = request
        .git_ref
        .unwrap_or_else(|| service.spec.source.git_ref.clone());
    validate_git_ref("ref", &git_ref)?;
    let commit = state
        .git
        .resolve(&service.spec.source.git, &git_ref)
        .await
        .map_err(|error| match error {
            GitError::RefNotFound(_) => ApiError::field("ref", error.to_string()),
            GitError::GitMissing => ApiError::Unavailable(error.to_string()),
            GitError::PathNotAllowed(_) | GitError::Remote(_) => {
                ApiError::field("source.git", error.to_string())
            }
        })?;
    let new = NewRelease {
        service_id: id,
        commit: commit.clone(),
        git_ref: git_ref.clone(),
        spec: service.spec.clone(),
        rollback_of: None,
        created_by: principal.user.id,
    };
    let release = queue_release(
        &state,
        &principal,
        &service,
        new,
        "service.deploy",
        |release| {
            (
                json!({"release": release.number, "ref": git_ref, "commit": commit}),
                format!(
                    "release {} of {} queued at {} ({git_ref})",
                    release.number,
                    service.spec.name,
                    short(&commit)
                ),
            )
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(release)))
}

/// Makes an earlier release current again, as a new release with the same commit
/// and spec (so it needs no rebuild).
#[utoipa::path(post, path = "/api/v1/services/{id}/rollback", tag = "releases", request_body = RollbackRequest,
    params(("id" = Uuid, Path, description = "service id")), responses((status = 201, body = Release)))]
pub async fn rollback(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let service = load(&state, id).await?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    let target = match body.release {
        ReleaseSelector::Number(number) => state.store.find_release_by_number(id, number).await,
        ReleaseSelector::Id(release_id) => state.store.get_release(release_id).await,
    }
    .ok()
    .filter(|release| release.service_id == id)
    .ok_or_else(|| ApiError::field("release", "this service has no such release"))?;
    if target.status == ReleaseStatus::Failed {
        return Err(ApiError::field(
            "release",
            "cannot roll back to a release that failed",
        ));
    }
    let spec = state.store.release_spec(target.id).await?;
    let new = NewRelease {
        service_id: id,
        commit: target.commit.clone(),
        git_ref: target.git_ref.clone(),
        spec,
        rollback_of: Some(target.id),
        created_by: principal.user.id,
    };
    let release = queue_release(
        &state,
        &principal,
        &service,
        new,
        "service.rollback",
        |release| {
            (
                json!({"release": release.number, "to": target.number, "commit": target.commit}),
                format!(
                    "release {} of {} queued: rollback to release {} ({})",
                    release.number,
                    service.spec.name,
                    target.number,
                    short(&target.commit)
                ),
            )
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(release)))
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/services/{id}/releases", tag = "releases",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = Vec<Release>)))]
pub async fn list_releases(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<Release>>> {
    load(&state, id).await?;
    Ok(Json(state.store.list_releases(id).await?))
}

/// Running copies of the service on every node, as their agents last reported.
#[utoipa::path(get, path = "/api/v1/services/{id}/instances", tag = "services",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = Vec<Instance>)))]
pub async fn list_instances(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<Instance>>> {
    load(&state, id).await?;
    Ok(Json(state.store.list_instances(id).await?))
}

/// The last hour of the service's traffic (requests, 5xx, mean latency) and the
/// memory of its instances, in 10 s intervals summed over its nodes, from the
/// agents' heartbeats. Held in the control plane's memory only.
#[utoipa::path(get, path = "/api/v1/services/{id}/metrics", tag = "services",
    params(("id" = Uuid, Path, description = "service id")), responses((status = 200, body = ServiceMetrics)))]
pub async fn service_metrics(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ServiceMetrics>> {
    load(&state, id).await?;
    Ok(Json(state.service_metrics.points(id, chrono::Utc::now())))
}

#[utoipa::path(get, path = "/api/v1/releases/{id}", tag = "releases",
    params(("id" = Uuid, Path, description = "release id")), responses((status = 200, body = Release)))]
pub async fn get_release(
    State(state): State<AppState>,
    _principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Release>> {
    Ok(Json(
        state
            .store
            .get_release(id)
            .await
            .map_err(store_error("release", "id"))?,
    ))
}

/// Records a queued release with its audit entry and `release.queued` event;
/// `describe` gives the audit summary and the event message.
async fn queue_release(
    state: &AppState,
    principal: &Principal,
    service: &Service,
    new: NewRelease,
    action: &str,
    describe: impl FnOnce(&Release) -> (serde_json::Value, String),
) -> ApiResult<Release> {
    let service_id = service.id;
    state
        .store
        .create_release(new, |release| {
            let (summary, message) = describe(release);
            change(principal, action, "service", service_id, summary).with_event(NewEvent {
                project_id: Some(service.project_id),
                service_id: Some(service_id),
                release_id: Some(release.id),
                actor_id: Some(principal.user.id),
                ..NewEvent::info("release.queued", message)
            })
        })
        .await
        .map_err(store_error("service", "id"))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
