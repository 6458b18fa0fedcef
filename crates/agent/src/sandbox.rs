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
//! | `volumes/<name>/` | `ns-<service>`, 0700 | read-write, at the volume's path in the release (a link) |
//! | `source.git`, `builds/`, `instances/` | the agent, 0700 | no |
//! | `instances/<id>/`, `builds/<n>/` | the helper (root) and the apps directory's group, 02750 (made by `start_shim`) | no |
//!
//! Everything else under the data dir, `/home` and `/root` is hidden; `/tmp`,
//! `/var/tmp` and `/dev/shm` are private to the instance; the rest of the host is
//! read-only.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::context::Supervisor;
use crate::helper::{Answer, Helper, Operation};
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

/// Makes sure `service`'s user exists and owns its release tree, its home and its
/// `volumes` (linked into the release: `volumes.rs`), and returns what the shim
/// needs to confine the app to them. Without sandboxing, the volumes are linked
/// all the same.
pub async fn confine(
    config: &crate::context::AgentConfig,
    service: &str,
    release: &Path,
    home: &Path,
    volumes: &[nanoscale_core::service::VolumeSpec],
) -> Result<Confinement, String> {
    let volume_dirs = crate::volumes::ensure(&config.apps_dir, service, volumes)?;
    if !config.sandbox {
        crate::volumes::link(release, volumes, &volume_dirs, None)?;
        return Ok(Confinement::default());
    }
    // Everything that needs root goes through the privileged helper.
    let helper = Helper::for_agent(config)?;
    let created = helper
        .run(&Operation::CreateAppUser {
            service: service.to_owned(),
        })
        .await?;
    let Answer::User { name, uid, gid } = created else {
        return Err(format!("the helper made no user for {service}"));
    };
    let user = AppUser { name, uid, gid };
    for dir in std::iter::once(home).chain(volume_dirs.iter().map(PathBuf::as_path)) {
        if !owned_by(dir, &user) {
            helper
                .run(&Operation::OwnAppDir {
                    service: service.to_owned(),
                    dir: dir.to_path_buf(),
                    volumes: Vec::new(),
                })
                .await?;
        }
    }
    // The release last, with its volumes' links checked at every start (the app
    // owns the tree and may have removed one).
    if !owned_by(release, &user) || !volumes.is_empty() {
        helper
            .run(&Operation::OwnAppDir {
                service: service.to_owned(),
                dir: release.to_path_buf(),
                volumes: volumes.to_vec(),
            })
            .await?;
    }
    let mut writable = vec![release.to_path_buf(), home.to_path_buf()];
    writable.extend(volume_dirs);
    Ok(Confinement {
        uid: Some(user.uid),
        gid: Some(user.gid),
        sandbox: Some(spec(&config.private_dirs(), writable)),
    })
}

/// Starts `spec` under a shim in `dir`. On a node that sandboxes apps the
/// privileged helper starts it (`start_shim`), after checking that the spec
/// confines the app as [`confine`] does, in a `dir` it makes its own (root's,
/// readable by the agent's group); otherwise the agent starts it itself.
pub async fn launch(
    config: &crate::context::AgentConfig,
    service: &str,
    dir: &Path,
    spec: &crate::runtime::ShimSpec,
) -> Result<crate::runtime::Launched, String> {
    let args: Vec<&str> = config.shim_args.iter().map(String::as_str).collect();
    if !config.sandbox {
        return crate::runtime::launch(&config.shim_program, &args, dir, spec)
            .await
            .map_err(|error| error.to_string());
    }
    // The helper makes `dir` its own and writes the spec there itself.
    let dir = std::path::absolute(dir)
        .map_err(|error| format!("resolving {}: {error}", dir.display()))?;
    let service = service.to_owned();
    let spec = Box::new(spec.clone());
    // Instances (not builds or health checks) run as units where systemd was chosen.
    let as_unit = config.supervisor == Supervisor::Systemd && crate::helper::is_instance_dir(&dir);
    let operation = if as_unit {
        Operation::StartUnit { service, dir, spec }
    } else {
        Operation::StartShim { service, dir, spec }
    };
    let helper = Helper::for_agent(config)?;
    let answer = match helper.run(&operation).await {
        // The service's user was made again since the spec was (another node of
        // this host removed it): confine anew, then once more.
        Err(why) if why.contains(crate::helper::USER_CHANGED) => {
            tracing::warn!(%why, "the app's user changed; confining it again");
            let operation = reconfined(&helper, operation).await?;
            helper.run(&operation).await?
        }
        answer => answer?,
    };
    match answer {
        Answer::Shim { launched } => Ok(launched),
        other => Err(format!("the helper started nothing: {other:?}")),
    }
}

