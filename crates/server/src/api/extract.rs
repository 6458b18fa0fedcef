//! Extractors that turn every malformed input into an [`ApiError`] with the JSON
//! error shape (axum's own rejections answer in plain text).
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body the API accepts.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The most of a too-large body that is read and thrown away after the 413. A
/// server that closes with unread bytes in its socket makes the kernel send a
/// reset, and a client still writing its body may lose the answer to it (nginx's
/// "lingering close" reads on for the same reason). Past this, the refusal is
/// immediate and such a client sees a reset.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Refused bodies read away at the same time, at most.
const MAX_DRAINS: usize = 64;

/// The longest a refused body is read for.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The body, at most [`BODY_LIMIT`] bytes. A body declared or found to be larger is
/// refused with 413 at once, while a task reads the rest of it (up to
/// [`DRAIN_LIMIT`] and [`DRAIN_TIME`]) so that the client is listening when the
/// answer comes and the connection can be kept.
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // A client waiting for `100 Continue` sends nothing before it: reading its body
    // would invite it to upload what is refused anyway.
    let waits = request
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = request.into_body();
    if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
        return Err(if waits {
            ApiError::PayloadTooLarge(BODY_LIMIT)
        } else {
            refuse_too_large(body, 0, declared)
        });
    }
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BadRequest {
            message: "could not read the request body".into(),
            field: None,
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if kept.len() + data.len() > BODY_LIMIT {
            return Err(refuse_too_large(body, kept.len() + data.len(), None));
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.freeze())
}

/// The 413 for a body of which `read` bytes have been read, with the rest read
/// and dropped in the background where it is not declared past [`DRAIN_LIMIT`].
fn refuse_too_large(body: axum::body::Body, read: usize, declared: Option<u64>) -> ApiError {
    use http_body_util::BodyExt;
    /// Drains running now: past [`MAX_DRAINS`] a refusal is immediate, so a
    /// flood of large bodies cannot keep the server reading.
    static DRAINS: nanoscale_core::slots::Slots = nanoscale_core::slots::Slots::new(MAX_DRAINS);
    let slot = declared
        .is_none_or(|length| length <= DRAIN_LIMIT)
        .then(|| DRAINS.take())
        .flatten();
    if let Some(slot) = slot {
        tokio::spawn(async move {
            let _slot = slot;
            let mut body = body;
            let mut read = read as u64;
            let deadline = tokio::time::Instant::now() + DRAIN_TIME;
            while read <= DRAIN_LIMIT {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        read += frame.data_ref().map_or(0, |data| data.len() as u64);
                    }
                    _ => break,
                }
            }
        });
    }
    ApiError::PayloadTooLarge(BODY_LIMIT)
}

/// A JSON body: 415 without a JSON content type, 413 over [`BODY_LIMIT`], 400 on
/// malformed JSON or invalid UTF-8, 422 naming the field on wrong types, missing
/// or unknown fields.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(request).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`] but an empty body (no content) is `None`.
pub struct ApiOptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiOptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|value| value == "0");
        let no_body = !request.headers().contains_key(CONTENT_TYPE)
            && !request
                .headers()
                .contains_key(axum::http::header::TRANSFER_ENCODING);
        if declared_empty || no_body {
            return Ok(ApiOptionalJson(None));
        }
        ApiJson::<T>::from_request(request, state)
            .await
            .map(|ApiJson(value)| ApiOptionalJson(Some(value)))
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    result.map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let field = (path != ".").then_some(path);
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::Validation(nanoscale_core::ValidationError::new(
                    field.unwrap_or_else(|| "body".to_owned()),
                    strip_position(&inner.to_string()),
                ))
            }
            _ => ApiError::BadRequest {
                message: format!("malformed JSON: {inner}"),
                field,
            },
        }
    })
}

/// serde's data errors end with " at line 1 column 17", which means nothing to a
/// person filling a form.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// Path parameters; 400 naming the parameter when it does not parse (e.g. not a UUID).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::BadRequest {
                message: format!("invalid path parameter: {}", rejection.body_text()),
                field: None,
            }),
        }
    }
}

/// Query parameters; 400 naming the parameter when one does not parse or is unknown.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::BadRequest {
                    message: format!("invalid query parameter: {}", error.into_inner()),
                    field: (path != ".").then_some(path),
                }
            })
    }
}
