//! The OpenAPI 3.1 document, generated from the annotated handlers (utoipa), and `/docs`, a page
//! that renders it for a person with no network access: no CDN, no downloaded assets.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// The document's frame; the paths come from the router's annotated handlers.
#[derive(OpenApi)]
#[openapi(
    // `/openapi.json` is routed apart (its state is the document itself), so it is listed here.
    paths(openapi_json),
    info(
        title = "identity-engine",
        description = "Links contacts that share an email or a phone number into one identity whose primary is the oldest contact."
    ),
    components(schemas(IdentifyRequest, Answer, Identity, ContactRow, ErrorBody, ErrorDetail, DeleteAnswer, ContactList, ContactPage, Status, Matching)),
    tags(
        (name = "identity", description = "Reconcile and read identities"),
        (name = "contacts", description = "Admin: rows, deletion, export"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
pub struct ApiDoc;

/// `POST /identify` body. Unknown fields are ignored; an empty or blank string counts as absent.
#[derive(ToSchema)]
#[schema(as = IdentifyRequest)]
#[allow(dead_code)]
pub struct IdentifyRequest {
    /// Trimmed and lowercased; one `@`, non-empty parts, no spaces or control characters, at most 254 bytes.
    /// Matched as that (`--email-match as-given`, the default) or, with `--email-match provider`,
    /// by its key under the rules providers document for their own domains (Gmail ignores dots and
    /// a `+tag`, `googlemail.com` is `gmail.com`; Outlook.com and Fastmail ignore a `+tag`): the key
    /// is what is stored and answered. `GET /readyz` says which mode is on.
    #[schema(nullable, example = "lorraine@hillvalley.edu")]
    email: Option<String>,
    /// A string or a non-negative integer; trimmed; digits, spaces and `+ - ( ) .`, at most 32 bytes.
    /// Matched as that (`--phone-match as-given`, the default), by a leading `+` and its digits
    /// (`digits`), or in E.164 by libphonenumber's rules with `--default-region` for numbers without
    /// `+` (`e164`; a number it does not take as valid is matched as `digits`): the key is what is
    /// stored and answered. `GET /readyz` says which mode is on.
    #[schema(rename = "phoneNumber", nullable, value_type = Option<String>, example = "123456")]
    phone_number: Option<String>,
}

/// The answer of `/identify`: the whole cluster.
#[derive(ToSchema, Serialize)]
pub struct Answer {
    contact: Identity,
}

/// One cluster: its primary, its distinct identifiers primary-first, its secondaries oldest-first.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    primary_contact_id: u32,
    /// Only with `--compat-key-typo`: the same value under the task statement's spelling.
    #[serde(rename = "primaryContatctId")]
    #[schema(required = false)]
    primary_contatct_id: Option<u32>,
    emails: Vec<String>,
    phone_numbers: Vec<String>,
    secondary_contact_ids: Vec<u32>,
}

/// A row of the Contact table.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactRow {
    id: u32,
    phone_number: Option<String>,
    email: Option<String>,
    linked_id: Option<u32>,
    /// `primary` or `secondary`.
    link_precedence: String,
    /// RFC 3339 UTC with milliseconds.
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
}

/// Every error answer.
#[derive(ToSchema, Serialize)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema, Serialize)]
pub struct ErrorDetail {
    /// Stable, snake_case: invalid_json, missing_identifier, invalid_email, invalid_phone_number,
    /// payload_too_large, not_found, method_not_allowed, invalid_query, unauthorized, forbidden,
    /// storage_unavailable, timeout, overloaded.
    code: String,
    /// For a person.
    message: String,
}

/// The answer of a deletion: the deleted row and the identity of each group its cluster became.
#[derive(ToSchema, Serialize)]
pub struct DeleteAnswer {
    deleted: ContactRow,
    identities: Vec<Identity>,
}

#[derive(ToSchema, Serialize)]
pub struct ContactList {
    contacts: Vec<ContactRow>,
}

/// A page of rows in id order; `next` is the `after` of the following page, null at the end.
#[derive(ToSchema, Serialize)]
pub struct ContactPage {
    contacts: Vec<ContactRow>,
    next: Option<u32>,
}

#[derive(ToSchema, Serialize)]
pub struct Status {
    /// `ok` or `ready`.
    status: String,
    /// `/readyz` only: the matching modes the server (and its data directory) use.
    #[schema(required = false)]
    matching: Option<Matching>,
}

/// How identifiers are matched (`--phone-match`, `--email-match`, `--default-region`).
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Matching {
    /// `as-given`, `digits` or `e164`.
    phone: String,
    /// `as-given` or `provider`.
    email: String,
    /// With `e164`: the ISO 3166 region of numbers written without `+`.
    default_region: Option<String>,
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document; public, as it holds no data", content_type = "application/json")))]
pub async fn openapi_json(
    axum::extract::State(doc): axum::extract::State<std::sync::Arc<String>>,
) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
        .into_response()
}

/// `GET /docs`: the document rendered for a person.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "An HTML page rendering /openapi.json; public, as it holds no data", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// One blocked value.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedEntry {
    /// `email` or `phoneNumber`.
    kind: String,
    value: String,
    /// `admin` (blocked by an admin or a blocklist file) or `generic` (held by more live
    /// contacts than the generic threshold).
    reason: String,
    blocked_at: String,
    /// Live contacts holding it.
    holders: u64,
}

#[derive(ToSchema, Serialize)]
pub struct Blocklist {
    values: Vec<BlockedEntry>,
}

/// One value to block: give `email` or `phoneNumber`.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockRequest {
    email: Option<String>,
    phone_number: Option<String>,
}

#[derive(ToSchema, Serialize)]
pub struct BlockAnswer {
    blocked: BlockedEntry,
    identities: Vec<Identity>,
}

#[derive(ToSchema, Serialize)]
pub struct UnblockedValue {
    kind: String,
    value: String,
}

#[derive(ToSchema, Serialize)]
pub struct UnblockAnswer {
    unblocked: UnblockedValue,
    identities: Vec<Identity>,
}

/// `GET /`: a person who opens the server's address is sent to the API description.
pub async fn home() -> Response {
    (
        axum::http::StatusCode::SEE_OTHER,
        [(header::LOCATION, "/docs")],
    )
        .into_response()
}
