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

/// A process stopped with SIGTERM when dropped (nginx: killing its master with
/// SIGKILL would leave its workers running, holding their ports), then killed
/// if it is still there after five seconds.
pub struct Terminated(pub Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `nanoscale up`; dropping it stops it and the node's agent and proxy
/// (which outlive `up` by design).
pub struct Up {
    _child: Killed,
    data_dir: std::path::PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let kill = |target: &str| {
            let _ = Command::new("kill").args(["-KILL", "--", target]).status();
        };
        for lock in ["agent/agent.lock", "proxy/proxy.lock"] {
            if let Ok(text) = std::fs::read_to_string(self.data_dir.join(lock)) {
                kill(text.trim());
            }
        }
        // Apps outlive the agent by design: stop every instance's shim and its
        // app's process group too, or they run on after the benchmark.
        let instances = std::fs::read_dir(self.data_dir.join("apps"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|service| std::fs::read_dir(service.path().join("instances")))
            .flatten()
            .flatten();
        for instance in instances {
            for (file, group) in [("shim.pid", false), ("app.pid", true)] {
                let text = std::fs::read_to_string(instance.path().join(file)).unwrap_or_default();
                if let Some(pid) = text.split_whitespace().next() {
                    kill(&if group {
                        format!("-{pid}")
                    } else {
                        pid.to_owned()
                    });
                }
            }
        }
    }
}

/// `nanoscale up` on a free loopback port with its data under `data_dir`, its
/// proxy on another free loopback port, no internal network or DNS.
pub fn start_up(binary: &Path, data_dir: &Path) -> Result<(Up, String)> {
    let port = free_port()?;
    let proxy = free_port()?;
    let child = Command::new(binary)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(["--proxy-listen", &format!("127.0.0.1:{proxy}")])
        .args(["--internal-listen", "off", "--dns-listen", "off"])
        .env("NANOSCALE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let up = Up {
        _child: Killed(child),
        data_dir: data_dir.to_path_buf(),
    };
    Ok((up, format!("http://127.0.0.1:{port}")))
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

/// Proportional and unique set sizes of a process, in KiB (`smaps_rollup`): PSS
/// splits each shared page among the processes that map it, USS counts only the
/// pages no other process maps, what one more such process costs.
pub fn pss_uss_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in smaps_rollup"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("smaps_rollup value")?
            .parse()?)
    };
    Ok((
        field("Pss:")?,
        field("Private_Clean:")? + field("Private_Dirty:")?,
    ))
}

/// Runs git in `dir` with a fixed author, failing on a non-zero exit.
pub fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .current_dir(dir)
        .status()?;
    if !status.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
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

/// One wrk run: `threads` threads, `connections` connections for `duration_secs`,
/// optionally pinned with `taskset -c <cpus>`.
pub struct Wrk {
    pub url: String,
    pub threads: u32,
    pub connections: u32,
    pub duration_secs: u32,
    pub headers: Vec<String>,
    pub cpus: Option<String>,
}

impl Wrk {
    pub fn new(url: &str, connections: u32, duration_secs: u32) -> Wrk {
        Wrk {
            url: url.to_owned(),
            threads: 2,
            connections,
            duration_secs,
            headers: Vec::new(),
            cpus: None,
        }
    }

    pub fn header(mut self, header: &str) -> Wrk {
        self.headers.push(header.to_owned());
        self
    }
}

pub struct WrkResult {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests_per_sec: f64,
    pub transfer_mib_per_sec: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

pub fn wrk(run: &Wrk) -> Result<WrkResult> {
    let mut command = match &run.cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus, "wrk"]);
            command
        }
        None => Command::new("wrk"),
    };
    command.args([
        format!("-t{}", run.threads),
        format!("-c{}", run.connections),
        format!("-d{}s", run.duration_secs),
        "--latency".to_owned(),
        "--timeout".to_owned(),
        "5s".to_owned(),
    ]);
    for header in &run.headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(&run.url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("wrk failed: {text}");
    }
    let percentile = |label: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .with_context(|| format!("no {label} in wrk output:\n{text}"))?;
        parse_duration_ms(line.split_whitespace().nth(1).context("value")?)
    };
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };
    let requests_per_sec = field("Requests/sec:").context("no Requests/sec")?.parse()?;
    let transfer = field("Transfer/sec:").unwrap_or_default();
    let transfer_mib_per_sec = parse_size_mib(&transfer).unwrap_or(0.0);
    let non_2xx: u64 = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split(':').nth(1))
        .map_or(Ok(0), |n| n.trim().parse())?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket_errors: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| {
            l.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(WrkResult {
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        requests_per_sec,
        transfer_mib_per_sec,
        errors: non_2xx + socket_errors,
    })
}

fn parse_duration_ms(value: &str) -> Result<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown duration {value}");
    };
    Ok(number.parse::<f64>()? * factor)
}

fn parse_size_mib(value: &str) -> Option<f64> {
    let units = [
        ("GB", 1024.0),
        ("MB", 1.0),
        ("KB", 1.0 / 1024.0),
        ("B", 1.0 / 1048576.0),
    ];
    units.iter().find_map(|(unit, factor)| {
        value
            .strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * factor)
    })
}
