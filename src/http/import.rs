//! `POST /contacts/import`: the CLI import over HTTP, so the console can upload a file while the
//! server runs. The same reading, checks, report and all-or-nothing rule (`crate::tools::import`).
//!
//! The body is read and every row checked with no lock held. Then, under the engine's lock, the
//! ids are checked again (a request may have taken one meanwhile: the import is then refused
//! whole, 409), the rows applied and their facts appended as one log group, as the CLI does:
//! after a crash the import is there entirely or not at all, and no request ever sees part of
//! it. New contacts made by requests take ids above the highest id at that moment, so once the
//! rows are in, later requests continue after the imported ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;

use super::auth::Caller;
use super::identify::json_ok;
use super::{ApiError, AppState};
use crate::engine::{Op, Refusal as EngineRefusal, Rows};
use crate::store::{Origin, StoreError};
use crate::tools::export::Format;
use crate::tools::import::{read_rows, report, ImportError, RowError};

/// The largest import body: about 600,000 rows of export CSV.
pub(crate) const IMPORT_BODY_LIMIT: usize = 64 << 20;

/// Why an online import was refused, beside the usual API errors.
pub enum Refusal {
    Api(ApiError),
    /// Rows that fail the checks; nothing was imported.
    Invalid(Vec<RowError>),
    /// An id taken by a request while the file was being checked.
    Taken(RowError),
    /// A cluster the import would leave over the cap; nothing was imported.
    ClusterLimit(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        match e {
            StoreError::Refused(EngineRefusal::IdTaken { line, id }) => Refusal::Taken(RowError {
                line,
                message: format!("id {id} already exists"),
            }),
            StoreError::Refused(refusal @ EngineRefusal::ImportOverCap { .. }) => {
                Refusal::ClusterLimit(refusal.to_string())
            }
            e => Refusal::Api(e.into()),
        }
    }
}

impl From<ImportError> for Refusal {
    fn from(e: ImportError) -> Refusal {
        match e {
            ImportError::Invalid(rows) => Refusal::Invalid(rows),
            ImportError::Read { source, .. } => Refusal::Invalid(vec![RowError {
                line: 0,
                message: source.to_string(),
            }]),
            ImportError::Storage(e) => Refusal::Api(StoreError::Storage(e).into()),
            ImportError::Refused(refusal) => StoreError::Refused(refusal).into(),
            ImportError::Matching(e) => Refusal::Api(ApiError::BadQuery(e.to_string())),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message, rows) = match self {
            Refusal::Api(e) => return e.into_response(),
            Refusal::Invalid(rows) => (
                StatusCode::BAD_REQUEST,
                "invalid_rows",
                format!("{} invalid row(s); nothing was imported", rows.len()),
                rows,
            ),
            Refusal::ClusterLimit(message) => (
                StatusCode::CONFLICT,
                "cluster_limit",
                format!("{message}; nothing was imported"),
                Vec::new(),
            ),
            Refusal::Taken(row) => (
                StatusCode::CONFLICT,
                "id_taken",
                format!("line {}: {}; nothing was imported", row.line, row.message),
                vec![row],
            ),
        };
        let rows: Vec<_> = rows
            .iter()
            .take(1000)
            .map(|r| json!({ "line": r.line, "message": r.message }))
            .collect();
        let body = json!({ "error": { "code": code, "message": message, "rows": rows } });
        (status, axum::Json(body)).into_response()
    }
}

/// Import rows (CSV or NDJSON with the Contact table's columns, as export writes them).
#[utoipa::path(post, path = "/contacts/import", tag = "contacts",
    params(("format" = Option<String>, Query, description = "csv or ndjson; by default NDJSON if the body starts with `{`, else CSV"),
        ("skipInvalid" = Option<bool>, Query, description = "Import the valid rows and list the others (default false: any invalid row refuses the whole file)")),
    request_body(content = String, description = "The file, up to 64 MiB", content_type = "text/csv"),
    responses((status = 200, description = "The import report", body = super::openapi::ImportReport),
        (status = 400, description = "invalid_rows (with `rows`: line and message of each), or invalid_query; nothing imported", body = super::openapi::ErrorBody),
        (status = 409, description = "id_taken: a request took one of the file's ids while it was checked; or cluster_limit: the import would leave an identity larger than the cap; nothing imported", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over 64 MiB", body = super::openapi::ErrorBody),
        (status = 503, description = "The import could not be made durable", body = super::openapi::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody)))]
pub async fn import(
    State(app): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Query(params): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let started = Instant::now();
    let body =
        body.map_err(|r| Refusal::Api(super::identify::body_error(&r, IMPORT_BODY_LIMIT)))?;
    let (format, skip_invalid) = options(&params).map_err(Refusal::Api)?;
    // Checking is most of the work: no lock, and off the request threads.
    // Ids above the highest one are free without asking the engine (the usual case).
    let store = app.store.clone();
    let canon = app.canon.clone();
    let max_id = store.peek(|e| e.max_id());
    let (rows, errors) = tokio::task::spawn_blocking(move || {
        let exists = |id| id <= max_id && store.peek(|e| e.has_contact(id));
        read_rows(&body, format, exists, &canon)
            .map(|(rows, errors)| (Rows::new(rows, Vec::new()), errors))
    })
    .await
    .map_err(|_| Refusal::Api(ApiError::Internal))??;
    if !errors.is_empty() && !skip_invalid {
        return Err(Refusal::Invalid(errors));
    }
    let given = rows.given_links();
    // Tables grown in a hold of their own: growing one rehashes it, a pause that ordinary
    // traffic causes too at that size, and which the import's own hold then does not add to.
    let reserved = app.store.reserve(rows.len());
    let committing = Instant::now();
    let op = Op::Import(rows);
    let origin = Origin::of(&op).by(Caller::by(caller.as_deref()));
    let done = app
        .store
        .execute(op, origin, |_, done| done.clone())
        .await?;
    let durable = committing.elapsed();
    let report = report(&given, errors, &done, started.elapsed());
    tracing::info!(
        rows = report.imported,
        reserve_ms = reserved.as_millis() as u64,
        until_durable_ms = durable.as_millis() as u64,
        ms = report.elapsed.as_millis() as u64,
        "online import: the lock held to grow the tables, then to plan, log and apply, then the wait for the log"
    );
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|r| json!({ "line": r.line, "message": r.message }))
        .collect();
    Ok(json_ok(&json!({
        "imported": report.imported,
        "deleted": report.deleted,
        "corrected": report.corrected,
        "existingRelinked": report.existing_relinked,
        "skipped": skipped,
        "blockedAsGeneric": report
            .generic
            .iter()
            .map(|(kind, value)| json!({ "kind": kind.field(), "value": value }))
            .collect::<Vec<_>>(),
        "seconds": report.elapsed.as_secs_f64(),
    })))
}

fn options(params: &HashMap<String, String>) -> Result<(Option<Format>, bool), ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| *k != "format" && *k != "skipInvalid")
    {
        return Err(ApiError::BadQuery(format!(
            "unknown parameter {unknown:?}; use format and skipInvalid"
        )));
    }
    let format = match params.get("format").map(String::as_str) {
        None => None,
        Some("csv") => Some(Format::Csv),
        Some("ndjson") => Some(Format::Ndjson),
        Some(_) => return Err(ApiError::BadQuery("format must be csv or ndjson".into())),
    };
    let skip = match params.get("skipInvalid").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadQuery(
                "skipInvalid must be true or false".into(),
            ))
        }
    };
    Ok((format, skip))
}
