//! `node ls|add|rm` and `audit` (`node run` is in `crate::node_run`).
use clap::{Args, Subcommand};
use nanoscale_client::api::AuditFilter;
use nanoscale_core::cluster::CreateJoinToken;

use super::output::{print_json, short_id, when, when_or, Table};
use super::projects::pick;
use super::{CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes with their status, usage and desired/applied versions.
    #[command(visible_alias = "list")]
    Ls,
    /// Make a one-time join token and print the command that joins a new server.
    Add(AddArgs),
    /// Remove a node from the cluster: its certificate stops working at once.
    #[command(visible_alias = "remove")]
    Rm {
        /// Node name or id.
        node: String,
    },
    /// Set a node's security mode: A (no firewall), B (only the proxy's ports and
    /// SSH inbound), C (nothing inbound; traffic through a tunnel). The node keeps
    /// a new mode only if it still reaches the control plane through it.
    Security {
        /// Node name or id.
        node: String,
        /// A, B or C.
        #[arg(long, value_name = "A|B|C")]
        mode: Option<String>,
        /// A network SSH stays open to in mode B (repeatable), e.g. 203.0.113.0/24.
        #[arg(long = "ssh-from", value_name = "NETWORK")]
        ssh_from: Vec<String>,
        /// Open SSH to every address again in mode B.
        #[arg(long, conflicts_with = "ssh_from")]
        ssh_from_anywhere: bool,
    },
    /// Run this joined server's agent, restarting it when it exits (what the
    /// install script starts where systemd does not run).
    Run(crate::node_run::NodeRunArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Seconds the token stays valid (1-604800).
    #[arg(long, default_value_t = 600, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    ttl: u64,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries to show (1-1000).
    #[arg(long, short = 'n', default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Only this action, e.g. project.create or token.revoke.
    #[arg(long, short)]
    action: Option<String>,
}

pub async fn node(context: &Context, command: NodeCommand) -> CliResult {
    match command {
        NodeCommand::Ls => {
            let nodes = context.client.list_nodes().await?;
            if context.json() {
                return print_json(&nodes);
            }
            let mut table = Table::new(&[
                "NAME",
                "ID",
                "STATUS",
                "ADDRESS",
                "MODE",
                "CPUS",
                "MEMORY",
                "CPU%",
                "MEM USED",
                "APPLIED/DESIRED",
                "LAST SEEN",
            ]);
            for node in &nodes {
                let usage = node.usage.as_ref();
                table.row(vec![
                    node.name.clone(),
                    short_id(&node.id),
                    node.status.clone(),
                    node.address.clone(),
                    mode_shown(node),
                    node.capacity.cpus.to_string(),
                    bytes(node.capacity.memory_bytes),
                    usage.map_or_else(|| "-".to_owned(), |u| format!("{:.0}", u.cpu_percent)),
                    usage.map_or_else(|| "-".to_owned(), |u| bytes(u.memory_used_bytes)),
                    format!(
                        "{}/{} {}",
                        node.applied_version,
                        node.desired_version,
                        node.convergence.as_str()
                    ),
                    when_or(node.last_seen_at.as_ref(), "never"),
                ]);
            }
            table.print_or("No nodes.");
            Ok(())
        }
        NodeCommand::Add(args) => {
            let created = context
                .client
                .create_join_token(&CreateJoinToken {
                    ttl_secs: Some(args.ttl),
                })
                .await?;
            if context.json() {
                return print_json(&created);
            }
            println!(
                "Run this on the new server (as root; the token works once, until {}):",
                when(&created.expires_at)
            );
            println!();
            println!("  {}", created.command);
            Ok(())
        }
        NodeCommand::Rm { node } => {
            let nodes = context.client.list_nodes().await?;
            let found = pick(nodes, &node, |node| (&node.name, &node.id)).ok_or_else(|| {
                CliError::failure(format!("no node named '{node}'")).hint("see `nanoscale node ls`")
            })?;
            context.client.remove_node(found.id).await?;
            if !context.json() {
                println!("removed node {}; its certificate is revoked", found.name);
            }
            Ok(())
        }
        NodeCommand::Security {
            node,
            mode,
            ssh_from,
            ssh_from_anywhere,
        } => {
            let mode = mode.map(|mode| mode.to_ascii_uppercase());
            if let Some(mode) = &mode {
                if !matches!(mode.as_str(), "A" | "B" | "C") {
                    return Err(CliError::usage(format!("--mode {mode}: use A, B or C")));
                }
            }
            for network in &ssh_from {
                nanoscale_core::firewall::parse_network(network)
                    .map_err(|message| CliError::usage(format!("--ssh-from {message}")))?;
            }
            let ssh_from = if ssh_from_anywhere {
                Some(Vec::new())
            } else {
                (!ssh_from.is_empty()).then_some(ssh_from)
            };
            if mode.is_none() && ssh_from.is_none() {
                return Err(CliError::usage("nothing to change")
                    .hint("give --mode A|B|C and/or --ssh-from NETWORK"));
            }
            let nodes = context.client.list_nodes().await?;
            let found = pick(nodes, &node, |node| (&node.name, &node.id)).ok_or_else(|| {
                CliError::failure(format!("no node named '{node}'")).hint("see `nanoscale node ls`")
            })?;
            let updated = context
                .client
                .update_node(
                    found.id,
                    &nanoscale_client::api::UpdateNode {
                        security_mode: mode,
                        ssh_from,
                    },
                )
                .await?;
            if context.json() {
                return print_json(&updated);
            }
            println!(
                "{} is to be in security mode {}; it reverts by itself if it loses the control plane \
                 (see `nanoscale node ls`)",
                updated.name, updated.security_mode
            );
            Ok(())
        }
        NodeCommand::Run(_) => Err(CliError::usage("node run does not talk to a control plane")),
    }
}

/// The mode asked for, and what is in force when that differs or is not settled.
fn mode_shown(node: &nanoscale_client::api::Node) -> String {
    match &node.firewall {
        Some(firewall)
            if firewall.status != "applied"
                || format!("{:?}", firewall.mode) != node.security_mode =>
        {
            format!(
                "{} ({:?} {})",
                node.security_mode, firewall.mode, firewall.status
            )
        }
        _ => node.security_mode.clone(),
    }
}

pub async fn audit(context: &Context, args: AuditArgs) -> CliResult {
    let filter = AuditFilter {
        action: args.action,
        limit: Some(args.limit),
        ..AuditFilter::default()
    };
    let entries = context.client.list_audit(&filter).await?;
    if context.json() {
        return print_json(&entries);
    }
    let mut table = Table::new(&["TIME", "ACTOR", "ACTION", "RESOURCE", "SUMMARY"]);
    for entry in &entries {
        let resource = match &entry.resource_id {
            Some(id) => format!("{} {}", entry.resource_type, shorten(id)),
            None => entry.resource_type.clone(),
        };
        table.row(vec![
            when(&entry.time),
            entry.actor_name.clone(),
            entry.action.clone(),
            resource,
            summary(&entry.summary),
        ]);
    }
    table.print_or("No audit entries.");
    Ok(())
}

/// Ids in the audit log are strings; shorten the ones that are UUIDs.
fn shorten(id: &str) -> String {
    match uuid::Uuid::parse_str(id) {
        Ok(uuid) => short_id(&uuid),
        Err(_) => id.to_owned(),
    }
}

/// The summary as compact JSON, cut to fit a table row.
fn summary(value: &serde_json::Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let cut: String = text.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

fn bytes(count: i64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let count = count as f64;
    if count >= GIB {
        format!("{:.1} GiB", count / GIB)
    } else {
        format!("{:.0} MiB", count / MIB)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn sizes_and_summaries_fit_a_row() {
        assert_eq!(bytes(24 * 1024 * 1024 * 1024), "24.0 GiB");
        assert_eq!(bytes(512 * 1024 * 1024), "512 MiB");
        let long = serde_json::json!({"text": "x".repeat(200)});
        assert_eq!(summary(&long).chars().count(), 80);
        assert_eq!(summary(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
