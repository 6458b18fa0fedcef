//! The privileged helper: the one place where the agent does what needs root,
//! as a fixed list of operations whose arguments are checked before anything
//! runs. A root agent calls it in process ([`Helper::run`]); `nanoscale helper
//! --data-dir DIR '<operation as JSON>'` runs the same code as a command, for an
//! agent that runs as an unprivileged user and reaches it through one sudo rule
//! that pins the data dir. Either way the same checks and the same code run.
//!
//! | operation | what | checked |
//! |---|---|---|
//! | `create_app_user {service}` | `useradd --system` of `ns-<service>` | a DNS label |
//! | `remove_app_user {service}` | `userdel` of it, unless a process still runs as it (`in_use`) | a DNS label |
//! | `own_app_dir {service, dir}` | the tree to `ns-<service>`, 0700, walked by descriptor (`helper/tree.rs`): links given as links, never followed, and only entries of the agent's or the app's user (a hard link to another's file is refused) | exactly `<apps>/<service>/releases/<n>`, `<apps>/<service>/home` or `<apps>/<service>/volumes/<name>`, no `..`, no symlink on the way, a directory |
//! | `apply_firewall {plan}` | NanoScale's nft table, from the plan (the helper writes the script itself: no script crosses the boundary) | `FirewallPlan::script` (networks parse, ports are numbers) |
//! | `start_shim {service, dir, spec}` | makes `dir` the helper's own (root's, the apps directory's group, 02750; one already there must be the helper's), writes `spec` into it (0600) and starts the shim, its own copy in `<data>/helper/bin`; the shim enters the sandbox and drops to the app's user before anything of the app runs | `dir` is exactly `<apps>/<service>/instances/<id>[/health]` or `<apps>/<service>/builds/<n>` (no `..`, no symlink); the spec runs as `ns-<service>` (never root), in a release of that service, in exactly the sandbox `sandbox::spec` makes for it (writable: the release, its home and its own volumes only), logging into `dir/log` |
//! | `stop_shim {service, dir, grace_ms}` | stops the run in `dir`: SIGTERM to the shim it records (pid and start time, so a reused pid is never hit), SIGKILL of the app's group after the grace, the app's group itself when the shim is gone; its cgroup removed | `dir` as for `start_shim`; `grace_ms` at most an hour |
//! | `start_unit {service, dir, spec}` | where systemd runs the apps (`--supervisor systemd`): `dir` made as for `start_shim`, with `log/` the agent's (it copies the journal there); the unit rendered by the helper from the spec (`runtime/systemd.rs`: `User=ns-<service>`, `ProtectSystem=strict`, the limits, …) into `/run/systemd/system/nanoscale-<id>.service`, its environment into `dir/unit.env` (0600), the marker `dir/systemd.unit`; `daemon-reload`, `start` | as `start_shim`, and `dir` is an instance's |
//! | `stop_unit {service, dir}` | `systemctl stop` of the instance's unit (named after `dir`'s id, never read from a file), how it ended, then `reset-failed` and the unit and its environment file removed | `dir` is exactly `<apps>/<service>/instances/<id>` |
//! | `remove_app_dir {service, dir}` | deletes the tree, its parent pinned by a descriptor and nothing followed | `dir` is exactly `<apps>/<service>`, or its `releases/<n>`, `builds/<n>`, `instances/<id>[/health]` or `logs/<id>` (no `..`, no symlink); gone already is done |
//! | `keep_log {service, dir}` | moves the stopped instance's `log` to `<apps>/<service>/logs/<id>` and deletes all but the newest kept logs, by descriptor (`runtime::logs::keep_stopped_in`) | `dir` is exactly `<apps>/<service>/instances/<id>` |
//! | `share_release {service, dir}` | a built static release's top directory to the apps directory's group, 0750 (the proxy, as the agent's user, serves it) | `dir` is exactly `<apps>/<service>/releases/<n>` |
//! | `sync_hosts {address, names}` | this node's block in `/etc/hosts` (marked with `<data>/proxy`; the file is fixed), `traffic::sync_hosts_file` | `address` is a loopback address; at most 4096 names, each `<label>[.<label>].svc.internal` |
//! | `create_swap {size_mib}` | `<data>/helper/swapfile`: zeros, 0600, mkswap, swapon (nothing when it is on already) | 16 MiB to 64 GiB, and 512 MiB of disk left beside it; the path is the helper's own |
//! | `remove_swap {}` | swapoff and delete it | a plain file, not a link |
//!
//! Executables are called by absolute path and never through a shell
//! (`nanoscale-process`). Anything else (another operation, an unknown field, a
//! path elsewhere) is refused with the reason and changes nothing.
//!
//! The helper's own files (the shim executable it starts, the firewall script,
//! ufw's saved default, the swap file) live in `<data>/helper`, 0700 and its own
//! (`own_dir` refuses one that is not): nothing an agent can write is run or
//! trusted as root. Not on the list: nginx sites (there is no nginx engine yet).
use std::os::fd::AsRawFd;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_core::firewall::FirewallPlan;
use nanoscale_process::{run, CommandSpec};
use serde::{Deserialize, Serialize};

use crate::sandbox::{user_name, AppUser};

mod swap;
pub(crate) mod tree;

/// One privileged operation, as the agent asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    CreateAppUser {
        service: String,
    },
    RemoveAppUser {
        service: String,
    },
    OwnAppDir {
        service: String,
        dir: PathBuf,
        /// For a release: the service's volumes, linked into it (at their
        /// `path`s, to `<apps>/<service>/volumes/<name>`) before an instance
        /// starts, even when the tree is the app's already.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volumes: Vec<nanoscale_core::service::VolumeSpec>,
    },
    ApplyFirewall {
        plan: FirewallPlan,
    },
    StartShim {
        service: String,
        dir: PathBuf,
        /// What the shim runs, env secrets included: given in the operation (on
        /// the helper's stdin, never its arguments, which every user can read in
        /// /proc), checked, and written by the helper into `dir`, which is its own.
        spec: Box<crate::runtime::ShimSpec>,
    },
    StopShim {
        service: String,
        dir: PathBuf,
        grace_ms: u64,
    },
    /// As `start_shim` for an instance, where systemd runs the node's apps: the
    /// helper renders the unit from the checked spec itself (no unit text crosses
    /// the boundary), writes it and its environment file, and starts it.
    StartUnit {
        service: String,
        dir: PathBuf,
        spec: Box<crate::runtime::ShimSpec>,
    },
    /// Stops the unit of the instance in `dir` and removes it.
    StopUnit {
        service: String,
        dir: PathBuf,
    },
    RemoveAppDir {
        service: String,
        dir: PathBuf,
    },
    KeepLog {
        service: String,
        dir: PathBuf,
    },
    /// A built static release: its top directory to the agent's group, 0750, so
    /// that the proxy (the agent's user) reads the files the build made.
    ShareRelease {
        service: String,
        dir: PathBuf,
    },
    CreateSwap {
        size_mib: u64,
    },
    RemoveSwap {},
    /// This node's block in `/etc/hosts` (marked with `<data>/proxy`): each of
    /// `names` (internal service names) at `address` (a loopback address); no
    /// names removes the block.
    SyncHosts {
        address: std::net::IpAddr,
        names: Vec<String>,
    },
}

