//! `GET /changes`: the change feed, as pages of JSON (with a long poll) or as server-sent
//! events, exactly as docs/API.md's "Change feed" says. A reader holds one page at a time,
//! so a slow or stalled one costs the server a page, never its memory; a stream whose reader
//! falls further behind than [`MAX_LAG`] events (or behind the history kept) is ended, and the
//! reader resumes from its last `seq`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::identify::json_ok;
use super::{ApiError, AppState};
use crate::engine::{Event, EventKind};
use crate::feed::{Compacted, Feed};

/// Events a page holds at most, and by default.
pub const MAX_LIMIT: u64 = 1000;
const DEFAULT_LIMIT: u64 = 100;
/// The longest long poll.
const MAX_WAIT: u64 = 60;
/// A stream this many events behind the newest is ended (the reader resumes by cursor).
pub const MAX_LAG: u64 = 1_000_000;
/// Events one chunk of a stream carries at most.
const STREAM_PAGE: usize = 100;

/// An event as JSON: ids and times, never an email or a phone.
pub fn event_json(e: &Event) -> Value {
    let contacts: Vec<Value> = (e.contacts.iter())
        .map(|m| json!({ "id": m.id, "primary": m.primary }))
        .collect();
    let mut event = json!({
        "seq": e.seq,
        "at": e.at,
        "type": e.kind.as_str(),
        "cause": e.cause.as_str(),
        "by": e.by,
    });
    if let EventKind::Merged { into, primaries } = &e.kind {
        event["into"] = json!(into);
        event["primaries"] = json!(primaries);
    }
    event["contacts"] = Value::Array(contacts);
    event
}

/// Events `contact=` looks through, newest first.
pub const CONTACT_SCAN: u64 = 100_000;

/// The feed's parameters, checked.
struct Params {
    after: u64,
    limit: usize,
    wait: Duration,
    contact: Option<u32>,
}

fn params(query: &HashMap<String, String>) -> Result<Params, ApiError> {
    let allowed = ["after", "limit", "wait", "contact"];
    if let Some(unknown) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadQuery(format!(
            "unknown parameter {unknown:?}; use after, limit, wait and contact"
        )));
    }
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        query.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| ApiError::BadQuery(format!("{name} must be a non-negative integer")))
        })
    };
    let limit = number("limit", DEFAULT_LIMIT)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadQuery(format!(
            "limit must be from 1 to {MAX_LIMIT}"
        )));
    }
    let wait = number("wait", 0)?;
    if wait > MAX_WAIT {
        return Err(ApiError::BadQuery(format!(
            "wait must be from 0 to {MAX_WAIT} seconds"
        )));
    }
    let contact = match query.get("contact") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::BadQuery("contact must be a contact id (a positive integer)".into())
        })?),
    };
    if contact.is_some() && (query.contains_key("after") || query.contains_key("wait")) {
        return Err(ApiError::BadQuery(
            "contact lists a contact's recent events: give it with limit only".into(),
        ));
    }
    Ok(Params {
        after: number("after", 0)?,
        limit: limit as usize,
        wait: Duration::from_secs(wait),
        contact,
    })
}

fn compacted(c: Compacted) -> Response {
    let body = json!({
        "error": {
            "code": "changes_compacted",
            "message": format!("{c}: read the rows again (GET /contacts) and follow on from \"oldest\" - 1"),
            "oldest": c.oldest,
        },
        "oldest": c.oldest,
    });
    (StatusCode::GONE, axum::Json(body)).into_response()
}

/// Counts a reader while it waits or streams.
struct Consumer(Feed);

impl Consumer {
    fn new(feed: &Feed) -> Consumer {
        feed.metrics().consumers.inc();
        Consumer(feed.clone())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.0.metrics().consumers.dec();
    }
}

