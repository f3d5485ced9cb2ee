//! `POST /identify`: the request as docs/API.md reads it, and the answer as it writes it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::engine::{ContactId, Email, IdentityRef, Op, Outcome, Phone, Query};
use crate::store::Origin;

/// Reconcile: find or create the identity of an email and/or phone number (docs/API.md, rules 1-5).
#[utoipa::path(post, path = "/identify", tag = "identity",
    request_body(content = super::openapi::IdentifyRequest, description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "The whole cluster", body = super::openapi::Answer),
        (status = 400, description = "Not a JSON object, a wrong or repeated field, no identifier, or an implausible email or phone", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over the size limit (default 16 KiB)", body = super::openapi::ErrorBody),
        (status = 409, description = "The request would leave an identity larger than the cluster cap (cluster_limit); nothing changed", body = super::openapi::ErrorBody),
        (status = 422, description = "Every identifier in the request is blocked (blocked_identifier); nothing changed", body = super::openapi::ErrorBody),
        (status = 507, description = "No room left for the change: contact ids or identifier storage (capacity_exhausted); nothing changed", body = super::openapi::ErrorBody),
        (status = 503, description = "The change could not be made durable (storage_unavailable), the time limit passed (timeout), or too many requests at once (overloaded)", body = super::openapi::ErrorBody)))]
pub async fn identify(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(&r, app.limits.body_bytes))?;
    let op = Op::Identify(app.canon.query(parse_query(&body)?));
    let origin = Origin::of(&op);
    let key = app.answer_key;
    let answer = app
        .store
        .execute(op, origin, move |engine, done| match done.outcome {
            Outcome::Identity(id) => engine.identity(id).map(|i| answer_json(&i, key)),
            _ => None,
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        answer.ok_or(ApiError::Internal)?,
    ))
}

/// Reads a body as docs/API.md says: JSON whatever the Content-Type, normalized and validated.
pub fn parse_query(body: &[u8]) -> Result<Query, ApiError> {
    let request: IdentifyRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let email = request
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()?
        .flatten();
    let phone = request
        .phone
        .as_deref()
        .map(Phone::parse)
        .transpose()?
        .flatten();
    Query::new(email, phone).ok_or(ApiError::MissingIdentifier)
}

pub(crate) fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit)
    } else {
        ApiError::UnreadableBody
    }
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A 200 with `value` as its JSON body.
pub(crate) fn json_ok(value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("plain data serializes to JSON");
    json_response(StatusCode::OK, body)
}

/// Which spelling of the primary's key the answers use (docs/API.md, "The answer key"): the
/// correct `primaryContactId`, the task statement's `primaryContatctId`, or both side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AnswerKey {
    /// Only `primaryContatctId`, as the task statement spells it.
    Typo,
    /// Both keys, with the same value (what `--compat-key-typo` means).
    Both,
    /// Only `primaryContactId`.
    #[default]
    Correct,
}

impl AnswerKey {
    /// The key names sent, in the order they are written.
    fn keys(self) -> &'static [&'static str] {
        match self {
            AnswerKey::Typo => &[TYPO_KEY],
            AnswerKey::Both => &[CORRECT_KEY, TYPO_KEY],
            AnswerKey::Correct => &[CORRECT_KEY],
        }
    }

    fn sends_correct(self) -> bool {
        self != AnswerKey::Typo
    }

    fn sends_typo(self) -> bool {
        self != AnswerKey::Correct
    }
}

/// The option's value, as written on the command line.
impl fmt::Display for AnswerKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

const CORRECT_KEY: &str = "primaryContactId";
const TYPO_KEY: &str = "primaryContatctId";

