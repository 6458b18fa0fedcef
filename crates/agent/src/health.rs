//! Health checks of one instance: HTTP GET of a path, a command, or a TCP connect,
//! always against the instance's own port on loopback.
use std::path::Path;
use std::time::Duration;

use nanoscale_core::service::HealthSpec;
use nanoscale_process::{run, CommandSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One check. `Err` carries a short reason for events and failure messages.
pub async fn check(
    spec: &HealthSpec,
    port: u16,
    cwd: &Path,
    env: &[(String, String)],
) -> Result<(), String> {
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
        let mut env = env.to_vec();
        env.push(("PORT".into(), port.to_string()));
        let output = run(CommandSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), command.clone()],
            env,
            cwd: Some(cwd.to_path_buf()),
            timeout,
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
