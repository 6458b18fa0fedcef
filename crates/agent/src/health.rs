//! Health checks of one instance: HTTP GET of a path, a command, or a TCP connect,
//! always against the instance's own port on loopback.
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoscale_core::service::HealthSpec;
use nanoscale_process::{run, CommandSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::{self, Ended, Limits, ShimSpec};
use crate::sandbox::Confinement;

/// Where a health command runs: the release's directory and env, and, when the app
/// is sandboxed, a one-shot shim confined exactly like the app (the command is the
/// user's code and must not run as the agent).
pub struct CommandPlace<'a> {
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub shim: Option<ShimPlace<'a>>,
}

pub struct ShimPlace<'a> {
    pub config: &'a crate::context::AgentConfig,
    pub service: &'a str,
    /// A directory of the check's own (emptied before each run).
    pub dir: PathBuf,
    /// Names the check's cgroup.
    pub id: String,
    pub confinement: &'a Confinement,
    pub pids: u32,
}

/// One check. `Err` carries a short reason for events and failure messages.
pub async fn check(spec: &HealthSpec, port: u16, place: &CommandPlace<'_>) -> Result<(), String> {
    let timeout = Duration::from_secs(spec.timeout_secs.max(1).into());
    if let Some(path) = &spec.path {
        return match tokio::time::timeout(timeout, http_get(port, path)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "GET {path} timed out after {} s",
                timeout.as_secs()
            )),
        };
    }
    if let Some(command) = &spec.command {
        let mut env = place.env.to_vec();
        env.push(("PORT".into(), port.to_string()));
        if let Some(shim) = &place.shim {
            return run_in_shim(shim, command, env, place.cwd, timeout).await;
        }
        let output = run(CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), command.clone()],
            env,
            cwd: Some(place.cwd.to_path_buf()),
            timeout,
            stdin: None,
        })
        .await
        .map_err(|error| error.to_string())?;
        return if output.success {
            Ok(())
        } else {
            let said = nanoscale_process::git::first_line(if output.stderr.trim().is_empty() {
                &output.stdout
            } else {
                &output.stderr
            });
            Err(format!("health command failed: {said}"))
        };
    }
    match tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("connect to port {port}: {error}")),
        Err(_) => Err(format!("connect to port {port} timed out")),
    }
}

/// Runs a health command under a one-shot shim, confined like the app.
async fn run_in_shim(
    shim: &ShimPlace<'_>,
    command: &str,
    mut env: Vec<(String, String)>,
    cwd: &Path,
    timeout: Duration,
) -> Result<(), String> {
    if shim.dir.exists() {
        let _ = crate::sandbox::stop(shim.config, &shim.dir, Duration::from_secs(1)).await;
        let _ = crate::sandbox::remove(shim.config, &shim.dir).await;
    }
    crate::builder::create_shim_parent(&shim.dir)?;
    env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    let spec = ShimSpec {
        id: shim.id.clone(),
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_owned()],
        env,
        cwd: cwd.to_path_buf(),
        log_dir: shim.dir.join("log"),
        log_max_bytes: 64 << 10,
        log_keep: 1,
        limits: Limits {
            pids: Some(shim.pids),
            ..Limits::default()
        },
        stop_grace_secs: 1,
        uid: shim.confinement.uid,
        gid: shim.confinement.gid,
        sandbox: shim.confinement.sandbox.clone(),
    };
    crate::sandbox::launch(shim.config, shim.service, &shim.dir, &spec)
        .await
        .map_err(|error| format!("health command did not start: {error}"))?;
    let outcome = match runtime::wait_for_exit(&shim.dir, timeout, Duration::from_millis(20)).await
    {
        Ended::Exited(exit) if exit.code == Some(0) => Ok(()),
        Ended::Exited(exit) => {
            let said = runtime::tail_exit_reason(&spec.log_dir, 1)
                .pop()
                .unwrap_or_else(|| crate::executor::describe(&exit));
            Err(format!("health command failed: {said}"))
        }
        Ended::Died => Err("health command's supervisor died".to_owned()),
        Ended::TimedOut => Err(format!(
            "health command timed out after {} s",
            timeout.as_secs()
        )),
    };
    let _ = crate::sandbox::stop(shim.config, &shim.dir, Duration::from_secs(1)).await;
    let _ = crate::sandbox::remove(shim.config, &shim.dir).await;
    outcome
}

/// A minimal HTTP/1.1 GET: the status line is all a health check needs, and a
/// plain socket keeps the agent free of a second HTTP client configuration.
async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| format!("connect to port {port}: {error}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: nanoscale-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("GET {path}: {error}"))?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let read = stream
            .read(&mut head[filled..])
            .await
            .map_err(|error| format!("GET {path}: {error}"))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    // Read the rest (bounded) so the app does not see a reset mid-response.
    let mut rest = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 256 * 1024 {
        match stream.read(&mut rest).await {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}
