//! Reading HTTP content negotiation, shared by the two static file servers (the
//! proxy's static sites and the control plane's dashboard). Pure: header values in,
//! answers out.

/// Whether `Accept-Encoding` values (each possibly a comma-separated list) accept
/// `encoding`: named, or `*`, without a zero quality (`q=0`, `q=0.0`, …).
pub fn accepts_encoding<'a>(values: impl IntoIterator<Item = &'a str>, encoding: &str) -> bool {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|quality| quality.trim().parse::<f32>().ok())
                    .is_some_and(|quality| quality <= 0.0)
            });
            (name.eq_ignore_ascii_case(encoding) || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::accepts_encoding;

    #[test]
    fn names_wildcards_and_zero_quality() {
        assert!(accepts_encoding(["gzip, br"], "br"));
        assert!(accepts_encoding(["deflate", "GZIP;q=0.5"], "gzip"));
        assert!(accepts_encoding(["*"], "br"));
        assert!(!accepts_encoding(["gzip;q=0, br"], "gzip"));
        assert!(!accepts_encoding(["br; q=0.000"], "br"));
        assert!(!accepts_encoding(["identity"], "gzip"));
        assert!(!accepts_encoding([], "gzip"));
    }
}
