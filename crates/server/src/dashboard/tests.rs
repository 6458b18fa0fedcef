#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on purpose
use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{Asset, Assets, Dashboard, CONTENT_SECURITY_POLICY};

/// A build in memory: path → bytes.
pub(crate) struct InMemory(BTreeMap<&'static str, &'static [u8]>);

impl InMemory {
    pub(crate) fn new(files: &[(&'static str, &'static [u8])]) -> InMemory {
        InMemory(files.iter().copied().collect())
    }

    /// What a Vite build looks like, with a precompressed copy of one script.
    pub(crate) fn build() -> InMemory {
        InMemory::new(&[
            ("index.html", INDEX),
            ("assets/index-abc123.js", SCRIPT),
            ("assets/index-abc123.js.gz", SCRIPT_GZ),
            ("assets/index-def456.css", b"body{margin:0}"),
            ("favicon.svg", b"<svg/>"),
        ])
    }
}

impl Assets for InMemory {
    fn get(&self, path: &str) -> Option<Asset> {
        let bytes = *self.0.get(path)?;
        Some(Asset {
            bytes: bytes.into(),
            sha256: Sha256::digest(bytes).into(),
        })
    }
}

pub(crate) const INDEX: &[u8] =
    b"<!doctype html><script type=\"module\" src=\"/assets/index-abc123.js\"></script>";
const SCRIPT: &[u8] = b"console.log('dashboard')";
/// Not real gzip: only which copy was sent matters here.
const SCRIPT_GZ: &[u8] = b"\x1f\x8bpretend";

fn get(dashboard: &Dashboard, path: &str) -> Response {
    dashboard.respond(&Method::GET, path, &HeaderMap::new())
}

fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_static(value));
    headers
}

fn header(response: &Response, name: header::HeaderName) -> Option<&str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("ascii header"))
}

async fn body(response: Response) -> Vec<u8> {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec()
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(bytes)))
}

#[tokio::test]
async fn hashed_assets_are_immutable_with_their_type_and_etag() {
    let dashboard = Dashboard::new(InMemory::build());
    let response = get(&dashboard, "/assets/index-def456.css");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, header::CACHE_CONTROL),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        header(&response, header::ETAG),
        Some(etag_of(b"body{margin:0}").as_str())
    );
    assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), None);
    assert_eq!(header(&response, header::VARY), None);
    assert_eq!(body(response).await, b"body{margin:0}");

    // Files outside assets/ have no hash in their name.
    let response = get(&dashboard, "/favicon.svg");
    assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
    assert_eq!(
        header(&response, header::CONTENT_TYPE),
        Some("image/svg+xml")
    );
}

