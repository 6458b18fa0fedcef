//! `nanoscale-shim <dir>`: the per-instance shim as its own small binary, so the
//! runtime's integration tests can run real shims without the whole `nanoscale`
//! binary. Production runs the same code as `nanoscale shim <dir>`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: nanoscale-shim <dir>");
        std::process::exit(64);
    };
    std::process::exit(nanoscale_agent::runtime::shim::main(&PathBuf::from(dir)));
}
