//! The shim's side of the logs: splitting pipe output into lines and appending them,
//! timestamped, to a size-rotated file (`current`, `current.1` .. `current.N`).
//! Readers (`logs.rs`) rely on two things: every line reaches the file in one
//! `write`, and a file is renamed only after its last line was written.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longer lines are split, so one runaway line cannot grow the shim's memory.
pub const MAX_LINE: usize = 16 * 1024;
pub const CURRENT: &str = "current";

pub fn rotated_name(index: u32) -> String {
    format!("{CURRENT}.{index}")
}

/// Accumulates bytes from one pipe and hands out complete lines (without the
/// newline), cutting at `MAX_LINE` on a UTF-8 character boundary.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            let window = &rest[..rest.len().min(MAX_LINE + 1)];
            if let Some(newline) = window.iter().position(|byte| *byte == b'\n') {
                emit(&rest[..newline]);
                start += newline + 1;
            } else if rest.len() > MAX_LINE {
                let cut = char_boundary(&rest[..MAX_LINE]);
                emit(&rest[..cut]);
                start += cut;
            } else {
                break;
            }
        }
        self.pending.drain(..start);
        if self.pending.capacity() > 4 * MAX_LINE {
            self.pending.shrink_to(2 * MAX_LINE);
        }
    }

    /// The last line of a stream that did not end with a newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
        }
        self.pending = Vec::new();
    }
}

/// Where to cut `chunk` so that a multi-byte character at its end stays whole.
fn char_boundary(chunk: &[u8]) -> usize {
    let length = chunk.len();
    for back in 1..=length.min(4) {
        let byte = chunk[length - back];
        if byte & 0b1100_0000 != 0b1000_0000 {
            let width = match byte {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if width > back && back < length {
                length - back
            } else {
                length
            };
        }
    }
    length
}

/// Appends `<RFC3339 UTC millis> <o|e> <text>\n` lines and rotates by size.
pub struct RotatingLog {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
    line: Vec<u8>,
}

impl RotatingLog {
    pub fn open(dir: &Path, max_bytes: u64, keep: u32) -> std::io::Result<RotatingLog> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
        // Readable by the directory's group (the agent's, where a root helper
        // started this shim for an unprivileged agent), whatever the umask;
        // the set-group-id bit it inherited stays, so its files take that group.
        let mode = std::fs::metadata(dir)?.permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o2000 | 0o750))?;
        let file = open_current(dir)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            dir: dir.to_path_buf(),
            file: Some(file),
            size,
            max_bytes: max_bytes.max(1),
            keep,
            line: Vec::with_capacity(256),
        })
    }

    /// Writes one line; `stream` is `b'o'` or `b'e'`. Errors (a full disk) drop the
    /// line: the app must keep running even when its logs cannot be kept.
    pub fn write_line(&mut self, stream: u8, text: &[u8]) {
        self.write_line_at(chrono::Utc::now(), stream, text);
    }

    /// Writes one line stamped `at` (a line written down later than it was said:
    /// the systemd backend's, read back from the journal).
    pub fn write_line_at(&mut self, at: chrono::DateTime<chrono::Utc>, stream: u8, text: &[u8]) {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.line.clear();
        self.line.extend_from_slice(at.as_bytes());
        self.line.push(b' ');
        self.line.push(stream);
        self.line.push(b' ');
        self.line
            .extend_from_slice(String::from_utf8_lossy(text).as_bytes());
        self.line.push(b'\n');
        let length = self.line.len() as u64;
        if self.size > 0 && self.size + length > self.max_bytes {
            self.rotate();
        }
        if self.file.is_none() {
            self.file = open_current(&self.dir).ok();
            self.size = 0;
        }
        if let Some(file) = &mut self.file {
            if file.write_all(&self.line).is_ok() {
                self.size += length;
            }
        }
        if self.line.capacity() > 2 * MAX_LINE {
            self.line = Vec::with_capacity(256);
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let current = self.dir.join(CURRENT);
        if self.keep == 0 {
            let _ = std::fs::remove_file(&current);
        } else {
            for index in (1..self.keep).rev() {
                let _ = std::fs::rename(
                    self.dir.join(rotated_name(index)),
                    self.dir.join(rotated_name(index + 1)),
                );
            }
            let _ = std::fs::rename(&current, self.dir.join(rotated_name(1)));
        }
        self.file = open_current(&self.dir).ok();
        self.size = 0;
    }
}

fn open_current(dir: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(dir.join(CURRENT))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| lines.push(line.to_vec()));
        }
        splitter.finish(|line| lines.push(line.to_vec()));
        lines
    }

    #[test]
    fn lines_are_joined_across_reads_and_the_tail_is_flushed() {
        let lines = split(&[b"hel", b"lo\nwor", b"ld\n\nlast"]);
        assert_eq!(
            lines,
            vec![
                b"hello".to_vec(),
                b"world".to_vec(),
                Vec::new(),
                b"last".to_vec()
            ]
        );
    }

    #[test]
    fn long_lines_are_split_without_breaking_a_character() {
        let mut long = vec![b'a'; MAX_LINE - 1];
        long.extend_from_slice("é".as_bytes()); // 2 bytes across the limit
        long.extend_from_slice(b"tail\n");
        let lines = split(&[&long]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "étail".as_bytes());
        let exact = vec![b'b'; MAX_LINE];
        assert_eq!(split(&[&exact, b"\n"]), vec![exact.clone()]);
    }

    #[test]
    fn rotation_keeps_exactly_the_configured_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::open(dir.path(), 200, 2).expect("open");
        for index in 0..40 {
            log.write_line(
                b'o',
                format!("line {index:03} with some padding").as_bytes(),
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, vec!["current", "current.1", "current.2"]);
        let current = std::fs::read_to_string(dir.path().join(CURRENT)).expect("current");
        assert!(current.len() <= 200, "{}", current.len());
        assert!(
            current
                .trim_end()
                .ends_with(" o line 039 with some padding"),
            "{current}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::open(dir.path(), 1 << 20, 1).expect("open");
        log.write_line(b'e', b"bad \xff byte");
        let text = std::fs::read_to_string(dir.path().join(CURRENT)).expect("current");
        assert!(text.ends_with(" e bad \u{fffd} byte\n"), "{text}");
    }
}
