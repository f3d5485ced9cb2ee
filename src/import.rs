//! Rows in: CSV or NDJSON with the Contact table's columns (what `export` writes). Every row is
//! checked first; any bad row stops the import before anything is written, unless
//! `skip_invalid`. Ids and timestamps are kept. Clusters come from the evidence in the file:
//! shared identifiers, plus each live secondary's `linkedId` (kept as a `Linked` fact so later
//! deletes regroup correctly); primaries are then the oldest of each cluster. The whole import
//! is logged as one group, so a crash leaves all of it or none of it.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::canon::Canon;
use crate::engine::{Change, ContactId, Email, Engine, NewContact, Phone, Precedence, Timestamp};
use crate::export::{Format, COLUMNS};
use crate::storage::{Storage, StorageError, StorageOptions};

/// A refused row, by its line in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} invalid row(s); nothing was imported:\n{}", .0.len(), list(.0))]
    Invalid(Vec<RowError>),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Matching(#[from] crate::matching::MatchingError),
}

pub(crate) fn list(errors: &[RowError]) -> String {
    let shown: Vec<String> = errors
        .iter()
        .take(50)
        .map(|e| format!("  line {}: {}", e.line, e.message))
        .collect();
    let more = errors.len().saturating_sub(50);
    shown.join("\n")
        + &if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    pub deleted: usize,
    pub skipped: Vec<RowError>,
    /// Imported rows whose given linkedId/linkPrecedence disagreed with the evidence.
    pub corrected: usize,
    /// Rows already in the data directory relinked because imported rows joined their cluster.
    pub existing_relinked: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "imported {} row(s) ({} deleted) in {:.2} s, {:.0} rows/s",
            self.imported,
            self.deleted,
            secs,
            self.imported as f64 / secs
        )?;
        writeln!(
            f,
            "{} row(s) had a linkedId/linkPrecedence that the evidence corrected",
            self.corrected
        )?;
        if self.existing_relinked > 0 {
            writeln!(
                f,
                "{} existing row(s) relinked into imported clusters",
                self.existing_relinked
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "skipped {} invalid row(s):\n{}",
                self.skipped.len(),
                list(&self.skipped)
            )?;
        }
        Ok(())
    }
}

/// Imports `file` into the data directory of `storage` (which must not be in use).
pub fn import(
    storage: StorageOptions,
    file: &Path,
    format: Option<Format>,
    skip_invalid: bool,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    // Rows get the keys of the modes the directory was built with.
    let canon = Canon::new(crate::matching::recorded(&storage.dir)?);
    let (store, mut engine, _) = Storage::open(storage)?;
    let (rows, errors) = read_rows(file, format, &engine, &canon)?;
    if !errors.is_empty() && !skip_invalid {
        return Err(ImportError::Invalid(errors));
    }
    let progress = Progress::new(rows.len() as u64, "applying");
    let mut facts: Vec<Change> = Vec::with_capacity(rows.len() * 2);
    // Applied to memory before the log: nothing reads this engine, and if logging fails the
    // process exits without it, so memory never shows what the log lacks.
    for (i, (_, row)) in rows.iter().enumerate() {
        let fact = Change::Created(row.contact.clone());
        engine
            .apply(&fact)
            .map_err(|e| invalid(rows[i].0, e.to_string()))?;
        facts.push(fact);
        progress.tick(i as u64 + 1);
    }
    for (_, row) in &rows {
        let Some(primary) = row
            .contact
            .linked_id
            .filter(|_| row.contact.deleted_at.is_none())
        else {
            continue;
        };
        let live = engine
            .contact(primary)
            .is_some_and(|c| c.deleted_at.is_none());
        if live && primary != row.contact.id {
            let fact = Change::Linked {
                a: row.contact.id,
                b: primary,
            };
            engine.apply(&fact).expect("both rows are live");
            facts.push(fact);
        }
    }
    let live_ids: Vec<ContactId> = rows
        .iter()
        .filter(|(_, r)| r.contact.deleted_at.is_none())
        .map(|(_, r)| r.contact.id)
        .collect();
    let relinks = engine.relinks_for_clusters_of(&live_ids, Timestamp::now());
    for fact in &relinks {
        engine.apply(fact).expect("relinking a live row applies");
    }
    facts.extend(relinks.iter().cloned());
    progress.finish();
    let seq = store.append(&facts)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(StorageError::Io)?;
    runtime.block_on(store.wait_durable(seq))?;
    store.close(&engine)?;
    Ok(report(&rows, &relinks, &engine, errors, started.elapsed()))
}

