use nanoscale_core::api::Service;
use nanoscale_core::service::ServiceSpec;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::{
    delete_row, from_json, new_id, now_millis, parse_id, parse_opt_id, to_time, Change, Store,
    StoreError, StoreResult,
};

const COLUMNS: &str =
    "id, project_id, spec_json, created_by, created_at, updated_at, current_release_id";

/// A service as stored: the full spec, secrets included (opened). The API redacts it.
fn service_from_row(store: &Store, row: &AnyRow) -> StoreResult<Service> {
    Ok(Service {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        project_id: parse_id(&row.try_get::<String, _>("project_id")?)?,
        spec: store.spec_from_json(&row.try_get::<String, _>("spec_json")?)?,
        created_by: parse_id(&row.try_get::<String, _>("created_by")?)?,
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
        current_release: parse_opt_id(row.try_get("current_release_id")?)?,
    })
}

fn name_conflict(error: sqlx::Error) -> StoreError {
    match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict(
            "a service with this name already exists (service names are unique in the cluster)"
                .into(),
        ),
        other => other,
    }
}

impl Store {
    pub async fn create_service(
        &self,
        project_id: Uuid,
        spec: &ServiceSpec,
        created_by: Uuid,
        change: impl FnOnce(&Service) -> Change,
    ) -> StoreResult<Service> {
        let now = now_millis();
        let service = Service {
            id: new_id(),
            project_id,
            spec: spec.clone(),
            created_by,
            created_at: to_time(now),
            updated_at: to_time(now),
            current_release: None,
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO services (id, project_id, name, spec_json, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(service.id.to_string())
        .bind(project_id.to_string())
        .bind(&spec.name)
        .bind(self.spec_json(spec))
        .bind(created_by.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(name_conflict)?;
        self.commit(tx, change(&service)).await?;
        Ok(service)
    }

    pub async fn get_service(&self, id: Uuid) -> StoreResult<Service> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM services WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        service_from_row(self, &row)
    }

    /// Services of one project, or all when `project_id` is `None`.
    pub async fn list_services(&self, project_id: Option<Uuid>) -> StoreResult<Vec<Service>> {
        let rows = match project_id {
            Some(project_id) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM services WHERE project_id = $1 ORDER BY name"
                ))
                .bind(project_id.to_string())
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM services ORDER BY name"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(|row| service_from_row(self, row)).collect()
    }

    pub async fn count_services(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM services")
            .fetch_one(&self.read)
            .await?)
    }

    /// Replaces the spec, provided it is still `expected` (what the caller read):
    /// a concurrent change makes this `Stale` instead of silently losing it. Sealed
    /// values differ at every write (random nonces), so the row is compared opened,
    /// and the write is conditional on the exact text just read.
    pub async fn update_service(
        &self,
        id: Uuid,
        expected: &ServiceSpec,
        spec: &ServiceSpec,
        change: Change,
    ) -> StoreResult<Service> {
        let mut tx = self.begin().await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT spec_json FROM services WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(stored) = stored else {
            return Err(StoreError::NotFound);
        };
        if self.spec_from_json(&stored)? != *expected {
            return Err(StoreError::Stale);
        }
        let result = sqlx::query(
            "UPDATE services SET name = $1, spec_json = $2, updated_at = $3 WHERE id = $4 AND spec_json = $5",
        )
        .bind(&spec.name)
        .bind(self.spec_json(spec))
        .bind(now_millis())
        .bind(id.to_string())
        .bind(&stored)
        .execute(&mut *tx)
        .await
        .map_err(name_conflict)?;
        if result.rows_affected() == 0 {
            let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM services WHERE id = $1")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
            return Err(if exists == 0 {
                StoreError::NotFound
            } else {
                StoreError::Stale
            });
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM services WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let service = service_from_row(self, &row)?;
        self.commit(tx, change).await?;
        Ok(service)
    }

    pub async fn delete_service(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM releases WHERE service_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        delete_row(&mut tx, "services", id).await?;
        self.commit(tx, change).await?;
        Ok(())
    }

    /// Seals the secrets that rows written before sealing existed still hold in
    /// plain text (services and releases). Returns how many rows it rewrote.
    pub async fn seal_plain_secrets(&self) -> StoreResult<u64> {
        let mut rewritten = 0;
        for table in ["services", "releases"] {
            let rows = sqlx::query(&format!("SELECT id, spec_json FROM {table}"))
                .fetch_all(&self.write)
                .await?;
            for row in rows {
                let id: String = row.try_get("id")?;
                let text: String = row.try_get("spec_json")?;
                let spec: ServiceSpec = from_json(&text)?;
                if !nanoscale_sealed::has_plain_secret(&spec) {
                    continue;
                }
                let result = sqlx::query(&format!(
                    "UPDATE {table} SET spec_json = $1 WHERE id = $2 AND spec_json = $3"
                ))
                .bind(self.spec_json(&spec))
                .bind(&id)
                .bind(&text)
                .execute(&self.write)
                .await?;
                rewritten += result.rows_affected();
            }
        }
        if rewritten > 0 {
            self.changed();
        }
        Ok(rewritten)
    }
}