/// `{"contact": {...}}`, written straight to bytes while the engine's strings are borrowed,
/// into a buffer sized for it up front (escapes aside) so it is allocated once.
///
/// Written by hand rather than through serde: on a cluster of a thousand members serde_json's
/// byte-by-byte escaping was 42% of a request. A string is copied whole unless it holds a byte
/// JSON must escape (rare: a quote, a backslash, a control character), which serde_json writes.
/// The output is byte for byte what serializing `ContactJson` gives (a test holds it to that).
pub fn answer_json(identity: &IdentityRef<'_>, key: AnswerKey) -> Vec<u8> {
    let texts: usize = (identity.emails.iter())
        .chain(&identity.phone_numbers)
        .map(|t| t.len() + 3)
        .sum();
    let capacity = 128 + texts + 11 * identity.secondary_contact_ids.len();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"{\"contact\":{");
    for name in key.keys() {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_id(&mut out, identity.primary_contact_id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"emails\":");
    push_strings(&mut out, &identity.emails);
    out.extend_from_slice(b",\"phoneNumbers\":");
    push_strings(&mut out, &identity.phone_numbers);
    out.extend_from_slice(b",\"secondaryContactIds\":[");
    for (i, &id) in identity.secondary_contact_ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_id(&mut out, id);
    }
    out.extend_from_slice(b"]}}");
    out
}

fn push_id(out: &mut Vec<u8>, id: ContactId) {
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
}

fn push_strings(out: &mut Vec<u8>, texts: &[&str]) {
    out.push(b'[');
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // No early exit, so the check runs over whole vectors of bytes.
        let plain = text.bytes().fold(true, |plain, b| {
            plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
        });
        if plain {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        } else {
            serde_json::to_writer(&mut *out, text).expect("a string serializes to memory");
        }
    }
    out.push(b']');
}

/// The inner `{...}` of an answer, as a JSON value (for answers that hold several).
pub(crate) fn contact_json(identity: &IdentityRef<'_>, key: AnswerKey) -> serde_json::Value {
    serde_json::to_value(ContactJson::new(identity, key)).expect("plain data serializes")
}

/// The answer as serde would write it: the reference `answer_json` is tested against.
#[cfg(test)]
#[derive(Serialize)]
struct AnswerJson<'a> {
    contact: ContactJson<'a>,
}

impl<'a> ContactJson<'a> {
    fn new(identity: &'a IdentityRef<'a>, key: AnswerKey) -> ContactJson<'a> {
        let id = identity.primary_contact_id;
        ContactJson {
            primary_contact_id: key.sends_correct().then_some(id),
            typo: key.sends_typo().then_some(id),
            emails: &identity.emails,
            phone_numbers: &identity.phone_numbers,
            secondary_contact_ids: &identity.secondary_contact_ids,
        }
    }
}

/// One cluster, as every answer spells it: its primary, its distinct identifiers primary-first,
/// its secondaries oldest-first. The one declaration of the answer: serde writes it (the
/// reference `answer_json` is tested against) and the OpenAPI document describes it, with the
/// keys the server's `--answer-key` sends.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Identity)]
pub struct ContactJson<'a> {
    /// The primary's id (not sent with `--answer-key typo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    primary_contact_id: Option<ContactId>,
    /// The same value under the task statement's spelling (sent with `--answer-key typo` or
    /// `both`).
    #[serde(rename = "primaryContatctId", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    typo: Option<ContactId>,
    #[schema(value_type = Vec<String>)]
    emails: &'a [&'a str],
    #[schema(value_type = Vec<String>)]
    phone_numbers: &'a [&'a str],
    #[schema(value_type = Vec<u32>)]
    secondary_contact_ids: &'a [ContactId],
}

/// Makes the OpenAPI document's `Identity` list exactly the keys this server sends, both required.
pub fn describe_answer_key(api: &mut utoipa::openapi::OpenApi, key: AnswerKey) {
    use utoipa::openapi::{RefOr, Schema};
    let schema = api
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("Identity"));
    let Some(RefOr::T(Schema::Object(identity))) = schema else {
        unreachable!("Identity is an object schema of the document");
    };
    for name in [CORRECT_KEY, TYPO_KEY] {
        if !key.keys().contains(&name) {
            identity.properties.remove(name);
        }
    }
    identity
        .required
        .retain(|r| ![CORRECT_KEY, TYPO_KEY].contains(&r.as_str()));
    identity
        .required
        .splice(0..0, key.keys().iter().map(|k| k.to_string()));
}

