use std::collections::BTreeMap;

use nanoscale_core::api::{Grant, Project};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::{
    delete_row, from_json, new_id, now_millis, parse_id, parse_opt_id, to_json, to_time, Change,
    Store, StoreError, StoreResult,
};

const COLUMNS: &str = "p.id, p.name, p.env_json, p.created_by, p.created_at, p.updated_at, \
     (SELECT COUNT(*) FROM services s WHERE s.project_id = p.id) AS service_count";

fn project_from_row(row: &AnyRow) -> StoreResult<Project> {
    Ok(Project {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        env: from_json(&row.try_get::<String, _>("env_json")?)?,
        created_by: parse_id(&row.try_get::<String, _>("created_by")?)?,
        created_at: to_time(row.try_get("created_at")?),
        updated_at: to_time(row.try_get("updated_at")?),
        service_count: row.try_get("service_count")?,
    })
}

fn conflict_as(name: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| match StoreError::from(error) {
        StoreError::Conflict(_) => StoreError::Conflict(name.into()),
        other => other,
    }
}

impl Store {
    pub async fn create_project(
        &self,
        name: &str,
        env: &BTreeMap<String, String>,
        created_by: Uuid,
        change: impl FnOnce(&Project) -> Change,
    ) -> StoreResult<Project> {
        let now = now_millis();
        let project = Project {
            id: new_id(),
            name: name.to_owned(),
            env: env.clone(),
            created_by,
            created_at: to_time(now),
            updated_at: to_time(now),
            service_count: 0,
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO projects (id, name, env_json, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(project.id.to_string())
        .bind(name)
        .bind(to_json(env))
        .bind(created_by.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(conflict_as("a project with this name already exists"))?;
        self.commit(tx, change(&project)).await?;
        Ok(project)
    }

    pub async fn get_project(&self, id: Uuid) -> StoreResult<Project> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM projects p WHERE p.id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        project_from_row(&row)
    }

    /// All projects by name, served from the list cache while nothing changed.
    pub async fn list_projects(&self) -> StoreResult<std::sync::Arc<Vec<Project>>> {
        let generation = self.cache_generation();
        if let Some(cached) = generation.and_then(|g| self.projects_cache.get(g)) {
            return Ok(cached);
        }
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM projects p ORDER BY p.name"))
            .fetch_all(&self.read)
            .await?;
        let projects: std::sync::Arc<Vec<Project>> = std::sync::Arc::new(
            rows.iter()
                .map(project_from_row)
                .collect::<StoreResult<_>>()?,
        );
        if let Some(generation) = generation {
            self.projects_cache.put(generation, projects.clone());
        }
        Ok(projects)
    }

    pub async fn count_projects(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM projects")
            .fetch_one(&self.read)
            .await?)
    }

    pub async fn update_project(
        &self,
        id: Uuid,
        name: Option<&str>,
        env: Option<&BTreeMap<String, String>>,
        change: Change,
    ) -> StoreResult<Project> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "UPDATE projects SET name = COALESCE($1, name), env_json = COALESCE($2, env_json), \
             updated_at = $3 WHERE id = $4",
        )
        .bind(name)
        .bind(env.map(to_json))
        .bind(now_millis())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(conflict_as("a project with this name already exists"))?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM projects p WHERE p.id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let project = project_from_row(&row)?;
        self.commit(tx, change).await?;
        Ok(project)
    }

    /// Deletes a project with its services and their releases (by cascade).
    pub async fn delete_project(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        // Children first: SQLite enforces the cascade, but deleting explicitly keeps
        // the behaviour identical whatever the engine's foreign-key settings.
        sqlx::query("DELETE FROM releases WHERE service_id IN (SELECT id FROM services WHERE project_id = $1)")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM services WHERE project_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        delete_row(&mut tx, "projects", id).await?;
        self.commit(tx, change).await?;
        Ok(())
    }

    /// True when `user_id` created the project, or was granted it directly or
    /// through one of their teams.
    pub async fn user_can_manage_project(
        &self,
        user_id: Uuid,
        project_id: Uuid,
    ) -> StoreResult<bool> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM projects p WHERE p.id = $1 AND ( \
                p.created_by = $2 \
                OR EXISTS (SELECT 1 FROM project_grants g WHERE g.project_id = p.id AND g.user_id = $2) \
                OR EXISTS (SELECT 1 FROM project_grants g JOIN team_members m ON m.team_id = g.team_id \
                           WHERE g.project_id = p.id AND m.user_id = $2))",
        )
        .bind(project_id.to_string())
        .bind(user_id.to_string())
        .fetch_one(&self.read)
        .await?;
        Ok(count > 0)
    }

    pub async fn create_grant(
        &self,
        project_id: Uuid,
        user_id: Option<Uuid>,
        team_id: Option<Uuid>,
        change: impl FnOnce(&Grant) -> Change,
    ) -> StoreResult<Grant> {
        let grant = Grant {
            id: new_id(),
            project_id,
            user_id,
            team_id,
            created_at: to_time(now_millis()),
        };
        let mut tx = self.begin().await?;
        let existing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_grants WHERE project_id = $1 \
             AND COALESCE(user_id, '') = COALESCE($2, '') AND COALESCE(team_id, '') = COALESCE($3, '')",
        )
        .bind(project_id.to_string())
        .bind(user_id.map(|id| id.to_string()))
        .bind(team_id.map(|id| id.to_string()))
        .fetch_one(&mut *tx)
        .await?;
        if existing > 0 {
            return Err(StoreError::Conflict("this grant already exists".into()));
        }
        sqlx::query(
            "INSERT INTO project_grants (id, project_id, user_id, team_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(grant.id.to_string())
        .bind(project_id.to_string())
        .bind(user_id.map(|id| id.to_string()))
        .bind(team_id.map(|id| id.to_string()))
        .bind(grant.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change(&grant)).await?;
        Ok(grant)
    }

    pub async fn list_grants(&self, project_id: Uuid) -> StoreResult<Vec<Grant>> {
        let rows = sqlx::query(
            "SELECT id, project_id, user_id, team_id, created_at FROM project_grants \
             WHERE project_id = $1 ORDER BY id",
        )
        .bind(project_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Grant {
                    id: parse_id(&row.try_get::<String, _>("id")?)?,
                    project_id: parse_id(&row.try_get::<String, _>("project_id")?)?,
                    user_id: parse_opt_id(row.try_get("user_id")?)?,
                    team_id: parse_opt_id(row.try_get("team_id")?)?,
                    created_at: to_time(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub async fn delete_grant(
        &self,
        project_id: Uuid,
        grant_id: Uuid,
        change: Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let result = sqlx::query("DELETE FROM project_grants WHERE id = $1 AND project_id = $2")
            .bind(grant_id.to_string())
            .bind(project_id.to_string())
            .execute(&mut *tx)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit(tx, change).await?;
        Ok(())
    }
}
