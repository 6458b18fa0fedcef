//! `bench/run proxy`: NanoScale's proxy against nginx as a reverse proxy, side by
//! side in one run, in front of the same upstream (an nginx answering a small
//! body with `return 200` and a 1 MiB file with sendfile).
//!
//! Both proxies are pinned to CPU 0 with one worker (nginx `worker_processes 1`,
//! ours `--workers 1`); the upstream and wrk share CPU 1. Cases: small responses
//! over keep-alive, 1 MiB responses over keep-alive, a new connection per request;
//! then the RSS of each proxy (fresh processes) holding 10,000 idle keep-alive
//! client connections that each completed one request. Everything binds to
//! 127.0.0.1 on free ports; each wrk run is bounded in time.
#![allow(clippy::disallowed_methods)] // a benchmark driver starts the processes it measures

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nanoscale_bench::{free_port, rss_kib, wrk, Terminated, Wrk, WrkResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: u32 = 50;
const DURATION_SECS: u32 = 8;
const WARM_UP_SECS: u32 = 2;
const IDLE_CONNECTIONS: usize = 10_000;
const SMALL_BODY: &str = "hello, world\n";
const PROXY_CPU: &str = "0";
const LOAD_CPU: &str = "1";

#[tokio::main]
async fn main() -> Result<()> {
    let binary = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: proxy <path to the nanoscale binary>")?,
    );
    let help = Command::new(&binary).args(["proxy", "--help"]).output()?;
    if !help.status.success() {
        bail!(
            "{} has no `proxy` subcommand: build it with cargo build --release -p nanoscale",
            binary.display()
        );
    }
    raise_fd_limit()?;
    let work = tempfile::tempdir()?;
    let dir = work.path();
    std::fs::write(dir.join("big.bin"), vec![b'x'; 1 << 20])?;

    let upstream_port = free_port()?;
    let _upstream = nginx(
        dir,
        "upstream",
        LOAD_CPU,
        &upstream_conf(dir, upstream_port),
    )?;
    wait_port(upstream_port)?;
    let nginx_version =
        String::from_utf8_lossy(&Command::new("/usr/sbin/nginx").arg("-v").output()?.stderr)
            .trim()
            .replace("nginx version: ", "");

    println!(
        "proxy benchmark: NanoScale proxy vs {nginx_version} as a reverse proxy, same upstream"
    );
    println!(
        "  pinning: each proxy on CPU {PROXY_CPU} with 1 worker; upstream nginx and wrk on CPU {LOAD_CPU}"
    );
    println!(
        "  load: wrk -t1 -c{CONNECTIONS} -d{DURATION_SECS}s after a {WARM_UP_SECS} s warm-up; both add X-Forwarded-For/-Proto/-Host and X-Request-Id, no access log; nginx keeps upstream keep-alive (64) and its default response buffering"
    );
    println!();

    let (ours, ours_port) = start_ours(&binary, dir, "ours", upstream_port)?;
    let (peer, peer_port) = start_peer(dir, "peer", upstream_port)?;
    let cases: [(&str, &str, Option<&str>); 3] = [
        ("small, keep-alive", "/small", None),
        ("1 MiB, keep-alive", "/big", None),
        ("new connection each", "/small", Some("Connection: close")),
    ];
    println!(
        "  {:<22} {:>22} {:>22} {:>18}",
        "case", "NanoScale req/s p50/p99", "nginx req/s p50/p99", "ratio req/s | p99"
    );
    let mut verdicts = Vec::new();
    for (name, path, header) in cases {
        // nginx first, then ours, so drift over the run affects both.
        let peer_result = measure(peer_port, path, header)?;
        let our_result = measure(ours_port, path, header)?;
        let throughput = our_result.requests_per_sec / peer_result.requests_per_sec;
        let p99 = our_result.p99_ms / peer_result.p99_ms;
        println!(
            "  {:<22} {:>22} {:>22} {:>9.2}x | {:.2}x",
            name,
            show(&our_result),
            show(&peer_result),
            throughput,
            p99
        );
        if path == "/big" {
            println!(
                "  {:<22} {:>22} {:>22}",
                "",
                format!("{:.0} MiB/s", our_result.transfer_mib_per_sec),
                format!("{:.0} MiB/s", peer_result.transfer_mib_per_sec)
            );
        }
        if our_result.errors + peer_result.errors > 0 {
            println!(
                "  errors: NanoScale {}, nginx {}",
                our_result.errors, peer_result.errors
            );
        }
        verdicts.push((
            format!("{name}: throughput ≥ 1.0x"),
            throughput >= 1.0,
            format!("{throughput:.2}x"),
        ));
        verdicts.push((
            format!("{name}: p99 ≤ 1.0x"),
            p99 <= 1.0,
            format!("{p99:.2}x"),
        ));
    }
    drop(ours);
    drop(peer);

    // Memory: fresh processes, 10,000 idle keep-alive connections each.
    let (ours, ours_port) = start_ours(&binary, dir, "ours-idle", upstream_port)?;
    let (peer, peer_port) = start_peer(dir, "peer-idle", upstream_port)?;
    let our_base = rss_kib(ours.0.id())?;
    let peer_base = tree_rss_kib(peer.0.id())?;
    let held_ours = hold_idle(ours_port).await?;
    let our_idle = rss_kib(ours.0.id())?;
    drop(held_ours);
    let held_peer = hold_idle(peer_port).await?;
    let peer_idle = tree_rss_kib(peer.0.id())?;
    drop(held_peer);
    let memory = our_idle as f64 / peer_idle as f64;
    println!();
    println!(
        "  RSS with {IDLE_CONNECTIONS} idle keep-alive connections: NanoScale {:.1} MiB (idle start {:.1} MiB), nginx master+worker {:.1} MiB (start {:.1} MiB): {memory:.2}x",
        our_idle as f64 / 1024.0,
        our_base as f64 / 1024.0,
        peer_idle as f64 / 1024.0,
        peer_base as f64 / 1024.0,
    );
    verdicts.push((
        "memory with 10,000 idle connections ≤ 1.5x".to_owned(),
        memory <= 1.5,
        format!("{memory:.2}x"),
    ));
    println!();
    for (target, met, figure) in verdicts {
        let verdict = if met { "meets" } else { "misses" };
        println!("  {verdict:<6} {target} ({figure})");
    }
    Ok(())
}

