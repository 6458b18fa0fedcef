//! What node agents tell the control plane: their credentials, reports (status,
//! instances, release transitions) and events, stored once by the agent's own id.
use nanoscale_core::agent::{AgentReport, Convergence, InstanceStatus};
use nanoscale_core::api::{Event, Instance, Node, ReleaseStatus};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::events::{self, NewEvent};
use super::nodes::node_from_row;
use super::{now_millis, parse_id, to_json, to_time, Store, StoreError, StoreResult};

impl Store {
    /// Replaces the node's credential; the previous one stops working at once.
    pub async fn set_node_credential(
        &self,
        node_id: Uuid,
        credential_hash: &str,
    ) -> StoreResult<()> {
        let result = sqlx::query("UPDATE nodes SET credential_hash = $1 WHERE id = $2")
            .bind(credential_hash)
            .bind(node_id.to_string())
            .execute(&self.write)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.changed();
        Ok(())
    }

    pub async fn node_by_credential(&self, credential_hash: &str) -> StoreResult<Option<Node>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM nodes WHERE credential_hash = $1",
            super::nodes::COLUMNS
        ))
        .bind(credential_hash)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Applies a node's report in one transaction: its status and versions, its
    /// instances (replaced as a whole), forward release transitions, and the events
    /// not seen before. Returns the ids of every reported event now stored.
    pub async fn apply_report(&self, node: &Node, report: &AgentReport) -> StoreResult<Vec<Uuid>> {
        let now = now_millis();
        let node_id = node.id.to_string();
        let mut tx = self.begin().await?;
        let previous: Option<String> = sqlx::query_scalar("SELECT status FROM nodes WHERE id = $1")
            .bind(&node_id)
            .fetch_optional(&mut *tx)
            .await?;
        // Removed while this report was on its way: nothing to record.
        let previous = previous.ok_or(StoreError::NotFound)?;
        sqlx::query(
            "UPDATE nodes SET status = 'ready', last_seen_at = $1, target_version = $2, \
             applied_version = $3, convergence = $4, problems_json = $5, \
             usage_json = COALESCE($6, usage_json), firewall_json = COALESCE($7, firewall_json) \
             WHERE id = $8",
        )
        .bind(now)
        .bind(report.target_version)
        .bind(report.applied_version)
        .bind(report.convergence.as_str())
        .bind(to_json(&report.problems))
        .bind(report.usage.as_ref().map(to_json))
        .bind(report.firewall.as_ref().map(to_json))
        .bind(&node_id)
        .execute(&mut *tx)
        .await?;
        let mut published: Vec<Event> = Vec::new();
        if previous == "unreachable" {
            published.push(
                events::insert(
                    &mut tx,
                    NewEvent {
                        node_id: Some(node.id),
                        ..NewEvent::info(
                            "node.reachable",
                            format!("node {} is sending heartbeats again", node.name),
                        )
                    },
                )
                .await?,
            );
        }

        sqlx::query("DELETE FROM instances WHERE node_id = $1")
            .bind(&node_id)
            .execute(&mut *tx)
            .await?;
        for instance in &report.instances {
            sqlx::query(
                "INSERT INTO instances (node_id, id, service_id, release_id, replica, port, pid, \
                 status, restarts, started_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&node_id)
            .bind(&instance.id)
            .bind(instance.service_id.to_string())
            .bind(instance.release_id.to_string())
            .bind(i64::from(instance.replica))
            .bind(i64::from(instance.port))
            .bind(instance.pid.map(i64::from))
            .bind(instance.status.as_str())
            .bind(i64::from(instance.restarts))
            .bind(instance.started_at.timestamp_millis())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }

        for release in &report.releases {
            if let Some(info) = &release.commit_info {
                // Any node that has the commit can say who wrote it; the first wins.
                sqlx::query(
                    "UPDATE releases SET commit_author = $1, commit_message = $2 \
                     WHERE id = $3 AND commit_author IS NULL",
                )
                .bind(&info.author)
                .bind(&info.message)
                .bind(release.release_id.to_string())
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query("SELECT service_id, status FROM releases WHERE id = $1")
                .bind(release.release_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            // A release deleted with its service: nothing to move.
            let Some(row) = row else { continue };
            let service_id: String = row.try_get("service_id")?;
            let stored: String = row.try_get("status")?;
            let Some(current) = ReleaseStatus::parse(&stored) else {
                continue;
            };
            if !current.can_become(release.status) {
                continue;
            }
            sqlx::query(
                "UPDATE releases SET status = $1, reason = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(release.status.as_str())
            .bind(&release.reason)
            .bind(now)
            .bind(release.release_id.to_string())
            .execute(&mut *tx)
            .await?;
            if release.status == ReleaseStatus::Live {
                sqlx::query(
                    "UPDATE releases SET status = 'retired', updated_at = $1 \
                     WHERE service_id = $2 AND status = 'live' AND id <> $3",
                )
                .bind(now)
                .bind(&service_id)
                .bind(release.release_id.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }

        let mut acknowledged = Vec::with_capacity(report.events.len());
        for event in &report.events {
            acknowledged.push(event.id);
            let seen: Option<String> =
                sqlx::query_scalar("SELECT id FROM events WHERE source_id = $1")
                    .bind(event.id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_some() {
                continue;
            }
            let project_id = match event.service_id {
                Some(service_id) => {
                    sqlx::query_scalar::<_, String>("SELECT project_id FROM services WHERE id = $1")
                        .bind(service_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|id| parse_id(&id))
                        .transpose()?
                }
                None => None,
            };
            let new = NewEvent {
                kind: event.kind.clone(),
                severity: severity(&event.severity),
                message: event.message.clone(),
                project_id,
                service_id: event.service_id,
                release_id: event.release_id,
                node_id: Some(node.id),
                actor_id: None,
            };
            published.push(events::insert_from_source(&mut tx, new, event.id, event.time).await?);
        }
        tx.commit().await?;
        // A heartbeat changes no document; a node coming back does (services
        // that reschedule return to it).
        if previous == "unreachable" {
            self.changed();
        } else {
            self.generation.bump();
        }
        self.publish(published);
        Ok(acknowledged)
    }

    /// Instances of a service on every node, as their agents last reported them.
    pub async fn list_instances(&self, service_id: Uuid) -> StoreResult<Vec<Instance>> {
        let rows = sqlx::query(
            "SELECT i.id, i.node_id, n.name AS node, i.service_id, i.release_id, \
                    COALESCE(r.number, 0) AS release_number, i.replica, i.port, i.pid, i.status, \
                    i.restarts, i.started_at, i.updated_at, n.status AS node_status \
             FROM instances i JOIN nodes n ON n.id = i.node_id \
             LEFT JOIN releases r ON r.id = i.release_id \
             WHERE i.service_id = $1 ORDER BY n.name, i.replica, i.id",
        )
        .bind(service_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// The node's convergence fields, which `nodes.rs` leaves to this module.
    pub(super) fn convergence_from_row(row: &AnyRow) -> StoreResult<(Convergence, Vec<String>)> {
        let convergence: String = row.try_get("convergence")?;
        let problems: String = row.try_get("problems_json")?;
        Ok((
            Convergence::parse(&convergence),
            super::from_json(&problems)?,
        ))
    }
}

/// Severity strings are stored as the three the API documents; anything else from
/// an agent counts as info.
fn severity(value: &str) -> &'static str {
    match value {
        "error" => "error",
        "warning" => "warning",
        _ => "info",
    }
}

fn instance_from_row(row: &AnyRow) -> StoreResult<Instance> {
    let status: String = row.try_get("status")?;
    let number = |name: &str| -> StoreResult<i64> { Ok(row.try_get::<i64, _>(name)?) };
    let node_status: String = row.try_get("node_status")?;
    Ok(Instance {
        node_reachable: node_status != "unreachable",
        id: row.try_get("id")?,
        node: row.try_get("node")?,
        node_id: parse_id(&row.try_get::<String, _>("node_id")?)?,
        service_id: parse_id(&row.try_get::<String, _>("service_id")?)?,
        release: parse_id(&row.try_get::<String, _>("release_id")?)?,
        release_number: number("release_number")?,
        replica: u32::try_from(number("replica")?).unwrap_or(0),
        port: u16::try_from(number("port")?).unwrap_or(0),
        pid: row
            .try_get::<Option<i64>, _>("pid")?
            .and_then(|pid| i32::try_from(pid).ok()),
        status: InstanceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("instance status {status:?}")))?,
        restarts: u32::try_from(number("restarts")?).unwrap_or(0),
        started_at: to_time(number("started_at")?),
        updated_at: to_time(number("updated_at")?),
    })
}
