//! Recovery: the newest snapshot, then every log record after it, through the same `apply` as
//! live traffic. Zeros after the last whole group are space the writer filled ahead of its
//! records: the end of the log, trimmed from the newest segment quietly. A torn or garbage tail
//! of the newest segment is cut off and reported; damage anywhere else, or a bad record with
//! valid records after it, is corruption and stops start-up.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::frame::{
    read_all, read_file_header, read_frame, Frame, HeaderError, FILE_HEADER, FORMAT_VERSION,
};
use super::snapshot::{self, parse_snapshot_name};
use super::wal::{parse_segment_name, Record, WAL_MAGIC};
use super::{codec, corrupt, StorageError};
use crate::engine::{Cause, Change, Engine, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Start-up: cut a torn tail off the newest segment and remove leftover temporary files.
    Open,
    /// `check`: change nothing, report what `Open` would do.
    ReadOnly,
    /// Snapshotting: read sealed files only, up to and including this sequence number.
    UpTo(u64),
}

/// Where a torn tail was (or would be) cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes_dropped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub snapshot: Option<PathBuf>,
    pub snapshot_seq: u64,
    pub segments: usize,
    pub records_replayed: u64,
    pub last_seq: u64,
    pub tail_cut: Option<TailCut>,
    pub elapsed: Duration,
    /// The change feed's events of the groups replayed, past the number asked for.
    pub events: Vec<Event>,
}

/// The data directory's files, each list sorted by sequence number.
pub struct Files {
    pub snapshots: Vec<(u64, PathBuf)>,
    pub segments: Vec<(u64, PathBuf)>,
    pub temporary: Vec<PathBuf>,
}

pub fn list(dir: &Path) -> Result<Files, StorageError> {
    let mut files = Files {
        snapshots: vec![],
        segments: vec![],
        temporary: vec![],
    };
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::file(dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::file(dir.to_owned(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seq) = parse_segment_name(&name) {
            files.segments.push((seq, entry.path()));
        } else if let Some(seq) = parse_snapshot_name(&name) {
            files.snapshots.push((seq, entry.path()));
        } else if name.ends_with(".tmp") {
            files.temporary.push(entry.path());
        }
    }
    files.snapshots.sort();
    files.segments.sort();
    Ok(files)
}

pub fn recover(dir: &Path, mode: Mode) -> Result<(Engine, Report), StorageError> {
    recover_keeping(dir, mode, None)
}

/// [`recover`], keeping in the report the change feed's events of the groups replayed whose
/// sequence number is past `events_after`: what the feed's files may lack after a crash. Every
/// group replayed makes its events (so the engine's count of them is right), kept or not.
pub fn recover_keeping(
    dir: &Path,
    mode: Mode,
    events_after: Option<u64>,
) -> Result<(Engine, Report), StorageError> {
    let started = Instant::now();
    let files = list(dir)?;
    if mode == Mode::Open {
        for tmp in &files.temporary {
            let _ = std::fs::remove_file(tmp);
        }
    }
    let limit = match mode {
        Mode::UpTo(seq) => seq,
        _ => u64::MAX,
    };
    let mut report = Report::default();
    let newest = files.snapshots.iter().rev().find(|(seq, _)| *seq <= limit);
    let mut engine = match newest {
        Some((seq, path)) => {
            let (engine, _) = snapshot::load(path)?;
            (report.snapshot, report.snapshot_seq, report.last_seq) =
                (Some(path.clone()), *seq, *seq);
            engine
        }
        None => Engine::new(),
    };
    engine.track_moves();
    let segments: Vec<_> = files
        .segments
        .iter()
        .filter(|(first, _)| *first <= limit)
        .collect();
    for (i, (first, path)) in segments.iter().enumerate() {
        let covered = segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= report.snapshot_seq + 1);
        if covered {
            continue;
        }
        if *first > report.last_seq + 1 {
            let why = format!(
                "records {} to {} are missing from the log",
                report.last_seq + 1,
                first - 1
            );
            return Err(corrupt(path, 0, why));
        }
        let newest = i + 1 == segments.len() && !matches!(mode, Mode::UpTo(_));
        let mut replay = Replay {
            engine: &mut engine,
            report: &mut report,
            path,
            newest,
            mode,
            limit,
            events_after,
        };
        replay.segment(*first)?;
        report.segments += 1;
    }
    report.elapsed = started.elapsed();
    Ok((engine, report))
}

struct Replay<'a> {
    engine: &'a mut Engine,
    report: &'a mut Report,
    path: &'a Path,
    newest: bool,
    mode: Mode,
    limit: u64,
    events_after: Option<u64>,
}

