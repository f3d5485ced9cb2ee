//! Storage: the write-ahead log (framing, group-commit writer), snapshots, and recovery.
//!
//! One process owns a data directory (an OS lock on `LOCK`, released even by `kill -9`). Every
//! change is appended to the log before the answer that reveals it is sent; snapshots are built
//! in the background from sealed files (never from the live engine, so they never hold its lock)
//! and let older segments be removed.

pub mod codec;
mod durable;
pub mod feed_files;
pub mod frame;
mod packed;
pub mod purge;
pub mod raft_files;
pub mod recovery;
mod schema;
mod segment;
pub mod snapshot;
pub mod wal;
mod writer;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;

use crate::engine::{Change, Engine};
pub use purge::PurgeReport;
pub use recovery::{Mode, Report, TailCut};
pub use writer::LogEnd;
use writer::{LogWriter, WriterOptions};

/// When the log is synced to disk, and so what an acknowledged change survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Answer only after the change is synced: survives `kill -9` and power loss.
    #[default]
    Always,
    /// Answer after the write; sync about once a second: power loss may lose up to a second.
    Interval,
    /// Answer after the write; leave syncing to the OS: survives `kill -9`, not power loss.
    Never,
}

/// Hears what the log does, for metrics. Called from the writer and snapshotter threads.
pub trait LogObserver: Send + Sync {
    /// A group-commit batch of `records` records and `bytes` bytes was written.
    fn batch_written(&self, records: u64, bytes: u64);
    /// The log was synced; it took `took`.
    fn synced(&self, took: std::time::Duration);
    /// A snapshot of `bytes` bytes was written; it took `took`.
    fn snapshot_written(&self, took: std::time::Duration, bytes: u64);
}

/// Hears when log records become durable and when their consequences must be: the change
/// feed, which shows a change only once its records are durable, and must be synced before a
/// snapshot makes those records unnecessary.
pub trait DurableHook: Send + Sync {
    /// Every record up to `seq` is durable (called by the writer before it says so to waiters).
    fn durable(&self, seq: u64);
    /// What `durable` was told so far must reach the disk now.
    fn sync(&self) -> Result<(), StorageError>;
}

/// Switches that make the log fail on purpose, for tests of the fail-closed path.
#[derive(Debug, Default)]
pub struct Faults {
    pub fail_writes: AtomicBool,
    pub fail_syncs: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "storage is unavailable after a write or sync failure; restart to recover from the log"
    )]
    Unavailable,
    /// What a tool reports once the log has failed: why, and what to do.
    #[error("the log failed, so the change was not made: {0}")]
    Failed(String),
    #[error("{}: corrupt at offset {offset}: {reason}{}", file.display(), next_step(file))]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the disk holding {} is full: free at least {} MiB there, then start the server again (every acknowledged change is in the log)", dir.display(), need.div_ceil(1 << 20))]
    DiskFull { dir: PathBuf, need: u64 },
    #[error("data directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What to do about damage in `file`: a log segment can be cut at the damage, a snapshot only
/// restored from a backup (the segments it covers are gone).
fn next_step(file: &Path) -> String {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let dir = file.parent().unwrap_or(Path::new(".")).display();
    if wal::parse_segment_name(&name).is_some() {
        format!(". To start from the records before the damage, run `identity-engine check --data-dir {dir} --repair`: it says how many records and contacts that drops before doing it")
    } else if snapshot::parse_snapshot_name(&name).is_some() {
        ". Restore the data directory from a backup: `identity-engine restore --data-dir NEW_DIR FILE`".to_owned()
    } else {
        String::new()
    }
}

