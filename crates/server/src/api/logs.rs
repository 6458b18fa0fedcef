//! Instance and build logs of a service: the newest lines (`GET …/logs`) and a live
//! stream of them (`GET …/logs/stream`). This host's own lines are read from its
//! data dir (the agent and the control plane share it under `nanoscale up`); other
//! nodes are asked through the log broker, over their agents' own connection, and
//! a node that does not answer within [`REMOTE_TIMEOUT`] is left out (logged).
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use nanoscale_agent::runtime::logs::{entry, read_from, read_local, stopped, tail, LogCursor};
use nanoscale_core::agent::LogRequest;
use nanoscale_core::api::{LogEntry, LogQuery, ReleaseStatus, Service};
use nanoscale_core::logs::Seen;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::error::{store_error, ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::state::AppState;
use nanoscale_core::slots::{Slot, Slots};

const DEFAULT_TAIL: u32 = 100;
/// How long a user waits for another node's lines.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TAIL: u32 = 10_000;

/// How often a stream looks for new lines in this host's files.
const FOLLOW_TICK: Duration = Duration::from_millis(250);
/// Every this many ticks a stream re-reads the service's instances (new releases,
/// new replicas) or its build's status, and asks other nodes for their newest lines.
const REFRESH_TICKS: u32 = 4;
/// How many newest lines another node is asked for while following.
const REMOTE_FOLLOW_TAIL: u32 = 1000;
/// Log streams open at once, over all users: each reads files four times a second.
static STREAMS: Slots = Slots::new(128);

/// Where a service's lines are: this host's log directories by source (an
/// instance id or `build-<n>`), and the instances to ask each other node about.
#[derive(Default)]
struct Plan {
    local: BTreeMap<String, PathBuf>,
    remote: BTreeMap<Uuid, Vec<String>>,
}

fn check_tail(tail: Option<u32>) -> ApiResult<u32> {
    let lines = tail.unwrap_or(DEFAULT_TAIL);
    if !(1..=MAX_TAIL).contains(&lines) {
        return Err(ApiError::BadRequest {
            message: format!("tail must be between 1 and {MAX_TAIL}"),
            field: Some("tail".into()),
        });
    }
    Ok(lines)
}

/// The service, if the principal may read its logs (project owners, grantees and
/// admins only: apps print secrets more often than they should) and the release
/// whose build is asked for exists.
async fn authorize(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    build: Option<i64>,
) -> ApiResult<Service> {
    let service = state
        .store
        .get_service(id)
        .await
        .map_err(store_error("service", "id"))?;
    principal.require_project(state, service.project_id).await?;
    if let Some(number) = build {
        build_status(state, id, number).await?;
    }
    Ok(service)
}

async fn build_status(state: &AppState, service: Uuid, number: i64) -> ApiResult<ReleaseStatus> {
    if number < 1 {
        return Err(ApiError::BadRequest {
            message: "build: release numbers start at 1".into(),
            field: Some("build".into()),
        });
    }
    let release = state
        .store
        .find_release_by_number(service, number)
        .await
        .map_err(store_error("release", "build"))?;
    Ok(release.status)
}

async fn plan(state: &AppState, service: &Service, build: Option<i64>) -> ApiResult<Plan> {
    // The service name is a validated DNS label and instance ids were checked when
    // the agent reported them, so these joins stay inside the apps directory.
    let apps = state.config.data_dir.join("apps").join(&service.spec.name);
    let instances = state.store.list_instances(service.id).await?;
    let local_node = &state.config.node_name;
    let mut plan = Plan::default();
    if build.is_none() {
        // This host's stopped instances whose logs are kept. An instance that has
        // just stopped may still be listed: its log is here now.
        plan.local.extend(stopped(&apps));
    }
    for instance in &instances {
        if &instance.node == local_node {
            if build.is_none() {
                let dir = apps.join("instances").join(&instance.id).join("log");
                plan.local.entry(instance.id.clone()).or_insert(dir);
            }
        } else {
            // Asked for a build, a node sends that build's output: every node that
            // runs the service built it.
            let asked = plan.remote.entry(instance.node_id).or_default();
            if build.is_none() {
                asked.push(instance.id.clone());
            }
        }
    }
    if let Some(number) = build {
        let dir = apps.join("builds").join(number.to_string()).join("log");
        plan.local.insert(format!("build-{number}"), dir);
    }
    Ok(plan)
}

/// Other nodes' lines, by node.
type Answers = Vec<(Uuid, Vec<LogEntry>)>;

/// The newest `tail` lines of each other node in `remote`, by node.
async fn ask_remote(
    state: AppState,
    service: String,
    remote: BTreeMap<Uuid, Vec<String>>,
    build: Option<i64>,
    tail: u32,
) -> Answers {
    let asked = remote.into_iter().map(|(node, instances)| {
        let request = LogRequest {
            id: Uuid::now_v7(),
            service: service.clone(),
            instances,
            build,
            tail,
        };
        let state = state.clone();
        async move {
            let answer = state.logs.ask(node, request, REMOTE_TIMEOUT).await;
            if answer.is_none() {
                tracing::warn!(node_id = %node, "a node did not send its log lines in time");
            }
            (node, answer.unwrap_or_default())
        }
    });
    futures::future::join_all(asked).await
}

/// Orders merged lines by time and keeps the newest `lines`. The timestamps share
/// one fixed-width format, so text order is time order.
fn newest(mut entries: Vec<LogEntry>, lines: usize) -> Vec<LogEntry> {
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    let skip = entries.len().saturating_sub(lines);
    entries.split_off(skip)
}

/// The newest lines, oldest first, merged across the service's instances (or one
/// release's build output with `build`), from every node that runs it. Project
/// owners, grantees and admins only.
#[utoipa::path(get, path = "/api/v1/services/{id}/logs", tag = "services",
    params(("id" = Uuid, Path, description = "service id"), LogQuery),
    responses((status = 200, body = Vec<LogEntry>)))]
