use std::time::Duration;

use uuid::Uuid;

use super::users::{user_from_row, UserRecord};
use super::{new_id, now_millis, parse_id, to_time, Change, Store, StoreResult};
use sqlx::Row;

/// How long a dashboard session lasts without logging in again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user: UserRecord,
    pub csrf_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    /// Stores a session by the hash of its cookie secret; the secret itself is only
    /// ever in the user's cookie.
    pub async fn create_session(
        &self,
        user_id: Uuid,
        token_hash: &str,
        csrf_token: &str,
        client_addr: &str,
        change: Change,
    ) -> StoreResult<chrono::DateTime<chrono::Utc>> {
        let mut tx = self.begin().await?;
        let now = now_millis();
        let expires = now + SESSION_LIFETIME.as_millis() as i64;
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, csrf_token, user_id, created_at, expires_at, client_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id().to_string())
        .bind(token_hash)
        .bind(csrf_token)
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires)
        .bind(client_addr)
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change).await?;
        Ok(to_time(expires))
    }

    /// The live session for a cookie secret's hash, with its user; expired ones are
    /// treated as absent.
    pub async fn find_session(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.csrf_token, s.expires_at AS session_expires, \
                    u.id, u.username, u.password_hash, u.role, u.created_at, u.created_by \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_millis())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionRecord {
            id: parse_id(&row.try_get::<String, _>("session_id")?)?,
            user: user_from_row(&row)?,
            csrf_token: row.try_get("csrf_token")?,
            expires_at: to_time(row.try_get("session_expires")?),
        }))
    }

    pub async fn delete_session(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        self.commit(tx, change).await
    }

    /// Housekeeping: forget expired sessions. Returns how many were removed.
    pub async fn delete_expired_sessions(&self) -> StoreResult<u64> {
        let result = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_millis())
            .execute(&self.write)
            .await?;
        Ok(result.rows_affected())
    }
}
