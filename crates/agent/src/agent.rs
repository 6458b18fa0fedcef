//! The agent process: holds the node's lock, restores its state, then runs its
//! loops until shutdown: hold the channel to the control plane, fetch the
//! desired-state document (from the channel, or the long-poll while it is down),
//! reconcile, and report. Instances run under their shims and outlive the agent; a new agent
//! re-adopts them (same pids) and only acts on what differs.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nanoscale_core::agent::{
    AgentReport, CommitInfo, InstanceReport, ReleaseReport, MAX_EVENTS_PER_REPORT,
};
use nanoscale_core::api::ReleaseStatus;
use rand::Rng;

use crate::builder::create_private_dir;
use crate::channel::Follow;
use crate::context::{AgentConfig, Context};
use crate::protocol::{ControlPlane, ProtocolError};
use crate::store::{event, AgentStore, ReleaseState};

/// Reconcile at least this often (processes can die without telling anyone).
const TICK: Duration = Duration::from_millis(500);
/// Report at least this often (the heartbeat; the control plane marks a node
/// unreachable after 30 s without one).
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long the control plane's node certificates last (renewed with a third left).
const NODE_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

pub async fn run(
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    create_private_dir(&config.state_dir).map_err(anyhow::Error::msg)?;
    create_private_dir(&config.apps_dir).map_err(anyhow::Error::msg)?;
    let _lock = lock(&config).await?;
    // The embedded static shim; the configured program is the fallback. A node
    // that sandboxes apps starts every shim through the helper, which writes out
    // and runs its own copy (`<data>/helper/bin`), never the agent's.
    if !config.sandbox {
        (config.shim_program, config.shim_args) =
            crate::runtime::embedded::command(&config.state_dir, &config.shim_program);
    }
    let sealer = nanoscale_sealed::Sealer::load_or_create(&config.state_dir.join("secret.key"))
        .context("while opening the key that seals secret env values")?;
    let store = AgentStore::open(&config.state_dir.join("agent.db"), sealer)
        .await
        .context("while opening the agent database")?;
    let control_plane = ControlPlane::new(&config.control_plane, config.credential.clone())?;
    let renewer = tokio::spawn(renew_loop(control_plane.clone()));
    let context = Arc::new(Context::new(config, store));
    restore(&context).await?;
    // A low-memory host hears about it (or gets its swap file) at once, not only
    // at its first build.
    tokio::spawn({
        let context = Arc::clone(&context);
        async move { crate::low_memory::ensure(&context).await }
    });

    let (fatal_tx, mut fatal) = tokio::sync::mpsc::channel::<anyhow::Error>(2);
    let fetcher = tokio::spawn(fetch_loop(
        Arc::clone(&context),
        control_plane.clone(),
        fatal_tx.clone(),
    ));
    let channel = context.config.channel.then(|| {
        let (context, control_plane, fatal) = (
            Arc::clone(&context),
            control_plane.clone(),
            fatal_tx.clone(),
        );
        tokio::spawn(async move {
            let refused = control_plane.hold_channel(&context.report_now).await;
            let _ = fatal.send(refused.into()).await;
        })
    });
    if !context.config.channel {
        tracing::info!("the channel is off (--no-channel): using the long-poll");
        control_plane.without_channel();
    }
    let logs = tokio::spawn(log_loop(Arc::clone(&context), control_plane.clone()));
    let reporter = tokio::spawn(report_loop(Arc::clone(&context), control_plane, fatal_tx));
    // The proxy is its own process and outlives this agent; this only watches it.
    let proxy = tokio::spawn(crate::traffic::supervise_proxy(Arc::clone(&context)));
    let journal = (context.config.supervisor == crate::context::Supervisor::Systemd)
        .then(|| tokio::spawn(journal_loop(Arc::clone(&context))));
    tokio::pin!(shutdown);
    let result = loop {
        if let Err(error) = crate::executor::reconcile(&context).await {
            tracing::error!(%error, "reconciliation failed; retrying");
        }
        tokio::select! {
            _ = context.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            Some(error) = fatal.recv() => break Err(error),
            _ = &mut shutdown => break Ok(()),
        }
    };
    fetcher.abort();
    if let Some(channel) = channel {
        channel.abort();
    }
    reporter.abort();
    logs.abort();
    renewer.abort();
    proxy.abort();
    if let Some(journal) = journal {
        journal.abort();
    }
    // Apps keep running under their shims: the next agent re-adopts them.
    context.store.close().await;
    result
}

