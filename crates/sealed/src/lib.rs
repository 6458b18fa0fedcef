//! Secret env values at rest. The control plane's store and the agent's SQLite file
//! keep a secret only sealed: `nsenc1:<hex of 24-byte nonce ‖ ciphertext ‖ tag>`,
//! XChaCha20-Poly1305 under a 256-bit key from a key file of mode 0600, created on
//! first start. The variable's name is the associated data, so a sealed value moved
//! to another variable does not open.
//!
//! Architecture invariant: a secret is sealed at the moment it is serialized for
//! storage and opened when it is read back; what lives in memory between is the
//! plain `ServiceSpec` the rest of the code already treats as secret-bearing.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use nanoscale_core::service::ServiceSpec;
use rand::RngCore;

/// Marks a sealed value (and its format version).
pub const PREFIX: &str = "nsenc1:";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("secret key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error(
        "secret '{name}' does not open with this key (a different secret.key, or a damaged value)"
    )]
    Open { name: String },
}

/// Seals and opens secret values with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn from_key(key: &[u8; KEY_LEN]) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Reads the key file at `path` (64 hex digits), creating it with a fresh random
    /// key, mode 0600, when it does not exist. A key file others may read, or one
    /// that is not ours, is refused: the key is worth as much as every secret.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        let fail = |message: String| SealError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let mut key = [0u8; KEY_LEN];
                rand::rng().fill_bytes(&mut key);
                let text = format!("{}\n", hex::encode(key));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|error| fail(format!("writing: {error}")))?;
                return Ok(Sealer::from_key(&key));
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(fail(format!("creating: {error}"))),
        }
        let mut file = OpenOptions::new()
            .read(true)
            // A symlink planted in place of the key file is refused.
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(|error| fail(format!("opening: {error}")))?;
        let meta = file
            .metadata()
            .map_err(|error| fail(format!("reading: {error}")))?;
        if meta.mode() & 0o077 != 0 {
            return Err(fail(format!(
                "mode {:o} lets others read it; run chmod 600 on it",
                meta.mode() & 0o777
            )));
        }
        let me = std::fs::metadata("/proc/self").map(|own| own.uid()).ok();
        if me.is_some_and(|uid| uid != meta.uid()) {
            return Err(fail(format!(
                "owned by uid {}, not by this process's user",
                meta.uid()
            )));
        }
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(|error| fail(format!("reading: {error}")))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
            .ok_or_else(|| fail("must hold 64 hexadecimal digits".into()))?;
        Ok(Sealer::from_key(&bytes))
    }

    /// Seals `value` of variable `name`.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            // Only fails for messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", hex::encode(out))
    }

    /// Opens a value sealed by [`Sealer::seal`]; a value without the prefix (written
    /// before sealing existed) is returned as it is.
    pub fn open(&self, name: &str, stored: &str) -> Result<String, SealError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let failed = || SealError::Open {
            name: name.to_owned(),
        };
        let bytes = hex::decode(encoded).map_err(|_| failed())?;
        if bytes.len() < NONCE_LEN {
            return Err(failed());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| failed())?;
        String::from_utf8(plain).map_err(|_| failed())
    }

    /// The spec with every secret env value sealed (already sealed ones stay so).
    pub fn seal_spec(&self, spec: &ServiceSpec) -> ServiceSpec {
        let mut sealed = spec.clone();
        for name in &spec.secrets {
            if let Some(value) = sealed.env.get_mut(name) {
                if !value.starts_with(PREFIX) {
                    *value = self.seal(name, value);
                }
            }
        }
        sealed
    }

    /// The spec with every secret env value opened.
    pub fn open_spec(&self, mut spec: ServiceSpec) -> Result<ServiceSpec, SealError> {
        for name in &spec.secrets {
            if let Some(value) = spec.env.get_mut(name) {
                *value = self.open(name, value)?;
            }
        }
        Ok(spec)
    }
}

/// True when a spec still holds a secret in plain text (a row from before sealing).
pub fn has_plain_secret(spec: &ServiceSpec) -> bool {
    spec.secrets.iter().any(|name| {
        spec.env
            .get(name)
            .is_some_and(|value| !value.starts_with(PREFIX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sealer() -> Sealer {
        Sealer::from_key(&[7u8; KEY_LEN])
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_name_and_key() {
        let sealed = sealer().seal("TOKEN", "hunter2-secret");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            sealer().seal("TOKEN", "hunter2-secret"),
            "nonces differ"
        );
        assert_eq!(sealer().open("TOKEN", &sealed).unwrap(), "hunter2-secret");
        assert!(sealer().open("OTHER", &sealed).is_err());
        assert!(Sealer::from_key(&[8u8; KEY_LEN])
            .open("TOKEN", &sealed)
            .is_err());
        let mut damaged = sealed.clone();
        let last = damaged.pop();
        damaged.push(if last == Some('0') { '1' } else { '0' });
        assert!(sealer().open("TOKEN", &damaged).is_err());
        assert!(sealer().open("TOKEN", "nsenc1:zz").is_err());
        assert_eq!(sealer().open("TOKEN", "plain").unwrap(), "plain");
    }

    #[test]
    fn specs_seal_only_their_secrets() {
        let mut spec: ServiceSpec = serde_json_spec();
        spec.env.insert("PUBLIC".into(), "visible".into());
        spec.env.insert("TOKEN".into(), "hunter2".into());
        spec.secrets.insert("TOKEN".into());
        let sealed = sealer().seal_spec(&spec);
        assert_eq!(sealed.env["PUBLIC"], "visible");
        assert!(sealed.env["TOKEN"].starts_with(PREFIX));
        assert!(!has_plain_secret(&sealed));
        assert!(has_plain_secret(&spec));
        assert_eq!(
            sealer().seal_spec(&sealed),
            sealed,
            "sealing twice is a no-op"
        );
        assert_eq!(sealer().open_spec(sealed).unwrap(), spec);
    }

    fn serde_json_spec() -> ServiceSpec {
        serde_json::from_str(r#"{"name": "web", "source": {"git": "https://example.com/a.git"}}"#)
            .unwrap()
    }

    #[test]
    fn the_key_file_is_created_private_reused_and_refused_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("A", "value");
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open("A", &sealed).unwrap(), "value");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Sealer::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short\n").unwrap();
        let error = Sealer::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("64 hexadecimal digits"), "{error}");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            Sealer::load_or_create(&link).is_err(),
            "a symlink is refused"
        );
    }
}
