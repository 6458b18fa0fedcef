//! Base URLs and the paths joined to them.
use reqwest::Url;

use crate::{ClientError, Result};

/// Checks and normalizes a base URL: `http`/`https` only, no query or fragment,
/// trailing slashes removed (so `join_url` can simply append).
pub(crate) fn normalize_base_url(base_url: &str) -> Result<String> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(base_url.trim()).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "expected an http:// or https:// URL such as http://127.0.0.1:4000",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the URL must not have a query or a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "put no credentials in the URL; log in instead so they stay out of history",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

pub(crate) fn join_url(base: &str, path: &str) -> Result<Url> {
    let joined = if path.starts_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    };
    Url::parse(&joined).map_err(|error| ClientError::InvalidUrl {
        url: joined.clone(),
        reason: error.to_string(),
    })
}

/// Percent-encodes one path segment (a variable name, a free-form string) so it
/// cannot add segments or a query.
pub(crate) fn segment(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized() {
        let cases = [
            ("http://127.0.0.1:4000", "http://127.0.0.1:4000"),
            ("http://127.0.0.1:4000/", "http://127.0.0.1:4000"),
            (
                "https://paas.example.com/nanoscale/",
                "https://paas.example.com/nanoscale",
            ),
            (" https://paas.example.com ", "https://paas.example.com"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_base_url(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn bad_base_urls_are_refused_with_a_reason() {
        for input in [
            "localhost:4000",
            "ftp://example.com",
            "127.0.0.1:4000",
            "http://",
            "http://h/?x=1",
            "http://user:pw@h/",
            "",
        ] {
            let error = normalize_base_url(input).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidUrl { .. }),
                "{input}: {error}"
            );
            assert!(error.to_string().contains("invalid URL"), "{error}");
        }
    }

    #[test]
    fn paths_join_below_the_base_including_its_prefix() {
        let client = crate::Client::new("https://h.example/prefix/", None).unwrap();
        assert_eq!(
            client.url("/api/v1/projects").unwrap().as_str(),
            "https://h.example/prefix/api/v1/projects"
        );
        let client = crate::Client::new("http://127.0.0.1:4000", None).unwrap();
        assert_eq!(
            client.url("/api/v1/me").unwrap().as_str(),
            "http://127.0.0.1:4000/api/v1/me"
        );
        assert_eq!(
            client.url("health/ready").unwrap().as_str(),
            "http://127.0.0.1:4000/health/ready"
        );
    }

    #[test]
    fn segments_cannot_escape_their_place() {
        assert_eq!(segment("DATABASE_URL"), "DATABASE_URL");
        assert_eq!(segment("../x"), "..%2Fx");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
        let client = crate::Client::new("http://h", None).unwrap();
        let url = client
            .url(&format!("/api/v1/services/x/env/{}", segment("../../me")))
            .unwrap();
        assert_eq!(url.path(), "/api/v1/services/x/env/..%2F..%2Fme");
    }
}
