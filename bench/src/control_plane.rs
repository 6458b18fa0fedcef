//! Control-plane benchmark (issue 2): idle RSS after start-up and after 1,000
//! projects each with a service exist, and p50/p99 latency of `GET /api/v1/projects`
//! under 50 concurrent clients, measured with wrk against NanoScale and against
//! nginx serving the very same response bytes from a file on the same machine (the
//! floor any dynamic API can reach). Prints both and their ratio.
//!
//! Usage: bench/run control-plane  (builds release binaries first)
#![allow(clippy::disallowed_methods)] // a benchmark driver starts the peers it measures

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use nanoscale_bench::{free_port, rss_kib, wait_ready, wrk, Killed, Terminated, Wrk};
use nanoscale_client::Client;
use nanoscale_core::api::{CreateProject, CreateToken, Credentials};
use nanoscale_core::service::ServiceSpec;
use nanoscale_core::Role;

const PROJECTS: usize = 1000;
const CONNECTIONS: u32 = 50;
const DURATION_SECS: u32 = 10;

#[tokio::main]
async fn main() -> Result<()> {
    let binary = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/nanoscale"));
    let work = tempfile::tempdir()?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let server = Killed(
        Command::new(&binary)
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(work.path().join("data"))
            // The control plane alone: its services are never deployed.
            .arg("--no-agent")
            .env("NANOSCALE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    let anonymous = Client::new(&url, None)?;
    wait_ready(&anonymous).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = rss_kib(server.0.id())?;

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
    let client = Client::new(&url, Some(token.clone()))?;

    let started = Instant::now();
    stream::iter(0..PROJECTS)
        .map(|i| {
            let client = client.clone();
            async move {
                let project = client
                    .create_project(&CreateProject {
                        name: format!("project-{i}"),
                        env: Default::default(),
                    })
                    .await?;
                let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
                    "name": format!("service-{i}"),
                    "source": {"git": "https://example.com/app.git"},
                    "env": {"MODE": "production"},
                    "routes": [{"host": format!("app{i}.example.com")}],
                }))?;
                client.create_service(project.id, &spec).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    let populate = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_populated = rss_kib(server.0.id())?;

    // The peer serves the identical body, so both sides move the same bytes.
    let body = serde_json::to_value(client.list_projects().await?)?;
    let root = work.path().join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("projects.json"), serde_json::to_vec(&body)?)?;
    let nginx_port = free_port()?;
    let _nginx = start_nginx(work.path(), &root, nginx_port)?;

    let auth = format!("Authorization: Bearer {token}");
    let ours = wrk(&Wrk::new(
        &format!("{url}/api/v1/projects"),
        CONNECTIONS,
        DURATION_SECS,
    )
    .header(&auth))?;
    let peer = wrk(&Wrk::new(
        &format!("http://127.0.0.1:{nginx_port}/projects.json"),
        CONNECTIONS,
        DURATION_SECS,
    ))?;
    let rss_after_load = rss_kib(server.0.id())?;

    println!(
        "control plane benchmark ({PROJECTS} projects + {PROJECTS} services; response {} KiB)",
        serde_json::to_vec(&body)?.len() / 1024
    );
    println!(
        "  populate: {:.1} s ({:.0} creates/s)",
        populate.as_secs_f64(),
        (2 * PROJECTS) as f64 / populate.as_secs_f64()
    );
    println!(
        "  RSS idle after start-up:      {:>6.1} MiB (target <= 40)",
        rss_start as f64 / 1024.0
    );
    println!(
        "  RSS idle with {PROJECTS} projects:   {:>6.1} MiB (target <= 40)",
        rss_populated as f64 / 1024.0
    );
    println!(
        "  RSS after the load run:       {:>6.1} MiB",
        rss_after_load as f64 / 1024.0
    );
    println!("  GET /api/v1/projects, {CONNECTIONS} connections, {DURATION_SECS} s, wrk:");
    println!(
        "    {:<28} {:>9} {:>9} {:>9} {:>10}",
        "", "p50 ms", "p99 ms", "req/s", "non-2xx"
    );
    for (name, result) in [("nanoscale", &ours), ("nginx static file (peer)", &peer)] {
        println!(
            "    {:<28} {:>9.2} {:>9.2} {:>9.0} {:>10}",
            name, result.p50_ms, result.p99_ms, result.requests_per_sec, result.errors
        );
    }
    println!(
        "  ratio nanoscale/nginx: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x (target p99 <= 20 ms)",
        ours.p50_ms / peer.p50_ms,
        ours.p99_ms / peer.p99_ms,
        ours.requests_per_sec / peer.requests_per_sec
    );
    if ours.errors > 0 {
        bail!("{} non-2xx responses from nanoscale", ours.errors);
    }
    Ok(())
}

fn start_nginx(work: &Path, root: &Path, port: u16) -> Result<Terminated> {
    let config = work.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "worker_processes auto;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; default_type application/json;\n\
               client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;\n\
               uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            work = work.display(),
            root = root.display()
        ),
    )?;
    let child = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Terminated(child))
}
