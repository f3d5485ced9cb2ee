//! Snapshots: the whole state in one file `snapshot-<seq, 20 digits>.snap` covering every
//! record up to `seq`. Written to a temporary file, synced, renamed into place, the directory
//! synced; a reader trusts a snapshot only if its checksum covers all of it.
//!
//! Format 4 (written): format 3 with the erasures (which rows are erased, the ledger) and the
//! change feed's count of events after the tables (see `schema`).
//!
//! Format 3 (still read): the file header, then the engine's tables as they are in memory (an
//! image laid out by storage's own schema, see `schema`), then a trailer `[length u64][crc32
//! u32]` of all that precedes it. The header's sequence number must match the file name.
//! Loading it is a decode straight from the file and a check of the tables
//! (`Engine::from_parts`): no identifier is rehashed and no fact replayed, which is what made a
//! 10M-contact start-up take 8 to 11 s.
//!
//! Format 2 (still read): the same with the tables as serde derived them from the engine's
//! structs; decoded into the same parts and through the same check.
//!
//! Format 1 (still read): one frame per fact, then a closing frame counting and checksumming
//! them, loaded by applying each fact.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frame::{self, read_file_header, Frame, FILE_HEADER, FORMAT_VERSION};
use super::{codec, corrupt, schema, sync_dir, StorageError};
use crate::engine::image::Parts;
use crate::engine::{Change, Engine};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"IDENTSNP";

/// The format written: an image of the engine's tables.
pub(crate) const IMAGE_VERSION: u32 = schema::VERSION;

/// The formats read: facts (1), and images (2, 3 and 4).
const VERSIONS: [u32; 4] = [FORMAT_VERSION, 2, 3, IMAGE_VERSION];

/// `[length u64][crc32 u32]` of the header and image before it.
const TRAILER: usize = 12;

#[derive(Serialize, Deserialize)]
enum Entry {
    Fact(Change),
    /// Last frame: how many facts precede it and the CRC of all their payloads.
    End {
        facts: u64,
        crc: u32,
    },
}

pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

/// Writes `engine` as the snapshot covering records up to `seq`; returns its path and size.
pub fn write(dir: &Path, engine: &Engine, seq: u64) -> Result<(PathBuf, u64), StorageError> {
    write_parts(dir, &engine.parts(), seq)
}

/// Writes an engine's tables as the snapshot covering records up to `seq`.
pub(crate) fn write_parts(
    dir: &Path,
    parts: &Parts<'_>,
    seq: u64,
) -> Result<(PathBuf, u64), StorageError> {
    let path = dir.join(snapshot_name(seq));
    let tmp = path.with_extension("snap.tmp");
    let io = |e| StorageError::file(tmp.clone(), e);
    let file = File::create(&tmp).map_err(io)?;
    // Buffered before the checksum, so that it sums large chunks, not each field.
    let mut out = BufWriter::with_capacity(1 << 20, Summed::new(file));
    frame::write_file_header(&mut out, SNAPSHOT_MAGIC, IMAGE_VERSION, seq).map_err(io)?;
    schema::encode(parts, &mut out).map_err(io)?;
    let summed = out.into_inner().map_err(|e| io(e.into_error()))?;
    let (mut file, len, crc) = (summed.inner, summed.len, summed.crc.finalize());
    let mut trailer = [0; TRAILER];
    trailer[..8].copy_from_slice(&len.to_le_bytes());
    trailer[8..].copy_from_slice(&crc.to_le_bytes());
    file.write_all(&trailer).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir)?;
    Ok((path, len + TRAILER as u64))
}