fn show(result: &WrkResult) -> String {
    format!(
        "{:.0} {:.2}/{:.2} ms",
        result.requests_per_sec, result.p50_ms, result.p99_ms
    )
}

fn measure(port: u16, path: &str, header: Option<&str>) -> Result<WrkResult> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let run = |secs: u32| {
        let mut run = Wrk::new(&url, CONNECTIONS, secs);
        run.threads = 1;
        run.cpus = Some(LOAD_CPU.to_owned());
        if let Some(header) = header {
            run = run.header(header);
        }
        wrk(&run)
    };
    run(WARM_UP_SECS)?;
    run(DURATION_SECS)
}

/// `nanoscale proxy` pinned to the proxy CPU, routing everything to the upstream.
fn start_ours(binary: &Path, dir: &Path, name: &str, upstream: u16) -> Result<(Terminated, u16)> {
    let state = dir.join(name);
    std::fs::create_dir_all(&state)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    let table = serde_json::json!({
        "version": 1,
        "external": [{
            "name": "bench:/",
            "path": "/",
            "backend": {"upstreams": {"service": "bench", "targets": [
                {"addr": format!("127.0.0.1:{upstream}"), "instance": "upstream-1"}
            ]}}
        }],
        "internal": []
    });
    std::fs::write(state.join("table.json"), serde_json::to_vec(&table)?)?;
    let port = free_port()?;
    let child = Command::new("taskset")
        .args(["-c", PROXY_CPU])
        .arg(binary)
        .args(["proxy", "--state-dir"])
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--workers", "1", "--access-log", "off"])
        .env("NANOSCALE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting nanoscale proxy")?;
    let killed = Terminated(child);
    wait_port(port)?;
    Ok((killed, port))
}