impl StorageError {
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        StorageError::File {
            path: path.into(),
            source,
        }
    }

    fn into_io(self) -> io::Error {
        match self {
            StorageError::File { source: e, .. } | StorageError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

pub(crate) fn corrupt(file: &Path, offset: u64, reason: String) -> StorageError {
    StorageError::Corrupt {
        file: file.to_owned(),
        offset,
        reason,
    }
}

/// A full disk under `dir`, which needs `least` bytes for the log plus room for the next
/// snapshot (as large as the newest one).
pub(crate) fn disk_full(dir: &Path, least: u64) -> StorageError {
    let snapshot = recovery::list(dir)
        .ok()
        .and_then(|f| {
            f.snapshots
                .last()
                .and_then(|(_, p)| std::fs::metadata(p).ok())
        })
        .map_or(0, |m| m.len());
    StorageError::DiskFull {
        dir: dir.to_owned(),
        need: least + snapshot,
    }
}

/// Makes a new or renamed file's directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::file(dir.to_owned(), e))
}

#[derive(Clone)]
pub struct StorageOptions {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A segment is sealed once it holds this many bytes (the least log between snapshots).
    pub snapshot_every_bytes: u64,
    /// A snapshot is taken when the sealed log since the last one reaches this percentage of
    /// that snapshot's size; 0: at every sealed segment.
    pub snapshot_log_percent: u64,
    pub faults: Option<Arc<Faults>>,
    pub observer: Option<Arc<dyn LogObserver>>,
    /// The change feed: hears durability, and is synced before every snapshot.
    pub hook: Option<Arc<dyn DurableHook>>,
    /// Recovery keeps the events of the groups it replays past this sequence number (what
    /// the feed's files lack), in its report.
    pub events_after: Option<u64>,
    /// How long and how many bytes of the change feed's history to keep.
    pub changes_retention: std::time::Duration,
    pub changes_retention_bytes: u64,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageOptions")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl StorageOptions {
    pub fn new(dir: impl Into<PathBuf>) -> StorageOptions {
        StorageOptions {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            snapshot_every_bytes: 64 << 20,
            snapshot_log_percent: DEFAULT_SNAPSHOT_LOG_PERCENT,
            faults: None,
            observer: None,
            hook: None,
            events_after: None,
            changes_retention: crate::feed::DEFAULT_RETENTION,
            changes_retention_bytes: crate::feed::DEFAULT_RETENTION_BYTES,
        }
    }
}

/// Whether `dir` holds a single node's log or snapshots (what a cluster member may be seeded
/// from).
pub(crate) fn holds_data(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        wal::parse_segment_name(&name).is_some() || snapshot::parse_snapshot_name(&name).is_some()
    })
}

/// Makes every file and directory this process creates from now on private to its user
/// (umask 077: files 0600, directories 0700), whoever opens them (docs/API.md, "Exposure").
/// Called once at start-up, for every command.
pub fn keep_new_files_private() {
    use rustix::fs::Mode;
    rustix::process::umask(Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and any missing parent) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Warns when other users may read (or enter) `path`, a directory or a file holding secrets,
/// and says how to stop that (docs/API.md, "Exposure").
pub fn warn_if_open_to_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let fix = if meta.is_dir() { "700" } else { "600" };
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "{what} is open to other users: run chmod {fix} {}",
            path.display()
        );
    }
}

/// Takes the data directory's lock; held until the returned file is dropped or the process dies.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    create_private_dir(dir).map_err(|e| StorageError::file(dir.to_owned(), e))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::file(path.clone(), e))?;
    // A lock can be held for a moment by a process that is not the owner: a child forked by
    // this process (or by the last owner) shares the descriptor until it execs. So a busy lock
    // is retried briefly before the directory is declared in use.
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked(dir.to_owned()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::file(path, e)),
        }
    }
}

/// Like Redis's `auto-aof-rewrite-percentage 100`: a snapshot once the log since the last one
/// is as large as that snapshot, so writing snapshots costs about one byte per byte of log
/// whatever the state's size (a fixed interval costs the state's size per interval).
pub(crate) const DEFAULT_SNAPSHOT_LOG_PERCENT: u64 = 100;

/// Records replayed at start-up past which a snapshot is taken at once.
const REPLAY_SNAPSHOT_THRESHOLD: u64 = 100_000;

/// An open data directory: the lock, the log writer and the background snapshotter.
pub struct Storage {
    dir: PathBuf,
    observer: Option<Arc<dyn LogObserver>>,
    hook: Option<Arc<dyn DurableHook>>,
    writer: LogWriter,
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    _lock: File,
}

impl Storage {
    /// Locks `dir`, recovers the state in it, and starts the log writer after the last record.
    pub fn open(options: StorageOptions) -> Result<(Storage, Engine, Report), StorageError> {
        let lock = lock_dir(&options.dir)?;
        crate::tools::backup::remove_staging(&options.dir);
        let (engine, report) =
            recovery::recover_keeping(&options.dir, Mode::Open, options.events_after)?;
        let (sealed_tx, sealed_rx) = std::sync::mpsc::channel();
        // A long replay means the last run never snapshotted what it logged (it was killed, or
        // its log was short of a segment): snapshot it now, in the background, so the next
        // start-up is fast.
        if report.records_replayed >= REPLAY_SNAPSHOT_THRESHOLD {
            let _ = sealed_tx.send(purge::Sealed::Upto(report.last_seq));
        }
        let writer = LogWriter::start(
            WriterOptions {
                dir: options.dir.clone(),
                policy: options.fsync,
                segment_bytes: options.snapshot_every_bytes,
                faults: options.faults.clone(),
                sealed: Some(sealed_tx),
                observer: options.observer.clone(),
                hook: options.hook.clone(),
            },
            report.last_seq,
        )?;
        let dir = options.dir.clone();
        let observer = options.observer.clone();
        let hook = options.hook.clone();
        let percent = options.snapshot_log_percent;
        let snapshotter = std::thread::Builder::new()
            .name("snapshotter".into())
            .spawn(move || {
                snapshot_sealed(
                    &dir,
                    sealed_rx,
                    percent,
                    observer.as_deref(),
                    hook.as_deref(),
                )
            })?;
        let storage = Storage {
            hook: options.hook,
            observer: options.observer,
            dir: options.dir,
            writer,
            snapshotter: Mutex::new(Some(snapshotter)),
            _lock: lock,
        };
        Ok((storage, engine, report))
    }

