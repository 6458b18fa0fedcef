//! Static sites: files served straight from a release's directory. GET and HEAD,
//! `index.html` for directories, content types, ETag/Last-Modified with 304s, one
//! byte range, precompressed `.br`/`.gz` siblings or gzip on the fly for text,
//! and nothing outside the root (no `..`, no dotfiles, no symlink out).
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{Body, BoxError};

/// Smaller files are not worth compressing.
const COMPRESS_MIN_BYTES: u64 = 1024;
/// Larger files are not compressed on the fly (precompress them instead).
const COMPRESS_MAX_BYTES: u64 = 16 << 20;

/// Answers a GET or HEAD for `path` (after any prefix strip, percent-encoded,
/// without query) from files under `root`.
pub async fn serve(
    root: &Path,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(relative) = clean_path(path) else {
        return not_found(root, method).await;
    };
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        return not_found(root, method).await;
    };
    let mut file_path = root.join(&relative);
    let Ok(metadata) = tokio::fs::metadata(&file_path).await else {
        return not_found(&root, method).await;
    };
    if metadata.is_dir() {
        if !path.ends_with('/') {
            // Relative, so it stays right behind a stripped route prefix.
            let last = path.rsplit('/').next().unwrap_or_default();
            let mut response = text(StatusCode::MOVED_PERMANENTLY, "moved\n");
            if let Ok(location) = HeaderValue::from_str(&format!("{last}/")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            return response;
        }
        file_path = file_path.join("index.html");
    }
    match open_inside(&root, &file_path).await {
        Some((file, metadata)) => {
            send_file(
                &root,
                &file_path,
                file,
                metadata,
                method,
                headers,
                StatusCode::OK,
            )
            .await
        }
        None => not_found(&root, method).await,
    }
}

/// The decoded relative path, or `None` when it could leave the root or names a
/// hidden file.
fn clean_path(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut clean = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." | ".." => return None,
            hidden if hidden.starts_with('.') => return None,
            name => clean.push(name),
        }
    }
    Some(clean)
}

fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = path.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a regular file whose real path (symlinks resolved) is inside `root`.
async fn open_inside(root: &Path, path: &Path) -> Option<(tokio::fs::File, std::fs::Metadata)> {
    let real = tokio::fs::canonicalize(path).await.ok()?;
    if !real.starts_with(root) {
        return None;
    }
    let file = tokio::fs::File::open(&real).await.ok()?;
    let metadata = file.metadata().await.ok()?;
    metadata.is_file().then_some((file, metadata))
}

async fn not_found(root: &Path, method: &Method) -> Response<Body> {
    let page = root.join("404.html");
    if let Some((file, metadata)) = open_inside(root, &page).await {
        return send_file(
            root,
            &page,
            file,
            metadata,
            method,
            &HeaderMap::new(),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(BoxError::from).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(BoxError::from).boxed_unsync()
}

fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.subtype().as_str(), "javascript" | "json" | "xml");
    if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || ["javascript", "json", "xml", "svg", "wasm"]
            .iter()
            .any(|kind| content_type.contains(kind))
}

/// A name with a content hash (`app.3f9a1c2b.js`, `index-8c1e0f2a.css`) never
/// changes content: cache it for a year.
fn hashed_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.split(['.', '-'])
        .any(|part| part.len() >= 8 && part.bytes().all(|b| b.is_ascii_hexdigit()))
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

fn etag(metadata: &std::fs::Metadata) -> String {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", metadata.len(), modified)
}

fn not_modified(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(given) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return given
            .split(',')
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*");
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (since, modified) {
        (Some(since), Some(modified)) => {
            // HTTP dates have whole seconds.
            let modified = httpdate::parse_http_date(&httpdate::fmt_http_date(modified)).ok();
            modified.is_some_and(|m| m <= since)
        }
        _ => false,
    }
}

