//! The HTTP layer: a thin axum router over the [`Store`]. `router(state)` builds it, so tests can
//! serve it on port 0 or call it in-process.

pub mod auth;
mod backup;
mod blocklist;
mod changes;
mod console;
mod contacts;
mod edit;
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
pub use identify::{answer_json, parse_query, AnswerKey};
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
            changes_heartbeat: Duration::from_secs(15),
        }
    }
}

/// What every handler shares. The router holds it in an `Arc`, so a request's `State` costs one
/// reference count rather than a clone of every field.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Which spelling of `primaryContactId` identities are rendered with.
    pub answer_key: AnswerKey,
    pub limits: Limits,
    /// The tokens and their roles; without any, routes that need a role answer loopback
    /// clients only.
    pub auth: Arc<auth::Auth>,
    /// The matching modes: turns identifiers into the keys the engine matches.
    pub canon: crate::matching::canon::Canon,
    /// The cluster this server is a member of; None for a single node.
    pub member: Option<Arc<crate::raft::Member>>,
    /// Whether every request is logged (`--access-log`); failures are logged either way.
    pub access_log: bool,
    /// `--erasure-purge-within`: how long after an erasure its values may stay in files.
    pub erasure_purge_within: Duration,
}

impl AppState {
    /// Default options: the correct key only, the default limits, no tokens (loopback only).
    pub fn new(store: Store) -> AppState {
        AppState {
            store,
            answer_key: AnswerKey::Correct,
            limits: Limits::default(),
            auth: Arc::default(),
            canon: crate::matching::canon::Canon::default(),
            member: None,
            access_log: false,
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
    let state = Arc::new(state);
    // The import's body is a file: its own limit, above the one for requests.
    let import = OpenApiRouter::new()
        .routes(routes!(import::import))
        .layer(DefaultBodyLimit::max(import::IMPORT_BODY_LIMIT));
    // Every route passes the one check of auth::ROUTES, which says what each needs.
    let authorize = axum::middleware::from_fn_with_state(state.auth.clone(), auth::authorize);
    // The change feed waits (a long poll, a stream) longer than a request may take, and its
    // waiting readers are not requests being served: outside the time and concurrency limits.
    let (feed_routes, feed_api) = OpenApiRouter::new()
        .routes(routes!(changes::changes))
        .route_layer(authorize.clone())
        .split_for_parts();
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
        .routes(routes!(auth::whoami))
        .routes(routes!(contacts::list))
        .routes(routes!(contacts::export))
        .routes(routes!(contacts::contact, contacts::delete, edit::edit))
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
        .route_layer(authorize)
        .split_for_parts();
    api.merge(feed_api);
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    identify::describe_answer_key(&mut api, state.answer_key);
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
    // the noise (BENCHMARKS.md), so the well-kept crate's. Every layer goes on in one
    // `Router::layer`: each call boxes the routes again, and a box costs every request a clone
    // of the boxed service and a boxed future (two allocations).
    let templates = api
        .paths
        .paths
        .keys()
        .cloned()
        .chain(["/openapi.json".to_owned()]);
    let per_route = tower::ServiceBuilder::new()
        .layer(observe::ObserveLayer::new(
            state.store.clone(),
            templates,
            state.access_log,
        ))
        .layer(axum::error_handling::HandleErrorLayer::new(
            ops::limit_error,
        ))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.concurrent_requests,
        ))
        .timeout(state.limits.timeout)
        .layer(DefaultBodyLimit::max(state.limits.body_bytes));
    let router = routes
        .with_state(state.clone())
        .merge(openapi_json)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(per_route)
        .merge(
            feed_routes
                .with_state(state.clone())
                .layer(observe::ObserveLayer::new(
                    state.store.clone(),
                    ["/changes".to_owned()],
                    state.access_log,
                )),
        );
    (router, api)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such path".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
