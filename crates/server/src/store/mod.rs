//! The control plane's store: one code path over SQLite (default, embedded) and
//! PostgreSQL, through sqlx's `Any` driver with portable SQL (`$1` placeholders,
//! TEXT/BIGINT columns).
//!
//! Every mutating method writes its audit entry and its events in the same
//! transaction as the change, then publishes the events to live subscribers after
//! the commit, so the timeline never shows something that was rolled back.
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nanoscale_core::api::Event;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::broadcast;
use uuid::Uuid;

mod agent;
mod audit;
mod cache;
mod cluster;
mod desired;
mod error;
mod events;
mod nodes;
mod projects;
mod releases;
mod services;
mod sessions;
mod settings;
mod teams;
mod tokens;
mod users;

pub use audit::NewAudit;
pub use cluster::{JoinError, JoiningNode};
pub use error::StoreError;
pub use events::event_matches;
pub use events::NewEvent;
pub use nodes::NewNode;
pub use releases::NewRelease;
pub use sessions::{SessionRecord, SESSION_LIFETIME};
pub use tokens::TokenRecord;
pub use users::UserRecord;

pub type StoreResult<T> = Result<T, StoreError>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    /// Readers. For SQLite several connections read concurrently under WAL.
    read: AnyPool,
    /// Writers. For SQLite exactly one connection, so writers queue in the pool
    /// instead of failing with SQLITE_BUSY; for PostgreSQL the same pool as `read`.
    write: AnyPool,
    backend: Backend,
    events: broadcast::Sender<Event>,
    /// Bumped by every committed write; see `cache.rs`.
    generation: std::sync::Arc<cache::Generation>,
    /// Bumped by every committed write that can change a node's desired-state
    /// document: every write but heartbeats and the recording of document
    /// versions themselves (see `crate::desired`).
    desired_generation: std::sync::Arc<cache::Generation>,
    projects_cache: std::sync::Arc<cache::ListCache<nanoscale_core::api::Project>>,
    tokens_cache: std::sync::Arc<cache::KeyedCache<TokenRecord>>,
    /// Seals secret env values on their way into a row, opens them on the way out.
    sealer: nanoscale_sealed::Sealer,
}

