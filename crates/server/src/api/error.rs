//! The one error type of the HTTP API and its single status mapping.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use nanoscale_core::api::{ErrorBody, ErrorDetail};
use nanoscale_core::ValidationError;

use crate::store::StoreError;

tokio::task_local! {
    /// The current request's id, set by the request middleware, so an error
    /// response can name it without every handler passing it around.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "none".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    #[error("authentication required")]
    Unauthorized,
    /// Login with a wrong user name or password (which one is not revealed).
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// A conflict caused by one field's value (a name already taken).
    #[error("{message}")]
    ConflictField {
        field: &'static str,
        message: String,
    },
    #[error("request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    /// The body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("expected a JSON body with content-type application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Validation(ValidationError),
    #[error("too many attempts; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationError::new(field, message))
    }

    pub fn forbidden() -> Self {
        ApiError::Forbidden("your role does not allow this".into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::ConflictField { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) | ApiError::ConflictField { .. } => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Stale => ApiError::Conflict(
                "the service changed while this request was being applied; read it again and retry"
                    .into(),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::Validation(error)
    }
}

impl ApiError {
    /// The status and the error body an answer carries (an internal cause is
    /// logged here and replaced by the request id).
    pub fn detail(&self) -> (StatusCode, ErrorDetail) {
        let status = self.status();
        let request_id = current_request_id();
        let (message, field) = match self {
            ApiError::Internal(cause) => {
                // The cause stays in the log; the client gets the id to quote.
                tracing::error!(%request_id, cause = %cause, "request failed");
                (
                    format!("internal error; quote request id {request_id} to an operator"),
                    None,
                )
            }
            ApiError::Validation(error) => (error.message.clone(), Some(error.field.clone())),
            ApiError::BadRequest { message, field } => (message.clone(), field.clone()),
            ApiError::ConflictField { field, message } => {
                (message.clone(), Some((*field).to_owned()))
            }
            other => (other.to_string(), None),
        };
        let detail = ErrorDetail {
            code: self.code().to_owned(),
            message,
            field,
            request_id: status.is_server_error().then_some(request_id),
        };
        (status, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.detail();
        let body = ErrorBody { error };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Maps store errors of one resource: missing → 404 naming it, unique violation →
/// 409 naming the field whose value is taken.
pub fn store_error(resource: &'static str, field: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |error| match error {
        StoreError::NotFound => ApiError::NotFound(resource),
        StoreError::Conflict(message) => ApiError::ConflictField { field, message },
        other => other.into(),
    }
}
