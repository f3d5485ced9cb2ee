//! The shared handle: one engine behind one lock, and a durability back-end behind it: the
//! local write-ahead log ([`Storage`]) or a Raft group's log. Every change is an [`Op`] through
//! [`Store::execute`], in one order whatever the back-end: plan, make durable, apply, render.
//!
//! - Local: under the lock, the plan's facts are staged in the log (held back from the file),
//!   applied, then released to the writer; the answer is rendered and the lock released; the
//!   answer goes out once the log is durable that far (group commit).
//! - Raft: the op itself is what is made durable (committed on a majority); every member then
//!   plans and applies it under its lock against the state the entries before it made, so all
//!   reach the same state, and the member that proposed it renders the answer there.
//!
//! One `parking_lot::Mutex` because the work under it is microseconds (hash lookups, a few
//! pushes, encoding a few records) and a single lock gives every request one linear history:
//! fifty identical new requests create exactly one contact. Nothing under the lock waits on
//! I/O; the wait for durability happens after it is released.
//!
//! A fact that fails to apply (which a correct plan never produces) fails the store closed:
//! memory may hold part of it, so every later change and read is refused until a restart
//! recovers from the log, which never holds it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};

use crate::engine::{
    Cause, Change, Engine, GuardStats, Limits, Moved, Op, Outcome, Refusal, Stats, Timestamp,
};
use crate::feed::{Feed, FeedOptions};
use crate::storage::raft_files::Command;
use crate::storage::{DurableHook, Report, Storage, StorageError, StorageOptions};
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A guard, a limit or the state refused the op; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A read refused because the log has failed: memory may hold what the log lacks.
    #[error("reads are refused after a storage failure")]
    ReadRefused,
    /// A Raft member could not have the change committed: no leader is known, or it changed
    /// while the change was in flight. Nothing is known to have changed; repeating it is safe.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// What a Raft member cannot do (a backup of files it does not keep, say).
    #[error("{0}")]
    NotInCluster(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who asked for an op: what made it (the change feed's `cause`) and the name of the token, if
/// a token was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub cause: Cause,
    pub by: Option<String>,
}

impl Origin {
    /// The op's own cause, with no token.
    pub fn of(op: &Op) -> Origin {
        Origin {
            cause: op.cause(),
            by: None,
        }
    }

    /// A tool's ops: its own cause.
    pub fn tool(cause: Cause) -> Origin {
        Origin { cause, by: None }
    }

    pub fn by(mut self, name: Option<String>) -> Origin {
        self.by = name;
        self
    }
}

/// What an applied op did: its plan's outcome, its facts, and the contacts they moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub outcome: Outcome,
    pub facts: Vec<Change>,
    pub moved: Vec<Moved>,
}

struct State {
    engine: Engine,
    /// The sequence number of the newest change applied: what any reader may have seen.
    applied_seq: u64,
}

struct Inner {
    state: Mutex<State>,
    backend: Backend,
    metrics: Arc<Metrics>,
    /// Where every applied op's events go.
    feed: Feed,
    /// Counts the changes to the erasure ledger applied (an erasure, a purge, a new state), for
    /// whoever purges or waits for a purge.
    ledger: tokio::sync::watch::Sender<u64>,
}

/// How a change becomes durable.
enum Backend {
    /// This node's own write-ahead log.
    Local(Storage),
    /// A Raft group's log, through this member's Raft node.
    Raft(Replicated),
}

/// Proposes a command to the Raft group; completes once it is committed and applied here.
pub(crate) trait Propose: Send + Sync + 'static {
    fn propose(&self, command: Command) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;

    /// Completes once this member has confirmed that it leads and has applied everything
    /// committed before the call (a read index): its state then answers a linearizable read.
    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