impl Operation {
    /// One operation from its JSON object (`{"op": "...", ...}`); anything else,
    /// an array included (serde would take one for a tagged enum), is refused.
    pub fn parse(json: &str) -> Result<Operation, String> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|error| format!("not JSON: {error}"))?;
        if !value.is_object() {
            return Err("an operation is a JSON object: {\"op\": ..., ...}".into());
        }
        serde_json::from_value(value).map_err(|error| format!("not an operation: {error}"))
    }
}

/// What an operation gave back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The app's account (after `create_app_user`).
    User {
        name: String,
        uid: u32,
        gid: u32,
    },
    /// The firewall is in place, kept by `backend`: `nftables` (NanoScale's own
    /// table) or `ufw` (where ufw is active: NanoScale's rules among its own).
    Firewall {
        backend: String,
    },
    /// The shim and the app it started.
    Shim {
        launched: crate::runtime::Launched,
    },
    /// The run in the directory is over; how the app ended, when the shim said.
    Stopped {
        exit: Option<crate::runtime::ExitInfo>,
    },
    /// The swap file is on (`created` is false when it already was).
    Swap {
        path: PathBuf,
        size_mib: u64,
        created: bool,
    },
    /// `remove_app_user` kept the account: a process still runs as it (the
    /// service's own instance still stopping, or another node on this host).
    InUse {
        pid: u32,
    },
    Done,
}

/// The helper for one node's data dir.
#[derive(Debug, Clone)]
pub struct Helper {
    /// Canonical `<data>/apps`.
    apps_dir: PathBuf,
    /// `<data>/apps` as configured (the agent builds its paths from it).
    apps_dir_given: PathBuf,
    /// `<data>/helper`: the helper's own files (`own_dir`).
    own_dir: PathBuf,
    /// What every app's sandbox hides: the data dir, the agent's and the proxy's.
    private: Vec<PathBuf>,
    /// The helper as a command (`AgentConfig::helper_command`); empty: in process.
    command: Vec<String>,
}

impl Helper {
    /// The helper for a node whose apps live in `apps_dir` (`<data>/apps`) and
    /// whose agent state is in `state_dir`. Its own files are in `<data>/helper`.
    pub fn new(apps_dir: &Path, state_dir: &Path) -> Result<Helper, String> {
        let apps_dir_given = apps_dir.to_path_buf();
        let apps_dir = apps_dir
            .canonicalize()
            .map_err(|error| format!("the apps directory {}: {error}", apps_dir.display()))?;
        let data = apps_dir_given
            .parent()
            .unwrap_or(&apps_dir_given)
            .to_path_buf();
        let private = vec![data.clone(), state_dir.to_path_buf(), data.join("proxy")];
        Ok(Helper {
            apps_dir,
            apps_dir_given,
            own_dir: data.join("helper"),
            private,
            command: Vec::new(),
        })
    }

    /// For the agent of `config`. It starts the shim it writes out itself, never
    /// one the agent names: what runs as root is the helper's own file.
    pub fn for_agent(config: &crate::context::AgentConfig) -> Result<Helper, String> {
        std::fs::create_dir_all(&config.apps_dir)
            .map_err(|error| format!("creating {}: {error}", config.apps_dir.display()))?;
        let mut helper = Helper::new(&config.apps_dir, &config.state_dir)?;
        helper.private = config.private_dirs();
        helper.command = config.helper_command.clone();
        Ok(helper)
    }