/// One `bytes=` range against `len`: `Ok(None)` for no (or an ignored) Range,
/// `Err(())` when unsatisfiable.
fn byte_range(headers: &HeaderMap, len: u64, etag: &str) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(condition) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if condition.trim() != etag {
            return Ok(None);
        }
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole file is a valid answer
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().map_err(|_| ())?;
            if suffix == 0 {
                return Err(());
            }
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        (start, "") => (start.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (start, end) => {
            let start: u64 = start.parse().map_err(|_| ())?;
            let end: u64 = end.parse().map_err(|_| ())?;
            (start, end.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

#[allow(clippy::too_many_arguments)]
async fn send_file(
    root: &Path,
    path: &Path,
    file: tokio::fs::File,
    metadata: std::fs::Metadata,
    method: &Method,
    headers: &HeaderMap,
    status: StatusCode,
) -> Response<Body> {
    let content_type = content_type(path);
    let etag = etag(&metadata);
    let modified = metadata.modified().ok();
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    let out = response.headers_mut();
    let set = |out: &mut HeaderMap, name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    };
    set(out, header::CONTENT_TYPE, &content_type);
    set(out, header::ETAG, &etag);
    if let Some(modified) = modified {
        set(
            out,
            header::LAST_MODIFIED,
            &httpdate::fmt_http_date(modified),
        );
    }
    let cache = if content_type.starts_with("text/html") {
        "no-cache"
    } else if hashed_name(path) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    };
    set(out, header::CACHE_CONTROL, cache);
    set(out, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(out, header::ACCEPT_RANGES, "bytes");
    let compress = compressible(&content_type);
    if compress {
        set(out, header::VARY, "Accept-Encoding");
    }
    if status == StatusCode::OK && not_modified(headers, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let len = metadata.len();
    let range = if status == StatusCode::OK {
        byte_range(headers, len, &etag)
    } else {
        Ok(None)
    };
    let head = method == Method::HEAD;
    match range {
        Err(()) => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            set(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{len}"),
            );
            response
        }
        Ok(Some((start, end))) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let length = end - start + 1;
            let out = response.headers_mut();
            set(
                out,
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            set(out, header::CONTENT_LENGTH, &length.to_string());
            if !head {
                let mut file = file;
                if file.seek(SeekFrom::Start(start)).await.is_err() {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "read error\n");
                }
                *response.body_mut() = stream(file.take(length));
            }
            response
        }
        Ok(None) => {
            // Precompressed siblings first (made at build time), then on the fly.
            if compress {
                for (encoding, suffix) in [("br", "br"), ("gzip", "gz")] {
                    if !accepts(headers, encoding) {
                        continue;
                    }
                    let mut sibling = path.as_os_str().to_owned();
                    sibling.push(format!(".{suffix}"));
                    if let Some((compressed, meta)) = open_inside(root, Path::new(&sibling)).await {
                        let out = response.headers_mut();
                        set(out, header::CONTENT_ENCODING, encoding);
                        set(out, header::CONTENT_LENGTH, &meta.len().to_string());
                        if !head {
                            *response.body_mut() = stream(compressed);
                        }
                        return response;
                    }
                }
                if (COMPRESS_MIN_BYTES..=COMPRESS_MAX_BYTES).contains(&len)
                    && accepts(headers, "gzip")
                {
                    set(response.headers_mut(), header::CONTENT_ENCODING, "gzip");
                    if !head {
                        let reader = tokio::io::BufReader::new(file);
                        let encoder = async_compression::tokio::bufread::GzipEncoder::new(reader);
                        *response.body_mut() = stream(encoder);
                    }
                    return response;
                }
            }
            set(
                response.headers_mut(),
                header::CONTENT_LENGTH,
                &len.to_string(),
            );
            if !head {
                *response.body_mut() = stream(file);
            }
            response
        }
    }
}

fn stream(reader: impl tokio::io::AsyncRead + Send + 'static) -> Body {
    let frames = ReaderStream::with_capacity(reader, 64 * 1024)
        .map_ok(Frame::data)
        .map_err(BoxError::from);
    StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_root_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a/..%2f..%2fetc",
            "/a/%00",
            "/a\\b",
            "/.git/config",
            "/.env",
            "/%zz",
        ] {
            assert_eq!(clean_path(bad), None, "{bad}");
        }
        assert_eq!(clean_path("/a/b%20c.txt"), Some(PathBuf::from("a/b c.txt")));
        assert_eq!(clean_path("/"), Some(PathBuf::new()));
    }

    #[test]
    fn ranges() {
        let mut headers = HeaderMap::new();
        let mut range = |value: &str| {
            headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
            byte_range(&headers, 100, "\"e\"")
        };
        assert_eq!(range("bytes=0-9"), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-"), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10"), Ok(Some((90, 99))));
        assert_eq!(range("bytes=95-200"), Ok(Some((95, 99))));
        assert_eq!(range("bytes=100-"), Err(()));
        assert_eq!(range("bytes=5-1"), Err(()));
        assert_eq!(range("bytes=0-1,5-6"), Ok(None));
        assert_eq!(range("items=0-1"), Ok(None));
    }

    #[test]
    fn encodings_respect_q_zero() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts(&headers, "gzip"));
        assert!(accepts(&headers, "br"));
        assert!(hashed_name(Path::new("app.3f9a1c2b.js")));
        assert!(hashed_name(Path::new("index-8c1e0f2a.css")));
        assert!(!hashed_name(Path::new("style.css")));
    }
}
