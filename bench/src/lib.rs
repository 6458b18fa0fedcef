//! What the benchmark drivers share: starting a real `nanoscale up`, probes, RSS.
#![allow(clippy::disallowed_methods)] // a benchmark driver starts the processes it measures

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nanoscale_client::Client;
use nanoscale_core::api::{CreateToken, Credentials};
use nanoscale_core::Role;

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nanoscale up` on a free loopback port with its data under `data_dir`.
pub fn start_up(binary: &Path, data_dir: &Path) -> Result<(Killed, String)> {
    let port = free_port()?;
    let child = Command::new(binary)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("NANOSCALE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok((Killed(child), format!("http://127.0.0.1:{port}")))
}

/// Creates the admin and returns a client with an admin token.
pub async fn admin_client(url: &str) -> Result<Client> {
    let anonymous = Client::new(url, None)?;
    wait_ready(&anonymous).await?;
    let credentials = Credentials {
        username: "admin".into(),
        password: "benchmark-password".into(),
    };
    anonymous.setup(&credentials).await?;
    let (_, session) = anonymous.start_session(&credentials).await?;
    let token = session
        .create_token(&CreateToken {
            name: "bench".into(),
            role: Role::Admin,
            expires_in: None,
        })
        .await?
        .token;
    Ok(Client::new(url, Some(token))?)
}

pub async fn wait_ready(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health_ready().await.is_err() {
        if Instant::now() > deadline {
            bail!("the control plane did not become ready in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
