//! `GET /cluster` and the membership endpoints of a cluster member (admin endpoints). A single
//! node answers them 409 `not_in_cluster`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;

use super::identify::json_ok;
use super::{ApiError, AppState};
use crate::raft::Member;

const SINGLE: &str =
    "this server is a single node, not a cluster member (start it with --node-id and --peers)";

fn member(app: &AppState) -> Result<&Arc<Member>, ApiError> {
    app.member.as_ref().ok_or(ApiError::NotInCluster(SINGLE))
}

/// This member's view of the cluster: its role, the leader, the term, the members, and how far
/// its log is committed and applied. Served by the member asked, from what it knows.
#[utoipa::path(get, path = "/cluster", tag = "cluster",
    responses((status = 200, description = "This member's view of the cluster", body = crate::raft::Status),
        (status = 409, description = "not_in_cluster: a single node", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn status(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(json_ok(&member(&app)?.status()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewMember {
    /// The new member's node id (started with this --node-id).
    id: u64,
    /// Its HTTP address, HOST:PORT, as the other members reach it.
    addr: String,
}

/// Adds a member: a learner first, which catches up from the log (or a snapshot), then a
/// voter. Answers once it votes. Start the new member first, with its own --node-id and
/// --peers naming the members and itself.
#[utoipa::path(post, path = "/cluster/members", tag = "cluster",
    request_body = NewMember,
    responses((status = 200, description = "The member is a voter now; the cluster as the leader sees it", body = crate::raft::Status),
        (status = 400, description = "invalid_json", body = super::openapi::ErrorBody),
        (status = 409, description = "not_in_cluster, or the change was refused (with why)", body = super::openapi::ErrorBody),
        (status = 503, description = "no_leader", body = super::openapi::ErrorBody)))]
pub(crate) async fn add_member(
    State(app): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let cluster = member(&app)?;
    let new: NewMember =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if new.id == 0 {
        return Err(ApiError::InvalidJson("id must be a positive number".into()));
    }
    let status = cluster
        .clone()
        .add_member(new.id, new.addr)
        .await
        .map_err(ApiError::MembershipRefused)?;
    Ok(json_ok(&status))
}

/// Removes a member (voter or learner); stop its process afterwards.
#[utoipa::path(delete, path = "/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "The member's node id")),
    responses((status = 200, description = "The cluster as the leader sees it after the change", body = crate::raft::Status),
        (status = 409, description = "not_in_cluster, or the change was refused (with why)", body = super::openapi::ErrorBody),
        (status = 503, description = "no_leader", body = super::openapi::ErrorBody)))]
pub(crate) async fn remove_member(
    State(app): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let status = member(&app)?
        .remove_member(id)
        .await
        .map_err(ApiError::MembershipRefused)?;
    Ok(json_ok(&status))
}