#[tokio::test]
async fn client_routes_get_the_index_uncached_with_the_policy() {
    let dashboard = Dashboard::new(InMemory::build());
    for path in [
        "/",
        "/index.html",
        "/services/abc",
        "/projects/p1/",
        "/login",
    ] {
        let response = get(&dashboard, path);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            Some("no-cache"),
            "{path}"
        );
        assert_eq!(
            header(&response, header::CONTENT_SECURITY_POLICY),
            Some(CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(body(response).await, INDEX, "{path}");
    }
}

#[tokio::test]
async fn a_matching_etag_is_answered_304() {
    let dashboard = Dashboard::new(InMemory::build());
    let etag = etag_of(INDEX);
    for if_none_match in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&if_none_match).unwrap(),
        );
        let response = dashboard.respond(&Method::GET, "/services/abc", &headers);
        assert_eq!(
            response.status(),
            StatusCode::NOT_MODIFIED,
            "{if_none_match}"
        );
        assert_eq!(header(&response, header::ETAG), Some(etag.as_str()));
        assert_eq!(header(&response, header::CACHE_CONTROL), Some("no-cache"));
        assert!(body(response).await.is_empty());
    }
    let headers = with(header::IF_NONE_MATCH, "\"stale\"");
    let response = dashboard.respond(&Method::GET, "/", &headers);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn precompressed_copies_go_to_clients_that_accept_them() {
    let dashboard = Dashboard::new(InMemory::build());
    let path = "/assets/index-abc123.js";
    let headers = with(header::ACCEPT_ENCODING, "br;q=1, gzip;q=0.8");
    let response = dashboard.respond(&Method::GET, path, &headers);
    assert_eq!(header(&response, header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(header(&response, header::VARY), Some("accept-encoding"));
    assert_eq!(
        header(&response, header::ETAG),
        Some(etag_of(SCRIPT_GZ).as_str())
    );
    assert!(
        header(&response, header::CONTENT_TYPE).is_some_and(|value| value.contains("javascript"))
    );
    assert_eq!(body(response).await, SCRIPT_GZ);

    for refused in ["br", "gzip;q=0", "identity"] {
        let headers = with(header::ACCEPT_ENCODING, refused);
        let response = dashboard.respond(&Method::GET, path, &headers);
        assert_eq!(
            header(&response, header::CONTENT_ENCODING),
            None,
            "{refused}"
        );
        assert_eq!(header(&response, header::VARY), Some("accept-encoding"));
        assert_eq!(body(response).await, SCRIPT, "{refused}");
    }
}

#[tokio::test]
async fn paths_that_could_leave_the_build_are_404() {
    let dashboard = Dashboard::new(InMemory::build());
    for path in [
        "/../index.html",
        "/assets/../index.html",
        "/%2e%2e/index.html",
        "/assets/%2E%2E/index.html",
        "/./index.html",
        "/assets/%2e/index-def456.css",
        "/.env",
        "/assets\\index-def456.css",
        "/assets%5cindex-def456.css",
        "/index.html%00",
        "/%zz",
        "/%ff",
    ] {
        let response = get(&dashboard, path);
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            header(&response, header::CONTENT_TYPE)
                .is_some_and(|value| value.starts_with("application/json")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn api_paths_stay_json_404_and_other_methods_405() {
    let dashboard = Dashboard::new(InMemory::build());
    for method in [Method::GET, Method::POST] {
        for path in [
            "/api",
            "/api/v1/nothing-here",
            "/%61pi/v1/nothing-here",
            "/cluster/v1/nothing",
            "/health/nothing",
            "/metrics/nothing",
            "/install.sh/x",
        ] {
            let response = dashboard.respond(&method, path, &HeaderMap::new());
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            let body: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{method} {path}");
        }
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = dashboard.respond(&method, "/services/abc", &HeaderMap::new());
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, header::ALLOW), Some("GET, HEAD"));
        let body: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
}

#[tokio::test]
async fn a_missing_hashed_asset_is_404_not_the_index() {
    let dashboard = Dashboard::new(InMemory::build());
    let response = get(&dashboard, "/assets/index-old999.js");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn head_has_the_headers_without_the_body() {
    let dashboard = Dashboard::new(InMemory::build());
    let response = dashboard.respond(&Method::HEAD, "/services/abc", &HeaderMap::new());
    assert_eq!(response.status(), StatusCode::OK);
    let length = INDEX.len().to_string();
    assert_eq!(
        header(&response, header::CONTENT_LENGTH),
        Some(length.as_str())
    );
    assert_eq!(
        header(&response, header::CONTENT_SECURITY_POLICY),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert!(body(response).await.is_empty());
}

#[tokio::test]
async fn without_a_build_pages_answer_503_saying_how_to_build() {
    let dashboard = Dashboard::new(InMemory::new(&[]));
    for path in ["/", "/services/abc"] {
        let response = get(&dashboard, path);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            header(&response, header::CONTENT_SECURITY_POLICY),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            Some("text/html; charset=utf-8")
        );
        let page = String::from_utf8(body(response).await).unwrap();
        assert!(page.contains("not built into this binary"), "{page}");
        assert!(page.contains("./scripts/up"), "{page}");
    }
    let response = get(&dashboard, "/api/v1/nothing-here");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
