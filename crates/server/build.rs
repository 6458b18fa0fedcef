//! Release builds embed `dashboard/dist` file by file (`include_bytes!`), so cargo
//! would notice a changed or removed file but not the folder appearing or gaining
//! files: this makes it recompile the crate then too.
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let Ok(manifest_dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let dashboard = Path::new(&manifest_dir).join("../../dashboard");
    let dist = dashboard.join("dist");
    if dist.is_dir() {
        println!("cargo::rerun-if-changed={}", dist.display());
    } else if dashboard.is_dir() {
        // A path that does not exist would make every build rerun this script, so
        // watch the folder `dist` will be made in. Debug builds need this too: they
        // read files from disk at run time, but only when `dist` existed when the
        // crate was compiled (rust-embed looks at the folder then).
        println!("cargo::rerun-if-changed={}", dashboard.display());
    }
}
