//! systemd units for app instances: the same [`ShimSpec`] the built-in supervisor
//! runs, rendered as a hardened `.service` unit plus its environment file, for
//! hosts where systemd is PID 1 and the operator chose it as the backend.
//!
//! What the built-in sandbox does (`sandbox.rs`), the unit asks systemd to do:
//!
//! | built-in | unit |
//! |---|---|
//! | read-only host | `ProtectSystem=strict` |
//! | tmpfs over `/home`, `/root`, `/run/user` | `ProtectHome=yes` |
//! | tmpfs over the data dir (other apps, the agent's files) | `TemporaryFileSystem=<dir>:ro` |
//! | private `/tmp`, `/var/tmp`, `/dev/shm` | `PrivateTmp=yes`, `PrivateDevices=yes` |
//! | release and home bound back read-write | `BindPaths=` + `ReadWritePaths=` |
//! | no capabilities, no_new_privs, no core dumps | `CapabilityBoundingSet=`, `NoNewPrivileges=yes`, `LimitCORE=0` |
//! | own uid/gid | `User=`, `Group=` (the `ns-<service>` account) |
//! | cgroup memory, CPU, pids | `MemoryMax=`, `CPUQuota=`, `TasksMax=` |
//!
//! and more that ordinary web apps do not notice (kernel tunables, modules,
//! logs, clock and hostname protected; system calls limited to
//! `@system-service`; SUID/SGID, realtime, personality and namespace creation
//! refused). Left out on purpose: `MemoryDenyWriteExecute` (breaks every JIT:
//! Node, the JVM, PyPy), `PrivateNetwork` and `IPAddressDeny` (apps serve and
//! call out), `ProcSubset=pid` (runtimes read `/proc/meminfo` and
//! `/proc/cpuinfo`).
//!
//! Restarts stay the agent's (`Restart=no`), as with the built-in supervisor, so
//! crash loops back off and are reported the same way.
//!
//! Everything written into a unit is quoted for systemd's parser (`%` specifiers,
//! `$` expansion, quotes and backslashes) or refused: a path with whitespace,
//! quotes, `%`, `:` or a control character never reaches a directive.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::ShimSpec;

/// A rendered instance unit: its file name, its text, and the environment file
/// it reads (to be written 0600, owned by root: systemd reads it before it drops
/// to the app's user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUnit {
    /// `nanoscale-<id>.service`.
    pub name: String,
    pub unit: String,
    pub environment: String,
}

/// The unit's name for an instance or build id.
pub fn unit_name(id: &str) -> String {
    format!("nanoscale-{id}.service")
}

