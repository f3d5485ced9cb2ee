//! The shared handle: one engine behind one lock, and the log behind it.
//!
//! One `parking_lot::Mutex` because the work under it is microseconds (hash lookups, a few
//! pushes, encoding a few records) and a single lock gives every request one linear history:
//! fifty identical new requests create exactly one contact. Nothing under the lock waits on I/O;
//! the wait for the log to become durable happens after the lock is released.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::{
    BlockReason, BlockedValue, Change, Contact, ContactId, Engine, EngineError, GuardStats,
    IdentityRef, Kind, Limits, Query, Refusal, Stats, Timestamp,
};
use crate::storage::{Report, Storage, StorageError, StorageOptions};
use crate::telemetry::metrics::Metrics;
use crate::tools::import::{Applied, CheckedFile, ImportError};

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
    /// A cluster member could not have the change committed: no leader is known, or it
    /// changed while the change was in flight. Nothing is known to have changed; repeating
    /// the request is safe.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// What a cluster member cannot do (a backup of files it does not keep, say).
    #[error("{0}")]
    NotInCluster(&'static str),
    /// An online import refused whole (an id taken meanwhile, or past the cluster cap).
    #[error(transparent)]
    Import(ImportError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

struct State {
    engine: Engine,
    /// The sequence number of the newest change applied: what any reader may have seen.
    applied_seq: u64,
}

struct Inner {
    state: Mutex<State>,
    durability: Durability,
    metrics: Arc<Metrics>,
}

/// How a change becomes durable.
enum Durability {
    /// A single node: its own write-ahead log, appended under the lock.
    Log(Storage),
    /// A cluster member: the Raft log made each command durable on a majority before it is
    /// applied here, so the store only applies.
    Replicated(Replicated),
}

/// What a cluster's log carries: one request, with the time the member that took it chose.
/// Every member plans and applies it when it is committed, against the same state, so they
/// all reach the same state; the member it came from also renders the answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Command {
    pub op: Op,
    /// Milliseconds since the epoch; the engine never goes back from its own clock.
    pub at: i64,
    /// The guards' settings of the member that proposed it: planning depends on them, so every
    /// member plans with these, whatever its own options say.
    pub limits: Limits,
    /// The node that proposed it, and its number there: whom to answer.
    pub origin: u64,
    pub nonce: u64,
}

/// A change request, as the log carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    Identify(Query),
    Delete(ContactId),
    Block(Kind, String),
    Unblock(Kind, String),
    /// An import's rows, already read, checked and keyed by the member that took it.
    Import(CheckedFile),
}

/// What an op did, for the answer.
enum Done {
    Answer(ContactId),
    Groups(Vec<ContactId>),
    Blocked,
    Unblocked(bool),
    Imported(Applied, CheckedFile),
}

/// Proposes a command to the cluster; completes once it is committed and applied here.
pub trait Propose: Send + Sync + 'static {
    fn propose(&self, command: Command) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;

    /// Completes once this member has confirmed that it leads and has applied everything
    /// committed before the call (a read index): its state then answers a linearizable read.
    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

type Respond = Box<dyn FnOnce(&Engine, Result<Done>) + Send>;

struct Replicated {
    node_id: u64,
    /// This member's guards, which the commands it proposes carry.
    limits: Limits,
    proposer: OnceLock<Arc<dyn Propose>>,
    /// Answers still to render, by nonce: filled when this member proposes, taken when the
    /// command applies here.
    pending: Mutex<HashMap<u64, Respond>>,
    next_nonce: AtomicU64,
    failed: Mutex<Option<String>>,
}

/// Forgets a pending answer whose request gave up (an error, or the client went away).
struct Forget<'a> {
    pending: &'a Mutex<HashMap<u64, Respond>>,
    nonce: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.nonce);
    }
}

impl Replicated {
    async fn read_barrier(&self) -> Result<()> {
        let proposer = self
            .proposer
            .get()
            .ok_or_else(|| StoreError::NoLeader("the cluster is starting".into()))?;
        proposer.read_barrier().await
    }

