use crate::validation::ValidationError;

/// Longest DNS label (RFC 1035).
pub const DNS_LABEL_MAX: usize = 63;

/// True when `value` is a lowercase RFC 1123 DNS label: 1–63 characters of
/// `a-z`, `0-9` and `-`, not starting or ending with `-`. Project and service names
/// become host names (`<svc>.<project>.svc.internal`), user names and directory names,
/// so this is the one rule for them all.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DNS_LABEL_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

pub fn check_dns_label(field: &str, value: &str) -> Result<(), ValidationError> {
    if is_dns_label(value) {
        return Ok(());
    }
    Err(ValidationError::new(
        field,
        "must be a DNS label: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
    ))
}

/// True when `value` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`,
/// at most 255 bytes.
pub fn is_env_name(value: &str) -> bool {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    value.len() <= 255
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// User names: same alphabet as DNS labels plus `.` and `_`, 1–64 characters, so
/// they are safe in URLs, logs and audit entries.
pub fn check_username(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        return Ok(());
    }
    Err(ValidationError::new(
        field,
        "must be 1-64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
    ))
}

/// Passwords: at least 12 characters (NIST SP 800-63B favours length over
/// composition rules) and at most 1024 bytes so hashing cost stays bounded.
pub fn check_password(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.chars().count() < 12 {
        return Err(ValidationError::new(
            field,
            "must be at least 12 characters long",
        ));
    }
    if value.len() > 1024 {
        return Err(ValidationError::new(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "my-app-2", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "../x",
            "é",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_X", "DATABASE_URL", "a1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "Ä"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn usernames_and_passwords() {
        assert!(check_username("username", "alice.b_2").is_ok());
        assert!(check_username("username", "_x").is_err());
        assert!(check_username("username", "Alice").is_err());
        assert!(check_password("password", "short").is_err());
        assert!(check_password("password", "long-enough-pass").is_ok());
    }
}
