//! Deploy-engine benchmark (issue 3), against a named peer in the same run:
//!
//! - **deploy → first healthy response** of a no-build Python app (the
//!   `python-http` fixture, run from its Procfile): from the `POST …/deploy` to the
//!   first 200 from the new release's instance, five deploys of new commits. Peer:
//!   the same app started directly by this driver (`python3 app.py`), spawn → first
//!   200, the floor any supervisor can reach.
//! - **deploy → first healthy response** of a small Node app with a dependency
//!   install (the `node-deps` fixture: `npm ci` of one locked package, then
//!   `npm start`), three deploys of new commits after one that fills the app's npm
//!   cache. Peer: this driver doing the same by hand, a fresh `git clone`, `npm ci`
//!   and `node server.js` to the first 200, after one round that fills its cache.
//! - **RSS**: the agent idle and with 20 running instances, and the shim per
//!   instance. Peer: coreutils `sleep`, about the smallest process there is.
//!
//! Usage: bench/run deploy  (builds release binaries first)
#![allow(clippy::disallowed_methods)] // a benchmark driver starts the processes it measures

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nanoscale_bench::{
    admin_client, free_port, git, median, pss_uss_kib, rss_kib, start_up, Killed,
};
use nanoscale_client::Client;
use nanoscale_core::api::CreateProject;
use nanoscale_core::service::ServiceSpec;
use uuid::Uuid;