fn start_peer(dir: &Path, name: &str, upstream: u16) -> Result<(Terminated, u16)> {
    let port = free_port()?;
    let work = dir.join(name);
    std::fs::create_dir_all(&work)?;
    let conf = format!(
        "{common}\
         events {{ worker_connections 20000; }}\n\
         http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;\n\
           {temps}\n\
           upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}\n\
           server {{ listen 127.0.0.1:{port} backlog=1024;\n\
             location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\"; proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;\n\
               proxy_set_header X-Request-Id $request_id; add_header X-Request-Id $request_id; }} }} }}\n",
        common = common_conf(&work),
        temps = temp_paths(&work),
    );
    let killed = nginx(&work, name, PROXY_CPU, &conf)?;
    wait_port(port)?;
    Ok((killed, port))
}

fn upstream_conf(dir: &Path, port: u16) -> String {
    format!(
        "{common}\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s; sendfile on; tcp_nopush on;\n\
           {temps}\n\
           server {{ listen 127.0.0.1:{port} backlog=1024;\n\
             location = /small {{ default_type text/plain; return 200 \"{body}\"; }}\n\
             location = /big {{ default_type application/octet-stream; alias {dir}/big.bin; }} }} }}\n",
        common = common_conf(dir),
        temps = temp_paths(dir),
        body = SMALL_BODY.replace('\n', "\\n"),
        dir = dir.display(),
    )
}

fn common_conf(work: &Path) -> String {
    format!(
        "worker_processes 1;\nworker_rlimit_nofile 65536;\npid {w}/nginx.pid;\nerror_log {w}/error.log;\ndaemon off;\nmaster_process on;\n",
        w = work.display()
    )
}

fn temp_paths(work: &Path) -> String {
    format!(
        "client_body_temp_path {w}/body; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fcgi; uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;",
        w = work.display()
    )
}

fn nginx(work: &Path, name: &str, cpu: &str, conf: &str) -> Result<Terminated> {
    std::fs::create_dir_all(work)?;
    let path = work.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let child = Command::new("taskset")
        .args(["-c", cpu, "/usr/sbin/nginx", "-p"])
        .arg(work)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")?;
    Ok(Terminated(child))
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// RSS of a process and its direct children (nginx's master and worker).
fn tree_rss_kib(pid: u32) -> Result<u64> {
    let mut total = rss_kib(pid)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so split after ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            if let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                total += rss_kib(child).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Opens `IDLE_CONNECTIONS` connections, completes one small request on each,
/// and returns them open.
async fn hold_idle(port: u16) -> Result<Vec<tokio::net::TcpStream>> {
    let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
    while held.len() < IDLE_CONNECTIONS {
        let batch = (IDLE_CONNECTIONS - held.len()).min(500);
        let opened = futures::future::try_join_all((0..batch).map(|_| one_request(port))).await?;
        held.extend(opened);
    }
    // Idle for a few seconds, as such connections are (NanoScale parks a
    // connection after 1-2 s without traffic).
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(held)
}

async fn one_request(port: u16) -> Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.ends_with(SMALL_BODY.as_bytes()) {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .context("no response within 10 s")??;
        if read == 0 {
            bail!("the proxy closed an idle-test connection");
        }
        received.extend_from_slice(&buffer[..read]);
    }
    Ok(stream)
}

fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    // Root may raise the hard limit too; otherwise use what there is. Each process
    // (this client, each proxy) needs one descriptor per connection plus a few.
    let wanted = 65_536u64;
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted.max(hard)).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < IDLE_CONNECTIONS as u64 + 1000 {
        bail!("RLIMIT_NOFILE {soft} is too low for {IDLE_CONNECTIONS} connections");
    }
    Ok(())
}
