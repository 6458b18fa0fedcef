//! The agent's side of the agent protocol (see `nanoscale_core::agent`): long-poll
//! the node's desired-state document and post reports, authenticated with the node
//! credential.
use std::time::Duration;

use nanoscale_core::agent::{AgentReport, ReportAck};
use nanoscale_core::desired::DesiredDocument;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The control plane no longer accepts this node's credential (rotated by a new
    /// `nanoscale up`, or the node was removed): this agent must stop.
    #[error(
        "the control plane refused the node credential (401); a newer agent or a removed node"
    )]
    Unauthorized,
    #[error("control plane answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("control plane unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("document rejected: {0}")]
    BadDocument(String),
}

#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    credential: String,
}

/// How long one long-poll waits on the control plane before asking again.
pub const POLL_WAIT_SECS: u64 = 25;

impl ControlPlane {
    pub fn new(base: &str, credential: String) -> Result<ControlPlane, ProtocolError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(POLL_WAIT_SECS + 15))
            .pool_max_idle_per_host(2)
            .build()?;
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential,
        })
    }

    /// The node's document once its version passes `after` (or at once without
    /// `after`), checked against its own hash.
    pub async fn desired_state(
        &self,
        after: Option<i64>,
    ) -> Result<DesiredDocument, ProtocolError> {
        let mut request = self
            .http
            .get(format!("{}/api/v1/agent/desired-state", self.base))
            .bearer_auth(&self.credential);
        if let Some(version) = after {
            request = request.query(&[
                ("after_version", version.to_string()),
                ("wait_secs", POLL_WAIT_SECS.to_string()),
            ]);
        }
        let response = checked(request.send().await?).await?;
        let document: DesiredDocument = response.json().await?;
        let actual = document.state.sha256();
        if actual != document.sha256 {
            return Err(ProtocolError::BadDocument(format!(
                "hash {actual} does not match the announced {}",
                document.sha256
            )));
        }
        Ok(document)
    }

    pub async fn report(&self, report: &AgentReport) -> Result<ReportAck, ProtocolError> {
        let request = self
            .http
            .post(format!("{}/api/v1/agent/report", self.base))
            .bearer_auth(&self.credential)
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
