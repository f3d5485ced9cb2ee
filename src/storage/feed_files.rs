//! The change feed's files, owned and versioned here like the log's: `changes/` holds segments
//! `changes-<first seq, 20 digits>.log`, each a file header (magic `IDENTCHG`, format version,
//! first sequence number) then one frame per event, `[length u32][crc32 u32][bincode event]`.
//! Events hold ids and times only, never an email or a phone, so erasure never rewrites them
//! and they may be kept longer than the log.
//!
//! They are written after the change they report is durable and are not synced one by one:
//! what a crash takes from their tail is made again from the log at start-up (each event comes
//! from the facts, the same way every time). They are synced before a snapshot makes the log
//! they came from unnecessary. Old segments go once older than the retention or past its
//! size; the newest is always kept.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frame::{push_encoded, read_all, read_file_header, read_frame, write_file_header};
use super::frame::{Frame, FILE_HEADER};
use super::{codec, corrupt, sync_dir, StorageError};
use crate::engine::{Cause, Event, EventKind, Moved, Timestamp};

pub const FEED_MAGIC: &[u8; 8] = b"IDENTCHG";
pub const FEED_FORMAT: u32 = 1;
pub const DIR: &str = "changes";

/// One event as format 1 writes it.
#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    at: i64,
    kind: Kind,
    cause: u8,
    by: Option<String>,
    contacts: Vec<(u32, Option<u32>)>,
}

/// An event's type; the variants in this order (bincode encodes the index).
#[derive(Serialize, Deserialize)]
enum Kind {
    Created,
    Merged { into: u32, primaries: Vec<u32> },
    Split,
    Deleted,
    Blocked,
    Unblocked,
    Imported,
    Rekeyed,
    Edited,
    Erased,
}

/// Each cause's number in the file: its index here (append only).
const CAUSES: [Cause; 7] = [
    Cause::Identify,
    Cause::Delete,
    Cause::Blocklist,
    Cause::Import,
    Cause::Rekey,
    Cause::Edit,
    Cause::Erasure,
];

impl Record {
    fn of(e: &Event) -> Record {
        let kind = match &e.kind {
            EventKind::Created => Kind::Created,
            EventKind::Merged { into, primaries } => Kind::Merged {
                into: *into,
                primaries: primaries.clone(),
            },
            EventKind::Split => Kind::Split,
            EventKind::Deleted => Kind::Deleted,
            EventKind::Blocked => Kind::Blocked,
            EventKind::Unblocked => Kind::Unblocked,
            EventKind::Imported => Kind::Imported,
            EventKind::Rekeyed => Kind::Rekeyed,
            EventKind::Edited => Kind::Edited,
            EventKind::Erased => Kind::Erased,
        };
        Record {
            seq: e.seq,
            at: e.at.0,
            kind,
            cause: CAUSES.iter().position(|c| *c == e.cause).unwrap_or(0) as u8,
            by: e.by.clone(),
            contacts: e.contacts.iter().map(|m| (m.id, m.primary)).collect(),
        }
    }

    fn into_event(self) -> Option<Event> {
        let kind = match self.kind {
            Kind::Created => EventKind::Created,
            Kind::Merged { into, primaries } => EventKind::Merged { into, primaries },
            Kind::Split => EventKind::Split,
            Kind::Deleted => EventKind::Deleted,
            Kind::Blocked => EventKind::Blocked,
            Kind::Unblocked => EventKind::Unblocked,
            Kind::Imported => EventKind::Imported,
            Kind::Rekeyed => EventKind::Rekeyed,
            Kind::Edited => EventKind::Edited,
            Kind::Erased => EventKind::Erased,
        };
        Some(Event {
            seq: self.seq,
            at: Timestamp(self.at),
            kind,
            cause: *CAUSES.get(self.cause as usize)?,
            by: self.by,
            contacts: (self.contacts.into_iter())
                .map(|(id, primary)| Moved { id, primary })
                .collect(),
        })
    }
}

/// One segment: its name's first seq, and what its events span.
#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    path: PathBuf,
    last: u64,
    /// When its newest event happened (milliseconds), for the retention.
    newest_at: i64,
    bytes: u64,
}

/// The feed's segments on disk; one writer (the caller serializes).
pub struct FeedFiles {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: Option<File>,
    segment_bytes: u64,
    unsynced: bool,
}

