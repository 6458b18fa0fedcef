//! Printing for people (aligned tables, relative times, short ids) and for
//! scripts (the API's JSON, pretty).
use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{CliError, CliResult};

/// How many characters of an id tables show: the end of the UUID, which is its
/// random part (UUIDv7 ids start with a timestamp, so their beginnings collide).
pub const SHORT_ID_CHARS: usize = 8;

/// Prints any API answer as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::failure(format!("cannot encode the answer: {error}")))?;
    println!("{text}");
    Ok(())
}

/// Prints one value as a single JSON line (for streams: one event per line).
pub fn print_json_line<T: Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string(value)
        .map_err(|error| CliError::failure(format!("cannot encode the answer: {error}")))?;
    println!("{text}");
    Ok(())
}

/// A table with a header row and columns padded to line up.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| printable(cell)).collect());
    }

    /// Prints the table, or `when_empty` when there are no rows.
    pub fn print_or(&self, when_empty: &str) {
        if self.rows.is_empty() {
            println!("{when_empty}");
        } else {
            print!("{}", self.render());
        }
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map(String::as_str).unwrap_or("");
                if index + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let padding = width - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', padding));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Prints `label: value` lines for one object, labels aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in fields {
        println!("{label:<width$}  {}", printable(value));
    }
}

/// Text from the server shown on a terminal: no control characters, which could
/// otherwise move the cursor or rewrite earlier lines.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect::<String>()
        .replace('\n', " ")
}

/// Longest error or hint the CLI prints; past it, the message is cut.
const MAX_MESSAGE_CHARS: usize = 1000;

/// An error message for the terminal: its lines kept, control characters
/// replaced as [`printable`] does, cut to [`MAX_MESSAGE_CHARS`].
pub fn terminal_message(text: &str) -> String {
    let mut out: String = text
        .split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// The end of an id, as tables show it; accepted back by [`matches_id`].
pub fn short_id(id: &Uuid) -> String {
    let text = id.to_string();
    text[text.len() - SHORT_ID_CHARS..].to_owned()
}

/// Whether `input` names `id`: the full id, or its end as tables show it (at
/// least [`SHORT_ID_CHARS`] characters).
pub fn matches_id(input: &str, id: &Uuid) -> bool {
    let input = input.trim().to_ascii_lowercase();
    let full = id.to_string();
    input == full || (input.len() >= SHORT_ID_CHARS && full.ends_with(&input))
}

/// A commit as people read it: the first 12 characters.
pub fn short_commit(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A time for a table: relative when recent ("5m ago", "in 3d"), else local.
pub fn when(time: &DateTime<Utc>) -> String {
    relative(time, &Utc::now())
}

pub fn when_or(time: Option<&DateTime<Utc>>, absent: &str) -> String {
    time.map(when).unwrap_or_else(|| absent.to_owned())
}

fn relative(time: &DateTime<Utc>, now: &DateTime<Utc>) -> String {
    let seconds = now.signed_duration_since(*time).num_seconds();
    let magnitude = seconds.unsigned_abs();
    if magnitude < 5 {
        return "just now".to_owned();
    }
    let amount = match magnitude {
        0..60 => format!("{magnitude}s"),
        60..3_600 => format!("{}m", magnitude / 60),
        3_600..86_400 => format!("{}h", magnitude / 3_600),
        86_400..604_800 => format!("{}d", magnitude / 86_400),
        _ => {
            return time
                .with_timezone(&Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        }
    };
    if seconds >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn tables_line_up_and_trim() {
        let mut table = Table::new(&["NAME", "SERVICES", "CREATED"]);
        table.row(vec!["shop".into(), "12".into(), "5m ago".into()]);
        table.row(vec!["a-much-longer-name".into(), "0".into(), "".into()]);
        assert_eq!(
            table.render(),
            "NAME                SERVICES  CREATED\n\
             shop                12        5m ago\n\
             a-much-longer-name  0\n"
        );
    }

    #[test]
    fn error_messages_keep_their_lines_but_lose_escapes_and_length() {
        let message = terminal_message("no project named \"\u{1b}[2Jx\"\nhint\u{7}");
        assert_eq!(message, "no project named \"?[2Jx\"\nhint?");
        let long = terminal_message(&"a".repeat(5000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut table = Table::new(&["MESSAGE"]);
        table.row(vec!["evil\u{1b}[2Jname\nnext".into()]);
        assert_eq!(table.render(), "MESSAGE\nevil?[2Jname next\n");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        let cases = [
            (Duration::seconds(2), "just now"),
            (Duration::seconds(42), "42s ago"),
            (Duration::minutes(5), "5m ago"),
            (Duration::hours(3), "3h ago"),
            (Duration::days(2), "2d ago"),
            (Duration::days(-3), "in 3d"),
            (Duration::minutes(-90), "in 1h"),
        ];
        for (age, expected) in cases {
            assert_eq!(relative(&(now - age), &now), expected, "{age:?}");
        }
        let old = now - Duration::days(30);
        assert_eq!(relative(&old, &now).len(), "2025-01-01 12:00".len());
    }

    #[test]
    fn short_ids_round_trip() {
        let id = Uuid::parse_str("0190a0b0-1234-7abc-8def-0123456789ab").unwrap();
        assert_eq!(short_id(&id), "456789ab");
        assert!(matches_id("456789ab", &id));
        assert!(matches_id("0190A0B0-1234-7ABC-8DEF-0123456789AB", &id));
        assert!(matches_id("0123456789ab", &id));
        assert!(!matches_id("789ab", &id), "too short to be safe");
        assert!(!matches_id("0190a0b0", &id), "a prefix is not accepted");
    }
}