/// Renders the answer of a command this member proposed, where it applies.
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
    fn proposer(&self) -> Result<&Arc<dyn Propose>> {
        (self.proposer.get())
            .ok_or_else(|| StoreError::NoLeader("the Raft group is starting".into()))
    }

    /// Proposes `op`; returns the answer rendered where it applied here.
    async fn propose<T: Send + 'static>(
        &self,
        op: Op,
        origin: Origin,
        render: impl FnOnce(&Engine, &Done) -> T + Send + 'static,
    ) -> Result<T> {
        let proposer = self.proposer()?;
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let respond: Respond = Box::new(move |engine, done| {
            let _ = tx.send(done.map(|done| render(engine, &done)));
        });
        self.pending.lock().insert(nonce, respond);
        let _forget = Forget {
            pending: &self.pending,
            nonce,
        };
        let command = Command {
            op,
            cause: origin.cause,
            by: origin.by,
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

    /// Opens the data directory with the guards `limits`: the local back-end.
    pub fn open_with(
        mut options: StorageOptions,
        limits: Limits,
    ) -> Result<(Store, Report), StorageError> {
        let metrics = Arc::new(Metrics::new());
        let feed = Feed::open(&options.dir, feed_options(&options), metrics.feed.clone())?;
        options.observer = Some(metrics.clone());
        options.hook = Some(Arc::new(feed.clone()));
        options.events_after = Some(feed.last_written());
        let (storage, mut engine, mut report) = Storage::open(options)?;
        feed.recovered(std::mem::take(&mut report.events), engine.events())?;
        engine.set_limits(limits);
        metrics.observe_recovery(report.elapsed);
        let loaded = report.snapshot.as_deref().map(std::fs::metadata);
        if let Some(Ok(at)) = loaded.map(|m| m.and_then(|m| m.modified())) {
            metrics.observe_loaded_snapshot(at);
        }
        let backend = Backend::Local(storage);
        let store = Store::with(engine, report.last_seq, backend, metrics, feed);
        Ok((store, report))
    }

    /// A Raft member's store, over `engine` (restored from the member's latest snapshot, or
    /// empty) and the change feed in the data directory of `options`; changes reach it through
    /// [`Store::apply_committed`], which makes their events again after a restart (the feed
    /// skips those it holds).
    pub(crate) fn replicated(
        mut engine: Engine,
        limits: Limits,
        node_id: u64,
        options: &StorageOptions,
    ) -> Result<Store, StorageError> {
        engine.set_limits(limits);
        let replicated = Replicated {
            node_id,
            limits,
            proposer: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_nonce: AtomicU64::new(0),
            failed: Mutex::new(None),
        };
        let metrics = Arc::new(Metrics::for_raft());
        let feed = Feed::open(&options.dir, feed_options(options), metrics.feed.clone())?;
        feed.recovered(Vec::new(), engine.events().max(feed.last_written()))?;
        Ok(Store::with(
            engine,
            0,
            Backend::Raft(replicated),
            metrics,
            feed,
        ))
    }

    fn with(
        mut engine: Engine,
        applied_seq: u64,
        backend: Backend,
        metrics: Arc<Metrics>,
        feed: Feed,
    ) -> Store {
        engine.track_moves();
        let inner = Inner {
            state: Mutex::new(State {
                engine,
                applied_seq,
            }),
            backend,
            metrics,
            feed,
            ledger: tokio::sync::watch::Sender::new(0),
        };
        Store {
            inner: Arc::new(inner),
        }
    }

    /// Where a Raft member sends its changes; set once, when its Raft node is built.
    pub(crate) fn set_proposer(&self, proposer: Arc<dyn Propose>) {
        if let Backend::Raft(r) = &self.inner.backend {
            let _ = r.proposer.set(proposer);
        }
    }

    /// Makes `op` durable and applies it; returns `render`'s answer (rendered with the state
    /// in hand) once everything it made or saw is durable.
    pub async fn execute<T: Send + 'static>(
        &self,
        op: Op,
        origin: Origin,
        render: impl FnOnce(&Engine, &Done) -> T + Send + 'static,
    ) -> Result<T> {
        match &self.inner.backend {
            Backend::Local(storage) => {
                let (answer, seq) = self.execute_locally(&op, &origin, Timestamp::now(), render)?;
                storage.wait_durable(seq).await?;
                Ok(answer)
            }
            Backend::Raft(raft) => {
                // An op that this member's state says changes nothing needs no log entry: once
                // the leader has confirmed it leads and has applied everything committed
                // before now, its own state answers (a refusal too). An import always goes
                // to the log (planning one twice costs too much to find out).
                let quiet = !matches!(op, Op::Import(_)) && {
                    let state = self.lock_healthy()?;
                    let plan = state.engine.plan(&op, Timestamp::now());
                    plan.is_err() || plan.is_ok_and(|p| p.facts.is_empty())
                };
                if quiet && raft.proposer()?.read_barrier().await.is_ok() {
                    let state = self.lock_healthy()?;
                    let plan = (state.engine.plan(&op, Timestamp::now()))
                        .inspect_err(|refusal| self.count_refusal(refusal))?;
                    if plan.facts.is_empty() {
                        let done = Done {
                            outcome: plan.outcome,
                            facts: Vec::new(),
                            moved: Vec::new(),
                        };
                        return Ok(render(&state.engine, &done));
                    }
                }
                raft.propose(op, origin, render).await
            }
        }
    }

    /// [`Store::execute`] for the offline tools, which run alone on a data directory: planned
    /// at `now`, logged and applied, rendered, without waiting for the log (the tools' `close`
    /// writes and syncs everything, and fails as the log did).
    pub(crate) fn execute_offline<T>(
        &self,
        op: &Op,
        origin: &Origin,
        now: Timestamp,
        render: impl FnOnce(&Engine, &Done) -> T,
    ) -> Result<T> {
        match &self.inner.backend {
            Backend::Local(storage) => match self.execute_locally(op, origin, now, render) {
                Err(StoreError::Storage(StorageError::Unavailable)) => {
                    let why = storage
                        .failure()
                        .unwrap_or_else(|| "the store failed".into());
                    Err(StorageError::Failed(why).into())
                }
                done => done.map(|(answer, _)| answer),
            },
            Backend::Raft(_) => Err(StoreError::NotInCluster(
                "the offline tools work on a stopped single node's data directory",
            )),
        }
    }

    /// Plan, stage in the log, apply, release, render: under one lock hold. Returns the answer
    /// and the sequence number it must wait for.
    fn execute_locally<T>(
        &self,
        op: &Op,
        origin: &Origin,
        now: Timestamp,
        render: impl FnOnce(&Engine, &Done) -> T,
    ) -> Result<(T, u64)> {
        let Backend::Local(storage) = &self.inner.backend else {
            unreachable!("only the local back-end executes locally");
        };
        let mut state = self.lock_healthy()?;
        let mut staged = false;
        let done = self.step(&mut state, op, origin, now, |facts| {
            let seq = storage.stage(facts)?;
            staged = true;
            Ok(Some(seq))
        })?;
        if staged {
            storage.release();
        }
        let answer = render(&state.engine, &done);
        Ok((answer, state.applied_seq))
    }

    /// Applies a committed command (a Raft member's state machine): plans it against the state
    /// every member has at this point of the log, applies it, and renders the answer if this
    /// member proposed it. A refusal is an answer, the same on every member; an error means
    /// the store failed closed.
    pub(crate) fn apply_committed(&self, command: Command) -> Result<(), String> {
        let Backend::Raft(raft) = &self.inner.backend else {
            return Err("a single node applies no committed commands".into());
        };
        let mut state = self.inner.state.lock();
        if let Some(why) = raft.failed.lock().clone() {
            return Err(why);
        }
        state.engine.set_limits(command.limits);
        let origin = Origin {
            cause: command.cause,
            by: command.by,
        };
        let at = Timestamp(command.at);
        let done = self.step(&mut state, &command.op, &origin, at, |_| Ok(None));
        if let Some(why) = raft.failed.lock().clone() {
            return Err(why);
        }
        if command.origin == raft.node_id {
            if let Some(respond) = raft.pending.lock().remove(&command.nonce) {
                respond(&state.engine, done);
            }
        }
        Ok(())
    }

    /// The one path of a change once its lock is held: plan `op`, make the facts durable with
    /// `durable` (which returns the log's sequence number, if it has one), apply them. A
    /// refusal changes nothing; a fact that does not apply fails the store closed.
    fn step(
        &self,
        state: &mut State,
        op: &Op,
        origin: &Origin,
        now: Timestamp,
        durable: impl FnOnce(&[Change]) -> Result<Option<u64>, StorageError>,
    ) -> Result<Done> {
        let plan =
            (state.engine.plan(op, now)).inspect_err(|refusal| self.count_refusal(refusal))?;
        let mut facts = plan.facts;
        if facts.is_empty() {
            return Ok(Done {
                outcome: plan.outcome,
                facts,
                moved: Vec::new(),
            });
        }
        // Who made it, logged when the facts do not say so themselves, so that a replay
        // names the same cause and token in the change feed.
        if origin.by.is_some() || origin.cause != Cause::inferred(&facts) {
            let fact = Change::Origin {
                cause: origin.cause,
                by: origin.by.clone(),
            };
            facts.insert(0, fact);
        }
        let durable_at = durable(&facts)?;
        if let Some(seq) = durable_at {
            state.applied_seq = seq;
        }
        let mut moved = Vec::new();
        let mut applied = Vec::with_capacity(facts.len());
        for fact in &facts {
            if let Err(error) = state.engine.apply(fact) {
                tracing::error!(%error, "a planned change did not apply; failing closed");
                state.engine.take_moves();
                self.fail_closed(format!("a planned change did not apply: {error}"));
                return Err(StorageError::Unavailable.into());
            }
            let moves = state.engine.take_moves();
            moved.extend_from_slice(&moves);
            applied.push((fact, moves));
        }
        let events = (state.engine).events_of(&applied, origin.cause, origin.by.as_deref());
        drop(applied);
        self.inner.feed.queue(events, durable_at);
        self.count(&facts);
        self.note_ledger(&facts);
        tracing::debug!(
            cause = origin.cause.as_str(),
            by = origin.by.as_deref(),
            facts = facts.len(),
            "change applied"
        );
        Ok(Done {
            outcome: plan.outcome,
            facts,
            moved,
        })
    }

    /// Replaces the whole state with `engine` (a Raft member installing a snapshot).
    pub(crate) fn replace_engine(&self, mut engine: Engine) {
        let mut state = self.inner.state.lock();
        engine.set_limits(state.engine.limits());
        engine.track_moves();
        state.engine = engine;
        self.inner.ledger.send_modify(|n| *n += 1);
    }

    /// Tells the ledger's watchers when `facts` erase or purge.
    fn note_ledger(&self, facts: &[Change]) {
        if (facts.iter()).any(|f| matches!(f, Change::Erased { .. } | Change::Purged { .. })) {
            self.inner.ledger.send_modify(|n| *n += 1);
        }
    }

    /// Changes each time an erasure or a purge is applied (or a new state installed).
    pub(crate) fn ledger_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ledger.subscribe()
    }

    /// Purges the log's files of every value erased so far (see `storage::purge`); blocks.
    /// A Raft member's files are its Raft node's, which purges them itself.
    pub(crate) fn purge_files(&self) -> Result<crate::storage::PurgeReport> {
        match &self.inner.backend {
            Backend::Local(storage) => Ok(storage.purge()?),
            Backend::Raft(_) => Err(StoreError::NotInCluster(
                "a Raft member's files are purged by its Raft node",
            )),
        }
    }

    /// A copy of the engine's tables, taken under the lock, to write out without it.
    pub(crate) fn copy_parts(&self) -> crate::engine::image::Parts<'static> {
        self.inner.state.lock().engine.parts().into_owned()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The change feed of every op applied here.
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Grows the tables for `rows` more contacts, in a lock hold of its own (growing rehashes,
    /// a pause an import's own hold then does not add to); changes nothing a reader sees.
    pub fn reserve(&self, rows: usize) -> std::time::Duration {
        let mut state = self.inner.state.lock();
        let locked = std::time::Instant::now();
        state.engine.reserve(rows);
        locked.elapsed()
    }

    /// Reads with `f`; returns once everything `f` could have seen is durable. (A Raft member
    /// applies only what is committed; whether it is the latest is the caller's concern: the
    /// HTTP layer asks the leader for a read index first.)
    pub async fn read<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T> {
        let (out, seq) = {
            let state = self.lock_healthy().map_err(|_| StoreError::ReadRefused)?;
            (f(&state.engine), state.applied_seq)
        };
        if let Backend::Local(storage) = &self.inner.backend {
            storage
                .wait_durable(seq)
                .await
                .map_err(|_| StoreError::ReadRefused)?;
        }
        Ok(out)
    }

    /// Reads with `f` without waiting for the log: for checks whose result shows no state.
    pub(crate) fn peek<T>(&self, f: impl FnOnce(&Engine) -> T) -> T {
        f(&self.inner.state.lock().engine)
    }

    pub fn stats(&self) -> Stats {
        self.inner.state.lock().engine.stats()
    }

    pub(crate) fn guard_stats(&self) -> GuardStats {
        self.inner.state.lock().engine.guard_stats()
    }

    /// The data directory and where its log ends now, for a backup (which reads files only).
    pub(crate) fn backup_point(&self) -> Result<(std::path::PathBuf, crate::storage::LogEnd)> {
        match &self.inner.backend {
            Backend::Local(storage) => Ok((storage.dir().to_owned(), storage.log_end())),
            Backend::Raft(_) => Err(StoreError::NotInCluster(
                "a Raft member keeps no single-node log to back up; export the contacts (GET /contacts/export) or copy a stopped member's data directory",
            )),
        }
    }

    /// Why the log failed and what to do, once it has.
    pub fn failure(&self) -> Option<String> {
        match &self.inner.backend {
            Backend::Local(storage) => storage.failure(),
            Backend::Raft(r) => r.failed.lock().clone(),
        }
    }

    /// Whether the log has failed and the store refuses everything until restart.
    pub(crate) fn is_failed(&self) -> bool {
        match &self.inner.backend {
            Backend::Local(storage) => storage.is_failed(),
            Backend::Raft(r) => r.failed.lock().is_some(),
        }
    }

    /// Refuses everything from now on, saying why: memory may hold what the log lacks.
    fn fail_closed(&self, why: String) {
        match &self.inner.backend {
            Backend::Local(storage) => storage.fail_closed(why),
            Backend::Raft(r) => {
                r.failed.lock().get_or_insert(why);
            }
        }
    }

    /// Syncs the log and writes a snapshot; the store refuses changes afterwards. (A Raft
    /// member's files are its Raft node's, which shuts them down.)
    pub fn close(&self) -> Result<(), StorageError> {
        let state = self.inner.state.lock();
        match &self.inner.backend {
            Backend::Local(storage) => storage.close(&state.engine),
            Backend::Raft(_) => self.inner.feed.sync(),
        }
    }

    /// Counts what a change did, for metrics.
    fn count(&self, facts: &[Change]) {
        let m = &self.inner.metrics;
        for fact in facts {
            let counter = match fact {
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
            Refusal::ClusterLimit { .. } | Refusal::ImportOverCap { .. } => "cluster_limit",
            Refusal::Blocked | Refusal::BlockedValue { .. } | Refusal::ErasureOfBlocked { .. } => {
                "blocked_identifier"
            }
            Refusal::Capacity(_) => "capacity_exhausted",
            Refusal::UnknownContact(_)
            | Refusal::DeletedContact(_)
            | Refusal::NotBlocked { .. }
            | Refusal::IdTaken { .. }
            | Refusal::NoIdentifierLeft(_)
            | Refusal::NothingToErase(_) => return,
        };
        self.inner.metrics.refused(code);
    }

    fn lock_healthy(&self) -> Result<MutexGuard<'_, State>, StorageError> {
        let state = self.inner.state.lock();
        if self.is_failed() {
            return Err(StorageError::Unavailable);
        }
        Ok(state)
    }
}

fn feed_options(options: &StorageOptions) -> FeedOptions {
    FeedOptions {
        retention: options.changes_retention,
        retention_bytes: options.changes_retention_bytes,
    }
}