    /// Queues one request's changes; returns the sequence number to wait for.
    pub fn append(&self, changes: &[Change]) -> Result<u64, StorageError> {
        self.writer.append(changes)
    }

    /// Queues one request's changes but holds them back from the file until
    /// [`Storage::release`] (or drops them, if the store fails closed first).
    pub(crate) fn stage(&self, changes: &[Change]) -> Result<u64, StorageError> {
        self.writer.stage(changes)
    }

    /// Lets the staged changes reach the file.
    pub fn release(&self) {
        self.writer.release()
    }

    pub async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        self.writer.wait_durable(seq).await
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.writer.is_failed()
    }

    /// Fails closed for a reason found outside the log (see `LogWriter::fail_closed`).
    pub(crate) fn fail_closed(&self, reason: String) {
        self.writer.fail_closed(reason);
    }

    /// Why the log failed and what to do, once it has.
    pub fn failure(&self) -> Option<String> {
        self.writer.failure()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Purges the directory's files of everything the log holds up to now (see `purge`);
    /// blocks until it is done. The erasures applied before the call are purged by it.
    pub fn purge(&self) -> Result<PurgeReport, StorageError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.writer.purge(reply)?;
        let report = answer
            .recv()
            .map_err(|_| StorageError::Unavailable)?
            .map_err(StorageError::Failed)?;
        if let Some(o) = &self.observer {
            o.snapshot_written(report.elapsed, report.bytes);
        }
        Ok(report)
    }

    /// Where the log ends now: a backup taken from here holds every acknowledged change.
    pub(crate) fn log_end(&self) -> LogEnd {
        self.writer.end()
    }

    /// Syncs the log, stops the writer and the snapshotter, and writes a snapshot of `engine`
    /// (which must hold exactly what was appended) so the next start-up replays nothing.
    pub fn close(&self, engine: &Engine) -> Result<(), StorageError> {
        self.writer.close()?;
        if let Some(thread) = self.snapshotter.lock().take() {
            let _ = thread.join();
        }
        let seq = self.writer.queued_seq();
        let started = Instant::now();
        if let Some(hook) = &self.hook {
            hook.sync()?;
        }
        let (path, bytes) = snapshot::write(&self.dir, engine, seq)?;
        remove_covered(&self.dir, seq, true)?;
        if let Some(o) = &self.observer {
            o.snapshot_written(started.elapsed(), bytes);
        }
        tracing::info!(file = %path.display(), seq, bytes, ms = started.elapsed().as_millis() as u64, "snapshot written at shutdown");
        Ok(())
    }
}

impl Drop for Storage {
    /// A store dropped without `close` still stops every thread that touches the directory
    /// before the lock (a field, so dropped after this) lets another owner in.
    fn drop(&mut self) {
        let _ = self.writer.close();
        if let Some(thread) = self.snapshotter.lock().take() {
            let _ = thread.join();
        }
    }
}

