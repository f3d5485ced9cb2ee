//! The change feed: every change to the identities as an ordered, resumable stream of events
//! (ids and primaries only). The store makes each op's events where it applies it (see
//! [`crate::engine::events`]) and hands them here; they become visible, and are written to the
//! feed's files, once the change is durable: at once on a Raft member (an applied entry is
//! committed), and on a single node when the log writer says their records are durable (the
//! [`DurableHook`]). Readers page through them by sequence number, or wait for the next.
//!
//! Memory is bounded: the newest events (up to [`RECENT_CONTACTS`] contacts in all) are kept in
//! memory for readers; older ones are read from the files; a reader holds one page at a time.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::engine::Event;
use crate::storage::feed_files::FeedFiles;
use crate::storage::{DurableHook, StorageError};

/// Contacts named by the events kept in memory, at most (about 16 bytes each).
pub const RECENT_CONTACTS: usize = 200_000;
/// The feed's default retention: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The feed's default size bound: 1 GiB.
pub const DEFAULT_RETENTION_BYTES: u64 = 1 << 30;

/// How long and how much history the feed keeps.
#[derive(Clone, Copy, Debug)]
pub struct FeedOptions {
    pub retention: Duration,
    pub retention_bytes: u64,
}

impl Default for FeedOptions {
    fn default() -> FeedOptions {
        FeedOptions {
            retention: DEFAULT_RETENTION,
            retention_bytes: DEFAULT_RETENTION_BYTES,
        }
    }
}

impl FeedOptions {
    /// A segment is closed past this size, so that the retention has whole files to remove.
    fn segment_bytes(&self) -> u64 {
        (self.retention_bytes / 8).clamp(4096, 16 << 20)
    }
}

/// The feed's figures, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct FeedMetrics {
    pub events_written: Counter,
    pub consumers: Gauge,
    pub oldest: Gauge,
    pub last: Gauge,
}

/// A cursor older than the history kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the changes after {after} are no longer kept; the oldest kept is {oldest}")]
pub struct Compacted {
    pub after: u64,
    pub oldest: u64,
}

/// One page of events, and the cursor to read on from.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<Arc<Event>>,
    pub last: u64,
}

#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    files: Mutex<Files>,
    /// Events of changes not durable yet, by the log sequence number they wait for.
    pending: Mutex<VecDeque<(u64, Vec<Event>)>>,
    recent: RwLock<Recent>,
    /// The last visible event's sequence number.
    head: watch::Sender<u64>,
    /// Set when the server shuts down: waiting readers and streams end.
    closing: watch::Sender<bool>,
    /// The oldest sequence number kept (what a cursor before it is told), 1 until history goes.
    oldest: AtomicU64,
    options: FeedOptions,
    metrics: FeedMetrics,
}

struct Files {
    files: FeedFiles,
    /// Visible events a failed write left unwritten, tried again before the next ones.
    unwritten: Vec<Event>,
}

#[derive(Default)]
struct Recent {
    events: VecDeque<Arc<Event>>,
    contacts: usize,
}

impl Feed {
    /// Opens the feed's files in `data_dir`.
    pub fn open(
        data_dir: &Path,
        options: FeedOptions,
        metrics: FeedMetrics,
    ) -> Result<Feed, StorageError> {
        let files = FeedFiles::open(data_dir, options.segment_bytes())?;
        let last = files.last();
        let feed = Feed {
            inner: Arc::new(Inner {
                files: Mutex::new(Files {
                    files,
                    unwritten: Vec::new(),
                }),
                pending: Mutex::new(VecDeque::new()),
                recent: RwLock::new(Recent::default()),
                head: watch::Sender::new(last),
                closing: watch::Sender::new(false),
                oldest: AtomicU64::new(1),
                options,
                metrics,
            }),
        };
        feed.publish_figures();
        Ok(feed)
    }

    /// The newest event written to the files (what recovery must make again past).
    pub fn last_written(&self) -> u64 {
        self.inner.files.lock().files.last()
    }

