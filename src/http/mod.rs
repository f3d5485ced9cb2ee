//! The HTTP layer: a thin axum router over the [`Store`]. `router(state)` builds it, so tests can
//! serve it on port 0 or call it in-process.

mod admin;
mod contacts;
mod error;
mod identify;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use identify::{answer_json, parse_query};

use crate::store::Store;

/// SPEC.md's default body limit.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub compat_key_typo: bool,
    pub body_limit: usize,
    /// With a token, admin endpoints need it; without, they answer loopback clients only.
    pub admin_token: Option<Arc<str>>,
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
    Router::new()
        .route("/identify", post(identify::identify))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such path".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