    /// `<data>/helper`, made 0700 when missing: the shim executable the helper
    /// starts (`bin/`), the firewall script, ufw's saved default and the swap
    /// file. It must be a real directory of the helper's own user (root when
    /// installed) that nobody else may write: an agent that could put a file
    /// there could have it run, or trusted, as root.
    fn own_dir(&self) -> Result<PathBuf, String> {
        use std::os::unix::fs::MetadataExt;
        let dir = &self.own_dir;
        let meta = made_and_mine(dir, "refusing to use it")?;
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{} may be written by others (mode {:o}); refusing to use it",
                dir.display(),
                meta.mode() & 0o7777
            ));
        }
        Ok(dir.clone())
    }

    /// Whether `operation` is allowed, without doing it.
    pub fn check(&self, operation: &Operation) -> Result<(), String> {
        match operation {
            Operation::CreateAppUser { service } | Operation::RemoveAppUser { service } => {
                check_service(service)
            }
            Operation::OwnAppDir {
                service,
                dir,
                volumes,
            } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::Owned)?;
                if volumes.is_empty() {
                    return Ok(());
                }
                let release = self.apps_dir_given.join(service).join("releases");
                let in_release = dir.parent() == Some(release.as_path())
                    || dir.parent() == Some(self.apps_dir.join(service).join("releases").as_path());
                if !in_release {
                    return Err(format!(
                        "{}: volumes are linked into a release only",
                        dir.display()
                    ));
                }
                nanoscale_core::service::validate_volumes(volumes)
                    .map_err(|error| format!("{}: {}", error.field, error.message))
            }
            Operation::StartShim { service, dir, spec } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::NewShim)?;
                crate::runtime::check_spec(spec).map_err(|error| error.to_string())?;
                self.check_confinement(service, dir, spec)
            }
            Operation::StartUnit { service, dir, spec } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::NewShim)?;
                if !is_instance_dir(dir) {
                    return Err(format!("{}: only instances run as units", dir.display()));
                }
                crate::runtime::check_spec(spec).map_err(|error| error.to_string())?;
                self.check_confinement(service, dir, spec)
            }
            Operation::StopUnit { service, dir } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::Instance)
            }
            Operation::StopShim {
                service,
                dir,
                grace_ms,
            } => {
                check_service(service)?;
                if *grace_ms > MAX_GRACE_MS {
                    return Err(format!(
                        "grace_ms must be at most {MAX_GRACE_MS} (an hour), not {grace_ms}"
                    ));
                }
                self.check_app_dir(service, dir, Shape::Shim)
            }
            Operation::RemoveAppDir { service, dir } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::Removable)
            }
            Operation::KeepLog { service, dir } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::Instance)
            }
            Operation::ShareRelease { service, dir } => {
                check_service(service)?;
                self.check_app_dir(service, dir, Shape::Release)
            }
            Operation::ApplyFirewall { plan } => plan.script().map(|_| ()),
            Operation::CreateSwap { size_mib } => swap::check_size(*size_mib),
            Operation::RemoveSwap {} => Ok(()),
            Operation::SyncHosts { address, names } => check_hosts(address, names),
        }
    }

    /// Checks `operation`, then does it: here, or through the helper command
    /// when the agent has one (which checks it again: it trusts nothing of ours).
    pub async fn run(&self, operation: &Operation) -> Result<Answer, String> {
        self.check(operation)?;
        if !self.command.is_empty() {
            return self.run_command(operation).await;
        }
        match operation {
            Operation::CreateAppUser { service } => {
                let user = create_user(service).await?;
                Ok(Answer::User {
                    name: user.name,
                    uid: user.uid,
                    gid: user.gid,
                })
            }
            Operation::RemoveAppUser { service } => remove_user(service).await,
            Operation::OwnAppDir {
                service,
                dir,
                volumes,
            } => {
                let user = lookup(&user_name(service))?
                    .ok_or_else(|| format!("{} does not exist yet", user_name(service)))?;
                let (agent, _) = self.agent_account()?;
                let dir_fd = tree::open_dir(&self.apps_dir, &self.parts(dir)?)?;
                // The links' targets are the helper's to name, not the agent's.
                let targets: Vec<PathBuf> = volumes
                    .iter()
                    .map(|volume| crate::volumes::dir(&self.apps_dir_given, service, &volume.name))
                    .collect();
                crate::volumes::link_at(&dir_fd, volumes, &targets, Some((user.uid, user.gid)))?;
                let owner = nix::sys::stat::fstat(&dir_fd)
                    .map_err(|errno| format!("reading {}: {errno}", dir.display()))?
                    .st_uid;
                if owner == user.uid {
                    return Ok(Answer::Done);
                }
                tree::own(dir_fd, user.uid, user.gid, &[agent, user.uid])
                    .map_err(|why| format!("giving {} to {}: {why}", dir.display(), user.name))
                    .map(|()| Answer::Done)
            }
            Operation::RemoveAppDir { dir, .. } => {
                // A release tree can be large: off the async threads.
                let (helper, owned) = (self.clone(), dir.clone());
                tokio::task::spawn_blocking(move || helper.remove_app_dir(&owned))
                    .await
                    .map_err(|error| format!("removing {}: {error}", dir.display()))?
            }
            Operation::ShareRelease { dir, .. } => {
                use nix::unistd::{fchownat, Gid};
                let (_, group) = self.agent_account()?;
                let release = tree::open_dir(&self.apps_dir, &self.parts(dir)?)?;
                fchownat(
                    &release,
                    "",
                    None,
                    Some(Gid::from_raw(group)),
                    nix::fcntl::AtFlags::AT_EMPTY_PATH,
                )
                .map_err(|errno| format!("giving {} its group: {errno}", dir.display()))?;
                nix::sys::stat::fchmod(&release, nix::sys::stat::Mode::from_bits_truncate(0o750))
                    .map_err(|errno| format!("chmod {}: {errno}", dir.display()))?;
                Ok(Answer::Done)
            }
            Operation::KeepLog { service, dir } => {
                let id = dir
                    .file_name()
                    .and_then(|id| id.to_str())
                    .ok_or_else(|| format!("{}: no instance id", dir.display()))?;
                let service_dir = tree::open_dir(&self.apps_dir, &[service])?;
                crate::runtime::logs::keep_stopped_in(&service_dir, id)
                    .map(|()| Answer::Done)
                    .map_err(|why| format!("keeping the log of {}: {why}", dir.display()))
            }
            Operation::ApplyFirewall { plan } => {
                let backend = match ufw_active().await {
                    Some(ufw) => {
                        apply_ufw(&ufw, &self.own_dir()?, plan).await?;
                        "ufw"
                    }
                    None => {
                        apply_firewall(&self.own_dir()?, plan).await?;
                        "nftables"
                    }
                };
                Ok(Answer::Firewall {
                    backend: backend.into(),
                })
            }
            Operation::StartShim { dir, spec, .. } => {
                let own = self.own_dir()?;
                let dir = self.shim_dir(dir)?;
                let dir = crate::runtime::prepare(&dir, spec)
                    .await
                    .map_err(|error| error.to_string())?;
                let exe =
                    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
                let (program, args) = crate::runtime::embedded::command(&own, &exe);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                crate::runtime::start_prepared(&program, &args, &dir)
                    .await
                    .map(|launched| Answer::Shim { launched })
                    .map_err(|error| error.to_string())
            }
            Operation::StopShim { dir, grace_ms, .. } => {
                // The records read (which pid to signal) are the ones in the
                // directory as opened here, which must be the helper's.
                let Some(pinned) = self.pinned_shim_dir(dir)? else {
                    return Ok(Answer::Stopped { exit: None });
                };
                let path = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
                crate::runtime::stop(&path, Duration::from_millis(*grace_ms))
                    .await
                    .map(|exit| Answer::Stopped { exit })
                    .map_err(|error| error.to_string())
            }
            Operation::StartUnit { service, dir, spec } => {
                self.start_unit(service, dir, spec).await
            }
            Operation::StopUnit { dir, .. } => stop_unit(dir).await,
            Operation::CreateSwap { size_mib } => {
                let own = self.own_dir()?;
                let created = swap::create(&own, *size_mib).await?;
                Ok(Answer::Swap {
                    path: swap::path(&own),
                    size_mib: *size_mib,
                    created,
                })
            }
            Operation::SyncHosts { address, names } => {
                let marker = self.data_dir().join("proxy").display().to_string();
                crate::traffic::sync_hosts_file(Path::new(HOSTS), &marker, *address, names)
                    .map(|_| Answer::Done)
                    .map_err(|error| format!("updating {HOSTS}: {error}"))
            }
            Operation::RemoveSwap {} => swap::remove(&self.own_dir()?).await.map(|()| Answer::Done),
        }
    }

    /// `operation` through the helper command: as JSON on its stdin (a spec's
    /// env never shows in a command line), the answer as JSON on its stdout.
    async fn run_command(&self, operation: &Operation) -> Result<Answer, String> {
        let (program, args) = self.command.split_first().ok_or("no helper command")?;
        let json = serde_json::to_vec(operation)
            .map_err(|error| format!("encoding the operation: {error}"))?;
        // A swap file of many GiB is written out in full before it is switched on.
        let timeout = match operation {
            Operation::CreateSwap { .. } => Duration::from_secs(30 * 60),
            _ => Duration::from_secs(120),
        };
        let output = run(CommandSpec {
            program: program.into(),
            args: args.to_vec(),
            timeout,
            stdin: Some(json),
            ..CommandSpec::default()
        })
        .await
        .map_err(|error| format!("the privileged helper: {error}"))?;
        if !output.success {
            let said = output.stderr.trim();
            let said = said.strip_prefix("error: ").unwrap_or(said);
            return Err(if said.is_empty() {
                format!("the privileged helper ({program}) failed and said nothing")
            } else {
                said.to_owned()
            });
        }
        serde_json::from_str(output.stdout.trim())
            .map_err(|error| format!("the privileged helper's answer: {error}"))
    }

    /// The shim directory `dir` (checked), opened by descriptor; it must be the
    /// helper's alone, or its records (which process to signal) could be anyone's.
    /// `None` when it is gone.
    fn pinned_shim_dir(&self, dir: &Path) -> Result<Option<std::os::fd::OwnedFd>, String> {
        let opened = match tree::open_dir(&self.apps_dir, &self.parts(dir)?) {
            Ok(opened) => opened,
            Err(_) if !dir.exists() => return Ok(None),
            Err(why) => return Err(why),
        };
        let stat = nix::sys::stat::fstat(&opened)
            .map_err(|errno| format!("reading {}: {errno}", dir.display()))?;
        let me = nix::unistd::geteuid().as_raw();
        if stat.st_uid != me || stat.st_mode & 0o022 != 0 {
            return Err(format!(
                "{} is not the helper's alone (uid {}, mode {:o}); refusing to trust its records",
                dir.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            ));
        }
        Ok(Some(opened))
    }

    /// `remove_app_dir`, once checked.
    fn remove_app_dir(&self, dir: &Path) -> Result<Answer, String> {
        let parts = self.parts(dir)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(format!("{}: nothing to remove", dir.display()));
        };
        let parent = match tree::open_dir(&self.apps_dir, parents) {
            Ok(parent) => parent,
            // Its parent is gone already: so is it.
            Err(_) if !self.apps_dir.join(parents.join("/")).exists() => return Ok(Answer::Done),
            Err(why) => return Err(why),
        };
        tree::remove(&parent, name)
            .map_err(|why| format!("{}: {why}", dir.display()))
            .map(|()| Answer::Done)
    }

    /// The parts of `dir` (checked) below the apps directory.
    fn parts<'a>(&self, dir: &'a Path) -> Result<Vec<&'a str>, String> {
        let inside = dir
            .strip_prefix(&self.apps_dir)
            .or_else(|_| dir.strip_prefix(&self.apps_dir_given))
            .map_err(|_| format!("{} is not under {}", dir.display(), self.apps_dir.display()))?;
        inside
            .components()
            .map(|part| {
                part.as_os_str()
                    .to_str()
                    .ok_or_else(|| format!("{} is not UTF-8", dir.display()))
            })
            .collect()
    }

    /// `<data>`, the parent of the apps directory.
    fn data_dir(&self) -> &Path {
        self.apps_dir_given.parent().unwrap_or(&self.apps_dir_given)
    }

    /// The agent's user and group: the apps directory's owner and group (root's,
    /// for a root agent).
    fn agent_account(&self) -> Result<(u32, u32), String> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.apps_dir)
            .map(|meta| (meta.uid(), meta.gid()))
            .map_err(|error| format!("reading {}: {error}", self.apps_dir.display()))
    }

    /// `dir` must be `<apps>/<service>/releases/<n>` or `<apps>/<service>/home`
    /// as written (absolute, nothing like `..`), and no part of it under the
    /// apps directory may be a symlink: lchown does not follow the last one, and
    /// none before it may lead elsewhere.
    fn check_app_dir(&self, service: &str, dir: &Path, shape: Shape) -> Result<(), String> {
        let refuse = |why: &str| Err(format!("{}: {why}", dir.display()));
        if !dir.is_absolute() {
            return refuse("must be an absolute path");
        }
        // On the text: `Path::components` drops a `.` in the middle silently.
        let Some(text) = dir.to_str() else {
            return refuse("is not UTF-8");
        };
        if text.split('/').any(|part| part == "." || part == "..") {
            return refuse("must not contain '.' or '..'");
        }
        let inside = dir
            .strip_prefix(&self.apps_dir)
            .or_else(|_| dir.strip_prefix(&self.apps_dir_given));
        let Ok(inside) = inside else {
            return refuse(&format!("is not under {}", self.apps_dir.display()));
        };
        let parts: Vec<&str> = inside
            .components()
            .map(|c| c.as_os_str().to_str().unwrap_or("\u{0}"))
            .collect();
        let number =
            |n: &str| !n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit());
        let shaped = match (shape, parts.as_slice()) {
            (Shape::Owned, [owner, "home"]) => *owner == service,
            (Shape::Owned, [owner, "releases", n]) => *owner == service && number(n),
            (Shape::Owned, [owner, "volumes", name]) => {
                *owner == service && nanoscale_core::is_dns_label(name)
            }
            (Shape::Shim | Shape::NewShim, [owner, "builds", n]) => *owner == service && number(n),
            (Shape::Removable, [owner]) => *owner == service,
            (Shape::Release, [owner, "releases", n]) => *owner == service && number(n),
            (Shape::Instance, [owner, "instances", id]) => {
                *owner == service && crate::runtime::valid_id(id)
            }
            (Shape::Removable, [owner, "releases" | "builds", n]) => *owner == service && number(n),
            (Shape::Removable, [owner, "instances" | "logs", id])
            | (Shape::Removable, [owner, "instances", id, "health"]) => {
                *owner == service && crate::runtime::valid_id(id)
            }
            (Shape::Shim | Shape::NewShim, [owner, "instances", id])
            | (Shape::Shim | Shape::NewShim, [owner, "instances", id, "health"]) => {
                *owner == service && crate::runtime::valid_id(id)
            }
            _ => false,
        };
        if !shaped {
            return refuse(&format!(
                "is not {}",
                shape.describe(&self.apps_dir, service)
            ));
        }
        let mut walked = self.apps_dir.clone();
        let last = parts.len();
        for (index, part) in parts.into_iter().enumerate() {
            walked.push(part);
            let meta = match std::fs::symlink_metadata(&walked) {
                // A shim's directory is made by the helper itself (`shim_dir`).
                // What is to be removed may be gone already.
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound
                        && (matches!(shape, Shape::Removable)
                            || (index + 1 == last && matches!(shape, Shape::NewShim))) =>
                {
                    break;
                }
                result => result.map_err(|error| format!("{}: {error}", walked.display()))?,
            };
            if meta.file_type().is_symlink() {
                return refuse(&format!("{} is a symbolic link", walked.display()));
            }
            if !meta.is_dir() {
                return refuse(&format!("{} is not a directory", walked.display()));
            }
        }
        Ok(())
    }
}

