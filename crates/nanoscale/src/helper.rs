//! `nanoscale helper --data-dir DIR '<operation>'`: one privileged operation of
//! the agent's fixed list (`nanoscale_agent::helper`), checked, then done, as a
//! command. Meant to be run as root (directly, or by an unprivileged agent through
//! a sudo rule that pins `--data-dir`); it trusts nothing else of its caller.
//! Prints the answer as JSON; exit 2 for a refused operation, 1 when it failed.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use nanoscale_agent::helper::{Helper, Operation};

#[derive(Debug, Args)]
pub struct HelperArgs {
    /// The node's data dir: apps under DIR/apps, the agent's state in DIR/agent.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The operation, a JSON object such as {"op": "create_app_user", "service": "web"}.
    #[arg(value_name = "OPERATION")]
    operation: String,
}

pub fn main(args: HelperArgs) -> ExitCode {
    let refused = |why: String| {
        eprintln!("error: refused: {why}");
        ExitCode::from(2)
    };
    let operation = match Operation::parse(&args.operation) {
        Ok(operation) => operation,
        Err(why) => return refused(why),
    };
    let helper = match Helper::new(&args.data_dir.join("apps"), &args.data_dir.join("agent")) {
        Ok(helper) => helper,
        Err(why) => return refused(why),
    };
    if let Err(why) = helper.check(&operation) {
        return refused(why);
    }
    let runtime = match crate::async_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(helper.run(&operation)) {
        Ok(answer) => {
            println!(
                "{}",
                serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into())
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
