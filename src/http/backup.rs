//! `GET /backup`: a consistent backup of the running server, streamed. The files are staged
//! (hard links) and read by a blocking thread; the engine's lock is never taken.

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::tools::backup::{self, Staged};

/// Chunks in flight between the reading thread and the connection.
const CHANNEL_CHUNKS: usize = 4;
const CHUNK_BYTES: usize = 256 << 10;

/// Every change acknowledged before the request arrived, as a backup file for `restore`.
#[utoipa::path(get, path = "/backup", tag = "operations",
    responses((status = 200, description = "The backup file: the newest snapshot and the log after it, each part with its CRC-32; restore it with `identity-engine restore --data-dir DIR FILE`", content_type = "application/octet-stream"),
        (status = 401, description = "Token missing or wrong", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's role is too small, or no token is configured and the client is not loopback", body = super::openapi::ErrorBody),
        (status = 409, description = "not_in_cluster: a cluster member keeps no single-node files to back up", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage failed closed", body = super::openapi::ErrorBody)))]
pub async fn backup(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if app.store.is_failed() {
        return Err(ApiError::StorageUnavailable);
    }
    let (dir, _) = app.store.backup_point()?;
    let store = app.store.clone();
    let staged = tokio::task::spawn_blocking(move || {
        backup::stage_retrying(&dir, || store.backup_point().expect("a single node").1)
    })
    .await
    .map_err(|_| ApiError::Internal)?
    .map_err(|error| {
        tracing::error!(%error, "backup could not be staged");
        ApiError::Internal
    })?;
    let len = staged.file_len();
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || send(staged, tx))
        .map_err(|_| ApiError::Internal)?;
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"identity-engine.backup\"".to_owned(),
        ),
    ];
    Ok((headers, body).into_response())
}

/// The reading thread: writes the backup into the channel; a client that goes away ends it.
fn send(staged: Staged, tx: mpsc::Sender<io::Result<Bytes>>) {
    let started = std::time::Instant::now();
    let mut out = std::io::BufWriter::with_capacity(CHUNK_BYTES, Sender(tx.clone()));
    let result = backup::write(&staged.parts, &mut out);
    drop(out);
    match result {
        Ok(()) => tracing::info!(
            parts = staged.parts.len(),
            bytes = staged.file_len(),
            ms = started.elapsed().as_millis() as u64,
            "backup sent"
        ),
        Err(error) => {
            tracing::warn!(%error, "backup not completed");
            let _ = tx.blocking_send(Err(io::Error::other(error.to_string())));
        }
    }
}

struct Sender(mpsc::Sender<io::Result<Bytes>>);

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
