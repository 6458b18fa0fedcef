use nanoscale_core::desired::Workload;
use nanoscale_core::service::ServiceSpec;
use sqlx::Row;
use uuid::Uuid;

use std::collections::HashMap;

use nanoscale_core::api::Node;

use super::nodes::{node_from_row, COLUMNS};
use super::{parse_id, Store, StoreError, StoreResult};

impl Store {
    /// This cluster's id, made once on first use.
    pub async fn cluster_id(&self) -> StoreResult<Uuid> {
        if let Some(id) = self.get_setting("cluster_id").await? {
            return parse_id(&id);
        }
        sqlx::query("INSERT INTO settings (key, value) VALUES ('cluster_id', $1) ON CONFLICT (key) DO NOTHING")
            .bind(Uuid::now_v7().to_string())
            .execute(&self.write)
            .await?;
        let id = self
            .get_setting("cluster_id")
            .await?
            .ok_or(StoreError::NotFound)?;
        parse_id(&id)
    }

    /// Every service that has a current release, as a workload pinned to that
    /// release's commit and frozen spec. `replicas` is the spec's total; placement
    /// decides how many of them a given node runs.
    pub async fn current_releases(&self) -> StoreResult<Vec<Workload>> {
        let rows = sqlx::query(
            "SELECT s.id AS service_id, s.name AS service, p.name AS project, r.id AS release_id, \
                    r.number, r.commit_sha, r.spec_json \
             FROM services s \
             JOIN projects p ON p.id = s.project_id \
             JOIN releases r ON r.id = s.current_release_id \
             ORDER BY s.name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let spec: ServiceSpec =
                    self.spec_from_json(&row.try_get::<String, _>("spec_json")?)?;
                Ok(Workload {
                    replicas: spec.replicas,
                    spec,
                    service_id: parse_id(&row.try_get::<String, _>("service_id")?)?,
                    service: row.try_get("service")?,
                    project: row.try_get("project")?,
                    release_id: parse_id(&row.try_get::<String, _>("release_id")?)?,
                    release_number: row.try_get("number")?,
                    commit: row.try_get("commit_sha")?,
                })
            })
            .collect()
    }

    /// Every node with the hash of its last compiled document.
    pub async fn nodes_with_desired(&self) -> StoreResult<Vec<(Node, String)>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, desired_sha256 FROM nodes ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| Ok((node_from_row(row)?, row.try_get("desired_sha256")?)))
            .collect()
    }

    /// Records the hashes of documents that changed, in one transaction: each such
    /// node's version moves on by one, unless its stored hash already is the new
    /// one (another compilation, perhaps on another replica, got there first).
    /// Returns the current version of every node given that still exists.
    pub async fn record_desired_many(
        &self,
        changed: &[(Uuid, String)],
    ) -> StoreResult<HashMap<Uuid, i64>> {
        // Rows per statement: two parameters each, well under SQLite's limit.
        const CHUNK: usize = 500;
        let mut versions = HashMap::with_capacity(changed.len());
        if changed.is_empty() {
            return Ok(versions);
        }
        let mut tx = self.begin().await?;
        for chunk in changed.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|index| format!("(${}, ${})", 2 * index + 1, 2 * index + 2))
                .collect();
            // One statement per chunk (a change reaches every node at once, and
            // 10,000 single-row updates take seconds); portable to SQLite ≥ 3.33
            // and PostgreSQL.
            let sql = format!(
                "WITH changed (id, sha) AS (VALUES {}) \
                 UPDATE nodes SET desired_version = nodes.desired_version + 1, desired_sha256 = changed.sha \
                 FROM changed WHERE nodes.id = changed.id AND nodes.desired_sha256 <> changed.sha \
                 RETURNING nodes.id, nodes.desired_version",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (node_id, sha256) in chunk {
                query = query.bind(node_id.to_string()).bind(sha256);
            }
            for row in query.fetch_all(&mut *tx).await? {
                versions.insert(
                    parse_id(&row.try_get::<String, _>(0)?)?,
                    row.try_get::<i64, _>(1)?,
                );
            }
            // Moved by someone else since it was read (another replica): its
            // version is the stored one, not the one read (rare).
            let unmoved: Vec<Uuid> = chunk
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !versions.contains_key(id))
                .collect();
            for node_id in unmoved {
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT desired_version FROM nodes WHERE id = $1")
                        .bind(node_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(current) = current {
                    versions.insert(node_id, current);
                }
            }
        }
        tx.commit().await?;
        // Versions are outputs of compiling, not inputs: only list caches care.
        self.generation.bump();
        Ok(versions)
    }
}