fn report(
    rows: &[(u64, Row)],
    relinks: &[Change],
    engine: &Engine,
    skipped: Vec<RowError>,
    elapsed: Duration,
) -> ImportReport {
    let imported: hashbrown::HashSet<ContactId> = rows.iter().map(|(_, r)| r.contact.id).collect();
    let corrected = rows
        .iter()
        .filter(|(_, r)| {
            let now = engine.contact(r.contact.id).expect("imported");
            r.contact.deleted_at.is_none()
                && (now.linked_id != r.contact.linked_id || now.link_precedence != r.precedence)
        })
        .count();
    let existing_relinked = relinks
        .iter()
        .filter(|c| matches!(c, Change::Relinked { id, .. } if !imported.contains(id)))
        .count();
    ImportReport {
        imported: rows.len(),
        deleted: rows
            .iter()
            .filter(|(_, r)| r.contact.deleted_at.is_some())
            .count(),
        skipped,
        corrected,
        existing_relinked,
        elapsed,
    }
}

fn invalid(line: u64, message: String) -> ImportError {
    ImportError::Invalid(vec![RowError { line, message }])
}

/// A checked row and the precedence the file gave it.
#[derive(Debug, Clone)]
struct Row {
    contact: NewContact,
    precedence: Precedence,
}

/// One row's fields as text, before checking; `None` for an empty or null field.
type RawRow = [Option<String>; 8];
/// Each line's fields, or why they could not be read.
type RawRows = Vec<(u64, Result<RawRow, String>)>;
/// Checked rows by line, and the refused ones.
type CheckedRows = (Vec<(u64, Row)>, Vec<RowError>);

/// Reads and checks every row; returns the good rows sorted by id and the errors by line.
fn read_rows(
    path: &Path,
    format: Option<Format>,
    engine: &Engine,
    canon: &Canon,
) -> Result<CheckedRows, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = std::io::BufReader::new(file);
    let format = match format {
        Some(f) => f,
        None => sniff(path, reader.fill_buf().map_err(read_err)?),
    };
    let raw = match format {
        Format::Csv => read_csv(reader)?,
        Format::Ndjson => read_ndjson(reader).map_err(read_err)?,
    };
    let mut rows = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut first_line: HashMap<ContactId, u64> = HashMap::new();
    for (line, fields) in raw {
        let checked = fields.and_then(|f| check_row(f, canon)).and_then(|row| {
            let id = row.contact.id;
            if let Some(first) = first_line.insert(id, line) {
                return Err(format!("id {id} appears again (first on line {first})"));
            }
            if engine.contact(id).is_some() {
                return Err(format!("id {id} already exists in the data directory"));
            }
            Ok(row)
        });
        match checked {
            Ok(row) => rows.push((line, row)),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    rows.sort_by_key(|(_, r)| r.contact.id);
    Ok((rows, errors))
}

pub(crate) fn sniff(path: &Path, start: &[u8]) -> Format {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "ndjson" | "jsonl")
        || start.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    {
        Format::Ndjson
    } else {
        Format::Csv
    }
}

