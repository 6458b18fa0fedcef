use nanoscale_core::api::User;
use nanoscale_core::Role;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::{
    new_id, now_millis, parse_id, parse_opt_id, to_time, Change, Store, StoreError, StoreResult,
};

/// A user with the secret column the API never returns.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
}

const COLUMNS: &str = "id, username, password_hash, role, created_at, created_by";

pub(super) fn user_from_row(row: &AnyRow) -> StoreResult<UserRecord> {
    let role: String = row.try_get("role")?;
    Ok(UserRecord {
        user: User {
            id: parse_id(&row.try_get::<String, _>("id")?)?,
            username: row.try_get("username")?,
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
            created_at: to_time(row.try_get("created_at")?),
            created_by: parse_opt_id(row.try_get("created_by")?)?,
        },
        password_hash: row.try_get("password_hash")?,
    })
}

impl Store {
    pub async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    /// Creates the first admin exactly once, even under concurrent requests: the
    /// `setup_done` settings row is the lock (its primary key collides for the loser).
    pub async fn create_first_admin(
        &self,
        username: &str,
        password_hash: &str,
        change: impl FnOnce(&User) -> Change,
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ('setup_done', $1)")
            .bind(now_millis().to_string())
            .execute(&mut *tx)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Conflict(_) => StoreError::Conflict("setup already done".into()),
                other => other,
            })?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Err(StoreError::Conflict("setup already done".into()));
        }
        let user = insert_user(&mut tx, username, password_hash, Role::Admin, None).await?;
        self.commit(tx, change(&user)).await?;
        Ok(user)
    }

    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        created_by: Uuid,
        change: impl FnOnce(&User) -> Change,
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        let user = insert_user(&mut tx, username, password_hash, role, Some(created_by)).await?;
        self.commit(tx, change(&user)).await?;
        Ok(user)
    }

    pub async fn get_user(&self, id: Uuid) -> StoreResult<UserRecord> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        user_from_row(&row)
    }

    pub async fn find_user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| user_from_row(row).map(|r| r.user))
            .collect()
    }

    /// Changes role and/or password. Refuses to demote the last admin, so the
    /// cluster can never lock itself out. A password change ends the user's sessions.
    pub async fn update_user(
        &self,
        id: Uuid,
        role: Option<Role>,
        password_hash: Option<&str>,
        change: Change,
    ) -> StoreResult<User> {
        let mut tx = self.begin().await?;
        let current = user_in(&mut tx, id).await?;
        if let Some(role) = role {
            if current.user.role == Role::Admin && role != Role::Admin {
                ensure_another_admin(&mut tx, id).await?;
            }
            sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
                .bind(role.as_str())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            // Tokens never exceed their owner's role: cap them at the new one.
            for stronger in stronger_roles(role) {
                sqlx::query("UPDATE api_tokens SET role = $1 WHERE user_id = $2 AND role = $3")
                    .bind(role.as_str())
                    .bind(id.to_string())
                    .bind(stronger.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(hash) = password_hash {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let updated = user_in(&mut tx, id).await?;
        self.commit(tx, change).await?;
        Ok(updated.user)
    }

    /// Deletes a user with their sessions and tokens (by cascade). What they created
    /// stays, still naming them as creator.
    pub async fn delete_user(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let current = user_in(&mut tx, id).await?;
        if current.user.role == Role::Admin {
            ensure_another_admin(&mut tx, id).await?;
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        self.commit(tx, change).await?;
        Ok(())
    }
}

async fn user_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: Uuid,
) -> StoreResult<UserRecord> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await?;
    user_from_row(&row)
}

fn stronger_roles(role: Role) -> Vec<Role> {
    [Role::Viewer, Role::Deployer, Role::Admin]
        .into_iter()
        .filter(|other| *other > role)
        .collect()
}

async fn ensure_another_admin(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    except: Uuid,
) -> StoreResult<()> {
    let others: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND id <> $1")
            .bind(except.to_string())
            .fetch_one(&mut **tx)
            .await?;
    if others == 0 {
        return Err(StoreError::Conflict(
            "the last admin cannot be removed or demoted".into(),
        ));
    }
    Ok(())
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    username: &str,
    password_hash: &str,
    role: Role,
    created_by: Option<Uuid>,
) -> StoreResult<User> {
    let user = User {
        id: new_id(),
        username: username.to_owned(),
        role,
        created_at: to_time(now_millis()),
        created_by,
    };
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user.id.to_string())
    .bind(&user.username)
    .bind(password_hash)
    .bind(role.as_str())
    .bind(user.created_at.timestamp_millis())
    .bind(created_by.map(|id| id.to_string()))
    .execute(&mut **tx)
    .await
    .map_err(|error| match StoreError::from(error) {
        StoreError::Conflict(_) => {
            StoreError::Conflict("a user with this username already exists".into())
        }
        other => other,
    })?;
    Ok(user)
}
