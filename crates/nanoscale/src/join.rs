//! `nanoscale join`: makes this server a node of a cluster with a one-time token
//! (the install script runs it; see `deploy/install.sh`).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use nanoscale_agent::cluster::{JoinFailure, JoinOptions};

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// HOST:PORT of the control plane's cluster listener (the install script
    /// knows it).
    #[arg(long, value_name = "HOST:PORT")]
    cluster: String,
    /// Where this node keeps everything [default: /var/lib/nanoscale].
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nanoscale")]
    data_dir: PathBuf,
    /// The node's name, a DNS label [default: this host's name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A node label placement rules can match, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// File holding the join token; else NANOSCALE_JOIN_TOKEN (a token is never
    /// an argument: the process list is world-readable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

pub async fn run(args: JoinArgs) -> ExitCode {
    let options = match options(args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(64);
        }
    };
    let name = options.name.clone();
    match nanoscale_agent::cluster::join(options).await {
        Ok(membership) => {
            println!(
                "joined the cluster at {} as node {} ({}); certificate valid until {}",
                membership.cluster, membership.node_name, membership.node_id, membership.not_after
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: node {name} could not join: {error}");
            match error {
                JoinFailure::Invalid(_) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn options(args: JoinArgs) -> Result<JoinOptions, String> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| format!("--token-file {}: {error}", path.display()))?,
        None => std::env::var("NANOSCALE_JOIN_TOKEN").map_err(|_| {
            "no join token: set NANOSCALE_JOIN_TOKEN or pass --token-file (make one with: nanoscale node add)"
                .to_owned()
        })?,
    };
    let name = match args.name {
        Some(name) => name,
        None => host_name()?,
    };
    nanoscale_core::cluster::validate_node_name(&name)
        .map_err(|error| format!("--name {name:?} {}", error.message))?;
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| format!("--label {label:?} is not KEY=VALUE"))?;
        nanoscale_core::service::validate_label(&format!("--label {key}"), key, value)
            .map_err(|error| format!("{} {}", error.field, error.message))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    if !args.data_dir.is_absolute() {
        return Err(format!(
            "--data-dir {} must be an absolute path",
            args.data_dir.display()
        ));
    }
    Ok(JoinOptions {
        cluster: args.cluster,
        token,
        name,
        labels,
        data_dir: args.data_dir,
    })
}

/// This host's name as a node name: lowercased, first label only.
fn host_name() -> Result<String, String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|error| format!("cannot read this host's name ({error}); pass --name"))?;
    let name = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if nanoscale_core::is_dns_label(&name) {
        Ok(name)
    } else {
        Err(format!(
            "this host's name {:?} is not a DNS label; pass --name",
            raw.trim()
        ))
    }
}
