//! The HTTP API under `/api/v1`, the probes and `/metrics`, with the OpenAPI 3.1
//! document generated from the handlers themselves.
pub mod agent;
pub mod audit;
mod audit_ctx;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod logs;
mod middleware;
pub mod nodes;
mod openapi;
pub mod projects;
pub mod services;
pub mod settings;
pub mod teams;
pub mod tokens;
pub mod users;

use axum::extract::{DefaultBodyLimit, Request};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dashboard::Dashboard;
use crate::state::AppState;

pub use openapi::ApiDoc;

/// Every route with its handler, and the OpenAPI document describing exactly them.
/// Paths no route matches go to the dashboard (`crate::dashboard`).
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    router_with_dashboard(state, Dashboard::embedded())
}

/// The OpenAPI document `/api/v1/openapi.json` serves, made without a server: the
/// dashboard's TypeScript types are generated from it (`docs/openapi.json`, kept equal
/// by `crates/server/tests/openapi.rs`; `NANOSCALE_UPDATE_OPENAPI=1 cargo test -p
/// nanoscale-server --test openapi` rewrites it).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = routes().into_openapi();
    openapi::finish(&mut document);
    document
}

/// The cluster listener's routes: joining, certificate renewal and the agent
/// protocol, for agents of other servers (see `crate::cluster`).
pub fn cluster_router(state: AppState) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/cluster/v1/join", post(cluster::join))
        .route("/cluster/v1/renew", post(cluster::renew))
        .route(nanoscale_core::channel::PATH, get(agent::channel))
        .route("/api/v1/agent/desired-state", get(agent::desired_state))
        .route("/api/v1/agent/report", post(agent::report))
        .route("/api/v1/agent/log-requests", get(agent::log_requests))
        .route(
            "/api/v1/agent/log-requests/{id}",
            post(agent::answer_log_request),
        )
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}

/// `router` with the dashboard's files taken from `dashboard` (tests use files in
/// memory).
pub(crate) fn router_with_dashboard(
    state: AppState,
    dashboard: Dashboard,
) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut document) = routes().split_for_parts();
    openapi::finish(&mut document);
    let router = router
        .fallback(move |request: Request| dashboard.clone().answer(request))
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(compression())
        .layer(axum::Extension(openapi::OpenApiJson::new(&document)))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        // Panics are caught inside the request context, so their 500 carries the
        // request id and the usual headers.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state);
    (router, document)
}

/// gzip for answers a client accepts it for: a list of 200 services is 170 KiB of
/// JSON and ~15 KiB gzipped. Not for event and log streams (a compressor holds
/// back what it has not flushed), images, what is already encoded (the
/// dashboard's precompressed files), or answers under 1 KiB: those are the ones
/// that carry a secret on its own (`/me`'s CSRF token, a new API token, a revealed
/// variable), which keeps compression-length attacks (BREACH) off them.
fn compression(
) -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .compress_when(
            SizeAbove::new(1024)
                .and(NotForContentType::SSE)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::GRPC),
        )
}

/// Every route of the public listener with its handler and, from its
/// `#[utoipa::path]`, its operation: the one list `router` and `openapi_document`
/// are both made from.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::setup_status, auth::setup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(teams::list_teams, teams::create_team))
        .routes(routes!(teams::delete_team))
        .routes(routes!(teams::add_member, teams::remove_member))
        .routes(routes!(projects::list_projects, projects::create_project))
        .routes(routes!(
            projects::get_project,
            projects::update_project,
            projects::delete_project
        ))
        .routes(routes!(projects::list_grants, projects::create_grant))
        .routes(routes!(projects::delete_grant))
        .routes(routes!(
            services::list_project_services,
            services::create_service
        ))
        .routes(routes!(services::list_services))
        .routes(routes!(
            services::get_service,
            services::update_service,
            services::delete_service
        ))
        .routes(routes!(services::list_env))
        .routes(routes!(services::set_env, services::unset_env))
        .routes(routes!(services::reveal_env))
        .routes(routes!(services::deploy))
        .routes(routes!(services::rollback))
        .routes(routes!(services::list_releases))
        .routes(routes!(services::list_instances))
        .routes(routes!(services::service_metrics))
        .routes(routes!(logs::list_logs))
        .routes(routes!(logs::stream_logs))
        .routes(routes!(services::get_release))
        .routes(routes!(nodes::list_nodes))
        .routes(routes!(
            nodes::get_node,
            nodes::update_node,
            cluster::remove_node
        ))
        .routes(routes!(cluster::create_join_token))
        .routes(routes!(cluster::install_script))
        .routes(routes!(cluster::binary))
        .routes(routes!(cluster::binary_sha256))
        .routes(routes!(nodes::get_desired_state))
        .routes(routes!(agent::desired_state))
        .routes(routes!(agent::report))
        .routes(routes!(agent::channel))
        .routes(routes!(agent::log_requests))
        .routes(routes!(agent::answer_log_request))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(audit::list_audit))
        .routes(routes!(settings::get_settings, settings::update_settings))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::startup))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
}

#[cfg(test)]
mod tests;
