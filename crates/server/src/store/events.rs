use nanoscale_core::api::{Event, EventFilter};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::{new_id, now_millis, parse_id, parse_opt_id, to_time, Store, StoreResult};

/// An event to record; id and time are assigned on insert.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub kind: String,
    pub severity: &'static str,
    pub message: String,
    pub project_id: Option<Uuid>,
    pub service_id: Option<Uuid>,
    pub release_id: Option<Uuid>,
    pub node_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
}

impl NewEvent {
    pub fn info(kind: impl Into<String>, message: impl Into<String>) -> Self {
        NewEvent {
            kind: kind.into(),
            severity: "info",
            message: message.into(),
            ..NewEvent::default()
        }
    }
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

const COLUMNS: &str =
    "id, time, kind, severity, message, project_id, service_id, release_id, node_id, actor_id";

pub(super) async fn insert(conn: &mut AnyConnection, new: NewEvent) -> StoreResult<Event> {
    insert_with(conn, new, None, to_time(now_millis())).await
}

/// Inserts an event made elsewhere (by a node's agent) under its own id
/// (`source_id`, unique) and the time it happened. The row still gets a fresh,
/// ordered `id`, so streams resuming after an id never skip a late delivery.
pub(super) async fn insert_from_source(
    conn: &mut AnyConnection,
    new: NewEvent,
    source_id: Uuid,
    time: chrono::DateTime<chrono::Utc>,
) -> StoreResult<Event> {
    insert_with(conn, new, Some(source_id), time).await
}

async fn insert_with(
    conn: &mut AnyConnection,
    new: NewEvent,
    source_id: Option<Uuid>,
    time: chrono::DateTime<chrono::Utc>,
) -> StoreResult<Event> {
    let event = Event {
        id: new_id(),
        time,
        kind: new.kind,
        severity: new.severity.to_owned(),
        message: new.message,
        project_id: new.project_id,
        service_id: new.service_id,
        release_id: new.release_id,
        node_id: new.node_id,
        actor_id: new.actor_id,
    };
    sqlx::query(&format!(
        "INSERT INTO events ({COLUMNS}, source_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(event.id.to_string())
    .bind(event.time.timestamp_millis())
    .bind(&event.kind)
    .bind(&event.severity)
    .bind(&event.message)
    .bind(event.project_id.map(|id| id.to_string()))
    .bind(event.service_id.map(|id| id.to_string()))
    .bind(event.release_id.map(|id| id.to_string()))
    .bind(event.node_id.map(|id| id.to_string()))
    .bind(event.actor_id.map(|id| id.to_string()))
    .bind(source_id.map(|id| id.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(event)
}

fn event_from_row(row: &AnyRow) -> StoreResult<Event> {
    Ok(Event {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        time: to_time(row.try_get("time")?),
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        message: row.try_get("message")?,
        project_id: parse_opt_id(row.try_get("project_id")?)?,
        service_id: parse_opt_id(row.try_get("service_id")?)?,
        release_id: parse_opt_id(row.try_get("release_id")?)?,
        node_id: parse_opt_id(row.try_get("node_id")?)?,
        actor_id: parse_opt_id(row.try_get("actor_id")?)?,
    })
}

/// True when `event` passes `filter` (the same rule the SQL applies), for live streams.
pub fn event_matches(filter: &EventFilter, event: &Event) -> bool {
    let id_ok = |want: Option<Uuid>, have: Option<Uuid>| want.is_none() || want == have;
    id_ok(filter.project_id, event.project_id)
        && id_ok(filter.service_id, event.service_id)
        && id_ok(filter.node_id, event.node_id)
        && filter
            .kind
            .as_deref()
            .is_none_or(|kind| kind_matches(kind, &event.kind))
}

fn kind_matches(filter: &str, kind: &str) -> bool {
    if filter.ends_with('.') {
        kind.starts_with(filter)
    } else {
        kind == filter
    }
}

impl Store {
    /// Events after `after` (oldest first, at most `limit`), for resuming a stream.
    pub async fn list_events_after(
        &self,
        filter: &EventFilter,
        after: Uuid,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT {}",
            limit.clamp(1, MAX_LIMIT)
        ))
        .bind(after.to_string())
        .fetch_all(&self.read)
        .await?;
        let events: StoreResult<Vec<Event>> = rows.iter().map(event_from_row).collect();
        Ok(events?
            .into_iter()
            .filter(|event| event_matches(filter, event))
            .collect())
    }

    /// Newest first, filtered; `before` pages backwards by event id.
    pub async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut add = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(id) = filter.project_id {
            add(&mut sql, " AND project_id = ?", id.to_string());
        }
        if let Some(id) = filter.service_id {
            add(&mut sql, " AND service_id = ?", id.to_string());
        }
        if let Some(id) = filter.node_id {
            add(&mut sql, " AND node_id = ?", id.to_string());
        }
        if let Some(kind) = &filter.kind {
            if let Some(prefix) = kind.strip_suffix('.') {
                // Prefix match without LIKE so '%' and '_' in input stay literal.
                add(
                    &mut sql,
                    " AND substr(kind, 1, length(?)) = ?",
                    format!("{prefix}."),
                );
            } else {
                add(&mut sql, " AND kind = ?", kind.clone());
            }
        }
        if let Some(before) = filter.before {
            add(&mut sql, " AND id < ?", before.to_string());
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        let mut query = sqlx::query(&sql);
        for value in &binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(event_from_row).collect()
    }
}
