//! `ApiError`: every error answer, as docs/API.md's JSON body with a stable code. 5xx answers say
//! what happened in words for a person and never leak internals.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::{IdentifierError, Refusal};
use crate::storage::StorageError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not a valid JSON object of the expected shape: {0}")]
    InvalidJson(String),
    #[error("at least one of email and phoneNumber must be given")]
    MissingIdentifier,
    #[error("{0}")]
    InvalidIdentifier(#[from] IdentifierError),
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("could not read the request body")]
    UnreadableBody,
    #[error("{0}")]
    NotFound(String),
    #[error("this path does not accept that method")]
    MethodNotAllowed,
    #[error("{0}")]
    BadQuery(String),
    #[error("this endpoint needs the header Authorization: Bearer <token>, with a token this server knows")]
    Unauthorized,
    #[error("this endpoint answers loopback clients only unless the server is started with tokens (--admin-token or --tokens)")]
    Forbidden,
    #[error(
        "this endpoint needs a token of role {needed} (or above); the token {name} has role {role}"
    )]
    RoleNeeded {
        needed: super::auth::Role,
        name: std::sync::Arc<str>,
        role: super::auth::Role,
    },
    #[error("storage has failed, so this request was not carried out and nothing changed; the server refuses requests that read or change contacts until it is restarted (GET /readyz says why)")]
    StorageUnavailable,
    #[error("storage has failed, so reads are refused too (memory may hold changes the log lacks); restart the server (GET /readyz says why)")]
    ReadRefused,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the request took longer than the server's time limit; its outcome is unknown, and repeating it is safe")]
    Timeout,
    #[error("the server is at its limit of concurrent requests; try again shortly")]
    Overloaded,
    #[error("{0}; nothing was changed")]
    ClusterLimit(Refusal),
    #[error("every identifier in the request is blocked (not evidence of anything); nothing was changed")]
    BlockedIdentifier,
    #[error("{0}; nothing was changed")]
    CapacityExhausted(Refusal),
    #[error("this cluster member cannot reach a leader that can commit now ({0}); nothing can be relied on to have changed, and repeating the request is safe")]
    NoLeader(String),
    #[error("{0}")]
    NotInCluster(&'static str),
    #[error("the membership change was refused: {0}")]
    MembershipRefused(String),
    #[error("{0}; nothing was changed")]
    IdTaken(String),
    /// An edit that would leave its contact with no identifier.
    #[error("{0}; nothing was changed")]
    NoIdentifierLeft(Refusal),
    /// An edit's new value is blocked (or would turn generic by it), or an erasure names a
    /// blocked value.
    #[error("{0}; nothing was changed")]
    BlockedValue(Refusal),
    #[error("an internal error occurred")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::MissingIdentifier
            | ApiError::InvalidIdentifier(_)
            | ApiError::UnreadableBody
            | ApiError::BadQuery(_)
            | ApiError::NoIdentifierLeft(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::RoleNeeded { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::StorageUnavailable | ApiError::ReadRefused | ApiError::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ClusterLimit(_) => StatusCode::CONFLICT,
            ApiError::BlockedIdentifier | ApiError::BlockedValue(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::CapacityExhausted(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::NoLeader(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotInCluster(_) | ApiError::MembershipRefused(_) | ApiError::IdTaken(_) => {
                StatusCode::CONFLICT
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::MissingIdentifier | ApiError::NoIdentifierLeft(_) => "missing_identifier",
            ApiError::InvalidIdentifier(IdentifierError::Email) => "invalid_email",
            ApiError::InvalidIdentifier(IdentifierError::Phone) => "invalid_phone_number",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden | ApiError::RoleNeeded { .. } => "forbidden",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::StorageUnavailable | ApiError::ReadRefused | ApiError::NotReady(_) => {
                "storage_unavailable"
            }
            ApiError::Timeout => "timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::ClusterLimit(_) => "cluster_limit",
            ApiError::BlockedIdentifier | ApiError::BlockedValue(_) => "blocked_identifier",
            ApiError::CapacityExhausted(_) => "capacity_exhausted",
            ApiError::NoLeader(_) => "no_leader",
            ApiError::NotInCluster(_) => "not_in_cluster",
            ApiError::MembershipRefused(_) => "membership_refused",
            ApiError::IdTaken(_) => "id_taken",
            ApiError::Internal => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            let challenge = header::HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(self, ApiError::NoLeader(_)) {
            // An election takes about one election timeout.
            let retry = header::HeaderValue::from_static("1");
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Storage(StorageError::Unavailable) => ApiError::StorageUnavailable,
            StoreError::ReadRefused => ApiError::ReadRefused,
            StoreError::Storage(error) => {
                tracing::error!(%error, "storage error");
                ApiError::StorageUnavailable
            }
            StoreError::Refused(refusal) => refusal.into(),
            StoreError::NoLeader(why) => ApiError::NoLeader(why),
            StoreError::NotInCluster(why) => ApiError::NotInCluster(why),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::ClusterLimit { .. } | Refusal::ImportOverCap { .. } => {
                ApiError::ClusterLimit(refusal)
            }
            Refusal::Blocked => ApiError::BlockedIdentifier,
            Refusal::ErasureOfBlocked { .. } => ApiError::BlockedValue(refusal),
            Refusal::Capacity(_) => ApiError::CapacityExhausted(refusal),
            Refusal::UnknownContact(_)
            | Refusal::DeletedContact(_)
            | Refusal::NotBlocked { .. }
            | Refusal::NothingToErase(_) => ApiError::NotFound(refusal.to_string()),
            Refusal::IdTaken { .. } => ApiError::IdTaken(refusal.to_string()),
            Refusal::NoIdentifierLeft(_) => ApiError::NoIdentifierLeft(refusal),
            Refusal::BlockedValue { .. } => ApiError::BlockedValue(refusal),
        }
    }
}
