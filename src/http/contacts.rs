//! The admin endpoints over rows: look one up, its identity, lookups by identifier, pages in id
//! order, the export stream, and deletion.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde_json::json;

use super::auth::Caller;
use super::identify::{answer_json, contact_json, json_ok, json_response, AnswerKey};
use super::{ApiError, AppState};
use crate::engine::{Contact, ContactId, Email, Engine, Op, Outcome, Phone};
use crate::store::Origin;
use crate::tools::export::{Format, PAGE};

/// The `email` and `phoneNumber` of a query string, normalized and validated like a request's.
pub(super) fn identifiers_of(
    params: &HashMap<String, String>,
) -> Result<(Option<Email>, Option<Phone>), ApiError> {
    let email = params.get("email").map(|e| Email::parse(e)).transpose()?;
    let phone = (params.get("phoneNumber"))
        .map(|p| Phone::parse(p))
        .transpose()?;
    Ok((email.flatten(), phone.flatten()))
}

/// The identity of each cluster of `primaries` (those still live), as answers list them.
pub(super) fn identities_json(
    engine: &Engine,
    primaries: &[ContactId],
    key: AnswerKey,
) -> Vec<serde_json::Value> {
    (primaries.iter())
        .filter_map(|&p| engine.identity(p))
        .map(|i| contact_json(&i, key))
        .collect()
}

/// The most rows one page may hold.
pub(crate) const MAX_LIMIT: usize = 1000;

pub(super) fn contact_id(
    id: Result<Path<ContactId>, PathRejection>,
) -> Result<ContactId, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::NotFound("contact ids are positive integers".into()))
}

/// One row of the Contact table, deleted or not.
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts",
    params(("id" = u32, Path, description = "Contact id")),
    responses((status = 200, description = "The row", body = super::openapi::ContactRow),
        (status = 404, description = "No such contact", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn contact(
    State(app): State<Arc<AppState>>,
    id: Result<Path<ContactId>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = contact_id(id)?;
    let row = app.store.read(|e| e.contact(id)).await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no contact has id {id}")))?;
    Ok(json_ok(&row))
}

/// The `/identify` answer for this contact's cluster, changing nothing.
#[utoipa::path(get, path = "/contacts/{id}/identity", tag = "contacts",
    params(("id" = u32, Path, description = "Contact id")),
    responses((status = 200, description = "The cluster", body = super::openapi::Answer),
        (status = 404, description = "No such contact, or it is deleted", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn identity(
    State(app): State<Arc<AppState>>,
    id: Result<Path<ContactId>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = contact_id(id)?;
    let key = app.answer_key;
    let answer = app
        .store
        .read(|e| e.identity(id).map(|i| answer_json(&i, key)))
        .await?;
    let answer =
        answer.ok_or_else(|| ApiError::NotFound(format!("no live contact has id {id}")))?;
    Ok(json_response(StatusCode::OK, answer))
}

/// Soft-delete a contact; its former cluster regroups by the evidence that remains.
#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts",
    params(("id" = u32, Path, description = "Contact id")),
    responses((status = 200, description = "The deleted row and the identity of each resulting group", body = super::openapi::DeleteAnswer),
        (status = 404, description = "No such live contact (also for a second delete)", body = super::openapi::ErrorBody),
        (status = 503, description = "The deletion could not be made durable", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<ContactId>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = contact_id(id)?;
    let op = Op::Delete(id);
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let key = app.answer_key;
    let body = app
        .store
        .execute(op, origin, move |engine, done| {
            let Outcome::Deleted { id, groups } = &done.outcome else {
                return None;
            };
            let identities = identities_json(engine, groups, key);
            Some(json!({ "deleted": engine.contact(*id)?, "identities": identities }))
        })
        .await?;
    Ok(json_ok(&body.ok_or(ApiError::Internal)?))
}

/// `GET /contacts?email=&phoneNumber=` (live rows holding either) or `?after=&limit=` (pages).
#[utoipa::path(get, path = "/contacts", tag = "contacts",
    params(("email" = Option<String>, Query, description = "Live rows holding this email (normalized)"),
        ("phoneNumber" = Option<String>, Query, description = "Live rows holding this phone (normalized)"),
        ("after" = Option<u32>, Query, description = "Page mode: rows with ids above this (default 0)"),
        ("limit" = Option<u32>, Query, description = "Page mode: at most this many rows, 1 to 1000 (default 100)")),
    responses((status = 200, description = "With email/phoneNumber: {contacts}; otherwise a page {contacts, next}", body = super::openapi::ContactPage),
        (status = 400, description = "Unknown parameter, both modes, a bad limit or identifier", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let allowed = ["email", "phoneNumber", "after", "limit"];
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadQuery(format!(
            "unknown parameter {unknown:?}; use email/phoneNumber or after/limit"
        )));
    }
    let lookup = params.contains_key("email") || params.contains_key("phoneNumber");
    if lookup && (params.contains_key("after") || params.contains_key("limit")) {
        return Err(ApiError::BadQuery(
            "use email/phoneNumber or after/limit, not both".into(),
        ));
    }
    let body = if lookup {
        let (email, phone) = identifiers_of(&params)?;
        if email.is_none() && phone.is_none() {
            return Err(ApiError::MissingIdentifier);
        }
        let (email, phone) = (app.canon.email_opt(email), app.canon.phone_opt(phone));
        let rows = app
            .store
            .read(|e| e.contacts_holding(email.as_ref(), phone.as_ref()))
            .await?;
        json!({ "contacts": rows })
    } else {
        let after = number(&params, "after", 0)?;
        let limit = number(&params, "limit", 100)?;
        if !(1..=MAX_LIMIT as u64).contains(&limit) {
            return Err(ApiError::BadQuery(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )));
        }
        let after = ContactId::try_from(after).unwrap_or(ContactId::MAX);
        let (rows, next): (Vec<Contact>, _) = app
            .store
            .read(|e| e.contacts_page(after, limit as usize))
            .await?;
        json!({ "contacts": rows, "next": next })
    };
    Ok(json_ok(&body))
}

fn number(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, ApiError> {
    params.get(name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| ApiError::BadQuery(format!("{name} must be a non-negative integer")))
    })
}

#[derive(serde::Deserialize)]
pub(crate) struct ExportParams {
    #[serde(default)]
    format: Format,
}

/// `GET /contacts/export?format=csv|ndjson`: every row in id order, streamed a page at a time
/// so the engine's lock is held only to render one page.
#[utoipa::path(get, path = "/contacts/export", tag = "contacts",
    params(("format" = Option<String>, Query, description = "csv (default) or ndjson")),
    responses((status = 200, description = "Every row, deleted ones too, with the Contact table's column names", content_type = "text/csv"),
        (status = 400, description = "Unknown format", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn export(
    State(app): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(ExportParams { format }) =
        params.map_err(|_| ApiError::BadQuery("format must be csv or ndjson".into()))?;
    let first = app.store.read(|e| e.contacts_page(0, PAGE)).await?;
    let header = Bytes::from(format.header());
    let pages = futures_util::stream::unfold(Some(first), move |page| {
        let store = app.store.clone();
        async move {
            let (rows, next) = page?;
            let bytes = Bytes::from(format.render(&rows));
            let following = match next {
                Some(after) => match store.read(|e| e.contacts_page(after, PAGE)).await {
                    Ok(page) => Some(page),
                    Err(error) => {
                        return Some((Err(std::io::Error::other(error.to_string())), None))
                    }
                },
                None => None,
            };
            Some((Ok(bytes), following))
        }
    });
    let body = futures_util::stream::once(async move { Ok(header) }).chain(pages);
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}