impl Helper {
    /// `dir` (checked: an instance, its health check or a build) as the helper's
    /// own: made when missing, owned by the helper's user and by the group of the
    /// apps directory (the agent's, once it is not root), mode 02750. The agent can
    /// then read what the shim writes there (logs, pid and exit records, which take
    /// the directory's group) but change none of it: no swapped `shim.json`, no
    /// `shim.pid` pointed at another process. A directory already there must be
    /// the helper's: one the agent made could hold links the root shim would follow.
    fn shim_dir(&self, dir: &Path) -> Result<PathBuf, String> {
        let (_, group) = self.agent_account()?;
        made_and_mine(
            dir,
            "a shim runs only in a directory the helper made; remove it and start again",
        )?;
        let me = nix::unistd::geteuid().as_raw();
        lchown(dir, Some(me), Some(group))
            .map_err(|error| format!("chown {}: {error}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2750))
            .map_err(|error| format!("chmod {}: {error}", dir.display()))?;
        Ok(dir.to_path_buf())
    }

    /// A shim's spec must confine the app exactly as the agent's own sandboxing
    /// does: as the service's user, in one of its releases, in the sandbox made
    /// for that release, with its log in `dir`. Nothing else is started as root.
    fn check_confinement(
        &self,
        service: &str,
        dir: &Path,
        spec: &crate::runtime::ShimSpec,
    ) -> Result<(), String> {
        let refuse = |why: String| Err(format!("shim spec in {}: {why}", dir.display()));
        let name = user_name(service);
        let Some(user) = lookup(&name)? else {
            return refuse(format!("{name} does not exist yet"));
        };
        if user.uid == 0 || user.gid == 0 {
            return refuse(format!(
                "{name} is root's; refusing to start anything as it"
            ));
        }
        if spec.uid != Some(user.uid) || spec.gid != Some(user.gid) {
            return refuse(format!(
                "{USER_CHANGED} {name} ({}:{}), not {:?}:{:?}",
                user.uid, user.gid, spec.uid, spec.gid
            ));
        }
        // The id names the cgroup the shim joins and, on exit, empties: it must be
        // the one this directory implies, or one app's shim could take over (and
        // kill) another's group.
        let names: Vec<&str> = dir
            .iter()
            .rev()
            .take(3)
            .map(|part| part.to_str().unwrap_or(""))
            .collect();
        let id = match names.as_slice() {
            ["health", id, "instances", ..] => format!("{id}-health"),
            [n, "builds", ..] => format!("build-{service}-{n}"),
            [id, "instances", ..] => (*id).to_owned(),
            _ => String::new(),
        };
        if spec.id != id {
            return refuse(format!("its id must be {id:?}, not {:?}", spec.id));
        }
        // A fork bomb stops at the pids limit, and the log cannot fill the disk.
        if spec.limits.pids.is_none_or(|pids| pids == 0) {
            return refuse("it must have a pids limit".into());
        }
        if spec.log_max_bytes > 1 << 30 || spec.log_keep > 100 {
            return refuse("its log may keep at most 100 files of 1 GiB".into());
        }
        let in_a_release = spec
            .cwd
            .parent()
            .is_some_and(|parent| parent == self.apps_dir_given.join(service).join("releases"));
        if !in_a_release {
            return refuse(format!(
                "must run in a release of {service}, not {}",
                spec.cwd.display()
            ));
        }
        self.check_app_dir(service, &spec.cwd, Shape::Owned)?;
        let home = self.apps_dir_given.join(service).join("home");
        // Beyond the release and home, only the service's own volumes.
        let volumes_dir = self.apps_dir_given.join(service).join("volumes");
        let mut writable = vec![spec.cwd.clone(), home];
        if let Some(sandbox) = &spec.sandbox {
            for extra in sandbox.writable.iter().skip(2) {
                if extra.parent() != Some(volumes_dir.as_path()) {
                    return refuse(format!(
                        "may write only its release, its home and its volumes, not {}",
                        extra.display()
                    ));
                }
                self.check_app_dir(service, extra, Shape::Owned)?;
                writable.push(extra.clone());
            }
        }
        let expected = crate::sandbox::spec(&self.private, writable);
        if spec.sandbox.as_ref() != Some(&expected) {
            return refuse("its sandbox must be the one made for the app".into());
        }
        // `<dir>/log`, as written: the helper makes `dir` and the shim the log.
        if spec.log_dir != dir.join("log") {
            return refuse(format!(
                "must log into {}/log, not {}",
                dir.display(),
                spec.log_dir.display()
            ));
        }
        Ok(())
    }
}

impl Helper {
    /// `start_unit`, once checked: the directory as for a shim, the log
    /// directory the agent's (it copies the journal there), the environment file
    /// root's alone, the unit in `runtime::unit::UNIT_DIR`, then started. A unit
    /// that does not start is removed again.
    async fn start_unit(
        &self,
        service: &str,
        dir: &Path,
        spec: &crate::runtime::ShimSpec,
    ) -> Result<Answer, String> {
        use crate::runtime::{systemd, unit, write_atomic};
        let dir = self.shim_dir(dir)?;
        let name = systemd::unit_name(&spec.id);
        let state = unit::show(&name).await?;
        if state.load == "loaded" && matches!(state.active.as_str(), "active" | "activating") {
            return Err(format!("{name} is running already"));
        }
        let environment = dir.join(unit::ENVIRONMENT_FILE);
        let rendered = systemd::render(spec, &user_name(service), &environment)?;
        let log = dir.join("log");
        made_and_mine(&log, "refusing to use it")?;
        let (agent, group) = self.agent_account()?;
        lchown(&log, Some(agent), Some(group))
            .map_err(|error| format!("chown {}: {error}", log.display()))?;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o2750))
            .map_err(|error| format!("chmod {}: {error}", log.display()))?;
        let write = |path: &Path, text: &str, mode: u32| {
            write_atomic(path, text.as_bytes(), mode)
                .map_err(|error| format!("writing {}: {error}", path.display()))
        };
        write(&environment, &rendered.environment, 0o600)?;
        let unit_file = Path::new(unit::UNIT_DIR).join(&name);
        write(&unit_file, &rendered.unit, 0o644)?;
        write(&dir.join(unit::MARKER), &format!("{name}\n"), 0o644)?;
        let started = async {
            unit::systemctl_run(&["daemon-reload"]).await?;
            // `Type=exec`: this returns once the app's program runs, or fails
            // when it could not be started (no such user, a bad directory).
            unit::systemctl_run(&["start", &name]).await?;
            unit::show(&name).await
        }
        .await;
        match started {
            Ok(state) if state.main_pid > 0 => {
                let process = crate::runtime::ProcRef::of(state.main_pid).unwrap_or(
                    crate::runtime::ProcRef {
                        pid: state.main_pid,
                        start_time: 0,
                    },
                );
                Ok(Answer::Shim {
                    launched: crate::runtime::Launched {
                        shim: process,
                        app: process,
                    },
                })
            }
            outcome => {
                let why = match outcome {
                    Err(why) => why,
                    Ok(state) => format!(
                        "{name} ended at once ({})",
                        crate::executor::describe(&unit::exit_of(&state, crate::runtime::now_ms()))
                    ),
                };
                let _ = remove_unit(&dir, &name).await;
                Err(why)
            }
        }
    }
}