/// The request body. Only an object is accepted (a derived struct would also take an array);
/// a field given twice is an error; unknown fields are ignored; strings borrow from the body.
#[derive(Debug, Default)]
struct IdentifyRequest<'a> {
    email: Option<Cow<'a, str>>,
    phone: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for IdentifyRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = IdentifyRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with email and/or phoneNumber")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = IdentifyRequest::default();
        let (mut seen_email, mut seen_phone) = (false, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Email if seen_email => return Err(de::Error::duplicate_field("email")),
                Key::Phone if seen_phone => return Err(de::Error::duplicate_field("phoneNumber")),
                Key::Email => {
                    seen_email = true;
                    request.email = map.next_value::<Option<Text>>()?.map(|t| t.0);
                }
                Key::Phone => {
                    seen_phone = true;
                    request.phone = map.next_value::<Option<PhoneValue>>()?.map(|t| t.0);
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(request)
    }
}

pub(super) enum Key {
    Email,
    Phone,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "email" => Key::Email,
                    "phoneNumber" => Key::Phone,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// `phoneNumber`: a string, or a non-negative integer meaning its decimal digits. The number is
/// read as written (a raw value), so integers beyond 64 bits keep every digit.
pub(super) struct PhoneValue<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for PhoneValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?.get();
        if raw.starts_with('"') {
            let text: Text<'de> = serde_json::from_str(raw).map_err(de::Error::custom)?;
            return Ok(PhoneValue(text.0));
        }
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(PhoneValue(Cow::Borrowed(raw)));
        }
        let shown: String = raw.chars().take(40).collect();
        Err(de::Error::custom(format_args!(
            "invalid type: {shown}, expected a string or a non-negative integer"
        )))
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_written_exactly_as_serde_json_writes_them() {
        let awkward = [
            "",
            "plain@example.com",
            "quote\"d@x.io",
            "back\\slash",
            "tab\there",
            "nul\u{0}and\u{1f}unit",
            "del\u{7f}",
            "zoë@例え.jp",
            "slash/ok",
        ];
        for n in 0..awkward.len() {
            let emails: Vec<&str> = awkward.iter().copied().skip(n).collect();
            let phones: Vec<&str> = awkward.iter().copied().take(n).collect();
            let identity = IdentityRef {
                primary_contact_id: 7 + n as ContactId,
                emails,
                phone_numbers: phones,
                secondary_contact_ids: (0..n as ContactId).map(|i| i * 1_000_003).collect(),
            };
            for key in [AnswerKey::Typo, AnswerKey::Both, AnswerKey::Correct] {
                let reference = serde_json::to_vec(&AnswerJson {
                    contact: ContactJson::new(&identity, key),
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(answer_json(&identity, key)).unwrap(),
                    String::from_utf8(reference).unwrap(),
                    "case {n}, key {key}"
                );
            }
        }
    }

    fn parse(body: &str) -> Result<Query, ApiError> {
        parse_query(body.as_bytes())
    }

    #[test]
    fn numeric_phones_mean_their_digits() {
        let q = parse(r#"{"phoneNumber": 123456}"#).unwrap();
        assert_eq!(q.phone().unwrap().as_str(), "123456");
    }

    #[test]
    fn numeric_phones_beyond_64_bits_keep_every_digit() {
        let q = parse(r#"{"phoneNumber": 12345678901234567890123}"#).unwrap();
        assert_eq!(q.phone().unwrap().as_str(), "12345678901234567890123");
    }

    #[test]
    fn nulls_and_blanks_are_absent() {
        assert!(matches!(
            parse(r#"{"email": null, "phoneNumber": "  "}"#),
            Err(ApiError::MissingIdentifier)
        ));
        assert!(matches!(parse("{}"), Err(ApiError::MissingIdentifier)));
    }

    #[test]
    fn the_wrong_shape_is_invalid_json() {
        for body in [
            "[]",
            r#"["a@b.c", "1"]"#,
            "\"a@b.c\"",
            "nope",
            r#"{"email": 5}"#,
            r#"{"phoneNumber": -1}"#,
            r#"{"phoneNumber": 1.5}"#,
            r#"{"phoneNumber": true}"#,
            r#"{"email": "a@b.c", "email": "c@d.e"}"#,
            r#"{"email": "a@b.c"} trailing"#,
        ] {
            assert!(
                matches!(parse(body), Err(ApiError::InvalidJson(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_escaped_keys_are_handled() {
        let q = parse(r#"{"e\u006dail": "A@B.C", "extra": {"nested": [1, 2]}}"#).unwrap();
        assert_eq!(q.email().unwrap().as_str(), "a@b.c");
    }
}
