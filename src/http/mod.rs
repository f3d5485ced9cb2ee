//! The HTTP layer: a thin axum router over the [`Store`]. `router(state)` builds it, so tests can
//! serve it on port 0 or call it in-process.

mod error;
mod identify;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
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
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/identify", post(identify::identify))
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
