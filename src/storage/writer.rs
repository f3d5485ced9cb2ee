//! The log writer: one thread owns the open segment. Handlers hand it encoded groups; it writes
//! whatever has arrived as one batch, syncs once for the whole batch (group commit), publishes
//! the durable sequence number, and rolls to a new segment when the current one is full.
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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::frame::{write_file_header, FILE_HEADER, FORMAT_VERSION};
use super::purge::{PurgeReply, Sealed};
use super::wal::{encode_group, segment_name, WAL_MAGIC};
use super::{sync_dir, Faults, FsyncPolicy, StorageError};
use crate::engine::Change;

/// How far the log is durable, as published to waiting handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durable {
    pub seq: u64,
    pub failed: bool,
}

/// What a roll of the segment tells the snapshotter (see [`Sealed`]).
pub(crate) type SealedTx = std::sync::mpsc::Sender<Sealed>;

pub(crate) struct WriterOptions {
    pub dir: PathBuf,
    pub policy: FsyncPolicy,
    pub segment_bytes: u64,
    pub faults: Option<Arc<Faults>>,
    pub sealed: Option<SealedTx>,
    pub observer: Option<Arc<dyn super::LogObserver>>,
}

struct Queue {
    buf: Vec<u8>,
    next_seq: u64,
    queued_seq: u64,
    stop: bool,
    /// A staged group is at the end of `buf` and must not be written until it is released
    /// (its facts are being applied; if they do not apply, it is dropped with the rest).
    held: bool,
    /// Why the store failed closed from outside the writer (a change that did not apply).
    poison: Option<String>,
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
    /// Updated before a batch is acknowledged, so it covers every acknowledged change.
    end: Mutex<LogEnd>,
    wake: Condvar,
    durable: AtomicU64,
    failed: AtomicBool,
    published: watch::Sender<Durable>,
}

