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

/// A Unicode bidirectional formatting character: text holding one can display
/// in an order other than the one it has ("Trojan Source").
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Text from outside (a commit's author or subject) made safe to show: control
/// characters and bidirectional formatting characters (which can make text read
/// differently from what it is) removed, cut to `max_chars`, trimmed.
pub fn plain_text(value: &str, max_chars: usize) -> String {
    value
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .take(max_chars)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod plain_text_tests {
    use super::plain_text;

    #[test]
    fn drops_controls_and_bidi_overrides() {
        assert_eq!(
            plain_text(" fix\u{202E}gpj.exe\u{0007}\n ", 200),
            "fixgpj.exe"
        );
        assert_eq!(plain_text("abcdef", 3), "abc");
        assert_eq!(plain_text("<b>x</b>", 200), "<b>x</b>");
    }
}
