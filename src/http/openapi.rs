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
    components(schemas(IdentifyRequest, Answer, Identity, ContactRow, ErrorBody, ErrorDetail, DeleteAnswer, ContactList, ContactPage, Status, Matching, Graph, Why, StatsAnswer, ImportReport, ChangesPage, ChangeEvent, ChangeContact)),
    tags(
        (name = "identity", description = "Reconcile and read identities"),
        (name = "contacts", description = "Admin: rows, deletion, export"),
        (name = "erasures", description = "Admin: erase a person, the ledger of erasures"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
pub(crate) struct ApiDoc;

/// `POST /identify` body. Unknown fields are ignored; an empty or blank string counts as absent.
#[derive(ToSchema)]
#[schema(as = IdentifyRequest)]
#[allow(dead_code)]
pub(crate) struct IdentifyRequest {
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
    contact: Identity<'static>,
}

/// The answer's one declaration lives with its renderer.
pub use super::identify::ContactJson as Identity;

/// The row's one declaration is the engine's.
pub use crate::engine::Contact as ContactRow;

/// Every error answer.
#[derive(ToSchema, Serialize)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ErrorDetail {
    /// Stable, snake_case: invalid_json, missing_identifier, invalid_email, invalid_phone_number,
    /// payload_too_large, not_found, method_not_allowed, invalid_query, unauthorized, forbidden,
    /// storage_unavailable, timeout, overloaded.
    code: String,
    /// For a person.
    message: String,
}

/// The answer of a deletion: the deleted row and the identity of each group its cluster became.
#[derive(ToSchema, Serialize)]
pub(crate) struct DeleteAnswer {
    deleted: ContactRow,
    identities: Vec<Identity<'static>>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ContactList {
    contacts: Vec<ContactRow>,
}

/// One event of the change feed: ids and times, never an email or a phone.
#[derive(ToSchema, Serialize)]
pub(crate) struct ChangeEvent {
    /// Strictly increasing, never reused; the same on every member and after every restart.
    seq: u64,
    /// When the change was made (RFC 3339, milliseconds).
    at: String,
    /// created, merged, split, deleted, blocked, unblocked, imported, rekeyed (ignore others).
    #[serde(rename = "type")]
    kind: String,
    /// identify, delete, blocklist, import, rekey (and the endpoints or tools added later).
    cause: String,
    /// The name of the token that made the change, or null.
    by: Option<String>,
    /// merged only: the surviving primary.
    #[schema(required = false)]
    into: Option<u32>,
    /// merged only: the primaries it absorbed.
    #[schema(required = false)]
    primaries: Option<Vec<u32>>,
    /// Every contact created, moved or taken away, with its primary after (null once gone).
    contacts: Vec<ChangeContact>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ChangeContact {
    id: u32,
    primary: Option<u32>,
}

/// A page of the change feed; pass `last` as `after` next time.
#[derive(ToSchema, Serialize)]
pub(crate) struct ChangesPage {
    changes: Vec<ChangeEvent>,
    last: u64,
}

/// A page of rows in id order; `next` is the `after` of the following page, null at the end.
#[derive(ToSchema, Serialize)]
pub(crate) struct ContactPage {
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

/// A cluster's evidence. Nodes: `{type: "contact", id: "contact:N", primary, row}` and
/// `{type: "value", id: "email:V" | "phoneNumber:V", kind, value, blocked}`. Edges:
/// `{type: "holds" | "join" | "link", source, target}`; a join also has `madeAt` (null while
/// joins do not record their time).
#[derive(ToSchema, Serialize)]
pub(crate) struct Graph {
    primary: u32,
    nodes: Vec<serde_json::Value>,
    edges: Vec<serde_json::Value>,
}

/// The shortest chain of evidence: each hop `{from, to, evidence}` where evidence is `email`
/// (with `email`), `phoneNumber` (with `phoneNumber`), `join` (with `email`, `phoneNumber`,
/// `madeAt`) or `link`. Only `linked`, `from` and `to` when the contacts are not linked.
#[derive(ToSchema, Serialize)]
pub struct Why {
    linked: bool,
    from: u32,
    to: u32,
    hops: Option<Vec<serde_json::Value>>,
}

/// The overview: `contacts {live, deleted, erased}`, `clusters`, `joins`, `largestClusters [{primary,
/// size}]` (ten at most), `blockedValues {admin, generic}`, `storage {healthy, figures}`.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatsAnswer {
    contacts: serde_json::Value,
    clusters: u64,
    joins: u64,
    largest_clusters: Vec<serde_json::Value>,
    blocked_values: serde_json::Value,
    storage: serde_json::Value,
}

/// What an import did, as the CLI reports it.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    imported: u64,
    deleted: u64,
    /// Rows whose linkedId/linkPrecedence the evidence corrected.
    corrected: u64,
    /// Rows already present relinked because imported rows joined their cluster.
    existing_relinked: u64,
    /// With skipInvalid: each refused row, `{line, message}`.
    skipped: Vec<serde_json::Value>,
    seconds: f64,
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document; public, as it holds no data", content_type = "application/json")))]
pub(crate) async fn openapi_json(
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
pub(crate) struct BlockedEntry {
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
pub(crate) struct BlockRequest {
    email: Option<String>,
    phone_number: Option<String>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct BlockAnswer {
    blocked: BlockedEntry,
    identities: Vec<Identity<'static>>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct UnblockedValue {
    kind: String,
    value: String,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct UnblockAnswer {
    unblocked: UnblockedValue,
    identities: Vec<Identity<'static>>,
}

/// `PATCH /contacts/{id}` body: give `email`, `phoneNumber` or both. A field left out stays as it
/// is; `null` or a blank string removes it (at least one identifier must remain). Normalized,
/// validated and keyed by the matching modes like a request's; unknown fields are ignored.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct EditRequest {
    #[schema(nullable, example = "jon@gmail.com")]
    email: Option<String>,
    /// A string or a non-negative integer.
    #[schema(rename = "phoneNumber", nullable, value_type = Option<String>, example = "123456")]
    phone_number: Option<String>,
}

/// The answer of an edit: the row after it, and the identity of every cluster it touched (the
/// edited contact's first, then each group its former cluster split into, oldest primary
/// first). With `?dryRun=true`, both as the edit would leave them, and `dryRun: true`.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EditAnswer {
    contact: ContactRow,
    identities: Vec<Identity<'static>>,
    /// Only on a dry run: true, and nothing changed.
    #[schema(required = false)]
    dry_run: Option<bool>,
}

/// `POST /erasures` body: exactly one of the three. An email or phone is normalized and keyed
/// like a request's, and names every contact, live or deleted, holding it.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErasureRequest {
    contact_id: Option<u32>,
    email: Option<String>,
    #[schema(value_type = Option<String>)]
    phone_number: Option<String>,
}

/// One erasure of the ledger: ids and times, never a value.
#[derive(ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErasureEntry {
    id: u64,
    /// The contacts erased, ascending.
    contacts: Vec<u32>,
    /// `pending` until no file the service keeps holds the erased values, then `done`.
    status: String,
    requested_at: String,
    /// By when the purge is due (`--erasure-purge-within` after `requestedAt`).
    purge_by: String,
    /// Once done: when the purge completed.
    #[schema(required = false)]
    purged_at: Option<String>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ErasureAnswer {
    erasure: ErasureEntry,
    /// The identity of every group the clusters the erasure touched became.
    identities: Vec<Identity<'static>>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ErasureLedger {
    erasures: Vec<ErasureEntry>,
}

#[derive(ToSchema, Serialize)]
pub(crate) struct ErasureOne {
    erasure: ErasureEntry,
}
