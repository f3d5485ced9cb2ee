//! The HTTP layer: a thin axum router over the [`Store`]. `router(state)` builds it, so tests can
//! serve it on port 0 or call it in-process.

mod admin;
mod backup;
mod blocklist;
mod console;
mod contacts;
mod erasures;
mod error;
mod graph;
mod identify;
mod import;
mod members;
mod observe;
mod openapi;
mod ops;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

pub use error::ApiError;
pub use identify::{answer_json, parse_query};
pub use ops::Limits;

use crate::store::Store;

/// The contract's default body limit (docs/API.md).
pub(crate) const DEFAULT_BODY_LIMIT: usize = 16 * 1024;
/// How long a request may take before it is answered 503 `timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests served at once; more are answered 503 `overloaded` at once rather than queued.
pub(crate) const DEFAULT_CONCURRENT_REQUESTS: usize = 1024;

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
    /// The matching modes: turns identifiers into the keys the engine matches.
    pub canon: crate::matching::canon::Canon,
    /// The cluster this server is a member of; None for a single node.
    pub member: Option<Arc<crate::raft::Member>>,
    /// `--erasure-purge-within`: how long after an erasure its values may stay in files.
    pub erasure_purge_within: Duration,
}

impl AppState {
    /// Default options: no typo key, the default limits, no admin token (loopback only).
    pub fn new(store: Store) -> AppState {
        AppState {
            store,
            compat_key_typo: false,
            limits: Limits::default(),
            admin_token: None,
            canon: crate::matching::canon::Canon::default(),
            member: None,
            erasure_purge_within: crate::erasure::DEFAULT_PURGE_WITHIN,
        }
    }
}

pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// The router and the OpenAPI document of exactly the routes it serves: both come from the
/// same annotated handlers, so the document cannot miss a route.
pub(crate) fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::{router::OpenApiRouter, routes};
    let admin_guard = axum::middleware::from_fn_with_state(state.clone(), admin::require_admin);
    // The import's body is a file: its own limit, above the one for requests.
    let import = OpenApiRouter::new()
        .routes(routes!(import::import))
        .layer(DefaultBodyLimit::max(import::IMPORT_BODY_LIMIT));
    let admin = OpenApiRouter::new()
        .routes(routes!(contacts::list))
        .routes(routes!(contacts::export))
        .routes(routes!(contacts::contact, contacts::delete))
        .routes(routes!(contacts::identity))
        .routes(routes!(erasures::erase, erasures::ledger))
        .routes(routes!(erasures::one))
        .routes(routes!(
            blocklist::list,
            blocklist::block,
            blocklist::unblock
        ))
        .routes(routes!(backup::backup))
        .routes(routes!(graph::graph))
        .routes(routes!(graph::why))
        .routes(routes!(stats::stats))
        .routes(routes!(members::status))
        .routes(routes!(members::add_member))
        .routes(routes!(members::remove_member))
        .merge(import)
        .route_layer(admin_guard);
    let (routes, mut api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(identify::identify))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::health))
        .routes(routes!(openapi::docs))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(console::page))
        .routes(routes!(console::asset))
        .routes(routes!(console::root))
        .merge(admin)
        .split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let document = Arc::new(
        api.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );
    // `/openapi.json` serves the document built above, so its handler gets it as state.
    let openapi_json = Router::new()
        .route("/openapi.json", get(openapi::openapi_json))
        .with_state(document);
    // Router::layer wraps each route, so the concurrency limit is the global kind (one
    // semaphore shared by every clone) and shedding happens before anything queues. Tower's
    // layers, measured against a layer of our own in alternating perfbench rounds: equal within
    // the noise (BENCHMARKS.md), so the well-kept crate's.
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            ops::limit_error,
        ))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.concurrent_requests,
        ))
        .timeout(state.limits.timeout);
    let templates = api
        .paths
        .paths
        .keys()
        .cloned()
        .chain(["/openapi.json".to_owned()]);
    let observe = observe::ObserveLayer::new(state.store.clone(), templates);
    let router = routes
        .with_state(state.clone())
        .merge(openapi_json)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .layer(limits)
        .layer(observe);
    (router, api)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such path".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
