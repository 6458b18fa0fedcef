//! How NanoScale runs git on URLs a user chose: every transport off except the ones
//! `validate_git_url` accepts (so `ext::` and `fd::`, which run commands, stay off
//! whatever the host's config says), no system or global git config (the
//! operator's insteadOf rules and credential helpers must not apply), no prompts.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{which, CommandSpec};

const TRANSPORTS: [&str; 5] = ["https", "http", "ssh", "git", "file"];

/// A git invocation with the allow-list and the hardened environment; `None` when
/// git is not installed. `extra_env` is added after the fixed variables.
pub fn git_command(
    args: &[&str],
    extra_env: Vec<(String, String)>,
    timeout: Duration,
) -> Option<CommandSpec> {
    let mut all = vec!["-c".to_owned(), "protocol.allow=never".to_owned()];
    for protocol in TRANSPORTS {
        all.push("-c".to_owned());
        all.push(format!("protocol.{protocol}.allow=always"));
    }
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let mut env: Vec<(String, String)> = [
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        (
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        ),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    env.extend(extra_env);
    Some(CommandSpec {
        program: which("git")?,
        args: all,
        env,
        timeout,
        ..CommandSpec::default()
    })
}

/// The canonical form of `path` when it lies under one of `roots` (after resolving
/// `..` and symlinks on both sides), else `None`. file:// repositories are confined
/// with this, and git is then given the canonical path.
pub fn confine(path: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
    let real = path.canonicalize().ok()?;
    roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .any(|root| real.starts_with(root))
        .then_some(real)
}

/// The first non-empty line of git's stderr, without control characters, for an
/// error message a person reads.
pub fn first_line(text: &str) -> String {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("failed")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_resolves_dot_dot_and_symlinks() {
        let root = std::env::temp_dir().join(format!("ns-confine-{}", std::process::id()));
        let inside = root.join("repo");
        std::fs::create_dir_all(&inside).expect("mkdir");
        let link = root.join("escape");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc", &link).expect("symlink");
        let roots = vec![root.clone()];
        assert!(confine(&inside, &roots).is_some());
        assert!(confine(&root.join("repo/../repo"), &roots).is_some());
        assert!(
            confine(&link, &roots).is_none(),
            "a symlink out of the root"
        );
        assert!(confine(&root.join("../../etc"), &roots).is_none());
        assert!(confine(&root.join("missing"), &roots).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn every_call_carries_the_allow_list_and_no_host_config() {
        let Some(spec) = git_command(&["ls-remote"], vec![], Duration::from_secs(1)) else {
            eprintln!("skipping: git is not installed");
            return;
        };
        assert_eq!(&spec.args[..2], ["-c", "protocol.allow=never"]);
        assert_eq!(spec.args.last().map(String::as_str), Some("ls-remote"));
        assert!(spec
            .env
            .iter()
            .any(|(k, v)| k == "GIT_CONFIG_GLOBAL" && v == "/dev/null"));
        assert!(!spec.args.iter().any(|arg| arg.contains("ext.allow=always")));
    }
}
