//! The proxy process: its listeners, the DNS responder, the control socket, and
//! graceful shutdown. State lives in one directory (mode 0700):
//! `proxy.lock` (held while running, holds the pid), `control.sock` (0600) and
//! `table.json` (the last table applied, loaded at start so a restarted proxy
//! serves at once, before the agent speaks to it).
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nanoscale_core::route::RouteTable;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::access_log::{AccessLog, Destination, Rotation};
use crate::conn::{Meta, Server};
use crate::dns::DnsAnswers;
use crate::forward::{Listener, Proxy};
use crate::table::{compile, validate, Compiled};

pub const CONTROL_SOCKET: &str = "control.sock";
pub const TABLE_FILE: &str = "table.json";
pub const LOCK_FILE: &str = "proxy.lock";
/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(30);
/// Idle keep-alive connections and slow request headers are closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Largest control message (a route table).
const MAX_CONTROL_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub state_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub internal_listen: Option<SocketAddr>,
    pub dns_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub access_log: Destination,
    /// Size rotation of a file access log.
    pub access_log_rotation: Rotation,
}

/// A request on the control socket (one JSON object per line).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Replace the route table.
    Apply { table: RouteTable },
    /// Version served, pid, open connections.
    Status,
    /// Prometheus text.
    Metrics,
    /// Per-route counters as data (the agent's heartbeat carries them).
    Stats,
}

/// The answer to a control request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub connections: usize,
    /// Of those, idle keep-alive connections parked outside the runtime.
    #[serde(default)]
    pub parked: usize,
    /// The listeners it was started with (`None` = off), so a supervisor can tell
    /// a proxy started with other settings.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub internal_listen: Option<SocketAddr>,
    #[serde(default)]
    pub dns_listen: Option<SocketAddr>,
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Vec<crate::metrics::RouteStats>>,
}

struct Running {
    /// The connections' side, and through it the shared `Proxy`.
    server: Arc<Server>,
    dns: Arc<ArcSwap<DnsAnswers>>,
    listen: Option<SocketAddr>,
    internal_listen: Option<SocketAddr>,
    dns_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    state_dir: PathBuf,
    /// Serializes applies (each one swaps and persists).
    apply: tokio::sync::Mutex<()>,
}

/// Runs the proxy until `shutdown` resolves, then drains in-flight requests.
pub async fn run(config: ProxyConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _lock = prepare_state_dir(&config.state_dir)?;
    let table = load_table(&config.state_dir);
    let compiled = compile(table, &Compiled::default());
    let access_log = AccessLog::open(&config.access_log, config.access_log_rotation)
        .context("opening the access log")?;
    let proxy = Arc::new(Proxy::new(compiled, access_log));
    let dns = Arc::new(ArcSwap::from_pointee(DnsAnswers::default()));
    let server = Server::new(proxy.clone(), IDLE);
    let running = Arc::new(Running {
        server: server.clone(),
        dns: dns.clone(),
        listen: config.listen,
        internal_listen: config.internal_listen,
        dns_listen: config.dns_listen,
        metrics_listen: config.metrics_listen,
        state_dir: config.state_dir.clone(),
        apply: tokio::sync::Mutex::new(()),
    });
    running.refresh_dns();

    let mut tasks = tokio::task::JoinSet::new();
    // An external listener on the wildcard address and the internal port (the
    // installed default: 0.0.0.0:80 and 127.0.0.1:80) already holds the internal
    // address: connections to it are told apart by their local address.
    let shared = config
        .internal_listen
        .filter(|internal| covers(config.listen, *internal));
    for (address, listener) in [
        (config.listen, Listener::External),
        (config.internal_listen, Listener::Internal),
    ] {
        let Some(address) = address else { continue };
        if listener == Listener::Internal && shared.is_some() {
            tracing::info!(%address, "internal listener shares the external socket");
            continue;
        }
        let socket = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot listen on {address} ({} listener)",
                listener.as_str()
            )
        })?;
        tracing::info!(%address, listener = listener.as_str(), "proxy listening");
        tasks.spawn(accept(socket, listener, shared, server.clone()));
    }
    if let Some(address) = config.dns_listen {
        let server = crate::dns::bind(address, dns.clone()).await?;
        tracing::info!(%address, "DNS responder listening");
        tasks.spawn(async move {
            if let Err(error) = server.run().await {
                tracing::error!("DNS responder on {address} stopped: {error:#}");
            }
        });
    }
    if let Some(address) = config.metrics_listen {
        let socket = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (metrics)"))?;
        tasks.spawn(serve_metrics(socket, server.clone()));
    }
    let control_path = config.state_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&control_path);
    let control = UnixListener::bind(&control_path)
        .with_context(|| format!("cannot bind {}", control_path.display()))?;
    set_mode(&control_path, 0o600)?;
    tasks.spawn(serve_control(control, running.clone()));

    shutdown.await;
    tracing::info!("proxy stopping: no new connections, draining in-flight requests");
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&control_path);
    // Idle (parked) connections close now; busy ones finish their request.
    server.shutdown.cancel();
    server.stop_parking();
    server.tracker.close();
    if tokio::time::timeout(DRAIN, server.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN:?}");
    }
    Ok(())
}

