//! Git repositories made to attack whoever builds or serves them.
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::git;

/// A repository under /tmp (which `nanoscale up` allows for file:// URLs).
pub struct Hostile {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hostile {
    fn new() -> Hostile {
        let dir = tempfile::Builder::new()
            .prefix("nanoscale-hostile-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let path = dir.path().join("repo.git");
        std::fs::create_dir(&path).expect("mkdir");
        git(&path, &["init", "-q", "-b", "main"]);
        Hostile { path, _dir: dir }
    }

    fn commit(&self, message: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", message]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// A static site whose tree links out of itself: to a secret file, to `/etc`,
/// and to the directories above the release.
pub fn static_site_with_symlinks() -> Hostile {
    let repo = Hostile::new();
    std::fs::write(repo.path.join("index.html"), "<p>hostile site</p>\n").expect("write");
    symlink("/etc/shadow", repo.path.join("leak")).expect("symlink");
    symlink("/etc/passwd", repo.path.join("passwd.html")).expect("symlink");
    symlink("/etc", repo.path.join("etc")).expect("symlink");
    symlink("../../../../../..", repo.path.join("up")).expect("symlink");
    repo.commit("static site with links out");
    repo
}

/// An app whose `nanoscale.toml` is a link to the host's password hashes: the
/// agent must refuse to read it, and say so without quoting it.
pub fn config_linked_to_shadow(app: &Path) -> Hostile {
    let repo = Hostile::new();
    copy_files(app, &repo.path);
    symlink("/etc/shadow", repo.path.join("nanoscale.toml")).expect("symlink");
    repo.commit("config is a link");
    repo
}

/// A working app on branches whose names are shell commands (git allows `;`,
/// `$()`, backticks and `|` in ref names). Returns the repository and the
/// branch names.
pub fn app_on_branches_named_like_commands(app: &Path, canary: &str) -> (Hostile, Vec<String>) {
    let repo = Hostile::new();
    copy_files(app, &repo.path);
    repo.commit("app");
    let branches = vec![
        format!("a;touch${{IFS}}{canary}-semicolon"),
        format!("b$(touch${{IFS}}{canary}-subshell)"),
        format!("c`touch${{IFS}}{canary}-backticks`"),
        format!("d|touch${{IFS}}{canary}-pipe"),
    ];
    for branch in &branches {
        git(&repo.path, &["branch", "--", branch]);
    }
    (repo, branches)
}

fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("fixture").flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