/// `stop_unit`: stops the instance's unit (systemd gives the app the unit's
/// `TimeoutStopSec` after SIGTERM, then kills its cgroup), reads how it ended,
/// and removes the unit. Its name comes from the checked directory's.
async fn stop_unit(dir: &Path) -> Result<Answer, String> {
    use crate::runtime::{systemd, unit};
    let id = dir
        .file_name()
        .and_then(|id| id.to_str())
        .ok_or_else(|| format!("{}: no instance id", dir.display()))?;
    let name = systemd::unit_name(id);
    let state = unit::show(&name).await?;
    if state.load != "loaded" {
        remove_unit(dir, &name).await?;
        return Ok(Answer::Stopped { exit: None });
    }
    unit::systemctl_run(&["stop", &name]).await?;
    let state = unit::show(&name).await?;
    let exit = (state.exec_code != 0).then(|| unit::exit_of(&state, crate::runtime::now_ms()));
    remove_unit(dir, &name).await?;
    Ok(Answer::Stopped { exit })
}

/// Forgets the unit `name` of the instance in `dir`: its failed state, its file
/// and its environment file (the marker stays until the directory goes, so the
/// agent still reads the instance as a unit: systemd then says it is gone).
async fn remove_unit(dir: &Path, name: &str) -> Result<(), String> {
    use crate::runtime::unit;
    let _ = unit::systemctl_run(&["reset-failed", name]).await;
    for file in [
        Path::new(unit::UNIT_DIR).join(name),
        dir.join(unit::ENVIRONMENT_FILE),
    ] {
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("removing {}: {error}", file.display()))
            }
            _ => {}
        }
    }
    unit::systemctl_run(&["daemon-reload"]).await.map(|_| ())
}