pub fn segment_name(first: u64) -> String {
    format!("changes-{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("changes-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

impl FeedFiles {
    /// Opens the feed in `data_dir/changes` (made if missing): every segment is read; a torn
    /// tail of the newest is cut; damage elsewhere is an error naming the file and offset.
    pub fn open(data_dir: &Path, segment_bytes: u64) -> Result<FeedFiles, StorageError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::file(dir.clone(), e))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| StorageError::file(dir.clone(), e))?
            .flatten()
            .filter_map(|e| {
                let first = parse_segment_name(&e.file_name().to_string_lossy())?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        let count = names.len();
        let mut segments = Vec::new();
        for (n, (first, path)) in names.into_iter().enumerate() {
            let newest = n + 1 == count;
            if let Some(segment) = read_segment(first, &path, newest)? {
                segments.push(segment);
            }
        }
        Ok(FeedFiles {
            dir,
            segments,
            file: None,
            segment_bytes: segment_bytes.max(4096),
            unsynced: false,
        })
    }

    /// The sequence number of the newest event kept (0 if none).
    pub fn last(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.last)
    }

    /// The sequence number of the oldest event kept (None if none).
    pub fn oldest(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.last >= s.first)
            .map(|s| s.first)
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends `events` (each after the newest kept), rolling to a new segment when full.
    pub fn append(&mut self, events: &[Event]) -> Result<(), StorageError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let full = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if full || self.file.is_none() {
            if full {
                self.start_segment(first.seq)?;
            } else {
                self.reopen()?;
            }
        }
        let mut buf = Vec::with_capacity(64 * events.len());
        for event in events {
            push_encoded(&mut buf, &Record::of(event));
        }
        let segment = self.segments.last_mut().expect("a segment is open");
        let file = self.file.as_mut().expect("the newest segment is open");
        file.write_all(&buf)
            .map_err(|e| StorageError::file(segment.path.clone(), e))?;
        segment.bytes += buf.len() as u64;
        segment.last = events.last().map_or(segment.last, |e| e.seq);
        segment.newest_at = events
            .iter()
            .map(|e| e.at.0)
            .max()
            .unwrap_or(segment.newest_at);
        self.unsynced = true;
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> Result<(), StorageError> {
        self.sync()?;
        let path = self.dir.join(segment_name(first));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::file(path.clone(), e))?;
        write_file_header(&mut file, FEED_MAGIC, FEED_FORMAT, first)
            .map_err(|e| StorageError::file(path.clone(), e))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            last: first.saturating_sub(1),
            newest_at: i64::MIN,
            bytes: FILE_HEADER as u64,
        });
        self.file = Some(file);
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), StorageError> {
        let segment = self.segments.last().expect("a segment exists");
        let file = OpenOptions::new()
            .append(true)
            .open(&segment.path)
            .map_err(|e| StorageError::file(segment.path.clone(), e))?;
        self.file = Some(file);
        Ok(())
    }

    /// Makes every event appended so far durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if let (true, Some(file)) = (self.unsynced, &self.file) {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            file.sync_data().map_err(|e| StorageError::file(path, e))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// What a reader needs to read the segments without holding the writer up.
    pub fn reader(&self) -> Reader {
        Reader {
            segments: self.segments.clone(),
        }
    }

    /// Removes the oldest segments while their newest event is older than `keep_since`
    /// (milliseconds) or the feed is larger than `max_bytes`; never the newest segment.
    pub fn retain(&mut self, keep_since: i64, max_bytes: u64) -> Result<usize, StorageError> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_old = oldest.newest_at < keep_since;
            if !too_old && self.bytes() <= max_bytes {
                break;
            }
            std::fs::remove_file(&oldest.path)
                .map_err(|e| StorageError::file(oldest.path.clone(), e))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Cuts every event after `seq` (the log holds no change they came from).
    pub fn cut_after(&mut self, seq: u64) -> Result<(), StorageError> {
        self.file = None;
        while let Some(segment) = self.segments.last_mut() {
            if segment.last <= seq {
                break;
            }
            if segment.first > seq {
                std::fs::remove_file(&segment.path)
                    .map_err(|e| StorageError::file(segment.path.clone(), e))?;
                self.segments.pop();
                continue;
            }
            let buf = read_all(&segment.path).map_err(|e| StorageError::file(&segment.path, e))?;
            let end = end_of(&buf, seq);
            let file = OpenOptions::new()
                .write(true)
                .open(&segment.path)
                .map_err(|e| StorageError::file(segment.path.clone(), e))?;
            file.set_len(end as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| StorageError::file(segment.path.clone(), e))?;
            segment.bytes = end as u64;
            segment.last = seq;
        }
        sync_dir(&self.dir)
    }

    /// The files, for a backup: every segment's path.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

