/// Store failures, translated once here so the API maps them to statuses in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated; the string names what collided.
    #[error("{0}")]
    Conflict(String),
    /// The row changed between reading it and writing it back.
    #[error("it changed while this request was being applied; retry")]
    Stale,
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(format!(
                "{} already exists",
                db.constraint().unwrap_or("a row with this key")
            )),
            _ => StoreError::Database(error),
        }
    }
}
