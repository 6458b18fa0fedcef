//! Joining a cluster: the one-time join token, the enrollment messages a new node
//! and the control plane exchange, and the usage a node reports in its heartbeat.
//!
//! A join token is `K10<ca-sha256>::<secret>` (the k3s idea): the first part is the
//! SHA-256 of the cluster CA certificate (DER, hex), the second a one-time secret.
//! The joining node pins the CA by that hash during the TLS handshake, so it sends
//! the secret only to the real control plane; the control plane stores only a hash
//! of the secret.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::ValidationError;

/// Every join token starts with this.
pub const JOIN_TOKEN_PREFIX: &str = "K10";
/// The name the control plane's cluster certificate carries and every agent checks,
/// whatever address it dialled (the CA is private to the cluster, so the name only
/// tells the server certificate from node certificates).
pub const CONTROL_PLANE_SERVER_NAME: &str = "control-plane.nanoscale.internal";
/// Default and bounds of a join token's life.
pub const JOIN_TOKEN_DEFAULT_TTL_SECS: u64 = 600;
pub const JOIN_TOKEN_MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Shortest secret a join token may carry.
pub const MIN_JOIN_SECRET_CHARS: usize = 32;

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate (DER), lowercase hex.
    pub ca_sha256: String,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<JoinToken, ValidationError> {
        let invalid = |message: &str| ValidationError::new("token", message);
        let rest = token
            .trim()
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .ok_or_else(|| invalid("is not a join token (they start with K10)"))?;
        let (hash, secret) = rest
            .split_once("::")
            .ok_or_else(|| invalid("is not a join token (K10<ca-hash>::<secret>)"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("carries no valid CA fingerprint (64 hex digits)"));
        }
        if secret.len() < MIN_JOIN_SECRET_CHARS
            || secret.len() > 256
            || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid("carries no valid secret"));
        }
        Ok(JoinToken {
            ca_sha256: hash.to_ascii_lowercase(),
            secret: secret.to_owned(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}{}::{}", self.ca_sha256, self.secret)
    }
}

/// `POST /api/v1/nodes/join-tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Seconds the token stays valid (1 to 604800, default 600).
    pub ttl_secs: Option<u64>,
}

/// A new join token. The token is shown once: only its hash is stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenCreated {
    pub id: Uuid,
    /// `K10<ca-sha256>::<secret>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// What to paste on the new server.
    pub command: String,
}

/// What a joining node sends (over TLS pinned to the token's CA hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The whole join token.
    pub token: String,
    /// The node's name (a DNS label), unique in the cluster.
    pub name: String,
    /// PEM certificate signing request for the node's own key pair; only its public
    /// key is used.
    pub csr: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `uname -m` style: `x86_64`, `aarch64`.
    pub arch: String,
    pub cpus: i64,
    pub memory_bytes: i64,
}

/// The control plane's answer to a join or a renewal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeCertificate {
    pub node_id: Uuid,
    pub node_name: String,
    /// PEM client certificate, signed by the cluster CA.
    pub certificate: String,
    /// PEM cluster CA certificate.
    pub ca_certificate: String,
    pub not_after: DateTime<Utc>,
}

/// `POST /cluster/v1/renew`, authenticated by the current certificate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
}

/// What a node measures about itself in every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUsage {
    /// Busy share of all CPUs since the previous heartbeat, 0–100.
    pub cpu_percent: f64,
    pub memory_used_bytes: i64,
    pub memory_total_bytes: i64,
    /// Of the file system holding the node's data dir.
    pub disk_used_bytes: i64,
    pub disk_total_bytes: i64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// Whether a node name is acceptable: a DNS label (it becomes part of certificate
/// names, log lines and placement rules).
pub fn validate_node_name(name: &str) -> Result<(), ValidationError> {
    if crate::is_dns_label(name) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "name",
            "must be a DNS label: 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_round_trip() {
        let text = format!("K10{HASH}::{}", "a".repeat(64));
        let token = JoinToken::parse(&text).expect("valid");
        assert_eq!(token.ca_sha256, HASH);
        assert_eq!(token.to_string(), text);
    }

    #[test]
    fn bad_tokens_name_the_problem() {
        for (text, expect) in [
            ("nsk_abc".to_owned(), "start with K10"),
            (format!("K10{HASH}"), "K10<ca-hash>::<secret>"),
            (format!("K10abc::{}", "a".repeat(64)), "fingerprint"),
            (format!("K10{HASH}::short"), "secret"),
            (format!("K10{HASH}::{}';rm", "a".repeat(40)), "secret"),
        ] {
            let error = JoinToken::parse(&text).expect_err(&text);
            assert_eq!(error.field, "token");
            assert!(error.message.contains(expect), "{text}: {}", error.message);
        }
    }
}