/// The snapshotter thread: each time the writer seals segments up to some sequence number,
/// rebuild that state from the files alone, write it as a snapshot, and drop what it covers.
fn snapshot_sealed(
    dir: &Path,
    sealed: std::sync::mpsc::Receiver<purge::Sealed>,
    percent: u64,
    observer: Option<&dyn LogObserver>,
    hook: Option<&dyn DurableHook>,
) {
    while let Ok(first) = sealed.recv() {
        let (mut seq, mut purges) = (0, Vec::new());
        for message in std::iter::once(first).chain(sealed.try_iter()) {
            match message {
                purge::Sealed::Upto(at) => seq = seq.max(at),
                purge::Sealed::Purge { seq: at, reply } => purges.push((at, reply)),
            }
        }
        // Purges asked for meanwhile share one: the latest point covers the earlier ones.
        if let Some(at) = purges.iter().map(|(at, _)| *at).max() {
            // The change feed reaches the disk first, as before a snapshot (below).
            let result = hook
                .map_or(Ok(()), |h| h.sync())
                .and_then(|()| purge::purge(dir, at));
            match &result {
                Ok(report) => tracing::info!(
                    seq = at,
                    bytes = report.bytes,
                    removed = report.removed,
                    backups_cut = report.backups_cut,
                    ms = report.elapsed.as_millis() as u64,
                    "files purged of erased values"
                ),
                Err(error) => tracing::warn!(%error, seq = at, "purge failed; it is tried again"),
            }
            for (_, reply) in purges {
                let _ = reply.send(result.as_ref().map(Clone::clone).map_err(|e| e.to_string()));
            }
            if seq <= at {
                continue;
            }
        }
        if seq == 0 {
            continue;
        }
        match snapshot_due(dir, seq, percent) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "could not size the log; snapshotting anyway");
            }
        }
        let started = Instant::now();
        // The change feed reaches the disk first: the log this snapshot covers is removed next,
        // and the feed's events of it could no longer be made again from it.
        let result = hook
            .map_or(Ok(()), |h| h.sync())
            .and_then(|()| recovery::recover(dir, Mode::UpTo(seq)))
            .and_then(|(engine, _)| snapshot::write(dir, &engine, seq))
            .and_then(|(path, bytes)| remove_covered(dir, seq, false).map(|()| (path, bytes)));
        match result {
            Ok((path, bytes)) => {
                if let Some(o) = observer {
                    o.snapshot_written(started.elapsed(), bytes);
                }
                tracing::info!(file = %path.display(), seq, bytes,
                    ms = started.elapsed().as_millis() as u64, "snapshot written")
            }
            Err(error) => {
                tracing::warn!(%error, seq, "snapshot failed; the log is kept and will be replayed")
            }
        }
    }
}

/// Whether the sealed log up to `seq` not yet in a snapshot has reached `percent` of the newest
/// snapshot's size (always, without a snapshot or with `percent` 0).
fn snapshot_due(dir: &Path, seq: u64, percent: u64) -> Result<bool, StorageError> {
    let files = recovery::list(dir)?;
    let Some((covered, snapshot)) = files.snapshots.last() else {
        return Ok(true);
    };
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| StorageError::file(p, e))
    };
    let snapshot_bytes = size(snapshot)?;
    let mut log_bytes = 0;
    for (i, (first, path)) in files.segments.iter().enumerate() {
        let in_snapshot = files
            .segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= covered + 1);
        if *first <= seq && !in_snapshot {
            log_bytes += size(path)?;
        }
    }
    Ok(log_bytes.saturating_mul(100) >= snapshot_bytes.saturating_mul(percent))
}

/// Removes snapshots older than `seq` and segments whose records are all covered by it (the
/// newest segment too when `including_newest`, at shutdown when nothing follows).
pub(crate) fn remove_covered(
    dir: &Path,
    seq: u64,
    including_newest: bool,
) -> Result<(), StorageError> {
    let files = recovery::list(dir)?;
    for (s, path) in &files.snapshots {
        if *s < seq {
            std::fs::remove_file(path).map_err(|e| StorageError::file(path.clone(), e))?;
        }
    }
    for (i, (_, path)) in files.segments.iter().enumerate() {
        let covered = match files.segments.get(i + 1) {
            Some((next, _)) => *next <= seq + 1,
            None => including_newest,
        };
        if covered {
            std::fs::remove_file(path).map_err(|e| StorageError::file(path.clone(), e))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod policy_tests {
    use super::snapshot_due;
    use crate::storage::snapshot::snapshot_name;
    use crate::storage::wal::segment_name;

    fn file(dir: &std::path::Path, name: String, bytes: usize) {
        std::fs::write(dir.join(name), vec![1u8; bytes]).unwrap();
    }

    #[test]
    fn a_snapshot_is_due_once_the_log_since_the_last_reaches_its_percentage_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert!(snapshot_due(dir, 10, 100).unwrap(), "no snapshot yet");
        file(dir, segment_name(1), 7000); // covered by the snapshot at 10
        file(dir, snapshot_name(10), 10_000);
        file(dir, segment_name(11), 5000);
        file(dir, segment_name(20), 4000);
        file(dir, segment_name(30), 9000); // the open segment
        assert!(!snapshot_due(dir, 29, 100).unwrap(), "9,000 of 10,000");
        assert!(snapshot_due(dir, 29, 90).unwrap(), "9,000 of 9,000");
        assert!(snapshot_due(dir, 29, 0).unwrap(), "0: every sealed segment");
        file(dir, segment_name(40), 0);
        assert!(snapshot_due(dir, 39, 100).unwrap(), "18,000 of 10,000");
    }
}
