//! A Raft member's purge after an erasure (docs/API.md, "Erasure"; docs/erasure.md). The erasure's command (which
//! carries the value the client named) and every earlier command naming an erased value sit in
//! each member's log, and the state before it in each member's snapshots; each member rewrites
//! its own files:
//!
//! 1. seal the segment being appended to at its last entry `L`, so that no segment holds both
//!    entries up to `L` and entries after (and remove at once those an earlier purge covered:
//!    one installing a snapshot leaves the last segment, however old);
//! 2. once the state machine has applied `L`, build a snapshot (openraft's `trigger().snapshot()`)
//!    at an index at or past it: the state then has the erased values blanked;
//! 3. purge the log through the snapshot (`trigger().purge_log`, which purges only what a snapshot
//!    covers, whatever `--raft-keep-entries` says): every sealed segment goes; writing the new
//!    snapshot already removed the older ones;
//! 4. remove what else could hold a value: snapshot files older than the current one, the
//!    seeding directory, and the single node's files a cluster was seeded from (superseded by
//!    the cluster's own). A snapshot half written or received when a member stops is removed
//!    when it starts again (`remove_partial`), before anything writes one.
//!
//! Each member schedules this itself, at the earliest due erasure it has not purged, when it
//! applies one (or installs a state holding one). Whether the ledger says `done` is replicated
//! state, so it is decided once: the leader asks every member how far it has purged (this
//! process's own record, kept in memory: a member that restarts purges again before it says)
//! and, once all of them have purged an erasure, proposes `Op::Purge` for it. `done` thus means
//! that every member of the group at that time had rewritten its files; a member that is down
//! keeps an erasure pending until it comes back (and purges) or is removed.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};

use super::{Member, Node, NodeId};
use crate::engine::{Cause, Engine, Op, Timestamp};
use crate::store::Origin;

/// How long each wait of a purge may take before the purge is tried again from the start.
const STEP: Duration = Duration::from_secs(30);
/// How often the leader asks the members again while an erasure waits for one of them.
const ASK_EVERY: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(5);

/// The earliest start of a purge this member owes (erasures it has not purged) and the newest
/// such erasure.
fn owed(engine: &Engine, purged_through: u64) -> Option<(i64, u64)> {
    let owed = || engine.pending_erasures().filter(|e| e.id > purged_through);
    let start = owed()
        .map(|e| {
            let window = (e.purge_by.0 - e.requested_at.0).max(0);
            e.purge_by.0 - (window / 10).min(600_000)
        })
        .min()?;
    Some((start, owed().map(|e| e.id).max()?))
}