/// Renders `spec` as a unit that runs as the account `user` (the service's
/// `ns-<service>`, whose uid the spec carries) and reads its environment from
/// `environment_file`. systemd needs the name: a bare uid no account has fails
/// with 217/USER.
pub fn render(spec: &ShimSpec, user: &str, environment_file: &Path) -> Result<AppUnit, String> {
    let user_ok = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !user_ok || user == "root" {
        return Err(format!("{user:?} is not an app's account name"));
    }
    let id_ok = !spec.id.is_empty()
        && spec.id.len() <= 200
        && spec
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(format!("instance id {:?} is not [a-z0-9-]", spec.id));
    }
    let (Some(uid), Some(gid)) = (spec.uid, spec.gid) else {
        return Err("the systemd backend runs apps as their own users: the spec has no uid".into());
    };
    if uid == 0 || gid == 0 {
        return Err("an app never runs as root".into());
    }
    let Some(sandbox) = &spec.sandbox else {
        return Err("the systemd backend runs apps sandboxed: the spec has no sandbox".into());
    };
    match spec.argv.first() {
        Some(program) if program.starts_with('/') => {}
        _ => return Err("argv[0] must be an absolute path".into()),
    }
    let mut unit = String::new();
    let mut line = |text: String| {
        unit.push_str(&text);
        unit.push('\n');
    };
    line("# Written by the NanoScale agent; changes are overwritten.".into());
    line("[Unit]".into());
    line(format!("Description=NanoScale instance {}", spec.id));
    line(
        "Documentation=https://github.com/nanoscale/nanoscale/blob/main/docs/ARCHITECTURE.md"
            .into(),
    );
    line(String::new());
    line("[Service]".into());
    line("Type=exec".into());
    line(format!("ExecStart={}", exec_line(&spec.argv)?));
    line(format!("WorkingDirectory={}", unit_path(&spec.cwd)?));
    line(format!("EnvironmentFile={}", unit_path(environment_file)?));
    line(format!("User={user}"));
    line(format!("Group={user}"));
    line("Restart=no".into());
    line("KillMode=control-group".into());
    line("KillSignal=SIGTERM".into());
    line(format!("TimeoutStopSec={}", spec.stop_grace_secs.max(1)));
    line(format!("SyslogIdentifier={}", spec.id));
    line("Slice=nanoscale.slice".into());
    line(String::new());
    line("# Resources".into());
    if let Some(bytes) = spec.limits.memory_bytes {
        line(format!("MemoryMax={bytes}"));
        line("MemorySwapMax=0".into());
    }
    if let Some(millis) = spec.limits.cpu_millis {
        // CPUQuota is in percent of one CPU; 1 % is its resolution.
        line(format!("CPUQuota={}%", (millis / 10).max(1)));
    }
    line(format!("TasksMax={}", spec.limits.pids.unwrap_or(1024)));
    line("LimitCORE=0".into());
    line(String::new());
    line("# Files: a read-only host; only the release and home are writable".into());
    line("ProtectSystem=strict".into());
    line("ProtectHome=yes".into());
    line("PrivateTmp=yes".into());
    line("PrivateDevices=yes".into());
    line("UMask=0077".into());
    line("PrivateMounts=yes".into());
    let home_trees = [
        Path::new("/home"),
        Path::new("/root"),
        Path::new("/run/user"),
    ];
    // A tree inside another hidden one is hidden with it: its own empty tmpfs
    // would show that it exists (the agent's state inside the data dir).
    let covered = |path: &Path| {
        sandbox
            .hidden
            .iter()
            .any(|other| other.as_path() != path && path.starts_with(other))
    };
    for hidden in sandbox
        .hidden
        .iter()
        .filter(|p| !home_trees.contains(&p.as_path()) && !covered(p))
    {
        line(format!("TemporaryFileSystem={}:ro", unit_path(hidden)?));
    }
    for writable in &sandbox.writable {
        let path = unit_path(writable)?;
        line(format!("BindPaths={path}"));
        line(format!("ReadWritePaths={path}"));
    }
    line(String::new());
    line("# Privileges: none".into());
    line("NoNewPrivileges=yes".into());
    line("CapabilityBoundingSet=".into());
    line("AmbientCapabilities=".into());
    line("RestrictSUIDSGID=yes".into());
    line("RemoveIPC=yes".into());
    line("KeyringMode=private".into());
    line(String::new());
    line("# The kernel and the rest of the host".into());
    line("ProtectKernelTunables=yes".into());
    line("ProtectKernelModules=yes".into());
    line("ProtectKernelLogs=yes".into());
    line("ProtectControlGroups=yes".into());
    line("ProtectClock=yes".into());
    line("ProtectHostname=yes".into());
    line("ProtectProc=invisible".into());
    line("LockPersonality=yes".into());
    line("RestrictRealtime=yes".into());
    line("RestrictNamespaces=yes".into());
    line("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK".into());
    line("SystemCallArchitectures=native".into());
    line("SystemCallFilter=@system-service".into());
    line("SystemCallFilter=~@privileged".into());
    line("SystemCallErrorNumber=EPERM".into());
    Ok(AppUnit {
        name: unit_name(&spec.id),
        unit,
        environment: environment_file_text(&spec.env)?,
    })
}

/// `ExecStart=`'s value: every word double-quoted, with systemd's `%` specifiers
/// and `$` expansion turned off, so the app gets exactly `argv`.
fn exec_line(argv: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for (index, word) in argv.iter().enumerate() {
        if word.chars().any(|c| c.is_control() && c != '\t') {
            return Err(format!("argv[{index}] has a control character"));
        }
        if index > 0 {
            out.push(' ');
        }
        out.push('"');
        for c in word.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\t' => out.push_str("\\t"),
                '%' => out.push_str("%%"),
                '$' => out.push_str("$$"),
                other => out.push(other),
            }
        }
        out.push('"');
    }
    Ok(out)
}