/// What a store mutation records besides the change itself: the audit entry and the
/// events, written in the same transaction.
pub struct Change {
    pub audit: NewAudit,
    pub events: Vec<NewEvent>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    /// `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str, sealer: nanoscale_sealed::Sealer) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Config(
                "database url must start with sqlite:// or postgres://".into(),
            ));
        };
        let options = AnyConnectOptions::from_str(url).map_err(StoreError::Database)?;
        let (read, write) = match backend {
            Backend::Sqlite => {
                let write = sqlite_pool(1, &options).await?;
                // Migrate on the writer first so the readers see the final schema.
                MIGRATOR.run(&write).await.map_err(StoreError::Migrate)?;
                // More readers than cores only adds idle page caches (RSS).
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                let read = sqlite_pool(cores.clamp(2, 8) as u32, &options).await?;
                (read, write)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(StoreError::Database)?;
                MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
                (pool.clone(), pool)
            }
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Store {
            read,
            write,
            backend,
            events,
            generation: Default::default(),
            desired_generation: Default::default(),
            projects_cache: Default::default(),
            tokens_cache: Default::default(),
            sealer,
        })
    }

    /// A spec as it is written to a row: secret values sealed.
    pub(crate) fn spec_json(&self, spec: &nanoscale_core::service::ServiceSpec) -> String {
        to_json(&self.sealer.seal_spec(spec))
    }

    /// A spec read from a row: secret values opened.
    pub(crate) fn spec_from_json(
        &self,
        text: &str,
    ) -> StoreResult<nanoscale_core::service::ServiceSpec> {
        self.sealer
            .open_spec(from_json(text)?)
            .map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Subscribes to events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// A cheap round trip to both pools, timed for the readiness probe and metrics.
    pub async fn ping(&self) -> StoreResult<Duration> {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(start.elapsed())
    }

    /// True when every embedded migration is applied.
    pub async fn migrations_done(&self) -> StoreResult<bool> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.read)
                .await?;
        Ok(applied as usize >= MIGRATOR.iter().count())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.write.begin().await?)
    }

    /// Writes the change's audit entry and events inside `conn`'s transaction and
    /// returns the events to publish after commit.
    async fn record(conn: &mut AnyConnection, change: Change) -> StoreResult<Vec<Event>> {
        audit::insert(&mut *conn, &change.audit).await?;
        let mut published = Vec::with_capacity(change.events.len());
        for event in change.events {
            published.push(events::insert(&mut *conn, event).await?);
        }
        Ok(published)
    }

    /// Records `change` in `tx`, commits, then publishes the events: the one way a
    /// mutation ends.
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        change: Change,
    ) -> StoreResult<()> {
        let events = Store::record(&mut tx, change).await?;
        tx.commit().await?;
        self.changed();
        self.publish(events);
        Ok(())
    }

    /// A committed write: caches keyed by generation are stale now.
    pub(crate) fn changed(&self) {
        self.generation.bump();
        self.desired_generation.bump();
    }

    /// The generation of desired-state inputs, when this process is the only
    /// writer (SQLite); `None` with PostgreSQL, where other replicas write too.
    pub fn desired_generation(&self) -> Option<u64> {
        (self.backend == Backend::Sqlite).then(|| self.desired_generation.current())
    }

    /// The generation to key a list cache with, or `None` when caching is off
    /// (another process may write: PostgreSQL).
    fn cache_generation(&self) -> Option<u64> {
        (self.backend == Backend::Sqlite).then(|| self.generation.current())
    }

    fn publish(&self, events: Vec<Event>) {
        for event in events {
            // No subscriber is fine: the event is stored either way.
            let _ = self.events.send(event);
        }
    }

    /// Records an audit entry (and its events) for an action that changes nothing
    /// else, such as revealing a secret.
    pub async fn record_change(&self, change: Change) -> StoreResult<()> {
        let tx = self.begin().await?;
        self.commit(tx, change).await
    }

    /// Records events with no audit entry (system transitions, not user actions).
    pub async fn record_events(&self, new_events: Vec<NewEvent>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let mut published = Vec::new();
        for event in new_events {
            published.push(events::insert(&mut tx, event).await?);
        }
        tx.commit().await?;
        self.changed();
        self.publish(published);
        Ok(())
    }
}

async fn sqlite_pool(connections: u32, options: &AnyConnectOptions) -> StoreResult<AnyPool> {
    AnyPoolOptions::new()
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        // A whole fleet reconnecting (10,000 channels in 4 s, each looking its
        // node up) queues for up to about 2 s, sqlx's default threshold for a
        // warning: warned of from 5 s, it is a real backlog, not a reconnect.
        .acquire_slow_threshold(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the single writer; the busy timeout
                // covers the window where a checkpoint holds the lock.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(StoreError::Database)
}

/// Deletes row `id` of `table` inside `tx`; `NotFound` when there was none. `table`
/// is one of our own table names, never input.
async fn delete_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &'static str,
    id: Uuid,
) -> StoreResult<()> {
    let result = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    if result.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn to_time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

pub(crate) fn parse_id(value: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(value)
        .map_err(|error| StoreError::Corrupt(format!("bad id {value:?}: {error}")))
}

pub(crate) fn parse_opt_id(value: Option<String>) -> StoreResult<Option<Uuid>> {
    value.as_deref().map(parse_id).transpose()
}

pub(crate) fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(value: &str) -> StoreResult<T> {
    serde_json::from_str(value).map_err(|error| StoreError::Corrupt(format!("bad json: {error}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing our own plain data types cannot fail (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
