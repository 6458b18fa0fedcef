use nanoscale_core::api::Team;
use sqlx::Row;
use uuid::Uuid;

use super::{
    delete_row, new_id, now_millis, parse_id, to_time, Change, Store, StoreError, StoreResult,
};

impl Store {
    pub async fn create_team(
        &self,
        name: &str,
        change: impl FnOnce(&Team) -> Change,
    ) -> StoreResult<Team> {
        let team = Team {
            id: new_id(),
            name: name.to_owned(),
            members: Vec::new(),
            created_at: to_time(now_millis()),
        };
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(team.id.to_string())
            .bind(name)
            .bind(team.created_at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict("a team with this name already exists".into())
                }
                other => other,
            })?;
        self.commit(tx, change(&team)).await?;
        Ok(team)
    }

    pub async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM teams ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        let members = sqlx::query("SELECT team_id, user_id FROM team_members ORDER BY user_id")
            .fetch_all(&self.read)
            .await?;
        let mut teams = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let mut team_members = Vec::new();
            for member in &members {
                if member.try_get::<String, _>("team_id")? == id {
                    team_members.push(parse_id(&member.try_get::<String, _>("user_id")?)?);
                }
            }
            teams.push(Team {
                id: parse_id(&id)?,
                name: row.try_get("name")?,
                members: team_members,
                created_at: to_time(row.try_get("created_at")?),
            });
        }
        Ok(teams)
    }

    pub async fn get_team(&self, id: Uuid) -> StoreResult<Team> {
        self.list_teams()
            .await?
            .into_iter()
            .find(|team| team.id == id)
            .ok_or(StoreError::NotFound)
    }

    pub async fn delete_team(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE team_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM project_grants WHERE team_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        delete_row(&mut tx, "teams", id).await?;
        self.commit(tx, change).await?;
        Ok(())
    }

    /// Adds (`member = true`) or removes a user from a team; idempotent.
    pub async fn set_team_member(
        &self,
        team_id: Uuid,
        user_id: Uuid,
        member: bool,
        change: Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
            .bind(team_id.to_string())
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await?;
        if member {
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(team_id.to_string())
                .bind(user_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|error| match &error {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::NotFound
                    }
                    _ => StoreError::from(error),
                })?;
        }
        self.commit(tx, change).await?;
        Ok(())
    }
}