pub async fn list_logs(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Vec<LogEntry>>> {
    let lines = check_tail(query.tail)?;
    let service = authorize(&state, &principal, id, query.build).await?;
    let plan = plan(&state, &service, query.build).await?;
    let remote = ask_remote(
        state.clone(),
        service.spec.name.clone(),
        plan.remote,
        query.build,
        lines,
    )
    .await;
    let sources: Vec<(String, PathBuf)> = plan.local.into_iter().collect();
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries = read_local(&sources, lines as usize);
        entries.extend(remote.into_iter().flat_map(|(_, entries)| entries));
        newest(entries, lines as usize)
    })
    .await
    .map_err(|error| ApiError::Internal(format!("reading logs: {error}")))?;
    Ok(Json(entries))
}

/// The same lines live, as Server-Sent Events: first `event: ready`, then the
/// newest `tail` lines and every line written after them, each as `event: log`
/// with one LogEntry as JSON. New instances (a deploy, a new replica) join the
/// stream as they start. With `build` the stream ends with the build: after its
/// last line comes `event: end`, and the server closes it; `event: end` also comes
/// when the service is removed. This host's lines arrive within a quarter second,
/// other nodes' within about a second (they are asked for their newest lines, so
/// a burst of more than 1000 lines in a second on another node shows its newest
/// 1000). At most 128 streams are open at once (503 beyond).
#[utoipa::path(get, path = "/api/v1/services/{id}/logs/stream", tag = "services",
    params(("id" = Uuid, Path, description = "service id"), LogQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "a stream of log lines")))]
pub async fn stream_logs(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let lines = check_tail(query.tail)?;
    let service = authorize(&state, &principal, id, query.build).await?;
    let slot = STREAMS.take().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{} log streams are open, the most this server follows at once; close one \
             or read the newest lines with GET /api/v1/services/{id}/logs",
            STREAMS.max()
        ))
    })?;
    let (sender, receiver) = mpsc::channel(256);
    let follower = Follower {
        state,
        service,
        build: query.build,
        out: sender,
        local: HashMap::new(),
        remote: HashMap::new(),
        follows: HashMap::new(),
        _slot: slot,
    };
    tokio::spawn(follower.run(lines));
    let ready = stream::once(async { SseEvent::default().event("ready").data("{}") });
    let events = ready.chain(ReceiverStream::new(receiver)).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A log directory of this host being followed.
struct LocalSource {
    dir: PathBuf,
    cursor: LogCursor,
}

/// The task behind one log stream. It ends when the client goes away (the
/// channel closes), when the build it follows is over, or when the service is gone.
struct Follower {
    state: AppState,
    service: Service,
    /// The release number whose build is followed.
    build: Option<i64>,
    out: mpsc::Sender<SseEvent>,
    local: HashMap<String, LocalSource>,
    /// Per other node: what was sent of its lines (it is asked for its newest).
    remote: HashMap<Uuid, Seen>,
    /// Other nodes followed over their channels: their new lines come as they
    /// are written, and they are not asked every second.
    follows: HashMap<Uuid, Followed>,
    _slot: Slot,
}

/// A follow of another node's sources, stopped when dropped.
struct Followed {
    state: AppState,
    id: Uuid,
    instances: Vec<String>,
    lines: mpsc::Receiver<Vec<LogEntry>>,
    /// When the follow was asked for.
    since: tokio::time::Instant,
    /// Whether an answer asked for after `since` came: until then the followed
    /// lines wait, so that lines written just before the follow started (which
    /// only that answer has) are not taken as older than the newest shown.
    backfilled: bool,
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.state.logs.unfollow(self.id);
    }
}