impl Replay<'_> {
    fn segment(&mut self, first: u64) -> Result<(), StorageError> {
        let buf = read_all(self.path).map_err(|e| StorageError::file(self.path.to_owned(), e))?;
        match read_file_header(&buf, WAL_MAGIC, &[FORMAT_VERSION]) {
            Ok((_, seq)) if seq == first => {}
            Err(HeaderError::Short) if self.newest => {
                return self.cut(&buf, 0, "segment header incomplete")
            }
            Ok((_, seq)) => {
                return Err(corrupt(
                    self.path,
                    0,
                    format!("header says first record {seq}, name says {first}"),
                ))
            }
            Err(e) => return Err(corrupt(self.path, 0, format!("bad header: {e:?}"))),
        }
        let (mut offset, mut group_start, mut expected) = (FILE_HEADER, FILE_HEADER, first);
        let mut group: Vec<Change> = Vec::new();
        while offset < buf.len() {
            let frame = read_frame(&buf, offset);
            if !matches!(frame, Frame::Valid { .. }) && buf[offset..].iter().all(|&b| b == 0) {
                return self.zeros_from(&buf, offset, group_start);
            }
            let record = match frame {
                Frame::Valid { payload, next } => match codec::decode::<Record>(payload) {
                    Ok(record) if record.seq == expected => (record, next),
                    Ok(record) => {
                        return self.bad(
                            &buf,
                            offset,
                            group_start,
                            expected,
                            format!("sequence {} where {expected} was due", record.seq),
                        )
                    }
                    Err(e) => {
                        return self.bad(
                            &buf,
                            offset,
                            group_start,
                            expected,
                            format!("undecodable record: {e}"),
                        )
                    }
                },
                Frame::Torn => {
                    return self.bad(
                        &buf,
                        offset,
                        group_start,
                        expected,
                        "record runs past the end of the file".into(),
                    )
                }
                Frame::Bad => {
                    return self.bad(
                        &buf,
                        offset,
                        group_start,
                        expected,
                        "checksum mismatch".into(),
                    )
                }
            };
            let (
                Record {
                    seq,
                    commit,
                    change,
                },
                next,
            ) = record;
            expected += 1;
            offset = next;
            if seq > self.report.last_seq {
                group.push(change);
            }
            if commit {
                self.apply_group(&group, group_start)?;
                group.clear();
                self.report.last_seq = self.report.last_seq.max(seq);
                group_start = next;
                if seq >= self.limit {
                    return Ok(());
                }
            }
        }
        self.end(&buf, group_start)
    }

    /// Applies one group (one change) through the same `apply` as live traffic, then makes
    /// its change feed events as the store did when it was made.
    fn apply_group(&mut self, group: &[Change], group_start: usize) -> Result<(), StorageError> {
        let mut applied = Vec::with_capacity(group.len());
        for change in group {
            self.engine.apply(change).map_err(|e| {
                corrupt(
                    self.path,
                    group_start as u64,
                    format!("record does not apply: {e}"),
                )
            })?;
            applied.push((change, self.engine.take_moves()));
            self.report.records_replayed += 1;
        }
        let (cause, by) = origin_of(group);
        let events = self.engine.events_of(&applied, cause, by);
        if let Some(after) = self.events_after {
            let kept = events.into_iter().filter(|e| e.seq > after);
            self.report.events.extend(kept);
        }
        Ok(())
    }

    /// The end of the segment's records, the last whole group ending at `group_start`.
    fn end(&mut self, buf: &[u8], group_start: usize) -> Result<(), StorageError> {
        if group_start < buf.len() {
            if !self.newest {
                return Err(corrupt(
                    self.path,
                    group_start as u64,
                    "segment ends inside a group of records".into(),
                ));
            }
            return self.cut(buf, group_start, "group of records incomplete");
        }
        Ok(())
    }

    /// Only zeros from `offset` on: the space filled ahead of the records. Trimmed quietly when
    /// the last group is whole; a group cut short by them is a torn tail like any other.
    fn zeros_from(
        &mut self,
        buf: &[u8],
        offset: usize,
        group_start: usize,
    ) -> Result<(), StorageError> {
        if group_start < offset {
            return self.end(buf, group_start);
        }
        if self.mode == Mode::Open && self.newest {
            tracing::debug!(file = %self.path.display(), offset, "trimming the zeros after the last record");
            truncate(self.path, offset as u64)?;
        }
        Ok(())
    }

    /// A damaged record: the tail of the newest segment is cut, unless valid records follow.
    fn bad(
        &mut self,
        buf: &[u8],
        offset: usize,
        group_start: usize,
        expected: u64,
        why: String,
    ) -> Result<(), StorageError> {
        if !self.newest || valid_record_after(buf, offset + 1, expected) {
            return Err(corrupt(self.path, offset as u64, why));
        }
        self.cut(buf, group_start, &why)
    }

    fn cut(&mut self, buf: &[u8], offset: usize, why: &str) -> Result<(), StorageError> {
        let cut = TailCut {
            file: self.path.to_owned(),
            offset: offset as u64,
            bytes_dropped: (buf.len() - offset) as u64,
        };
        tracing::warn!(file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes_dropped, reason = why,
            "cutting off the torn tail of the log");
        if self.mode == Mode::Open {
            truncate(self.path, offset as u64)?;
        }
        self.report.tail_cut = Some(cut);
        Ok(())
    }
}

/// Who made a group's change: its `Origin` fact, or what its facts show.
pub(crate) fn origin_of(group: &[Change]) -> (Cause, Option<&str>) {
    group
        .iter()
        .find_map(|c| match c {
            Change::Origin { cause, by } => Some((*cause, by.as_deref())),
            _ => None,
        })
        .unwrap_or_else(|| (Cause::inferred(group), None))
}

/// Whether a record with sequence number `expected` or later starts anywhere from `from`:
/// the mark of damage in the middle of the log rather than a torn tail.
fn valid_record_after(buf: &[u8], from: usize, expected: u64) -> bool {
    (from..buf.len()).any(|offset| match read_frame(buf, offset) {
        Frame::Valid { payload, .. } => {
            codec::decode::<Record>(payload).is_ok_and(|r| r.seq >= expected)
        }
        _ => false,
    })
}

pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), StorageError> {
    let io = |e| StorageError::file(path.to_owned(), e);
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(len).map_err(io)?;
    file.sync_all().map_err(io)
}
