//! What the agent's integration tests share.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The embedded static shim, written out once per test binary: what production runs.
pub fn shim() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shim-bin");
        nanoscale_agent::runtime::embedded::install(&bin).expect("writing the shim")
    })
    .clone()
}
