//! The event timeline: a filterable list and a live Server-Sent Events stream.
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use nanoscale_core::api::{Event, EventFilter};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::event_matches;

fn check(filter: &EventFilter) -> ApiResult<()> {
    if let Some(limit) = filter.limit {
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest {
                message: "limit must be between 1 and 1000".into(),
                field: Some("limit".into()),
            });
        }
    }
    if let Some(kind) = &filter.kind {
        if kind.is_empty() || kind.len() > 100 {
            return Err(ApiError::BadRequest {
                message: "kind must be 1-100 characters".into(),
                field: Some("kind".into()),
            });
        }
    }
    Ok(())
}

/// Newest first. `kind` matches exactly, or as a prefix when it ends with `.`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventFilter),
    responses((status = 200, body = Vec<Event>)))]
pub async fn list_events(
    State(state): State<AppState>,
    _principal: Principal,
    ApiQuery(filter): ApiQuery<EventFilter>,
) -> ApiResult<Json<Vec<Event>>> {
    check(&filter)?;
    Ok(Json(state.store.list_events(&filter).await?))
}

/// Live events as Server-Sent Events (`event: event`, `id:` the event id, `data:` one
/// Event as JSON), filtered like the list. A client reconnecting with
/// `Last-Event-ID` first gets what it missed (up to 1000 events). A client that
/// falls behind gets an `event: lagged` and should re-read the list.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(EventFilter),
    responses((status = 200, content_type = "text/event-stream", body = String, description = "a stream of events")))]
pub async fn stream_events(
    State(state): State<AppState>,
    _principal: Principal,
    headers: HeaderMap,
    ApiQuery(filter): ApiQuery<EventFilter>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    check(&filter)?;
    // Subscribe before reading the backlog so nothing falls between the two.
    let receiver = state.store.subscribe();
    let resume_after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value).ok());
    let backlog = match resume_after {
        Some(after) => {
            state
                .store
                .list_events_after(&filter, after, MAX_REPLAY)
                .await?
        }
        None => Vec::new(),
    };
    let newest_replayed = backlog.last().map(|event| event.id).or(resume_after);
    let hello = stream::once(async { Ok(SseEvent::default().event("ready").data("{}")) });
    let replay = stream::iter(
        backlog
            .into_iter()
            .filter_map(|event| to_sse(&event).map(Ok)),
    );
    let live = BroadcastStream::new(receiver).filter_map(move |item| {
        let filter = filter.clone();
        async move {
            match item {
                // Ids are time-ordered UUIDv7: skip what the replay already sent.
                Ok(event) if newest_replayed.is_some_and(|newest| event.id <= newest) => None,
                Ok(event) if event_matches(&filter, &event) => to_sse(&event).map(Ok),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(SseEvent::default()
                    .event("lagged")
                    .data(missed.to_string()))),
            }
        }
    });
    let events = hello.chain(replay).chain(live);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Most events replayed to a client resuming with `Last-Event-ID`.
const MAX_REPLAY: u32 = 1000;

fn to_sse(event: &Event) -> Option<SseEvent> {
    let data = serde_json::to_string(event).ok()?;
    Some(
        SseEvent::default()
            .event("event")
            .id(event.id.to_string())
            .data(data),
    )
}
