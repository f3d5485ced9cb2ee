//! The Raft log on disk: segment files of framed entries, a vote file and a small state file.
//!
//! Entries live in memory from the last purge on (a snapshot lets the log be purged, so that is
//! at most `--raft-snapshot-entries` plus the entries kept behind it) and in segment files
//! `log/<first index>.seg`: a header (magic and format), then each record
//! `[length u32][crc32 u32][entry]`, in the format storage owns
//! ([`crate::storage::raft_files`]; segments of format 0 are read, never appended to). One writer thread owns
//! the files: an append is in memory at once (readers see it) and the thread writes whatever
//! has queued, fsyncs once and then reports every append it covered as flushed to openraft,
//! which is what lets a leader count this member's copy: group commit, as the single node's
//! log does. Truncations and purges go through the same thread, so they apply in order.
//!
//! At start-up a torn record at the end of the last segment (a crash mid-write) is cut: it was
//! never reported flushed, so no member counted it. Damage anywhere else is an error.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError,
    Vote,
};
use parking_lot::Mutex;

use super::{files, NodeId, TypeConfig};
use crate::storage::raft_files::{self, RAFT_FORMAT};

/// A new segment is started past this size.
const SEGMENT_BYTES: u64 = 32 << 20;
const HEADER: usize = 8;