/// The member's purge loop, for as long as it runs.
pub(super) async fn run(member: Arc<Member>) {
    let store = member.store.clone();
    let mut changes = store.ledger_changes();
    loop {
        changes.mark_unchanged();
        let through = member.purged_through.load(Ordering::Acquire);
        let owed = store.peek(|e| owed(e, through));
        let now = Timestamp::now().0;
        if let Some((start, newest)) = owed.filter(|(start, _)| *start <= now) {
            match purge_here(&member).await {
                Ok(()) => {
                    member.purged_through.fetch_max(newest, Ordering::AcqRel);
                    tracing::info!(
                        through = newest,
                        "this member's files are purged of erased values"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, start, "purging this member's files failed; trying again shortly");
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        }
        let waiting = store.peek(|e| e.pending_erasures().next().is_some());
        if waiting && member.raft.metrics().borrow().state == ServerState::Leader {
            mark_done(&member).await;
        }
        let until_due = owed.map(|(start, _)| Duration::from_millis((start - now).max(0) as u64));
        let wait = match (until_due, waiting) {
            (Some(due), true) => due.min(ASK_EVERY),
            (Some(due), false) => due,
            (None, true) => ASK_EVERY,
            (None, false) => Duration::MAX,
        };
        tokio::select! {
            () = sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

async fn sleep(wait: Duration) {
    if wait == Duration::MAX {
        std::future::pending::<()>().await
    } else {
        tokio::time::sleep(wait).await
    }
}

/// Rewrites this member's files (steps 1 to 4 above).
async fn purge_here(member: &Member) -> Result<(), String> {
    let applied = |m: &RaftMetrics<NodeId, Node>| m.last_applied.map_or(0, |l| l.index);
    let sealed = member.log.roll().await.map_err(|e| e.to_string())?;
    let target = sealed
        .unwrap_or(0)
        .max(applied(&member.raft.metrics().borrow()));
    let what = "the sealed entries to apply";
    wait_for(member, what, |m| applied(m) >= target, Nudge::Nothing).await?;
    let covered = |m: &RaftMetrics<NodeId, Node>| m.snapshot.is_some_and(|s| s.index >= target);
    let what = "a snapshot past the erasure";
    wait_for(member, what, covered, Nudge::Snapshot).await?;
    let snapshot = (member.raft.metrics().borrow().snapshot).map_or(target, |s| s.index);
    let purged = |m: &RaftMetrics<NodeId, Node>| m.purged.is_some_and(|p| p.index >= target);
    let what = "the log purged through it";
    wait_for(member, what, purged, Nudge::PurgeLog(snapshot)).await?;
    member.log.barrier().await.map_err(|e| e.to_string())?;
    remove_leftovers(&member.data_dir).map_err(|e| e.to_string())
}

/// What a wait asks of openraft meanwhile, every second (a trigger may be passed over while
/// openraft is busy with the same).
#[derive(Clone, Copy)]
enum Nudge {
    Nothing,
    Snapshot,
    PurgeLog(u64),
}

/// Waits until the metrics satisfy `done`, nudging meanwhile; gives up after `STEP`.
async fn wait_for(
    member: &Member,
    what: &str,
    done: impl Fn(&RaftMetrics<NodeId, Node>) -> bool,
    nudge: Nudge,
) -> Result<(), String> {
    let mut metrics = member.raft.metrics();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if done(&metrics.borrow_and_update()) {
            return Ok(());
        }
        let trigger = member.raft.trigger();
        let nudged = match nudge {
            Nudge::Nothing => Ok(()),
            Nudge::Snapshot => trigger.snapshot().await,
            Nudge::PurgeLog(index) => trigger.purge_log(index).await,
        };
        nudged.map_err(|e| e.to_string())?;
        let tick = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        match tokio::time::timeout_at(tick, metrics.changed()).await {
            Ok(Err(_)) => return Err("this member's Raft stopped".into()),
            Ok(Ok(())) => {}
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("gave up waiting for {what}"));
            }
            Err(_) => {}
        }
    }
}

/// Removes the files besides the current snapshot and the log that could hold an erased value:
/// snapshots older than the current one (which writing it removes, unless that was cut short),
/// and the single node's files. Files being written meanwhile (a snapshot under construction, a
/// transfer arriving) are newer than what is purged; left over from a crash, they are removed
/// at start-up (`remove_partial`).
fn remove_leftovers(data_dir: &Path) -> std::io::Result<()> {
    let raft = data_dir.join("raft");
    let current = std::fs::read(raft.join("snapshot.json"))
        .ok()
        .and_then(|b| crate::storage::raft_files::decode_snapshot_meta(&b).ok())
        .and_then(|meta| meta.last_log_id.map(|l| l.index));
    for entry in std::fs::read_dir(raft.join("snapshots"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = crate::storage::snapshot::parse_snapshot_name(&name);
        if index
            .zip(current)
            .is_some_and(|(index, current)| index < current)
        {
            remove(&entry.path());
        }
    }
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let single_node = crate::storage::wal::parse_segment_name(&name).is_some()
            || crate::storage::snapshot::parse_snapshot_name(&name).is_some()
            || name.starts_with("backup-staging-")
            || name.ends_with(".tmp")
            || name == "raft.seeding";
        if single_node {
            remove(&entry.path());
        }
    }
    crate::storage::sync_dir(data_dir).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Removes what a crash may have left half written under the member's `raft/` (a snapshot
/// being built or received, a small file being replaced): it may hold values erased since.
/// Called before the member's Raft starts, when nothing writes them.
pub(super) fn remove_partial(raft: &Path) {
    for dir in [raft.to_owned(), raft.join("snapshots")] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.ends_with(".incoming") {
                remove(&entry.path());
            }
        }
    }
}

fn remove(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(error) = removed {
        tracing::warn!(file = %path.display(), %error, "could not remove a file a purge removes");
    }
}

/// The leader: once every member has purged the pending erasures up to some id, records that
/// they are done (a replicated fact, so the ledger says the same on every member).
async fn mark_done(member: &Arc<Member>) {
    let mut through = member.purged_through.load(Ordering::Acquire);
    for peer in member
        .status()
        .members
        .into_iter()
        .filter(|p| p.id != member.id)
    {
        match super::http::purged_through(member, &peer.addr).await {
            Some(theirs) => through = through.min(theirs),
            None => return,
        }
    }
    let erasures: Vec<u64> = member.store.peek(|e| {
        (e.pending_erasures().map(|e| e.id))
            .filter(|&id| id <= through)
            .collect()
    });
    if erasures.is_empty() {
        return;
    }
    let op = Op::Purge { erasures };
    match member
        .store
        .execute(op, Origin::tool(Cause::Erasure), |_, _| ())
        .await
    {
        Ok(()) => tracing::info!(through, "every member has purged; the erasures are done"),
        Err(error) => tracing::warn!(%error, "recording a purge failed; trying again shortly"),
    }
}
