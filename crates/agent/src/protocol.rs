//! The agent's side of the agent protocol (see `nanoscale_core::agent`): the
//! node's desired-state document, reports and log answers, authenticated with the
//! node credential. Over the channel (`crate::channel`) while it is up, held by
//! [`ControlPlane::hold_channel`]; over the long-poll and its sibling routes
//! while it is down.
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nanoscale_core::agent::{AgentReport, LogAnswer, LogRequest, ReportAck};
use nanoscale_core::api::LogEntry;
use nanoscale_core::channel::ToControlPlane;
use nanoscale_core::desired::DesiredDocument;

use crate::channel::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The control plane no longer accepts this node's credential (rotated by a new
    /// `nanoscale up`, or the node was removed): this agent must stop.
    #[error(
        "the control plane refused this node's credential (401): a newer agent took over, or the node was removed from the cluster"
    )]
    Unauthorized,
    #[error("control plane answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("control plane unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("document rejected: {0}")]
    BadDocument(String),
    #[error("node identity: {0}")]
    Identity(String),
    #[error("channel: {0}")]
    Channel(String),
}

fn cluster_client(dir: &std::path::Path) -> Result<reqwest::Client, ProtocolError> {
    let tls = crate::cluster::client_config(dir).map_err(ProtocolError::Identity)?;
    Ok(crate::cluster::client(tls)?)
}

/// How the agent proves which node it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A node credential (`nsn_…`) as a bearer token: the control plane's own
    /// host, over loopback.
    Bearer(String),
    /// A cluster member's client certificate, in this identity directory (see
    /// `crate::cluster`); the control plane is the cluster address it names.
    Certificate(PathBuf),
}

#[derive(Clone)]
pub struct ControlPlane {
    http: Arc<RwLock<reqwest::Client>>,
    base: String,
    credential: Credential,
    logs_waiting: Arc<tokio::sync::Notify>,
    channel: Arc<Channel>,
}

/// How long one long-poll waits on the control plane before asking again.
pub const POLL_WAIT_SECS: u64 = 25;