    /// After recovery: writes the events the files lacked, and cuts any the state does not
    /// hold (the engine's count `events` says how many there are).
    pub fn recovered(&self, events: Vec<Event>, count: u64) -> Result<(), StorageError> {
        let mut files = self.inner.files.lock();
        if files.files.last() > count {
            tracing::warn!(
                kept = count,
                found = files.files.last(),
                "the change feed held events the log does not: cutting them"
            );
            files.files.cut_after(count)?;
            self.inner.head.send_replace(files.files.last());
        }
        drop(files);
        // Made again from the log: visible at once, written like any (a disk with no room for
        // them now keeps them in memory and tries again; the log still holds their changes).
        self.release(events);
        self.inner.head.send_replace(count.max(self.last_written()));
        self.publish_figures();
        Ok(())
    }

    /// Takes an op's events: visible once the log is durable up to `durable_at` (a single
    /// node's log sequence number), or at once (None: a Raft member's applied entry).
    pub fn queue(&self, events: Vec<Event>, durable_at: Option<u64>) {
        if events.is_empty() {
            return;
        }
        match durable_at {
            Some(seq) => self.inner.pending.lock().push_back((seq, events)),
            None => self.release(events),
        }
    }

    /// Writes `events` to the files, keeps them in memory and makes them visible.
    fn release(&self, mut events: Vec<Event>) {
        // A Raft member applying its log again after a restart makes the events it already
        // holds again: they are visible already.
        let head = self.head();
        events.retain(|e| e.seq > head);
        let Some(last) = events.last().map(|e| e.seq) else {
            return;
        };
        let kept: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
        {
            let mut files = self.inner.files.lock();
            if let Err(error) = self.write(&mut files, events) {
                tracing::error!(%error, "the change feed could not be written; its events are kept in memory and written again later");
            }
        }
        let mut recent = self.inner.recent.write();
        for event in kept {
            recent.contacts += event.contacts.len().max(1);
            recent.events.push_back(event);
        }
        while recent.contacts > RECENT_CONTACTS && recent.events.len() > 1 {
            if let Some(old) = recent.events.pop_front() {
                recent.contacts -= old.contacts.len().max(1);
            }
        }
        drop(recent);
        self.inner.head.send_replace(last);
        self.inner.metrics.last.set(last as i64);
    }

    /// Appends what a failed write left, then `events` (those the files already hold are
    /// skipped: a replay makes them again).
    fn write(&self, files: &mut Files, events: Vec<Event>) -> Result<(), StorageError> {
        let mut batch = std::mem::take(&mut files.unwritten);
        batch.extend(events);
        let known = files.files.last();
        batch.retain(|e| e.seq > known);
        let Some(first) = batch.first().map(|e| e.seq) else {
            return Ok(());
        };
        if known > 0 && first > known + 1 {
            // A gap (this member installed a snapshot, or the files were lost): what came
            // before is history no longer kept.
            tracing::warn!(
                from = known + 1,
                to = first - 1,
                "the change feed has no events for a span: earlier cursors get changes_compacted"
            );
            files.files.cut_after(0)?;
        }
        let segments = files.files.segments();
        match files.files.append(&batch) {
            Ok(()) => {
                self.inner.metrics.events_written.inc_by(batch.len() as u64);
                if files.files.segments() > segments {
                    // A segment was closed: what is past the retention now goes.
                    let keep_since = self.keep_since();
                    let max_bytes = self.inner.options.retention_bytes;
                    files.files.retain(keep_since, max_bytes)?;
                    self.note_oldest(&files.files);
                }
                Ok(())
            }
            Err(error) => {
                files.unwritten = batch;
                Err(error)
            }
        }
    }