/// Whether a follower goes on after a step.
enum Next {
    Go,
    Stop,
}

impl Follower {
    async fn run(mut self, lines: u32) {
        let number = self.build;
        let Ok(plan) = plan(&self.state, &self.service, number).await else {
            return;
        };
        let name = self.service.spec.name.clone();
        let remote = ask_remote(self.state.clone(), name, plan.remote.clone(), number, lines);
        let sources: Vec<(String, PathBuf)> = plan.local.clone().into_iter().collect();
        let local = tokio::task::spawn_blocking(move || {
            sources
                .into_iter()
                .map(|(source, dir)| {
                    let (lines, cursor) = tail(&dir, lines as usize);
                    let entries: Vec<LogEntry> =
                        lines.into_iter().map(|line| entry(&source, line)).collect();
                    (source, LocalSource { dir, cursor }, entries)
                })
                .collect::<Vec<_>>()
        });
        let (remote, local) = futures::join!(remote, local);
        let Ok(local) = local else { return };
        let mut first = Vec::new();
        for (source, place, entries) in local {
            self.local.insert(source, place);
            first.extend(entries);
        }
        first.extend(self.admit_remote(remote));
        if let Next::Stop = self.send(newest(first, lines as usize)).await {
            return;
        }
        let mut remote_plan = plan.remote;
        // The ask in flight, and when it was made.
        let mut asking: Option<(tokio::time::Instant, tokio::task::JoinHandle<Answers>)> = None;
        let mut tick: u32 = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_TICK) => {}
                () = self.out.closed() => return,
            }
            tick = tick.wrapping_add(1);
            let mut ending = false;
            if tick.is_multiple_of(REFRESH_TICKS) {
                match self.refresh(&mut remote_plan).await {
                    Ok(over) => ending = over,
                    Err(reason) => {
                        self.end(reason).await;
                        return;
                    }
                }
            }
            let mut fresh = self.read_local().await;
            fresh.extend(self.take_followed());
            if tick.is_multiple_of(REFRESH_TICKS) {
                let to_ask = self.follow_others(&remote_plan);
                if asking.is_none() && !to_ask.is_empty() {
                    let job = tokio::spawn(self.ask_others(&to_ask));
                    asking = Some((tokio::time::Instant::now(), job));
                }
            }
            if asking
                .as_ref()
                .is_some_and(|(_, job)| ending || job.is_finished())
            {
                if let Some((asked, job)) = asking.take() {
                    if let Ok(answers) = job.await {
                        self.backfilled(&answers, asked);
                        fresh.extend(self.admit_remote(answers));
                    }
                }
            }
            if ending && !remote_plan.is_empty() {
                // An answer asked for before the build was over may miss its end.
                let last = self.ask_others(&remote_plan).await;
                fresh.extend(self.admit_remote(last));
            }
            fresh.sort_by(|a, b| a.at.cmp(&b.at));
            if let Next::Stop = self.send(fresh).await {
                return;
            }
            if ending {
                self.end("the build is over").await;
                return;
            }
        }
    }

    /// Re-reads the instances (or the build's status). `Ok(true)` when the build
    /// followed is over; `Err` with the reason when the stream should end.
    async fn refresh(
        &mut self,
        remote_plan: &mut BTreeMap<Uuid, Vec<String>>,
    ) -> Result<bool, &'static str> {
        let number = self.build;
        match self.state.store.get_service(self.service.id).await {
            Ok(service) => self.service = service,
            Err(crate::store::StoreError::NotFound) => return Err("the service was removed"),
            // A passing database error: try again at the next refresh.
            Err(_) => return Ok(false),
        }
        let Ok(plan) = plan(&self.state, &self.service, number).await else {
            return Ok(false);
        };
        // New instances are read from their first line; one that stopped is read
        // on in its kept log (moved, same files: the cursor holds); gone ones
        // (a kept log deleted as too old) are dropped.
        self.local
            .retain(|source, _| plan.local.contains_key(source));
        for (source, dir) in plan.local {
            match self.local.entry(source) {
                Entry::Occupied(mut known) => known.get_mut().dir = dir,
                Entry::Vacant(new) => {
                    new.insert(LocalSource {
                        dir,
                        cursor: LogCursor::default(),
                    });
                }
            }
        }
        self.remote.retain(|node, _| plan.remote.contains_key(node));
        *remote_plan = plan.remote;
        let Some(number) = self.build else {
            return Ok(false);
        };
        match build_status(&self.state, self.service.id, number).await {
            Ok(status) => Ok(!matches!(
                status,
                ReleaseStatus::Queued | ReleaseStatus::Building
            )),
            Err(ApiError::NotFound(_)) => Err("the release was removed"),
            Err(_) => Ok(false),
        }
    }

    /// The lines written to this host's files since the last read.
    async fn read_local(&mut self) -> Vec<LogEntry> {
        let sources = std::mem::take(&mut self.local);
        let read = tokio::task::spawn_blocking(move || {
            let mut sources = sources;
            let mut fresh = Vec::new();
            for (source, place) in &mut sources {
                let lines = read_from(&place.dir, &mut place.cursor);
                fresh.extend(lines.into_iter().map(|line| entry(source, line)));
            }
            (sources, fresh)
        });
        match read.await {
            Ok((sources, fresh)) => {
                self.local = sources;
                fresh
            }
            // The reading task panicked: its cursors are lost, start over at the end.
            Err(_) => Vec::new(),
        }
    }

    /// The lines followed nodes sent since the last look.
    fn take_followed(&mut self) -> Vec<LogEntry> {
        let mut fresh = Vec::new();
        for (node, followed) in &mut self.follows {
            if !followed.backfilled {
                continue;
            }
            let seen = self.remote.entry(*node).or_default();
            while let Ok(batch) = followed.lines.try_recv() {
                fresh.extend(seen.fresh(&batch).into_iter().cloned());
            }
        }
        fresh
    }

    /// Marks the follows of the nodes in `answers`, asked at `asked`, whose
    /// lines before the follow are now in.
    fn backfilled(&mut self, answers: &Answers, asked: tokio::time::Instant) {
        for (node, _) in answers {
            if let Some(followed) = self.follows.get_mut(node) {
                followed.backfilled |= followed.since <= asked;
            }
        }
    }

    /// Follows the nodes of `remote_plan` that hold a channel and are not
    /// followed yet (a follow of a node gone, of other instances, or ended with
    /// its channel is dropped first). Returns the nodes to ask for their newest
    /// lines: those with no channel, and those followed whose lines from before
    /// the follow have not come yet.
    fn follow_others(
        &mut self,
        remote_plan: &BTreeMap<Uuid, Vec<String>>,
    ) -> BTreeMap<Uuid, Vec<String>> {
        self.follows.retain(|node, followed| {
            remote_plan
                .get(node)
                .is_some_and(|instances| *instances == followed.instances)
                && !followed.lines.is_closed()
        });
        let mut ask = BTreeMap::new();
        for (node, instances) in remote_plan {
            if let Some(followed) = self.follows.get(node) {
                if !followed.backfilled {
                    ask.insert(*node, instances.clone());
                }
                continue;
            }
            ask.insert(*node, instances.clone());
            let request = LogRequest {
                id: Uuid::now_v7(),
                service: self.service.spec.name.clone(),
                instances: instances.clone(),
                build: self.build,
                tail: 0,
            };
            if let Some((id, lines)) = self.state.logs.follow(*node, request) {
                let followed = Followed {
                    state: self.state.clone(),
                    id,
                    instances: instances.clone(),
                    lines,
                    since: tokio::time::Instant::now(),
                    backfilled: false,
                };
                self.follows.insert(*node, followed);
            }
        }
        ask
    }

    /// Asks the other nodes in `remote` for their newest lines.
    fn ask_others(
        &self,
        remote: &BTreeMap<Uuid, Vec<String>>,
    ) -> impl std::future::Future<Output = Answers> + Send + 'static {
        ask_remote(
            self.state.clone(),
            self.service.spec.name.clone(),
            remote.clone(),
            self.build,
            REMOTE_FOLLOW_TAIL,
        )
    }

    /// The lines of other nodes' answers not sent before.
    fn admit_remote(&mut self, answers: Answers) -> Vec<LogEntry> {
        let mut fresh = Vec::new();
        for (node, entries) in answers {
            let seen = self.remote.entry(node).or_default();
            fresh.extend(seen.fresh(&entries).into_iter().cloned());
        }
        fresh
    }

    async fn send(&self, entries: Vec<LogEntry>) -> Next {
        for entry in entries {
            let Ok(data) = serde_json::to_string(&entry) else {
                continue;
            };
            let event = SseEvent::default().event("log").data(data);
            if self.out.send(event).await.is_err() {
                return Next::Stop;
            }
        }
        Next::Go
    }

    async fn end(&self, reason: &str) {
        let data = serde_json::json!({ "reason": reason }).to_string();
        let _ = self
            .out
            .send(SseEvent::default().event("end").data(data))
            .await;
    }
}