/// `<apps>/<service>/instances/<id>`, not a build or a health check.
pub(crate) fn is_instance_dir(dir: &Path) -> bool {
    dir.parent()
        .and_then(Path::file_name)
        .is_some_and(|parent| parent == "instances")
}

/// Makes the directory `dir` (0700) when it is missing, and checks that it is a
/// directory (not a link) of the helper's own user; `otherwise` ends the refusal.
fn made_and_mine(dir: &Path, otherwise: &str) -> Result<std::fs::Metadata, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(format!("creating {}: {error}", dir.display()))
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|error| format!("reading {}: {error}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to the helper's ({me}); {otherwise}",
            dir.display(),
            meta.uid()
        ));
    }
    Ok(meta)
}

/// How a refusal of a spec whose uid is not (or no longer) its service's user's
/// begins: the agent then confines the app anew and tries once more
/// (`sandbox::launch`).
pub const USER_CHANGED: &str = "must run as";

/// The longest grace period a stop may give an app.
const MAX_GRACE_MS: u64 = 3_600_000;

/// The directories an operation may name.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// What an app may own: its home and its releases.
    Owned,
    /// Where a shim runs: an instance, its health check, a build.
    Shim,
    /// The same, where the helper may still have to make the last part.
    NewShim,
    /// What the agent may have the helper delete: a service's whole directory, a
    /// release, a build, an instance, its health check, a kept log.
    Removable,
    /// An instance's directory.
    Instance,
    /// A release.
    Release,
}

impl Shape {
    fn describe(self, apps: &Path, service: &str) -> String {
        let apps = apps.display();
        match self {
            Shape::Owned => format!(
                "{apps}/{service}/home, {apps}/{service}/releases/<n> or {apps}/{service}/volumes/<name>"
            ),
            Shape::Instance => format!("{apps}/{service}/instances/<id>"),
            Shape::Release => format!("{apps}/{service}/releases/<n>"),
            Shape::Removable => format!(
                "{apps}/{service} or its releases/<n>, builds/<n>, instances/<id>[/health] or logs/<id>"
            ),
            Shape::Shim | Shape::NewShim => {
                format!("{apps}/{service}/instances/<id>[/health] or {apps}/{service}/builds/<n>")
            }
        }
    }
}

/// The hosts file `sync_hosts` keeps a block in: always this one.
pub const HOSTS: &str = "/etc/hosts";

/// Internal names the hosts block may hold, at most.
const MAX_HOSTS_NAMES: usize = 4096;

/// A loopback address, and names that are internal service names
/// (`<label>[.<label>].svc.internal`): nothing else may reach /etc/hosts.
fn check_hosts(address: &std::net::IpAddr, names: &[String]) -> Result<(), String> {
    if !address.is_loopback() {
        return Err(format!("address {address} is not a loopback address"));
    }
    if names.len() > MAX_HOSTS_NAMES {
        return Err(format!("names: at most {MAX_HOSTS_NAMES}"));
    }
    for name in names {
        let labels = name
            .strip_suffix(".svc.internal")
            .map(|head| head.split('.'));
        let valid = name.len() <= 253
            && labels.is_some_and(|mut labels| labels.all(nanoscale_core::is_dns_label));
        if !valid {
            return Err(format!(
                "names: {name:?} is not an internal service name (<service>[.<project>].svc.internal)"
            ));
        }
    }
    Ok(())
}

fn check_service(service: &str) -> Result<(), String> {
    if nanoscale_core::is_dns_label(service) {
        Ok(())
    } else {
        Err(format!("{service:?} is not a service name (a DNS label)"))
    }
}

/// The service's user, created (a system user with its own group, no login shell,
/// no home of its own) when it does not exist yet.
async fn create_user(service: &str) -> Result<AppUser, String> {
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

/// Deletes the service's user (and its group), if there is one and no process
/// runs as it: deleting the account of a running app (or of one about to start,
/// on another node of this host, which shares the host's accounts) would leave
/// its files to whoever gets the uid next.
async fn remove_user(service: &str) -> Result<Answer, String> {
    let name = user_name(service);
    let Some(user) = lookup(&name)? else {
        return Ok(Answer::Done);
    };
    if let Some(pid) = process_of(user.uid) {
        return Ok(Answer::InUse { pid });
    }
    account_tool("/usr/sbin/userdel", vec![name.clone()], &name).await?;
    Ok(Answer::Done)
}

/// A process whose real, effective, saved or filesystem uid is `uid`.
fn process_of(uid: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
        uids.split_whitespace()
            .any(|field| field.parse() == Ok(uid))
            .then_some(pid)
    })
}

