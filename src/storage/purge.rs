//! The purge of a single node's files after an erasure (docs/API.md, "Erasure"): once it is done,
//! no file under the data directory holds a byte the erasures before it took away.
//!
//! 1. The writer seals the open segment (trimmed, synced) at the last record written, `seq`;
//!    every later record goes to a new segment, which can hold no erased value (the erasure is
//!    applied before anything after it).
//! 2. The snapshotter (the one thread that writes snapshots and removes files, so nothing races
//!    it) rebuilds the state at `seq` from the files, as it always does: its replay applies the
//!    erasures, which blank their strings, so the image it writes holds none of them.
//! 3. Every older snapshot and every segment the new snapshot covers is removed, then every
//!    backup's staging directory (a backup in progress is cut off: its download fails and must be
//!    taken again) and any temporary file left behind; the directory is synced.
//!
//! A crash at any point leaves a directory that recovers whole: the new snapshot is renamed into
//! place before anything is removed, and removal only drops what it covers. The erasures stay
//! pending in the ledger until the store records the purge, so a restart purges again.

use std::path::Path;
use std::time::{Duration, Instant};

use super::recovery::{self, Mode};
use super::{snapshot, sync_dir, StorageError};

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// The last record the new snapshot covers.
    pub seq: u64,
    /// The size of the snapshot written: the bytes the purge wrote.
    pub bytes: u64,
    /// Files and directories removed (older snapshots and segments, staging, temporary files).
    pub removed: usize,
    /// Backups in progress that were cut off.
    pub backups_cut: usize,
    pub elapsed: Duration,
}

/// A purge's answer, from the snapshotter thread.
pub(crate) type PurgeReply = std::sync::mpsc::Sender<Result<PurgeReport, String>>;

/// What the writer tells the snapshotter.
pub(crate) enum Sealed {
    /// Every record up to this one is in files that will not change again.
    Upto(u64),
    /// Likewise, and purge at it: `reply` hears how it went.
    Purge { seq: u64, reply: PurgeReply },
}

/// Rewrites the directory's files at `seq` (sealed) so that only the new snapshot and the log
/// after it remain (run on the snapshotter thread).
pub(crate) fn purge(dir: &Path, seq: u64) -> Result<PurgeReport, StorageError> {
    let started = Instant::now();
    let (engine, _) = recovery::recover(dir, Mode::UpTo(seq))?;
    let (_, bytes) = snapshot::write(dir, &engine, seq)?;
    drop(engine);
    let before = recovery::list(dir)?;
    let older = before.snapshots.iter().filter(|(s, _)| *s < seq).count()
        + before.segments.len().saturating_sub(1);
    super::remove_covered(dir, seq, false)?;
    let backups_cut = crate::tools::backup::remove_staging(dir);
    let mut removed = older + backups_cut;
    for tmp in recovery::list(dir)?.temporary {
        if std::fs::remove_file(&tmp).is_ok() {
            removed += 1;
        }
    }
    sync_dir(dir)?;
    Ok(PurgeReport {
        seq,
        bytes,
        removed,
        backups_cut,
        elapsed: started.elapsed(),
    })
}