/// One agent per data directory: a second one waits (a previous agent may be
/// finishing) and then gives up with a clear message.
async fn lock(config: &AgentConfig) -> anyhow::Result<std::fs::File> {
    let path = config.state_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("while opening {}", path.display()))?;
    for _ in 0..100 {
        match file.try_lock() {
            Ok(()) => {
                // The holder's pid, for operators (and tests) looking for the agent.
                use std::io::Write;
                let mut holder = &file;
                holder.set_len(0)?;
                write!(holder, "{}", std::process::id())?;
                return Ok(file);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("while locking {}", path.display()))
            }
        }
    }
    anyhow::bail!(
        "another agent holds {}; stop it first (only one agent may manage a data directory)",
        path.display()
    )
}

/// After a restart: the last document, instances re-adopted with their health
/// watched again, and builds the previous agent left unfinished started over.
async fn restore(context: &Arc<Context>) -> anyhow::Result<()> {
    if let Some((document, _)) = context.store.document().await? {
        if let Ok(mut current) = context.document.lock() {
            *current = Some(document);
        }
    }
    let releases = context.store.releases().await?;
    for release in releases
        .iter()
        .filter(|r| r.state == ReleaseState::Building)
    {
        context.store.forget_build(release.id).await?;
    }
    let mut adopted = 0;
    for instance in context.store.instances().await? {
        if let Some(release) = releases.iter().find(|r| r.id == instance.release_id) {
            crate::supervise::watch_health(context, &instance, release);
            adopted += 1;
        }
    }
    if adopted > 0 {
        context
            .store
            .record_event(event(
                "agent.restarted",
                "info",
                format!("agent restarted and re-adopted {adopted} instance(s)"),
            ))
            .await?;
    }
    Ok(())
}

async fn fetch_loop(
    context: Arc<Context>,
    control_plane: ControlPlane,
    fatal: tokio::sync::mpsc::Sender<anyhow::Error>,
) {
    let mut failures = 0u32;
    loop {
        let known = context.document().map(|d| d.version);
        // After a failure, ask without waiting: the answer is the proof that the
        // link is back, and the report below must not wait for a long-poll.
        let after = if failures == 0 { known } else { None };
        match control_plane.desired_state(after).await {
            Ok(document) => {
                if failures > 0 {
                    // Back in touch (a control plane restart, a healed link):
                    // report at once instead of at the next heartbeat.
                    tracing::info!("reconnected to the control plane");
                    context.report_now.notify_one();
                }
                failures = 0;
                if Some(document.version) == known {
                    continue;
                }
                if let Err(error) = context.store.save_document(&document).await {
                    tracing::error!(%error, "could not store the desired state");
                    backoff(&mut failures).await;
                    continue;
                }
                tracing::info!(version = document.version, "new desired state");
                if let Ok(mut current) = context.document.lock() {
                    *current = Some(document);
                }
                context.nudge();
            }
            Err(ProtocolError::Unauthorized) => {
                let _ = fatal.send(ProtocolError::Unauthorized.into()).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "fetching the desired state; keeping the last one");
                backoff(&mut failures).await;
            }
        }
    }
}

/// Largest report sent, in bytes: under the API's 1 MiB body limit, with room.
const REPORT_BYTES: usize = 900 * 1024;

