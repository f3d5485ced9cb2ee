//! Snapshots: the whole state as facts, in one file `snapshot-<seq, 20 digits>.snap` covering
//! every record up to `seq`. Written to a temporary file, synced, renamed into place, the
//! directory synced; a reader trusts a snapshot only if its closing frame counts and checksums
//! every fact before it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frame::{self, push_encoded, read_all, read_file_header, Frame, FILE_HEADER};
use super::{codec, corrupt, sync_dir, StorageError};
use crate::engine::{Change, Engine};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"IDENTSNP";

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
    let path = dir.join(snapshot_name(seq));
    let tmp = path.with_extension("snap.tmp");
    let io = |e| StorageError::file(tmp.clone(), e);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
    frame::write_file_header(&mut out, SNAPSHOT_MAGIC, seq).map_err(io)?;
    let (mut buf, mut crc, mut facts, mut bytes) = (
        Vec::new(),
        crc32fast::Hasher::new(),
        0u64,
        FILE_HEADER as u64,
    );
    for fact in engine.facts() {
        buf.clear();
        push_encoded(&mut buf, &Entry::Fact(fact));
        crc.update(&buf[frame::FRAME_HEADER..]);
        out.write_all(&buf).map_err(io)?;
        facts += 1;
        bytes += buf.len() as u64;
    }
    buf.clear();
    push_encoded(
        &mut buf,
        &Entry::End {
            facts,
            crc: crc.finalize(),
        },
    );
    out.write_all(&buf).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir)?;
    Ok((path, bytes + buf.len() as u64))
}

/// Loads a snapshot into a fresh engine; any damage is an error naming file and offset.
pub fn load(path: &Path) -> Result<(Engine, u64), StorageError> {
    let buf = read_all(path).map_err(|e| StorageError::file(path.to_owned(), e))?;
    let seq = read_file_header(&buf, SNAPSHOT_MAGIC)
        .map_err(|e| corrupt(path, 0, format!("bad header: {e:?}")))?;
    let mut engine = Engine::new();
    let (mut offset, mut crc, mut facts) = (FILE_HEADER, crc32fast::Hasher::new(), 0u64);
    loop {
        let Frame::Valid { payload, next } = frame::read_frame(&buf, offset) else {
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
                return Ok((engine, seq));
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
