//! `nanoscale-shim <dir>`: one instance's shim, as the small static executable the
//! agent embeds and writes out (`nanoscale_agent::runtime::embedded`).
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: nanoscale-shim <dir>");
        std::process::exit(64);
    };
    std::process::exit(nanoscale_shim::shim::main(&PathBuf::from(dir)));
}