fn read_csv(reader: impl std::io::Read) -> Result<RawRows, ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| invalid(1, format!("unreadable header: {e}")))?
        .clone();
    let names: Vec<&str> = headers.iter().map(str::trim).collect();
    let index: [Option<usize>; 8] = COLUMNS.map(|c| names.iter().position(|n| *n == c));
    if index.iter().any(Option::is_none) || names.len() != COLUMNS.len() {
        return Err(invalid(
            1,
            format!(
                "wrong columns: expected {}, found {}",
                COLUMNS.join(","),
                names.join(",")
            ),
        ));
    }
    let mut out = Vec::new();
    for record in csv.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                let field = |i: Option<usize>| {
                    r.get(i.expect("checked"))
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                out.push((line, Ok(index.map(field))));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.push((line, Err(format!("malformed CSV: {e}"))));
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

fn read_ndjson(reader: impl BufRead) -> std::io::Result<RawRows> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push((i as u64 + 1, ndjson_fields(&line)));
    }
    Ok(out)
}

fn ndjson_fields(line: &str) -> Result<RawRow, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}; the fields are {}",
            COLUMNS.join(",")
        ));
    }
    let mut row = RawRow::default();
    for (slot, name) in row.iter_mut().zip(COLUMNS) {
        *slot = match object.get(name) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                Some(s.trim().to_owned()).filter(|s| !s.is_empty())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(format!("{name} has the wrong type: {other}")),
        };
    }
    Ok(row)
}

fn check_row(f: RawRow, canon: &Canon) -> Result<Row, String> {
    let [id, phone, email, linked, precedence, created, updated, deleted] = f;
    let id = positive_id(id.as_deref(), "id")?.ok_or("id is missing")?;
    let phone = phone
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(|e| e.to_string())?
        .flatten();
    let email = email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|e| e.to_string())?
        .flatten();
    if phone.is_none() && email.is_none() {
        return Err("a contact needs an email or a phoneNumber".into());
    }
    let (phone, email) = (canon.phone_opt(phone), canon.email_opt(email));
    let precedence = match precedence.as_deref() {
        Some("primary") => Precedence::Primary,
        Some("secondary") => Precedence::Secondary,
        other => {
            return Err(format!(
                "linkPrecedence must be primary or secondary, not {other:?}"
            ))
        }
    };
    let time = |v: Option<String>, name: &str| -> Result<Option<Timestamp>, String> {
        v.map(|t| {
            Timestamp::parse_rfc3339(&t)
                .ok_or(format!("{name} is not an RFC 3339 timestamp: {t:?}"))
        })
        .transpose()
    };
    let created_at = time(created, "createdAt")?.ok_or("createdAt is missing")?;
    let updated_at = time(updated, "updatedAt")?.ok_or("updatedAt is missing")?;
    let contact = NewContact {
        id,
        email: email.map(|e| e.as_str().to_owned()),
        phone: phone.map(|p| p.as_str().to_owned()),
        linked_id: positive_id(linked.as_deref(), "linkedId")?,
        created_at,
        updated_at,
        deleted_at: time(deleted, "deletedAt")?,
    };
    Ok(Row {
        contact,
        precedence,
    })
}

fn positive_id(text: Option<&str>, name: &str) -> Result<Option<ContactId>, String> {
    text.map(|t| {
        t.parse::<ContactId>()
            .ok()
            .filter(|&i| i > 0)
            .ok_or(format!("{name} must be a positive integer, not {t:?}"))
    })
    .transpose()
}

/// A bar on a terminal, plain lines every tenth otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    label: &'static str,
    next_line: std::cell::Cell<u64>,
}

impl Progress {
    pub(crate) fn new(total: u64, label: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_message(label);
            bar
        });
        Progress {
            bar,
            total,
            label,
            next_line: std::cell::Cell::new(total / 10),
        }
    }

    pub(crate) fn tick(&self, done: u64) {
        match &self.bar {
            Some(bar) if done.is_multiple_of(1024) || done == self.total => bar.set_position(done),
            Some(_) => {}
            None if done >= self.next_line.get() && self.total >= 10_000 => {
                eprintln!("{}: {done}/{} rows", self.label, self.total);
                self.next_line.set(done + self.total / 10);
            }
            None => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