/// A reader or writer that passes everything on, counting and checksumming it.
struct Summed<T> {
    inner: T,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<T> Summed<T> {
    fn new(inner: T) -> Summed<T> {
        Summed {
            inner,
            len: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn sum(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Summed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sum(&buf[..n]);
        Ok(n)
    }
}

/// Loads a snapshot into a fresh engine; any damage is an error naming file and offset.
pub fn load(path: &Path) -> Result<(Engine, u64), StorageError> {
    let io = |e| StorageError::file(path.to_owned(), e);
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut header = Vec::with_capacity(FILE_HEADER);
    (&mut file)
        .take(FILE_HEADER as u64)
        .read_to_end(&mut header)
        .map_err(io)?;
    let (version, seq) = read_file_header(&header, SNAPSHOT_MAGIC, &VERSIONS)
        .map_err(|e| corrupt(path, 0, format!("bad header: {e:?}")))?;
    let named = path
        .file_name()
        .and_then(|n| parse_snapshot_name(&n.to_string_lossy()));
    if named.is_some_and(|named| named != seq) {
        let why = format!("the header says record {seq}, the name differs");
        return Err(corrupt(path, 12, why));
    }
    let engine = if version != FORMAT_VERSION {
        load_image(path, version, file, &header, size)?
    } else {
        let mut buf = header;
        file.read_to_end(&mut buf).map_err(io)?;
        load_facts(path, &buf)?
    };
    Ok((engine, seq))
}

/// Decodes the image (of format `version`) that follows `header` in `file` (of `size` bytes) as
/// it reads it: no copy of the file is held, so a load touches the engine's memory and little
/// more.
fn load_image(
    path: &Path,
    version: u32,
    file: File,
    header: &[u8],
    size: u64,
) -> Result<Engine, StorageError> {
    let damaged = |offset: u64, why: String| corrupt(path, offset, why);
    let io = |e| StorageError::file(path.to_owned(), e);
    let end = size
        .checked_sub(TRAILER as u64)
        .filter(|&end| end >= FILE_HEADER as u64)
        .ok_or_else(|| {
            damaged(
                FILE_HEADER as u64,
                "the file ends before its trailer".into(),
            )
        })?;
    let image_len = end - FILE_HEADER as u64;
    let mut summed = Summed::new(file.take(image_len));
    summed.sum(header);
    let mut input = BufReader::with_capacity(1 << 20, summed);
    let decoded = match schema::decode(version, &mut input, image_len) {
        // The disk failed to read: not damage, and not the file's fault.
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(io(e))
        }
        decoded => decoded,
    };
    // Whatever was decoded, the checksum decides: read what the decoder left, then the trailer.
    let unread = input.buffer().len() as u64;
    let mut summed = input.into_inner();
    let leftover = io::copy(&mut summed, &mut io::sink()).map_err(io)? + unread;
    let mut trailer = [0; TRAILER];
    let mut file = summed.inner.into_inner();
    file.read_exact(&mut trailer).map_err(io)?;
    let len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(trailer[8..].try_into().expect("4 bytes"));
    if len != end {
        let why = format!("the trailer says {len} bytes precede it, the file has {end}");
        return Err(damaged(end, why));
    }
    if summed.len != end || summed.crc.finalize() != crc {
        return Err(damaged(0, "the checksum does not match".into()));
    }
    let parts = decoded.map_err(|e| damaged(FILE_HEADER as u64, e.to_string()))?;
    if leftover != 0 {
        let why = format!("{leftover} bytes after the image");
        return Err(damaged(end - leftover, why));
    }
    Engine::from_parts(parts).map_err(|why| damaged(FILE_HEADER as u64, why.to_string()))
}

/// Writes `engine` as a format 1 snapshot (facts), as earlier versions did.
#[cfg(test)]
fn write_facts(path: &Path, engine: &Engine, seq: u64) -> io::Result<()> {
    use super::frame::push_encoded;
    let mut out = BufWriter::new(File::create(path)?);
    frame::write_file_header(&mut out, SNAPSHOT_MAGIC, FORMAT_VERSION, seq)?;
    let (mut buf, mut crc, mut facts) = (Vec::new(), crc32fast::Hasher::new(), 0u64);
    for fact in engine.facts() {
        buf.clear();
        push_encoded(&mut buf, &Entry::Fact(fact));
        crc.update(&buf[frame::FRAME_HEADER..]);
        out.write_all(&buf)?;
        facts += 1;
    }
    buf.clear();
    let crc = crc.finalize();
    push_encoded(&mut buf, &Entry::End { facts, crc });
    out.write_all(&buf)?;
    out.flush()
}

/// Loads a format 1 snapshot by applying each of its facts.
fn load_facts(path: &Path, buf: &[u8]) -> Result<Engine, StorageError> {
    let mut engine = Engine::new();
    let (mut offset, mut crc, mut facts) = (FILE_HEADER, crc32fast::Hasher::new(), 0u64);
    loop {
        let Frame::Valid { payload, next } = frame::read_frame(buf, offset) else {
            return Err(corrupt(
                path,
                offset as u64,
                "damaged or missing frame".into(),
            ));
        };
        let entry: Entry =
            codec::decode(payload).map_err(|e| corrupt(path, offset as u64, e.to_string()))?;
        match entry {
            Entry::Fact(change) => {
                engine
                    .apply(&change)
                    .map_err(|e| corrupt(path, offset as u64, e.to_string()))?;
                crc.update(payload);
                facts += 1;
            }
            Entry::End { facts: n, crc: sum }
                if n == facts && sum == crc.clone().finalize() && next == buf.len() =>
            {
                return Ok(engine);
            }
            Entry::End { .. } => {
                return Err(corrupt(
                    path,
                    offset as u64,
                    "closing count or checksum does not match".into(),
                ))
            }
        }
        offset = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Email, Phone, Query, Timestamp};

    /// Forty requests that create, link and merge contacts, then a deletion.
    fn busy_engine() -> Engine {
        let mut engine = Engine::new();
        for n in 0..40u32 {
            let email = Email::parse(&format!("user{}@x.io", n % 13)).unwrap();
            let phone = Phone::parse(&format!("{}", 5_550_000 + n % 7)).unwrap();
            let query = Query::new(email, (n % 3 != 0).then_some(phone).flatten()).unwrap();
            let plan = engine
                .plan_identify(&query, Timestamp(1_000 + i64::from(n)))
                .unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
        }
        let plan = engine.plan_delete(5, Timestamp(2_000)).unwrap();
        for change in &plan.changes {
            engine.apply(change).unwrap();
        }
        engine
    }

    fn same(a: &Engine, b: &Engine) -> bool {
        a.sorted_facts() == b.sorted_facts()
            && a.contacts().eq(b.contacts())
            && (0..=a.max_id() + 1).all(|id| a.identity(id) == b.identity(id))
    }

    #[test]
    fn a_snapshot_loads_back_as_the_same_engine() {
        let dir = tempfile::tempdir().unwrap();
        let engine = busy_engine();
        let (path, bytes) = write(dir.path(), &engine, 77).unwrap();
        assert_eq!(path.file_name().unwrap(), snapshot_name(77).as_str());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        let (loaded, seq) = load(&path).unwrap();
        assert_eq!(seq, 77);
        assert!(same(&loaded, &engine));
        loaded.check_invariants().unwrap();
    }

    #[test]
    fn a_snapshot_written_as_facts_by_earlier_versions_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = busy_engine();
        let path = dir.path().join(snapshot_name(9));
        write_facts(&path, &engine, 9).unwrap();
        let (loaded, seq) = load(&path).unwrap();
        assert_eq!(seq, 9);
        assert!(same(&loaded, &engine));
    }

    #[test]
    fn any_cut_or_flipped_byte_is_refused_as_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), &busy_engine(), 3).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let refused = |damaged: &[u8], case: &str| {
            std::fs::write(&path, damaged).unwrap();
            let error = load(&path)
                .err()
                .unwrap_or_else(|| panic!("{case}: loaded"));
            let message = error.to_string();
            assert!(message.contains("corrupt"), "{case}: {message}");
            assert!(
                message.contains(&path.display().to_string()),
                "{case}: {message}"
            );
        };
        for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            refused(&bytes[..cut], &format!("cut at {cut}"));
        }
        for at in (0..bytes.len()).step_by(5).chain([bytes.len() - 1]) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x04;
            refused(&flipped, &format!("byte {at} flipped"));
        }
        refused(&[bytes.clone(), vec![0; 16]].concat(), "zeros appended");
    }

    #[test]
    fn a_crafted_image_with_a_good_checksum_is_refused_at_load_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = busy_engine();
        // Two more clusters of two.
        for (email, phone) in [
            ("p1@x.io", "91"),
            ("p2@x.io", "91"),
            ("p3@x.io", "92"),
            ("p4@x.io", "92"),
        ] {
            let query = Query::new(Email::parse(email).unwrap(), Phone::parse(phone).unwrap());
            let plan = engine
                .plan_identify(&query.unwrap(), Timestamp(3_000))
                .unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
        }
        let parts = engine.parts().into_owned();
        type Craft = (&'static str, fn(&mut Parts<'static>));
        let crafted: [Craft; 4] = [
            ("share member array", |p| {
                let roots: Vec<usize> = (0..p.nodes.len())
                    .filter(|&x| p.nodes[x].parent as usize == x && p.nodes[x].list != u32::MAX)
                    .collect();
                let list = p.nodes[roots[0]].list;
                p.nodes.to_mut()[roots[1]].list = list;
            }),
            ("only one way", |p| {
                p.joins_by_phone.pop();
            }),
            ("max_id", |p| p.max_id -= 1),
            ("counters", |p| p.stats.clusters += 1),
        ];
        for (says, craft) in crafted {
            let mut damaged = parts.clone();
            craft(&mut damaged);
            let (path, _) = write_parts(dir.path(), &damaged, 5).unwrap();
            let message = load(&path).err().unwrap().to_string();
            assert!(
                message.contains("corrupt") && message.contains(says),
                "{says}: {message}"
            );
        }
    }
}
