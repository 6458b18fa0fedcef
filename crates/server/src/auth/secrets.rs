use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

const MAX_PASSWORD_BYTES: usize = 1024;

/// API tokens start with this so secret scanners (and people) recognise them.
pub const TOKEN_PREFIX: &str = "nsk_";

/// 256 random bits, hex-encoded, with an optional prefix.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Session cookies and API tokens are 256-bit random secrets, so a fast hash is
/// enough: there is nothing to brute-force. Only the hash is stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Argon2id takes 19 MiB and tens of milliseconds per hash: at most one per core
/// runs at a time, so a flood of logins queues (and then gets 503) instead of
/// exhausting memory.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

async fn hashing_permit() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    let wait = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        hashing_permits().acquire(),
    );
    match wait.await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::Unavailable(
            "too many password checks at once; retry shortly".into(),
        )),
    }
}

/// Argon2id with the crate's defaults (RFC 9106 second recommendation: 19 MiB,
/// t=2), on the blocking pool so a login never stalls the async runtime.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| ApiError::Internal(format!("hashing password: {error}")))
    })
    .await
    .map_err(|error| ApiError::Internal(format!("hashing task: {error}")))?
}

/// A valid Argon2id hash of a random password, verified against when the user does
/// not exist so that the response time does not reveal which user names exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zg8wK1OBVuNErE9pzb8hTkdRQAEcNzDcdo1zIEAOzwg";

/// Checks a password against a stored hash (or the dummy hash when `stored` is None).
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    if password.len() > MAX_PASSWORD_BYTES {
        // No stored password can be this long (check_password caps them).
        return Ok(false);
    }
    let _permit = hashing_permit().await?;
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        known && matches
    })
    .await
    .map_err(|error| ApiError::Internal(format!("verify task: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_round_trip() {
        let hash = hash_password("correct horse battery".into())
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse battery".into(), Some(hash.clone()))
                .await
                .expect("v")
        );
        assert!(!verify_password("wrong".into(), Some(hash))
            .await
            .expect("v"));
        assert!(!verify_password("anything".into(), None).await.expect("v"));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret(TOKEN_PREFIX);
        let b = new_secret(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), a);
    }
}
