//! Asks nodes for their log lines on a user's behalf. Workers are dark (nothing
//! dials them), so a request waits here until the node's agent collects it: its
//! channel sends it down (`crate::channel`), or, on the fallback, the agent
//! collects it with its long-poll (`GET /api/v1/agent/log-requests`) and posts the
//! answer back on the same connection (the desired-state long-poll returns early
//! with [`LOG_REQUESTS_HEADER`] when one waits). Requests live in memory only: a
//! request whose answer does not come within its timeout is dropped, and the user
//! gets what the other nodes said.
//!
//! A live log stream also *follows* a node that holds a channel: the agent then
//! sends its sources' new lines as they are written, until the stream stops
//! following or the channel closes (then the stream asks again, and follows again
//! once a channel is back).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoscale_core::agent::LogRequest;
use nanoscale_core::api::LogEntry;
use tokio::sync::{mpsc, oneshot, Notify};
use uuid::Uuid;

/// Set on a desired-state answer when log requests wait for the node: the agent
/// then collects them (`GET /api/v1/agent/log-requests`).
pub const LOG_REQUESTS_HEADER: &str = "x-nanoscale-log-requests";

/// Requests a node has not collected yet, beyond which new ones are refused.
const MAX_PENDING_PER_NODE: usize = 64;
/// Batches of followed lines a stream has not taken yet, beyond which new ones
/// are dropped (a stream slower than its sources; it reads 4 times a second, and
/// the agent sends at most one batch of up to 1,000 lines each 250 ms unless it
/// writes more): at most 8 frames' worth per follow.
const FOLLOW_BACKLOG: usize = 8;

#[derive(Default)]
pub struct LogBroker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<Uuid, Queue>,
    /// Request id → (node asked, where its answer goes).
    waiting: HashMap<Uuid, (Uuid, oneshot::Sender<Vec<LogEntry>>)>,
    /// Follow id → (node followed, where its lines go).
    follows: HashMap<Uuid, (Uuid, mpsc::Sender<Vec<LogEntry>>)>,
    /// The open channel of each node: its generation, and what tells it that a
    /// newer channel of the node replaced it.
    channels: HashMap<Uuid, (u64, Arc<Notify>)>,
    /// The generation the next channel gets.
    generation: u64,
}

#[derive(Default)]
struct Queue {
    pending: Vec<LogRequest>,
    /// Follows to start and stop, for the node's channel to send.
    commands: Vec<FollowCommand>,
    ready: Arc<Notify>,
}

/// A node's channel as the broker knows it.
pub struct ChannelLease {
    node: Uuid,
    generation: u64,
    /// Notified when a newer channel of the node replaced this one.
    pub replaced: Arc<Notify>,
}

/// What a node's channel tells its agent about followed sources.
#[derive(Debug, Clone)]
pub enum FollowCommand {
    Start(Uuid, LogRequest),
    Stop(Uuid),
}

impl LogBroker {
    /// Asks `node` and waits up to `timeout`; `None` when it did not answer.
    pub async fn ask(
        &self,
        node: Uuid,
        request: LogRequest,
        timeout: Duration,
    ) -> Option<Vec<LogEntry>> {
        let id = request.id;
        let (sender, receiver) = oneshot::channel();
        {
            let mut inner = self.inner.lock().ok()?;
            let queue = inner.queues.entry(node).or_default();
            if queue.pending.len() >= MAX_PENDING_PER_NODE {
                return None;
            }
            queue.pending.push(request);
            queue.ready.notify_one();
            inner.waiting.insert(id, (node, sender));
        }
        let answer = tokio::time::timeout(timeout, receiver).await;
        if let Ok(mut inner) = self.inner.lock() {
            inner.waiting.remove(&id);
            if let Some(queue) = inner.queues.get_mut(&node) {
                queue.pending.retain(|pending| pending.id != id);
            }
        }
        answer.ok()?.ok()
    }

