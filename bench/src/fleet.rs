//! `bench/run fleet [N...]`: N real agents against one control plane on this
//! machine. Each simulated agent is the agent's own protocol code
//! (`nanoscale_agent::cluster::join`, `ControlPlane`): it joins with its own
//! one-time token and key pair, then holds its channel (`GET
//! /api/v1/agent/channel` upgraded over mTLS: its document pushed, log requests
//! brought, reports acknowledged), waits for its document as the agent's fetch
//! loop does, and sends a heartbeat report every 10 s. Many agents
//! share this process; the control plane is a separate `nanoscale up`.
//!
//! Measured: enrollment rate; time for one desired-state change (a deploy of a
//! service placed on every node) to reach every agent (p50, p99, max); heartbeat
//! round trip p99; the control plane's CPU and RSS at steady state; agents that
//! dropped. There is no runnable peer on this machine (no k3s or Nomad: no
//! internet); figures are printed against the targets and, for scale,
//! the published k3s server figure (about 1.6 GB), which is not measured here.
#![allow(clippy::disallowed_methods)] // a benchmark driver starts the processes it measures

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nanoscale_agent::cluster::JoinOptions;
use nanoscale_agent::protocol::{ControlPlane, Credential};
use nanoscale_bench::{admin_client, free_port, git, rss_kib, Killed};
use nanoscale_core::agent::{AgentReport, Convergence};
use nanoscale_core::api::CreateProject;
use nanoscale_core::cluster::{CreateJoinToken, NodeUsage};
use nanoscale_core::service::ServiceSpec;

const HEARTBEAT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(
        args.next()
            .context("usage: fleet <nanoscale binary> [N...]")?,
    );
    let mut sizes: Vec<usize> = args.map(|n| n.parse()).collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    raise_fd_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("fleet: agents simulated in this process (2 worker threads), control plane a separate process, both on 2 cores");
    for size in sizes {
        runtime.block_on(run(&binary, size))?;
    }
    Ok(())
}

/// Each agent needs a socket here and one in the control plane (which inherits
/// this limit).
fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, 200_000, 200_000).is_err() {
        // Without CAP_SYS_RESOURCE (a container) the hard limit is the ceiling.
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .context("raising the file-descriptor limit")?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    println!("file descriptors: {soft} for this process and the control plane");
    Ok(())
}

struct Fleet {
    agents: Vec<Agent>,
    /// Agents whose long-poll or report failed after joining.
    failures: AtomicUsize,
    heartbeats_ms: Mutex<Vec<f64>>,
    sent: AtomicU64,
}

struct Agent {
    control_plane: ControlPlane,
    /// The newest document version this agent received, and when.
    received: Mutex<(i64, Instant)>,
}

