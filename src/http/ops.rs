//! Operations: health and readiness, Prometheus metrics, and the per-request middleware that
//! logs one line and counts each request. Logs name the route template, never the path or the
//! body: emails and phone numbers are personal data.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::BoxError;
use serde_json::json;

use super::{ApiError, AppState};

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = super::openapi::Status)))]
pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

/// Ready once recovery has finished (the server binds only after it) and while the log is
/// writable; 503 with the reason once storage has failed closed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Recovered and the log is writable", body = super::openapi::Status),
        (status = 503, description = "Storage failed closed; restart to recover", body = super::openapi::ErrorBody)))]
pub async fn readyz(State(app): State<AppState>) -> Result<Response, ApiError> {
    if app.store.is_failed() {
        return Err(ApiError::StorageUnavailable);
    }
    Ok((StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response())
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Requests, latency, contacts, clusters, merges, log and snapshot figures", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let text = app.store.metrics().render(app.store.stats());
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Logs one line per request (method, route, status, latency) and counts it.
pub async fn observe(State(app): State<AppState>, request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    app.store
        .metrics()
        .observe_request(method.as_str(), &route, status, took);
    tracing::info!(method = %method, route, status, micros = took.as_micros() as u64, "request");
    response
}

/// Turns the errors of the tower limit layers into JSON answers.
pub async fn limit_error(error: BoxError) -> ApiError {
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
}
