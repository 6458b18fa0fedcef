//! The cluster in the store: the CA, one-time join tokens, node certificates and
//! node liveness.
use nanoscale_core::api::Node;
use sqlx::Row;
use uuid::Uuid;

use super::events::{self, NewEvent};
use super::nodes::{node_from_row, COLUMNS};
use super::{now_millis, to_json, Change, Store, StoreError, StoreResult};

/// Why a join was refused. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the join token is not known to this cluster")]
    UnknownToken,
    #[error("the join token was already used; ask for a new one (nanoscale node add)")]
    UsedToken,
    #[error("the join token expired; ask for a new one (nanoscale node add)")]
    ExpiredToken,
    #[error("a node named {0} is already in the cluster; pick another --name or remove it first (nanoscale node rm)")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for JoinError {
    fn from(error: sqlx::Error) -> Self {
        JoinError::Store(error.into())
    }
}

/// A node about to be registered by a join.
pub struct JoiningNode {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub arch: String,
    pub cpus: i64,
    pub memory_bytes: i64,
    pub cert_sha256: String,
}

impl Store {
    /// The cluster CA as `(certificate PEM, key PEM)`, if one was made.
    pub async fn cluster_ca(&self) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1")
            .fetch_optional(&self.write)
            .await?;
        row.map(|row| Ok((row.try_get("cert_pem")?, row.try_get("key_pem")?)))
            .transpose()
    }

    /// Stores a new CA unless another replica stored one first; returns the one kept.
    pub async fn init_cluster_ca(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> StoreResult<(String, String)> {
        sqlx::query(
            "INSERT INTO cluster_ca (id, cert_pem, key_pem, created_at) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(cert_pem)
        .bind(key_pem)
        .bind(now_millis())
        .execute(&self.write)
        .await?;
        self.cluster_ca()
            .await?
            .ok_or_else(|| StoreError::Corrupt("cluster CA vanished after insert".into()))
    }

    pub async fn create_join_token(
        &self,
        id: Uuid,
        secret_hash: &str,
        expires_at_millis: i64,
        change: Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(secret_hash)
        .bind(change.audit.actor_id.map(|id| id.to_string()))
        .bind(now_millis())
        .bind(expires_at_millis)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await
    }

    /// Whether a join token (by the hash of its secret) exists, is unused and has
    /// not expired.
    pub async fn join_token_usable(&self, secret_hash: &str) -> StoreResult<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT id FROM join_tokens WHERE secret_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(secret_hash)
        .bind(now_millis())
        .fetch_optional(&self.read)
        .await?;
        Ok(found.is_some())
    }

    /// Consumes the token and registers the node in one transaction.
    pub async fn join_node(&self, secret_hash: &str, node: JoiningNode) -> Result<Node, JoinError> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT id, expires_at, used_at FROM join_tokens WHERE secret_hash = $1")
                .bind(secret_hash)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(JoinError::UnknownToken)?;
        let token_id: String = row.try_get("id")?;
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Err(JoinError::UsedToken);
        }
        if row.try_get::<i64, _>("expires_at")? <= now {
            return Err(JoinError::ExpiredToken);
        }
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM nodes WHERE name = $1")
            .bind(&node.name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(JoinError::NameTaken(node.name));
        }
        let id = node.id.to_string();
        sqlx::query(&format!(
            "INSERT INTO nodes ({COLUMNS}) VALUES ($1, $2, $3, $4, 'pending', 'A', $5, $6, 0, 0, $7, NULL, 'unknown', '[]', NULL, '[]', NULL)"
        ))
        .bind(&id)
        .bind(&node.name)
        .bind(&node.address)
        .bind(to_json(&node.labels))
        .bind(node.cpus)
        .bind(node.memory_bytes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE nodes SET cert_sha256 = $1, arch = $2 WHERE id = $3")
            .bind(&node.cert_sha256)
            .bind(&node.arch)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        // Only an unused token is consumed: two joins racing on one token cannot
        // both succeed.
        let consumed = sqlx::query(
            "UPDATE join_tokens SET used_at = $1, node_id = $2 WHERE id = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&id)
        .bind(&token_id)
        .execute(&mut *tx)
        .await?;
        if consumed.rows_affected() != 1 {
            return Err(JoinError::UsedToken);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let joined = node_from_row(&row)?;
        let event = events::insert(
            &mut tx,
            NewEvent {
                node_id: Some(joined.id),
                ..NewEvent::info(
                    "node.joined",
                    format!(
                        "node {} joined from {} ({}, {} CPUs)",
                        joined.name, joined.address, node.arch, node.cpus
                    ),
                )
            },
        )
        .await?;
        tx.commit().await?;
        self.changed();
        self.publish(vec![event]);
        Ok(joined)
    }

    /// The node a client certificate (by its SHA-256) belongs to. The first use of
    /// a renewed certificate retires the one it replaced.
    pub async fn node_by_certificate(&self, cert_sha256: &str) -> StoreResult<Option<Node>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, cert_sha256, previous_cert_sha256 FROM nodes \
             WHERE cert_sha256 = $1 OR previous_cert_sha256 = $1"
        ))
        .bind(cert_sha256)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let node = node_from_row(&row)?;
        let current: Option<String> = row.try_get("cert_sha256")?;
        let previous: Option<String> = row.try_get("previous_cert_sha256")?;
        if previous.is_some() && current.as_deref() == Some(cert_sha256) {
            sqlx::query(
                "UPDATE nodes SET previous_cert_sha256 = NULL WHERE id = $1 AND cert_sha256 = $2",
            )
            .bind(node.id.to_string())
            .bind(cert_sha256)
            .execute(&self.write)
            .await?;
        }
        Ok(Some(node))
    }

    /// Records a renewed certificate; the one used to ask stays valid until the
    /// new one is first used.
    pub async fn renew_node_certificate(
        &self,
        node_id: Uuid,
        used_sha256: &str,
        new_sha256: &str,
    ) -> StoreResult<()> {
        let result = sqlx::query(
            "UPDATE nodes SET previous_cert_sha256 = $1, cert_sha256 = $2 WHERE id = $3",
        )
        .bind(used_sha256)
        .bind(new_sha256)
        .bind(node_id.to_string())
        .execute(&self.write)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Removes a node: its certificates and credential stop working at once, its
    /// instance records go with it; its events stay in the timeline.
    pub async fn remove_node(&self, node_id: Uuid, mut change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM instances WHERE node_id = $1")
            .bind(node_id.to_string())
            .execute(&mut *tx)
            .await?;
        super::delete_row(&mut tx, "nodes", node_id).await?;
        for event in &mut change.events {
            event.node_id = Some(node_id);
        }
        self.commit(tx, change).await
    }

    /// Marks `ready` nodes not heard from since `cutoff_millis` unreachable, with an
    /// event each; returns their names.
    pub async fn mark_unreachable(&self, cutoff_millis: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE nodes SET status = 'unreachable' \
             WHERE status = 'ready' AND last_seen_at < $1 RETURNING id, name, last_seen_at",
        )
        .bind(cutoff_millis)
        .fetch_all(&mut *tx)
        .await?;
        let mut names = Vec::with_capacity(rows.len());
        let mut published = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get("name")?;
            let id = super::parse_id(&row.try_get::<String, _>("id")?)?;
            let last_seen: i64 = row.try_get("last_seen_at")?;
            let silent_secs = (now_millis() - last_seen) / 1000;
            published.push(
                events::insert(
                    &mut tx,
                    NewEvent {
                        node_id: Some(id),
                        severity: "warning",
                        ..NewEvent::info(
                            "node.unreachable",
                            format!("node {name} sent no heartbeat for {silent_secs} s"),
                        )
                    },
                )
                .await?,
            );
            names.push(name);
        }
        tx.commit().await?;
        if !names.is_empty() {
            self.changed();
            self.publish(published);
        }
        Ok(names)
    }
}
