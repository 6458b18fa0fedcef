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
    pub request_id: http::HeaderValue,
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

/// When a file log is rotated: past `max_bytes` it becomes `<file>.1` (the older
/// ones `.2` … `.<keep>`; the oldest is deleted), so a small server's disk never
/// fills with access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_bytes: 50 << 20,
            keep: 3,
        }
    }
}

/// An append-only file that rotates itself by size.
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: std::fs::File,
    written: u64,
}

impl RotatingFile {
    pub fn open(path: PathBuf, rotation: Rotation) -> std::io::Result<RotatingFile> {
        let file = Self::append(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path,
            rotation,
            file,
            written,
        })
    }

    fn append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.rotation.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(self.numbered(self.rotation.keep));
            for n in (1..self.rotation.keep).rev() {
                let _ = std::fs::rename(self.numbered(n), self.numbered(n + 1));
            }
            std::fs::rename(&self.path, self.numbered(1))?;
            self.file = Self::append(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    /// Whole lines go in one `write` (the writer thread hands over line batches),
    /// so a rotation never splits a line between two files.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        let written = self.file.write(bytes)?;
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl AccessLog {
    /// Whether lines are written at all (`off` writes none).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    pub fn open(destination: &Destination, rotation: Rotation) -> std::io::Result<AccessLog> {
        let writer: Box<dyn Write + Send> = match destination {
            Destination::Off => {
                return Ok(AccessLog {
                    sender: None,
                    dropped: Default::default(),
                })
            }
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(RotatingFile::open(path.clone(), rotation)?),
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
            "request_id": entry.request_id.to_str().unwrap_or_default(),
            "client": entry.client.to_string(),
        })
        .to_string();
        if let Err(TrySendError::Full(_)) = sender.try_send(line) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Batches what is queued into whole lines and hands each batch to the writer in
/// one `write_all` (at most 64 KiB, so a rotation lands between lines).
fn write_lines(receiver: Receiver<String>, mut writer: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(64 * 1024);
    while let Ok(line) = receiver.recv() {
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
        while batch.len() < 64 * 1024 {
            let Ok(line) = receiver.try_recv() else {
                break;
            };
            batch.extend_from_slice(line.as_bytes());
            batch.push(b'\n');
        }
        let _ = writer.write_all(&batch);
        let _ = writer.flush();
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rotates_by_size_between_lines_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let mut file = RotatingFile::open(path.clone(), rotation).expect("open");
        for n in 0..20 {
            file.write_all(format!("line {n:02} of the access log\n").as_bytes())
                .expect("write");
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        for name in ["access.log", "access.log.1", "access.log.2"] {
            let text = read(name);
            assert!(!text.is_empty() && text.len() <= 100, "{name}: {text:?}");
            assert!(
                text.lines().all(|l| l.ends_with("of the access log")),
                "{name}: whole lines"
            );
        }
        assert!(
            !dir.path().join("access.log.3").exists(),
            "only `keep` old files"
        );
        assert!(
            read("access.log").contains("line 19"),
            "the newest line is in the live file"
        );
        // Reopened, it goes on from the size already there.
        drop(file);
        let mut again = RotatingFile::open(path, rotation).expect("reopen");
        again.write_all(&[b'x'; 90]).expect("write");
        assert!(read("access.log").len() <= 100);
    }
}
