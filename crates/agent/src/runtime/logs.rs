//! Reading an instance's rotated logs: the last lines (`tail`) and what came after
//! a position (`read_from`, for `nanoscale logs -f`), across rotations.
//!
//! A `LogCursor` names a file by inode, not by name, because rotation renames files
//! under the reader: the file the cursor was in may be `current.3` by the next call.
//! The writer renames a file only after its last line, so once the cursor's file is
//! no longer `current` it is complete, and every file rotated after it is newer.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::logwriter::{rotated_name, CURRENT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 UTC with milliseconds, as the shim wrote it.
    pub at: String,
    pub stream: Stream,
    pub text: String,
}

/// A position in the log: the file (by inode) and the byte offset after the last
/// complete line read from it. The default cursor is "before everything".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    inode: u64,
    offset: u64,
    /// A hash of the file's first bytes: inode numbers are reused once a file is
    /// deleted, and a new `current` must not be mistaken for the cursor's old file.
    head: u64,
}

impl LogCursor {
    fn at(file: &mut File, inode: u64, offset: u64) -> LogCursor {
        LogCursor {
            inode,
            offset,
            head: head_hash(file, offset),
        }
    }

    /// Whether `file` is the one this cursor points into.
    fn is_in(&self, file: &mut File, inode: u64) -> bool {
        // At offset 0 nothing was read from it, so reading it from the start is right
        // whatever file it is.
        inode == self.inode && (self.offset == 0 || head_hash(file, self.offset) == self.head)
    }
}

/// FNV-1a of the first `min(limit, 64)` bytes; the first line starts with a
/// millisecond timestamp, so two files almost never share it.
fn head_hash(file: &mut File, limit: u64) -> u64 {
    let mut bytes = [0u8; 64];
    let wanted = usize::try_from(limit.min(64)).unwrap_or(64);
    if file.seek(SeekFrom::Start(0)).is_err() || file.read_exact(&mut bytes[..wanted]).is_err() {
        return 0;
    }
    bytes[..wanted]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Rotated files kept beyond this are not looked at (the writer keeps far fewer).
const MAX_ROTATED: u32 = 1000;
const CHUNK: u64 = 64 * 1024;

/// The last `n` lines across `current` and the rotated files, oldest first, and a
/// cursor just after them.
pub fn tail(log_dir: &Path, n: usize) -> (Vec<LogLine>, LogCursor) {
    let Some((mut file, inode)) = open(&log_dir.join(CURRENT)) else {
        return (Vec::new(), LogCursor::default());
    };
    let end = complete_end(&mut file);
    let cursor = LogCursor::at(&mut file, inode, end);
    let mut newest_first: Vec<String> = last_lines(&mut file, end, n);
    let mut index = 1;
    while newest_first.len() < n && index <= MAX_ROTATED {
        let Some((mut rotated, _)) = open(&log_dir.join(rotated_name(index))) else {
            break;
        };
        let length = rotated.metadata().map(|meta| meta.len()).unwrap_or(0);
        newest_first.extend(last_lines(&mut rotated, length, n - newest_first.len()));
        index += 1;
    }
    let lines = newest_first
        .iter()
        .rev()
        .map(|line| parse_line(line))
        .collect();
    (lines, cursor)
}

/// The complete lines written since `cursor`, oldest first; moves the cursor past
/// them. After a rotation it finishes the file the cursor was in, reads the files
/// rotated since, then continues in the new `current`.
pub fn read_from(log_dir: &Path, cursor: &mut LogCursor) -> Vec<LogLine> {
    let Some((mut current, current_inode)) = open(&log_dir.join(CURRENT)) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    if !cursor.is_in(&mut current, current_inode) {
        // Rotated files from newest (current.1) back to the cursor's own file, or
        // to the oldest kept if the cursor's file is gone (all kept ones are newer).
        let mut newer = Vec::new();
        let mut found = None;
        for index in 1..=MAX_ROTATED {
            let Some((mut file, inode)) = open(&log_dir.join(rotated_name(index))) else {
                break;
            };
            if cursor.is_in(&mut file, inode) {
                found = Some(file);
                break;
            }
            newer.push(file);
        }
        if let Some(mut file) = found {
            read_lines(&mut file, cursor.offset, true, &mut lines);
        }
        for mut file in newer.into_iter().rev() {
            read_lines(&mut file, 0, true, &mut lines);
        }
        *cursor = LogCursor::at(&mut current, current_inode, 0);
    }
    let offset = read_lines(&mut current, cursor.offset, false, &mut lines);
    *cursor = LogCursor::at(&mut current, current_inode, offset);
    lines.iter().map(|line| parse_line(line)).collect()
}

/// Parses `<at> <o|e> <text>`; anything else is kept whole as stdout text.
pub fn parse_line(line: &str) -> LogLine {
    let mut parts = line.splitn(3, ' ');
    let (at, stream, text) = (parts.next(), parts.next(), parts.next());
    let stream = match stream {
        Some("o") => Some(Stream::Stdout),
        Some("e") => Some(Stream::Stderr),
        _ => None,
    };
    match (at, stream) {
        (Some(at), Some(stream)) => LogLine {
            at: at.to_owned(),
            stream,
            text: text.unwrap_or("").to_owned(),
        },
        _ => LogLine {
            at: String::new(),
            stream: Stream::Stdout,
            text: line.to_owned(),
        },
    }
}

fn open(path: &Path) -> Option<(File, u64)> {
    let file = File::open(path).ok()?;
    let inode = file.metadata().ok()?.ino();
    Some((file, inode))
}

/// Reads from `offset` to the end and appends the lines; a final line without its
/// newline counts only in a finished (rotated) file. Returns the offset after the
/// last line taken.
fn read_lines(file: &mut File, offset: u64, finished: bool, lines: &mut Vec<String>) -> u64 {
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return offset;
    }
    let complete = match bytes.iter().rposition(|byte| *byte == b'\n') {
        Some(last) => last + 1,
        None => 0,
    };
    let taken = if finished { bytes.len() } else { complete };
    let text = &bytes[..taken];
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if taken > 0 {
        lines.extend(
            text.split(|byte| *byte == b'\n')
                .map(|piece| String::from_utf8_lossy(piece).into_owned()),
        );
    }
    offset + taken as u64
}