    async fn execute<T: Send + 'static>(
        &self,
        op: Op,
        show: impl FnOnce(&Engine, Done) -> T + Send + 'static,
    ) -> Result<T> {
        let proposer = self
            .proposer
            .get()
            .ok_or_else(|| StoreError::NoLeader("the cluster is starting".into()))?;
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let respond: Respond = Box::new(move |engine, done| {
            let _ = tx.send(done.map(|done| show(engine, done)));
        });
        self.pending.lock().insert(nonce, respond);
        let _forget = Forget {
            pending: &self.pending,
            nonce,
        };
        let command = Command {
            op,
            at: Timestamp::now().0,
            limits: self.limits,
            origin: self.node_id,
            nonce,
        };
        proposer.propose(command).await?;
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::NoLeader(
                "the change was committed but applied under another leader; its outcome is unknown and repeating it is safe".into(),
            ))
        })
    }
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
            durability: Durability::Log(storage),
            metrics,
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// A cluster member's store, over `engine` (restored from the member's latest snapshot,
    /// or empty); changes reach it through [`Store::apply_command`].
    pub fn replicated(mut engine: Engine, limits: Limits, node_id: u64) -> Store {
        engine.set_limits(limits);
        let replicated = Replicated {
            node_id,
            limits,
            proposer: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(0),
            failed: Mutex::new(None),
        };
        let inner = Inner {
            state: Mutex::new(State {
                engine,
                applied_seq: 0,
            }),
            durability: Durability::Replicated(replicated),
            metrics: Arc::new(Metrics::for_raft()),
        };
        Store {
            inner: Arc::new(inner),
        }
    }

    /// Where a cluster member sends its changes; set once, when its Raft node is built.
    pub fn set_proposer(&self, proposer: Arc<dyn Propose>) {
        if let Durability::Replicated(r) = &self.inner.durability {
            let _ = r.proposer.set(proposer);
        }
    }

    fn replicated_part(&self) -> Option<&Replicated> {
        match &self.inner.durability {
            Durability::Replicated(r) => Some(r),
            Durability::Log(_) => None,
        }
    }

    fn storage(&self) -> Option<&Storage> {
        match &self.inner.durability {
            Durability::Log(storage) => Some(storage),
            Durability::Replicated(_) => None,
        }
    }

    /// Applies a committed command (a cluster member's state machine): plans it against the
    /// state every member has at this point of the log, applies it, and renders the answer if
    /// this member proposed it. A refusal is an answer, the same on every member; an error
    /// means the store failed closed.
    pub fn apply_command(&self, command: &Command) -> Result<(), String> {
        let Some(replicated) = self.replicated_part() else {
            return Err("a single node applies no commands".into());
        };
        let mut state = self.inner.state.lock();
        if let Some(why) = replicated.failed.lock().clone() {
            return Err(why);
        }
        let at = Timestamp(command.at);
        state.engine.set_limits(command.limits);
        let done = match &command.op {
            Op::Identify(query) => self
                .run_identify(&mut state, query, at)
                .map(|(id, _)| Done::Answer(id)),
            Op::Delete(id) => self
                .run_delete(&mut state, *id, at)
                .map(|(groups, _)| Done::Groups(groups)),
            Op::Block(kind, value) => self
                .run_block(&mut state, *kind, value, at)
                .map(|_| Done::Blocked),
            Op::Unblock(kind, value) => self
                .run_unblock(&mut state, *kind, value, at)
                .map(|seq| Done::Unblocked(seq.is_some())),
            Op::Import(file) => {
                let mut file = file.clone();
                self.run_import(&mut state, &mut file, at)
                    .map(|(applied, _)| Done::Imported(applied, file))
            }
        };
        if let Some(why) = replicated.failed.lock().clone() {
            return Err(why);
        }
        if command.origin == replicated.node_id {
            if let Some(respond) = replicated.pending.lock().remove(&command.nonce) {
                respond(&state.engine, done);
            }
        }
        Ok(())
    }

    /// Replaces the whole state with `engine` (a cluster member installing a snapshot).
    pub fn replace_engine(&self, mut engine: Engine) {
        let mut state = self.inner.state.lock();
        engine.set_limits(state.engine.limits());
        state.engine = engine;
    }

    /// A copy of the engine's tables, taken under the lock, to write out without it.
    pub fn copy_parts(&self) -> crate::engine::image::Parts<'static> {
        self.inner.state.lock().engine.parts().into_owned()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs `/identify` for `query` and renders the answer with `render` while the state is in
    /// hand; returns it once every change it made or saw is durable.
    pub async fn identify<T: Send + 'static>(
        &self,
        query: &Query,
        render: impl FnOnce(&IdentityRef<'_>) -> T + Send + 'static,
    ) -> Result<T> {
        if let Some(replicated) = self.replicated_part() {
            // A request that changes nothing needs no log entry: once the leader has confirmed
            // it leads and has applied everything committed before now, its own state answers.
            // One that this member's state already says changes something goes straight to
            // the log (planned again when it commits), without the barrier's round trip.
            let changes = {
                let state = self.lock_healthy()?;
                let plan = state.engine.plan_identify(query, Timestamp::now());
                plan.is_ok_and(|plan| !plan.changes.is_empty())
            };
            if !changes && replicated.read_barrier().await.is_ok() {
                let state = self.lock_healthy()?;
                let plan = state
                    .engine
                    .plan_identify(query, Timestamp::now())
                    .inspect_err(|refusal| self.count_refusal(refusal))?;
                if plan.changes.is_empty() {
                    return Ok(render(&Self::identity(&state.engine, plan.answer)));
                }
            }
            let show = move |engine: &Engine, done| match done {
                Done::Answer(id) => render(&Self::identity(engine, id)),
                _ => unreachable!("an identify answers with a contact"),
            };
            return replicated.execute(Op::Identify(query.clone()), show).await;
        }
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let (id, seq) = self.run_identify(&mut state, query, Timestamp::now())?;
            (render(&Self::identity(&state.engine, id)), seq)
        };
        self.wait_durable(seq).await?;
        Ok(answer)
    }

    fn identity(engine: &Engine, id: ContactId) -> IdentityRef<'_> {
        engine
            .identity(id)
            .expect("a planned answer names a live contact")
    }

    fn run_identify(
        &self,
        state: &mut State,
        query: &Query,
        at: Timestamp,
    ) -> Result<(ContactId, u64)> {
        let plan = state
            .engine
            .plan_identify(query, at)
            .inspect_err(|refusal| self.count_refusal(refusal))?;
        let seq = self.commit(state, &plan.changes)?;
        Ok((plan.answer, seq))
    }

    /// Soft-deletes `id`; returns the deleted row and each resulting group rendered by `render`.
    pub async fn delete<T: Send + 'static>(
        &self,
        id: ContactId,
        render: impl Fn(&IdentityRef<'_>) -> T + Send + 'static,
    ) -> Result<(Contact, Vec<T>)> {
        let show = move |engine: &Engine, groups: &[ContactId]| {
            let groups = groups
                .iter()
                .filter_map(|&p| engine.identity(p))
                .map(|i| render(&i))
                .collect();
            let row = engine.contact(id).expect("the deleted row is kept");
            (row, groups)
        };
        if let Some(replicated) = self.replicated_part() {
            let show = move |engine: &Engine, done| match done {
                Done::Groups(groups) => show(engine, &groups),
                _ => unreachable!("a delete answers with groups"),
            };
            return replicated.execute(Op::Delete(id), show).await;
        }
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let (groups, seq) = self.run_delete(&mut state, id, Timestamp::now())?;
            (show(&state.engine, &groups), seq)
        };
        self.wait_durable(seq).await?;
        Ok(answer)
    }

    fn run_delete(
        &self,
        state: &mut State,
        id: ContactId,
        at: Timestamp,
    ) -> Result<(Vec<ContactId>, u64)> {
        let plan = state.engine.plan_delete(id, at)?;
        let seq = self.commit(state, &plan.changes)?;
        Ok((plan.groups, seq))
    }

    /// Blocks `value` (already normalized); returns the blocked entry and the primary of each
    /// cluster its holders are in now, each rendered by `render`. Blocking a blocked value
    /// changes nothing.
    pub async fn block<T: Send + 'static>(
        &self,
        kind: Kind,
        value: &str,
        render: impl Fn(&IdentityRef<'_>) -> T + Send + 'static,
    ) -> Result<(BlockedValue, Vec<T>)> {
        let owned = value.to_owned();
        let show = move |engine: &Engine| {
            let entry = engine.blocked(kind, &owned).expect("the value is blocked");
            (entry, Self::render_groups(engine, kind, &owned, &render))
        };
        if let Some(replicated) = self.replicated_part() {
            let op = Op::Block(kind, value.to_owned());
            return replicated.execute(op, move |engine, _| show(engine)).await;
        }
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let seq = self.run_block(&mut state, kind, value, Timestamp::now())?;
            (show(&state.engine), seq)
        };
        self.wait_durable(seq).await?;
        Ok(answer)
    }

    fn run_block(&self, state: &mut State, kind: Kind, value: &str, at: Timestamp) -> Result<u64> {
        let changes = state
            .engine
            .plan_block(kind, value, BlockReason::Admin, at)?;
        self.commit(state, &changes)
    }

    /// Unblocks `value`; returns the cluster its holders merged into (none if it has no live
    /// holder), or None if it was not blocked.
    pub async fn unblock<T: Send + 'static>(
        &self,
        kind: Kind,
        value: &str,
        render: impl Fn(&IdentityRef<'_>) -> T + Send + 'static,
    ) -> Result<Option<Vec<T>>> {
        let owned = value.to_owned();
        let show = move |engine: &Engine| Self::render_groups(engine, kind, &owned, &render);
        if let Some(replicated) = self.replicated_part() {
            let show = move |engine: &Engine, done| match done {
                Done::Unblocked(true) => Some(show(engine)),
                _ => None,
            };
            let op = Op::Unblock(kind, value.to_owned());
            return replicated.execute(op, show).await;
        }
        let (answer, seq) = {
            let mut state = self.lock_healthy()?;
            let Some(seq) = self.run_unblock(&mut state, kind, value, Timestamp::now())? else {
                return Ok(None);
            };
            (show(&state.engine), seq)
        };
        self.wait_durable(seq).await?;
        Ok(Some(answer))
    }

    /// None when the value was not blocked.
    fn run_unblock(
        &self,
        state: &mut State,
        kind: Kind,
        value: &str,
        at: Timestamp,
    ) -> Result<Option<u64>> {
        let plan = state
            .engine
            .plan_unblock(kind, value, at)
            .inspect_err(|refusal| self.count_refusal(refusal))?;
        let Some(change) = plan else {
            return Ok(None);
        };
        self.commit(state, std::slice::from_ref(&change)).map(Some)
    }

    /// Imports checked rows under one lock hold: the ids are checked again (a request may have
    /// taken one since), the guards surveyed, the rows applied and logged as one group.
    /// Returns what it applied (without the facts), the file (for its report), and how long
    /// the lock was held.
    pub async fn import(&self, file: CheckedFile) -> Result<(Applied, CheckedFile)> {
        if let Some(replicated) = self.replicated_part() {
            let show = |_: &Engine, done| match done {
                Done::Imported(applied, file) => (applied, file),
                _ => unreachable!("an import answers with what it applied"),
            };
            return replicated.execute(Op::Import(file), show).await;
        }
        let mut file = file;
        let (applied, seq) = {
            let mut state = self.lock_healthy()?;
            self.run_import(&mut state, &mut file, Timestamp::now())?
        };
        self.wait_durable(seq).await?;
        Ok((applied, file))
    }

    fn run_import(
        &self,
        state: &mut State,
        file: &mut CheckedFile,
        at: Timestamp,
    ) -> Result<(Applied, u64)> {
        let engine = &mut state.engine;
        if let Some(taken) = file.taken_id(|id| engine.has_contact(id)) {
            return Err(StoreError::Import(ImportError::Taken(taken)));
        }
        let survey = file.survey(engine);
        file.within_cap(engine, &survey)
            .map_err(StoreError::Import)?;
        let mut applied = file
            .apply(engine, &survey, at)
            .map_err(StoreError::Import)?;
        let seq = self.log_applied(state, &applied.facts)?;
        applied.facts = Vec::new();
        Ok((applied, seq))
    }

    /// Grows the tables for `rows` more contacts, in a lock hold of its own (growing rehashes,
    /// a pause an import's own hold then does not add to); changes nothing a reader sees.
    pub fn reserve(&self, rows: usize) -> std::time::Duration {
        let mut state = self.inner.state.lock();
        let locked = std::time::Instant::now();
        state.engine.reserve(rows);
        locked.elapsed()
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

    /// Reads with `f`; returns once everything `f` could have seen is durable. (A cluster
    /// member applies only what is committed; whether it is the latest is the caller's
    /// concern: the HTTP layer asks the leader for a read index first.)
    pub async fn read<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T> {
        let (out, seq) = {
            let state = self.lock_healthy().map_err(|_| StoreError::ReadRefused)?;
            (f(&state.engine), state.applied_seq)
        };
        self.wait_durable(seq)
            .await
            .map_err(|_| StoreError::ReadRefused)?;
        Ok(out)
    }

    /// Waits until the log is durable up to `seq` (a cluster member's changes already are).
    async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        match self.storage() {
            Some(storage) => storage.wait_durable(seq).await,
            None => Ok(()),
        }
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
    pub fn backup_point(&self) -> Result<(std::path::PathBuf, crate::storage::LogEnd)> {
        let storage = self.storage().ok_or(StoreError::NotInCluster(
            "a cluster member keeps no single-node log to back up; export the contacts (GET /contacts/export) or copy a stopped member's data directory",
        ))?;
        Ok((storage.dir().to_owned(), storage.log_end()))
    }

    /// Why the log failed and what to do, once it has.
    pub fn failure(&self) -> Option<String> {
        match &self.inner.durability {
            Durability::Log(storage) => storage.failure(),
            Durability::Replicated(r) => r.failed.lock().clone(),
        }
    }

    /// Whether the log has failed and the store refuses everything until restart.
    pub fn is_failed(&self) -> bool {
        match &self.inner.durability {
            Durability::Log(storage) => storage.is_failed(),
            Durability::Replicated(r) => r.failed.lock().is_some(),
        }
    }

    /// Refuses everything from now on, saying why: memory may hold what the log lacks.
    fn fail_closed(&self, why: String) {
        match &self.inner.durability {
            Durability::Log(storage) => storage.fail_closed(why),
            Durability::Replicated(r) => {
                r.failed.lock().get_or_insert(why);
            }
        }
    }

    /// Syncs the log and writes a snapshot; the store refuses changes afterwards.
    pub fn close(&self) -> Result<(), StorageError> {
        let state = self.inner.state.lock();
        match self.storage() {
            Some(storage) => storage.close(&state.engine),
            None => Ok(()),
        }
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
        if self.is_failed() {
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
                self.fail_closed(format!("a planned change did not apply: {error}"));
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
        let Some(storage) = self.storage() else {
            // A cluster member: the command is already in the Raft log.
            self.count(facts);
            return Ok(state.applied_seq);
        };
        let seq = match storage.append(facts) {
            Ok(seq) => seq,
            Err(error) => {
                storage.fail_closed(format!(
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