impl ControlPlane {
    /// `base` is used for a bearer credential; a certificate names its own.
    pub fn new(base: &str, credential: Credential) -> Result<ControlPlane, ProtocolError> {
        let (http, base) = match &credential {
            Credential::Bearer(_) => (
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(POLL_WAIT_SECS + 15))
                    .pool_max_idle_per_host(2)
                    .build()?,
                base.trim_end_matches('/').to_owned(),
            ),
            Credential::Certificate(dir) => {
                let membership =
                    crate::cluster::Membership::load(dir).map_err(ProtocolError::Identity)?;
                (cluster_client(dir)?, membership.base_url())
            }
        };
        let logs_waiting = Arc::new(tokio::sync::Notify::new());
        Ok(ControlPlane {
            http: Arc::new(RwLock::new(http)),
            base,
            credential,
            channel: Arc::new(Channel::new(Arc::clone(&logs_waiting))),
            logs_waiting,
        })
    }

    fn http(&self) -> reqwest::Client {
        match self.http.read() {
            Ok(http) => http.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Credential::Bearer(token) => request.bearer_auth(token),
            Credential::Certificate(_) => request,
        }
    }

    /// Renews a cluster member's certificate when it is due, and switches to it.
    pub async fn renew_if_due(&self, validity: Duration) -> Result<(), String> {
        let Credential::Certificate(dir) = &self.credential else {
            return Ok(());
        };
        if crate::cluster::renew_if_due(dir, &self.http(), validity).await? {
            let fresh = cluster_client(dir).map_err(|e| e.to_string())?;
            if let Ok(mut http) = self.http.write() {
                *http = fresh;
            }
            // The control plane forgets the old certificate once the new one is
            // used: the channel moves to the new one before anything else does.
            self.channel.reconnect();
        }
        Ok(())
    }

    /// Holds the channel; returns only when the control plane refused this
    /// node's credential. `connected` is notified each time it comes up (the
    /// agent then reports at once).
    pub async fn hold_channel(&self, connected: &tokio::sync::Notify) -> ProtocolError {
        self.channel
            .hold(&self.base, &self.credential, connected)
            .await;
        ProtocolError::Unauthorized
    }

    /// For an agent that never holds the channel: the long-poll from the start.
    pub fn without_channel(&self) {
        self.channel.never();
    }

    /// Whether the channel is up (else the long-poll carries everything).
    pub fn channel_up(&self) -> bool {
        self.channel.is_up()
    }

    /// The node's document once its version passes `after` (or at once without
    /// `after`), checked against its own hash. From the channel while it is up
    /// (waiting at most `POLL_WAIT_SECS`, as the long-poll does); from the
    /// long-poll while it carries the work (cut short when the channel comes
    /// up); otherwise (the channel down for a moment) once either is back.
    pub async fn desired_state(
        &self,
        after: Option<i64>,
    ) -> Result<DesiredDocument, ProtocolError> {
        // Once per agent, at most 11 s: the first attempt's outcome.
        self.channel.first_attempt().await;
        loop {
            if self.channel.is_usable() {
                let wait = Duration::from_secs(POLL_WAIT_SECS);
                match self.channel.document(after, wait).await {
                    Some(document) => return Ok((*document).clone()),
                    None if self.channel.is_usable() => continue,
                    None => {}
                }
            }
            if !self.channel.is_polling() {
                // Down for a moment (a restart, a cut link): the channel is
                // what comes back, so no long-poll connection is opened.
                self.channel.until_up_or_polling().await;
                continue;
            }
            tokio::select! {
                answer = self.poll(after) => return answer,
                () = self.channel.until_usable() => {}
            }
        }
    }

    async fn poll(&self, after: Option<i64>) -> Result<DesiredDocument, ProtocolError> {
        let mut request = self.authorize(
            self.http()
                .get(format!("{}/api/v1/agent/desired-state", self.base)),
        );
        if let Some(version) = after {
            request = request.query(&[
                ("after_version", version.to_string()),
                ("wait_secs", POLL_WAIT_SECS.to_string()),
            ]);
        }
        let response = checked(request.send().await?).await?;
        if response.headers().contains_key("x-nanoscale-log-requests") {
            self.logs_waiting.notify_one();
        }
        let document: DesiredDocument = response.json().await?;
        document.check_hash().map_err(ProtocolError::BadDocument)?;
        Ok(document)
    }

    /// Resolves when the control plane said (on a desired-state answer) that log
    /// requests wait for this node.
    pub async fn logs_waiting(&self) {
        self.logs_waiting.notified().await;
    }

    /// The log requests the control plane holds for this node (without waiting:
    /// the desired-state long-poll says when there are some).
    pub async fn log_requests(&self) -> Result<Vec<LogRequest>, ProtocolError> {
        let brought = self.channel.take_log_requests();
        if !brought.is_empty() || !self.channel.is_polling() {
            return Ok(brought);
        }
        let request = self.authorize(
            self.http()
                .get(format!("{}/api/v1/agent/log-requests", self.base)),
        );
        Ok(checked(request.send().await?).await?.json().await?)
    }

    /// Followed log sources the channel brought word of, taken.
    pub fn take_follows(&self) -> Vec<crate::channel::Follow> {
        self.channel.take_follows()
    }

    /// Whether the channel connection a follow was asked on is still the one up.
    pub fn follow_holds(&self, connection: u64) -> bool {
        self.channel.is_current(connection)
    }

    /// Sends new lines of the follow `id`; false when the channel is down.
    pub async fn send_log_lines(&self, id: uuid::Uuid, entries: Vec<LogEntry>) -> bool {
        self.channel
            .send(&ToControlPlane::LogLines { id, entries })
            .await
    }

    /// Answers one log request (a late answer gets 404, which is not an error).
    pub async fn answer_log_request(
        &self,
        id: uuid::Uuid,
        answer: LogAnswer,
    ) -> Result<(), ProtocolError> {
        let message = ToControlPlane::LogAnswer { id, answer };
        if self.channel.send(&message).await {
            return Ok(());
        }
        // The answer goes over HTTP instead (`message` holds nothing else).
        let ToControlPlane::LogAnswer { answer, .. } = &message else {
            return Ok(());
        };
        if !self.channel.is_polling() {
            return Err(ProtocolError::Channel(
                "down; the request is lost with it".into(),
            ));
        }
        let response = self
            .authorize(
                self.http()
                    .post(format!("{}/api/v1/agent/log-requests/{id}", self.base)),
            )
            .json(answer)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        checked(response).await?;
        Ok(())
    }

    pub async fn report(&self, report: &AgentReport) -> Result<ReportAck, ProtocolError> {
        // An agent's first report waits for the channel's first attempt.
        self.channel.first_attempt().await;
        if let Some(answer) = self.channel.report(report).await {
            return answer;
        }
        if !self.channel.is_polling() {
            // Sent over the channel once it is back (the agent reports at once
            // when it comes up); events stay queued meanwhile.
            return Err(ProtocolError::Channel("down; reconnecting".into()));
        }
        let request = self
            .authorize(
                self.http()
                    .post(format!("{}/api/v1/agent/report", self.base)),
            )
            .json(report);
        Ok(checked(request.send().await?).await?.json().await?)
    }
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ProtocolError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.as_u16() == 401 {
        return Err(ProtocolError::Unauthorized);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ProtocolError::Status {
        status: status.as_u16(),
        body: body.chars().take(500).collect(),
    })
}
