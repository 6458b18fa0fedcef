use nanoscale_core::desired::Workload;
use nanoscale_core::service::ServiceSpec;
use sqlx::Row;
use uuid::Uuid;

use super::{from_json, parse_id, Store, StoreError, StoreResult};

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
                let spec: ServiceSpec = from_json(&row.try_get::<String, _>("spec_json")?)?;
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

    /// Records the hash of the document just compiled for a node and returns its
    /// version: unchanged when the hash is, else one more. Concurrent callers with
    /// the same hash agree on one version (the update is conditional on the old hash).
    pub async fn record_desired(&self, node_id: Uuid, sha256: &str) -> StoreResult<i64> {
        loop {
            let row =
                sqlx::query("SELECT desired_version, desired_sha256 FROM nodes WHERE id = $1")
                    .bind(node_id.to_string())
                    .fetch_one(&self.read)
                    .await?;
            let version: i64 = row.try_get("desired_version")?;
            let stored: String = row.try_get("desired_sha256")?;
            if stored == sha256 {
                return Ok(version);
            }
            let result = sqlx::query(
                "UPDATE nodes SET desired_version = $1, desired_sha256 = $2 WHERE id = $3 AND desired_sha256 = $4",
            )
            .bind(version + 1)
            .bind(sha256)
            .bind(node_id.to_string())
            .bind(&stored)
            .execute(&self.write)
            .await?;
            if result.rows_affected() == 1 {
                self.generation.bump();
                return Ok(version + 1);
            }
            // Someone else moved it first: read again.
        }
    }
}