/// Creates the state directory owner-only and takes the lock (one proxy per
/// directory; the agent tells a running proxy by the held lock).
fn prepare_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another proxy (pid {}) runs on {}; stop it first",
                holder.trim(),
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("locking {}", path.display()))
        }
    }
    use std::io::Write;
    let mut holder = &file;
    holder.set_len(0)?;
    write!(holder, "{}", std::process::id())?;
    Ok(file)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The persisted table, or an empty one (a broken file is logged, not fatal:
/// the agent sends a fresh table right away).
fn load_table(dir: &Path) -> RouteTable {
    let path = dir.join(TABLE_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return RouteTable::default();
    };
    match serde_json::from_slice::<RouteTable>(&bytes) {
        Ok(table) => match validate(&table) {
            Ok(()) => table,
            Err(error) => {
                tracing::warn!("ignoring {}: {error}", path.display());
                RouteTable::default()
            }
        },
        Err(error) => {
            tracing::warn!("ignoring {}: {error}", path.display());
            RouteTable::default()
        }
    }
}

/// Whether a wildcard `listen` on the same port and family also receives the
/// connections to `internal`.
pub fn covers(listen: Option<SocketAddr>, internal: SocketAddr) -> bool {
    listen.is_some_and(|listen| {
        listen.ip().is_unspecified()
            && listen.port() == internal.port()
            && listen.is_ipv4() == internal.is_ipv4()
    })
}

async fn accept(
    socket: TcpListener,
    listener: Listener,
    internal_on: Option<SocketAddr>,
    server: Arc<Server>,
) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let listener = match (internal_on, stream.local_addr()) {
            (Some(internal), Ok(local)) if local == internal => Listener::Internal,
            _ => listener,
        };
        server.accepted(stream, Meta { peer, listener });
    }
}

impl Running {
    fn apply(&self, table: RouteTable) -> Result<u64, String> {
        validate(&table).map_err(|error| error.to_string())?;
        let version = table.version;
        let bytes = serde_json::to_vec(&table).map_err(|error| error.to_string())?;
        let previous = self.server.proxy.table.load();
        let compiled = compile(table, &previous);
        self.server.proxy.table.store(Arc::new(compiled));
        self.refresh_dns();
        // Persist after the swap: a failed write loses only the warm start.
        let path = self.state_dir.join(TABLE_FILE);
        let temporary = self.state_dir.join("table.json.tmp");
        if let Err(error) =
            std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, &path))
        {
            tracing::warn!("cannot save {}: {error}", path.display());
        }
        Ok(version)
    }

    fn refresh_dns(&self) {
        let table = self.server.proxy.table.load();
        let names = table
            .source
            .internal
            .iter()
            .filter_map(|route| route.host.clone())
            .collect();
        let (v4, v6) = match self.internal_listen {
            Some(SocketAddr::V4(address)) => (Some(*address.ip()), None),
            Some(SocketAddr::V6(address)) => (None, Some(*address.ip())),
            None => (None, None),
        };
        self.dns.store(Arc::new(DnsAnswers { names, v4, v6 }));
    }

    fn status(&self) -> ControlResponse {
        ControlResponse {
            ok: true,
            version: self.server.proxy.table.load().source.version,
            pid: std::process::id(),
            connections: self
                .server
                .proxy
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            parked: self.server.parked(),
            listen: self.listen,
            internal_listen: self.internal_listen,
            dns_listen: self.dns_listen,
            metrics_listen: self.metrics_listen,
            ..ControlResponse::default()
        }
    }
}

