//! The open log segment: a file zero-filled ahead of its records, which the writer writes over.
//! (Why zeros ahead: see the writer's module comment.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame::{write_file_header, FILE_HEADER, FORMAT_VERSION};
use super::wal::{segment_name, WAL_MAGIC};
use super::{sync_dir, StorageError};

/// Zeros written ahead of the records at a time.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;
/// The least room a new segment must find on the disk; less is reported as a full disk.
pub const MIN_RESERVE: u64 = 64 << 10;

/// Whether `e` means the disk (or the process's quota) has no room left.
pub(super) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

pub(super) struct Segment {
    pub file: File,
    pub path: PathBuf,
    pub first_seq: u64,
    /// The end of the records.
    pub bytes: u64,
    /// The file's length: zeros from `bytes` to here.
    allocated: u64,
}

impl Segment {
    /// Creates the segment and fills zeros ahead of its first records: as many as fit, down to
    /// [`MIN_RESERVE`], below which the disk is reported full (so a server on a full disk says so
    /// at start-up instead of failing its first write).
    pub fn create(dir: &Path, first_seq: u64, limit: u64) -> Result<Segment, StorageError> {
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
    pub fn append(&mut self, batch: &[u8], limit: u64) -> io::Result<()> {
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
    pub fn trim(&mut self) -> io::Result<bool> {
        if self.allocated == self.bytes {
            return Ok(false);
        }
        self.file.set_len(self.bytes)?;
        self.allocated = self.bytes;
        Ok(true)
    }
}
