//! Builds the per-instance shim (the `nanoscale-shim` crate) as a statically linked
//! executable, for `runtime/embedded.rs` to embed with `include_bytes!`.
//!
//! A shim runs beside every app instance, so it must be small: linked statically,
//! with nothing of the agent, it stays well under 2 MiB of RSS, where the whole
//! `nanoscale` binary re-executed cost about 6 MiB (`bench/README.md`).
//!
//! It is a second cargo build with its own target directory (`<target>/nanoscale-shim`,
//! shared by every profile of the outer build so it is made once), for the same
//! target, with `crt-static` for that build only: `--target` keeps the flag off
//! build scripts and proc macros. It shares the outer build's jobserver.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    if let Err(error) = build() {
        eprintln!("error: building the embedded shim: {error}");
        std::process::exit(1);
    }
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

#[allow(clippy::disallowed_methods)] // a build script: cargo itself, not user input
fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or("the agent crate is not at <workspace>/crates/agent")?;
    for watched in ["crates/shim", "crates/process", "Cargo.lock", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let target = var("TARGET")?;
    // OUT_DIR is <target dir>[/<triple>]/<profile>/build/<package>-<hash>/out.
    let target_dir = match out_dir.ancestors().nth(2) {
        Some(build) if build.file_name().is_some_and(|name| name == "build") => build
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("nanoscale-shim"))
            .unwrap_or_else(|| out_dir.join("nanoscale-shim")),
        _ => out_dir.join("nanoscale-shim"),
    };
    let cargo = var("CARGO")?;
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--offline", "--locked", "--quiet"])
        .args(["-p", "nanoscale-shim", "--bin", "nanoscale-shim"])
        .args(["--profile", "shim", "--target", &target])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace)
        // Nothing of the outer build's flags or wrappers (clippy's, a fuzzer's
        // sanitizers): only what reaches the toolchain, and the jobserver.
        .env_clear()
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .stdout(Stdio::from(std::io::stderr()));
    for kept in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "CARGO_MAKEFLAGS",
        "TMPDIR",
    ] {
        if let Ok(value) = std::env::var(kept) {
            command.env(kept, value);
        }
    }
    let status = command
        .status()
        .map_err(|error| format!("running {cargo}: {error}"))?;
    if !status.success() {
        return Err(format!("{cargo} build -p nanoscale-shim: {status}"));
    }
    let built = target_dir.join(&target).join("shim").join("nanoscale-shim");
    let embedded = out_dir.join("nanoscale-shim");
    let bytes =
        std::fs::read(&built).map_err(|error| format!("reading {}: {error}", built.display()))?;
    std::fs::write(&embedded, &bytes)
        .map_err(|error| format!("writing {}: {error}", embedded.display()))?;
    // Its digest, so the agent can name and check the written-out file without
    // reading the embedded bytes (which would keep them resident in every agent).
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    println!(
        "cargo:rustc-env=NANOSCALE_SHIM_SHA256={}",
        hex::encode(digest)
    );
    Ok(())
}