    /// Up to `limit` events after `after`, oldest first; or why they are gone.
    pub fn read(&self, after: u64, limit: usize) -> Result<Page, Compacted> {
        let head = *self.inner.head.borrow();
        let oldest = self.inner.oldest.load(Ordering::Acquire);
        if after.saturating_add(1) < oldest {
            return Err(Compacted { after, oldest });
        }
        if after >= head {
            return Ok(Page {
                events: Vec::new(),
                last: head,
            });
        }
        {
            let recent = self.inner.recent.read();
            if recent
                .events
                .front()
                .is_some_and(|e| e.seq <= after.saturating_add(1))
            {
                let events: Vec<Arc<Event>> = (recent.events.iter())
                    .filter(|e| e.seq > after && e.seq <= head)
                    .take(limit)
                    .cloned()
                    .collect();
                let last = events.last().map_or(head, |e| e.seq);
                return Ok(Page { events, last });
            }
        }
        let (oldest, reader) = {
            let files = self.inner.files.lock();
            (
                files.files.oldest().unwrap_or(head + 1),
                files.files.reader(),
            )
        };
        if after.saturating_add(1) < oldest {
            return Err(Compacted { after, oldest });
        }
        let events = match reader.read(after, limit) {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, "the change feed's files could not be read");
                return Err(Compacted {
                    after,
                    oldest: head + 1,
                });
            }
        };
        let events: Vec<Arc<Event>> = (events.into_iter())
            .filter(|e| e.seq <= head)
            .map(Arc::new)
            .collect();
        let last = events.last().map_or(head, |e| e.seq);
        Ok(Page { events, last })
    }

    /// The newest `limit` events that name contact `id`, among the newest `scan` events kept,
    /// oldest first (what the console shows of one contact's history).
    pub fn history_of(
        &self,
        id: u32,
        limit: usize,
        scan: u64,
    ) -> Result<Vec<Arc<Event>>, StorageError> {
        let head = self.head();
        let from = head.saturating_sub(scan);
        let reader = self.inner.files.lock().files.reader();
        let mut found: VecDeque<Arc<Event>> = VecDeque::new();
        let mut newest_read = from;
        let keep = |found: &mut VecDeque<Arc<Event>>, event: Arc<Event>| {
            if event.seq <= head && event.contacts.iter().any(|m| m.id == id) {
                if found.len() == limit {
                    found.pop_front();
                }
                found.push_back(event);
            }
        };
        reader.scan(from, |event| {
            newest_read = event.seq;
            keep(&mut found, Arc::new(event));
        })?;
        // What a failed write left unwritten is in memory only.
        let recent: Vec<Arc<Event>> = (self.inner.recent.read().events.iter())
            .filter(|e| e.seq > newest_read)
            .cloned()
            .collect();
        for event in recent {
            keep(&mut found, event);
        }
        Ok(found.into_iter().collect())
    }

    /// The last visible event's sequence number.
    pub fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    /// Waits until an event after `after` is visible, `timeout` passes, or the server shuts
    /// down.
    pub async fn wait(&self, after: u64, timeout: Duration) {
        let mut head = self.inner.head.subscribe();
        let mut closing = self.inner.closing.subscribe();
        let newer = head.wait_for(|&head| head > after);
        let closed = closing.wait_for(|&closed| closed);
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = newer => {}
                _ = closed => {}
            }
        })
        .await;
    }

    /// Ends every wait and stream: the server is shutting down.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    pub fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// Notified whenever new events become visible.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    pub fn metrics(&self) -> &FeedMetrics {
        &self.inner.metrics
    }

    /// Removes what is past the retention (its age or its size).
    pub fn retain(&self) -> Result<(), StorageError> {
        let keep_since = self.keep_since();
        let removed = {
            let mut files = self.inner.files.lock();
            files.files.sync()?;
            files
                .files
                .retain(keep_since, self.inner.options.retention_bytes)?
        };
        if removed > 0 {
            tracing::info!(
                segments = removed,
                "change feed history past its retention removed"
            );
        }
        self.publish_figures();
        Ok(())
    }

    /// Events older than this (milliseconds since the epoch) are past the retention.
    fn keep_since(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(self.inner.options.retention).as_millis() as i64
    }

    fn publish_figures(&self) {
        let files = self.inner.files.lock();
        self.note_oldest(&files.files);
        self.inner.metrics.last.set(self.head() as i64);
    }

    /// What the files keep now is what readers get: older events leave memory too.
    fn note_oldest(&self, files: &FeedFiles) {
        let oldest = files.oldest().unwrap_or(files.last() + 1).max(1);
        self.inner.oldest.store(oldest, Ordering::Release);
        self.inner.metrics.oldest.set(oldest as i64);
        let mut recent = self.inner.recent.write();
        while recent.events.front().is_some_and(|e| e.seq < oldest) {
            if let Some(old) = recent.events.pop_front() {
                recent.contacts -= old.contacts.len().max(1);
            }
        }
    }
}

impl DurableHook for Feed {
    fn durable(&self, seq: u64) {
        let ready: Vec<Event> = {
            let mut pending = self.inner.pending.lock();
            let mut ready = Vec::new();
            while pending.front().is_some_and(|(at, _)| *at <= seq) {
                if let Some((_, events)) = pending.pop_front() {
                    ready.extend(events);
                }
            }
            ready
        };
        self.release(ready);
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut files = self.inner.files.lock();
        self.write(&mut files, Vec::new())?;
        files.files.sync()
    }
}
