//! Following log lines that arrive more than once: a follower that re-asks for the
//! newest lines (after a reconnect, or of a node it can only poll) gets some it has
//! already shown. [`Seen`] lets each line through once, in order.
use std::collections::HashSet;

use crate::api::LogEntry;

/// What a follower has let through: the newest time seen and the lines at that
/// time. Times are RFC 3339 UTC with milliseconds, so their text sorts as they do;
/// a line older than the newest seen is taken as shown.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    newest: String,
    at_newest: HashSet<(String, String, String)>,
}

impl Seen {
    /// The entries of `entries` (oldest first) not let through before.
    pub fn fresh<'a>(&mut self, entries: &'a [LogEntry]) -> Vec<&'a LogEntry> {
        entries.iter().filter(|entry| self.admit(entry)).collect()
    }

    /// Whether `entry` is new; remembers it.
    pub fn admit(&mut self, entry: &LogEntry) -> bool {
        let key = || {
            (
                entry.source.clone(),
                entry.stream.clone(),
                entry.text.clone(),
            )
        };
        match entry.at.as_str().cmp(self.newest.as_str()) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.at_newest.insert(key()),
            std::cmp::Ordering::Greater => {
                self.newest = entry.at.clone();
                self.at_newest.clear();
                self.at_newest.insert(key());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_let_through_once_in_order() {
        let line = |at: &str, text: &str| LogEntry {
            at: at.into(),
            stream: "stdout".into(),
            source: "web-r1-0-abcd".into(),
            text: text.into(),
        };
        let mut seen = Seen::default();
        let first = [
            line("2026-12-01T10:00:00.001Z", "a"),
            line("2026-12-01T10:00:00.002Z", "b"),
        ];
        let texts =
            |entries: Vec<&LogEntry>| entries.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(seen.fresh(&first)), ["a", "b"]);
        // The next answer repeats the newest lines, and adds one at the same
        // millisecond as the last and one later.
        let second = [
            line("2026-12-01T10:00:00.001Z", "a"),
            line("2026-12-01T10:00:00.002Z", "b"),
            line("2026-12-01T10:00:00.002Z", "b2"),
            line("2026-12-01T10:00:01.000Z", "c"),
        ];
        assert_eq!(texts(seen.fresh(&second)), ["b2", "c"]);
        assert!(seen.fresh(&second).is_empty());
    }
}
