//! `PATCH /contacts/{id}` (docs/API.md, "Editing a contact"): a live contact's identifiers
//! replaced, or with `?dryRun=true` what that would leave, planned and not applied.

use std::sync::Arc;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::contacts::{contact_id, identities_json};
use super::identify::{body_error, contact_json, json_ok, AnswerKey, Key, PhoneValue, Text};
use super::{ApiError, AppState};
use crate::engine::{
    ContactId, EditPreview, Email, IdentityRef, Op, Outcome, Patch, Phone, Timestamp,
};
use crate::store::Origin;

/// Replace a contact's email, phone number or both; its cluster regroups as if it had always
/// held them.
#[utoipa::path(patch, path = "/contacts/{id}", tag = "contacts",
    params(("id" = u32, Path, description = "Contact id"),
        ("dryRun" = Option<bool>, Query, description = "true: plan the edit and answer what it would leave, changing nothing")),
    request_body(content = super::openapi::EditRequest, description = "A field left out stays; null or a blank string removes it. Read as JSON whatever the Content-Type"),
    responses((status = 200, description = "The row after the edit and the identity of every cluster it touched (with dryRun: as the edit would leave them, nothing changed)", body = super::openapi::EditAnswer),
        (status = 400, description = "Not a JSON object, a wrong or repeated field, an implausible email or phone, a bad query (invalid_query), or no identifier would remain (missing_identifier)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such live contact (unknown or deleted)", body = super::openapi::ErrorBody),
        (status = 409, description = "The edit would leave an identity larger than the cluster cap (cluster_limit); nothing changed", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over the size limit", body = super::openapi::ErrorBody),
        (status = 422, description = "A new value is blocked, or one more holder would make it generic (blocked_identifier); nothing changed", body = super::openapi::ErrorBody),
        (status = 503, description = "The edit could not be made durable (storage_unavailable), or no leader (no_leader)", body = super::openapi::ErrorBody),
        (status = 507, description = "No room left for a new value (capacity_exhausted); nothing changed", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn edit(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<ContactId>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = contact_id(id)?;
    let dry_run = dry_run(params)?;
    let body = body.map_err(|r| body_error(&r, app.limits.body_bytes))?;
    let request = parse_edit(&body)?;
    let op = Op::Edit {
        id,
        email: keyed(request.email, |e| app.canon.email(e)),
        phone: keyed(request.phone, |p| app.canon.phone(p)),
    };
    let key = app.answer_key;
    if dry_run {
        // Planned only, never applied: the same plan (and refusals) as the edit itself.
        let preview = app
            .store
            .read(move |engine| {
                let plan = engine.plan(&op, Timestamp::now())?;
                Ok::<_, ApiError>(engine.preview_edit(&plan).map(|p| preview_json(&p, key)))
            })
            .await??;
        return Ok(json_ok(&preview.ok_or(ApiError::Internal)?));
    }
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let answer = app
        .store
        .execute(op, origin, move |engine, done| {
            let Outcome::Edited { id, groups } = &done.outcome else {
                return None;
            };
            let primaries: Vec<ContactId> =
                groups.iter().filter_map(|g| g.first()).copied().collect();
            let identities = identities_json(engine, &primaries, key);
            Some(json!({ "contact": engine.contact(*id)?, "identities": identities }))
        })
        .await?;
    Ok(json_ok(&answer.ok_or(ApiError::Internal)?))
}

/// `dryRun=true|false` (default false); any other parameter is refused.
fn dry_run(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<bool, ApiError> {
    let Query(params) = params.map_err(|_| ApiError::BadQuery("unreadable query string".into()))?;
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "dryRun") {
        return Err(ApiError::BadQuery(format!(
            "unknown parameter {unknown:?}; only dryRun"
        )));
    }
    match params.get("dryRun").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::BadQuery("dryRun must be true or false".into())),
    }
}

fn keyed<T>(patch: Patch<T>, key: impl FnOnce(T) -> T) -> Patch<T> {
    match patch {
        Patch::Set(value) => Patch::Set(key(value)),
        other => other,
    }
}

fn preview_json(preview: &EditPreview, key: AnswerKey) -> serde_json::Value {
    let identities: Vec<serde_json::Value> = (preview.identities.iter())
        .map(|i| {
            let borrowed = IdentityRef {
                primary_contact_id: i.primary_contact_id,
                emails: i.emails.iter().map(String::as_str).collect(),
                phone_numbers: i.phone_numbers.iter().map(String::as_str).collect(),
                secondary_contact_ids: i.secondary_contact_ids.clone(),
            };
            contact_json(&borrowed, key)
        })
        .collect();
    json!({ "contact": preview.contact, "identities": identities, "dryRun": true })
}

/// An edit's fields, normalized and validated like a request's.
#[derive(Debug, PartialEq, Eq)]
struct Edit {
    email: Patch<Email>,
    phone: Patch<Phone>,
}

/// Reads an edit's body: a JSON object; a field left out is kept, `null` or a blank string
/// removes it; a field given twice is an error; unknown fields are ignored.
fn parse_edit(body: &[u8]) -> Result<Edit, ApiError> {
    let request: EditRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let email = match request.email {
        Given::Absent => Patch::Keep,
        Given::Value(text) => Email::parse(&text)?.map_or(Patch::Remove, Patch::Set),
        Given::Null => Patch::Remove,
    };
    let phone = match request.phone {
        Given::Absent => Patch::Keep,
        Given::Value(text) => Phone::parse(&text)?.map_or(Patch::Remove, Patch::Set),
        Given::Null => Patch::Remove,
    };
    Ok(Edit { email, phone })
}

/// A field of the body: not there, `null`, or a value.
#[derive(Debug, Default)]
enum Given<'a> {
    #[default]
    Absent,
    Null,
    Value(Cow<'a, str>),
}

impl<'a> Given<'a> {
    fn of(value: Option<Cow<'a, str>>) -> Given<'a> {
        value.map_or(Given::Null, Given::Value)
    }
}

#[derive(Debug, Default)]
struct EditRequest<'a> {
    email: Given<'a>,
    phone: Given<'a>,
}

impl<'de> Deserialize<'de> for EditRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EditVisitor)
    }
}

