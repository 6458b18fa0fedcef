//! A host where systemd is PID 1, for tests of the systemd backend on a machine
//! (like many CI hosts) where it is installed but not running: `systemd-nspawn`
//! boots this host's systemd in a container whose root is an empty tmpfs with
//! this host's `/usr` (`--volatile=yes`), and the test reaches into it with
//! `nsenter`. Shared by `crates/agent/tests/systemd.rs` (which includes this
//! file by path) and `tests/systemd.rs`.
#![allow(dead_code, clippy::disallowed_methods)] // test code; runs nspawn and nsenter

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Container {
    child: Child,
    pub leader: u32,
}

/// What the container shares with this host.
pub struct Boot<'a> {
    pub name: String,
    /// Visible at the same path inside (read-only when the flag says so).
    pub binds: Vec<(&'a Path, bool)>,
    /// Its own network namespace (only loopback), or this host's: a test that
    /// talks to a server inside over 127.0.0.1 shares it.
    pub private_network: bool,
}

/// Why a container cannot be booted here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("booting systemd in a container needs root".into());
    }
    // A missing systemd-nspawn is not a reason to skip: scripts/test installs it.
    None
}

impl Container {
    /// Boots systemd in a container and waits until its system is up.
    pub fn boot(boot: &Boot<'_>) -> Container {
        let mut command = Command::new("systemd-nspawn");
        command
            .args([
                "--quiet",
                "--volatile=yes",
                "--directory=/",
                "--register=no",
            ])
            .args(["--keep-unit", "--boot"])
            .arg(format!("--machine={}", boot.name));
        if boot.private_network {
            command.arg("--private-network");
        }
        for (path, read_only) in &boot.binds {
            let flag = if *read_only { "--bind-ro" } else { "--bind" };
            command.arg(format!("{flag}={}", path.display()));
        }
        let child = command
            // The root is an empty tmpfs (only /usr is this host's): no wizard.
            .arg("systemd.firstboot=off")
            // Only the basic system: the host's own enabled services (an nginx
            // that wants network-online.target, say) would hold the boot for two
            // minutes on a network the container does not have.
            .arg("systemd.unit=basic.target")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn (scripts/test installs systemd-container)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if let Some(pid) = descendant_named(child.id(), "systemd") {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let container = Container { child, leader };
        // "degraded" is fine: some of this host's units have nothing to do here.
        loop {
            let state = container.run(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        container
    }

    /// `nsenter` into the container's namespaces (its network one only when it
    /// has its own), ready for the program and its arguments.
    pub fn enter(&self) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--target={}", self.leader))
            .args(["--mount", "--uts", "--ipc", "--pid"]);
        let own_network = std::fs::read_link(format!("/proc/{}/ns/net", self.leader)).ok()
            != std::fs::read_link("/proc/self/ns/net").ok();
        if own_network {
            command.arg("--net");
        }
        command.arg("--");
        command
    }

    /// Runs `argv` inside the container.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.enter().args(argv).output().expect("nsenter")
    }

    pub fn must(&self, argv: &[&str]) -> String {
        let output = self.run(argv);
        assert!(
            output.status.success(),
            "{argv:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn for a clean shutdown of the container.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first process under `pid` whose command name is `name`.
fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
        if comm.trim() == name {
            return Some(child);
        }
        if let Some(found) = descendant_named(child, name) {
            return Some(found);
        }
    }
    None
}
