//! The node's firewall: the agent converges NanoScale's nftables table
//! (`core::firewall`) to the document's security mode, and keeps a change only
//! once it has reached the control plane again through it (the `iptables-apply`
//! idea): otherwise it restores the previous table by itself, so a mode change can
//! never cut a node off from the control plane.
//!
//! A change, once started, runs in the background: apply (after `nft -c` checked
//! the script) → report "confirming" → wait, up to the confirm window, for a fresh
//! TCP connection to the control plane *and* a report the control plane accepted
//! after the change → keep it, or revert. A reverted plan is not tried again until
//! the desired plan changes.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nanoscale_core::desired::{DesiredState, SecurityMode};
use nanoscale_core::firewall::{FirewallPlan, FirewallState};

use crate::context::Context;
use crate::store::{event, now_ms};

/// Where the firewall stands, for the next report.
#[derive(Debug, Clone, Default)]
pub struct FirewallStatus {
    /// The plan in force (None before the first change of this agent's life).
    pub applied: Option<FirewallPlan>,
    /// The last plan that had to be reverted.
    pub rejected: Option<FirewallPlan>,
    pub report: Option<FirewallState>,
}

/// The plan the document's `state` asks for on this node.
pub fn desired_plan(context: &Context, state: &DesiredState) -> FirewallPlan {
    let mode = state.security_mode;
    let mut ports = context.config.firewall_open_ports.clone();
    if let Some(proxy) = &context.config.proxy {
        if let Some(listen) = proxy.external_listen(Some(mode)) {
            ports.push(listen.port());
        }
    }
    ports.sort_unstable();
    ports.dedup();
    FirewallPlan {
        mode,
        open_tcp_ports: ports,
        ssh_from: state.ssh_from.clone(),
    }
}

/// Starts converging the firewall when the desired plan differs from the one in
/// force (called every reconcile round with its document; cheap when nothing
/// changed).
pub fn check(context: &Arc<Context>, state: &DesiredState) {
    let desired = desired_plan(context, state);
    let (applied, rejected) = match context.firewall.lock() {
        Ok(status) => (status.applied.clone(), status.rejected.clone()),
        Err(_) => return,
    };
    if applied.as_ref() == Some(&desired) || rejected.as_ref() == Some(&desired) {
        return;
    }
    if !context.config.manage_firewall {
        if desired.mode != SecurityMode::A {
            set_report(
                context,
                desired_unmanaged(
                    &desired,
                    "the agent does not manage the firewall (it is not root)",
                ),
            );
        }
        return;
    }
    if !context.claim("firewall".to_owned()) {
        return;
    }
    let context = Arc::clone(context);
    tokio::spawn(async move {
        change(&context, applied, desired).await;
        context.release("firewall");
        context.nudge();
    });
}

fn desired_unmanaged(desired: &FirewallPlan, why: &str) -> FirewallState {
    FirewallState {
        mode: SecurityMode::A,
        open_tcp_ports: None,
        ssh_from: Vec::new(),
        status: "unavailable".into(),
        message: Some(format!(
            "security mode {:?} asked for, but {why}",
            desired.mode
        )),
    }
}

fn set_report(context: &Context, report: FirewallState) {
    if let Ok(mut status) = context.firewall.lock() {
        status.report = Some(report);
    }
    context.report_now.notify_one();
}

