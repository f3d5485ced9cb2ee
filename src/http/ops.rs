//! Operations: health and readiness, Prometheus metrics, the request limits and what they answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = super::openapi::Status)))]
pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

/// The same as `/healthz`, for the checkers that expect this path.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = super::openapi::Status)))]
pub async fn health() -> Response {
    healthz().await
}

/// Ready once recovery has finished (the server binds only after it) and while the log is
/// writable; 503 with the reason once storage has failed closed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Recovered and the log is writable (a cluster member: it knows a leader and has applied every entry it knows is committed)", body = super::openapi::Status),
        (status = 503, description = "Storage failed closed; restart to recover", body = super::openapi::ErrorBody)))]
pub async fn readyz(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if app.store.is_failed() {
        let why = app
            .store
            .failure()
            .unwrap_or_else(|| "storage has failed".into());
        return Err(ApiError::NotReady(why));
    }
    if let Some(member) = &app.member {
        member.ready().map_err(ApiError::NotReady)?;
    }
    let modes = app.canon.modes();
    let matching = json!({
        "phone": modes.phone.as_str(),
        "email": modes.email.as_str(),
        "defaultRegion": modes.region,
    });
    let body = json!({ "status": "ready", "matching": matching });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Requests, latency, contacts, clusters, merges, log and snapshot figures", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let text = app
        .store
        .metrics()
        .render(app.store.stats(), app.store.guard_stats());
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Turns the errors of the tower limit layers into JSON answers.
pub(crate) async fn limit_error(error: axum::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else {
        tracing::error!(%error, "middleware error");
        ApiError::Internal
    }
}

/// Request limits, with the defaults the options document.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body_bytes: usize,
    pub timeout: Duration,
    pub concurrent_requests: usize,
    /// How long a change feed stream waits, idle, before it sends a comment.
    pub changes_heartbeat: Duration,
}
