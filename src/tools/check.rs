//! `identity-engine check`: verify a data directory's files and say what they hold; with
//! `--repair`, cut the log at the first damaged record after saying what that loses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::engine::Change;
use crate::storage::codec;
use crate::storage::frame::{read_all, read_frame, Frame, FILE_HEADER};
use crate::storage::recovery::{self, Mode};
use crate::storage::wal::Record;
use crate::storage::{lock_dir, StorageError, StorageOptions};
use crate::store::Store;

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
    let modes = crate::matching::record::recorded(dir).map_err(|e| StorageError::Corrupt {
        file: dir.join(crate::matching::record::FILE),
        offset: 0,
        reason: e.to_string(),
    })?;
    writeln!(out, "matching {modes}").ok();
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

/// Cuts the log at the first damaged record and removes the segments after it. `confirm` hears
/// what will be lost (records, contacts, bytes) before anything is changed, and says whether to
/// go ahead. Returns what was done.
pub fn repair(dir: &Path, confirm: &mut dyn FnMut(&str) -> bool) -> Result<String, StorageError> {
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
    let read = |path: &Path| read_all(path).map_err(|e| StorageError::file(path, e));
    let mut lost = records_from(&read(&file)?, offset as usize + 1);
    lost.records += 1; // the damaged record itself
    for path in &later {
        let other = records_from(&read(path)?, FILE_HEADER);
        lost.records += other.records;
        lost.contacts += other.contacts;
    }
    let mut loss = format!(
        "{}: corrupt at offset {offset} ({reason})\nrepair cuts the log there: it drops the damaged record and {} readable record(s) after it, {} of them new contacts",
        file.display(),
        lost.records - 1,
        lost.contacts
    );
    for path in &later {
        write!(loss, "\nand removes {}", path.display()).ok();
    }
    if !confirm(&loss) {
        return Ok("nothing changed\n".into());
    }
    recovery::truncate(&file, offset)?;
    for path in &later {
        std::fs::remove_file(path).map_err(|e| StorageError::file(path, e))?;
    }
    // Opened as a server opens it (this process's lock first let go): the cut log recovers,
    // and closing writes a snapshot of it.
    drop(lock);
    let (store, report) = Store::open(StorageOptions::new(dir))?;
    store.close()?;
    drop(store);
    Ok(format!(
        "repaired: the log now ends at record {}\n{}",
        report.last_seq,
        check(dir)?
    ))
}

/// Records and new contacts that can still be read in `buf` from `from` on: each frame that
/// decodes as a record is counted; damage and the zeros filled ahead are skipped a byte at a time.
#[derive(Debug, Default, Clone, Copy)]
struct Lost {
    records: u64,
    contacts: u64,
}

fn records_from(buf: &[u8], from: usize) -> Lost {
    let mut lost = Lost::default();
    let mut offset = from;
    while offset < buf.len() {
        if buf[offset..].iter().all(|&b| b == 0) {
            break;
        }
        let decoded = match read_frame(buf, offset) {
            Frame::Valid { payload, next } => {
                codec::decode::<Record>(payload).ok().map(|r| (r, next))
            }
            _ => None,
        };
        match decoded {
            Some((record, next)) => {
                lost.records += 1;
                lost.contacts += u64::from(matches!(record.change, Change::Created(_)));
                offset = next;
            }
            None => offset += 1,
        }
    }
    lost
}

/// For `check --repair`: prints what will be lost; on a terminal, goes ahead only with `--yes`
/// (a person reads the loss first); in a script, goes ahead.
pub fn confirm(loss: &str, yes: bool) -> bool {
    use std::io::IsTerminal;
    eprintln!("{loss}");
    if yes || !std::io::stdin().is_terminal() {
        return true;
    }
    eprintln!("nothing changed: run again with --yes to cut the log");
    false
}
