//! `nanoscale`: one binary for the control plane (`up`) and the CLI verbs.
//! Argument parsing and wiring only; the work lives in the library crates.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod config;
mod up;

#[derive(Debug, Parser)]
#[command(
    name = "nanoscale",
    version,
    about = "Self-hosted platform-as-a-service: git push to healthy app on your own servers"
)]
struct Args {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start NanoScale on this machine: control plane (API and dashboard) plus this node.
    Up(up::UpArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Command::Up(up_args) => runtime.block_on(up::run(up_args)),
        Command::Client(command) => runtime.block_on(cli::run(args.global, command)),
    }
}
