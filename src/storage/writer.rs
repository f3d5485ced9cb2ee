//! The log writer: threads that own the open segment. Handlers hand it encoded groups; whatever
//! has arrived is written as one batch and synced once for the whole batch (group commit), the
//! durable sequence number is published, and the segment rolls to a new one when full.
//!
//! With `--fsync always` four threads take turns: one writes a batch and starts its sync, and
//! while that sync runs the next writes the following batch and starts its own, so up to four
//! syncs are in flight at once. A sync's latency, not its work, bounds the writes a second on
//! the disks this runs on (on this project's virtual disk, 9,000 to 36,000 writes a second with
//! one sync at a time, 53,000 to 60,000 with four: BENCHMARKS.md, issue 24). Only one thread
//! writes at a time and writes land in order, so a sync started after a batch was written covers
//! it and every batch before it; completions may come in any order, and the durable sequence
//! number is the highest any completed sync covers. Each thread syncs through a descriptor of
//! its own, opened on the segment, so that a write-back error is reported to every sync it
//! concerns (the kernel reports an error once per open file, and a shared descriptor could let
//! one sync take the error another needed to see).
//!
//! The open segment is zero-filled ahead of the records (a mebibyte at a time) and records are
//! written over the zeros, so an fdatasync flushes data only: appending instead changed the file's
//! size on every batch, which cost every sync a journal commit (a third more time and CPU per
//! fsync on this machine). A sealed segment is cut to its records; recovery reads zeros after
//! the last record as the end of the log.
//!
//! A failed write or sync fails closed: memory may now hold changes the log lacks, and retrying
//! an fsync is not safe (its error may have dropped the dirty pages), so the writer stops for good
//! and every waiter and later append gets `StorageError::Unavailable` until restart.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::durable::Durability;
use super::frame::FILE_HEADER;
use super::purge::{PurgeReply, Sealed};
use super::segment::{is_full, Segment, PREALLOCATE_BYTES};
use super::wal::encode_group;
use super::{Faults, FsyncPolicy, StorageError};
use crate::engine::Change;

/// What a roll of the segment tells the snapshotter (see [`Sealed`]).
pub(crate) type SealedTx = std::sync::mpsc::Sender<Sealed>;

pub struct WriterOptions {
    pub dir: PathBuf,
    pub policy: FsyncPolicy,
    pub segment_bytes: u64,
    pub faults: Option<Arc<Faults>>,
    pub sealed: Option<SealedTx>,
    pub observer: Option<Arc<dyn super::LogObserver>>,
    pub hook: Option<Arc<dyn super::DurableHook>>,
}

/// Syncs in flight at once with `--fsync always` (threads taking turns); one otherwise.
const SYNCS_IN_FLIGHT: usize = 4;

struct Queue {
    buf: Vec<u8>,
    next_seq: u64,
    queued_seq: u64,
    stop: bool,
    /// Why the log must fail closed, found outside the thread writing: a change that did not
    /// apply (from the store), or a sync that failed (from the thread that ran it).
    poison: Option<io::Error>,
    /// Whether a writer thread waits for an append: only then does an append wake it, so
    /// that appends during a write or a sync make no system call.
    waiting: bool,
    /// A staged group is at the end of `buf` and must not be written until it is released
    /// (its facts are being applied; if they do not apply, it is dropped with the rest).
    held: bool,
    /// Purges asked for: the segment is sealed after what is queued, then the snapshotter
    /// purges at that point and answers each.
    purges: Vec<PurgeReply>,
}

/// Where the log ends, for a backup: the open segment (by its first sequence number), the length
/// of the whole groups written to it, and the last sequence number among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    pub segment: u64,
    pub bytes: u64,
    pub last_seq: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Why the log failed, for a person: set once, before `failed`.
    reason: Mutex<Option<String>>,
    /// Updated before a batch is acknowledged, so it covers every acknowledged change. Also
    /// orders acknowledgements: a batch is acknowledged under it, and only past the last one.
    end: Mutex<LogEnd>,
    wake: Condvar,
    durability: Durability,
    /// The open segment, held by the thread whose turn it is to write.
    turn: Mutex<Turn>,
    options: WriterOptions,
}

