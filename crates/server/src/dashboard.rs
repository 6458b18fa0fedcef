//! The web dashboard: the static files Vite builds into `dashboard/dist`, embedded in
//! the binary and served for the GET/HEAD requests no API route matches. A path
//! that names a file gets that file; any other path gets `index.html`, which routes
//! on the client. Paths under the API's prefixes keep the JSON 404.
//!
//! The serving logic takes its files from an [`Assets`], so tests give it files in
//! memory: the embedded set is fixed when the crate is compiled.
use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::api::error::ApiError;

/// The Content-Security-Policy of every HTML page served here. The build has no
/// inline script and loads nothing from other origins, so everything is `'none'`
/// or `'self'`, with these relaxations:
/// - `style-src 'unsafe-inline'`: the log terminal (xterm.js) writes its theme and
///   cell-size rules into `<style>` elements at run time and has no nonce option.
///   Scripts stay `'self'` only, and injecting a style would first need injected
///   markup, which the dashboard never renders (user text is always text).
/// - `img-src https: data:`: `https:` for the white-label logo, whose URL settings
///   accept only as `https://…` or a path on this server (never `http:` or
///   `javascript:`); `data:` for the small images Vite inlines into the build.
/// - `form-action 'self'`: the login form posts to this server.
///
/// `frame-ancestors 'none'` repeats the `X-Frame-Options: DENY` every response has.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// First path segments that belong to the API, the probes and the cluster: an
/// unknown path under them is a JSON 404, never the dashboard.
pub const API_PREFIXES: [&str; 5] = ["api", "cluster", "health", "metrics", "install.sh"];

/// One file of the build: its bytes and their SHA-256 (which makes its ETag).
pub struct Asset {
    pub bytes: Cow<'static, [u8]>,
    pub sha256: [u8; 32],
}

/// Where the dashboard's files come from: the build embedded in the binary, or
/// files in memory in tests.
pub trait Assets: Send + Sync + 'static {
    /// The file at `path`: relative to `dist`, `/`-separated, without `.` or `..`
    /// segments.
    fn get(&self, path: &str) -> Option<Asset>;
}

/// Serves the dashboard from an [`Assets`]. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    assets: Arc<dyn Assets>,
    /// Whether a lookup reads the disk, so it must leave the async threads: debug
    /// builds of rust-embed read (and hash) the file from `dist` at every call.
    reads_disk: bool,
}

impl Dashboard {
    /// The build embedded in this binary (read from `dashboard/dist` on disk in
    /// debug builds, so a rebuilt dashboard shows without recompiling).
    pub fn embedded() -> Dashboard {
        Dashboard {
            assets: Arc::new(Embedded),
            reads_disk: cfg!(debug_assertions),
        }
    }

    pub fn new(assets: impl Assets) -> Dashboard {
        Dashboard {
            assets: Arc::new(assets),
            reads_disk: false,
        }
    }

    /// The router's fallback: answers a request no route matched.
    pub async fn answer(self, request: Request) -> Response {
        let (parts, _body) = request.into_parts();
        if !self.reads_disk {
            return self.respond(&parts.method, parts.uri.path(), &parts.headers);
        }
        let answered = tokio::task::spawn_blocking(move || {
            self.respond(&parts.method, parts.uri.path(), &parts.headers)
        })
        .await;
        answered.unwrap_or_else(|error| {
            ApiError::Internal(format!("dashboard lookup failed: {error}")).into_response()
        })
    }

    /// Answers `method` on `path` (percent-encoded, as in the request line, without
    /// the query).
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        let Some(segments) = clean_segments(path) else {
            return ApiError::NotFound("route").into_response();
        };
        if segments
            .first()
            .is_some_and(|first| API_PREFIXES.contains(&first.as_str()))
        {
            return ApiError::NotFound("route").into_response();
        }
        if method != Method::GET && method != Method::HEAD {
            let mut response = ApiError::MethodNotAllowed.into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let head = method == Method::HEAD;
        let path = segments.join("/");
        if !path.is_empty() && path != INDEX {
            if let Some(response) = self.file(&path, headers, head) {
                return response;
            }
            // A missing hashed file is an old build's: HTML in its place would only
            // fail later as a script with the wrong type.
            if path.starts_with(ASSETS_DIR) {
                return ApiError::NotFound("file").into_response();
            }
        }
        self.file(INDEX, headers, head)
            .unwrap_or_else(|| not_built(head))
    }

