//! The firewall's apply-confirm-revert cycle with real nftables, in a network
//! namespace of the test's own (nothing touches the machine's rules). The agent's
//! context is real; what stands in for the control plane is a TCP listener on the
//! namespace's loopback plus the "report accepted" clock, which the test moves on
//! itself (no report loop runs here). Cutting both is how the test makes a change
//! that leaves the node unable to reach its control plane.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoscale_agent::context::{AgentConfig, Context};
use nanoscale_agent::protocol::Credential;
use nanoscale_agent::store::AgentStore;
use nanoscale_core::desired::{DesiredDocument, DesiredState, SecurityMode};
use uuid::Uuid;

struct Namespace(String);

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let name = format!("nsfw{}", std::process::id());
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        let up = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .map_err(|e| e.to_string())?;
        assert!(up.success());
        Ok(Namespace(name))
    }

    fn nft(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .expect("nft");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn document(mode: SecurityMode) -> DesiredDocument {
    let mut state = DesiredState::new(Uuid::nil(), "node-1", mode, Vec::new());
    state.ssh_from = vec!["192.0.2.0/24".into()];
    DesiredDocument {
        version: 1,
        sha256: state.sha256(),
        state,
    }
}

/// Checks the firewall against `state` until its report is `wanted`, as the
/// reconcile loop does every round: a check made while the previous change
/// still holds the firewall's claim does nothing, and the next one starts it.
async fn converge(
    context: &Arc<Context>,
    state: &DesiredState,
    wanted: &str,
) -> nanoscale_core::firewall::FirewallState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        nanoscale_agent::firewall::check(context, state);
        let report = context.firewall.lock().unwrap().report.clone();
        if let Some(report) = report.filter(|report| report.status == wanted) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no {wanted} firewall: {report:?}",
            report = context.firewall.lock().unwrap().report
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_change_that_cuts_the_control_plane_off_is_reverted_and_one_that_does_not_is_kept() {
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/usr/sbin/nft").exists() {
        eprintln!("skipping: needs root and nft (scripts/test installs nftables)");
        return;
    }
    let namespace = match Namespace::create() {
        Ok(namespace) => namespace,
        Err(reason) => {
            eprintln!("skipping: cannot create a network namespace: {reason}");
            return;
        }
    };
    let name = namespace.0.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread, its runtime and the nft it runs live in the namespace.
                let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(cycle(&namespace));
            })
            .join()
            .map_err(std::panic::resume_unwind)
            .ok();
    });
}

async fn cycle(namespace: &Namespace) {
    let temp = tempfile::tempdir().unwrap();
    let control_plane = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = control_plane.local_addr().unwrap();
    let mut config = AgentConfig::new(
        format!("http://{address}"),
        Credential::Bearer("nsn_test".into()),
        temp.path().to_path_buf(),
    );
    config.manage_firewall = true;
    config.firewall_open_ports = vec![7070];
    config.firewall_confirm = Duration::from_secs(3);
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let sealer = nanoscale_sealed::Sealer::from_key(&[3u8; 32]);
    let store = AgentStore::open(&config.state_dir.join("agent.db"), sealer)
        .await
        .unwrap();
    let context = Arc::new(Context::new(config, store));
    // Stands in for the report loop: every accepted report moves this clock on.
    let reporting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let context = Arc::clone(&context);
        let reporting = Arc::clone(&reporting);
        tokio::spawn(async move {
            loop {
                if reporting.load(Ordering::SeqCst) {
                    context
                        .last_contact_ms
                        .store(chrono::Utc::now().timestamp_millis(), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    // B while the control plane answers: kept, and the table is what mode B says.
    let current = document(SecurityMode::B);
    let applied = converge(&context, &current.state, "applied").await;
    assert_eq!(applied.mode, SecurityMode::B);
    assert_eq!(applied.open_tcp_ports, Some(vec![22, 7070]));
    let (listed, table) = namespace.nft(&["list", "table", "inet", "nanoscale"]);
    assert!(listed, "no table");
    assert!(table.contains("policy drop"), "{table}");
    assert!(table.contains("tcp dport 7070 accept"), "{table}");
    assert!(
        table.contains("ip saddr 192.0.2.0/24 tcp dport 22 accept"),
        "{table}"
    );

    // C, after which nothing reaches the control plane any more: reverted to B.
    reporting.store(false, Ordering::SeqCst);
    drop(control_plane);
    let current = document(SecurityMode::C);
    let begun = Instant::now();
    let reverted = converge(&context, &current.state, "reverted").await;
    let took = begun.elapsed();
    assert_eq!(reverted.mode, SecurityMode::B, "{reverted:?}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let message = reverted.message.unwrap_or_default();
    assert!(message.contains("reverted to B"), "{message}");
    let (_, table) = namespace.nft(&["list", "table", "inet", "nanoscale"]);
    assert!(
        table.contains("tcp dport 7070 accept"),
        "B's rules are back: {table}"
    );
    let events = context.store.pending_events(100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.kind == "firewall.reverted" && event.severity == "warning"),
        "{events:?}"
    );
    // The same plan is not tried again by itself...
    nanoscale_agent::firewall::check(&context, &current.state);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        context
            .firewall
            .lock()
            .unwrap()
            .report
            .as_ref()
            .unwrap()
            .status,
        "reverted"
    );

    // ...but A is, and it leaves no table behind.
    let current = document(SecurityMode::A);
    let open = converge(&context, &current.state, "applied").await;
    assert_eq!(open.mode, SecurityMode::A);
    let (listed, _) = namespace.nft(&["list", "table", "inet", "nanoscale"]);
    assert!(!listed, "mode A leaves no table");
}