/// The account `name`, if it exists.
pub fn lookup(name: &str) -> Result<Option<AppUser>, String> {
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

/// nft lives in /usr/sbin on Debian and Ubuntu.
pub fn nft() -> Option<PathBuf> {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Writes the plan's script and applies it as one nft transaction, after a dry run.
async fn apply_firewall(own_dir: &Path, plan: &FirewallPlan) -> Result<(), String> {
    let nft = nft().ok_or("nftables (nft) is not installed")?;
    let script = plan.script()?;
    let file = own_dir.join("firewall.nft");
    crate::runtime::write_atomic(&file, script.as_bytes(), 0o600)
        .map_err(|error| format!("writing {}: {error}", file.display()))?;
    let path = file.display().to_string();
    for args in [["-c", "-f", &path].as_slice(), &["-f", &path]] {
        tool(&nft, args, Vec::new()).await?;
    }
    Ok(())
}

/// Runs a firewall tool; its stdout, or the first line of what it said went
/// wrong, named by the tool and its arguments.
async fn tool(program: &Path, args: &[&str], env: Vec<(String, String)>) -> Result<String, String> {
    let output = run(CommandSpec {
        program: program.to_path_buf(),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        env,
        timeout: Duration::from_secs(30),
        ..CommandSpec::default()
    })
    .await
    .map_err(|error| error.to_string())?;
    if !output.success {
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        return Err(format!(
            "{name} {}: {}",
            args.join(" "),
            nanoscale_process::git::first_line(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

/// ufw, when it is installed and active on this host (then NanoScale's rules go
/// into ufw, which would otherwise filter beside NanoScale's table).
async fn ufw_active() -> Option<PathBuf> {
    let ufw = ["/usr/sbin/ufw", "/sbin/ufw"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())?;
    let output = ufw_run(&ufw, &["status"]).await.ok()?;
    output
        .lines()
        .next()
        .is_some_and(|line| line.trim() == "Status: active")
        .then_some(ufw)
}

async fn ufw_run(ufw: &Path, args: &[&str]) -> Result<String, String> {
    // ufw is a Python script that runs iptables and sysctl by name: a fixed
    // system PATH and nothing else of the caller's environment.
    let path = (
        "PATH".to_owned(),
        "/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    );
    tool(ufw, args, vec![path]).await
}

/// Every ufw rule NanoScale adds carries a comment that names it
/// (`nanoscale tcp/8080`, `nanoscale ssh 10.0.0.0/8`): that is how its own rules
/// are told from the operator's, which are never touched.
const UFW_MARK: &str = "nanoscale ";

/// The ufw rules of `plan`: (comment, the arguments that add the rule).
fn ufw_rules(plan: &FirewallPlan) -> Result<Vec<(String, Vec<String>)>, String> {
    plan.script()?; // the same checks as for nftables: networks parse, ports are numbers
    let mut rules = Vec::new();
    if plan.mode != nanoscale_core::desired::SecurityMode::B {
        return Ok(rules);
    }
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let mut ports = plan.open_tcp_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    for port in ports.into_iter().filter(|port| *port != 0) {
        let comment = format!("{UFW_MARK}tcp/{port}");
        let args = owned(&["allow", &format!("{port}/tcp"), "comment", &comment]);
        rules.push((comment, args));
    }
    let ssh = nanoscale_core::firewall::SSH_PORT.to_string();
    if plan.ssh_from.is_empty() {
        let comment = format!("{UFW_MARK}ssh any");
        let args = owned(&["allow", &format!("{ssh}/tcp"), "comment", &comment]);
        rules.push((comment, args));
    }
    for network in &plan.ssh_from {
        let comment = format!("{UFW_MARK}ssh {network}");
        let args = owned(&[
            "allow", "from", network, "to", "any", "port", &ssh, "proto", "tcp", "comment",
            &comment,
        ]);
        rules.push((comment, args));
    }
    Ok(rules)
}

/// NanoScale's rules in `ufw status numbered`: (number, comment), in order.
fn ufw_marked(status: &str) -> Vec<(u32, String)> {
    status
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('[')?;
            let (number, rest) = rest.split_once(']')?;
            let number = number.trim().parse().ok()?;
            let (_, comment) = rest.split_once(" # ")?;
            let comment = comment.trim();
            comment
                .starts_with(UFW_MARK)
                .then(|| (number, comment.to_owned()))
        })
        .collect()
}

/// ufw's default for incoming traffic (`deny`, `allow` or `reject`).
fn ufw_default_incoming(verbose: &str) -> Option<String> {
    let line = verbose.lines().find(|l| l.starts_with("Default:"))?;
    let (_, rest) = line.split_once(':')?;
    rest.split(',')
        .find(|part| part.contains("(incoming)"))
        .and_then(|part| part.split_whitespace().next())
        .map(str::to_owned)
}

/// Brings ufw's NanoScale rules to `plan`: adds what is missing (ufw skips a rule
/// it has), deletes what is no longer wanted (highest number first, so the
/// numbers stay valid), and denies incoming by default in B and C. ufw's default
/// as it was is kept in `<data>/helper/ufw-default-incoming` and restored in mode A.
async fn apply_ufw(ufw: &Path, own_dir: &Path, plan: &FirewallPlan) -> Result<(), String> {
    let rules = ufw_rules(plan)?;
    let saved = own_dir.join("ufw-default-incoming");
    if plan.mode == nanoscale_core::desired::SecurityMode::A {
        if let Ok(previous) = std::fs::read_to_string(&saved) {
            let previous = previous.trim();
            if matches!(previous, "allow" | "deny" | "reject") {
                ufw_run(ufw, &["default", previous, "incoming"]).await?;
            }
            let _ = std::fs::remove_file(&saved);
        }
    } else {
        let verbose = ufw_run(ufw, &["status", "verbose"]).await?;
        let current = ufw_default_incoming(&verbose).unwrap_or_else(|| "deny".into());
        if current != "deny" {
            if !saved.exists() {
                crate::runtime::write_atomic(&saved, current.as_bytes(), 0o600)
                    .map_err(|error| format!("writing {}: {error}", saved.display()))?;
            }
            ufw_run(ufw, &["default", "deny", "incoming"]).await?;
        }
    }
    for (comment, args) in &rules {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ufw_run(ufw, &args)
            .await
            .map_err(|error| format!("adding {comment}: {error}"))?;
    }
    let wanted: Vec<&str> = rules.iter().map(|(comment, _)| comment.as_str()).collect();
    let numbered = ufw_run(ufw, &["status", "numbered"]).await?;
    let mut stale: Vec<u32> = ufw_marked(&numbered)
        .into_iter()
        .filter(|(_, comment)| !wanted.contains(&comment.as_str()))
        .map(|(number, _)| number)
        .collect();
    stale.sort_unstable_by(|a, b| b.cmp(a));
    for number in stale {
        ufw_run(ufw, &["--force", "delete", &number.to_string()]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoscale_core::desired::SecurityMode;

    fn node() -> (tempfile::TempDir, Helper) {
        let temp = tempfile::tempdir().expect("tempdir");
        for dir in [
            "apps/web/releases/3",
            "apps/web/home",
            "apps/db/home",
            "agent",
        ] {
            std::fs::create_dir_all(temp.path().join(dir)).expect("mkdir");
        }
        let helper =
            Helper::new(&temp.path().join("apps"), &temp.path().join("agent")).expect("helper");
        (temp, helper)
    }

    #[test]
    fn app_dirs_are_exactly_a_release_or_the_home_of_that_service() {
        let (temp, helper) = node();
        let apps = helper.apps_dir.clone();
        let own = |service: &str, dir: PathBuf| Operation::OwnAppDir {
            service: service.into(),
            dir,
            volumes: Vec::new(),
        };
        assert!(helper
            .check(&own("web", apps.join("web/releases/3")))
            .is_ok());
        assert!(helper.check(&own("web", apps.join("web/home"))).is_ok());
        let refused = [
            own("web", apps.join("db/home")),       // another app's
            own("web", apps.join("web")),           // the agent's records
            own("web", apps.join("web/instances")), // idem
            own("web", apps.join("web/releases/3/../../../../etc")), // `..`
            own("web", apps.join("web/./home")),    // `.`
            own("web", PathBuf::from("/etc")),      // outside
            own("web", PathBuf::from("web/home")),  // relative
            own("web", apps.join("web/releases/x")), // not a number
            own("web", apps.join("web/releases/4")), // not there
            own("../etc", apps.join("../etc/home")), // bad service
            own("Web", apps.join("Web/home")),
        ];
        for operation in &refused {
            assert!(helper.check(operation).is_err(), "{operation:?}");
        }
        // Volumes are linked into a release only, and must be valid ones.
        let volume = |name: &str, path: &str| nanoscale_core::service::VolumeSpec {
            name: name.into(),
            path: path.into(),
        };
        let own_with = |dir: PathBuf, volumes| Operation::OwnAppDir {
            service: "web".into(),
            dir,
            volumes,
        };
        let release = apps.join("web/releases/3");
        assert!(helper
            .check(&own_with(
                release.clone(),
                vec![volume("data", "state/data")]
            ))
            .is_ok());
        for (dir, volumes) in [
            (apps.join("web/home"), vec![volume("data", "data")]),
            (release.clone(), vec![volume("data", "../../etc")]),
            (release.clone(), vec![volume("data", "/etc")]),
            (release.clone(), vec![volume("../db", "data")]),
        ] {
            assert!(
                helper
                    .check(&own_with(dir.clone(), volumes.clone()))
                    .is_err(),
                "{} {volumes:?}",
                dir.display()
            );
        }
        // What may be removed: the service's own trees, and nothing else.
        let remove = |service: &str, dir: PathBuf| Operation::RemoveAppDir {
            service: service.into(),
            dir,
        };
        for dir in [
            "web",
            "web/releases/3",
            "web/instances/web-1",
            "web/logs/web-1",
        ] {
            assert!(
                helper.check(&remove("web", apps.join(dir))).is_ok(),
                "{dir}"
            );
        }
        for (service, dir) in [
            ("web", apps.join("db")),
            ("web", apps.join("web/home")),
            ("web", apps.join("web/source.git")),
            ("web", apps.join("web/volumes/data")),
            ("web", apps.clone()),
            ("web", apps.join("web/releases/3/../../../db")),
            ("web", PathBuf::from("/etc")),
        ] {
            assert!(
                helper.check(&remove(service, dir.clone())).is_err(),
                "{}",
                dir.display()
            );
        }
        // A symlink anywhere on the way, or as the directory itself.
        std::fs::remove_dir(apps.join("web/home")).expect("rmdir");
        std::os::unix::fs::symlink("/etc", apps.join("web/home")).expect("symlink");
        let error = helper
            .check(&own("web", apps.join("web/home")))
            .expect_err("symlink");
        assert!(error.contains("symbolic link"), "{error}");
        std::fs::rename(apps.join("db"), temp.path().join("db-moved")).expect("move");
        std::os::unix::fs::symlink(temp.path().join("db-moved"), apps.join("db")).expect("link");
        assert!(helper.check(&own("db", apps.join("db/home"))).is_err());
    }

    #[test]
    fn only_listed_operations_with_their_fields_parse() {
        let parsed =
            Operation::parse(r#"{"op":"create_app_user","service":"web"}"#).expect("parses");
        assert_eq!(
            parsed,
            Operation::CreateAppUser {
                service: "web".into()
            }
        );
        for refused in [
            r#"{"op":"run_command","argv":["/bin/sh","-c","id"]}"#,
            r#"{"op":"create_app_user","service":"web","uid":0}"#,
            r#"{"op":"apply_firewall","script":"flush ruleset"}"#,
            r#"{"service":"web"}"#,
            r#"["create_app_user","web"]"#,
            // The swap file's place is the helper's, never the caller's.
            r#"{"op":"create_swap","size_mib":64,"path":"/etc/passwd"}"#,
            r#"{"op":"create_swap","size_mib":-1}"#,
            r#"{"op":"remove_swap","path":"/swapfile"}"#,
        ] {
            assert!(Operation::parse(refused).is_err(), "{refused}");
        }
        assert_eq!(
            Operation::parse(r#"{"op":"create_swap","size_mib":512}"#),
            Ok(Operation::CreateSwap { size_mib: 512 })
        );
        let (_dir, helper) = node();
        for size_mib in [0, 15, 64 * 1024 + 1, u64::MAX] {
            let refused = helper.check(&Operation::CreateSwap { size_mib });
            assert!(
                refused.is_err_and(|why| why.contains("size_mib")),
                "{size_mib}"
            );
        }
    }

    #[test]
    fn ufw_rules_are_told_apart_by_their_comment() {
        let status = "Status: active\n\n     To                         Action      From\n\
     --                         ------      ----\n\
[ 1] 8080/tcp                   ALLOW IN    Anywhere                   # nanoscale tcp/8080\n\
[ 2] 22/tcp                     ALLOW IN    10.0.0.0/8                 # nanoscale ssh 10.0.0.0/8\n\
[ 3] 5000/tcp                   ALLOW IN    Anywhere                   # mine\n\
[ 4] 8080/tcp (v6)              ALLOW IN    Anywhere (v6)              # nanoscale tcp/8080\n\
[ 5] 5000/tcp (v6)              ALLOW IN    Anywhere (v6)\n";
        assert_eq!(
            ufw_marked(status),
            [
                (1, "nanoscale tcp/8080".to_owned()),
                (2, "nanoscale ssh 10.0.0.0/8".to_owned()),
                (4, "nanoscale tcp/8080".to_owned()),
            ]
        );
        let verbose = "Status: active\nLogging: on (low)\n\
Default: allow (incoming), allow (outgoing), disabled (routed)\n";
        assert_eq!(ufw_default_incoming(verbose).as_deref(), Some("allow"));
        let plan = FirewallPlan {
            mode: SecurityMode::B,
            open_tcp_ports: vec![8080, 80, 8080],
            ssh_from: vec!["10.0.0.0/8".into()],
        };
        let comments: Vec<String> = ufw_rules(&plan)
            .expect("rules")
            .into_iter()
            .map(|(comment, _)| comment)
            .collect();
        assert_eq!(
            comments,
            [
                "nanoscale tcp/80",
                "nanoscale tcp/8080",
                "nanoscale ssh 10.0.0.0/8"
            ]
        );
        let closed = FirewallPlan {
            mode: SecurityMode::C,
            ..plan
        };
        assert!(ufw_rules(&closed).expect("rules").is_empty());
    }

    #[test]
    fn names_and_firewall_plans_are_checked() {
        let (_temp, helper) = node();
        for service in ["", "-rf", "a/b", "root;id", &"a".repeat(64)] {
            let operation = Operation::CreateAppUser {
                service: service.to_owned(),
            };
            assert!(helper.check(&operation).is_err(), "{service:?}");
        }
        let plan = |ssh_from: &str| Operation::ApplyFirewall {
            plan: FirewallPlan {
                mode: SecurityMode::B,
                open_tcp_ports: vec![80],
                ssh_from: vec![ssh_from.to_owned()],
            },
        };
        assert!(helper.check(&plan("10.0.0.0/8")).is_ok());
        assert!(helper.check(&plan("10.0.0.0/8; flush ruleset")).is_err());
        // Only internal names at a loopback address reach /etc/hosts: no line of
        // the caller's (a newline in a name) and no other host's address.
        let hosts = |address: &str, names: &[&str]| Operation::SyncHosts {
            address: address.parse().expect("address"),
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        };
        assert!(helper
            .check(&hosts(
                "127.0.0.1",
                &["api.svc.internal", "api.shop.svc.internal"]
            ))
            .is_ok());
        assert!(helper.check(&hosts("::1", &[])).is_ok());
        for (address, name) in [
            ("10.0.0.1", "api.svc.internal"),
            ("127.0.0.1", "bank.example.com"),
            ("127.0.0.1", "api.svc.internal\n10.0.0.1 bank.example.com"),
            ("127.0.0.1", "a b.svc.internal"),
            ("127.0.0.1", ".svc.internal"),
            ("127.0.0.1", "svc.internal"),
        ] {
            let refused = helper.check(&hosts(address, &[name]));
            assert!(refused.is_err(), "{address} {name:?}");
        }
    }
}
