use nanoscale_core::api::Settings;

use super::{Change, Store, StoreResult};

pub const DEFAULT_PRODUCT_NAME: &str = "NanoScale";

impl Store {
    pub async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn settings(&self) -> StoreResult<Settings> {
        Ok(Settings {
            product_name: self
                .get_setting("product_name")
                .await?
                .unwrap_or_else(|| DEFAULT_PRODUCT_NAME.to_owned()),
            logo_url: self.get_setting("logo_url").await?,
        })
    }

    /// Sets (`Some`) or clears (`None`) each given key in one transaction.
    pub async fn put_settings(
        &self,
        values: &[(&str, Option<String>)],
        change: Change,
    ) -> StoreResult<Settings> {
        let mut tx = self.begin().await?;
        for (key, value) in values {
            match value {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO settings (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(*key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM settings WHERE key = $1")
                        .bind(*key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        self.commit(tx, change).await?;
        self.settings().await
    }
}
