//! `nanoscale helper --data-dir DIR '<operation>'` (or `-`: the operation on
//! stdin): one privileged operation of the agent's fixed list
//! (`nanoscale_agent::helper`), checked, then done, as a command. Meant to be run
//! as root (directly, or by an unprivileged agent through a sudo rule that pins
//! `--data-dir` and `-`); it trusts nothing else of its caller. An operation that
//! carries secrets (`start_shim`'s env) comes on stdin: arguments are readable by
//! every user in /proc. Prints the answer as JSON; exit 2 for a refused operation,
//! 1 when it failed.
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use nanoscale_agent::helper::{Helper, Operation};

#[derive(Debug, Args)]
pub struct HelperArgs {
    /// The node's data dir: apps under DIR/apps, the agent's state in DIR/agent.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The operation, a JSON object such as {"op": "create_app_user", "service": "web"},
    /// or `-` to read it from stdin.
    #[arg(value_name = "OPERATION")]
    operation: String,
}

/// The largest operation read from stdin.
const MAX_OPERATION_BYTES: u64 = 4 << 20;

pub fn main(args: HelperArgs) -> ExitCode {
    let refused = |why: String| {
        eprintln!("error: refused: {why}");
        ExitCode::from(2)
    };
    let text = if args.operation == "-" {
        // One operation is small: a shim spec with its env is well under this.
        let mut text = String::new();
        let read = std::io::stdin()
            .take(MAX_OPERATION_BYTES + 1)
            .read_to_string(&mut text);
        match read {
            Err(error) => return refused(format!("reading the operation from stdin: {error}")),
            Ok(n) if n as u64 > MAX_OPERATION_BYTES => {
                return refused(format!(
                    "the operation on stdin is over {MAX_OPERATION_BYTES} bytes"
                ))
            }
            Ok(_) => text,
        }
    } else {
        args.operation
    };
    let operation = match Operation::parse(&text) {
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
