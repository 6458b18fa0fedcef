//! Logs of instances that run as systemd units: their output goes to the journal
//! (systemd owns their stdout and stderr), and the agent copies it, line by line
//! with the journal's timestamps, into each instance's `log` directory in the
//! format the shim writes (`logwriter.rs`). Everything that reads logs (the API,
//! `logs -f`, kept logs of stopped instances, failure reasons) then reads one
//! format, whichever backend ran the app.
//!
//! The copy resumes from a cursor kept in `<state>/journal.cursor`, so lines an
//! app wrote while the agent was down (restarted, upgraded) are copied when it
//! is back: the journal holds them meanwhile, as the shim's pipes would.
//!
//! journald does not record which of the two streams a line came from: lines of
//! syslog priority `err` or worse (an app may prefix `<3>`) count as stderr, the
//! rest as stdout. systemd's own messages about the unit ("Failed with result
//! 'oom-kill'") are copied too, as stderr lines starting with `systemd:`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::logwriter::RotatingLog;

/// The cursor file in the agent's state directory.
pub const CURSOR_FILE: &str = "journal.cursor";
const JOURNALCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// One line for an instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    /// The instance id (the unit is `nanoscale-<id>.service`).
    pub id: String,
    pub at: DateTime<Utc>,
    /// `b'o'` or `b'e'`.
    pub stream: u8,
    pub text: Vec<u8>,
}

/// One entry of `journalctl --output=json`: its cursor, and the line it gives an
/// instance's log if it is one of an instance's. `None`: not a whole JSON entry
/// (output cut short), to be read again from the last cursor.
pub fn parse_entry(json: &str) -> Option<(String, Option<JournalLine>)> {
    let entry: Value = serde_json::from_str(json).ok()?;
    let cursor = entry.get("__CURSOR")?.as_str()?.to_owned();
    Some((cursor, instance_line(&entry)))
}

fn instance_line(entry: &Value) -> Option<JournalLine> {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    let id_of = |unit: &str| {
        unit.strip_prefix("nanoscale-")
            .and_then(|rest| rest.strip_suffix(".service"))
            .filter(|id| super::valid_id(id))
            .map(str::to_owned)
    };
    let from_systemd = field("_PID") == Some("1");
    let (id, stream, prefix) = match (field("_SYSTEMD_UNIT"), field("UNIT")) {
        (Some(unit), _) if !from_systemd && id_of(unit).is_some() => {
            let priority: u8 = field("PRIORITY").and_then(|p| p.parse().ok()).unwrap_or(6);
            (id_of(unit)?, if priority <= 3 { b'e' } else { b'o' }, "")
        }
        (_, Some(unit)) if from_systemd => (id_of(unit)?, b'e', "systemd: "),
        _ => return None,
    };
    let mut text = prefix.as_bytes().to_vec();
    match entry.get("MESSAGE")? {
        Value::String(message) => text.extend_from_slice(message.as_bytes()),
        // Not UTF-8: journald gives the bytes.
        Value::Array(bytes) => text.extend(
            bytes
                .iter()
                .filter_map(Value::as_u64)
                .filter_map(|byte| u8::try_from(byte).ok()),
        ),
        _ => return None,
    }
    let micros: i64 = field("__REALTIME_TIMESTAMP")?.parse().ok()?;
    Some(JournalLine {
        id,
        at: DateTime::from_timestamp_micros(micros)?,
        stream,
        text,
    })
}

/// Copies the journal's lines of this node's unit instances into their logs.
pub struct JournalFollower {
    /// `<data>/apps`: where an instance the store does not list yet (its unit
    /// has just been started) is found by its id.
    apps_dir: PathBuf,
    cursor_file: PathBuf,
    cursor: Option<String>,
    /// Without a cursor (a first start): from this time on (UNIX seconds).
    since: i64,
    logs: HashMap<String, RotatingLog>,
    max_bytes: u64,
    keep: u32,
}