/// What the log remembers beside its entries.
#[derive(Default, Clone, Debug)]
struct Meta {
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl Meta {
    fn read(path: &Path) -> io::Result<Meta> {
        let Some(bytes) = read_file(path)? else {
            return Ok(Meta::default());
        };
        let state = raft_files::decode_log_state(&bytes).map_err(|e| invalid(path, &e))?;
        Ok(Meta {
            purged: state.purged.map(files::raft_log_id),
            committed: state.committed.map(files::raft_log_id),
        })
    }

    fn encode(&self) -> Vec<u8> {
        raft_files::encode_json(&raft_files::LogState {
            format: RAFT_FORMAT,
            purged: self.purged.as_ref().map(files::log_id),
            committed: self.committed.as_ref().map(files::log_id),
        })
    }
}

fn read_vote(path: &Path) -> io::Result<Option<Vote<NodeId>>> {
    let Some(bytes) = read_file(path)? else {
        return Ok(None);
    };
    let vote = raft_files::decode_vote(&bytes).map_err(|e| invalid(path, &e))?;
    Ok(Some(files::raft_vote(vote)))
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

#[derive(Default)]
struct Memory {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    meta: Meta,
    vote: Option<Vote<NodeId>>,
    /// When the committed index was last written out.
    committed_saved: Option<std::time::Instant>,
}

/// The log: cheap to clone (openraft asks for a reader of its own).
#[derive(Clone)]
pub(crate) struct LogStore {
    memory: Arc<Mutex<Memory>>,
    jobs: mpsc::Sender<Job>,
}

enum Job {
    Append {
        records: Vec<(u64, Vec<u8>)>,
        flushed: LogFlushed<TypeConfig>,
    },
    /// Removes entries from this index on.
    Truncate(u64),
    /// Removes segments holding only entries up to this index.
    Purge(u64),
    /// Seals the last segment: the next append starts a new one; then removes the segments a
    /// purge already covers (`purged`: one that was the last at the purge stayed). Answers the
    /// last index the sealed segment held (None if it held none).
    Roll {
        purged: Option<u64>,
        done: tokio::sync::oneshot::Sender<Option<u64>>,
    },
    /// Answers once every job before it is done (a purge's segments removed, say).
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// Writes a small file whole (tmp, fsync, rename) and says when it is done.
    Save {
        name: &'static str,
        bytes: Vec<u8>,
        sync: bool,
        done: Option<tokio::sync::oneshot::Sender<io::Result<()>>>,
    },
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl ToString,
) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, io::Error::other(e.to_string()))
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        let segments_dir = dir.join("log");
        fs::create_dir_all(&segments_dir)?;
        let meta = Meta::read(&dir.join("log-state.json"))?;
        let vote = read_vote(&dir.join("vote.json"))?;
        let (entries, segments) = read_segments(&segments_dir, &meta)?;
        let memory = Arc::new(Mutex::new(Memory {
            entries,
            meta,
            vote,
            committed_saved: None,
        }));
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_owned(),
            segments,
        };
        std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || writer.run(queue))?;
        Ok(LogStore { memory, jobs })
    }

    /// Writes the files of a log that starts after `at` (a seeded snapshot covers up to it).
    pub fn seeded(dir: &Path, at: LogId<NodeId>) -> io::Result<()> {
        fs::create_dir_all(dir.join("log"))?;
        let meta = Meta {
            purged: Some(at),
            committed: Some(at),
        };
        write_whole(dir, "log-state.json", &meta.encode(), true)
    }

    /// Seals the segment being appended to (for a purge: afterwards every entry up to the index
    /// returned is in segments that a purge through it removes whole).
    pub(crate) async fn roll(&self) -> io::Result<Option<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let purged = self.memory.lock().meta.purged.map(|l| l.index);
        self.jobs
            .send(Job::Roll { purged, done: tx })
            .map_err(|_| io::Error::other("the log writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the log writer stopped"))
    }

    /// Waits until every job sent before has been carried out.
    pub(crate) async fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Barrier(tx))
            .map_err(|_| io::Error::other("the log writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the log writer stopped"))
    }

    /// The newest log id known to be committed (as last saved).
    pub fn committed(&self) -> Option<LogId<NodeId>> {
        self.memory.lock().meta.committed
    }

    // openraft's error type is what every caller returns.
    #[allow(clippy::result_large_err)]
    fn send(&self, job: Job) -> Result<(), StorageError<NodeId>> {
        self.jobs.send(job).map_err(|_| {
            io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                "the log writer stopped",
            )
        })
    }

    #[allow(clippy::result_large_err)]
    fn save_meta(&self, meta: &Meta, sync: bool) -> Result<(), StorageError<NodeId>> {
        self.send(Job::Save {
            name: "log-state.json",
            bytes: meta.encode(),
            sync,
            done: None,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let memory = self.memory.lock();
        Ok(memory
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let memory = self.memory.lock();
        let last_purged_log_id = memory.meta.purged;
        let last_log_id = memory
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let bytes = raft_files::encode_json(&files::vote(vote));
        self.send(Job::Save {
            name: "vote.json",
            bytes,
            sync: true,
            done: Some(done),
        })?;
        let saved = wait.await.map_err(|_| {
            io_error(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                "the log writer stopped",
            )
        })?;
        saved.map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.memory.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.memory.lock().vote)
    }

    /// Written out at most every 100 ms and without an fsync: a committed index that is older
    /// than the truth after a crash is only learnt again from the leader; the one that is kept
    /// lets a restart apply the log up to it at once.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let meta = {
            let mut memory = self.memory.lock();
            memory.meta.committed = committed;
            let now = std::time::Instant::now();
            let due = memory
                .committed_saved
                .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_millis(100));
            if !due {
                return Ok(());
            }
            memory.committed_saved = Some(now);
            memory.meta.clone()
        };
        self.save_meta(&meta, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.memory.lock().meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        {
            let mut memory = self.memory.lock();
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes = files::encode_entry(&entry)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
                records.push((index, bytes));
                memory.entries.insert(index, entry);
            }
        }
        self.send(Job::Append {
            records,
            flushed: callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.memory.lock().entries.split_off(&log_id.index);
        self.send(Job::Truncate(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let meta = {
            let mut memory = self.memory.lock();
            let kept = memory.entries.split_off(&(log_id.index + 1));
            memory.entries = kept;
            memory.meta.purged = Some(log_id);
            memory.meta.clone()
        };
        // The purge point is durable before any segment goes, so a restart never finds a gap.
        self.save_meta(&meta, true)?;
        self.send(Job::Purge(log_id.index))
    }
}

/// One segment file: where each of its entries starts.
struct Segment {
    first: u64,
    /// Its format: only a segment of the current one is appended to.
    format: u32,
    path: PathBuf,
    /// (index, offset) of each record, in order.
    offsets: Vec<(u64, u64)>,
    len: u64,
    /// Sealed for a purge: never appended to again.
    sealed: bool,
}

struct Writer {
    dir: PathBuf,
    segments: Vec<Segment>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        let mut file: Option<File> = None;
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let mut flushed = Vec::new();
            let mut outcome: io::Result<()> = Ok(());
            for job in batch {
                let result = match job {
                    Job::Append {
                        records,
                        flushed: f,
                    } => {
                        flushed.push(f);
                        self.append(&mut file, records)
                    }
                    Job::Truncate(index) => {
                        file = None;
                        self.truncate(index)
                    }
                    Job::Purge(index) => self.purge(index),
                    Job::Roll { purged, done } => {
                        let last = self.segments.last_mut().and_then(|segment| {
                            segment.sealed = true;
                            segment.offsets.last().map(|&(index, _)| index)
                        });
                        let _ = done.send(last);
                        purged.map_or(Ok(()), |index| self.purge(index))
                    }
                    Job::Barrier(done) => {
                        let _ = done.send(());
                        Ok(())
                    }
                    Job::Save {
                        name,
                        bytes,
                        sync,
                        done,
                    } => {
                        let saved = write_whole(&self.dir, name, &bytes, sync);
                        if let Some(done) = done {
                            let copy = saved
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                            let _ = done.send(copy);
                        }
                        saved
                    }
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "the Raft log could not be written");
                    outcome = Err(e);
                }
            }
            if outcome.is_ok() {
                if let Some(f) = &file {
                    outcome = f.sync_data();
                }
            }
            for f in flushed {
                let reported = outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()));
                f.log_io_completed(reported);
            }
        }
    }

    fn append(&mut self, file: &mut Option<File>, records: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        for (index, bytes) in records {
            let full = (self.segments.last())
                .is_none_or(|s| s.len >= SEGMENT_BYTES || s.format != RAFT_FORMAT || s.sealed);
            if full {
                let path = self.dir.join("log").join(format!("{index:020}.seg"));
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                let header = raft_files::segment_header();
                f.write_all(&header)?;
                sync_dir(&self.dir.join("log"))?;
                self.segments.push(Segment {
                    first: index,
                    format: RAFT_FORMAT,
                    path,
                    offsets: Vec::new(),
                    len: header.len() as u64,
                    sealed: false,
                });
                *file = Some(f);
            }
            let segment = self.segments.last_mut().expect("a segment is open");
            if file.is_none() {
                *file = Some(OpenOptions::new().append(true).open(&segment.path)?);
            }
            let f = file.as_mut().expect("the file is open");
            let mut record = Vec::with_capacity(HEADER + bytes.len());
            record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
            record.extend_from_slice(&bytes);
            f.write_all(&record)?;
            segment.offsets.push((index, segment.len));
            segment.len += record.len() as u64;
        }
        Ok(())
    }

    /// Cuts every record from `index` on.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        while let Some(last) = self.segments.last_mut() {
            let keep = last.offsets.partition_point(|&(i, _)| i < index);
            if keep == 0 && last.first >= index {
                fs::remove_file(&last.path)?;
                self.segments.pop();
                continue;
            }
            if keep < last.offsets.len() {
                let at = last.offsets[keep].1;
                let f = OpenOptions::new().write(true).open(&last.path)?;
                f.set_len(at)?;
                f.sync_data()?;
                last.offsets.truncate(keep);
                last.len = at;
            }
            break;
        }
        sync_dir(&self.dir.join("log"))
    }

    /// Removes the segments every entry of which is at or before `index` (the last one only
    /// once it is sealed: the next append starts a new one).
    fn purge(&mut self, index: u64) -> io::Result<()> {
        while let Some(first) = self.segments.first() {
            let covered = match self.segments.get(1) {
                Some(next) => next.first <= index + 1,
                None => first.sealed && first.offsets.last().is_none_or(|&(i, _)| i <= index),
            };
            if !covered {
                break;
            }
            let gone = self.segments.remove(0);
            fs::remove_file(&gone.path)?;
        }
        sync_dir(&self.dir.join("log"))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_whole(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

type Entries = BTreeMap<u64, Entry<TypeConfig>>;

/// Reads every segment in order; cuts a torn record at the end of the last one.
fn read_segments(dir: &Path, meta: &Meta) -> io::Result<(Entries, Vec<Segment>)> {
    let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let first = name.strip_suffix(".seg")?.parse().ok()?;
            Some((first, e.path()))
        })
        .collect();
    names.sort();
    let purged = meta.purged.map(|l| l.index);
    let mut entries = Entries::new();
    let mut segments = Vec::new();
    let count = names.len();
    for (n, (first, path)) in names.into_iter().enumerate() {
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let (format, start) = raft_files::segment_format(&bytes).map_err(|e| invalid(&path, &e))?;
        let mut at = start;
        let mut offsets = Vec::new();
        while at < bytes.len() {
            let damaged = |why: &str| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {why} at byte {at}", path.display()),
                )
            };
            let record = bytes.get(at..at + HEADER).and_then(|h| {
                let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
                let crc = u32::from_le_bytes(h[4..].try_into().unwrap());
                let body = bytes.get(at + HEADER..at + HEADER + len)?;
                (crc32fast::hash(body) == crc).then_some(body)
            });
            let Some(body) = record else {
                if n + 1 == count {
                    tracing::warn!(file = %path.display(), offset = at, "cutting a torn record at the end of the Raft log");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(at as u64)?;
                    f.sync_data()?;
                    bytes.truncate(at);
                    break;
                }
                return Err(damaged("a damaged record"));
            };
            let entry = files::decode_entry(format, body).map_err(|e| damaged(&e))?;
            let index = entry.get_log_id().index;
            offsets.push((index, at as u64));
            at += HEADER + body.len();
            if purged.is_none_or(|p| index > p) {
                entries.insert(index, entry);
            }
        }
        segments.push(Segment {
            first,
            format,
            path,
            offsets,
            len: bytes.len() as u64,
            sealed: false,
        });
    }
    Ok((entries, segments))
}
