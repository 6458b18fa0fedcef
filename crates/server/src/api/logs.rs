//! Instance and build logs of a service. Today they are read from this host's own
//! node (the agent and the control plane share the data dir under `nanoscale up`);
//! lines of instances on other nodes will come over the cluster channel.
use axum::extract::State;
use axum::Json;
use nanoscale_agent::runtime::logs::{tail, Stream};
use nanoscale_core::api::{LogEntry, LogQuery};
use uuid::Uuid;

use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::state::AppState;

const DEFAULT_TAIL: u32 = 100;
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
            vec![(
                format!("build-{number}"),
                apps.join("builds").join(number.to_string()).join("log"),
            )]
        }
        None => state
            .store
            .list_instances(id)
            .await?
            .into_iter()
            .filter(|instance| instance.node == state.config.node_name)
            .map(|instance| {
                let dir = apps.join("instances").join(&instance.id).join("log");
                (instance.id, dir)
            })
            .collect(),
    };
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries: Vec<LogEntry> = sources
            .iter()
            .flat_map(|(source, dir)| {
                tail(dir, lines as usize)
                    .0
                    .into_iter()
                    .map(|line| LogEntry {
                        at: line.at,
                        stream: match line.stream {
                            Stream::Stdout => "stdout",
                            Stream::Stderr => "stderr",
                        }
                        .to_owned(),
                        source: source.clone(),
                        text: line.text,
                    })
            })
            .collect();
        // The timestamps share one fixed-width format, so text order is time order.
        entries.sort_by(|a, b| a.at.cmp(&b.at));
        let skip = entries.len().saturating_sub(lines as usize);
        entries.split_off(skip)
    })
    .await
    .map_err(|error| ApiError::Internal(format!("reading logs: {error}")))?;
    Ok(Json(entries))
}