/// The change feed: `{"changes": [...], "last": SEQ}`, or server-sent events with
/// `Accept: text/event-stream`.
#[utoipa::path(get, path = "/changes", tag = "changes",
    params(("after" = Option<u64>, Query, description = "Events with a seq greater than this (default 0); a stream starts after the Last-Event-ID header if given"),
        ("limit" = Option<u32>, Query, description = "At most this many events, 1 to 1000 (default 100)"),
        ("wait" = Option<u32>, Query, description = "When nothing is after `after`, wait up to this many seconds (0 to 60, default 0) for an event"),
        ("contact" = Option<u32>, Query, description = "Instead: the newest `limit` events naming this contact, among the newest 100,000 events (no after or wait)")),
    responses((status = 200, description = "The events after the cursor, and `last` to pass as `after` next time; or a text/event-stream of them", body = super::openapi::ChangesPage),
        (status = 400, description = "A parameter out of range or unknown (invalid_query)", body = super::openapi::ErrorBody),
        (status = 410, description = "changes_compacted: the cursor is older than the history kept; `oldest` is the oldest seq still served", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn changes(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = params(&query)?;
    let feed = app.store.feed().clone();
    if let Some(id) = params.contact {
        let events =
            tokio::task::spawn_blocking(move || feed.history_of(id, params.limit, CONTACT_SCAN))
                .await
                .map_err(|_| ApiError::Internal)?
                .map_err(|error| {
                    tracing::error!(%error, "the change feed's files could not be read");
                    ApiError::StorageUnavailable
                })?;
        let changes: Vec<Value> = events.iter().map(|e| event_json(e)).collect();
        let last = app.store.feed().head();
        return Ok(json_ok(&json!({ "changes": changes, "last": last })));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if accept.is_some_and(|a| a.contains("text/event-stream")) {
        let last_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        if let Some(id) = last_id {
            params.after = id.trim().parse().map_err(|_| {
                ApiError::BadQuery("Last-Event-ID must be a seq (a non-negative integer)".into())
            })?;
        }
        return Ok(stream(feed, params.after, app.limits.changes_heartbeat));
    }
    let mut page = match feed.read(params.after, params.limit) {
        Ok(page) => page,
        Err(c) => return Ok(compacted(c)),
    };
    if page.events.is_empty() && !params.wait.is_zero() {
        let _consumer = Consumer::new(&feed);
        feed.wait(params.after, params.wait).await;
        page = match feed.read(params.after, params.limit) {
            Ok(page) => page,
            Err(c) => return Ok(compacted(c)),
        };
    }
    let changes: Vec<Value> = page.events.iter().map(|e| event_json(e)).collect();
    Ok(json_ok(&json!({ "changes": changes, "last": page.last })))
}

/// What a stream does next.
enum Step {
    /// Send these bytes, then go on from the cursor.
    Send(Bytes),
    /// End the stream after these bytes.
    End(Bytes),
}

/// The events after `after` as server-sent events, a comment every `heartbeat` while idle.
fn stream(feed: Feed, after: u64, heartbeat: Duration) -> Response {
    let consumer = Arc::new(Consumer::new(&feed));
    let start = Bytes::from_static(b": identity-engine change feed\n\n");
    let state = (feed, after, Some(start), consumer);
    let body = futures_util::stream::unfold(Some(state), move |state| async move {
        let (feed, cursor, first, consumer) = state?;
        if let Some(first) = first {
            return Some((
                Ok::<_, std::io::Error>(first),
                Some((feed, cursor, None, consumer)),
            ));
        }
        match next_chunk(&feed, cursor, heartbeat).await {
            (Step::Send(bytes), cursor) => Some((Ok(bytes), Some((feed, cursor, None, consumer)))),
            (Step::End(bytes), _) => Some((Ok(bytes), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The next chunk of a stream at `cursor`: a page of events, or a comment once `heartbeat`
/// passes with none, or the end.
async fn next_chunk(feed: &Feed, cursor: u64, heartbeat: Duration) -> (Step, u64) {
    if feed.is_closing() {
        let why = format!(": ended: the server is shutting down; resume from {cursor}\n\n");
        return (Step::End(Bytes::from(why)), cursor);
    }
    if feed.head().saturating_sub(cursor) > MAX_LAG {
        let why = format!(": ended: more than {MAX_LAG} events behind; resume from {cursor}\n\n");
        return (Step::End(Bytes::from(why)), cursor);
    }
    let page = match feed.read(cursor, STREAM_PAGE) {
        Ok(page) => page,
        Err(c) => {
            let why = format!(": ended: {c}; read the rows again and follow on\n\n");
            return (Step::End(Bytes::from(why)), cursor);
        }
    };
    if page.events.is_empty() {
        feed.wait(cursor, heartbeat).await;
        if feed.head() <= cursor && !feed.is_closing() {
            return (Step::Send(Bytes::from_static(b": keepalive\n\n")), cursor);
        }
        return Box::pin(next_chunk(feed, cursor, heartbeat)).await;
    }
    let mut out = String::new();
    for event in &page.events {
        out.push_str(&format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.seq,
            event.kind.as_str(),
            event_json(event)
        ));
    }
    (Step::Send(Bytes::from(out)), page.last)
}
