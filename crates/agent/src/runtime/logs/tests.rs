use super::*;
use crate::runtime::logwriter::RotatingLog;

fn texts(lines: &[LogLine]) -> Vec<String> {
    lines.iter().map(|line| line.text.clone()).collect()
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|index| format!("line {index:04}")).collect()
}

#[test]
fn tail_spans_rotated_files_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = RotatingLog::open(dir.path(), 300, 3).expect("open");
    for index in 0..30 {
        log.write_line(
            if index % 2 == 0 { b'o' } else { b'e' },
            format!("line {index:04}").as_bytes(),
        );
    }
    let (lines, _) = tail(dir.path(), 12);
    assert_eq!(texts(&lines), numbered(18, 30));
    assert_eq!(lines[0].stream, Stream::Stdout);
    assert_eq!(lines[1].stream, Stream::Stderr);
    assert!(
        lines[0].at.ends_with('Z') && lines[0].at.len() == 24,
        "{}",
        lines[0].at
    );
    // More than is kept: everything kept, nothing invented.
    let (all, _) = tail(dir.path(), 1000);
    assert_eq!(texts(&all), numbered(30 - all.len(), 30));
}

#[test]
fn tail_reads_backwards_across_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = RotatingLog::open(dir.path(), 1 << 30, 1).expect("open");
    for index in 0..5000 {
        log.write_line(b'o', format!("line {index:04}").as_bytes());
    }
    let (lines, _) = tail(dir.path(), 4000);
    assert_eq!(texts(&lines), numbered(1000, 5000));
}

#[test]
fn read_from_follows_rotations_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = RotatingLog::open(dir.path(), 250, 4).expect("open");
    let (first, mut cursor) = tail(dir.path(), 10);
    assert!(first.is_empty());
    let mut seen = Vec::new();
    let mut written = 0;
    // Batches of 1 to 12 lines: from no rotation to several between two reads.
    for batch in 1..=12 {
        for _ in 0..batch {
            log.write_line(b'o', format!("line {written:04}").as_bytes());
            written += 1;
        }
        seen.extend(texts(&read_from(dir.path(), &mut cursor)));
        assert_eq!(seen, numbered(0, written));
    }
    assert!(read_from(dir.path(), &mut cursor).is_empty());
}

#[test]
fn a_cursor_whose_file_was_rotated_away_resumes_at_the_oldest_kept_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = RotatingLog::open(dir.path(), 250, 1).expect("open");
    log.write_line(b'o', b"line 0000");
    let (_, mut cursor) = tail(dir.path(), 1);
    for index in 1..40 {
        log.write_line(b'o', format!("line {index:04}").as_bytes());
    }
    let lines = texts(&read_from(dir.path(), &mut cursor));
    let (kept, _) = tail(dir.path(), 1000);
    assert_eq!(lines, texts(&kept));
    assert_eq!(lines.last().map(String::as_str), Some("line 0039"));
}

#[test]
fn a_partial_last_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(CURRENT),
        "2026-01-01T00:00:00.000Z o done\n2026-01-01T00:00:00.001Z e half",
    )
    .expect("write");
    let (lines, mut cursor) = tail(dir.path(), 10);
    assert_eq!(texts(&lines), vec!["done"]);
    assert!(read_from(dir.path(), &mut cursor).is_empty());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(CURRENT))
        .expect("open");
    std::io::Write::write_all(&mut file, b" done\n").expect("append");
    let rest = read_from(dir.path(), &mut cursor);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].stream, Stream::Stderr);
    assert_eq!(rest[0].text, "half done");
}

#[test]
fn lines_parse_into_time_stream_and_text() {
    let line = parse_line("2026-01-01T00:00:00.000Z e two  spaces ");
    assert_eq!(line.at, "2026-01-01T00:00:00.000Z");
    assert_eq!(line.stream, Stream::Stderr);
    assert_eq!(line.text, "two  spaces ");
    assert_eq!(parse_line("garbage").text, "garbage");
}

#[test]
fn a_new_current_with_the_old_inode_is_read_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(CURRENT),
        "2026-01-01T00:00:00.000Z o old one\n2026-01-01T00:00:00.001Z o old two\n",
    )
    .expect("write");
    let (_, mut cursor) = tail(dir.path(), 10);
    // Same file (so same inode), new content: what a reused inode looks like.
    std::fs::write(
        dir.path().join(CURRENT),
        "2026-01-01T00:00:09.000Z o new one\n2026-01-01T00:00:09.001Z o new two\n2026-01-01T00:00:09.002Z o new three\n",
    )
    .expect("rewrite");
    let lines = read_from(dir.path(), &mut cursor);
    assert_eq!(texts(&lines), vec!["new one", "new two", "new three"]);
}

