//! `identity-engine check`: verify a data directory's files and say what they hold; with
//! `--repair`, cut the log at the first damaged record after saying what that loses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::storage::recovery::{self, Mode};
use crate::storage::{lock_dir, StorageError};

/// Verifies `dir` without changing it; returns the report to print.
pub fn check(dir: &Path) -> Result<String, StorageError> {
    let _lock = lock_dir(dir)?;
    let (engine, report) = recovery::recover(dir, Mode::ReadOnly)?;
    let stats = engine.stats();
    let mut out = String::new();
    match &report.snapshot {
        Some(path) => writeln!(
            out,
            "snapshot {} covers records up to {}",
            path.display(),
            report.snapshot_seq
        ),
        None => writeln!(out, "no snapshot"),
    }
    .ok();
    writeln!(
        out,
        "{} log segment(s) replayed: {} record(s), last sequence number {}",
        report.segments, report.records_replayed, report.last_seq
    )
    .ok();
    if let Some(cut) = &report.tail_cut {
        writeln!(
            out,
            "torn tail: {} bytes at offset {} of {} would be cut at start-up",
            cut.bytes_dropped,
            cut.offset,
            cut.file.display()
        )
        .ok();
    }
    writeln!(
        out,
        "{} contact(s), {} deleted, {} cluster(s), {} join(s)",
        stats.contacts, stats.deleted, stats.clusters, stats.joins
    )
    .ok();
    engine
        .check_invariants()
        .map_err(|why| StorageError::Corrupt {
            file: dir.to_owned(),
            offset: 0,
            reason: why,
        })?;
    writeln!(out, "ok").ok();
    Ok(out)
}

/// Cuts the log at the first damaged record and removes the segments after it. Returns what was
/// done; `say` hears what will be lost before anything is changed.
pub fn repair(dir: &Path, say: &mut dyn FnMut(&str)) -> Result<String, StorageError> {
    let lock = lock_dir(dir)?;
    let (file, offset, reason) = match recovery::recover(dir, Mode::ReadOnly) {
        Err(StorageError::Corrupt {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(other) => return Err(other),
        Ok(_) => {
            drop(lock);
            return Ok(format!("nothing to repair\n{}", check(dir)?));
        }
    };
    let Some(first) = file
        .file_name()
        .and_then(|n| crate::storage::wal::parse_segment_name(&n.to_string_lossy()))
    else {
        return Err(StorageError::Corrupt {
            file,
            offset,
            reason: format!("{reason}; only log damage can be repaired"),
        });
    };
    let later: Vec<PathBuf> = recovery::list(dir)?
        .segments
        .into_iter()
        .filter(|(s, _)| *s > first)
        .map(|(_, p)| p)
        .collect();
    let size = std::fs::metadata(&file)
        .map_err(|e| StorageError::file(&file, e))?
        .len();
    let mut loss = format!("{}: corrupt at offset {offset} ({reason})\nrepair will drop {} byte(s) of it from that offset", file.display(), size - offset);
    for path in &later {
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        write!(loss, "\nand remove {} ({bytes} bytes)", path.display()).ok();
    }
    say(&loss);
    recovery::truncate(&file, offset)?;
    for path in &later {
        std::fs::remove_file(path).map_err(|e| StorageError::file(path, e))?;
    }
    let (_, report) = recovery::recover(dir, Mode::Open)?;
    drop(lock);
    Ok(format!(
        "repaired: the log now ends at record {}\n{}",
        report.last_seq,
        check(dir)?
    ))
}
