//! `GET /stats`: the console's overview as JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::identify::json_ok;
use super::{ApiError, AppState};
use crate::engine::evidence::ClusterSize;

/// How many clusters the overview lists.
const LARGEST: usize = 10;
/// Slots scanned per hold of the engine's lock while finding the largest clusters, so that the
/// scan never holds up other requests for long (about a millisecond a step at 10^6 contacts).
const SCAN_STEP: usize = 1 << 16;

/// Live and deleted contacts, clusters, the largest clusters, blocked values, log and snapshots.
///
/// The largest clusters come from a walk of the whole forest in steps, each under the lock
/// for a moment; a cluster that changes during the walk may be listed as it was.
#[utoipa::path(get, path = "/stats", tag = "operations",
    responses((status = 200, description = "The figures of the console's overview", body = super::openapi::StatsAnswer),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn stats(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let (stats, blocked, slots, deleted) = app
        .store
        .read(|e| (e.stats(), e.blocked_counts(), e.slots(), e.deleted_rows()))
        .await?;
    let mut top: Vec<ClusterSize> = Vec::with_capacity(LARGEST + 1);
    for start in (0..slots).step_by(SCAN_STEP) {
        top = app
            .store
            .read(move |e| {
                e.largest_clusters(start..start + SCAN_STEP, LARGEST, &mut top);
                top
            })
            .await?;
    }
    let body = json!({
        "contacts": {
            "live": stats.contacts - stats.deleted,
            "deleted": deleted,
            "erased": stats.erased,
        },
        "clusters": stats.clusters,
        "joins": stats.joins,
        "largestClusters": top,
        "blockedValues": blocked,
        "storage": {
            "healthy": !app.store.is_failed(),
            "figures": app.store.metrics().storage_figures(),
        },
    });
    Ok(json_ok(&body))
}
