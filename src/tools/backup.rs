//! Backups of a running server, and restoring one into a new data directory.
//!
//! A backup is the newest snapshot file and the log segments after it, byte for byte as they are
//! on disk, the open segment cut at the end of the last batch written when the backup began. So
//! it holds every change acknowledged before it began (and perhaps a few after), and restoring it
//! is just putting the files back: the normal recovery starts from them. Nothing in memory is
//! copied and the engine's lock is never taken.
//!
//! The files are first hard-linked into a staging directory inside the data directory, so the
//! snapshotter may remove them meanwhile without changing what the backup sends; the staging
//! directory goes when the backup ends (or at the next start-up, after a crash).
//!
//! The file: `IEBACKUP`, a format version (u32), then each part as a name length (u16), the
//! name, a length (u64), the bytes and their CRC-32 (u32); then a name length of 0 and the
//! number of parts (u32). Integers are little-endian.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::recovery;
use crate::storage::snapshot::parse_snapshot_name;
use crate::storage::wal::parse_segment_name;
use crate::storage::{sync_dir, LogEnd, StorageError};

pub(crate) const BACKUP_MAGIC: &[u8; 8] = b"IEBACKUP";
pub(crate) const BACKUP_VERSION: u32 = 1;
const STAGING_PREFIX: &str = "backup-staging-";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("{} is not empty; restore builds a new data directory and never overwrites one", .0.display())]
    NotEmpty(PathBuf),
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::File {
        path: path.to_owned(),
        source,
    }
}

/// One file of a backup: its name in the data directory, where its bytes are, how many.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
}

/// The files of a backup, hard-linked into a staging directory removed on drop.
#[derive(Debug)]
pub(crate) struct Staged {
    pub dir: PathBuf,
    pub parts: Vec<Part>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Staged {
    /// The size of the backup file these parts make.
    pub(crate) fn file_len(&self) -> u64 {
        let parts: u64 = self
            .parts
            .iter()
            .map(|p| 2 + p.name.len() as u64 + 8 + p.len + 4)
            .sum();
        BACKUP_MAGIC.len() as u64 + 4 + parts + 2 + 4
    }
}

/// Removes staging directories: left by a backup that a crash interrupted, or (a purge) of
/// backups in progress, which are cut off (see [`write`]). Returns how many it removed.
pub(crate) fn remove_staging(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Links the files that hold the state up to `end` into a staging directory. `end` must be
/// taken first: any file found afterwards is either still needed or replaced by a newer
/// snapshot, and a file that vanishes between listing and linking makes the caller retry.
pub(crate) fn stage(dir: &Path, end: LogEnd) -> Result<Option<Staged>, BackupError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let staging = dir.join(format!("{STAGING_PREFIX}{}-{n}", std::process::id()));
    std::fs::create_dir(&staging).map_err(file_error(&staging))?;
    let mut staged = Staged {
        dir: staging,
        parts: vec![],
    };
    let files = recovery::list(dir)?;
    let snapshot = files
        .snapshots
        .iter()
        .rev()
        .find(|(seq, _)| *seq <= end.last_seq);
    let from = snapshot.map_or(0, |(seq, _)| *seq);
    let segments = &files.segments;
    let mut wanted: Vec<&(u64, PathBuf)> = snapshot.into_iter().collect();
    for (i, segment) in segments.iter().enumerate() {
        let covered = segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= from + 1);
        if !covered && segment.0 <= end.segment {
            wanted.push(segment);
        }
    }
    if !segments.iter().any(|(first, _)| *first == end.segment) {
        return Ok(None);
    }
    // The matching modes the keys were made by travel with them (a directory without a record
    // holds as-given keys, and so does its backup).
    let modes = dir.join(crate::matching::record::FILE);
    let modes = modes.exists().then_some((u64::MAX, modes));
    for (seq, path) in wanted.into_iter().chain(modes.as_ref()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let link = staged.dir.join(&name);
        match std::fs::hard_link(path, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_error(path)(e)),
        }
        let len = if *seq == end.segment && parse_segment_name(&name).is_some() {
            end.bytes
        } else {
            std::fs::metadata(&link).map_err(file_error(&link))?.len()
        };
        staged.parts.push(Part {
            name,
            path: link,
            len,
        });
    }
    Ok(Some(staged))
}

/// Stages the files of the state as of `end()` (called again if the snapshotter removed a file
/// meanwhile, which can happen only a few times in a row).
pub(crate) fn stage_retrying(dir: &Path, end: impl Fn() -> LogEnd) -> Result<Staged, BackupError> {
    for _ in 0..100 {
        if let Some(staged) = stage(dir, end())? {
            return Ok(staged);
        }
    }
    Err(BackupError::Damaged(
        "the log's files kept changing while the backup was being staged".into(),
    ))
}

