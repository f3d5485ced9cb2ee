//! The state machine: the engine, behind the same [`Store`] a single node uses, changed only by
//! committed log entries, and its snapshots.
//!
//! A snapshot is a single node's snapshot file (format, checksum and load checks included) of
//! the engine at a log index, in `snapshots/`, named by a small `snapshot.json` that also
//! holds openraft's meta (the last log id it covers and the membership then). The state itself
//! is not kept on disk otherwise: a restart loads the latest snapshot and openraft applies the
//! committed log after it again.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};

use super::{files, Node, NodeId, TypeConfig};
use crate::engine::image::Parts;
use crate::engine::Engine;
use crate::storage::{raft_files, snapshot, DurableHook};
use crate::store::Store;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};

pub(crate) struct StateMachine {
    store: Store,
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    /// The snapshot builds started, to name each uniquely.
    builds: u64,
}

fn storage_error(verb: ErrorVerb, e: impl ToString) -> StorageError<NodeId> {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        io::Error::other(e.to_string()),
    )
}

impl StateMachine {
    /// Loads the latest snapshot in `dir` (if any) into an engine; returns it with the state
    /// machine's position. The store is made from the engine by the caller.
    pub fn load(dir: &Path) -> io::Result<(Engine, Option<SnapshotMeta<NodeId, Node>>)> {
        let snapshots = dir.join("snapshots");
        fs::create_dir_all(&snapshots)?;
        let Some((meta, file)) = read_saved(dir)? else {
            return Ok((Engine::new(), None));
        };
        let (engine, _) = snapshot::load(&snapshots.join(&file))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok((engine, Some(meta)))
    }

    pub fn new(store: Store, dir: &Path, loaded: Option<SnapshotMeta<NodeId, Node>>) -> Self {
        let (last_applied, membership) = match loaded {
            Some(meta) => (meta.last_log_id, meta.last_membership),
            None => (None, StoredMembership::default()),
        };
        StateMachine {
            store,
            dir: dir.to_owned(),
            last_applied,
            membership,
            builds: 0,
        }
    }