async fn run(binary: &Path, size: usize) -> Result<()> {
    println!();
    println!("== {size} agents ==");
    let dir = tempfile::Builder::new()
        .prefix("nanoscale-fleet-")
        .tempdir_in("/tmp")?;
    let port = free_port()?;
    let cluster_port = free_port()?;
    let child = Command::new(binary)
        .args(["up", "--no-agent", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--cluster-listen", &format!("127.0.0.1:{cluster_port}")])
        .arg("--data-dir")
        .arg(dir.path().join("cp"))
        .env(
            "NANOSCALE_LOG",
            std::env::var("FLEET_CONTROL_PLANE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _up = Killed(child);
    let url = format!("http://127.0.0.1:{port}");
    let admin = admin_client(&url).await?;

    // A service with one replica on every node.
    let repo = git_repo(dir.path())?;
    let project = admin
        .create_project(&CreateProject {
            name: "fleet".into(),
            env: Default::default(),
        })
        .await?;
    let service: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "everywhere",
        "source": {"git": format!("file://{}", repo.display()), "ref": "main"},
        "placement": {"every_node": true},
    }))?;
    let service = admin.create_service(project.id, &service).await?;

    // Enrollment: a token and a join each, 32 at a time.
    let started = Instant::now();
    let nodes = dir.path().join("nodes");
    let cluster = format!("127.0.0.1:{cluster_port}");
    let mut joined = Vec::with_capacity(size);
    for chunk in (0..size).collect::<Vec<_>>().chunks(32) {
        let joins = chunk.iter().map(|&index| {
            let admin = admin.clone();
            let cluster = cluster.clone();
            let data_dir = nodes.join(format!("n{index:05}"));
            async move {
                let token = admin
                    .create_join_token(&CreateJoinToken {
                        ttl_secs: Some(600),
                    })
                    .await?
                    .token;
                nanoscale_agent::cluster::join(JoinOptions {
                    cluster,
                    token,
                    name: format!("n{index:05}"),
                    labels: Default::default(),
                    data_dir: data_dir.clone(),
                })
                .await
                .map_err(|error| anyhow::anyhow!("join {index}: {error}"))?;
                anyhow::Ok(nanoscale_agent::cluster::identity_dir(&data_dir))
            }
        });
        for identity in futures::future::join_all(joins).await {
            joined.push(identity?);
        }
    }
    let enrolled = started.elapsed();
    println!(
        "enrolled {size} nodes in {:.1} s ({:.0} joins/s, each a token, a key pair, a CSR signed by the cluster CA)",
        enrolled.as_secs_f64(),
        size as f64 / enrolled.as_secs_f64()
    );

    let mut agents = Vec::with_capacity(size);
    for identity in &joined {
        agents.push(Agent {
            control_plane: ControlPlane::new("", Credential::Certificate(identity.clone()))?,
            received: Mutex::new((0, Instant::now())),
        });
    }
    let fleet = Arc::new(Fleet {
        agents,
        failures: AtomicUsize::new(0),
        heartbeats_ms: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(4 * size);
    for index in 0..size {
        tasks.push(tokio::spawn(channel(Arc::clone(&fleet), index)));
        tasks.push(tokio::spawn(long_poll(Arc::clone(&fleet), index)));
        tasks.push(tokio::spawn(heartbeat(Arc::clone(&fleet), index)));
        tasks.push(tokio::spawn(log_requests(Arc::clone(&fleet), index)));
    }
    let connect = Instant::now();
    wait_until(Duration::from_secs(120), || {
        fleet.agents.iter().all(|agent| agent.version() >= 1)
    })
    .await
    .context("every agent fetching its first document")?;
    println!(
        "all {size} agents connected and holding a channel within {:.1} s ({} on the long-poll fallback)",
        connect.elapsed().as_secs_f64(),
        fleet
            .agents
            .iter()
            .filter(|agent| !agent.control_plane.channel_up())
            .count()
    );

    // Steady state: a full heartbeat period and more.
    tokio::time::sleep(HEARTBEAT).await;
    let (cpu_before, at_before) = (cpu_ticks(pid)?, Instant::now());
    fleet.heartbeats_ms.lock().map_err(poisoned)?.clear();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let cpu = (cpu_ticks(pid)? - cpu_before) as f64
        / ticks_per_second()
        / at_before.elapsed().as_secs_f64()
        * 100.0;
    let rss_mib = rss_kib(pid)? as f64 / 1024.0;
    let heartbeat_p99 = percentile(&fleet.heartbeats_ms.lock().map_err(poisoned)?, 0.99);
    println!(
        "steady state: control plane {cpu:.0}% of one core, RSS {rss_mib:.0} MiB; heartbeat round trip p99 {heartbeat_p99:.1} ms ({:.0} reports/s)",
        size as f64 / HEARTBEAT.as_secs_f64()
    );

    // Changes: each deploy changes every node's document.
    let mut all = Vec::new();
    let mut missed = 0;
    for round in 1..=3 {
        let before: Vec<i64> = fleet.agents.iter().map(Agent::version).collect();
        let sent = Instant::now();
        admin.deploy(service.id, None).await?;
        let arrived = wait_until(Duration::from_secs(60), || {
            fleet
                .agents
                .iter()
                .zip(&before)
                .all(|(agent, before)| agent.version() > *before)
        })
        .await;
        let mut delays: Vec<f64> = fleet
            .agents
            .iter()
            .zip(&before)
            .filter_map(|(agent, before)| {
                let (version, at) = agent.received.lock().ok().map(|r| *r)?;
                (version > *before)
                    .then(|| at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
            })
            .collect();
        missed += size - delays.len();
        delays.sort_by(f64::total_cmp);
        println!(
            "change {round}: reached {}/{size} agents; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
            delays.len(),
            percentile(&delays, 0.50),
            percentile(&delays, 0.99),
            delays.last().copied().unwrap_or(f64::NAN),
            if arrived.is_err() {
                " (timed out after 60 s)"
            } else {
                ""
            }
        );
        all.extend(delays);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    all.sort_by(f64::total_cmp);
    let rss_after = rss_kib(pid)? as f64 / 1024.0;
    let failures = fleet.failures.load(Ordering::Relaxed);
    let p99 = percentile(&all, 0.99);
    println!("-- {size} agents: summary --");
    println!(
        "change → every agent: p50 {:.0} ms, p99 {p99:.0} ms, max {:.0} ms (target p99 ≤ 2000 ms: {:.2}x of target)",
        percentile(&all, 0.50),
        all.last().copied().unwrap_or(f64::NAN),
        p99 / 2000.0
    );
    println!(
        "control plane RSS {rss_mib:.0} MiB steady, {rss_after:.0} MiB after the changes (target ≤ 512 MiB: {:.2}x; published k3s server ≈ 1.6 GB, not measured here: {:.2}x)",
        rss_after.max(rss_mib) / 512.0,
        rss_after.max(rss_mib) / 1600.0
    );
    println!(
        "heartbeat p99 {heartbeat_p99:.1} ms; dropped agents: {failures} failed requests, {missed} missed changes; {} reports sent",
        fleet.sent.load(Ordering::Relaxed)
    );
    if failures > 0 || missed > 0 {
        println!("NOTE: agents dropped");
    }
    // Stop the agents before the control plane goes.
    for task in tasks {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

impl Agent {
    fn version(&self) -> i64 {
        self.received.lock().map(|r| r.0).unwrap_or(0)
    }
}

/// The agent's channel, held as the agent holds it (it returns only when the
/// control plane refuses the node).
async fn channel(fleet: Arc<Fleet>, index: usize) {
    let connected = tokio::sync::Notify::new();
    let refused = fleet.agents[index]
        .control_plane
        .hold_channel(&connected)
        .await;
    if fleet.failures.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("agent {index}: channel refused: {refused}");
    }
}

async fn long_poll(fleet: Arc<Fleet>, index: usize) {
    let agent = &fleet.agents[index];
    loop {
        let known = agent.version();
        let after = (known > 0).then_some(known);
        match agent.control_plane.desired_state(after).await {
            Ok(document) => {
                if document.version > known {
                    if let Ok(mut received) = agent.received.lock() {
                        *received = (document.version, Instant::now());
                    }
                }
            }
            Err(error) => {
                if fleet.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("agent {index}: long-poll failed: {error}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What every real agent runs for users' log requests: it waits for the
/// control plane's signal on the desired-state long-poll (none comes here).
async fn log_requests(fleet: Arc<Fleet>, index: usize) {
    let agent = &fleet.agents[index];
    loop {
        agent.control_plane.logs_waiting().await;
        if let Err(error) = agent.control_plane.log_requests().await {
            if fleet.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("agent {index}: log-request poll failed: {error}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn heartbeat(fleet: Arc<Fleet>, index: usize) {
    // Spread the fleet over the period, as real agents started at different times.
    let offset = HEARTBEAT.mul_f64((index as f64 * 0.618_034) % 1.0);
    tokio::time::sleep(offset).await;
    let agent = &fleet.agents[index];
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let version = agent.version();
        let report = AgentReport {
            target_version: version,
            applied_version: version,
            convergence: Convergence::Applied,
            problems: Vec::new(),
            instances: Vec::new(),
            releases: Vec::new(),
            events: Vec::new(),
            usage: Some(NodeUsage {
                cpu_percent: 3.0,
                memory_used_bytes: 300 << 20,
                memory_total_bytes: 1 << 30,
                disk_used_bytes: 2 << 30,
                disk_total_bytes: 20 << 30,
                load1: 0.1,
                load5: 0.1,
                load15: 0.1,
            }),
            traffic: Vec::new(),
            firewall: None,
        };
        let sent = Instant::now();
        match agent.control_plane.report(&report).await {
            Ok(_) => {
                fleet.sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut samples) = fleet.heartbeats_ms.lock() {
                    samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Err(error) => {
                if fleet.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("agent {index}: report failed: {error}");
                }
            }
        }
    }
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn percentile(sorted_or_not: &[f64], q: f64) -> f64 {
    let mut values = sorted_or_not.to_vec();
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index]
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |ticks| ticks as f64)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a lock was poisoned")
}

/// A one-commit repository the service is deployed from (under /tmp, which the
/// control plane allows for file:// sources).
fn git_repo(dir: &Path) -> Result<PathBuf> {
    let repo = dir.join("app.git");
    std::fs::create_dir_all(&repo)?;
    std::fs::write(repo.join("Procfile"), "web: python3 -m http.server $PORT\n")?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "app"])?;
    Ok(repo)
}
