//! The erasure endpoints (docs/API.md, "Erasure"): erase a contact or everyone holding a value,
//! the ledger, and one erasure's status. Nothing here ever repeats an erased value: the ledger
//! holds ids and times only, and a refusal does not echo the value it was given.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::contacts::identities_json;
use super::identify::{body_error, json_ok};
use super::{ApiError, AppState};
use crate::engine::{ContactId, Email, Erasure, Kind, Op, Outcome, Phone, Target};
use crate::store::Origin;

/// An erasure as the ledger shows it: ids and times, never a value.
pub(crate) fn erasure_json(erasure: &Erasure) -> Value {
    let mut entry = json!({
        "id": erasure.id,
        "contacts": erasure.contacts,
        "status": if erasure.is_pending() { "pending" } else { "done" },
        "requestedAt": erasure.requested_at,
        "purgeBy": erasure.purge_by,
    });
    if let Some(at) = erasure.purged_at {
        entry["purgedAt"] = json!(at);
    }
    entry
}

/// The body of `POST /erasures`: one of the three, as JSON gives it (checked in `target`).
/// serde's derive refuses a field given twice; unknown fields are ignored, as `/identify` does.
#[derive(Deserialize)]
struct ErasureRequest {
    #[serde(rename = "contactId")]
    contact_id: Option<Value>,
    email: Option<Value>,
    #[serde(rename = "phoneNumber")]
    phone_number: Option<Value>,
}

/// What the body names, normalized and keyed like a request's identifiers.
fn target(app: &AppState, body: &[u8]) -> Result<Target, ApiError> {
    let shape = |why: &str| ApiError::InvalidJson(why.to_owned());
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(shape("the body must be a JSON object"));
    }
    let request: ErasureRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let text = |v: Option<Value>, field: &str| -> Result<Option<String>, ApiError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) if field == "phoneNumber" && n.is_u64() => {
                Ok(Some(n.to_string()))
            }
            Some(_) => Err(ApiError::InvalidJson(format!("{field} has the wrong type"))),
        }
    };
    let contact = match request.contact_id {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            (n.as_u64())
                .and_then(|n| ContactId::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| shape("contactId must be a positive integer"))?,
        ),
        Some(_) => return Err(shape("contactId must be a positive integer")),
    };
    let email = (text(request.email, "email")?.as_deref())
        .map(Email::parse)
        .transpose()?
        .flatten();
    let phone = (text(request.phone_number, "phoneNumber")?.as_deref())
        .map(Phone::parse)
        .transpose()?
        .flatten();
    let (email, phone) = (app.canon.email_opt(email), app.canon.phone_opt(phone));
    match (contact, email, phone) {
        (Some(id), None, None) => Ok(Target::Contact(id)),
        (None, Some(e), None) => Ok(Target::Value {
            kind: Kind::Email,
            value: e.as_str().to_owned(),
        }),
        (None, None, Some(p)) => Ok(Target::Value {
            kind: Kind::Phone,
            value: p.as_str().to_owned(),
        }),
        (None, None, None) => Err(shape(
            "give one of contactId, email or phoneNumber (none was given)",
        )),
        _ => Err(shape(
            "give one of contactId, email or phoneNumber, not several",
        )),
    }
}

/// `POST /erasures`: every contact, live or deleted, that is the id or holds the value is
/// erased: its email and phone gone for good, `erasedAt` set, the row kept; a live one leaves
/// its cluster as by a deletion. Erasing what is erased already changes nothing and answers
/// the erasure that did it.
#[utoipa::path(post, path = "/erasures", tag = "erasures",
    request_body(content = super::openapi::ErasureRequest, description = "One of contactId, email or phoneNumber"),
    responses((status = 200, description = "The erasure (pending until its purge, done at once with --erasure-purge-within 0) and the identity of every group the clusters it touched became", body = super::openapi::ErasureAnswer),
        (status = 400, description = "Not a JSON object, none or several of the fields, a wrong type, or an implausible email or phone", body = super::openapi::ErrorBody),
        (status = 404, description = "No such contact, or no contact holds the value (not_found); an erased value is not known either", body = super::openapi::ErrorBody),
        (status = 422, description = "The value is blocked (blocked_identifier): erase by contactId instead", body = super::openapi::ErrorBody),
        (status = 503, description = "The erasure could not be made durable", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn erase(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(&r, app.limits.body_bytes))?;
    let within = app.erasure_purge_within;
    let op = Op::Erase {
        target: target(&app, &body)?,
        purge_within_ms: u64::try_from(within.as_millis()).unwrap_or(u64::MAX),
    };
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let key = app.answer_key;
    let answer = app
        .store
        .execute(op, origin, move |engine, done| {
            let Outcome::Erased { erasure, groups } = &done.outcome else {
                return None;
            };
            let entry = erasure_json(engine.erasure(*erasure)?);
            Some((*erasure, entry, identities_json(engine, groups, key)))
        })
        .await?;
    let (id, mut entry, identities) = answer.ok_or(ApiError::Internal)?;
    if within.is_zero() && entry["status"] == "pending" {
        // Before the answer: the purge runs now; the answer waits for it while the request's
        // time limit allows (then says pending, and the purge still completes).
        let wait = app.limits.timeout.mul_f32(0.8);
        crate::erasure::wait_purged(&app.store, id, wait).await;
        let now = app.store.read(|e| e.erasure(id).map(erasure_json)).await?;
        entry = now.ok_or(ApiError::Internal)?;
    }
    Ok(json_ok(
        &json!({ "erasure": entry, "identities": identities }),
    ))
}

/// `GET /erasures`: the ledger, oldest first: each erasure's id, contacts, status and times.
#[utoipa::path(get, path = "/erasures", tag = "erasures",
    responses((status = 200, description = "Every erasure, oldest first; no values", body = super::openapi::ErasureLedger),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn ledger(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let entries = (app.store)
        .read(|e| e.erasures().iter().map(erasure_json).collect::<Vec<_>>())
        .await?;
    Ok(json_ok(&json!({ "erasures": entries })))
}

/// `GET /erasures/{id}`: one erasure: `pending`, or `done` with `purgedAt`.
#[utoipa::path(get, path = "/erasures/{id}", tag = "erasures",
    params(("id" = u64, Path, description = "Erasure id")),
    responses((status = 200, description = "The erasure", body = super::openapi::ErasureOne),
        (status = 404, description = "No such erasure", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn one(
    State(app): State<Arc<AppState>>,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::NotFound("erasure ids are positive integers".into()))?;
    let entry = app.store.read(|e| e.erasure(id).map(erasure_json)).await?;
    let entry = entry.ok_or_else(|| ApiError::NotFound(format!("no erasure has id {id}")))?;
    Ok(json_ok(&json!({ "erasure": entry })))
}
