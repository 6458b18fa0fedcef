//! Against real repositories: file:// under an allowed root, and git:// from a
//! `git daemon` on loopback.
#![allow(clippy::disallowed_methods)] // tests build fixture repositories with git directly

use std::path::Path;
use std::process::Command;

use super::*;

fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with two commits; returns (path, first, second).
fn repository(root: &Path) -> (std::path::PathBuf, String, String) {
    let path = root.join("app");
    std::fs::create_dir_all(&path).expect("mkdir");
    git_in(&path, &["init", "-q", "-b", "main"]);
    std::fs::write(path.join("app.py"), "print(1)\n").expect("write");
    git_in(&path, &["add", "."]);
    git_in(&path, &["commit", "-q", "-m", "one"]);
    let first = git_in(&path, &["rev-parse", "HEAD"]);
    std::fs::create_dir_all(path.join("static")).expect("mkdir");
    std::fs::write(path.join("static/index.html"), "<p>two</p>\n").expect("write");
    git_in(&path, &["add", "."]);
    git_in(&path, &["commit", "-q", "-m", "two"]);
    let second = git_in(&path, &["rev-parse", "HEAD"]);
    (path, first, second)
}

#[tokio::test]
async fn fetches_exact_commits_and_exports_them() {
    let sources = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let (path, first, second) = repository(sources.path());
    let cache = SourceCache::new(data.path().join("apps"), vec![sources.path().to_path_buf()]);
    let url = format!("file://{}", path.display());

    assert!(!cache.contains("web", &first).await.expect("contains"));
    cache
        .ensure("web", &url, &first)
        .await
        .expect("fetch first");
    assert!(cache.contains("web", &first).await.expect("contains"));
    assert_eq!(
        cache.describe("web", &first).await.expect("describe"),
        CommitInfo {
            author: "t".into(),
            message: "one".into()
        }
    );
    assert!(
        cache.describe("web", &second).await.is_err(),
        "a commit not fetched yet is not described"
    );
    let release = data.path().join("apps/web/releases/1");
    cache.export("web", &first, &release).await.expect("export");
    assert_eq!(
        std::fs::read_to_string(release.join("app.py")).expect("file"),
        "print(1)\n"
    );
    assert!(
        !release.join("static").exists(),
        "exactly the first commit's files"
    );
    assert!(
        !release.join(".git").exists(),
        "no repository metadata in a release"
    );

    cache
        .ensure("web", &url, &second)
        .await
        .expect("fetch second");
    let next = data.path().join("apps/web/releases/2");
    cache.export("web", &second, &next).await.expect("export");
    assert!(next.join("static/index.html").is_file());
    // Idempotent: ensuring a cached commit does nothing.
    cache.ensure("web", &url, &first).await.expect("cached");

    let error = cache
        .export("web", &second, &next)
        .await
        .expect_err("occupied");
    assert!(
        matches!(error, SourceError::DestinationNotEmpty(_)),
        "{error}"
    );
    let missing = "0".repeat(40);
    let error = cache
        .ensure("web", &url, &missing)
        .await
        .expect_err("absent commit");
    assert!(matches!(error, SourceError::CommitNotFound(_)), "{error}");
}

#[tokio::test]
async fn refuses_what_a_hostile_document_could_carry() {
    let sources = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let (path, first, _) = repository(sources.path());
    let cache = SourceCache::new(
        data.path().join("apps"),
        vec![data.path().join("only-here")],
    );
    let url = format!("file://{}", path.display());
    let outside = cache
        .ensure("web", &url, &first)
        .await
        .expect_err("outside the roots");
    assert!(matches!(outside, SourceError::PathNotAllowed), "{outside}");
    for (service, url, commit) in [
        ("../etc", url.as_str(), first.as_str()),
        ("web", "ext::sh -c id", first.as_str()),
        ("web", "--upload-pack=id", first.as_str()),
        ("web", url.as_str(), "main"),
        ("web", url.as_str(), "-q"),
    ] {
        let error = cache
            .ensure(service, url, commit)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error,
                SourceError::Invalid { .. } | SourceError::PathNotAllowed
            ),
            "{service} {url} {commit}: {error}"
        );
    }
    assert!(
        !data.path().join("apps").exists(),
        "nothing was created for refused input"
    );
}

#[tokio::test]
async fn fetches_by_commit_over_git_daemon() {
    let sources = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let (_, first, second) = repository(sources.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut daemon = Command::new(git_daemon_program())
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
        ])
        .arg(format!("--base-path={}", sources.path().display()))
        .arg(sources.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cache = SourceCache::new(data.path().join("apps"), vec![]);
    let url = format!("git://127.0.0.1:{port}/app");
    let result = async {
        cache.ensure("api", &url, &second).await?;
        cache.ensure("api", &url, &first).await?;
        cache.export("api", &first, &data.path().join("out")).await
    }
    .await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    result.expect("fetch and export over git://");
    assert!(data.path().join("out/app.py").is_file());
}

/// The `git-daemon` program itself: killing a `git daemon` wrapper would leave the
/// daemon running.
fn git_daemon_program() -> std::path::PathBuf {
    let output = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git --exec-path");
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("git-daemon")
}