/// The offset just after the last newline of `file` (the writer may be mid-line).
fn complete_end(file: &mut File) -> u64 {
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let mut end = length;
    let mut buffer = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let size = (end - start) as usize;
        if file.seek(SeekFrom::Start(start)).is_err()
            || file.read_exact(&mut buffer[..size]).is_err()
        {
            return 0;
        }
        if let Some(newline) = buffer[..size].iter().rposition(|byte| *byte == b'\n') {
            return start + newline as u64 + 1;
        }
        end = start;
    }
    0
}

/// Up to `n` lines ending at `end` (a line boundary), newest first, reading backwards
/// in chunks so a large file is not read whole for a short tail.
fn last_lines(file: &mut File, end: u64, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut position = end;
    let mut buffer = vec![0u8; CHUNK as usize];
    while lines.len() < n && position > 0 {
        let start = position.saturating_sub(CHUNK);
        let size = (position - start) as usize;
        if file.seek(SeekFrom::Start(start)).is_err()
            || file.read_exact(&mut buffer[..size]).is_err()
        {
            break;
        }
        let mut chunk = buffer[..size].to_vec();
        chunk.extend_from_slice(&carry);
        // Everything after the first newline in `chunk` is made of whole lines; the
        // part before it may continue in the previous chunk.
        let mut pieces: Vec<&[u8]> = chunk.split(|byte| *byte == b'\n').collect();
        // Only the chunk at `end` has an empty piece after its final newline; in
        // later chunks the last piece is the line that `carry` completed.
        if position == end && chunk.last() == Some(&b'\n') {
            pieces.pop();
        }
        let first = if start > 0 {
            pieces.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for piece in pieces.iter().rev() {
            if lines.len() == n {
                break;
            }
            lines.push(String::from_utf8_lossy(piece).into_owned());
        }
        carry = first;
        position = start;
    }
    lines
}

#[cfg(test)]
mod tests;

/// How many stopped instances of a service keep their logs (each at most
/// `log_max_bytes` × (`log_keep` + 1)); older ones are deleted.
pub const KEPT_STOPPED: usize = 5;

/// `<apps>/<service>/logs`: the logs of the service's stopped instances, one
/// directory per instance id, so that what a replaced or crashed instance printed
/// can still be read after it is gone.
pub fn stopped_logs_dir(service_dir: &Path) -> std::path::PathBuf {
    service_dir.join("logs")
}

/// Keeps the log of the stopped instance in `instance_dir`
/// (`<apps>/<service>/instances/<id>`): moves its `log` to
/// `<apps>/<service>/logs/<id>`, then deletes all but the newest
/// [`KEPT_STOPPED`]. A rename: the files keep their inodes, so a follower's cursor
/// reads on from where it was. Nothing to keep is not an error.
pub fn keep_stopped(instance_dir: &Path) -> Result<(), String> {
    let (Some(id), Some(service_dir)) = (
        instance_dir.file_name().and_then(|id| id.to_str()),
        instance_dir.parent().and_then(Path::parent),
    ) else {
        return Ok(());
    };
    match crate::helper::tree::open_dir(service_dir, &[]) {
        Ok(service) => keep_stopped_in(&service, id),
        Err(_) => Ok(()),
    }
}

/// [`keep_stopped`] for the instance `id` of the service whose directory is open
/// as `service`: every step by descriptor, nothing followed (the privileged
/// helper's `keep_log` runs it on directories an agent that is not root owns).
/// A `logs` directory it makes takes the service directory's group, 0750.
pub fn keep_stopped_in(service: &std::os::fd::OwnedFd, id: &str) -> Result<(), String> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat, AtFlags};
    use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
    use std::os::fd::AsRawFd;

    use crate::helper::tree;
    if !nanoscale_core::agent::is_instance_id(id) {
        return Ok(());
    }
    let Ok(instance) = tree::open_at(service, &["instances", id]) else {
        return Ok(());
    };
    let is_dir = |mode: u32| SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    match fstatat(&instance, "log", AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if is_dir(stat.st_mode) => {}
        _ => return Ok(()),
    }
    match mkdirat(service, "logs", Mode::from_bits_truncate(0o750)) {
        Ok(()) => {
            let group = fstat(service)
                .map_err(|errno| format!("reading: {errno}"))?
                .st_gid;
            nix::unistd::fchownat(
                service,
                "logs",
                None,
                Some(nix::unistd::Gid::from_raw(group)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|errno| format!("giving logs its group: {errno}"))?;
        }
        Err(Errno::EEXIST) => {}
        Err(errno) => return Err(format!("making logs: {errno}")),
    }
    let logs = tree::open_at(service, &["logs"])?;
    tree::remove(&logs, id)?;
    renameat(&instance, "log", &logs, id)
        .map_err(|errno| format!("moving the log of {id}: {errno}"))?;
    // Listed through the pinned directory, deleted by name in it.
    let pinned = format!("/proc/self/fd/{}", service.as_raw_fd());
    for (old, _) in stopped(Path::new(&pinned)).into_iter().skip(KEPT_STOPPED) {
        tree::remove(&logs, &old)?;
    }
    Ok(())
}

