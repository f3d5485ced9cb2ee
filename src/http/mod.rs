//! The HTTP layer: a thin axum router over the [`Store`]. `router(state)` builds it, so tests can
//! serve it on port 0 or call it in-process.

mod admin;
mod contacts;
mod error;
mod identify;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;

pub use error::ApiError;
pub use identify::{answer_json, parse_query};
pub use ops::Limits;

use crate::store::Store;

/// SPEC.md's default body limit.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;
/// How long a request may take before it is answered 503 `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once; more are answered 503 `overloaded` at once rather than queued.
pub const DEFAULT_CONCURRENT_REQUESTS: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            concurrent_requests: DEFAULT_CONCURRENT_REQUESTS,
        }
    }
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub compat_key_typo: bool,
    pub limits: Limits,
    /// With a token, admin endpoints need it; without, they answer loopback clients only.
    pub admin_token: Option<Arc<str>>,
}

impl AppState {
    /// Default options: no typo key, SPEC.md's limits, no admin token (loopback only).
    pub fn new(store: Store) -> AppState {
        AppState { store, compat_key_typo: false, limits: Limits::default(), admin_token: None }
    }
}

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/contacts", get(contacts::list))
        .route("/contacts/export", get(contacts::export))
        .route(
            "/contacts/{id}",
            get(contacts::contact).delete(contacts::delete),
        )
        .route("/contacts/{id}/identity", get(contacts::identity))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    // Router::layer wraps each route, so the concurrency limit must be the global kind (one
    // semaphore shared by every clone) and shedding happens before anything queues.
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(ops::limit_error))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(state.limits.concurrent_requests))
        .timeout(state.limits.timeout);
    Router::new()
        .route("/identify", post(identify::identify))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .layer(limits)
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such path".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
