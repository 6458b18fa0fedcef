//! Who an app runs as and what it may see: one system user per service
//! (`ns-<service>`), the directories it owns, and the `SandboxSpec` the shim applies
//! (see `runtime/sandbox.rs`).
//!
//! Layout under `<apps>/<service>/` (the service's directory stays root's, 0700, so
//! an app can never rename or replace the agent's own records beside it):
//!
//! | path | owner | the app sees it |
//! |---|---|---|
//! | `releases/<n>/` | `ns-<service>`, 0700 | read-write, its working directory |
//! | `home/` | `ns-<service>`, 0700 | read-write, `$HOME` |
//! | `source.git`, `builds/`, `instances/` | root, 0700 | no |
//!
//! Everything else under the data dir, `/home` and `/root` is hidden; `/tmp`,
//! `/var/tmp` and `/dev/shm` are private to the instance; the rest of the host is
//! read-only.
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_process::{run, CommandSpec};
use sha2::{Digest, Sha256};

use crate::runtime::SandboxSpec;

/// Linux user names longer than this are refused by useradd.
const MAX_USER_NAME: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `ns-<service>`; a service name too long for a user name keeps its first 20
/// characters and gets 8 hex digits of its SHA-256, so names stay unique.
pub fn user_name(service: &str) -> String {
    let name = format!("ns-{service}");
    if name.len() <= MAX_USER_NAME {
        return name;
    }
    let digest = hex::encode(Sha256::digest(service.as_bytes()));
    let head: String = service.chars().take(20).collect();
    format!("ns-{head}-{}", &digest[..8])
}

/// The service's user, created (a system user with its own group, no login shell,
/// no home of its own) when it does not exist yet.
pub async fn ensure_user(service: &str) -> Result<AppUser, String> {
    let name = user_name(service);
    if let Some(user) = lookup(&name)? {
        return Ok(user);
    }
    let args = vec![
        "--system".to_owned(),
        "--user-group".to_owned(),
        "--no-create-home".to_owned(),
        "--home-dir".to_owned(),
        "/nonexistent".to_owned(),
        "--shell".to_owned(),
        "/usr/sbin/nologin".to_owned(),
        "--comment".to_owned(),
        format!("NanoScale app {service}"),
        name.clone(),
    ];
    account_tool("/usr/sbin/useradd", args, &name).await?;
    lookup(&name)?.ok_or_else(|| format!("useradd made no user {name}"))
}

/// Deletes the service's user (and its group), if there is one.
pub async fn remove_user(service: &str) -> Result<(), String> {
    let name = user_name(service);
    if lookup(&name)?.is_none() {
        return Ok(());
    }
    account_tool("/usr/sbin/userdel", vec![name.clone()], &name).await
}

fn lookup(name: &str) -> Result<Option<AppUser>, String> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|error| format!("looking up user {name}: {error}"))?;
    Ok(user.map(|user| AppUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// Runs useradd/userdel, retrying while another one holds the password file lock
/// (exit code 10 for both; several agents on one host, or parallel services).
async fn account_tool(program: &str, args: Vec<String>, name: &str) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        let output = run(CommandSpec {
            program: program.into(),
            args: args.clone(),
            timeout: Duration::from_secs(30),
            ..CommandSpec::default()
        })
        .await
        .map_err(|error| error.to_string())?;
        if output.success {
            return Ok(());
        }
        // Lost a race with another agent creating the same user: that is success.
        if program.ends_with("useradd") && lookup(name)?.is_some() {
            return Ok(());
        }
        attempts += 1;
        let locked = output.stderr.contains("lock") || output.stderr.contains("try again");
        if !locked || attempts >= 20 {
            return Err(format!(
                "{program} {name}: {}",
                nanoscale_process::git::first_line(&output.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
    }
}

/// Gives `dir` and everything under it to `user` (0700 on `dir`), without following
/// symbolic links. Nothing of the app runs while this runs: it is called on a tree
/// the agent just wrote or before the app's first start.
pub fn own_tree(dir: &Path, user: &AppUser) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|error| format!("reading {}: {error}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    chown_tree(dir, user)
        .map_err(|error| format!("giving {} to {}: {error}", dir.display(), user.name))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| format!("chmod {}: {error}", dir.display()))
}

fn chown_tree(path: &Path, user: &AppUser) -> std::io::Result<()> {
    lchown(path, Some(user.uid), Some(user.gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// True when `dir` belongs to `user` already (the cheap check before a start).
fn owned_by(dir: &Path, user: &AppUser) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.uid() == user.uid)
}

/// How one build or instance of `service` runs: its user and sandbox when the agent
/// sandboxes apps, nothing (the agent's own user, the host's view) otherwise.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub sandbox: Option<SandboxSpec>,
}

/// Makes sure `service`'s user exists and owns its release tree and home, and
/// returns what the shim needs to confine the app to them.
pub async fn confine(
    config: &crate::context::AgentConfig,
    service: &str,
    release: &Path,
    home: &Path,
) -> Result<Confinement, String> {
    if !config.sandbox {
        return Ok(Confinement::default());
    }
    let user = ensure_user(service).await?;
    for dir in [release, home] {
        if !owned_by(dir, &user) {
            own_tree(dir, &user)?;
        }
    }
    Ok(Confinement {
        uid: Some(user.uid),
        gid: Some(user.gid),
        sandbox: Some(spec(
            &config.private_dirs(),
            vec![release.to_path_buf(), home.to_path_buf()],
        )),
    })
}

/// The sandbox of an app whose writable directories are `writable`, on a node whose
/// NanoScale state lives in `private` (the data dir and anything else of the agent).
pub fn spec(private: &[PathBuf], writable: Vec<PathBuf>) -> SandboxSpec {
    let mut hidden: Vec<PathBuf> = ["/home", "/root", "/run/user"]
        .iter()
        .map(PathBuf::from)
        .chain(private.iter().cloned())
        .collect();
    hidden.sort();
    hidden.dedup();
    SandboxSpec {
        hidden,
        private_tmp: ["/tmp", "/var/tmp", "/dev/shm"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        writable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_fit_and_stay_unique() {
        assert_eq!(user_name("web"), "ns-web");
        let long = "a".repeat(40);
        let other = format!("{}b", "a".repeat(39));
        assert!(user_name(&long).len() <= MAX_USER_NAME);
        assert_ne!(user_name(&long), user_name(&other));
        assert!(user_name(&long).starts_with("ns-aaaaaaaaaaaaaaaaaaaa-"));
    }
}
