//! Nodes, the audit log, settings, probes and metrics.
use nanoscale_core::api::{
    AuditEntry, AuditFilter, HealthStatus, Node, Settings, UpdateNode, UpdateSettings,
};
use reqwest::Method;
use uuid::Uuid;

use crate::{Client, ClientError, Result};

impl Client {
    /// Every node.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        self.get("/api/v1/nodes").await
    }

    /// One node.
    pub async fn get_node(&self, id: Uuid) -> Result<Node> {
        self.get(&format!("/api/v1/nodes/{id}")).await
    }

    /// A one-time join token and the command that joins a server with it (admins
    /// only).
    pub async fn create_join_token(
        &self,
        request: &nanoscale_core::cluster::CreateJoinToken,
    ) -> Result<nanoscale_core::cluster::JoinTokenCreated> {
        self.send_json(Method::POST, "/api/v1/nodes/join-tokens", request)
            .await
    }

    /// Removes a node from the cluster and revokes its certificate (admins only).
    /// Changes a node's security mode and/or SSH networks (admins only).
    pub async fn update_node(&self, id: Uuid, update: &UpdateNode) -> Result<Node> {
        self.send_json(Method::PATCH, &format!("/api/v1/nodes/{id}"), update)
            .await
    }

    pub async fn remove_node(&self, id: Uuid) -> Result<()> {
        self.send_no_content::<()>(Method::DELETE, &format!("/api/v1/nodes/{id}"), None)
            .await
    }

    /// Every mutation, newest first (admins only).
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.get_query("/api/v1/audit", filter).await
    }

    /// White-labelling settings (public).
    pub async fn settings(&self) -> Result<Settings> {
        self.get("/api/v1/settings").await
    }

    /// Changes settings (admins only); an empty string restores a default.
    pub async fn update_settings(&self, request: &UpdateSettings) -> Result<Settings> {
        self.send_json(Method::PATCH, "/api/v1/settings", request)
            .await
    }

    /// `/health/live`: the process answers.
    pub async fn health_live(&self) -> Result<HealthStatus> {
        self.probe("/health/live").await
    }

    /// `/health/ready`: the store answers and migrations are done. A 503 is not an
    /// error here: the answer says which check failed (`status` is `unavailable`).
    pub async fn health_ready(&self) -> Result<HealthStatus> {
        self.probe("/health/ready").await
    }

    /// `/health/startup`: start-up has finished.
    pub async fn health_startup(&self) -> Result<HealthStatus> {
        self.probe("/health/startup").await
    }

    /// `/metrics` in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        let response = self.execute(self.builder(Method::GET, "/metrics")?).await?;
        let url = response.url().to_string();
        response
            .text()
            .await
            .map_err(|source| ClientError::http(&url, source))
    }

    /// The OpenAPI 3.1 document of the server.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.get("/api/v1/openapi.json").await
    }

    async fn probe(&self, path: &str) -> Result<HealthStatus> {
        let (status, body) = self.request(Method::GET, path, None).await?;
        if status != 200 && status != 503 {
            let bytes = match body {
                serde_json::Value::String(text) => text.into_bytes(),
                other => serde_json::to_vec(&other).unwrap_or_default(),
            };
            return Err(ClientError::from_body(status, &bytes));
        }
        serde_json::from_value(body).map_err(|error| ClientError::Decode {
            what: format!("GET {path}"),
            reason: error.to_string(),
        })
    }
}