const DEPLOYS: usize = 5;
const INSTANCES: u32 = 20;
/// Timed rounds of the dependency-install case (each after one warm-up).
const DEP_DEPLOYS: usize = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let binary = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/nanoscale"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/nanoscale/tests/fixtures/apps/python-http");
    let work = tempfile::Builder::new()
        .prefix("nanoscale-bench-")
        .tempdir_in("/tmp")?;
    let repo = work.path().join("app");
    std::fs::create_dir(&repo)?;
    for file in ["app.py", "Procfile"] {
        std::fs::copy(fixture.join(file), repo.join(file))?;
    }
    git(&repo, &["init", "-q", "-b", "main"])?;

    // Peer: the app started directly.
    let mut direct = Vec::new();
    for _ in 0..DEPLOYS {
        let port = free_port()?;
        let started = Instant::now();
        let _app = Killed(
            Command::new("/usr/bin/python3")
                .arg("app.py")
                .current_dir(&repo)
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .spawn()?,
        );
        wait_answer(port, "").await?;
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let data = work.path().join("data");
    let (_server, url) = start_up(&binary, &data)?;
    let client = admin_client(&url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_pid = agent_pid(&data)?;
    let agent_idle = rss_kib(agent_pid)?;

    let project = client
        .create_project(&CreateProject {
            name: "bench".into(),
            env: Default::default(),
        })
        .await?;
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "web",
        "source": {"git": format!("file://{}", repo.display())},
        "health": {"path": "/healthz", "interval_secs": 1},
    }))?;
    let service = client.create_service(project.id, &spec).await?;

    let mut deploys = Vec::new();
    for round in 0..DEPLOYS {
        let version = format!("v{round}");
        std::fs::write(repo.join("VERSION"), &version)?;
        git(&repo, &["add", "-A"])?;
        git(&repo, &["commit", "-q", "-m", &version])?;
        let started = Instant::now();
        let release = client.deploy(service.id, None).await?;
        let port = instance_port(&client, service.id, release.number).await?;
        wait_answer(port, &version).await?;
        deploys.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let (node_direct, node_deploys) = node_with_deps(&client, project.id, work.path()).await?;

    let patch: nanoscale_core::service::ServicePatch =
        serde_json::from_value(serde_json::json!({"replicas": INSTANCES}))?;
    client.update_service(service.id, &patch).await?;
    let release = client.deploy(service.id, None).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let healthy = client
            .list_instances(service.id)
            .await?
            .iter()
            .filter(|i| {
                i.release_number == release.number
                    && i.status == nanoscale_core::agent::InstanceStatus::Healthy
            })
            .count();
        if healthy as u32 == INSTANCES {
            break;
        }
        if Instant::now() > deadline {
            bail!("{INSTANCES} instances did not become healthy in 120 s ({healthy} did)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_busy = rss_kib(agent_pid)?;
    let shims = shim_pids(&data)?;
    let shim_rss: Vec<f64> = shims
        .iter()
        .filter_map(|pid| rss_kib(*pid).ok())
        .map(|kib| kib as f64)
        .collect();
    let (shim_pss, shim_uss): (Vec<f64>, Vec<f64>) = shims
        .iter()
        .filter_map(|pid| pss_uss_kib(*pid).ok())
        .map(|(pss, uss)| (pss as f64, uss as f64))
        .unzip();
    let sleep = Killed(Command::new("sleep").arg("30").spawn()?);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sleep_rss = rss_kib(sleep.0.id())? as f64;
    let (sleep_pss, sleep_uss) = pss_uss_kib(sleep.0.id())?;

    let deploy_ms = median(deploys.clone());
    let direct_ms = median(direct.clone());
    println!(
        "deploy → first healthy response, no-build Python app ({DEPLOYS} deploys of new commits)"
    );
    println!(
        "  NanoScale  median {deploy_ms:7.0} ms   all {:?}",
        rounded(&deploys)
    );
    println!("  direct     median {direct_ms:7.0} ms   all {:?}  (python3 app.py spawned by this driver)", rounded(&direct));
    println!(
        "  ratio      {:.2}x   (target: ≤ 1,500 ms)",
        deploy_ms / direct_ms
    );
    println!();
    let node_ms = median(node_deploys.clone());
    let node_direct_ms = median(node_direct.clone());
    println!("deploy → first healthy response, Node app with `npm ci` of one dependency ({DEP_DEPLOYS} deploys after a warm-up)");
    println!(
        "  NanoScale  median {node_ms:7.0} ms   all {:?}",
        rounded(&node_deploys)
    );
    println!(
        "  by hand    median {node_direct_ms:7.0} ms   all {:?}  (git clone + npm ci + node server.js by this driver)",
        rounded(&node_direct)
    );
    println!("  ratio      {:.2}x", node_ms / node_direct_ms);
    println!();
    println!("memory (VmRSS)");
    println!(
        "  agent idle                {:7.1} MiB  (target ≤ 20 MiB)",
        agent_idle as f64 / 1024.0
    );
    println!(
        "  agent with {INSTANCES} instances     {:7.1} MiB",
        agent_busy as f64 / 1024.0
    );
    println!(
        "  shim per instance         {:7.2} MiB  median of {} (target ≤ 2 MiB)",
        median(shim_rss.clone()) / 1024.0,
        shim_rss.len()
    );
    println!("  coreutils sleep (peer)    {:7.2} MiB", sleep_rss / 1024.0);
    println!(
        "  shim PSS / USS            {:7.2} / {:.2} MiB  (USS: what one more instance's shim costs)",
        median(shim_pss) / 1024.0,
        median(shim_uss) / 1024.0
    );
    println!(
        "  sleep PSS / USS           {:7.2} / {:.2} MiB",
        sleep_pss as f64 / 1024.0,
        sleep_uss as f64 / 1024.0
    );
    println!(
        "  ratio shim / sleep        {:.2}x",
        median(shim_rss) / sleep_rss
    );
    Ok(())
}

/// The dependency-install case: (by hand, NanoScale) times in ms. The service is
/// removed afterwards so the memory figures count only the Python instances.
async fn node_with_deps(
    client: &Client,
    project: Uuid,
    work: &Path,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/nanoscale/tests/fixtures/apps/node-deps");
    let repo = work.join("node-app");
    std::fs::create_dir(&repo)?;
    for file in ["package.json", "package-lock.json", "server.js"] {
        std::fs::copy(fixture.join(file), repo.join(file))?;
    }
    git(&repo, &["init", "-q", "-b", "main"])?;
    let commit = |version: &str| -> Result<()> {
        std::fs::write(repo.join("VERSION"), version)?;
        git(&repo, &["add", "-A"])?;
        git(&repo, &["commit", "-q", "-m", version])
    };
    commit("n0")?;

    let mut by_hand = Vec::new();
    for round in 0..=DEP_DEPLOYS {
        let dir = work.join(format!("by-hand-{round}"));
        let started = Instant::now();
        let source = format!("file://{}", repo.display());
        let dir_arg = dir.to_string_lossy().into_owned();
        git(work, &["clone", "-q", "--depth", "1", &source, &dir_arg])?;
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .status()?;
        if !installed.success() {
            bail!("npm ci failed in {}", dir.display());
        }
        let port = free_port()?;
        let _app = Killed(
            Command::new("node")
                .arg("server.js")
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .spawn()?,
        );
        wait_answer(port, "n0").await?;
        if round > 0 {
            by_hand.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "api",
        "source": {"git": format!("file://{}", repo.display())},
        "health": {"path": "/healthz", "interval_secs": 1},
    }))?;
    let service = client.create_service(project, &spec).await?;
    let mut deploys = Vec::new();
    for round in 0..=DEP_DEPLOYS {
        let version = format!("n{}", round + 1);
        commit(&version)?;
        let started = Instant::now();
        let release = client.deploy(service.id, None).await?;
        let port = instance_port(client, service.id, release.number).await?;
        wait_answer(port, &version).await?;
        if round > 0 {
            deploys.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    client.delete_service(service.id).await?;
    Ok((by_hand, deploys))
}

fn rounded(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.round() as u64).collect()
}

fn agent_pid(data: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(data.join("agent/agent.lock")).context("agent lock file")?;
    Ok(text.trim().parse()?)
}

fn shim_pids(data: &Path) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(data.join("apps/web/instances"))?.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("shim.pid")) {
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

async fn instance_port(client: &Client, service: Uuid, release: i64) -> Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let instances = client.list_instances(service).await?;
        if let Some(instance) = instances.iter().find(|i| i.release_number == release) {
            return Ok(instance.port);
        }
        if Instant::now() > deadline {
            bail!("release {release} got no instance in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until GET / answers 200 with a body containing `expect`.
async fn wait_answer(port: u16, expect: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/")).send().await {
            if response.status().is_success() && response.text().await?.contains(expect) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("port {port} did not answer in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