impl JournalFollower {
    pub fn new(state_dir: &Path, apps_dir: &Path, max_bytes: u64, keep: u32) -> JournalFollower {
        let cursor_file = state_dir.join(CURSOR_FILE);
        let cursor = std::fs::read_to_string(&cursor_file)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty() && !text.contains(['\n', '\0']));
        JournalFollower {
            apps_dir: apps_dir.to_path_buf(),
            cursor_file,
            cursor,
            since: Utc::now().timestamp() - 1,
            logs: HashMap::new(),
            max_bytes,
            keep,
        }
    }

    /// Reads what the journal has for `nanoscale-*` units past the cursor and
    /// appends each line of a unit in `instances` (id → instance directory) to
    /// its log. Returns the lines copied.
    pub async fn poll(&mut self, instances: HashMap<String, PathBuf>) -> Result<usize, String> {
        let program =
            nanoscale_process::which("journalctl").ok_or("journalctl is not installed")?;
        // Field matches, not `--unit=nanoscale-*`: a glob makes journalctl list
        // every unit the journal ever saw at each call, which grows with the
        // journal. The apps' lines carry their units' slice; systemd's own lines
        // about a unit are PID 1's (`instance_line` keeps only ours).
        let mut args = vec![
            "--output=json".to_owned(),
            "--no-pager".to_owned(),
            "--quiet".to_owned(),
            "_SYSTEMD_SLICE=nanoscale.slice".to_owned(),
            "+".to_owned(),
            "_PID=1".to_owned(),
        ];
        match &self.cursor {
            Some(cursor) => args.push(format!("--after-cursor={cursor}")),
            None => args.push(format!("--since=@{}", self.since)),
        }
        let output = nanoscale_process::run(nanoscale_process::CommandSpec {
            program,
            args,
            timeout: JOURNALCTL_TIMEOUT,
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())?;
        if !output.success {
            return Err(format!("journalctl: {}", output.stderr.trim()));
        }
        let mut logs = std::mem::take(&mut self.logs);
        let (max_bytes, keep) = (self.max_bytes, self.keep);
        let apps_dir = self.apps_dir.clone();
        let mut instances = instances;
        let (logs, cursor, copied) = tokio::task::spawn_blocking(move || {
            let mut cursor = None;
            let mut copied = 0;
            for json in output.stdout.lines() {
                let Some((at, line)) = parse_entry(json) else {
                    break;
                };
                cursor = Some(at);
                let Some(line) = line else { continue };
                // A unit's first lines (systemd's "Started", the app's first
                // output) can come before the agent has recorded the instance.
                if !instances.contains_key(&line.id) {
                    if let Some(dir) = instance_dir_of(&apps_dir, &line.id) {
                        instances.insert(line.id.clone(), dir);
                    }
                }
                let Some(dir) = instances.get(&line.id) else {
                    continue;
                };
                if !logs.contains_key(&line.id) {
                    match RotatingLog::open(&dir.join("log"), max_bytes, keep) {
                        Ok(log) => {
                            logs.insert(line.id.clone(), log);
                        }
                        Err(error) => {
                            tracing::warn!(%error, instance = %line.id, "opening a unit's log");
                            continue;
                        }
                    }
                }
                if let Some(log) = logs.get_mut(&line.id) {
                    log.write_line_at(line.at, line.stream, &line.text);
                    copied += 1;
                }
            }
            // Logs of instances that are gone are closed.
            logs.retain(|id, _| instances.contains_key(id));
            (logs, cursor, copied)
        })
        .await
        .map_err(|error| error.to_string())?;
        self.logs = logs;
        if let Some(cursor) = cursor {
            if self.cursor.as_ref() != Some(&cursor) {
                super::write_atomic(&self.cursor_file, cursor.as_bytes(), 0o600)
                    .map_err(|error| format!("writing {}: {error}", self.cursor_file.display()))?;
                self.cursor = Some(cursor);
            }
        }
        Ok(copied)
    }
}

/// `<apps>/<service>/instances/<id>` of the instance `id` (checked with
/// `valid_id`: one plain path part), when it exists and has its log directory.
fn instance_dir_of(apps_dir: &Path, id: &str) -> Option<PathBuf> {
    if !super::valid_id(id) {
        return None;
    }
    std::fs::read_dir(apps_dir)
        .ok()?
        .flatten()
        .map(|service| service.path().join("instances").join(id))
        .find(|dir| dir.join("log").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_line_goes_to_its_instance_with_the_journals_time() {
        let (cursor, line) = parse_entry(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1765100000123456","_PID":"4242",
               "_SYSTEMD_UNIT":"nanoscale-web-r1-0-ab12.service","PRIORITY":"6","MESSAGE":"listening on 20001"}"#,
        )
        .expect("an entry");
        assert_eq!(cursor, "s=1;i=2");
        let line = line.expect("an instance's line");
        assert_eq!(line.id, "web-r1-0-ab12");
        assert_eq!(line.stream, b'o');
        assert_eq!(line.text, b"listening on 20001");
        assert_eq!(line.at.timestamp_micros(), 1_765_100_000_123_456);
    }

    #[test]
    fn errors_bytes_and_systemds_own_words_are_told_apart() {
        let (_, error) = parse_entry(
            r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","_PID":"9","PRIORITY":"3",
               "_SYSTEMD_UNIT":"nanoscale-web-r1-0-ab12.service","MESSAGE":[104,105,255]}"#,
        )
        .expect("an entry");
        let error = error.expect("a line");
        assert_eq!((error.stream, error.text), (b'e', vec![104, 105, 255]));
        let (_, said) = parse_entry(
            r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","_PID":"1","_SYSTEMD_UNIT":"init.scope",
               "UNIT":"nanoscale-web-r1-0-ab12.service","MESSAGE":"Failed with result 'oom-kill'."}"#,
        )
        .expect("an entry");
        let said = said.expect("a line");
        assert_eq!(said.text, b"systemd: Failed with result 'oom-kill'.");
        assert_eq!(said.stream, b'e');
    }

    #[test]
    fn an_instance_not_yet_recorded_is_found_by_its_id() {
        let apps = tempfile::tempdir().expect("tempdir");
        let dir = apps.path().join("web/instances/web-r1-0-ab12");
        std::fs::create_dir_all(dir.join("log")).expect("mkdir");
        std::fs::create_dir_all(apps.path().join("api/instances/api-r1-0-cd34")).expect("mkdir");
        assert_eq!(instance_dir_of(apps.path(), "web-r1-0-ab12"), Some(dir));
        assert_eq!(
            instance_dir_of(apps.path(), "api-r1-0-cd34"),
            None,
            "no log dir"
        );
        assert_eq!(instance_dir_of(apps.path(), "../web"), None);
        assert_eq!(instance_dir_of(apps.path(), "web-r9-0-0000"), None);
    }

    #[test]
    fn other_units_and_cut_output_give_no_line() {
        let (_, other) = parse_entry(
            r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","_PID":"9",
               "_SYSTEMD_UNIT":"nginx.service","MESSAGE":"x"}"#,
        )
        .expect("an entry");
        assert!(other.is_none());
        let (_, forged) = parse_entry(
            r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","_PID":"9",
               "_SYSTEMD_UNIT":"nanoscale-../../x.service","MESSAGE":"x"}"#,
        )
        .expect("an entry");
        assert!(forged.is_none(), "an id that is no instance's");
        assert!(parse_entry(r#"{"__CURSOR":"c","MESSA"#).is_none());
    }
}
