//! The admin endpoints of the over-merge guards: the blocked values, blocking one (its clusters
//! regroup without it) and unblocking one (its holders' clusters merge again).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::auth::Caller;
use super::contacts::identities_json;
use super::identify::{body_error, json_ok, parse_query, AnswerKey};
use super::{ApiError, AppState};
use crate::engine::{BlockReason, BlockedValue, Email, Engine, Kind, Op, Outcome, Phone};
use crate::store::Origin;

/// The identity of every cluster holding `value` now: where a block or unblock left them.
fn holders_json(
    engine: &Engine,
    kind: Kind,
    value: &str,
    key: AnswerKey,
) -> Vec<serde_json::Value> {
    identities_json(engine, &engine.primaries_holding(kind, value), key)
}

fn entry_json(entry: &BlockedValue) -> serde_json::Value {
    json!({
        "kind": entry.kind.field(),
        "value": entry.value,
        "reason": entry.reason.as_str(),
        "blockedAt": entry.blocked_at,
        "holders": entry.holders,
    })
}

/// The one identifier of a blocklist request: `email` or `phoneNumber`, normalized and validated
/// like a request's.
fn one_value(email: Option<Email>, phone: Option<Phone>) -> Result<(Kind, String), ApiError> {
    match (email, phone) {
        (Some(e), None) => Ok((Kind::Email, e.to_string())),
        (None, Some(p)) => Ok((Kind::Phone, p.to_string())),
        (None, None) => Err(ApiError::MissingIdentifier),
        (Some(_), Some(_)) => Err(ApiError::BadQuery(
            "give one value: email or phoneNumber, not both".into(),
        )),
    }
}

/// `GET /blocklist`: every blocked value, by kind then value.
#[utoipa::path(get, path = "/blocklist", tag = "guards",
    responses((status = 200, description = "The blocked values", body = super::openapi::Blocklist),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn list(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let values = app.store.read(|e| e.blocklist()).await?;
    let values: Vec<_> = values.iter().map(entry_json).collect();
    Ok(json_ok(&json!({ "values": values })))
}

/// `POST /blocklist` with `{"email": ...}` or `{"phoneNumber": ...}`: the value is evidence of
/// nothing from now on; the clusters that held it regroup by what remains. Blocking a value
/// already blocked changes nothing.
#[utoipa::path(post, path = "/blocklist", tag = "guards",
    request_body(content = super::openapi::BlockRequest, description = "One value: email or phoneNumber"),
    responses((status = 200, description = "The blocked entry and the identity of every cluster its holders are in now", body = super::openapi::BlockAnswer),
        (status = 400, description = "Not one valid email or phoneNumber", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody),
        (status = 507, description = "No room left for the value", body = super::openapi::ErrorBody)))]
pub async fn block(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(&r, app.limits.body_bytes))?;
    let query = app.canon.query(parse_query(&body)?);
    let (kind, value) = one_value(query.email().cloned(), query.phone().cloned())?;
    let op = Op::Block {
        kind,
        value,
        reason: BlockReason::Admin,
    };
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let key = app.answer_key;
    let body = app
        .store
        .execute(op, origin, move |engine, done| {
            let Outcome::Blocked { kind, value } = &done.outcome else {
                return None;
            };
            let entry = engine.blocked(*kind, value)?;
            let identities = holders_json(engine, *kind, value, key);
            Some(json!({ "blocked": entry_json(&entry), "identities": identities }))
        })
        .await?;
    Ok(json_ok(&body.ok_or(ApiError::Internal)?))
}

/// `DELETE /blocklist?email=...` or `?phoneNumber=...`: the value is evidence again (and never
/// blocked as generic after); its holders' clusters merge, the oldest primary first.
#[utoipa::path(delete, path = "/blocklist", tag = "guards",
    params(("email" = Option<String>, Query, description = "The email to unblock"),
        ("phoneNumber" = Option<String>, Query, description = "The phone number to unblock")),
    responses((status = 200, description = "The value and the identity its holders now share (none if no live contact holds it)", body = super::openapi::UnblockAnswer),
        (status = 400, description = "Not one valid email or phoneNumber", body = super::openapi::ErrorBody),
        (status = 404, description = "The value is not blocked", body = super::openapi::ErrorBody),
        (status = 409, description = "The merge would pass the cluster cap (`cluster_limit`); nothing changed", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn unblock(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !["email", "phoneNumber"].contains(&k.as_str()))
    {
        return Err(ApiError::BadQuery(format!(
            "unknown parameter {unknown:?}; use email or phoneNumber"
        )));
    }
    let (email, phone) = super::contacts::identifiers_of(&params)?;
    let (email, phone) = (app.canon.email_opt(email), app.canon.phone_opt(phone));
    let (kind, value) = one_value(email, phone)?;
    let op = Op::Unblock { kind, value };
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let key = app.answer_key;
    let body = app
        .store
        .execute(op, origin, move |engine, done| {
            let Outcome::Unblocked { kind, value } = &done.outcome else {
                return None;
            };
            Some(json!({
                "unblocked": { "kind": kind.field(), "value": value },
                "identities": holders_json(engine, *kind, value, key),
            }))
        })
        .await?;
    Ok(json_ok(&body.ok_or(ApiError::Internal)?))
}
