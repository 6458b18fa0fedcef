//! The agent's own SQLite file: the last desired-state document, the releases it
//! built, the instances it runs and the outbox of events not yet acknowledged.
//! Every state change and its event are written in one transaction, so an event is
//! never lost nor emitted for a change that did not happen.
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::Utc;
use nanoscale_core::agent::{AgentEvent, InstanceStatus};
use nanoscale_core::desired::{DesiredDocument, Workload};
use nanoscale_core::service::ServiceSpec;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("agent database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("agent database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("agent database holds bad data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where a release is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    Building,
    Built,
    Failed,
    Live,
    Retired,
}

impl ReleaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Building => "building",
            ReleaseState::Built => "built",
            ReleaseState::Failed => "failed",
            ReleaseState::Live => "live",
            ReleaseState::Retired => "retired",
        }
    }

    fn parse(value: &str) -> StoreResult<ReleaseState> {
        Ok(match value {
            "building" => ReleaseState::Building,
            "built" => ReleaseState::Built,
            "failed" => ReleaseState::Failed,
            "live" => ReleaseState::Live,
            "retired" => ReleaseState::Retired,
            other => return Err(StoreError::Corrupt(format!("release status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub id: Uuid,
    pub service: String,
    pub service_id: Uuid,
    pub number: i64,
    pub commit: String,
    pub spec: ServiceSpec,
    pub state: ReleaseState,
    pub reason: Option<String>,
    /// The built tree the instances run in.
    pub dir: Option<PathBuf>,
    /// How to run it (JSON of `build::RunPlan`), once built.
    pub run_plan: Option<String>,
}

#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: String,
    pub service: String,
    pub service_id: Uuid,
    pub release_id: Uuid,
    pub replica: u32,
    pub port: u16,
    /// The shim's state directory.
    pub dir: PathBuf,
    pub status: InstanceStatus,
    pub restarts: u32,
    pub pid: Option<i32>,
    pub started_at: i64,
    pub exited_at: Option<i64>,
}

/// What the sealed document body is bound to (the sealer's associated data).
const DOCUMENT_LABEL: &str = "desired-state document";

#[derive(Clone)]
pub struct AgentStore {
    pool: SqlitePool,
    /// The document (which carries secret env values) and release specs are
    /// stored sealed (`nanoscale-sealed`, key `agent/secret.key`).
    sealer: nanoscale_sealed::Sealer,
}

impl AgentStore {
    pub async fn open(path: &Path, sealer: nanoscale_sealed::Sealer) -> StoreResult<AgentStore> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        // One connection: the agent is one writer, and it keeps RSS small.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(AgentStore { pool, sealer })
    }

    pub async fn document(&self) -> StoreResult<Option<(DesiredDocument, i64)>> {
        let row = sqlx::query("SELECT body, applied_version FROM document WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        let body = self
            .sealer
            .open(DOCUMENT_LABEL, &body)
            .map_err(|error| StoreError::Corrupt(format!("stored document: {error}")))?;
        let document = serde_json::from_str(&body)
            .map_err(|error| StoreError::Corrupt(format!("stored document: {error}")))?;
        Ok(Some((document, row.try_get("applied_version")?)))
    }

    /// The stored document's version and the last applied version, without reading
    /// the document itself (the reconcile and report loops ask every round).
    pub async fn versions(&self) -> StoreResult<(i64, i64)> {
        let row = sqlx::query("SELECT version, applied_version FROM document WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => (row.try_get("version")?, row.try_get("applied_version")?),
            None => (0, 0),
        })
    }

    pub async fn save_document(&self, document: &DesiredDocument) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO document (id, version, sha256, body) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, \
             body = excluded.body",
        )
        .bind(document.version)
        .bind(&document.sha256)
        .bind(self.sealer.seal(DOCUMENT_LABEL, &json(document)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `version` is fully applied, with its event, once.
    pub async fn set_applied(&self, version: i64, event: Option<AgentEvent>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE document SET applied_version = $1 WHERE id = 1")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        push_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an event alone (a transition with no stored state of its own).
    pub async fn record_event(&self, event: AgentEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        push_event(&mut tx, Some(event)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn releases(&self) -> StoreResult<Vec<ReleaseRecord>> {
        let rows = sqlx::query("SELECT * FROM releases ORDER BY service, number")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| self.release_from_row(row)).collect()
    }

    pub async fn release(&self, id: Uuid) -> StoreResult<Option<ReleaseRecord>> {
        let row = sqlx::query("SELECT * FROM releases WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|row| self.release_from_row(row))
            .transpose()
    }

    /// A release starts building (created, or restarted after its tree was lost).
    pub async fn begin_build(&self, workload: &Workload, event: AgentEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO releases (id, service, service_id, number, commit_sha, spec, status, reason, \
             dir, run_plan, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'building', NULL, NULL, NULL, $7) \
             ON CONFLICT (id) DO UPDATE SET status = 'building', reason = NULL, dir = NULL, \
             run_plan = NULL, updated_at = excluded.updated_at",
        )
        .bind(workload.release_id.to_string())
        .bind(&workload.service)
        .bind(workload.service_id.to_string())
        .bind(workload.release_number)
        .bind(&workload.commit)
        .bind(json(&self.sealer.seal_spec(&workload.spec)))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        push_event(&mut tx, Some(event)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn finish_build(
        &self,
        id: Uuid,
        dir: &Path,
        run_plan: &str,
        event: AgentEvent,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE releases SET status = 'built', dir = $1, run_plan = $2, reason = NULL, \
             updated_at = $3 WHERE id = $4",
        )
        .bind(dir.display().to_string())
        .bind(run_plan)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        push_event(&mut tx, Some(event)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a release to `state` (with a reason for failures) and records the event.
    pub async fn set_release_state(
        &self,
        id: Uuid,
        state: ReleaseState,
        reason: Option<&str>,
        event: Option<AgentEvent>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE releases SET status = $1, reason = $2, updated_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(reason)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        push_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a release whose built tree is gone, so it is rebuilt.
    pub async fn forget_build(&self, id: Uuid) -> StoreResult<()> {
        sqlx::query("DELETE FROM releases WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn forget_service(&self, service: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM releases WHERE service = $1")
            .bind(service)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY service, replica, started_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    pub async fn instance(&self, id: &str) -> StoreResult<Option<InstanceRecord>> {
        let row = sqlx::query("SELECT * FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(instance_from_row).transpose()
    }

    pub async fn used_ports(&self) -> StoreResult<Vec<u16>> {
        let ports: Vec<i64> = sqlx::query_scalar("SELECT port FROM instances")
            .fetch_all(&self.pool)
            .await?;
        Ok(ports
            .into_iter()
            .filter_map(|p| u16::try_from(p).ok())
            .collect())
    }

    pub async fn insert_instance(
        &self,
        record: &InstanceRecord,
        event: AgentEvent,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO instances (id, service, service_id, release_id, replica, port, dir, status, \
             restarts, pid, started_at, exited_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&record.id)
        .bind(&record.service)
        .bind(record.service_id.to_string())
        .bind(record.release_id.to_string())
        .bind(i64::from(record.replica))
        .bind(i64::from(record.port))
        .bind(record.dir.display().to_string())
        .bind(record.status.as_str())
        .bind(i64::from(record.restarts))
        .bind(record.pid.map(i64::from))
        .bind(record.started_at)
        .bind(record.exited_at)
        .execute(&mut *tx)
        .await?;
        push_event(&mut tx, Some(event)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves an instance to `status` (an exit also records when) with its event.
    pub async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        event: Option<AgentEvent>,
    ) -> StoreResult<()> {
        let exited_at = (status == InstanceStatus::Exited).then(now_ms);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE instances SET status = $1, exited_at = COALESCE($2, exited_at) WHERE id = $3",
        )
        .bind(status.as_str())
        .bind(exited_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        push_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_instance(&self, id: &str, event: Option<AgentEvent>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        push_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The oldest unacknowledged events, at most `limit`.
    pub async fn pending_events(&self, limit: usize) -> StoreResult<Vec<AgentEvent>> {
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM outbox ORDER BY seq LIMIT $1")
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        bodies
            .iter()
            .map(|body| {
                serde_json::from_str(body)
                    .map_err(|error| StoreError::Corrupt(format!("outbox event: {error}")))
            })
            .collect()
    }

    pub async fn acknowledge(&self, ids: &[Uuid]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn push_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    event: Option<AgentEvent>,
) -> StoreResult<()> {
    let Some(event) = event else { return Ok(()) };
    sqlx::query("INSERT INTO outbox (id, body) VALUES ($1, $2)")
        .bind(event.id.to_string())
        .bind(json(&event))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An event stamped now with a fresh id.
pub fn event(kind: &str, severity: &str, message: impl Into<String>) -> AgentEvent {
    AgentEvent {
        id: Uuid::now_v7(),
        time: Utc::now(),
        kind: kind.to_owned(),
        severity: severity.to_owned(),
        message: message.into(),
        service_id: None,
        release_id: None,
    }
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Our own plain data with string keys: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn uuid(row: &SqliteRow, column: &str) -> StoreResult<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
}

impl AgentStore {
    fn release_from_row(&self, row: &SqliteRow) -> StoreResult<ReleaseRecord> {
        let spec: String = row.try_get("spec")?;
        let spec = serde_json::from_str(&spec)
            .map_err(|error| StoreError::Corrupt(format!("release spec: {error}")))?;
        let spec = self
            .sealer
            .open_spec(spec)
            .map_err(|error| StoreError::Corrupt(format!("release spec: {error}")))?;
        release_record(row, spec)
    }
}

fn release_record(row: &SqliteRow, spec: ServiceSpec) -> StoreResult<ReleaseRecord> {
    Ok(ReleaseRecord {
        id: uuid(row, "id")?,
        service: row.try_get("service")?,
        service_id: uuid(row, "service_id")?,
        number: row.try_get("number")?,
        commit: row.try_get("commit_sha")?,
        spec,
        state: ReleaseState::parse(&row.try_get::<String, _>("status")?)?,
        reason: row.try_get("reason")?,
        dir: row.try_get::<Option<String>, _>("dir")?.map(PathBuf::from),
        run_plan: row.try_get("run_plan")?,
    })
}

fn instance_from_row(row: &SqliteRow) -> StoreResult<InstanceRecord> {
    let status: String = row.try_get("status")?;
    let int = |column: &str| -> StoreResult<i64> { Ok(row.try_get::<i64, _>(column)?) };
    Ok(InstanceRecord {
        id: row.try_get("id")?,
        service: row.try_get("service")?,
        service_id: uuid(row, "service_id")?,
        release_id: uuid(row, "release_id")?,
        replica: u32::try_from(int("replica")?).unwrap_or(0),
        port: u16::try_from(int("port")?).unwrap_or(0),
        dir: PathBuf::from(row.try_get::<String, _>("dir")?),
        status: InstanceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("instance status {status:?}")))?,
        restarts: u32::try_from(int("restarts")?).unwrap_or(0),
        pid: row
            .try_get::<Option<i64>, _>("pid")?
            .and_then(|pid| i32::try_from(pid).ok()),
        started_at: int("started_at")?,
        exited_at: row.try_get("exited_at")?,
    })
}