    /// Makes `bytes` (a snapshot file) the current snapshot: written, synced, loaded (which
    /// checks it whole), then named in `snapshot.json`; older files removed.
    fn keep(dir: &Path, meta: &SnapshotMeta<NodeId, Node>, bytes: &[u8]) -> io::Result<Engine> {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let snapshots = dir.join("snapshots");
        let file = snapshot::snapshot_name(index);
        let path = snapshots.join(&file);
        let tmp = snapshots.join(format!("{file}.incoming"));
        {
            use std::io::Write;
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        fs::File::open(&snapshots)?.sync_all()?;
        let (engine, _) = snapshot::load(&path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        save(dir, meta, &file)?;
        Ok(engine)
    }
}

/// The current snapshot's meta and file name, from `snapshot.json`.
fn read_saved(dir: &Path) -> io::Result<Option<(SnapshotMeta<NodeId, Node>, String)>> {
    let path = dir.join("snapshot.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let saved = raft_files::decode_snapshot_meta(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            let file = saved.file.clone();
            Ok(Some((files::raft_snapshot_meta(saved), file)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Names `file` as the current snapshot (atomically), then removes every other snapshot file.
fn save(dir: &Path, meta: &SnapshotMeta<NodeId, Node>, file: &str) -> io::Result<()> {
    let tmp = dir.join("snapshot.json.tmp");
    fs::write(
        &tmp,
        raft_files::encode_json(&files::snapshot_meta(meta, file)),
    )?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join("snapshot.json"))?;
    fs::File::open(dir)?.sync_all()?;
    let snapshots = dir.join("snapshots");
    let index = meta.last_log_id.map_or(0, |l| l.index);
    for entry in fs::read_dir(&snapshots)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let older = snapshot::parse_snapshot_name(&name).is_some_and(|i| i < index);
        if older {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Reads the current snapshot whole, to send to a follower.
fn current(dir: &Path) -> io::Result<Option<Snapshot<TypeConfig>>> {
    let Some((meta, file)) = read_saved(dir)? else {
        return Ok(None);
    };
    let bytes = fs::read(dir.join("snapshots").join(&file))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes)),
    }))
}

/// A copy of the state at one log index, written out off the state machine's task.
pub struct Builder {
    dir: PathBuf,
    parts: Option<Parts<'static>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    id: String,
    store: Store,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let parts = self.parts.take().expect("a builder builds once");
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.id.clone(),
        };
        let dir = self.dir.clone();
        let written = meta.clone();
        let feed = self.store.feed().clone();
        let snapshot = tokio::task::spawn_blocking(move || -> io::Result<Snapshot<TypeConfig>> {
            // The change feed's events of the entries this snapshot covers reach the disk
            // first: once the log is purged, they could not be made again from it.
            feed.sync().map_err(|e| io::Error::other(e.to_string()))?;
            let path = write(&dir, &parts, &written)?;
            drop(parts);
            let bytes = fs::read(&path)?;
            Ok(Snapshot {
                meta: written,
                snapshot: Box::new(Cursor::new(bytes)),
            })
        })
        .await
        .map_err(|e| storage_error(ErrorVerb::Write, e))?
        .map_err(|e| storage_error(ErrorVerb::Write, e))?;
        if let Some(c) = &self.store.metrics().cluster {
            c.snapshots_built.inc();
        }
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot built"
        );
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(commands) => {
                    for command in commands {
                        self.store
                            .apply_committed(command)
                            .map_err(|why| storage_error(ErrorVerb::Write, why))?;
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership);
                }
            }
            self.last_applied = Some(log_id);
            out.push(());
        }
        if let (Some(c), Some(applied)) = (&self.store.metrics().cluster, self.last_applied) {
            c.applied_index.set(applied.index as i64);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builds += 1;
        let index = self.last_applied.map_or(0, |l| l.index);
        Builder {
            dir: self.dir.clone(),
            // Copied now, on the state machine's task, so it is the state at `last_applied`.
            parts: Some(self.store.copy_parts()),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            id: format!("{index}-{}-{}", std::process::id(), self.builds),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let dir = self.dir.clone();
        let kept = meta.clone();
        let engine = tokio::task::spawn_blocking(move || {
            StateMachine::keep(&dir, &kept, snapshot.get_ref())
        })
        .await
        .map_err(|e| storage_error(ErrorVerb::Read, e))?
        .map_err(|e| storage_error(ErrorVerb::Read, e))?;
        self.store.replace_engine(engine);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(c) = &self.store.metrics().cluster {
            c.snapshots_installed.inc();
            if let Some(applied) = self.last_applied {
                c.applied_index.set(applied.index as i64);
            }
        }
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot installed from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || current(&dir))
            .await
            .map_err(|e| storage_error(ErrorVerb::Read, e))?
            .map_err(|e| storage_error(ErrorVerb::Read, e))
    }
}

/// Writes `engine` as the snapshot a new cluster starts from: a single node's data becoming
/// the first member's (see docs/cluster.md).
pub fn seed(dir: &Path, engine: &Engine, meta: &SnapshotMeta<NodeId, Node>) -> io::Result<()> {
    fs::create_dir_all(dir.join("snapshots"))?;
    write(dir, &engine.parts(), meta).map(|_| ())
}

/// Writes `parts` as the snapshot `meta` describes and makes it the current one; returns its
/// path.
fn write(dir: &Path, parts: &Parts<'_>, meta: &SnapshotMeta<NodeId, Node>) -> io::Result<PathBuf> {
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let (path, _) = snapshot::write_parts(&dir.join("snapshots"), parts, index)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let file = path
        .file_name()
        .expect("a snapshot file has a name")
        .to_string_lossy()
        .into_owned();
    save(dir, meta, &file)?;
    Ok(path)
}