/// The kept logs of a service's stopped instances: (instance id, log dir), the
/// most recently written first.
pub fn stopped(service_dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(stopped_logs_dir(service_dir)) else {
        return Vec::new();
    };
    let written = |dir: &Path| {
        std::fs::metadata(dir.join(CURRENT))
            .or_else(|_| std::fs::metadata(dir))
            .and_then(|meta| meta.modified())
            .ok()
    };
    let mut found: Vec<(Option<std::time::SystemTime>, String, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let id = entry.file_name().into_string().ok()?;
            let is_dir = entry.file_type().ok()?.is_dir();
            (is_dir && nanoscale_core::agent::is_instance_id(&id)).then(|| {
                let dir = entry.path();
                (written(&dir), id, dir)
            })
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, id, dir)| (id, dir)).collect()
}

/// The newest `n` lines of each `(source, log dir)` as API log entries (not yet
/// merged or ordered across sources). Blocking: call from a blocking task.
pub fn read_local(
    sources: &[(String, std::path::PathBuf)],
    n: usize,
) -> Vec<nanoscale_core::api::LogEntry> {
    sources
        .iter()
        .flat_map(|(source, dir)| tail(dir, n).0.into_iter().map(|line| entry(source, line)))
        .collect()
}

/// One line as an API log entry of `source` (an instance id or `build-<n>`).
pub fn entry(source: &str, line: LogLine) -> nanoscale_core::api::LogEntry {
    nanoscale_core::api::LogEntry {
        at: line.at,
        stream: match line.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
        .to_owned(),
        source: source.to_owned(),
        text: line.text,
    }
}