/// `identity-engine restore`: unpacks `file` into `dir` and loads the result, so a backup that
/// restores is one the server starts from. Returns the report to print.
pub fn restore_dir(file: &Path, dir: &Path) -> Result<String, BackupError> {
    let parts = restore(file, dir)?;
    let state = crate::tools::check::check(dir).inspect_err(|_| clear(dir))?;
    Ok(format!(
        "restored {} file(s) from {} into {}\n{state}start the server with --data-dir {}\n",
        parts.len(),
        file.display(),
        dir.display(),
        dir.display()
    ))
}

/// Verifies a backup file: every part's checksum, then the state it holds, loaded in a
/// temporary directory beside it. Returns the report to print.
pub fn check(file: &Path) -> Result<String, BackupError> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.check-{}", std::process::id()));
    let result = restore(file, &tmp).and_then(|parts| {
        // The files are named as in the backup, not by the temporary directory they sit in.
        let state = crate::tools::check::check(&tmp)?.replace(&format!("{}/", tmp.display()), "");
        let mut out = format!(
            "{}: {} part(s), every checksum matches\n",
            file.display(),
            parts.len()
        );
        for (name, len) in parts {
            out.push_str(&format!("  {name}: {len} bytes\n"));
        }
        out.push_str(&state);
        Ok(out)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Writes the backup file of `parts` to `out`.
pub fn write(parts: &[Part], out: &mut impl Write) -> Result<(), BackupError> {
    let io = |e| BackupError::File {
        path: PathBuf::from("backup output"),
        source: e,
    };
    out.write_all(BACKUP_MAGIC).map_err(io)?;
    out.write_all(&BACKUP_VERSION.to_le_bytes()).map_err(io)?;
    let mut buf = vec![0u8; 1 << 16];
    for part in parts {
        out.write_all(&(part.name.len() as u16).to_le_bytes())
            .map_err(io)?;
        out.write_all(part.name.as_bytes()).map_err(io)?;
        out.write_all(&part.len.to_le_bytes()).map_err(io)?;
        let mut file = File::open(&part.path).map_err(file_error(&part.path))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut left = part.len;
        while left > 0 {
            // A purge after an erasure removes the staging directory: the backup stops at once
            // (the file it has open is let go) rather than keep the erased bytes on disk.
            if !part.path.exists() {
                let why = "the backup was cut off by the purge of an erasure; take it again";
                return Err(BackupError::Damaged(why.into()));
            }
            let want = left.min(buf.len() as u64) as usize;
            let got = file
                .read(&mut buf[..want])
                .map_err(file_error(&part.path))?;
            if got == 0 {
                let why = format!("{} is shorter than {} bytes", part.name, part.len);
                return Err(BackupError::Damaged(why));
            }
            hasher.update(&buf[..got]);
            out.write_all(&buf[..got]).map_err(io)?;
            left -= got as u64;
        }
        out.write_all(&hasher.finalize().to_le_bytes())
            .map_err(io)?;
    }
    out.write_all(&0u16.to_le_bytes()).map_err(io)?;
    out.write_all(&(parts.len() as u32).to_le_bytes())
        .map_err(io)?;
    out.flush().map_err(io)
}

/// Hears each part's bytes as they are read: (part name, bytes).
pub(crate) type PartSink<'a> = dyn FnMut(&str, &[u8]) -> Result<(), BackupError> + 'a;

/// Reads a backup from `input`, handing each part's bytes to `sink` (name, bytes) as they come,
/// and verifies every checksum; returns the parts' names and lengths.
pub fn read(
    input: &mut impl Read,
    sink: &mut PartSink<'_>,
) -> Result<Vec<(String, u64)>, BackupError> {
    let mut magic = [0u8; 12];
    read_exact(input, &mut magic, "the header")?;
    if &magic[..8] != BACKUP_MAGIC {
        return Err(BackupError::Damaged("not a backup file (bad magic)".into()));
    }
    let version = u32::from_le_bytes(magic[8..].try_into().unwrap());
    if version != BACKUP_VERSION {
        return Err(BackupError::Damaged(format!(
            "format version {version}; this build reads {BACKUP_VERSION}"
        )));
    }
    let mut parts = vec![];
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut len = [0u8; 2];
        read_exact(input, &mut len, "a part header")?;
        let name_len = u16::from_le_bytes(len) as usize;
        if name_len == 0 {
            let mut count = [0u8; 4];
            read_exact(input, &mut count, "the trailer")?;
            if u32::from_le_bytes(count) as usize != parts.len() {
                return Err(BackupError::Damaged("the part count does not match".into()));
            }
            return Ok(parts);
        }
        let mut name = vec![0u8; name_len];
        read_exact(input, &mut name, "a part name")?;
        let name = String::from_utf8(name)
            .ok()
            .filter(|n| {
                parse_segment_name(n).is_some()
                    || parse_snapshot_name(n).is_some()
                    || n == crate::matching::record::FILE
            })
            .ok_or_else(|| BackupError::Damaged("a part has no valid file name".into()))?;
        let mut size = [0u8; 8];
        read_exact(input, &mut size, "a part length")?;
        let size = u64::from_le_bytes(size);
        let mut hasher = crc32fast::Hasher::new();
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            read_exact(input, &mut buf[..want], &name)?;
            hasher.update(&buf[..want]);
            sink(&name, &buf[..want])?;
            left -= want as u64;
        }
        let mut crc = [0u8; 4];
        read_exact(input, &mut crc, &name)?;
        if u32::from_le_bytes(crc) != hasher.finalize() {
            return Err(BackupError::Damaged(format!("{name}: checksum mismatch")));
        }
        parts.push((name, size));
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            BackupError::Damaged(format!("the file ends early, in {what}"))
        }
        _ => BackupError::File {
            path: PathBuf::from("backup input"),
            source: e,
        },
    })
}

