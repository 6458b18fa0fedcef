use std::collections::BTreeMap;

use nanoscale_core::agent::Convergence;
use nanoscale_core::api::{Node, NodeCapacity};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::{from_json, new_id, now_millis, parse_id, to_json, to_time, Store, StoreResult};

/// What a node says about itself when it registers.
pub struct NewNode {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub security_mode: String,
    pub cpus: i64,
    pub memory_bytes: i64,
}

pub(super) const COLUMNS: &str =
    "id, name, address, labels_json, status, security_mode, cpus, memory_bytes, \
     desired_version, applied_version, created_at, last_seen_at, convergence, problems_json, \
     usage_json, ssh_from_json, firewall_json";

pub(super) fn node_from_row(row: &AnyRow) -> StoreResult<Node> {
    let (reported, problems) = Store::convergence_from_row(row)?;
    let desired_version: i64 = row.try_get("desired_version")?;
    let applied_version: i64 = row.try_get("applied_version")?;
    let convergence = shown_convergence(reported, desired_version, applied_version);
    Ok(Node {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        address: row.try_get("address")?,
        labels: from_json(&row.try_get::<String, _>("labels_json")?)?,
        status: row.try_get("status")?,
        security_mode: row.try_get("security_mode")?,
        ssh_from: from_json(&row.try_get::<String, _>("ssh_from_json")?)?,
        firewall: row
            .try_get::<Option<String>, _>("firewall_json")?
            .map(|json| from_json(&json))
            .transpose()?,
        capacity: NodeCapacity {
            cpus: row.try_get("cpus")?,
            memory_bytes: row.try_get("memory_bytes")?,
        },
        desired_version,
        applied_version,
        convergence,
        problems,
        created_at: to_time(row.try_get("created_at")?),
        last_seen_at: row.try_get::<Option<i64>, _>("last_seen_at")?.map(to_time),
        usage: row
            .try_get::<Option<String>, _>("usage_json")?
            .map(|json| from_json(&json))
            .transpose()?,
    })
}

/// What a node's convergence is as people see it: a node that reported "applied"
/// for an older version than the one compiled for it since is applying (until its
/// agent says otherwise).
fn shown_convergence(reported: Convergence, desired: i64, applied: i64) -> Convergence {
    match reported {
        Convergence::Applied if applied < desired => Convergence::Applying,
        other => other,
    }
}

impl Store {
    /// Registers a node by name, or refreshes what it reports about itself. Returns
    /// the node and whether it was new.
    pub async fn upsert_node(&self, new: NewNode) -> StoreResult<(Node, bool)> {
        let mut tx = self.begin().await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM nodes WHERE name = $1")
            .bind(&new.name)
            .fetch_optional(&mut *tx)
            .await?;
        let created = existing.is_none();
        let id = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE nodes SET address = $1, labels_json = $2, cpus = $3, \
                     memory_bytes = $4 WHERE id = $5",
                )
                .bind(&new.address)
                .bind(to_json(&new.labels))
                .bind(new.cpus)
                .bind(new.memory_bytes)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                let id = new_id().to_string();
                sqlx::query(&format!(
                    "INSERT INTO nodes ({COLUMNS}) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, 0, 0, $8, NULL, 'unknown', '[]', NULL, '[]', NULL)"
                ))
                .bind(&id)
                .bind(&new.name)
                .bind(&new.address)
                .bind(to_json(&new.labels))
                .bind(&new.security_mode)
                .bind(new.cpus)
                .bind(new.memory_bytes)
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let node = node_from_row(&row)?;
        tx.commit().await?;
        self.changed();
        Ok((node, created))
    }

    /// Sets a node's security mode and/or SSH networks (validated by the caller).
    pub async fn update_node_security(
        &self,
        id: Uuid,
        mode: Option<&str>,
        ssh_from: Option<&[String]>,
        change: super::Change,
    ) -> StoreResult<Node> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "UPDATE nodes SET security_mode = COALESCE($1, security_mode), \
             ssh_from_json = COALESCE($2, ssh_from_json) WHERE id = $3",
        )
        .bind(mode)
        .bind(ssh_from.map(|networks| to_json(&networks)))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            return Err(super::StoreError::NotFound);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let node = node_from_row(&row)?;
        self.commit(tx, change).await?;
        Ok(node)
    }

    pub async fn list_nodes(&self) -> StoreResult<Vec<Node>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    pub async fn get_node(&self, id: Uuid) -> StoreResult<Node> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        node_from_row(&row)
    }

    pub async fn count_nodes(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM nodes")
            .fetch_one(&self.read)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_for_an_older_version_is_applying() {
        use Convergence::{Applied, Applying, Degraded, Unknown};
        for (reported, desired, applied, shown) in [
            (Applied, 3, 2, Applying),
            (Applied, 3, 3, Applied),
            (Degraded, 3, 2, Degraded),
            (Unknown, 1, 0, Unknown),
        ] {
            assert_eq!(shown_convergence(reported, desired, applied), shown);
        }
    }
}