/// Longest line text sent in an answer to the control plane.
const MAX_ANSWER_LINE: usize = 4 * 1024;
/// An answer stays under the control plane's 1 MiB request limit.
const MAX_ANSWER_BYTES: usize = 900 * 1024;

/// The log directories a request names on this node, by source: the instances
/// asked about and the kept logs of stopped ones, or one release's build. Names
/// that are not a service name or an instance id are ignored, so a request
/// cannot lead outside the apps directory.
pub fn sources(
    apps_dir: &Path,
    request: &nanoscale_core::agent::LogRequest,
) -> Vec<(String, std::path::PathBuf)> {
    if !nanoscale_core::is_dns_label(&request.service) {
        return Vec::new();
    }
    let service = apps_dir.join(&request.service);
    match request.build {
        Some(number) if number >= 1 => vec![(
            format!("build-{number}"),
            service.join("builds").join(number.to_string()).join("log"),
        )],
        Some(_) => Vec::new(),
        // The instances asked about, and the stopped ones whose logs are kept.
        None => {
            let mut sources = stopped(&service);
            for id in &request.instances {
                if nanoscale_core::agent::is_instance_id(id) && !sources.iter().any(|s| &s.0 == id)
                {
                    sources.push((id.clone(), service.join("instances").join(id).join("log")));
                }
            }
            sources
        }
    }
}

/// Shortens a line's text to what is sent to the control plane.
fn clip(entry: &mut nanoscale_core::api::LogEntry) {
    if entry.text.len() > MAX_ANSWER_LINE {
        let mut cut = MAX_ANSWER_LINE;
        while !entry.text.is_char_boundary(cut) {
            cut -= 1;
        }
        entry.text.truncate(cut);
    }
}

/// A line's size as serialized: escaping can make it longer than its text.
fn serialized_size(entry: &nanoscale_core::api::LogEntry) -> usize {
    serde_json::to_string(entry).map_or(MAX_ANSWER_LINE * 6, |json| json.len() + 1)
}

/// Followed lines (oldest first) in batches for the channel: each line clipped,
/// each batch at most `MAX_FOLLOW_LINES` lines and under the control plane's
/// frame limit.
pub fn batches(
    entries: Vec<nanoscale_core::api::LogEntry>,
) -> Vec<Vec<nanoscale_core::api::LogEntry>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0usize;
    for mut entry in entries {
        clip(&mut entry);
        let line = serialized_size(&entry);
        if !batch.is_empty()
            && (batch.len() == nanoscale_core::channel::MAX_FOLLOW_LINES
                || size + line > MAX_ANSWER_BYTES)
        {
            batches.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += line;
        batch.push(entry);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// This node's answer to a log request: the newest lines of the instances (or the
/// build) named ([`sources`]), merged by time, shortened to fit one request.
pub fn answer(
    apps_dir: &Path,
    request: &nanoscale_core::agent::LogRequest,
) -> nanoscale_core::agent::LogAnswer {
    let mut answer = nanoscale_core::agent::LogAnswer {
        entries: Vec::new(),
    };
    let sources = sources(apps_dir, request);
    let tail = request.tail.clamp(1, 10_000) as usize;
    let mut entries = read_local(&sources, tail);
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    let skip = entries.len().saturating_sub(tail);
    let mut entries = entries.split_off(skip);
    let mut size = 0usize;
    let mut keep_from = entries.len();
    for (index, entry) in entries.iter_mut().enumerate().rev() {
        clip(entry);
        size += serialized_size(entry);
        if size > MAX_ANSWER_BYTES {
            break;
        }
        keep_from = index;
    }
    answer.entries = entries.split_off(keep_from);
    answer
}