    /// The requests waiting for `node`, waiting up to `wait` for one to come.
    pub async fn collect(&self, node: Uuid, wait: Duration) -> Vec<LogRequest> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ready = {
                let Ok(mut inner) = self.inner.lock() else {
                    return Vec::new();
                };
                let queue = inner.queues.entry(node).or_default();
                if !queue.pending.is_empty() {
                    return std::mem::take(&mut queue.pending);
                }
                Arc::clone(&queue.ready)
            };
            tokio::select! {
                _ = ready.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return Vec::new(),
            }
        }
    }

    /// What is notified when a request for `node` comes (a request made while
    /// nobody waited leaves a permit): the desired-state long-poll waits on it, so
    /// an agent holds one waiting request, not two.
    pub fn ready(&self, node: Uuid) -> Arc<Notify> {
        match self.inner.lock() {
            Ok(mut inner) => Arc::clone(&inner.queues.entry(node).or_default().ready),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Delivers `node`'s answer; false when no such request waits for that node
    /// (answered late, or asked of another node).
    pub fn answer(&self, node: Uuid, request: Uuid, entries: Vec<LogEntry>) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        match inner.waiting.get(&request) {
            Some((asked, _)) if *asked == node => {}
            _ => return false,
        }
        inner
            .waiting
            .remove(&request)
            .is_some_and(|(_, sender)| sender.send(entries).is_ok())
    }

    /// A channel of `node` opened: streams may follow it. A node holds one
    /// channel: an older one (a half-open connection its agent gave up) is told
    /// to close by the returned [`ChannelLease::replaced`] of its own lease, and
    /// the follows asked on it end (their streams follow again on this one).
    pub fn channel_opened(&self, node: Uuid) -> ChannelLease {
        let replaced = Arc::new(Notify::new());
        let Ok(mut inner) = self.inner.lock() else {
            return ChannelLease {
                node,
                generation: 0,
                replaced,
            };
        };
        inner.generation += 1;
        let generation = inner.generation;
        if let Some((_, older)) = inner
            .channels
            .insert(node, (generation, Arc::clone(&replaced)))
        {
            older.notify_one();
        }
        forget_follows(&mut inner, node);
        ChannelLease {
            node,
            generation,
            replaced,
        }
    }

    /// The channel of `lease` closed: if it was still the node's channel, its
    /// agent forgot the follows asked on it, so they end here too (their streams
    /// see the end and ask again).
    pub fn channel_closed(&self, lease: &ChannelLease) {
        if let Ok(mut inner) = self.inner.lock() {
            let current = inner
                .channels
                .get(&lease.node)
                .is_some_and(|(generation, _)| *generation == lease.generation);
            if current {
                inner.channels.remove(&lease.node);
                forget_follows(&mut inner, lease.node);
            }
        }
    }

    /// Follows `request` on `node`: its new lines arrive on the receiver, in
    /// batches, until it is dropped by [`LogBroker::unfollow`] or the node's
    /// channel closes. `None` when the node holds no channel (ask it instead).
    pub fn follow(
        &self,
        node: Uuid,
        request: LogRequest,
    ) -> Option<(Uuid, mpsc::Receiver<Vec<LogEntry>>)> {
        let mut inner = self.inner.lock().ok()?;
        if !inner.channels.contains_key(&node) {
            return None;
        }
        let id = Uuid::now_v7();
        let (sender, receiver) = mpsc::channel(FOLLOW_BACKLOG);
        inner.follows.insert(id, (node, sender));
        count_follows(&inner);
        let queue = inner.queues.entry(node).or_default();
        queue.commands.push(FollowCommand::Start(id, request));
        queue.ready.notify_one();
        Some((id, receiver))
    }

    /// Stops the follow `id` (its agent is told, if its channel is still open).
    pub fn unfollow(&self, id: Uuid) {
        if let Ok(mut inner) = self.inner.lock() {
            let removed = inner.follows.remove(&id);
            count_follows(&inner);
            if let Some((node, _)) = removed {
                if let Some(queue) = inner.queues.get_mut(&node) {
                    queue.commands.push(FollowCommand::Stop(id));
                    queue.ready.notify_one();
                }
            }
        }
    }

    /// The follows to start and stop that wait for `node`'s channel, taken.
    pub fn take_commands(&self, node: Uuid) -> Vec<FollowCommand> {
        self.inner
            .lock()
            .ok()
            .and_then(|mut inner| {
                inner
                    .queues
                    .get_mut(&node)
                    .map(|queue| std::mem::take(&mut queue.commands))
            })
            .unwrap_or_default()
    }

    /// Delivers new lines of the follow `id` from `node`; false when no such
    /// follow of that node exists (stopped, or another node's).
    pub fn lines(&self, node: Uuid, id: Uuid, entries: Vec<LogEntry>) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        match inner.follows.get(&id) {
            Some((followed, sender)) if *followed == node => {
                if sender.try_send(entries).is_err() {
                    tracing::debug!(%id, "a log stream fell behind its sources; lines dropped");
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets a removed node's queue.
    pub fn forget(&self, node: Uuid) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.queues.remove(&node);
        }
    }
}

/// Ends `node`'s follows and drops the follow commands waiting for it.
fn forget_follows(inner: &mut Inner, node: Uuid) {
    inner.follows.retain(|_, (followed, _)| *followed != node);
    count_follows(inner);
    if let Some(queue) = inner.queues.get_mut(&node) {
        queue.commands.clear();
    }
}

fn count_follows(inner: &Inner) {
    metrics::gauge!(crate::metrics::LOG_FOLLOWS).set(inner.follows.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> LogRequest {
        LogRequest {
            id: Uuid::now_v7(),
            service: "web".into(),
            instances: vec!["web-r1-0-abcd".into()],
            build: None,
            tail: 10,
        }
    }

    #[tokio::test]
    async fn a_node_collects_and_answers_only_its_own_requests() {
        let broker = Arc::new(LogBroker::default());
        let (node, other) = (Uuid::now_v7(), Uuid::now_v7());
        let asked = request();
        let id = asked.id;
        let asking = tokio::spawn({
            let broker = Arc::clone(&broker);
            async move { broker.ask(node, asked, Duration::from_secs(5)).await }
        });
        let collected = broker.collect(node, Duration::from_secs(5)).await;
        assert_eq!(collected.len(), 1);
        assert!(broker
            .collect(other, Duration::from_millis(10))
            .await
            .is_empty());
        assert!(
            !broker.answer(other, id, Vec::new()),
            "another node cannot answer"
        );
        let line = LogEntry {
            at: "2026-12-01T00:00:00.000Z".into(),
            stream: "stdout".into(),
            source: "web-r1-0-abcd".into(),
            text: "hello".into(),
        };
        assert!(broker.answer(node, id, vec![line]));
        assert_eq!(asking.await.unwrap().unwrap().len(), 1);
        assert!(!broker.answer(node, id, Vec::new()), "answered once");
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_is_withdrawn() {
        let broker = LogBroker::default();
        let node = Uuid::now_v7();
        assert!(broker
            .ask(node, request(), Duration::from_millis(20))
            .await
            .is_none());
        assert!(broker
            .collect(node, Duration::from_millis(10))
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn a_follow_needs_a_channel_takes_only_its_nodes_lines_and_ends_with_it() {
        let broker = LogBroker::default();
        let (node, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(broker.follow(node, request()).is_none(), "no channel: ask");
        let lease = broker.channel_opened(node);
        let (id, mut lines) = broker.follow(node, request()).unwrap();
        let commands = broker.take_commands(node);
        assert!(
            matches!(&commands[..], [FollowCommand::Start(started, _)] if *started == id),
            "{commands:?}"
        );
        let line = LogEntry {
            at: "2026-12-08T00:00:00.000Z".into(),
            stream: "stdout".into(),
            source: "web-r1-0-abcd".into(),
            text: "followed".into(),
        };
        assert!(
            !broker.lines(other, id, vec![line.clone()]),
            "another node's"
        );
        assert!(broker.lines(node, id, vec![line]));
        assert_eq!(lines.recv().await.unwrap()[0].text, "followed");
        // The channel closes: the follow ends, and nothing is left to send.
        broker.channel_closed(&lease);
        assert!(lines.recv().await.is_none());
        assert!(broker.take_commands(node).is_empty());
        assert!(broker.follow(node, request()).is_none());
        // Stopped by the stream while the channel is open: the agent is told.
        let older = broker.channel_opened(node);
        let (_, mut on_older) = broker.follow(node, request()).unwrap();
        // A newer channel replaces the older one: told to close, its follows
        // end, and its close later leaves the newer one alone.
        let newer = broker.channel_opened(node);
        tokio::time::timeout(Duration::from_secs(1), older.replaced.notified())
            .await
            .expect("the older channel is told");
        assert!(on_older.recv().await.is_none());
        broker.channel_closed(&older);
        let (id, _lines) = broker
            .follow(node, request())
            .expect("on the newer channel");
        let _ = broker.take_commands(node);
        broker.unfollow(id);
        let commands = broker.take_commands(node);
        assert!(
            matches!(&commands[..], [FollowCommand::Stop(stopped)] if *stopped == id),
            "{commands:?}"
        );
        assert!(!broker.lines(node, id, Vec::new()), "stopped");
        broker.channel_closed(&newer);
        assert!(broker.follow(node, request()).is_none());
    }
}
