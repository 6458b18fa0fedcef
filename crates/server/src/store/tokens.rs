use chrono::{DateTime, Utc};
use nanoscale_core::api::ApiToken;
use nanoscale_core::Role;
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::users::{user_from_row, UserRecord};
use super::{
    delete_row, new_id, now_millis, parse_id, to_time, Change, Store, StoreError, StoreResult,
};

/// A token found by its secret's hash, with its owner.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub token: ApiToken,
    pub user: UserRecord,
}

const COLUMNS: &str = "id, user_id, name, role, created_at, expires_at, last_used_at";

fn token_from_row(row: &AnyRow) -> StoreResult<ApiToken> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        user_id: parse_id(&row.try_get::<String, _>("user_id")?)?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        created_at: to_time(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(to_time),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(to_time),
    })
}

impl Store {
    pub async fn create_token(
        &self,
        user_id: Uuid,
        name: &str,
        role: Role,
        token_hash: &str,
        expires_at: Option<DateTime<Utc>>,
        change: impl FnOnce(&ApiToken) -> Change,
    ) -> StoreResult<ApiToken> {
        let token = ApiToken {
            id: new_id(),
            name: name.to_owned(),
            role,
            user_id,
            created_at: to_time(now_millis()),
            expires_at,
            last_used_at: None,
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, role, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token.id.to_string())
        .bind(user_id.to_string())
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(token.created_at.timestamp_millis())
        .bind(expires_at.map(|t| t.timestamp_millis()))
        .execute(&mut *tx)
        .await?;
        self.commit(tx, change(&token)).await?;
        Ok(token)
    }

    /// Tokens of one user, or of everyone when `user_id` is `None`.
    pub async fn list_tokens(&self, user_id: Option<Uuid>) -> StoreResult<Vec<ApiToken>> {
        let rows = match user_id {
            Some(user_id) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY id"
                ))
                .bind(user_id.to_string())
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(token_from_row).collect()
    }

    pub async fn get_token(&self, id: Uuid) -> StoreResult<ApiToken> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        token_from_row(&row)
    }

    /// The unexpired token with this secret hash, with its owner.
    pub async fn find_token(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
        // Revocation, role changes and user deletion all commit, which moves the
        // generation on; expiry is re-checked on every hit.
        let generation = self.cache_generation();
        if let Some(record) = generation.and_then(|g| self.tokens_cache.get(token_hash, g)) {
            let live = record
                .token
                .expires_at
                .is_none_or(|at| at.timestamp_millis() > now_millis());
            return Ok(live.then_some(record));
        }
        let found = self.find_token_uncached(token_hash).await?;
        if let (Some(generation), Some(record)) = (generation, &found) {
            self.tokens_cache
                .put(token_hash, generation, record.clone());
        }
        Ok(found)
    }

    async fn find_token_uncached(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.user_id, t.name, t.role AS token_role, \
                    t.created_at AS token_created_at, t.expires_at, t.last_used_at, \
                    u.id, u.username, u.password_hash, u.role, u.created_at, u.created_by \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(token_hash)
        .bind(now_millis())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("token_role")?;
        Ok(Some(TokenRecord {
            token: ApiToken {
                id: parse_id(&row.try_get::<String, _>("token_id")?)?,
                user_id: parse_id(&row.try_get::<String, _>("user_id")?)?,
                name: row.try_get("name")?,
                role: Role::parse(&role)
                    .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
                created_at: to_time(row.try_get("token_created_at")?),
                expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(to_time),
                last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(to_time),
            },
            user: user_from_row(&row)?,
        }))
    }

    /// Records use, at most once a minute per token so reads do not become writes.
    pub async fn touch_token(&self, token_hash: &str, token: &ApiToken) -> StoreResult<()> {
        let now = now_millis();
        let fresh = token
            .last_used_at
            .is_some_and(|last| now - last.timestamp_millis() < 60_000);
        if fresh {
            return Ok(());
        }
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token.id.to_string())
            .execute(&self.write)
            .await?;
        self.tokens_cache.update(token_hash, |record| {
            record.token.last_used_at = Some(to_time(now))
        });
        Ok(())
    }

    pub async fn delete_token(&self, id: Uuid, change: Change) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        delete_row(&mut tx, "api_tokens", id).await?;
        self.commit(tx, change).await?;
        Ok(())
    }
}