/// `operation` (a start) with the service's user as it is now, and the app's
/// writable directories given to it.
async fn reconfined(helper: &Helper, operation: Operation) -> Result<Operation, String> {
    let (Operation::StartShim {
        service,
        dir,
        mut spec,
    }
    | Operation::StartUnit {
        service,
        dir,
        mut spec,
    }) = operation.clone()
    else {
        return Ok(operation);
    };
    let Answer::User { name, uid, gid } = helper
        .run(&Operation::CreateAppUser {
            service: service.clone(),
        })
        .await?
    else {
        return Err(format!("the helper made no user for {service}"));
    };
    let user = AppUser { name, uid, gid };
    let writable = spec
        .sandbox
        .as_ref()
        .map(|sandbox| sandbox.writable.clone())
        .unwrap_or_default();
    for owned in writable.iter().filter(|dir| !owned_by(dir, &user)) {
        helper
            .run(&Operation::OwnAppDir {
                service: service.clone(),
                dir: owned.clone(),
                volumes: Vec::new(),
            })
            .await?;
    }
    (spec.uid, spec.gid) = (Some(uid), Some(gid));
    Ok(match operation {
        Operation::StartUnit { .. } => Operation::StartUnit { service, dir, spec },
        _ => Operation::StartShim { service, dir, spec },
    })
}

/// What became of the run in `dir`: systemd's word for an instance that runs as
/// a unit, the shim's records otherwise.
pub async fn inspect(dir: &Path) -> crate::runtime::ShimStatus {
    if crate::runtime::unit::is_unit(dir) {
        return crate::runtime::unit::inspect(dir).await;
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::runtime::inspect(&dir))
        .await
        .unwrap_or(crate::runtime::ShimStatus::Gone)
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

/// Stops the run under the shim in `dir` (an instance, its health check or a
/// build of a service under the apps directory), giving the app `grace` after
/// SIGTERM. On a node that sandboxes apps the privileged helper does it
/// (`stop_shim`): the shim is root's; otherwise the agent does it itself.
pub async fn stop(
    config: &crate::context::AgentConfig,
    dir: &Path,
    grace: std::time::Duration,
) -> Result<Option<crate::runtime::ExitInfo>, String> {
    if !config.sandbox {
        return crate::runtime::stop(dir, grace)
            .await
            .map_err(|error| error.to_string());
    }
    let service = service_of(config, dir)?;
    let operation = if crate::runtime::unit::is_unit(dir) {
        Operation::StopUnit {
            service,
            dir: dir.to_path_buf(),
        }
    } else {
        Operation::StopShim {
            service,
            dir: dir.to_path_buf(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        }
    };
    let stopped = Helper::for_agent(config)?.run(&operation).await?;
    match stopped {
        Answer::Stopped { exit } => Ok(exit),
        other => Err(format!("the helper stopped nothing: {other:?}")),
    }
}

/// Deletes `dir` (a service's directory, or one of its releases, builds,
/// instances, health checks or kept logs) and everything in it; nothing when it
/// is gone. On a node that sandboxes apps the privileged helper does it
/// (`remove_app_dir`): the trees are the app's and the shims' directories root's.
pub async fn remove(config: &crate::context::AgentConfig, dir: &Path) -> Result<(), String> {
    if !config.sandbox {
        return match tokio::fs::remove_dir_all(dir).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {}: {error}", dir.display()))
            }
            _ => Ok(()),
        };
    }
    on_dir(config, dir, |service, dir| Operation::RemoveAppDir {
        service,
        dir,
    })
    .await
}

/// Lets the agent's group (the proxy) read the built static release `dir`
/// through the privileged helper (`share_release`).
pub async fn share_release(config: &crate::context::AgentConfig, dir: &Path) -> Result<(), String> {
    on_dir(config, dir, |service, dir| Operation::ShareRelease {
        service,
        dir,
    })
    .await
}

/// Keeps the log of the stopped instance in `dir` through the privileged helper
/// (`keep_log`).
pub async fn keep_log(config: &crate::context::AgentConfig, dir: &Path) -> Result<(), String> {
    on_dir(config, dir, |service, dir| Operation::KeepLog {
        service,
        dir,
    })
    .await
}

/// The helper's operation `make(service, dir)` on `dir` of a service.
async fn on_dir(
    config: &crate::context::AgentConfig,
    dir: &Path,
    make: impl FnOnce(String, PathBuf) -> Operation,
) -> Result<(), String> {
    let operation = make(service_of(config, dir)?, dir.to_path_buf());
    Helper::for_agent(config)?.run(&operation).await.map(|_| ())
}

/// `<apps>/<service>/...`: the service is the first part under the apps dir.
fn service_of(config: &crate::context::AgentConfig, dir: &Path) -> Result<String, String> {
    dir.strip_prefix(&config.apps_dir)
        .ok()
        .and_then(|inside| inside.iter().next())
        .and_then(|part| part.to_str())
        .ok_or_else(|| {
            format!(
                "{} is not under {}",
                dir.display(),
                config.apps_dir.display()
            )
        })
        .map(str::to_owned)
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