async fn serve_control(listener: UnixListener, running: Arc<Running>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(control_connection(stream, running.clone()));
    }
}

async fn control_connection(stream: UnixStream, running: Arc<Running>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_CONTROL_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if line.len() > MAX_CONTROL_MESSAGE {
            control_error(format!("message larger than {MAX_CONTROL_MESSAGE} bytes"))
        } else {
            match serde_json::from_slice::<ControlRequest>(&line) {
                Err(error) => control_error(format!("invalid request: {error}")),
                Ok(ControlRequest::Status) => running.status(),
                Ok(ControlRequest::Metrics) => ControlResponse {
                    metrics: Some(metrics_text(&running.server)),
                    ..running.status()
                },
                Ok(ControlRequest::Stats) => ControlResponse {
                    stats: Some(crate::metrics::stats(&running.server.proxy.table.load())),
                    ..running.status()
                },
                Ok(ControlRequest::Apply { table }) => {
                    let _serial = running.apply.lock().await;
                    match running.apply(table) {
                        Ok(_) => running.status(),
                        Err(message) => control_error(message),
                    }
                }
            }
        };
        let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
        bytes.push(b'\n');
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
        if line.len() > MAX_CONTROL_MESSAGE {
            return;
        }
    }
}

fn control_error(message: String) -> ControlResponse {
    ControlResponse {
        ok: false,
        error: Some(message),
        pid: std::process::id(),
        ..ControlResponse::default()
    }
}

fn metrics_text(server: &Server) -> String {
    let proxy = &server.proxy;
    crate::metrics::render(
        &proxy.table.load(),
        &proxy.unrouted,
        proxy.connections.load(std::sync::atomic::Ordering::Relaxed),
        server.parked(),
    )
}

/// `GET /metrics` on its own listener (loopback, for Prometheus).
async fn serve_metrics(socket: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let server = server.clone();
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let server = server.clone();
            async move {
                use http_body_util::BodyExt;
                let (status, body) = if request.uri().path() == "/metrics" {
                    (200, metrics_text(&server))
                } else {
                    (404, "not found: try /metrics\n".to_owned())
                };
                let mut response = http::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(body))
                        .map_err(crate::BoxError::from)
                        .boxed_unsync(),
                );
                *response.status_mut() = http::StatusCode::from_u16(status)
                    .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A client of a running proxy's control socket (used by the agent and tests).
pub struct ControlClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl ControlClient {
    pub async fn connect(state_dir: &Path) -> std::io::Result<ControlClient> {
        let stream = UnixStream::connect(state_dir.join(CONTROL_SOCKET)).await?;
        let (reader, writer) = stream.into_split();
        Ok(ControlClient {
            reader: BufReader::new(reader),
            writer,
        })
    }

    pub async fn call(&mut self, request: &ControlRequest) -> anyhow::Result<ControlResponse> {
        let mut bytes = serde_json::to_vec(request)?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            anyhow::bail!("the proxy closed its control connection");
        }
        let response: ControlResponse = serde_json::from_str(&line)?;
        if !response.ok {
            anyhow::bail!(
                "the proxy refused: {}",
                response.error.as_deref().unwrap_or("no reason given")
            );
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_external_listener_covers_the_internal_address_on_its_port() {
        let internal: SocketAddr = "127.0.0.1:80".parse().unwrap_or_else(|_| unreachable!());
        let parse = |text: &str| text.parse::<SocketAddr>().ok();
        assert!(covers(parse("0.0.0.0:80"), internal));
        assert!(!covers(parse("0.0.0.0:8080"), internal));
        assert!(!covers(parse("127.0.0.1:8080"), internal));
        assert!(!covers(parse("[::]:80"), internal));
        assert!(!covers(None, internal));
    }
}
