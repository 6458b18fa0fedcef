use nanoscale_core::api::{Release, ReleaseStatus};
use nanoscale_core::service::ServiceSpec;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::{
    new_id, now_millis, parse_id, parse_opt_id, to_time, Change, Store, StoreError, StoreResult,
};

const COLUMNS: &str = "id, service_id, number, commit_sha, git_ref, status, reason, rollback_of, \
     commit_author, commit_message, created_by, created_at, updated_at";

/// What a deploy or rollback asks the store to record.
pub struct NewRelease {
    pub service_id: Uuid,
    pub commit: String,
    pub git_ref: String,
    /// The spec frozen into the release (secrets included; never returned by the API).
    pub spec: ServiceSpec,
    pub rollback_of: Option<Uuid>,
    pub created_by: Uuid,
}

fn release_from_row(row: &AnyRow) -> StoreResult<Release> {
    let status: String = row.try_get("status")?;
    Ok(Release {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        service_id: parse_id(&row.try_get::<String, _>("service_id")?)?,
        number: row.try_get("number")?,
        commit: row.try_get("commit_sha")?,
        git_ref: row.try_get("git_ref")?,
        status: ReleaseStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("release status {status:?}")))?,
        reason: row.try_get("reason")?,
        rollback_of: parse_opt_id(row.try_get("rollback_of")?)?,
        commit_author: row.try_get("commit_author")?,
        commit_message: row.try_get("commit_message")?,
        created_by: parse_id(&row.try_get::<String, _>("created_by")?)?,
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Records a new queued release with the next number and makes it the service's
    /// target release; the deploy engine carries it out.
    pub async fn create_release(
        &self,
        new: NewRelease,
        change: impl FnOnce(&Release) -> Change,
    ) -> StoreResult<Release> {
        let mut tx = self.begin().await?;
        // The single SQLite writer serializes this; on PostgreSQL the unique
        // (service_id, number) key turns a lost race into a conflict, not a duplicate.
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE service_id = $1",
        )
        .bind(new.service_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let now = now_millis();
        let release = Release {
            id: new_id(),
            service_id: new.service_id,
            number,
            commit: new.commit,
            git_ref: new.git_ref,
            status: ReleaseStatus::Queued,
            reason: None,
            rollback_of: new.rollback_of,
            commit_author: None,
            commit_message: None,
            created_by: new.created_by,
            created_at: to_time(now),
            updated_at: to_time(now),
        };
        sqlx::query(&format!(
            "INSERT INTO releases ({COLUMNS}, spec_json) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, NULL, NULL, $8, $9, $9, $10)"
        ))
        .bind(release.id.to_string())
        .bind(release.service_id.to_string())
        .bind(number)
        .bind(&release.commit)
        .bind(&release.git_ref)
        .bind(release.status.as_str())
        .bind(release.rollback_of.map(|id| id.to_string()))
        .bind(release.created_by.to_string())
        .bind(now)
        .bind(self.spec_json(&new.spec))
        .execute(&mut *tx)
        .await?;
        let result = sqlx::query(
            "UPDATE services SET current_release_id = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(release.id.to_string())
        .bind(now)
        .bind(release.service_id.to_string())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit(tx, change(&release)).await?;
        Ok(release)
    }

    /// Newest first.
    pub async fn list_releases(&self, service_id: Uuid) -> StoreResult<Vec<Release>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM releases WHERE service_id = $1 ORDER BY number DESC"
        ))
        .bind(service_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(release_from_row).collect()
    }

    pub async fn get_release(&self, id: Uuid) -> StoreResult<Release> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM releases WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        release_from_row(&row)
    }

    pub async fn find_release_by_number(
        &self,
        service_id: Uuid,
        number: i64,
    ) -> StoreResult<Release> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM releases WHERE service_id = $1 AND number = $2"
        ))
        .bind(service_id.to_string())
        .bind(number)
        .fetch_one(&self.read)
        .await?;
        release_from_row(&row)
    }

    /// The spec frozen into a release, secrets included (for the deploy engine).
    pub async fn release_spec(&self, id: Uuid) -> StoreResult<ServiceSpec> {
        let spec: String = sqlx::query_scalar("SELECT spec_json FROM releases WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        self.spec_from_json(&spec)
    }
}