struct EditVisitor;

impl<'de> Visitor<'de> for EditVisitor {
    type Value = EditRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with email and/or phoneNumber")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = EditRequest::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Email if !matches!(request.email, Given::Absent) => {
                    return Err(de::Error::duplicate_field("email"))
                }
                Key::Phone if !matches!(request.phone, Given::Absent) => {
                    return Err(de::Error::duplicate_field("phoneNumber"))
                }
                Key::Email => {
                    request.email = Given::of(map.next_value::<Option<Text>>()?.map(|t| t.0));
                }
                Key::Phone => {
                    let value = map.next_value::<Option<PhoneValue>>()?;
                    request.phone = Given::of(value.map(|t| t.0));
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Edit, ApiError> {
        parse_edit(body.as_bytes())
    }

    #[test]
    fn a_field_left_out_stays_and_null_or_blank_removes_it() {
        let edit = parse(r#"{"email": " A@B.io "}"#).unwrap();
        assert_eq!(
            edit.email,
            Patch::Set(Email::parse("a@b.io").unwrap().unwrap())
        );
        assert_eq!(edit.phone, Patch::Keep);
        let edit = parse(r#"{"email": null, "phoneNumber": "  "}"#).unwrap();
        assert_eq!((edit.email, edit.phone), (Patch::Remove, Patch::Remove));
        let edit = parse(r#"{"phoneNumber": 123, "other": [1]}"#).unwrap();
        assert_eq!(
            edit.phone,
            Patch::Set(Phone::parse("123").unwrap().unwrap())
        );
        assert_eq!(parse("{}").unwrap().email, Patch::Keep);
    }

    #[test]
    fn the_wrong_shape_is_invalid_json_and_a_bad_value_invalid() {
        for body in [
            "[]",
            "nope",
            r#"{"email": 5}"#,
            r#"{"phoneNumber": true}"#,
            r#"{"email": null, "email": "a@b.c"}"#,
            r#"{"phoneNumber": "1", "phoneNumber": null}"#,
        ] {
            assert!(
                matches!(parse(body), Err(ApiError::InvalidJson(_))),
                "{body}"
            );
        }
        assert!(matches!(
            parse(r#"{"email": "no-at-sign"}"#),
            Err(ApiError::InvalidIdentifier(_))
        ));
        assert!(matches!(
            parse(r#"{"phoneNumber": "abc"}"#),
            Err(ApiError::InvalidIdentifier(_))
        ));
    }
}