/// The segments as they were when it was made: reads them while the feed goes on.
pub struct Reader {
    segments: Vec<Segment>,
}

impl Reader {
    /// Every event after `after` kept in the segments, oldest first, each handed to `f`: one
    /// pass over each file.
    pub fn scan(&self, after: u64, mut f: impl FnMut(Event)) -> Result<(), StorageError> {
        let start = self.segments.partition_point(|s| s.last <= after);
        for segment in &self.segments[start..] {
            let buf = read_all(&segment.path).map_err(|e| StorageError::file(&segment.path, e))?;
            for event in events_in(&buf, &segment.path)? {
                if event.seq > after {
                    f(event);
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` events after `after`, read from the segments, oldest first.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<Event>, StorageError> {
        let mut out = Vec::new();
        let start = self.segments.partition_point(|s| s.last <= after);
        for segment in &self.segments[start..] {
            let buf = read_all(&segment.path).map_err(|e| StorageError::file(&segment.path, e))?;
            for event in events_in(&buf, &segment.path)? {
                if event.seq > after {
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Reads one segment; None for a newest segment whose header a crash cut short.
fn read_segment(first: u64, path: &Path, newest: bool) -> Result<Option<Segment>, StorageError> {
    let buf = read_all(path).map_err(|e| StorageError::file(path, e))?;
    match read_file_header(&buf, FEED_MAGIC, &[FEED_FORMAT]) {
        Ok((_, seq)) if seq == first => {}
        Err(super::frame::HeaderError::Short) if newest => {
            std::fs::remove_file(path).map_err(|e| StorageError::file(path, e))?;
            return Ok(None);
        }
        Ok(_) => return Err(corrupt(path, 0, "header and name disagree".into())),
        Err(e) => return Err(corrupt(path, 0, format!("bad header: {e:?}"))),
    }
    let mut segment = Segment {
        first,
        path: path.to_owned(),
        last: first.saturating_sub(1),
        newest_at: i64::MIN,
        bytes: buf.len() as u64,
    };
    let mut offset = FILE_HEADER;
    while offset < buf.len() {
        match read_frame(&buf, offset) {
            Frame::Valid { payload, next } => {
                let record: Record = codec::decode(payload)
                    .map_err(|e| corrupt(path, offset as u64, format!("undecodable event: {e}")))?;
                segment.last = record.seq;
                segment.newest_at = segment.newest_at.max(record.at);
                offset = next;
            }
            _ if newest => {
                tracing::warn!(file = %path.display(), offset, "cutting a torn event off the change feed");
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StorageError::file(path, e))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| StorageError::file(path, e))?;
                segment.bytes = offset as u64;
                break;
            }
            _ => return Err(corrupt(path, offset as u64, "a damaged event".into())),
        }
    }
    Ok(Some(segment))
}

fn events_in(buf: &[u8], path: &Path) -> Result<Vec<Event>, StorageError> {
    let mut out = Vec::new();
    let mut offset = FILE_HEADER;
    while let Frame::Valid { payload, next } = read_frame(buf, offset) {
        let record: Record = codec::decode(payload)
            .map_err(|e| corrupt(path, offset as u64, format!("undecodable event: {e}")))?;
        let event = record
            .into_event()
            .ok_or_else(|| corrupt(path, offset as u64, "an unknown cause".into()))?;
        out.push(event);
        offset = next;
    }
    Ok(out)
}

/// Where the events after `seq` start in a segment's bytes.
fn end_of(buf: &[u8], seq: u64) -> usize {
    let mut offset = FILE_HEADER;
    while let Frame::Valid { payload, next } = read_frame(buf, offset) {
        match codec::decode::<Record>(payload) {
            Ok(r) if r.seq <= seq => offset = next,
            _ => break,
        }
    }
    offset
}

impl std::fmt::Debug for FeedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedFiles")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .finish()
    }
}