/// Unpacks the backup `file` into `dir`, which must be missing or empty. On any damage the
/// files written are removed again and `dir` is left empty.
pub fn restore(file: &Path, dir: &Path) -> Result<Vec<(String, u64)>, BackupError> {
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        return Err(BackupError::NotEmpty(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    let result = unpack(file, dir);
    if result.is_err() {
        clear(dir);
    }
    result
}

fn unpack(file: &Path, dir: &Path) -> Result<Vec<(String, u64)>, BackupError> {
    let input = File::open(file).map_err(file_error(file))?;
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut current: Option<(String, BufWriter<File>)> = None;
    let mut sink = |name: &str, bytes: &[u8]| -> Result<(), BackupError> {
        if current.as_ref().is_none_or(|(n, _)| n != name) {
            finish(current.take(), dir)?;
            let path = dir.join(name);
            let out = File::create_new(&path).map_err(file_error(&path))?;
            current = Some((name.to_owned(), BufWriter::with_capacity(1 << 20, out)));
        }
        let (name, out) = current.as_mut().unwrap();
        out.write_all(bytes).map_err(file_error(&dir.join(&*name)))
    };
    let parts = read(&mut input, &mut sink)?;
    finish(current.take(), dir)?;
    // A part with no bytes never reached the sink.
    for (name, len) in &parts {
        let path = dir.join(name);
        if *len == 0 && !path.exists() {
            File::create_new(&path).map_err(file_error(&path))?;
        }
    }
    sync_dir(dir)?;
    Ok(parts)
}

fn finish(current: Option<(String, BufWriter<File>)>, dir: &Path) -> Result<(), BackupError> {
    if let Some((name, out)) = current {
        let path = dir.join(name);
        let file = out
            .into_inner()
            .map_err(|e| file_error(&path)(e.into_error()))?;
        file.sync_all().map_err(file_error(&path))?;
    }
    Ok(())
}

/// Empties `dir` of the files a restore put there.
pub(crate) fn clear(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Change;
    use crate::storage::{Storage, StorageOptions};

    /// A download that a purge cuts off once the first bytes of a file are out.
    struct CutOff<'a>(&'a Path, Vec<u8>);

    impl Write for CutOff<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1.len() < 1000 && self.1.len() + buf.len() >= 1000 {
                assert_eq!(remove_staging(self.0), 1);
            }
            self.1.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_backup_whose_staging_a_purge_removed_stops_instead_of_sending_on() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _, _) = Storage::open(StorageOptions::new(dir.path())).unwrap();
        for n in 0..6000 {
            let fact = Change::Joined {
                email: format!("someone{n}@example.com"),
                phone: n.to_string(),
            };
            storage.append(&[fact]).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while storage.log_end().last_seq < 6000 {
            assert!(std::time::Instant::now() < deadline, "the log is written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let staged = stage_retrying(dir.path(), || storage.log_end()).unwrap();
        assert!(staged.parts[0].len > 1 << 17, "more than two chunks");
        let mut out = CutOff(dir.path(), Vec::new());
        let error = write(&staged.parts, &mut out).unwrap_err().to_string();
        assert!(error.contains("cut off by the purge"), "{error}");
        assert!(out.1.len() < staged.parts[0].len as usize);
    }
}
