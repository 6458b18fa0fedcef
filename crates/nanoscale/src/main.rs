//! `nanoscale`: one binary for the control plane (`up`) and the CLI verbs.
//! Argument parsing and wiring only; the work lives in the library crates.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod cli;
mod config;
mod helper;
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
    /// Do one privileged operation of the agent's fixed list (run as root).
    #[command(hide = true)]
    Helper(helper::HelperArgs),
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
    if let Command::Helper(helper_args) = args.command {
        return helper::main(helper_args);
    }
    if let Command::Agent(agent_args) = args.command {
        // The agent stays small: one thread is plenty for its loops.
        return match async_runtime(tokio::runtime::Builder::new_current_thread()) {
            Ok(runtime) => runtime.block_on(agent::run(agent_args)),
            Err(code) => code,
        };
    }
    let runtime = match async_runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match args.command {
        Command::Up(up_args) => runtime.block_on(up::run(up_args)),
        Command::Join(join_args) => runtime.block_on(join::run(join_args)),
        Command::Agent(_) | Command::Proxy(_) | Command::Helper(_) => ExitCode::FAILURE,
        Command::Client(command) => runtime.block_on(cli::run(args.global, command)),
    }
}

/// A tokio runtime from `builder`, or the exit code after saying why not.
pub(crate) fn async_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        eprintln!("error: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}
