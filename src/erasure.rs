//! When erased values leave the files (docs/API.md, "Erasure"): an erasure is applied at once
//! (its values are unreachable from the answer on) and purged from every file within
//! `--erasure-purge-within`. On a single node this module schedules the purges: one timer at
//! the earliest pending erasure's due time, so erasures that come close together share a purge;
//! a purge seals the log, snapshots without the erased values, removes what is older (see
//! `storage::purge`), and then records itself through the store (`Op::Purge`), which marks the
//! erasures done. A crash before that record leaves them pending, so the next start-up purges
//! again at once: a crash delays a purge, never cancels it. (A Raft member purges its own files:
//! see `raft::purge`.)

use std::time::Duration;

use crate::engine::{Cause, Engine, Op, Timestamp};
use crate::storage::PurgeReport;
use crate::store::{Origin, Store, StoreError};

/// The default of `--erasure-purge-within`.
pub const DEFAULT_PURGE_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// A purge starts this share of the window before it is due (at most `MAX_LEAD`), so that it
/// is done by then: at a million contacts it takes about a second, at ten million some more.
const LEAD_SHARE: u32 = 10;
const MAX_LEAD: Duration = Duration::from_secs(600);

/// How long a failed purge waits before it is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// When the next purge should start, if any erasure is pending: its due time less a lead.
fn next_start(engine: &Engine) -> Option<i64> {
    engine
        .pending_erasures()
        .map(|e| {
            let window = Duration::from_millis((e.purge_by.0 - e.requested_at.0).max(0) as u64);
            let lead = (window / LEAD_SHARE).min(MAX_LEAD);
            e.purge_by.0 - lead.as_millis() as i64
        })
        .min()
}

/// Runs a single node's purges for as long as the store is open: at start-up those already due
/// (a crash put them off), then each at its time.
pub async fn schedule(store: Store) {
    let mut changes = store.ledger_changes();
    loop {
        changes.mark_unchanged();
        let Some(start) = store.peek(next_start) else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = Duration::from_millis((start - Timestamp::now().0).max(0) as u64);
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
            continue;
        }
        match purge_now(&store).await {
            Ok(_) => {}
            Err(StoreError::Storage(crate::storage::StorageError::Unavailable)) => return,
            Err(error) => {
                tracing::warn!(%error, "purging erased values failed; trying again shortly");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Purges the files now and records it: every erasure pending before the purge began is done.
/// Returns the purge's report and the erasures it completed.
pub async fn purge_now(store: &Store) -> Result<(PurgeReport, Vec<u64>), StoreError> {
    let pending: Vec<u64> = store.peek(|e| e.pending_erasures().map(|e| e.id).collect());
    let files = store.clone();
    let report = tokio::task::spawn_blocking(move || files.purge_files())
        .await
        .map_err(|e| StoreError::Storage(std::io::Error::other(e.to_string()).into()))??;
    let op = Op::Purge { erasures: pending };
    let done = store
        .execute(op, Origin::tool(Cause::Erasure), |_, done| {
            match &done.outcome {
                crate::engine::Outcome::Purged { erasures } => erasures.clone(),
                _ => Vec::new(),
            }
        })
        .await?;
    tracing::info!(
        erasures = done.len(),
        bytes = report.bytes,
        ms = report.elapsed.as_millis() as u64,
        "erasures purged"
    );
    Ok((report, done))
}

/// [`purge_now`] for a tool on a stopped directory (the store opened offline): purges and
/// records it before the tool closes the store.
pub fn purge_offline(store: &Store) -> Result<(PurgeReport, Vec<u64>), StoreError> {
    let pending: Vec<u64> = store.peek(|e| e.pending_erasures().map(|e| e.id).collect());
    let report = store.purge_files()?;
    let op = Op::Purge { erasures: pending };
    let origin = Origin::tool(Cause::Erasure);
    let done = store.execute_offline(&op, &origin, Timestamp::now(), |_, done| {
        match &done.outcome {
            crate::engine::Outcome::Purged { erasures } => erasures.clone(),
            _ => Vec::new(),
        }
    })?;
    Ok((report, done))
}

/// Waits until erasure `id` is done or `within` passes; whether it is done.
pub async fn wait_purged(store: &Store, id: u64, within: Duration) -> bool {
    let done = |store: &Store| store.peek(|e| e.erasure(id).is_some_and(|e| !e.is_pending()));
    let mut changes = store.ledger_changes();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        changes.mark_unchanged();
        if done(store) {
            return true;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return done(store),
        }
    }
}
