//! HTTP tests through the whole public router (middleware included), on a SQLite
//! store in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
use std::num::NonZeroU32;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::dashboard::tests::{InMemory, INDEX};
use crate::dashboard::{Dashboard, CONTENT_SECURITY_POLICY};
use crate::state::AppState;
use crate::store::Store;

/// The public router serving `dashboard`; keep the directory for as long as the router.
async fn router(dashboard: Dashboard) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = Store::connect(&database_url, test_sealer())
        .await
        .expect("sqlite store");
    let config = ServerConfig {
        listen: "127.0.0.1:4000".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        database_url,
        public_url: "http://127.0.0.1:4000".into(),
        public_url_configured: false,
        cluster_listen: None,
        cluster_advertise: None,
        login_attempts_per_minute: NonZeroU32::new(10).unwrap(),
        allowed_file_roots: Vec::new(),
        node_name: "test".into(),
    };
    let state = AppState::new(store, config, crate::metrics::install());
    let (router, _document) = super::router_with_dashboard(state, dashboard);
    (router, dir)
}

async fn send(router: &Router, method: Method, path: &str) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

async fn body(response: Response) -> Vec<u8> {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_served_document_is_openapi_document() {
    let (router, _dir) = router(Dashboard::new(InMemory::build())).await;
    let response = send(&router, Method::GET, "/api/v1/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let served: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
    let made = serde_json::to_value(super::openapi_document()).unwrap();
    assert!(
        served == made,
        "/api/v1/openapi.json differs from openapi_document()"
    );
}

#[tokio::test]
async fn the_dashboard_answers_what_no_route_matches() {
    let (router, _dir) = router(Dashboard::new(InMemory::build())).await;

    let response = send(&router, Method::GET, "/services/abc").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    // The request middleware's headers are on dashboard answers too.
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(body(response).await, INDEX);

    let response = send(&router, Method::GET, "/assets/index-abc123.js").await;
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );

    for (method, path, status) in [
        (Method::GET, "/api/v1/nothing-here", StatusCode::NOT_FOUND),
        (Method::POST, "/api/v1/nothing-here", StatusCode::NOT_FOUND),
        (Method::GET, "/health/nothing", StatusCode::NOT_FOUND),
        (Method::GET, "/%2e%2e/etc/passwd", StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/services/abc",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        // A route that exists, with a method it does not have.
        (
            Method::PUT,
            "/api/v1/projects",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let response = send(&router, method.clone(), path).await;
        assert_eq!(response.status(), status, "{method} {path}");
        let body: serde_json::Value = serde_json::from_slice(&body(response).await)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON"));
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    }

    // Real routes are not shadowed.
    let response = send(&router, Method::GET, "/health/live").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_a_build_the_root_says_how_to_build_it() {
    let (router, _dir) = router(Dashboard::new(InMemory::new(&[]))).await;
    let response = send(&router, Method::GET, "/").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    let page = String::from_utf8(body(response).await).unwrap();
    assert!(page.contains("./scripts/up"), "{page}");
}

/// A fixed key: these tests read what they wrote, nothing more.
async fn send_accepting_gzip(router: &Router, path: &str) -> Response {
    let request = Request::builder()
        .uri(path)
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

#[tokio::test]
async fn large_answers_are_gzipped_small_and_encoded_ones_are_not() {
    use std::io::Read;
    let (router, _dir) = router(Dashboard::new(InMemory::build())).await;
    let plain = body(send(&router, Method::GET, "/api/v1/openapi.json").await).await;
    assert!(plain.len() > 1024);
    let response = send_accepting_gzip(&router, "/api/v1/openapi.json").await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(response.headers()[header::VARY], "accept-encoding");
    let zipped = body(response).await;
    assert!(
        zipped.len() * 4 < plain.len(),
        "{} of {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    // Under 1 KiB (where answers holding one secret are) stays as it is.
    let response = send_accepting_gzip(&router, "/health/live").await;
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
    // Without Accept-Encoding nothing is compressed.
    let response = send(&router, Method::GET, "/api/v1/openapi.json").await;
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
}

fn test_sealer() -> nanoscale_sealed::Sealer {
    nanoscale_sealed::Sealer::from_key(&[42u8; 32])
}
