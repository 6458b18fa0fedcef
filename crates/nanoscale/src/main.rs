//! `nanoscale`: one binary for the control plane (`up`) and the CLI verbs.
//! Argument parsing and wiring only; the work lives in the library crates.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod cli;
mod config;
mod join;
mod node_run;
mod proxy;
mod supervisor;
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
    /// Run the node agent (started and supervised by `up`; not usually run by hand).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    /// Run the traffic layer (started and supervised by the agent).
    #[command(hide = true)]
    Proxy(proxy::ProxyArgs),
    /// Make this server a node of a cluster with a one-time token (the install
    /// script from `nanoscale node add` runs it).
    Join(join::JoinArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> ExitCode {
    // The shim is dispatched before anything else is set up: it must stay tiny
    // (no async runtime, no argument parser), one per running instance.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().as_deref() == Some(std::ffi::OsStr::new("shim")) {
        let Some(dir) = raw.next() else {
            eprintln!("usage: nanoscale shim <DIR> (started by the agent)");
            return ExitCode::from(64);
        };
        let code = nanoscale_agent::runtime::shim::main(std::path::Path::new(&dir));
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let args = Args::parse();
    if let Command::Proxy(proxy_args) = args.command {
        return proxy::main(proxy_args);
    }
    if let Command::Agent(agent_args) = args.command {
        // The agent stays small: one thread is plenty for its loops.
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(agent::run(agent_args)),
            Err(error) => {
                eprintln!("error: cannot start the async runtime: {error}");
                ExitCode::FAILURE
            }
        };
    }
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
        Command::Join(join_args) => runtime.block_on(join::run(join_args)),
        Command::Agent(_) | Command::Proxy(_) => ExitCode::FAILURE,
        Command::Client(command) => runtime.block_on(cli::run(args.global, command)),
    }
}