/// The handle handlers use; the threads behind it own the file.
pub struct LogWriter {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the writer on segment `wal-<last_seq + 1>`, creating it (or emptying a leftover
    /// segment of that name, which can hold no record).
    pub fn start(mut options: WriterOptions, last_seq: u64) -> Result<LogWriter, StorageError> {
        let segment = Segment::create(&options.dir, last_seq + 1, options.segment_bytes)?;
        let threads = match options.policy {
            FsyncPolicy::Always => SYNCS_IN_FLIGHT,
            FsyncPolicy::Interval | FsyncPolicy::Never => 1,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                buf: Vec::with_capacity(1 << 16),
                next_seq: last_seq + 1,
                queued_seq: last_seq,
                stop: false,
                poison: None,
                waiting: false,
                held: false,
                purges: Vec::new(),
            }),
            wake: Condvar::new(),
            reason: Mutex::new(None),
            end: Mutex::new(LogEnd {
                segment: last_seq + 1,
                bytes: FILE_HEADER as u64,
                last_seq,
            }),
            durability: Durability::new(last_seq),
            turn: Mutex::new(Turn {
                segment,
                batch: Vec::with_capacity(1 << 16),
                unsynced: false,
                last_sync: Instant::now(),
                written_seq: last_seq,
                purges: Vec::new(),
                sealed: options.sealed.take(),
                done: false,
            }),
            options,
        });
        let threads = (0..threads)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("wal-writer-{i}"))
                    .spawn(move || run(&shared))
                    .map_err(StorageError::Io)
            })
            .collect::<Result<_, _>>()?;
        Ok(LogWriter {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Queues one request's changes as a group; returns the sequence number of its last record.
    /// Call under the engine's lock so that log order is apply order.
    pub fn append(&self, changes: &[Change]) -> Result<u64, StorageError> {
        let last = self.stage(changes)?;
        self.release();
        Ok(last)
    }

    /// Queues a group that the writer holds back until [`LogWriter::release`]: the store
    /// applies its facts in between, and a fact that does not apply fails the store closed,
    /// which drops the group before it ever reaches the file. Call under the engine's lock.
    pub fn stage(&self, changes: &[Change]) -> Result<u64, StorageError> {
        let mut q = self.shared.queue.lock();
        if self.is_failed() || q.stop {
            return Err(StorageError::Unavailable);
        }
        let first = q.next_seq;
        let last = encode_group(&mut q.buf, first, changes);
        q.next_seq = last + 1;
        q.queued_seq = last;
        q.held = true;
        Ok(last)
    }

    /// Asks for a purge after everything queued so far (see `storage::purge`); `reply` hears
    /// how it went, or is dropped if the log fails first.
    pub(crate) fn purge(&self, reply: PurgeReply) -> Result<(), StorageError> {
        let mut q = self.shared.queue.lock();
        if self.is_failed() || q.stop {
            return Err(StorageError::Unavailable);
        }
        q.purges.push(reply);
        q.waiting = false;
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Lets the writer take the staged group.
    pub fn release(&self) {
        let mut q = self.shared.queue.lock();
        q.held = false;
        let wake = std::mem::take(&mut q.waiting);
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Fails closed for a reason found outside the writer: like a failed write, every later
    /// change and read is refused, and what was queued but not yet acknowledged is dropped (its
    /// requests are answered 503, "nothing changed") and cut from the segment.
    pub fn fail_closed(&self, reason: String) {
        let mut q = self.shared.queue.lock();
        q.buf.clear();
        q.held = false;
        q.poison = Some(io::Error::other(reason));
        self.shared.durability.set_failed();
        drop(q);
        self.shared.wake.notify_one();
    }

    /// The sequence number of the last record queued so far.
    pub fn queued_seq(&self) -> u64 {
        self.shared.queue.lock().queued_seq
    }

    pub fn is_failed(&self) -> bool {
        self.shared.durability.is_failed()
    }

    /// Why the log failed and what to do, once it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.reason.lock().clone()
    }

    /// Where the log ends now: everything acknowledged so far lies before it.
    pub fn end(&self) -> LogEnd {
        *self.shared.end.lock()
    }

    /// Waits until every record up to `seq` is durable (per the fsync policy).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        self.shared.durability.wait(seq).await
    }

    /// Writes and syncs what is queued, then stops the thread. Later appends are refused.
    pub fn close(&self) -> Result<(), StorageError> {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_one();
        for thread in std::mem::take(&mut *self.threads.lock()) {
            let _ = thread.join();
        }
        if self.is_failed() {
            Err(StorageError::Unavailable)
        } else {
            Ok(())
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// What the thread whose turn it is to write holds: the open segment and its bookkeeping.
struct Turn {
    segment: Segment,
    /// The batch being written (kept to reuse its allocation).
    batch: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    /// The last sequence number written (for batch sizes, and where a purge seals).
    written_seq: u64,
    /// The purges taken with the batch: the segment is sealed after it, for each.
    purges: Vec<PurgeReply>,
    /// Dropped when the log stops, which tells the snapshotter to stop too.
    sealed: Option<SealedTx>,
    /// The log has stopped (closed, or failed): a thread that takes its turn leaves.
    done: bool,
}

/// A batch written in a thread's turn, for that thread to sync after it.
struct Written {
    segment: u64,
    bytes: u64,
    seq: u64,
}

/// What a thread does after its turn.
enum Step {
    Again,
    Sync(Written),
    Leave,
}

const INTERVAL: Duration = Duration::from_secs(1);

/// One writer thread: takes its turn to write, then syncs what it wrote outside its turn, so
/// that another thread can write the next batch meanwhile.
fn run(shared: &Shared) {
    let mut own = OwnFile::default();
    let mut woken = Vec::new();
    loop {
        let step = {
            let mut turn = shared.turn.lock();
            shared.take_turn(&mut turn, &mut own, &mut woken)
        };
        match step {
            Step::Again => {}
            Step::Leave => return,
            Step::Sync(written) => match own.sync(shared) {
                Ok(()) => shared.acknowledge(&written, &mut woken),
                Err(error) => shared.sync_failed(error),
            },
        }
    }
}

/// A thread's own descriptor on the open segment, for its syncs (see the module comment).
#[derive(Default)]
struct OwnFile {
    segment: u64,
    file: Option<File>,
}

impl OwnFile {
    /// Opens the segment unless this is already a descriptor on it (in a turn, so that the
    /// segment surely exists).
    fn open(&mut self, segment: &Segment) -> io::Result<()> {
        if self.file.is_none() || self.segment != segment.first_seq {
            self.file = Some(File::open(&segment.path)?);
            self.segment = segment.first_seq;
        }
        Ok(())
    }

    fn sync(&self, shared: &Shared) -> io::Result<()> {
        let file = self.file.as_ref().expect("opened in the turn that wrote");
        shared.timed_sync(file)
    }
}

impl Shared {
    /// Writes what is queued (after waiting for it); the sync, with `--fsync always`, is left
    /// to the caller after its turn unless the segment is sealed or the log stops now.
    fn take_turn(&self, turn: &mut Turn, own: &mut OwnFile, woken: &mut Vec<Waker>) -> Step {
        if turn.done {
            return Step::Leave;
        }
        let (last_seq, stop, poison) = self.next_batch(turn);
        if let Some(error) = poison {
            self.fail(turn, error);
            return Step::Leave;
        }
        match self.write(turn, last_seq, stop, own, woken) {
            Ok(step) => step,
            Err(error) => {
                self.fail(turn, error);
                Step::Leave
            }
        }
    }

    /// Waits for work and takes everything queued into `turn.batch` (and the purges asked for,
    /// once no group is held back); returns its last seq, whether to stop, and why to fail, if
    /// the log must.
    fn next_batch(&self, turn: &mut Turn) -> (u64, bool, Option<io::Error>) {
        let mut q = self.queue.lock();
        let idle = |q: &Queue| (q.buf.is_empty() && q.purges.is_empty()) || q.held;
        while idle(&q) && !q.stop && q.poison.is_none() {
            q.waiting = true;
            if self.options.policy == FsyncPolicy::Interval && turn.unsynced {
                let left = INTERVAL.saturating_sub(turn.last_sync.elapsed());
                if self.wake.wait_for(&mut q, left).timed_out() {
                    break;
                }
            } else {
                self.wake.wait(&mut q);
            }
        }
        q.waiting = false;
        turn.batch.clear();
        std::mem::swap(&mut q.buf, &mut turn.batch);
        if !q.held {
            turn.purges.append(&mut q.purges);
        }
        (q.queued_seq, q.stop, q.poison.take())
    }

    fn write(
        &self,
        turn: &mut Turn,
        last_seq: u64,
        stop: bool,
        own: &mut OwnFile,
        woken: &mut Vec<Waker>,
    ) -> io::Result<Step> {
        if !turn.batch.is_empty() {
            self.fault(|f| &f.fail_writes)?;
            turn.segment
                .append(&turn.batch, self.options.segment_bytes)?;
            turn.unsynced = true;
            if let Some(o) = &self.options.observer {
                o.batch_written(last_seq - turn.written_seq, turn.batch.len() as u64);
            }
            turn.written_seq = last_seq;
            let written = Written {
                segment: turn.segment.first_seq,
                bytes: turn.segment.bytes,
                seq: last_seq,
            };
            let full = turn.segment.bytes >= self.options.segment_bytes;
            let seals = full || stop || !turn.purges.is_empty();
            if self.options.policy == FsyncPolicy::Always {
                if !seals {
                    own.open(&turn.segment)?;
                    return Ok(Step::Sync(written));
                }
                self.sync(turn)?;
            }
            self.acknowledge(&written, woken);
            if full {
                self.roll(turn, last_seq)?;
            }
        }
        self.seal_for_purges(turn)?;
        if stop {
            // Left for good: exactly the records, synced whatever the policy.
            turn.done = true;
            turn.sealed = None;
            if turn.segment.trim()? || turn.unsynced {
                self.sync(turn)?;
            }
            return Ok(Step::Leave);
        }
        let due =
            self.options.policy == FsyncPolicy::Interval && turn.last_sync.elapsed() >= INTERVAL;
        if turn.unsynced && due {
            self.sync(turn)?;
        }
        Ok(Step::Again)
    }

    /// Syncs the open segment in the turn (sealing it, stopping, or once an interval).
    fn sync(&self, turn: &mut Turn) -> io::Result<()> {
        self.timed_sync(&turn.segment.file)?;
        turn.unsynced = false;
        turn.last_sync = Instant::now();
        Ok(())
    }

    fn timed_sync(&self, file: &File) -> io::Result<()> {
        self.fault(|f| &f.fail_syncs)?;
        let started = Instant::now();
        file.sync_data()?;
        if let Some(o) = &self.options.observer {
            o.synced(started.elapsed());
        }
        Ok(())
    }

    /// Acknowledges every record up to `written.seq`, which is durable, unless a later one
    /// already was or the log has failed; wakes the requests waiting for them.
    fn acknowledge(&self, written: &Written, woken: &mut Vec<Waker>) {
        {
            let mut end = self.end.lock();
            if self.durability.is_failed() || written.seq <= end.last_seq {
                return;
            }
            *end = LogEnd {
                segment: written.segment,
                bytes: written.bytes,
                last_seq: written.seq,
            };
            // Under `end`, so that the feed hears of durability in order, and before any
            // waiter is answered.
            if let Some(hook) = &self.options.hook {
                hook.durable(written.seq);
            }
        }
        self.durability.publish(written.seq, woken);
    }

    /// A sync outside a turn failed: nothing is acknowledged from now on (ordered by `end`
    /// against `acknowledge`), and whoever takes the next turn fails the log closed.
    fn sync_failed(&self, error: io::Error) {
        {
            let _end = self.end.lock();
            self.durability.set_failed();
        }
        let mut q = self.queue.lock();
        q.poison.get_or_insert(error);
        drop(q);
        self.wake.notify_one();
    }

    /// For the purges taken: seals the segment at the last record written (unless it holds
    /// none, so the one before is sealed there already) and hands each to the snapshotter.
    fn seal_for_purges(&self, turn: &mut Turn) -> io::Result<()> {
        if turn.purges.is_empty() {
            return Ok(());
        }
        let seq = turn.written_seq;
        if turn.segment.bytes > FILE_HEADER as u64 {
            self.roll_quietly(turn, seq)?;
        }
        for reply in std::mem::take(&mut turn.purges) {
            if let Some(tx) = &turn.sealed {
                let _ = tx.send(Sealed::Purge { seq, reply });
            }
        }
        Ok(())
    }

    /// Seals the current segment (synced whatever the policy), starts the next one, and tells
    /// the snapshotter.
    fn roll(&self, turn: &mut Turn, last_seq: u64) -> io::Result<()> {
        self.roll_quietly(turn, last_seq)?;
        if let Some(tx) = &turn.sealed {
            let _ = tx.send(Sealed::Upto(last_seq));
        }
        Ok(())
    }

    /// [`Shared::roll`] without telling the snapshotter.
    fn roll_quietly(&self, turn: &mut Turn, last_seq: u64) -> io::Result<()> {
        turn.segment.trim()?;
        self.sync(turn)?;
        let next = Segment::create(&self.options.dir, last_seq + 1, self.options.segment_bytes)
            .map_err(StorageError::into_io)?;
        tracing::debug!(sealed = %turn.segment.path.display(), "log segment sealed");
        turn.segment = next;
        *self.end.lock() = LogEnd {
            segment: last_seq + 1,
            bytes: FILE_HEADER as u64,
            last_seq,
        };
        Ok(())
    }

    fn fail(&self, turn: &mut Turn, error: io::Error) {
        turn.done = true;
        turn.sealed = None;
        // A purge asked for hears that the log failed (its reply is dropped).
        turn.purges.clear();
        self.queue.lock().purges.clear();
        let reason = if is_full(&error) {
            super::disk_full(&self.options.dir, PREALLOCATE_BYTES).to_string()
        } else {
            format!("writing the log in {} failed ({error}); restart the server to recover from the log", self.options.dir.display())
        };
        tracing::error!(file = %turn.segment.path.display(), %error, next_step = %reason,
            "write-ahead log failed; refusing every request that reads or changes contacts until restart");
        *self.reason.lock() = Some(reason);
        // Every request of a failed batch is answered 503 ("nothing changed"), so its bytes,
        // though written, must not come back at the restart's replay: cut the segment back to
        // what was acknowledged. Best effort, as the disk is failing; never past an
        // acknowledged byte.
        let keep = {
            let _end = self.end.lock();
            self.durability.set_failed();
            match *_end {
                end if end.segment == turn.segment.first_seq => end.bytes,
                _ => FILE_HEADER as u64,
            }
        };
        let cut = turn.segment.file.set_len(keep);
        if let Err(error) = cut.and_then(|()| turn.segment.file.sync_all()) {
            tracing::error!(file = %turn.segment.path.display(), %error,
                "could not cut the unacknowledged batch off the log");
        }
        self.durability.fail();
    }

    fn fault(&self, which: impl Fn(&Faults) -> &AtomicBool) -> io::Result<()> {
        match &self.options.faults {
            Some(f) if which(f).load(Ordering::Acquire) => {
                Err(io::Error::other("injected storage fault"))
            }
            _ => Ok(()),
        }
    }
}
