//! What can go wrong talking to the API, in words a person can act on.
use nanoscale_core::api::ErrorBody;

/// Shorthand for this crate's results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `code` is the stable machine code
    /// (`validation_failed`, `not_found`, …) and `field` the request field at fault.
    #[error("{}", describe_api_error(*status, code, message, field.as_deref()))]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{message}")]
    Http {
        message: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected answer to {what}: {reason} (are the client and server the same version?)")]
    Decode { what: String, reason: String },
    /// The base URL (or a path joined to it) is not a usable URL.
    #[error("invalid URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// From an event stream: the client fell behind and `missed` events were
    /// dropped. Not terminal: the stream goes on; re-read the list to catch up.
    #[error("fell behind the event stream and missed {missed} events; re-read the list")]
    Lagged { missed: u64 },
}

impl ClientError {
    /// The HTTP status for [`ClientError::Api`], else `None`.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code for [`ClientError::Api`] (`not_found`, `conflict`, …), else `None`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds [`ClientError::Api`] from an error answer. The server's JSON error
    /// shape is used when present; anything else (a proxy's HTML page) is
    /// summarized so the person still sees what came back.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return ClientError::Api {
                status,
                code: parsed.error.code,
                message: parsed.error.message,
                field: parsed.error.field,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("error");
        let message = if text.is_empty() {
            format!("the server answered {status} {reason} with no explanation")
        } else {
            text
        };
        ClientError::Api {
            status,
            code: reason.to_ascii_lowercase().replace(' ', "_"),
            message,
            field: None,
        }
    }

    pub(crate) fn http(url: &str, source: reqwest::Error) -> Self {
        let cause = deepest_cause(&source);
        let message = if source.is_connect() {
            format!("cannot connect to {url}: {cause}; is the control plane running, and is the URL right?")
        } else if source.is_timeout() {
            format!("request to {url} timed out")
        } else if source.is_builder() {
            format!("cannot build a request to {url}: {cause}")
        } else {
            format!("request to {url} failed: {cause}")
        };
        ClientError::Http { message, source }
    }
}

fn describe_api_error(status: u16, code: &str, message: &str, field: Option<&str>) -> String {
    let mut text = format!("{status} {code}: ");
    if let Some(field) = field {
        // The message of a validation error reads as a sentence about the field.
        if !message.starts_with(field) {
            text.push_str(field);
            text.push_str(": ");
        }
    }
    text.push_str(message);
    if status == 401 {
        text.push_str(" — run `nanoscale login <url>`");
    }
    text
}

/// The most specific message in an error's source chain ("Connection refused").
fn deepest_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_error_shape() {
        let body = br#"{"error":{"code":"validation_failed","message":"must be a DNS label (a-z, 0-9, '-')","field":"name"}}"#;
        let error = ClientError::from_body(422, body);
        match &error {
            ClientError::Api {
                status,
                code,
                message,
                field,
            } => {
                assert_eq!(*status, 422);
                assert_eq!(code, "validation_failed");
                assert!(message.starts_with("must be a DNS label"));
                assert_eq!(field.as_deref(), Some("name"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "422 validation_failed: name: must be a DNS label (a-z, 0-9, '-')"
        );
        assert_eq!(error.status(), Some(422));
        assert_eq!(error.code(), Some("validation_failed"));
    }

    #[test]
    fn unauthorized_says_how_to_fix_it() {
        let body = br#"{"error":{"code":"unauthorized","message":"authentication required"}}"#;
        assert_eq!(
            ClientError::from_body(401, body).to_string(),
            "401 unauthorized: authentication required — run `nanoscale login <url>`"
        );
    }

    #[test]
    fn server_errors_keep_the_request_id_in_the_message() {
        let body = br#"{"error":{"code":"internal_error","message":"internal error; quote request id 0190 to an operator","request_id":"0190"}}"#;
        let error = ClientError::from_body(500, body);
        assert_eq!(
            error.to_string(),
            "500 internal_error: internal error; quote request id 0190 to an operator"
        );
    }

    #[test]
    fn non_json_bodies_are_summarized() {
        let error = ClientError::from_body(502, b"<html>\n<h1>Bad   Gateway</h1>\n</html>");
        assert_eq!(
            error.to_string(),
            "502 bad_gateway: <html> <h1>Bad Gateway</h1> </html>"
        );
        let error = ClientError::from_body(503, b"");
        assert_eq!(
            error.to_string(),
            "503 service_unavailable: the server answered 503 Service Unavailable with no explanation"
        );
        let long = "x".repeat(5000);
        let error = ClientError::from_body(500, long.as_bytes());
        assert!(error.to_string().len() < 300);
    }

    #[test]
    fn a_field_already_named_in_the_message_is_not_repeated() {
        let body = br#"{"error":{"code":"bad_request","message":"limit must be between 1 and 1000","field":"limit"}}"#;
        assert_eq!(
            ClientError::from_body(400, body).to_string(),
            "400 bad_request: limit must be between 1 and 1000"
        );
    }
}
