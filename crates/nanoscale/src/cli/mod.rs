//! CLI verbs that talk to a control plane through `nanoscale-client`.
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct GlobalArgs {}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {}

pub async fn run(_global: GlobalArgs, command: ClientCommand) -> ExitCode {
    match command {}
}
