//! The CLI's saved login: `~/.config/nanoscale/config.toml` (or under
//! `$XDG_CONFIG_HOME`, or wherever `NANOSCALE_CLI_CONFIG` points), holding
//! `url = "…"`, `token = "…"` and, when the CLI created the token, `token_id`.
//! It holds a secret, so it is written with mode 0600 in a 0700 directory,
//! atomically, and a token is never read from a file other users can read.
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CliError, CliResult};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token's id when this CLI created it, so `logout` can revoke it (the
    /// API does not tell a bearer which token it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<uuid::Uuid>,
}

/// Where the config file is, from the environment.
pub fn path() -> CliResult<PathBuf> {
    path_from(
        std::env::var_os("NANOSCALE_CLI_CONFIG"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .ok_or_else(|| {
        CliError::usage("cannot tell where to keep the CLI config: HOME is not set")
            .hint("set NANOSCALE_CLI_CONFIG to a file path")
    })
}

fn path_from(
    explicit: Option<OsString>,
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    // The XDG spec says a relative XDG_CONFIG_HOME is invalid and to be ignored.
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|path| path.is_absolute());
    let base = match xdg {
        Some(base) => base,
        None => PathBuf::from(home.filter(|value| !value.is_empty())?).join(".config"),
    };
    Some(base.join("nanoscale").join("config.toml"))
}

/// Reads the config; `None` when the file does not exist. Refuses a file that
/// holds a token but is accessible by other users.
pub fn load(path: &Path) -> CliResult<Option<CliConfig>> {
    let Some((config, mode)) = read(path)? else {
        return Ok(None);
    };
    if config.token.is_some() && mode & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "{} holds a token but other users can read it (mode {:04o})",
            path.display(),
            mode & 0o777
        ))
        .hint(format!("run `chmod 600 {}`", path.display())));
    }
    Ok(Some(config))
}

/// Reads the config whatever its mode, for rewriting it (logout fixes the mode).
pub fn load_for_update(path: &Path) -> CliResult<Option<CliConfig>> {
    Ok(read(path)?.map(|(config, _)| config))
}

fn read(path: &Path) -> CliResult<Option<(CliConfig, u32)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(CliError::failure(format!(
                "cannot read {}: {error}",
                path.display()
            )))
        }
    };
    let mode = std::fs::metadata(path)
        .map_err(|error| CliError::failure(format!("cannot read {}: {error}", path.display())))?
        .mode();
    let config: CliConfig = toml::from_str(&text).map_err(|error| {
        CliError::usage(format!(
            "{} is not a valid CLI config: {error}",
            path.display()
        ))
        .hint("fix or delete it, then run `nanoscale login <url>` (keys: url, token, token_id)")
    })?;
    Ok(Some((config, mode)))
}

/// Writes the config with mode 0600: to a new file in the same directory, then
/// renamed over the old one, so a crash never leaves half a file or a moment
/// where the token is readable by others.
pub fn save(path: &Path, config: &CliConfig) -> CliResult {
    let failed = |what: &str, error: std::io::Error| {
        CliError::failure(format!("cannot {what} {}: {error}", path.display()))
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&directory)
        .map_err(|error| failed("create the directory of", error))?;
    let text = toml::to_string(config)
        .map_err(|error| CliError::failure(format!("cannot encode the CLI config: {error}")))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.{}.{nanos}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed("write", error));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config() -> CliConfig {
        CliConfig {
            url: Some("http://127.0.0.1:4000".into()),
            token: Some("nsk_secret".into()),
            token_id: Some(uuid::Uuid::nil()),
        }
    }

    #[test]
    fn saved_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deeper").join("config.toml");
        save(&path, &config()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        assert_eq!(load(&path).unwrap(), Some(config()));
        // Overwriting keeps the mode and leaves no temporary file behind.
        save(&path, &CliConfig::default()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(CliConfig::default()));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("config.toml")]);
    }

    #[test]
    fn a_readable_token_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        save(&path, &config()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load(&path).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.contains("mode 0644"), "{}", error.message);
        assert!(error.message.contains(&path.display().to_string()));
        assert_eq!(
            error.hint.as_deref(),
            Some(format!("run `chmod 600 {}`", path.display()).as_str())
        );
        // Rewriting it (logout, login) is still possible, and makes it private.
        let loaded = load_for_update(&path).unwrap().unwrap();
        save(&path, &loaded).unwrap();
        assert!(load(&path).is_ok());
    }

    #[test]
    fn a_readable_file_without_a_token_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "url = \"http://h:1\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load(&path).unwrap().unwrap().url.as_deref(),
            Some("http://h:1")
        );
    }

    #[test]
    fn missing_is_none_and_garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(&path, "tokn = \"x\"\n").unwrap();
        let error = load(&path).unwrap_err();
        assert!(error.message.contains("config.toml"), "{}", error.message);
    }

    #[test]
    fn the_path_follows_the_environment() {
        let path = |explicit: Option<&str>, xdg: Option<&str>, home: Option<&str>| {
            path_from(
                explicit.map(OsString::from),
                xdg.map(OsString::from),
                home.map(OsString::from),
            )
        };
        assert_eq!(
            path(Some("/tmp/x.toml"), Some("/xdg"), Some("/home/a")),
            Some(PathBuf::from("/tmp/x.toml"))
        );
        assert_eq!(
            path(None, Some("/xdg"), Some("/home/a")),
            Some(PathBuf::from("/xdg/nanoscale/config.toml"))
        );
        assert_eq!(
            path(Some(""), Some("relative"), Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/nanoscale/config.toml"))
        );
        assert_eq!(path(None, None, None), None);
    }
}