    /// The file at `path` (or a precompressed copy the client accepts), `None` when
    /// the build has no such file.
    fn file(&self, path: &str, request_headers: &HeaderMap, head: bool) -> Option<Response> {
        let original = self.assets.get(path)?;
        let mut variants = false;
        let mut chosen = None;
        for (encoding, suffix) in [("br", ".br"), ("gzip", ".gz")] {
            let Some(compressed) = self.assets.get(&format!("{path}{suffix}")) else {
                continue;
            };
            variants = true;
            if chosen.is_none() && accepts(request_headers, encoding) {
                chosen = Some((encoding, compressed));
            }
        }
        let (encoding, asset) = match chosen {
            Some((encoding, compressed)) => (Some(encoding), compressed),
            None => (None, original),
        };
        let etag = format!("\"{}\"", hex::encode(asset.sha256));
        let content_type = content_type(path);
        let cache_control = if path.starts_with(ASSETS_DIR) {
            // Vite puts a content hash in every name under assets/.
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let not_modified = request_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| etag_matches(value, &etag));
        let mut response = if not_modified {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            body_response(StatusCode::OK, to_bytes(asset.bytes), head)
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        if variants {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if content_type.starts_with("text/html") {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
        }
        Some(response)
    }
}

const INDEX: &str = "index.html";
const ASSETS_DIR: &str = "assets/";

const NOT_BUILT_PAGE: &str = "<!doctype html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>NanoScale</title></head>
<body>
<h1>The dashboard is not built</h1>
<p>The dashboard was not built into this binary. <code>./scripts/up</code> builds it
(into <code>dashboard/dist</code>) before building the binary. The API under
<code>/api/v1</code> works without it.</p>
</body>
</html>
";

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../../dashboard/dist"]
#[allow_missing = true]
struct Dist;

struct Embedded;

impl Assets for Embedded {
    fn get(&self, path: &str) -> Option<Asset> {
        let file = <Dist as rust_embed::Embed>::get(path)?;
        Some(Asset {
            sha256: file.metadata.sha256_hash(),
            bytes: file.data,
        })
    }
}

/// The 503 page of a binary built before `dashboard/dist` existed.
fn not_built(head: bool) -> Response {
    let mut response = body_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(NOT_BUILT_PAGE.as_bytes()),
        head,
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// The decoded, non-empty segments of `path`, or `None` when it does not decode to
/// UTF-8, holds a NUL or a backslash, or has a segment starting with `.` (`.`, `..`
/// and hidden files alike).
fn clean_segments(path: &str) -> Option<Vec<String>> {
    let decoded = percent_decode(path)?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/').filter(|segment| !segment.is_empty()) {
        if segment.starts_with('.') {
            return None;
        }
        segments.push(segment.to_owned());
    }
    Some(segments)
}

fn percent_decode(path: &str) -> Option<String> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            decoded.push(byte);
            continue;
        }
        let high = (bytes.next()? as char).to_digit(16)?;
        let low = (bytes.next()? as char).to_digit(16)?;
        decoded.push((high * 16 + low) as u8);
    }
    String::from_utf8(decoded).ok()
}

fn accepts(headers: &HeaderMap, encoding: &str) -> bool {
    nanoscale_core::content::accepts_encoding(
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|value| value.to_str().ok()),
        encoding,
    )
}

/// `If-None-Match` against a strong ETag, compared weakly as RFC 9110 asks for GET.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json"
        );
    if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

fn to_bytes(bytes: Cow<'static, [u8]>) -> Bytes {
    match bytes {
        Cow::Borrowed(bytes) => Bytes::from_static(bytes),
        Cow::Owned(bytes) => Bytes::from(bytes),
    }
}

/// A response with `bytes` as its body, or only their length for HEAD.
fn body_response(status: StatusCode, bytes: Bytes, head: bool) -> Response {
    let length = bytes.len();
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::from(bytes)
    });
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
pub(crate) mod tests;