#[test]
fn answers_read_only_named_instances_newest_first_and_fit_one_request() {
    let apps = tempfile::tempdir().expect("tempdir");
    let log = apps.path().join("web/instances/web-r1-0-abcd/log");
    std::fs::create_dir_all(&log).expect("mkdir");
    let long = "x".repeat(10_000);
    std::fs::write(
        log.join(CURRENT),
        format!("2026-01-01T00:00:00.000Z o first\n2026-01-01T00:00:00.001Z e {long}\n"),
    )
    .expect("write");
    let ask = |service: &str, instances: &[&str], tail: u32| {
        answer(
            apps.path(),
            &nanoscale_core::agent::LogRequest {
                id: uuid::Uuid::now_v7(),
                service: service.into(),
                instances: instances.iter().map(|id| (*id).to_owned()).collect(),
                build: None,
                tail,
            },
        )
        .entries
    };
    let entries = ask("web", &["web-r1-0-abcd"], 10);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].text, "first");
    assert_eq!(entries[1].text.len(), 4 * 1024, "long lines are cut");
    assert_eq!(entries[1].stream, "stderr");
    assert_eq!(ask("web", &["web-r1-0-abcd"], 1).len(), 1, "the newest");
    // Names that could leave the apps directory are ignored.
    assert!(ask("..", &["web-r1-0-abcd"], 10).is_empty());
    assert!(ask("web", &["../web-r1-0-abcd", "a/b"], 10).is_empty());
}

#[test]
fn a_stopped_instance_keeps_its_log_and_only_the_newest_are_kept() {
    let apps = tempfile::tempdir().expect("tempdir");
    let service = apps.path().join("web");
    let stop = |id: &str, line: &str| {
        let instance = service.join("instances").join(id);
        let mut log = RotatingLog::open(&instance.join("log"), 1 << 20, 1).expect("open");
        log.write_line(b'o', line.as_bytes());
        drop(log);
        keep_stopped(&instance).expect("keep");
        std::fs::remove_dir_all(&instance).expect("rm");
    };
    // A follower's cursor on the live instance reads on in the kept log.
    let live = service.join("instances/web-1");
    let mut log = RotatingLog::open(&live.join("log"), 1 << 20, 1).expect("open");
    log.write_line(b'o', b"first");
    let mut cursor = LogCursor::default();
    assert_eq!(texts(&read_from(&live.join("log"), &mut cursor)), ["first"]);
    log.write_line(b'o', b"last words");
    drop(log);
    keep_stopped(&live).expect("keep");
    let kept = stopped_logs_dir(&service).join("web-1");
    assert_eq!(texts(&read_from(&kept, &mut cursor)), ["last words"]);

    for n in 2..=(KEPT_STOPPED + 2) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop(&format!("web-{n}"), &format!("line of {n}"));
    }
    let ids: Vec<String> = stopped(&service).into_iter().map(|(id, _)| id).collect();
    let newest: Vec<String> = (3..=(KEPT_STOPPED + 2))
        .rev()
        .map(|n| format!("web-{n}"))
        .collect();
    assert_eq!(ids, newest);
    // Nothing to keep (no log, a name that is not an instance id) is no error.
    keep_stopped(&service.join("instances/none")).expect("no log");
    keep_stopped(Path::new("/")).expect("no parent");
}

#[test]
fn followed_lines_go_in_batches_that_fit_a_frame() {
    let line = |text: String| nanoscale_core::api::LogEntry {
        at: "2026-12-08T00:00:00.000Z".into(),
        stream: "stdout".into(),
        source: "web-r1-0-abcd".into(),
        text,
    };
    assert!(batches(Vec::new()).is_empty());
    // 2,500 short lines: at most 1,000 per batch, in order.
    let many: Vec<_> = (0..2500).map(|n| line(n.to_string())).collect();
    let sizes: Vec<usize> = batches(many.clone()).iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    let flat: Vec<_> = batches(many)
        .into_iter()
        .flatten()
        .map(|e| e.text)
        .collect();
    assert_eq!(flat.first().map(String::as_str), Some("0"));
    assert_eq!(flat.last().map(String::as_str), Some("2499"));
    // Long lines escaped six-fold are clipped and the batches stay under 900 KiB.
    let long: Vec<_> = (0..600).map(|_| line("\u{1}".repeat(100_000))).collect();
    for batch in batches(long) {
        let bytes = serde_json::to_vec(&batch).unwrap().len();
        assert!(bytes <= 900 * 1024 + 1000, "{bytes}");
        assert!(batch.iter().all(|e| e.text.len() <= 4096));
    }
}
