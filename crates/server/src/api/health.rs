//! Probes and metrics for orchestrators and Prometheus.
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use nanoscale_core::api::HealthStatus;

use crate::metrics::{NODES, PROJECTS, SERVICES, STORE_PING};
use crate::state::AppState;

fn status(ok: bool, checks: BTreeMap<String, String>) -> (StatusCode, Json<HealthStatus>) {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if ok { "ok" } else { "unavailable" };
    (
        code,
        Json(HealthStatus {
            status: status.into(),
            checks,
        }),
    )
}

/// The process is running and answering.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = HealthStatus)))]
pub async fn live() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
        checks: BTreeMap::new(),
    })
}

/// Ready for traffic: the store answers and every migration is applied.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = HealthStatus), (status = 503, body = HealthStatus)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    let mut checks = BTreeMap::new();
    let store_ok = match state.store.ping().await {
        Ok(elapsed) => {
            checks.insert("store".into(), format!("ok ({} µs)", elapsed.as_micros()));
            true
        }
        Err(error) => {
            checks.insert("store".into(), format!("unreachable: {error}"));
            false
        }
    };
    let migrations_ok = matches!(state.store.migrations_done().await, Ok(true));
    checks.insert(
        "migrations".into(),
        if migrations_ok { "done" } else { "pending" }.into(),
    );
    status(store_ok && migrations_ok, checks)
}

/// Start-up finished (migrations, node registration).
#[utoipa::path(get, path = "/health/startup", tag = "health",
    responses((status = 200, body = HealthStatus), (status = 503, body = HealthStatus)))]
pub async fn startup(State(state): State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    let started = state.is_started();
    let mut checks = BTreeMap::new();
    checks.insert(
        "startup".into(),
        if started { "done" } else { "in progress" }.into(),
    );
    status(started, checks)
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Gauges of what exists and the store round trip are sampled at scrape time.
    if let Ok(elapsed) = state.store.ping().await {
        metrics::histogram!(STORE_PING).record(elapsed.as_secs_f64());
    }
    if let Ok(count) = state.store.count_projects().await {
        metrics::gauge!(PROJECTS).set(count as f64);
    }
    if let Ok(count) = state.store.count_services().await {
        metrics::gauge!(SERVICES).set(count as f64);
    }
    if let Ok(count) = state.store.count_nodes().await {
        metrics::gauge!(NODES).set(count as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
