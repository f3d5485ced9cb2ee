//! Why contacts are one identity: `GET /contacts/{id}/graph` (the cluster's evidence as nodes
//! and edges) and `GET /contacts/{a}/why/{b}` (the shortest chain of evidence between two).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::identify::json_ok;
use super::{ApiError, AppState};
use crate::engine::evidence::EvidenceError;
use crate::engine::ContactId;

impl From<EvidenceError> for ApiError {
    fn from(e: EvidenceError) -> ApiError {
        match e {
            EvidenceError::NoLiveContact(id) => {
                ApiError::NotFound(format!("no live contact has id {id}"))
            }
        }
    }
}

/// The evidence of the contact's cluster: every live member with its row, every email and
/// phone they hold (flagged when blocked), and the edges between them.
#[utoipa::path(get, path = "/contacts/{id}/graph", tag = "contacts",
    params(("id" = u32, Path, description = "Contact id")),
    responses((status = 200, description = "Nodes (contacts and values) and edges (holds, join, link); the cost is the cluster's size", body = super::openapi::Graph),
        (status = 404, description = "No such contact, or it is deleted", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn graph(
    State(app): State<Arc<AppState>>,
    id: Result<Path<ContactId>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::NotFound("contact ids are positive integers".into()))?;
    let graph = app.store.read(|e| e.cluster_graph(id)).await??;
    Ok(json_ok(&graph))
}

/// The shortest chain of evidence from contact `a` to contact `b`, each hop naming what ties
/// the two contacts; `{"linked": false}` when they are in different clusters.
#[utoipa::path(get, path = "/contacts/{a}/why/{b}", tag = "contacts",
    params(("a" = u32, Path, description = "From contact id"),
        ("b" = u32, Path, description = "To contact id")),
    responses((status = 200, description = "`{linked: true, from, to, hops}` or `{linked: false}`; the cost is the cluster's size", body = super::openapi::Why),
        (status = 404, description = "Either contact unknown or deleted", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn why(
    State(app): State<Arc<AppState>>,
    ids: Result<Path<(ContactId, ContactId)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((a, b)) =
        ids.map_err(|_| ApiError::NotFound("contact ids are positive integers".into()))?;
    let chain = app.store.read(|e| e.evidence_chain(a, b)).await??;
    let body = match chain {
        Some(hops) => json!({ "linked": true, "from": a, "to": b, "hops": hops }),
        None => json!({ "linked": false, "from": a, "to": b }),
    };
    Ok(json_ok(&body))
}
