//! The structured access log: one JSON line per request (time, listener, route,
//! method, host, path, status, bytes, duration, upstream, request id, client),
//! written by a dedicated thread so a slow disk never stalls a request.
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::forward::Listener;
use crate::table::{CompiledRoute, TargetState};

/// Lines queued before new ones are dropped (and counted) rather than block.
const QUEUE: usize = 16 * 1024;

/// What one request leaves in the log.
pub struct Entry {
    pub started: Instant,
    pub listener: Listener,
    pub route: Option<Arc<CompiledRoute>>,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub upstream: Option<Arc<TargetState>>,
    pub request_id: String,
    pub client: IpAddr,
}

/// Where the log goes.
#[derive(Debug, Clone)]
pub enum Destination {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(value: &str) -> Result<Destination, String> {
        match value {
            "off" => Ok(Destination::Off),
            "stdout" | "-" => Ok(Destination::Stdout),
            path if path.starts_with('/') => Ok(Destination::File(PathBuf::from(path))),
            other => Err(format!(
                "invalid access log {other:?}: use off, stdout or an absolute file path"
            )),
        }
    }
}

pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl AccessLog {
    pub fn open(destination: &Destination) -> std::io::Result<AccessLog> {
        let writer: Box<dyn Write + Send> = match destination {
            Destination::Off => {
                return Ok(AccessLog {
                    sender: None,
                    dropped: Default::default(),
                })
            }
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, receiver) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(receiver, writer))?;
        Ok(AccessLog {
            sender: Some(sender),
            dropped: Default::default(),
        })
    }

    pub fn write(&self, entry: &Entry, bytes: u64, elapsed: Duration) {
        let Some(sender) = &self.sender else {
            return;
        };
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "listener": entry.listener.as_str(),
            "route": entry.route.as_ref().map(|r| r.route.name.as_str()),
            "method": entry.method.as_str(),
            "host": entry.host,
            "path": entry.path,
            "status": entry.status,
            "bytes": bytes,
            "duration_ms": (elapsed.as_micros() as f64) / 1000.0,
            "upstream": entry.upstream.as_ref().map(|t| t.addr.to_string()),
            "instance": entry.upstream.as_ref().map(|t| t.instance.as_str()),
            "request_id": entry.request_id,
            "client": entry.client.to_string(),
        })
        .to_string();
        if let Err(TrySendError::Full(_)) = sender.try_send(line) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn write_lines(receiver: Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    while let Ok(line) = receiver.recv() {
        let _ = writeln!(out, "{line}");
        while let Ok(line) = receiver.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}