async fn report_loop(
    context: Arc<Context>,
    control_plane: ControlPlane,
    fatal: tokio::sync::mpsc::Sender<anyhow::Error>,
) {
    let mut failures = 0u32;
    loop {
        match send_report(&context, &control_plane).await {
            Ok(more) => {
                failures = 0;
                if more {
                    continue;
                }
            }
            Err(ReportError::Protocol(ProtocolError::Unauthorized)) => {
                let _ = fatal.send(ProtocolError::Unauthorized.into()).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "reporting to the control plane; events stay queued");
                backoff(&mut failures).await;
                continue;
            }
        }
        tokio::select! {
            _ = context.report_now.notified() => {
                // Let a burst of changes settle into one report.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Sends one report; true when more events are waiting.
async fn send_report(context: &Context, control_plane: &ControlPlane) -> Result<bool, ReportError> {
    // Events first: each is committed with the state change it tells of, so
    // the states read after them are at least as new. Read the other way round,
    // a build finishing in between sent `build.failed` with its release still
    // `building`, and the dashboard, which refreshes on events, kept showing
    // that until the next event.
    let events = context.store.pending_events(MAX_EVENTS_PER_REPORT).await?;
    let (target_version, applied_version) = context.store.versions().await?;
    let status = context.status.lock().map(|s| s.clone()).ok();
    let instances = context
        .store
        .instances()
        .await?
        .into_iter()
        .map(|i| InstanceReport {
            id: i.id,
            service_id: i.service_id,
            release_id: i.release_id,
            replica: i.replica,
            port: i.port,
            pid: (i.status != nanoscale_core::agent::InstanceStatus::Exited)
                .then_some(i.pid)
                .flatten(),
            status: i.status,
            restarts: i.restarts,
            started_at: chrono::DateTime::from_timestamp_millis(i.started_at).unwrap_or_default(),
            memory_bytes: (i.status != nanoscale_core::agent::InstanceStatus::Exited)
                .then_some(i.pid)
                .flatten()
                .and_then(crate::usage::resident_bytes),
        })
        .collect();
    let mut releases = Vec::new();
    for r in context.store.releases().await? {
        let status = match r.state {
            ReleaseState::Building => ReleaseStatus::Building,
            ReleaseState::Built => ReleaseStatus::Starting,
            ReleaseState::Failed => ReleaseStatus::Failed,
            ReleaseState::Live => ReleaseStatus::Live,
            // The control plane retires a release when another goes live.
            ReleaseState::Retired => continue,
        };
        // A failed release may never have fetched its commit: no git call for it
        // on every heartbeat.
        let commit_info = if r.state == ReleaseState::Failed {
            None
        } else {
            commit_info(context, &r.service, &r.commit).await
        };
        releases.push(ReleaseReport {
            release_id: r.id,
            status,
            reason: r.reason,
            commit_info,
        });
    }
    let mut full = events.len() == MAX_EVENTS_PER_REPORT;
    let mut report = AgentReport {
        target_version,
        applied_version,
        convergence: status
            .as_ref()
            .map_or(nanoscale_core::agent::Convergence::Unknown, |s| {
                s.convergence
            }),
        problems: status.map(|s| s.problems).unwrap_or_default(),
        instances,
        releases,
        events,
        usage: Some(context.usage.sample(&context.config.apps_dir)),
        traffic: crate::traffic::service_traffic(context).await,
        firewall: context
            .firewall
            .lock()
            .ok()
            .and_then(|status| status.report.clone()),
    };
    report.clip_texts();
    // The control plane takes bodies up to 1 MiB: with long (and escaped) event
    // messages, fewer events go now and the rest with the next report.
    while report.events.len() > 1
        && serde_json::to_vec(&report).map_or(0, |bytes| bytes.len()) > REPORT_BYTES
    {
        let keep = report.events.len() / 2;
        report.events.truncate(keep);
        full = true;
    }
    let ack = control_plane.report(&report).await?;
    context
        .last_contact_ms
        .store(crate::store::now_ms(), std::sync::atomic::Ordering::SeqCst);
    context.store.acknowledge(&ack.acknowledged).await?;
    Ok(full)
}

/// The commit's author and subject, described once per commit; `None` until the
/// commit is in this node's cache (the report goes on without it).
async fn commit_info(context: &Context, service: &str, commit: &str) -> Option<CommitInfo> {
    if let Some(known) = context
        .commits
        .lock()
        .ok()
        .and_then(|known| known.get(commit).cloned())
    {
        return Some(known);
    }
    let info = context.sources.describe(service, commit).await.ok()?;
    if let Ok(mut known) = context.commits.lock() {
        known.insert(commit.to_owned(), info.clone());
    }
    Some(info)
}

/// Answers the control plane's log requests (users reading this node's logs),
/// and starts and stops the follows of users' log streams.
async fn log_loop(context: Arc<Context>, control_plane: ControlPlane) {
    let mut failures = 0u32;
    let mut follows: std::collections::HashMap<uuid::Uuid, tokio::task::JoinHandle<()>> =
        std::collections::HashMap::new();
    loop {
        if failures == 0 {
            control_plane.logs_waiting().await;
        }
        follows.retain(|_, task| !task.is_finished());
        for follow in control_plane.take_follows() {
            match follow {
                Follow::Start {
                    id,
                    request,
                    connection,
                } => {
                    if follows.len() >= nanoscale_core::channel::MAX_FOLLOWS {
                        tracing::warn!(%id, "too many log follows at once; this one is left out");
                        continue;
                    }
                    // The cursors are placed before any request below is
                    // answered: an answer asked for with this follow then holds
                    // every line written before the follow's first.
                    let apps = context.config.apps_dir.clone();
                    let start = tokio::task::spawn_blocking(move || {
                        use crate::runtime::logs::{sources, tail};
                        sources(&apps, &request)
                            .into_iter()
                            .map(|(source, dir)| {
                                let cursor = tail(&dir, 0).1;
                                (source, dir, cursor)
                            })
                            .collect::<Vec<_>>()
                    });
                    let Ok(followed) = start.await else { continue };
                    let task =
                        tokio::spawn(follow_log(control_plane.clone(), id, followed, connection));
                    if let Some(earlier) = follows.insert(id, task) {
                        earlier.abort();
                    }
                }
                Follow::Stop { id } => {
                    if let Some(task) = follows.remove(&id) {
                        task.abort();
                    }
                }
            }
        }
        let requests = match control_plane.log_requests().await {
            Ok(requests) => {
                failures = 0;
                requests
            }
            Err(error) => {
                tracing::debug!(%error, "collecting log requests");
                backoff(&mut failures).await;
                continue;
            }
        };
        for request in requests {
            let apps = context.config.apps_dir.clone();
            let id = request.id;
            let answer =
                tokio::task::spawn_blocking(move || crate::runtime::logs::answer(&apps, &request))
                    .await
                    .unwrap_or_else(|_| nanoscale_core::agent::LogAnswer {
                        entries: Vec::new(),
                    });
            if let Err(error) = control_plane.answer_log_request(id, answer).await {
                tracing::warn!(%error, "answering a log request");
            }
        }
    }
}

/// How often a followed source is read for new lines (as the control plane
/// reads its own host's).
const FOLLOW_TICK: Duration = Duration::from_millis(250);

/// Sends the lines written to the `followed` sources (from their cursors on) up
/// the channel, every [`FOLLOW_TICK`], while the channel connection the follow
/// was asked on lasts (the control plane forgets its follows when a connection
/// ends, and asks again on the next one).
async fn follow_log(
    control_plane: ControlPlane,
    id: uuid::Uuid,
    mut followed: Vec<(String, std::path::PathBuf, crate::runtime::logs::LogCursor)>,
    connection: u64,
) {
    use crate::runtime::logs::{batches, entry, read_from};
    loop {
        tokio::time::sleep(FOLLOW_TICK).await;
        if !control_plane.follow_holds(connection) {
            return;
        }
        let read = tokio::task::spawn_blocking(move || {
            let mut fresh = Vec::new();
            for (source, dir, cursor) in &mut followed {
                fresh.extend(
                    read_from(dir, cursor)
                        .into_iter()
                        .map(|line| entry(source, line)),
                );
            }
            fresh.sort_by(|a, b| a.at.cmp(&b.at));
            (followed, fresh)
        });
        let Ok((back, fresh)) = read.await else {
            return;
        };
        followed = back;
        for batch in batches(fresh) {
            if !control_plane.send_log_lines(id, batch).await {
                return;
            }
        }
    }
}

/// Keeps a cluster member's certificate fresh (checked every ten minutes).
async fn renew_loop(control_plane: ControlPlane) {
    loop {
        if let Err(error) = control_plane.renew_if_due(NODE_CERT_VALIDITY).await {
            tracing::warn!(%error, "could not renew the node certificate; retrying");
            tokio::time::sleep(Duration::from_secs(30)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// Exponential backoff with jitter, capped near 3 s: a control plane that comes
/// back is found again within about 3.5 s (the jitter spreads a fleet's retries).
/// Where systemd runs the instances: their output, from the journal into their
/// log directories (`runtime/journal.rs`), twice a second.
async fn journal_loop(context: Arc<Context>) {
    let config = &context.config;
    let mut follower = crate::runtime::journal::JournalFollower::new(
        &config.state_dir,
        &config.apps_dir,
        config.log_max_bytes,
        config.log_keep,
    );
    let mut failures = 0u32;
    loop {
        let instances = match context.store.instances().await {
            Ok(instances) => instances
                .into_iter()
                .map(|instance| (instance.id, instance.dir))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "reading instances for their journal");
                backoff(&mut failures).await;
                continue;
            }
        };
        match follower.poll(instances).await {
            Ok(_) => failures = 0,
            Err(error) => {
                tracing::warn!(%error, "copying instance logs from the journal");
                backoff(&mut failures).await;
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn backoff(failures: &mut u32) {
    *failures = failures.saturating_add(1);
    let base = 250u64 << (*failures).min(7);
    let capped = base.min(3_000);
    let jitter = rand::rng().random_range(0..=capped / 4);
    tokio::time::sleep(Duration::from_millis(capped - capped / 8 + jitter)).await;
}