/// A path for a directive: absolute, and free of what directives would split on
/// or expand (whitespace, quotes, `%`, `:`, `\`, control characters).
fn unit_path(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    let bad = !text.starts_with('/')
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'%:\\;".contains(c));
    if bad {
        return Err(format!(
            "{text:?} cannot go into a unit: it must be absolute, without whitespace, quotes, '%', ':', ';' or '\\'"
        ));
    }
    Ok(PathBuf::from(text).display().to_string())
}

/// The environment file: `NAME="value"` lines, values double-quoted with the
/// characters systemd's parser would interpret escaped; a newline inside the
/// quotes is kept (PEM keys span lines).
fn environment_file_text(env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::from("# Written by the NanoScale agent; secrets inside: mode 0600.\n");
    for (name, value) in env {
        let name_ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(format!("{name:?} is not an environment variable name"));
        }
        if value.contains('\0') {
            return Err(format!("{name}: the value has a NUL byte"));
        }
        let mut quoted = String::with_capacity(value.len() + 2);
        for c in value.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        let _ = writeln!(out, "{name}=\"{quoted}\"");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Limits, SandboxSpec};

    /// What the agent would give a web app instance (paths as `nanoscale up`
    /// makes them under a data dir).
    pub fn web_spec() -> ShimSpec {
        let data = PathBuf::from("/var/lib/nanoscale");
        let release = data.join("apps/web/releases/3");
        let home = data.join("apps/web/home");
        ShimSpec {
            id: "web-r3-0-k2j4".into(),
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "exec node server.js --port \"$PORT\" --greeting '100% ok' \\ \t".into(),
            ],
            env: vec![
                ("PORT".into(), "20001".into()),
                (
                    "PEM".into(),
                    "-----BEGIN-----\nabc$HOME\"`x`\\\n-----END-----".into(),
                ),
            ],
            cwd: release.clone(),
            log_dir: data.join("apps/web/instances/web-r3-0-k2j4/log"),
            log_max_bytes: 10 << 20,
            log_keep: 3,
            limits: Limits {
                memory_bytes: Some(256 << 20),
                swap_bytes: None,
                cpu_millis: Some(500),
                pids: Some(512),
            },
            stop_grace_secs: 10,
            uid: Some(998),
            gid: Some(998),
            sandbox: Some(SandboxSpec {
                hidden: vec!["/home".into(), "/root".into(), "/run/user".into(), data],
                private_tmp: vec!["/tmp".into(), "/var/tmp".into(), "/dev/shm".into()],
                writable: vec![release, home],
            }),
        }
    }

    #[test]
    fn the_unit_matches_its_snapshot() {
        let unit = render(
            &web_spec(),
            "ns-web",
            Path::new("/var/lib/nanoscale/apps/web/instances/web-r3-0-k2j4/env"),
        )
        .expect("renders");
        let snapshot =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/web-r3-0-k2j4.service");
        let env_snapshot = snapshot.with_extension("env");
        if std::env::var_os("NANOSCALE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&snapshot, &unit.unit).expect("write snapshot");
            std::fs::write(&env_snapshot, &unit.environment).expect("write snapshot");
        }
        let expected = std::fs::read_to_string(&snapshot)
            .expect("snapshot (NANOSCALE_UPDATE_SNAPSHOTS=1 writes it)");
        assert_eq!(
            unit.unit, expected,
            "the unit changed: review it, then NANOSCALE_UPDATE_SNAPSHOTS=1"
        );
        let expected = std::fs::read_to_string(&env_snapshot).expect("env snapshot");
        assert_eq!(unit.environment, expected);
        assert_eq!(unit.name, "nanoscale-web-r3-0-k2j4.service");
    }

    /// `systemd-analyze verify` loads the unit as systemd would (no PID 1
    /// needed), and `security --offline` rates its exposure (0 = locked down,
    /// 10 = exposed). Skipped only where systemd is not installed at all.
    #[test]
    #[allow(clippy::disallowed_methods)] // runs systemd's own checker on the unit
    fn systemd_verifies_the_unit_and_rates_it_locked_down() {
        let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
            .into_iter()
            .find(|path| Path::new(path).exists())
        else {
            eprintln!("skipping: systemd-analyze is not installed (scripts/test installs systemd)");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let unit = render(&web_spec(), "ns-web", &dir.path().join("env")).expect("renders");
        let path = dir.path().join(&unit.name);
        std::fs::write(&path, &unit.unit).expect("write unit");
        std::fs::write(dir.path().join("env"), &unit.environment).expect("write env");
        let verify = std::process::Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("run systemd-analyze verify");
        let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
        assert!(
            verify.status.success(),
            "systemd-analyze verify: {complaints}"
        );
        // Warnings about the unit itself (not about this host lacking a running
        // systemd) mean something in it is wrong or ignored.
        let about_unit: Vec<&str> = complaints
            .lines()
            .filter(|line| line.contains(&unit.name) && !line.contains("nanoscale.slice"))
            .collect();
        assert!(about_unit.is_empty(), "systemd complains: {about_unit:?}");
        let security = std::process::Command::new(analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .expect("run systemd-analyze security");
        let report = String::from_utf8_lossy(&security.stdout).into_owned();
        let exposure: f64 = report
            .lines()
            .find_map(|line| {
                line.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no exposure level in: {report}"));
        eprintln!(
            "systemd-analyze security: exposure {exposure} of 10 for {}",
            unit.name
        );
        assert!(
            exposure <= 2.5,
            "the unit is exposed ({exposure}):\n{report}"
        );
    }

    #[test]
    fn exec_words_are_quoted_against_specifiers_and_expansion() {
        let line = exec_line(&[
            "/bin/sh".into(),
            "-c".into(),
            "echo \"$HOME\" 100% \\".into(),
        ])
        .expect("ok");
        assert_eq!(line, r#""/bin/sh" "-c" "echo \"$$HOME\" 100%% \\""#);
        assert!(exec_line(&["/bin/sh".into(), "a\nb".into()]).is_err());
    }

    #[test]
    fn refuses_what_would_escape_a_directive_or_the_sandbox() {
        let mut spec = web_spec();
        spec.uid = None;
        assert!(
            render(&spec, "ns-web", Path::new("/x/env")).is_err(),
            "no user"
        );
        let mut spec = web_spec();
        spec.uid = Some(0);
        assert!(
            render(&spec, "ns-web", Path::new("/x/env")).is_err(),
            "root"
        );
        let mut spec = web_spec();
        spec.sandbox = None;
        assert!(
            render(&spec, "ns-web", Path::new("/x/env")).is_err(),
            "no sandbox"
        );
        let mut spec = web_spec();
        spec.argv[0] = "sh".into();
        assert!(
            render(&spec, "ns-web", Path::new("/x/env")).is_err(),
            "relative program"
        );
        let mut spec = web_spec();
        spec.id = "Web/../x".into();
        assert!(render(&spec, "ns-web", Path::new("/x/env")).is_err(), "id");
        for path in [
            "/a b",
            "/a%n",
            "/a:b",
            "relative",
            "/a\nExecStartPre=/bin/evil",
            "/a\"b",
        ] {
            let mut spec = web_spec();
            spec.cwd = PathBuf::from(path);
            assert!(
                render(&spec, "ns-web", Path::new("/x/env")).is_err(),
                "{path:?}"
            );
        }
        for user in ["root", "", "Web", "ns web", "ns-web\nUser=root", "-x"] {
            assert!(
                render(&web_spec(), user, Path::new("/x/env")).is_err(),
                "{user:?}"
            );
        }
        let mut spec = web_spec();
        spec.env.push(("BAD NAME".into(), "x".into()));
        assert!(
            render(&spec, "ns-web", Path::new("/x/env")).is_err(),
            "env name"
        );
    }
}
