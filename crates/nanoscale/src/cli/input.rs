//! Reading secrets and confirmations from the person (or the pipe) at the other
//! end: never from the command line, where `ps` and shell history would show them.
use std::io::{BufRead, IsTerminal, Write};

use super::{CliError, CliResult};

pub const PASSWORD_ENV: &str = "NANOSCALE_PASSWORD";

/// A password: from `NANOSCALE_PASSWORD`, else a prompt without echo when stdin
/// is a terminal (asked twice when `confirm`), else one line of stdin.
pub async fn password(prompt: &str, confirm: bool) -> CliResult<String> {
    if let Some(password) = std::env::var(PASSWORD_ENV)
        .ok()
        .filter(|value| !value.is_empty())
    {
        return Ok(password);
    }
    let prompt = prompt.to_owned();
    blocking(move || {
        if !std::io::stdin().is_terminal() {
            return read_stdin_line("password").and_then(|line| {
                line.ok_or_else(|| {
                    CliError::usage("no password given").hint(format!(
                        "set {PASSWORD_ENV}, pipe it on stdin, or run this in a terminal"
                    ))
                })
            });
        }
        let first = prompt_hidden(&prompt)?;
        if first.is_empty() {
            return Err(CliError::usage("the password is empty"));
        }
        if confirm && prompt_hidden("Repeat it: ")? != first {
            return Err(CliError::usage("the two passwords differ"));
        }
        Ok(first)
    })
    .await
}

/// A secret pasted by the person (hidden) or piped on stdin, e.g. an API token.
pub async fn secret_from_stdin(what: &'static str) -> CliResult<String> {
    blocking(move || {
        let value = if std::io::stdin().is_terminal() {
            prompt_hidden(&format!("Paste the {what}: "))?
        } else {
            read_stdin_line(what)?.unwrap_or_default()
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(CliError::usage(format!("no {what} on stdin")));
        }
        Ok(value)
    })
    .await
}

/// Asks before destroying something. Without a terminal to ask on, `--yes` is
/// required, so a script never deletes by accident.
pub async fn confirm(question: String, yes: bool) -> CliResult {
    if yes {
        return Ok(());
    }
    blocking(move || {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage("refusing to delete without confirmation")
                .hint("pass --yes to confirm when not running in a terminal"));
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let answer = read_stdin_line("answer")?.unwrap_or_default();
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            Err(CliError::usage("cancelled"))
        }
    })
    .await
}

fn prompt_hidden(prompt: &str) -> CliResult<String> {
    rpassword::prompt_password(prompt)
        .map_err(|error| CliError::failure(format!("cannot read from the terminal: {error}")))
}

/// One line of stdin without its line ending; `None` at end of input.
fn read_stdin_line(what: &str) -> CliResult<Option<String>> {
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| {
            CliError::failure(format!("cannot read the {what} from stdin: {error}"))
        })?;
    if read == 0 {
        return Ok(None);
    }
    Ok(Some(strip_line_ending(line)))
}

fn strip_line_ending(mut line: String) -> String {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    line
}

/// Terminal and stdin reads block; keep them off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> CliResult<T> + Send + 'static,
) -> CliResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| CliError::failure(format!("reading input failed: {error}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_stripped_but_spaces_kept() {
        assert_eq!(strip_line_ending("pw\n".into()), "pw");
        assert_eq!(strip_line_ending("pw\r\n".into()), "pw");
        assert_eq!(strip_line_ending(" pw ".into()), " pw ");
    }
}