async fn change(context: &Arc<Context>, previous: Option<FirewallPlan>, desired: FirewallPlan) {
    if crate::helper::nft().is_none() {
        if desired.mode == SecurityMode::A {
            // Nothing to remove where nft cannot even have put anything.
            if let Ok(mut status) = context.firewall.lock() {
                status.applied = Some(desired.clone());
                status.report = Some(desired.state("applied", None));
            }
            context.report_now.notify_one();
            return;
        }
        set_report(
            context,
            desired_unmanaged(&desired, "nftables (nft) is not installed"),
        );
        if let Ok(mut status) = context.firewall.lock() {
            status.rejected = Some(desired);
        }
        return;
    }
    let previous = previous.unwrap_or(FirewallPlan {
        mode: SecurityMode::A,
        open_tcp_ports: Vec::new(),
        ssh_from: Vec::new(),
    });
    let backend = match apply(context, &desired).await {
        Ok(backend) => backend,
        Err(error) => {
            record(
                context,
                "firewall.failed",
                "error",
                format!(
                    "the firewall of security mode {:?} could not be applied: {error}",
                    desired.mode
                ),
            )
            .await;
            if let Ok(mut status) = context.firewall.lock() {
                status.rejected = Some(desired.clone());
                status.report = Some(previous.state("failed", Some(error)));
            }
            return;
        }
    };
    let note = backend_note(&backend);
    let started = now_ms();
    set_report(context, desired.state("confirming", note.clone()));
    let confirmed = desired.mode == SecurityMode::A || confirm(context, started).await;
    if confirmed {
        let said = exposure(&desired);
        if let Ok(mut status) = context.firewall.lock() {
            status.applied = Some(desired.clone());
            status.report = Some(desired.state("applied", note.clone()));
        }
        let with = if backend == "ufw" { " (with ufw)" } else { "" };
        record(
            context,
            "firewall.applied",
            "info",
            format!("security mode {:?} in force{with}: {said}", desired.mode),
        )
        .await;
        return;
    }
    let why = format!(
        "could not reach the control plane within {} s of the change",
        context.config.firewall_confirm.as_secs()
    );
    let restored = apply(context, &previous).await;
    let message = match &restored {
        Ok(_) => format!(
            "security mode {:?} reverted to {:?}: {why}",
            desired.mode, previous.mode
        ),
        Err(error) => format!(
            "security mode {:?} could not be reverted ({error}) after: {why}",
            desired.mode
        ),
    };
    if let Ok(mut status) = context.firewall.lock() {
        status.applied = Some(previous.clone());
        status.rejected = Some(desired);
        status.report = Some(previous.state("reverted", Some(message.clone())));
    }
    record(context, "firewall.reverted", "warning", message).await;
}

async fn record(context: &Context, kind: &str, severity: &str, message: String) {
    if let Err(error) = context
        .store
        .record_event(event(kind, severity, message))
        .await
    {
        tracing::error!(%error, "could not record a firewall event");
    }
    context.report_now.notify_one();
}

fn exposure(plan: &FirewallPlan) -> String {
    let state = plan.state("applied", None);
    match state.open_tcp_ports {
        None => "every port open (no firewall)".into(),
        Some(ports) if ports.is_empty() => "nothing open inbound".into(),
        Some(ports) => {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!(
                "TCP {} open (SSH from {})",
                list.join(", "),
                state.ssh_from.join(", ")
            )
        }
    }
}

/// Applies the plan through the privileged helper (nftables: it writes the
/// script from the plan itself, checks it with `nft -c`, then applies it
/// atomically; where ufw is active, NanoScale's rules go into ufw). Returns the
/// backend that keeps it.
async fn apply(context: &Context, plan: &FirewallPlan) -> Result<String, String> {
    let answer = crate::helper::Helper::for_agent(&context.config)?
        .run(&crate::helper::Operation::ApplyFirewall { plan: plan.clone() })
        .await?;
    Ok(match answer {
        crate::helper::Answer::Firewall { backend } => backend,
        _ => "nftables".into(),
    })
}

/// What the report says of a plan kept by ufw: the operator's own ufw rules
/// apply too, so more may be open than NanoScale's list.
fn backend_note(backend: &str) -> Option<String> {
    (backend == "ufw").then(|| {
        "kept with ufw, which is active on this node; ufw's other rules apply too".to_owned()
    })
}

/// True once, after `since`, a fresh TCP connection to the control plane opened
/// and a report of this agent was accepted, within the confirm window.
async fn confirm(context: &Context, since: i64) -> bool {
    let window = context.config.firewall_confirm;
    let deadline = tokio::time::Instant::now() + window;
    let target = control_plane_address(&context.config.control_plane);
    while tokio::time::Instant::now() < deadline {
        context.report_now.notify_one();
        let reported = context.last_contact_ms.load(Ordering::SeqCst) > since;
        if reported {
            if let Some(target) = &target {
                let connect = tokio::net::TcpStream::connect(target.as_str());
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), connect).await {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// `host:port` of the control plane's URL.
fn control_plane_address(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_address_comes_from_its_url() {
        assert_eq!(
            control_plane_address("http://127.0.0.1:7070").as_deref(),
            Some("127.0.0.1:7070")
        );
        assert_eq!(
            control_plane_address("https://cp.example.com").as_deref(),
            Some("cp.example.com:443")
        );
        assert_eq!(
            control_plane_address("https://[::1]:7443/").as_deref(),
            Some("[::1]:7443")
        );
        assert_eq!(control_plane_address("not a url"), None);
    }
}
