//! The shared handle: one engine behind one lock, and the log behind it.
//!
//! One `parking_lot::Mutex` because the work under it is microseconds (hash lookups, a few
//! pushes, encoding a few records) and a single lock gives every request one linear history:
//! fifty identical new requests create exactly one contact. Nothing under the lock waits on I/O;
//! the wait for the log to become durable happens after the lock is released.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::{
    BlockReason, BlockedValue, Change, Contact, ContactId, Engine, EngineError, GuardStats,
    IdentityRef, Kind, Limits, Query, Refusal, Stats, Timestamp,
};
use crate::metrics::Metrics;
use crate::storage::{Report, Storage, StorageError, StorageOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A guard or a limit refused the change; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A read refused because the log has failed: memory may hold what the log lacks.
    #[error("reads are refused after a storage failure")]
    ReadRefused,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

struct State {
    engine: Engine,
    /// The sequence number of the newest change applied: what any reader may have seen.
    applied_seq: u64,
}

struct Inner {
    state: Mutex<State>,
    storage: Storage,
    metrics: Arc<Metrics>,
}

/// Cheap to clone; every method locks internally and never across an `.await`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (locks and recovers) the data directory, with metrics of its own and the default
    /// guards.
    pub fn open(options: StorageOptions) -> Result<(Store, Report), StorageError> {
        Store::open_with(options, Limits::default())
    }

    /// Opens the data directory with the guards `limits`.
    pub fn open_with(
        mut options: StorageOptions,
        limits: Limits,
    ) -> Result<(Store, Report), StorageError> {
        let metrics = Arc::new(Metrics::new());
        options.observer = Some(metrics.clone());
        let (storage, mut engine, report) = Storage::open(options)?;
        engine.set_limits(limits);
        metrics.observe_recovery(report.elapsed);
        let loaded = report.snapshot.as_deref().map(std::fs::metadata);
        if let Some(Ok(at)) = loaded.map(|m| m.and_then(|m| m.modified())) {
            metrics.observe_loaded_snapshot(at);
        }
        let state = State {
            engine,
            applied_seq: report.last_seq,
        };
        let inner = Inner {
            state: Mutex::new(state),
            storage,
            metrics,
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs `/identify` for `query` and renders the answer with `render` while the state is in
    /// hand; returns it once every change it made or saw is durable.
    pub async fn identify<T>(
        &self,
        query: &Query,
        render: impl FnOnce(&IdentityRef<'_>) -> T,
    ) -> Result<T> {
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let plan = state
                .engine
                .plan_identify(query, Timestamp::now())
                .inspect_err(|refusal| self.count_refusal(refusal))?;
            let seq = self.commit(&mut state, &plan.changes)?;
            let identity = state
                .engine
                .identity(plan.answer)
                .expect("a planned answer names a live contact");
            (render(&identity), seq)
        };
        self.inner.storage.wait_durable(seq).await?;
        Ok(answer)
    }

    /// Soft-deletes `id`; returns the deleted row and each resulting group rendered by `render`.
    pub async fn delete<T>(
        &self,
        id: ContactId,
        render: impl Fn(&IdentityRef<'_>) -> T,
    ) -> Result<(Contact, Vec<T>)> {
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let plan = state.engine.plan_delete(id, Timestamp::now())?;
            let seq = self.commit(&mut state, &plan.changes)?;
            let engine = &state.engine;
            let groups = plan
                .groups
                .iter()
                .filter_map(|&p| engine.identity(p))
                .map(|i| render(&i))
                .collect();
            let row = engine.contact(id).expect("the deleted row is kept");
            ((row, groups), seq)
        };
        self.inner.storage.wait_durable(seq).await?;
        Ok(answer)
    }

    /// Blocks `value` (already normalized); returns the blocked entry and the primary of each
    /// cluster its holders are in now, each rendered by `render`. Blocking a blocked value
    /// changes nothing.
    pub async fn block<T>(
        &self,
        kind: Kind,
        value: &str,
        render: impl Fn(&IdentityRef<'_>) -> T,
    ) -> Result<(BlockedValue, Vec<T>)> {
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let changes =
                state
                    .engine
                    .plan_block(kind, value, BlockReason::Admin, Timestamp::now())?;
            let seq = self.commit(&mut state, &changes)?;
            let engine = &state.engine;
            let entry = engine.blocked(kind, value).expect("the value is blocked");
            (
                (entry, Self::render_groups(engine, kind, value, &render)),
                seq,
            )
        };
        self.inner.storage.wait_durable(seq).await?;
        Ok(answer)
    }

    /// Unblocks `value`; returns the cluster its holders merged into (none if it has no live
    /// holder), or None if it was not blocked.
    pub async fn unblock<T>(
        &self,
        kind: Kind,
        value: &str,
        render: impl Fn(&IdentityRef<'_>) -> T,
    ) -> Result<Option<Vec<T>>> {
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let plan = state
                .engine
                .plan_unblock(kind, value, Timestamp::now())
                .inspect_err(|refusal| self.count_refusal(refusal))?;
            let Some(change) = plan else {
                return Ok(None);
            };
            let seq = self.commit(&mut state, std::slice::from_ref(&change))?;
            let groups = Self::render_groups(&state.engine, kind, value, &render);
            (groups, seq)
        };
        self.inner.storage.wait_durable(seq).await?;
        Ok(Some(answer))
    }

    fn render_groups<T>(
        engine: &Engine,
        kind: Kind,
        value: &str,
        render: &impl Fn(&IdentityRef<'_>) -> T,
    ) -> Vec<T> {
        engine
            .primaries_holding(kind, value)
            .into_iter()
            .filter_map(|p| engine.identity(p))
            .map(|i| render(&i))
            .collect()
    }

    /// Changes the engine with `f`, which returns the facts it applied, and logs them as one
    /// group: for an import, whose later facts (relinks) depend on the state its rows make.
    /// `f` must leave the engine as it was when it fails. The facts are appended under the same
    /// lock, so log order is apply order (see `log_applied`).
    pub async fn apply_then_log<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<(Vec<Change>, T), E>,
    ) -> Result<T, E> {
        let (out, seq) = {
            let mut state = self.lock_healthy().map_err(StoreError::from)?;
            let (facts, out) = f(&mut state.engine)?;
            (out, self.log_applied(&mut state, &facts)?)
        };
        self.inner
            .storage
            .wait_durable(seq)
            .await
            .map_err(StoreError::from)?;
        Ok(out)
    }

    /// Reads with `f`; returns once everything `f` could have seen is durable.
    pub async fn read<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T> {
        let (out, seq) = {
            let state = self.lock_healthy().map_err(|_| StoreError::ReadRefused)?;
            (f(&state.engine), state.applied_seq)
        };
        self.inner
            .storage
            .wait_durable(seq)
            .await
            .map_err(|_| StoreError::ReadRefused)?;
        Ok(out)
    }

    /// Reads with `f` without waiting for the log: for checks whose result shows no state.
    pub fn peek<T>(&self, f: impl FnOnce(&Engine) -> T) -> T {
        f(&self.inner.state.lock().engine)
    }

    pub fn stats(&self) -> Stats {
        self.inner.state.lock().engine.stats()
    }

    pub fn guard_stats(&self) -> GuardStats {
        self.inner.state.lock().engine.guard_stats()
    }

    /// The data directory and where its log ends now, for a backup (which reads files only).
    pub fn backup_point(&self) -> (std::path::PathBuf, crate::storage::LogEnd) {
        let storage = &self.inner.storage;
        (storage.dir().to_owned(), storage.log_end())
    }

    /// Why the log failed and what to do, once it has.
    pub fn failure(&self) -> Option<String> {
        self.inner.storage.failure()
    }

    /// Whether the log has failed and the store refuses everything until restart.
    pub fn is_failed(&self) -> bool {
        self.inner.storage.is_failed()
    }

    /// Syncs the log and writes a snapshot; the store refuses changes afterwards.
    pub fn close(&self) -> Result<(), StorageError> {
        let state = self.inner.state.lock();
        self.inner.storage.close(&state.engine)
    }

    /// Counts what a request did, for metrics.
    fn count(&self, changes: &[Change]) {
        let m = &self.inner.metrics;
        for change in changes {
            let counter = match change {
                Change::Created(_) => &m.contacts_created,
                Change::Merged { .. } => &m.merges,
                Change::Deleted { .. } => &m.deletions,
                _ => continue,
            };
            counter.inc();
        }
    }

    fn count_refusal(&self, refusal: &Refusal) {
        let code = match refusal {
            Refusal::ClusterLimit { .. } => "cluster_limit",
            Refusal::Blocked => "blocked_identifier",
            Refusal::Capacity(_) => "capacity_exhausted",
        };
        self.inner.metrics.refused(code);
    }

    fn lock_healthy(&self) -> Result<parking_lot::MutexGuard<'_, State>, StorageError> {
        let state = self.inner.state.lock();
        if self.inner.storage.is_failed() {
            return Err(StorageError::Unavailable);
        }
        Ok(state)
    }

    /// Applies then logs `changes` (the only way memory changes); returns the seq to wait for.
    /// Applying first means a change that does not apply is never logged, so no record can
    /// stop the next start-up. The lock is held throughout, so nobody sees the applied state
    /// before it is queued, and every reader waits for it to be durable.
    fn commit(&self, state: &mut State, changes: &[Change]) -> Result<u64> {
        for change in changes {
            if let Err(error) = state.engine.apply(change) {
                // A plan that does not apply is a bug; memory may now hold part of it, which the
                // log never will: fail closed, as on a failed fsync, rather than run on.
                tracing::error!(%error, "a planned change did not apply; failing closed");
                self.inner
                    .storage
                    .fail_closed(format!("a planned change did not apply: {error}"));
                return Err(StorageError::Unavailable.into());
            }
        }
        self.log_applied(state, changes)
    }

    /// Appends facts already applied to memory, as one group; returns the seq to wait for. If
    /// the log refuses them, memory holds what it lacks: the store fails closed (nothing of it
    /// was shown, since the lock is held until the append).
    fn log_applied(&self, state: &mut State, facts: &[Change]) -> Result<u64> {
        if facts.is_empty() {
            return Ok(state.applied_seq);
        }
        let seq = match self.inner.storage.append(facts) {
            Ok(seq) => seq,
            Err(error) => {
                self.inner.storage.fail_closed(format!(
                    "a change applied in memory was not logged: {error}"
                ));
                return Err(error.into());
            }
        };
        self.count(facts);
        state.applied_seq = seq;
        Ok(seq)
    }
}
