//! The CLI's commands and arguments, read from the binary's own `--help`, so a
//! new command or option is attacked without anyone adding it here.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One argument a command takes a value for.
#[derive(Debug, Clone)]
pub struct Arg {
    /// `--ref`; empty for a positional argument.
    pub flag: String,
    /// `REF`, `SERVICE`, `NAME=VALUE`.
    pub value_name: String,
    pub required: bool,
}

/// A command that does something (no subcommands of its own).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub words: Vec<String>,
    pub args: Vec<Arg>,
}

impl Leaf {
    pub fn name(&self) -> String {
        self.words.join(" ")
    }
}

/// Options every command has, which the suite does not attack: `--url` would
/// send traffic to wherever a payload points.
const GLOBAL: [&str; 4] = ["--output", "--url", "--help", "--version"];

fn help(bin: &Path, words: &[String]) -> String {
    let output = Command::new(bin)
        .args(words)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "{words:?} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The lines of a `Commands:` / `Arguments:` / `Options:` section.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| line.trim_end() != title)
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .collect()
}

/// Every leaf command under `words`, skipping `skip` (names or "parent child").
pub fn leaves(bin: &Path, words: &[String], skip: &[&str]) -> Vec<Leaf> {
    let text = help(bin, words);
    let commands: Vec<String> = section(&text, "Commands:")
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    if commands.is_empty() {
        return vec![parse_leaf(words, &text)];
    }
    let mut found = Vec::new();
    for command in commands {
        let mut path = words.to_vec();
        path.push(command);
        if skip.contains(&path.join(" ").as_str()) {
            continue;
        }
        found.extend(leaves(bin, &path, skip));
    }
    found
}

fn parse_leaf(words: &[String], text: &str) -> Leaf {
    let usage = text
        .lines()
        .find_map(|line| line.strip_prefix("Usage: "))
        .expect("a Usage line");
    let mut args = Vec::new();
    for line in section(text, "Arguments:") {
        let token = line.split_whitespace().next().expect("argument");
        let required = token.starts_with('<');
        let value_name = token
            .trim_end_matches("...")
            .trim_matches(|c| "<>[]".contains(c))
            .to_owned();
        args.push(Arg {
            flag: String::new(),
            value_name,
            required,
        });
    }
    for line in section(text, "Options:") {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(position) = tokens.iter().position(|t| t.starts_with("--")) else {
            continue;
        };
        let flag = tokens[position].trim_end_matches(',');
        if GLOBAL.contains(&flag) {
            continue;
        }
        let Some(value) = tokens.get(position + 1).filter(|t| t.starts_with('<')) else {
            continue; // a switch: nothing to put a payload in
        };
        let value_name = value.trim_matches(|c| "<>".contains(c)).to_owned();
        let required = usage.contains(&format!("{flag} {value}"));
        args.push(Arg {
            flag: flag.to_owned(),
            value_name,
            required,
        });
    }
    Leaf {
        words: words.to_vec(),
        args,
    }
}

/// What one run of the CLI did.
pub struct Run {
    /// `None`: killed by a signal or by the time limit.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs the CLI with `args` and `env`, stdin closed, for at most `limit`.
pub fn run(bin: &Path, args: &[String], env: &[(&str, &str)], limit: Duration) -> Run {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("NANOSCALE_URL")
        .env_remove("NANOSCALE_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    // Drained while it runs: a long message must not fill the pipe and stall it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = std::process::Output {
        status: status.unwrap_or_default(),
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    };
    let timed_out = status.is_none();
    Run {
        code: if timed_out {
            None
        } else {
            output.status.code()
        },
        stdout: output.stdout,
        stderr: output.stderr,
    }
}
