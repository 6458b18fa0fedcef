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

/// The longest the API waits for the next part of a body, and for all of it: a
/// client that trickles a body in (a slow-loris) is answered 408 and its
/// connection freed, rather than holding a task and a buffer for as long as it likes.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(15);
const BODY_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The body, at most [`BODY_LIMIT`] bytes. A body declared or found to be larger is
/// refused with 413 at once, and the rest read away in the background
/// (`nanoscale_proxy::linger`) so that the client is listening when the answer
/// comes and the connection can be kept. One that stops coming is a 408.
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let refused = nanoscale_proxy::linger::Refused::of(request.headers());
    let mut body = request.into_body();
    if refused
        .declared()
        .is_some_and(|length| length > BODY_LIMIT as u64)
    {
        refused.read_away(body, 0);
        return Err(ApiError::PayloadTooLarge(BODY_LIMIT));
    }
    let mut kept = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + BODY_TIME;
    loop {
        let next = deadline.min(tokio::time::Instant::now() + BODY_IDLE);
        let frame = match tokio::time::timeout_at(next, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "the request body stopped arriving (the API waits {} s for each part \
                     and {} s for all of it)",
                    BODY_IDLE.as_secs(),
                    BODY_TIME.as_secs()
                )))
            }
        };
        let frame = frame.map_err(|_| ApiError::BadRequest {
            message: "could not read the request body".into(),
            field: None,
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if kept.len() + data.len() > BODY_LIMIT {
            refused.read_away(body, (kept.len() + data.len()) as u64);
            return Err(ApiError::PayloadTooLarge(BODY_LIMIT));
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.freeze())
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
