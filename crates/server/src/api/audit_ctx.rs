//! Builds the audit entry and events that accompany a mutation.
use nanoscale_core::api::User;
use serde_json::Value;

use super::error::current_request_id;
use crate::auth::Principal;
use crate::store::{Change, NewAudit, NewEvent};

/// An audit entry for `principal` doing `action` on a resource. `summary` must not
/// contain secrets: callers pass redacted specs.
pub fn audit(
    actor: Option<&User>,
    action: &str,
    resource_type: &str,
    resource_id: Option<String>,
    summary: Value,
) -> NewAudit {
    NewAudit {
        actor_id: actor.map(|user| user.id),
        actor_name: actor.map_or_else(|| "anonymous".to_owned(), |user| user.username.clone()),
        action: action.to_owned(),
        resource_type: resource_type.to_owned(),
        resource_id,
        summary,
        request_id: current_request_id(),
    }
}

pub fn change(
    principal: &Principal,
    action: &str,
    resource_type: &str,
    resource_id: impl ToString,
    summary: Value,
) -> Change {
    Change {
        audit: audit(
            Some(&principal.user),
            action,
            resource_type,
            Some(resource_id.to_string()),
            summary,
        ),
        events: Vec::new(),
    }
}

impl Change {
    pub fn with_event(mut self, event: NewEvent) -> Change {
        self.events.push(event);
        self
    }
}
