use serde::{Deserialize, Serialize};

/// A rejected input, naming the JSON field it came from (dotted path, e.g.
/// `routes[0].path`) so the API and the dashboard can show the message next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks a free-text value (command, display name) is within `max` bytes and free
/// of control characters other than tab; NUL bytes and terminal escapes never reach
/// a process, a log or a database row.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} bytes long"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks an integer is inside an inclusive range; used for every numeric knob so
/// absurd numbers are refused at the edge instead of overflowing later.
pub fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ValidationError> {
    if value < min || value > max {
        return Err(ValidationError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}
