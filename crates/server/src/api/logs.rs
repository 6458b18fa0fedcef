//! Instance and build logs of a service. This host's own lines are read from its
//! data dir (the agent and the control plane share it under `nanoscale up`); other
//! nodes are asked through the log broker, over their agents' own connection, and
//! a node that does not answer within [`REMOTE_TIMEOUT`] is left out (logged).
use axum::extract::State;
use axum::Json;
use nanoscale_agent::runtime::logs::read_local;
use nanoscale_core::agent::LogRequest;
use nanoscale_core::api::{LogEntry, LogQuery};
use uuid::Uuid;

use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::state::AppState;

const DEFAULT_TAIL: u32 = 100;
/// How long a user waits for another node's lines.
pub const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const MAX_TAIL: u32 = 10_000;

/// The newest lines, oldest first, merged across the service's instances on this
/// host (or one release's build output with `build`). Project owners, grantees and
/// admins only: apps print secrets more often than they should.
#[utoipa::path(get, path = "/api/v1/services/{id}/logs", tag = "services",
    params(("id" = Uuid, Path, description = "service id"), LogQuery),
    responses((status = 200, body = Vec<LogEntry>)))]
pub async fn list_logs(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Vec<LogEntry>>> {
    let lines = query.tail.unwrap_or(DEFAULT_TAIL);
    if !(1..=MAX_TAIL).contains(&lines) {
        return Err(ApiError::BadRequest {
            message: format!("tail must be between 1 and {MAX_TAIL}"),
            field: Some("tail".into()),
        });
    }
    let service = state
        .store
        .get_service(id)
        .await
        .map_err(store_error("service", "id"))?;
    principal
        .require_project(&state, service.project_id)
        .await?;
    // The service name is a validated DNS label and instance ids were checked when
    // the agent reported them, so these joins stay inside the apps directory.
    let apps = state.config.data_dir.join("apps").join(&service.spec.name);
    let instances = state.store.list_instances(id).await?;
    let local_node = state.config.node_name.clone();
    let mut remote: std::collections::BTreeMap<Uuid, Vec<String>> = Default::default();
    for instance in instances.iter().filter(|i| i.node != local_node) {
        remote
            .entry(instance.node_id)
            .or_default()
            .push(instance.id.clone());
    }
    let sources: Vec<(String, std::path::PathBuf)> = match query.build {
        Some(number) => {
            if number < 1 {
                return Err(ApiError::BadRequest {
                    message: "build: release numbers start at 1".into(),
                    field: Some("build".into()),
                });
            }
            state
                .store
                .find_release_by_number(id, number)
                .await
                .map_err(store_error("release", "build"))?;
            // Every node that runs the service built it.
            for instances in remote.values_mut() {
                instances.clear();
            }
            vec![(
                format!("build-{number}"),
                apps.join("builds").join(number.to_string()).join("log"),
            )]
        }
        None => instances
            .iter()
            .filter(|instance| instance.node == local_node)
            .map(|instance| {
                let dir = apps.join("instances").join(&instance.id).join("log");
                (instance.id.clone(), dir)
            })
            .collect(),
    };
    let asked = remote.into_iter().map(|(node, instances)| {
        let request = LogRequest {
            id: Uuid::now_v7(),
            service: service.spec.name.clone(),
            instances,
            build: query.build,
            tail: lines,
        };
        let state = state.clone();
        async move {
            let answer = state.logs.ask(node, request, REMOTE_TIMEOUT).await;
            if answer.is_none() {
                tracing::warn!(node_id = %node, "a node did not send its log lines in time");
            }
            answer.unwrap_or_default()
        }
    });
    let remote_entries: Vec<LogEntry> = futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect();
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries = read_local(&sources, lines as usize);
        entries.extend(remote_entries);
        // The timestamps share one fixed-width format, so text order is time order.
        entries.sort_by(|a, b| a.at.cmp(&b.at));
        let skip = entries.len().saturating_sub(lines as usize);
        entries.split_off(skip)
    })
    .await
    .map_err(|error| ApiError::Internal(format!("reading logs: {error}")))?;
    Ok(Json(entries))
}
