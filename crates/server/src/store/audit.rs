use nanoscale_core::api::{AuditEntry, AuditFilter};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::events::{DEFAULT_LIMIT, MAX_LIMIT};
use super::{
    from_json, new_id, now_millis, parse_id, parse_opt_id, to_json, to_time, Store, StoreResult,
};

/// An audit entry to write beside a mutation. `summary` must never hold a secret.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub summary: serde_json::Value,
    pub request_id: String,
}

const COLUMNS: &str =
    "id, time, actor_id, actor_name, action, resource_type, resource_id, summary_json, request_id";

pub(super) async fn insert(conn: &mut AnyConnection, new: &NewAudit) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO audit_entries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(new_id().to_string())
    .bind(now_millis())
    .bind(new.actor_id.map(|id| id.to_string()))
    .bind(&new.actor_name)
    .bind(&new.action)
    .bind(&new.resource_type)
    .bind(new.resource_id.as_deref())
    .bind(to_json(&new.summary))
    .bind(&new.request_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn entry_from_row(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        time: to_time(row.try_get("time")?),
        actor_id: parse_opt_id(row.try_get("actor_id")?)?,
        actor_name: row.try_get("actor_name")?,
        action: row.try_get("action")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        summary: from_json(&row.try_get::<String, _>("summary_json")?)?,
        request_id: row.try_get("request_id")?,
    })
}

impl Store {
    /// Newest first, filtered; `before` pages backwards by entry id.
    pub async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut add = |sql: &mut String, column: &str, value: String| {
            binds.push(value);
            sql.push_str(&format!(" AND {column} ${}", binds.len()));
        };
        if let Some(id) = filter.actor_id {
            add(&mut sql, "actor_id =", id.to_string());
        }
        if let Some(action) = &filter.action {
            add(&mut sql, "action =", action.clone());
        }
        if let Some(kind) = &filter.resource_type {
            add(&mut sql, "resource_type =", kind.clone());
        }
        if let Some(id) = &filter.resource_id {
            add(&mut sql, "resource_id =", id.clone());
        }
        if let Some(before) = filter.before {
            add(&mut sql, "id <", before.to_string());
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut query = sqlx::query(&sql);
        for value in &binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(entry_from_row).collect()
    }
}