/// The handle handlers use; the thread behind it owns the file.
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    /// Starts the writer on segment `wal-<last_seq + 1>`, creating it (or emptying a leftover
    /// segment of that name, which can hold no record).
    pub fn start(options: WriterOptions, last_seq: u64) -> Result<LogWriter, StorageError> {
        let segment = Segment::create(&options.dir, last_seq + 1, options.segment_bytes)?;
        let (published, _) = watch::channel(Durable {
            seq: last_seq,
            failed: false,
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                buf: Vec::with_capacity(1 << 16),
                next_seq: last_seq + 1,
                queued_seq: last_seq,
                stop: false,
                held: false,
                poison: None,
                purges: Vec::new(),
            }),
            wake: Condvar::new(),
            reason: Mutex::new(None),
            end: Mutex::new(LogEnd {
                segment: last_seq + 1,
                bytes: FILE_HEADER as u64,
                last_seq,
            }),
            durable: AtomicU64::new(last_seq),
            failed: AtomicBool::new(false),
            published,
        });
        let worker = Worker {
            shared: shared.clone(),
            segment,
            options,
            unsynced: false,
            last_sync: Instant::now(),
            written_seq: last_seq,
        };
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || worker.run())
            .map_err(StorageError::Io)?;
        Ok(LogWriter {
            shared,
            thread: Mutex::new(Some(thread)),
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
    pub(crate) fn stage(&self, changes: &[Change]) -> Result<u64, StorageError> {
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
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Lets the writer take the staged group.
    pub fn release(&self) {
        self.shared.queue.lock().held = false;
        self.shared.wake.notify_one();
    }

    /// Fails closed for a reason found outside the writer: like a failed write, every later
    /// change and read is refused, and what was queued but not yet acknowledged is dropped (its
    /// requests are answered 503, "nothing changed") and cut from the segment.
    pub(crate) fn fail_closed(&self, reason: String) {
        let mut q = self.shared.queue.lock();
        q.buf.clear();
        q.held = false;
        q.poison = Some(reason);
        self.shared.failed.store(true, Ordering::Release);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// The sequence number of the last record queued so far.
    pub(crate) fn queued_seq(&self) -> u64 {
        self.shared.queue.lock().queued_seq
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
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
        if self.shared.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let mut rx = self.shared.published.subscribe();
        let state = rx
            .wait_for(|d| d.seq >= seq || d.failed)
            .await
            .map_err(|_| StorageError::Unavailable)?;
        if state.seq >= seq {
            Ok(())
        } else {
            Err(StorageError::Unavailable)
        }
    }

    /// Writes and syncs what is queued, then stops the thread. Later appends are refused.
    pub fn close(&self) -> Result<(), StorageError> {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
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

/// Zeros written ahead of the records at a time.
pub(crate) const PREALLOCATE_BYTES: u64 = 1 << 20;
/// The least room a new segment must find on the disk; less is reported as a full disk.
pub(crate) const MIN_RESERVE: u64 = 64 << 10;

/// Whether `e` means the disk (or the process's quota) has no room left.
fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

struct Segment {
    file: File,
    path: PathBuf,
    first_seq: u64,
    /// The end of the records.
    bytes: u64,
    /// The file's length: zeros from `bytes` to here.
    allocated: u64,
    /// The length up to the last batch published (acknowledged): what a failure cuts back to.
    published: u64,
}

impl Segment {
    /// Creates the segment and fills zeros ahead of its first records: as many as fit, down to
    /// [`MIN_RESERVE`], below which the disk is reported full (so a server on a full disk says so
    /// at start-up instead of failing its first write).
    fn create(dir: &Path, first_seq: u64, limit: u64) -> Result<Segment, StorageError> {
        let path = dir.join(segment_name(first_seq));
        let io = |e: io::Error| match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                super::disk_full(dir, MIN_RESERVE)
            }
            _ => StorageError::file(path.clone(), e),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        write_file_header(&mut file, WAL_MAGIC, FORMAT_VERSION, first_seq).map_err(io)?;
        let mut segment = Segment {
            file,
            path: path.clone(),
            first_seq,
            bytes: FILE_HEADER as u64,
            allocated: FILE_HEADER as u64,
            published: FILE_HEADER as u64,
        };
        let mut reserve = PREALLOCATE_BYTES.min(limit.saturating_sub(FILE_HEADER as u64));
        while let Err(e) = segment.fill(FILE_HEADER as u64, FILE_HEADER as u64 + reserve) {
            if reserve <= MIN_RESERVE || !is_full(&e) {
                return Err(io(e));
            }
            reserve /= 2;
        }
        segment.file.sync_all().map_err(io)?;
        sync_dir(dir)?;
        Ok(segment)
    }

    /// Zeros from `from` (or the end of the zeros already there) to `target`; on failure the
    /// zeros written stay, so `allocated` becomes the file's length.
    fn fill(&mut self, from: u64, target: u64) -> io::Result<()> {
        let from = from.max(self.allocated);
        if target <= from {
            return Ok(());
        }
        let result = self
            .file
            .write_all_at(&vec![0; (target - from) as usize], from);
        self.allocated = match &result {
            Ok(()) => target,
            Err(_) => self.file.metadata()?.len().max(self.allocated),
        };
        result
    }

    /// Writes `batch` after the records, first zero-filling the file ahead of them when the
    /// zeros run out (up to `limit`, the size at which the segment is sealed).
    /// When the disk has no room for the zeros, the batch is written without them (each sync
    /// then also commits the file's new size); only a batch that does not fit fails.
    fn append(&mut self, batch: &[u8], limit: u64) -> io::Result<()> {
        let end = self.bytes + batch.len() as u64;
        if end > self.allocated {
            let target = limit.min(self.allocated + PREALLOCATE_BYTES).max(end);
            match self.fill(end, target) {
                Err(e) if is_full(&e) => tracing::warn!(file = %self.path.display(),
                    "the disk is nearly full: writing the log without filling ahead"),
                other => other?,
            }
        }
        self.file.write_all_at(batch, self.bytes)?;
        self.bytes = end;
        self.allocated = self.allocated.max(end);
        Ok(())
    }

    /// Cuts the zeros off, leaving exactly the records; whether there were any.
    fn trim(&mut self) -> io::Result<bool> {
        if self.allocated == self.bytes {
            return Ok(false);
        }
        self.file.set_len(self.bytes)?;
        self.allocated = self.bytes;
        Ok(true)
    }
}

struct Worker {
    shared: Arc<Shared>,
    segment: Segment,
    options: WriterOptions,
    unsynced: bool,
    last_sync: Instant,
    /// The last sequence number written (for batch sizes).
    written_seq: u64,
}

const INTERVAL: Duration = Duration::from_secs(1);

impl Worker {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(1 << 16);
        let mut purges = Vec::new();
        loop {
            let (last_seq, stop) = self.next_batch(&mut batch, &mut purges);
            if let Some(reason) = self.shared.queue.lock().poison.take() {
                self.fail(io::Error::other(reason));
                return;
            }
            let result = self
                .write(&batch, last_seq)
                .and_then(|()| self.sync_if_due(stop))
                .and_then(|()| self.seal_for(&mut purges));
            batch.clear();
            if let Err(e) = result {
                self.fail(e);
                return;
            }
            if stop {
                return;
            }
        }
    }

    /// Waits for work and takes everything queued (purges too, once no group is held back);
    /// returns its last seq and whether to stop.
    fn next_batch(&self, batch: &mut Vec<u8>, purges: &mut Vec<PurgeReply>) -> (u64, bool) {
        let mut q = self.shared.queue.lock();
        let idle = |q: &Queue| (q.buf.is_empty() && q.purges.is_empty()) || q.held;
        while idle(&q) && !q.stop && q.poison.is_none() {
            if self.options.policy == FsyncPolicy::Interval && self.unsynced {
                let left = INTERVAL.saturating_sub(self.last_sync.elapsed());
                if self.shared.wake.wait_for(&mut q, left).timed_out() {
                    break;
                }
            } else {
                self.shared.wake.wait(&mut q);
            }
        }
        std::mem::swap(&mut q.buf, batch);
        if !q.held {
            purges.append(&mut q.purges);
        }
        (q.queued_seq, q.stop)
    }

    /// For the purges asked for: seals the segment at the last record written (unless it holds
    /// none, so the one before is sealed there already) and hands each to the snapshotter.
    fn seal_for(&mut self, purges: &mut Vec<PurgeReply>) -> io::Result<()> {
        if purges.is_empty() {
            return Ok(());
        }
        let seq = self.written_seq;
        if self.segment.bytes > FILE_HEADER as u64 {
            self.roll_quietly(seq)?;
        }
        for reply in purges.drain(..) {
            if let Some(tx) = &self.options.sealed {
                let _ = tx.send(Sealed::Purge { seq, reply });
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: &[u8], last_seq: u64) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.fault(|f| &f.fail_writes)?;
        self.segment.append(batch, self.options.segment_bytes)?;
        self.unsynced = true;
        if let Some(o) = &self.options.observer {
            o.batch_written(last_seq - self.written_seq, batch.len() as u64);
        }
        self.written_seq = last_seq;
        if self.options.policy == FsyncPolicy::Always {
            self.sync()?;
        }
        *self.shared.end.lock() = LogEnd {
            segment: self.segment.first_seq,
            bytes: self.segment.bytes,
            last_seq,
        };
        self.publish(last_seq);
        self.segment.published = self.segment.bytes;
        if self.segment.bytes >= self.options.segment_bytes {
            self.roll(last_seq)?;
        }
        Ok(())
    }

    fn sync_if_due(&mut self, stop: bool) -> io::Result<()> {
        if stop {
            // Left for good: exactly the records, synced whatever the policy.
            let trimmed = self.segment.trim()?;
            if trimmed || self.unsynced {
                self.sync()?;
            }
            return Ok(());
        }
        let due =
            self.options.policy == FsyncPolicy::Interval && self.last_sync.elapsed() >= INTERVAL;
        if self.unsynced && due {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.fault(|f| &f.fail_syncs)?;
        let started = Instant::now();
        self.segment.file.sync_data()?;
        if let Some(o) = &self.options.observer {
            o.synced(started.elapsed());
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the current segment (synced whatever the policy) and starts the next one.
    fn roll(&mut self, last_seq: u64) -> io::Result<()> {
        self.roll_quietly(last_seq)?;
        if let Some(tx) = &self.options.sealed {
            let _ = tx.send(Sealed::Upto(last_seq));
        }
        Ok(())
    }

    /// [`Worker::roll`] without telling the snapshotter.
    fn roll_quietly(&mut self, last_seq: u64) -> io::Result<()> {
        self.segment.trim()?;
        self.sync()?;
        let next = Segment::create(&self.options.dir, last_seq + 1, self.options.segment_bytes)
            .map_err(StorageError::into_io)?;
        tracing::debug!(sealed = %self.segment.path.display(), "log segment sealed");
        self.segment = next;
        *self.shared.end.lock() = LogEnd {
            segment: last_seq + 1,
            bytes: FILE_HEADER as u64,
            last_seq,
        };
        Ok(())
    }

    fn publish(&self, seq: u64) {
        self.shared.durable.store(seq, Ordering::Release);
        self.shared
            .published
            .send_replace(Durable { seq, failed: false });
    }

    fn fail(&self, error: io::Error) {
        let reason = if is_full(&error) {
            super::disk_full(&self.options.dir, PREALLOCATE_BYTES).to_string()
        } else {
            format!("writing the log in {} failed ({error}); restart the server to recover from the log", self.options.dir.display())
        };
        tracing::error!(file = %self.segment.path.display(), %error, next_step = %reason,
            "write-ahead log failed; refusing every request that reads or changes contacts until restart");
        *self.shared.reason.lock() = Some(reason);
        // Every request of the failed batch is answered 503 ("nothing changed"), so its bytes,
        // though written, must not come back at the restart's replay: cut the segment back to
        // what was published. Best effort, as the disk is failing; never past a published byte.
        let cut = self.segment.file.set_len(self.segment.published);
        if let Err(error) = cut.and_then(|()| self.segment.file.sync_all()) {
            tracing::error!(file = %self.segment.path.display(), %error,
                "could not cut the unacknowledged batch off the log");
        }
        self.shared.failed.store(true, Ordering::Release);
        let seq = self.shared.durable.load(Ordering::Acquire);
        self.shared
            .published
            .send_replace(Durable { seq, failed: true });
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
