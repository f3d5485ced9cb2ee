//! Rows in: CSV or NDJSON with the Contact table's columns (what `export` writes). Every row is
//! checked first; any bad row stops the import before anything is written, unless
//! `skip_invalid`. Ids and timestamps are kept. The checked rows are one [`Op::Import`],
//! planned whole by the engine (the same plan `POST /contacts/import` uses) and executed
//! through the same [`Store`] a server uses: clusters come from the evidence in the file
//! (shared identifiers, plus each live secondary's `linkedId`, kept as a link so later deletes
//! regroup correctly), primaries are then the oldest of each cluster, and the whole import is
//! one log group, so a crash leaves all of it or none of it.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashSet};

use crate::engine::{
    ContactId, Email, GivenLink, ImportRow, Kind, Limits, NewContact, Op, Outcome, Phone,
    Precedence, Refusal, Rows, Timestamp,
};
use crate::matching::canon::Canon;
use crate::storage::{StorageError, StorageOptions};
use crate::store::{Done, Origin, Store, StoreError};
use crate::tools::export::{Format, COLUMNS};

/// A refused row, by its line in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// An over-merge guard, a capacity limit or a taken id refused the import; nothing was
    /// imported.
    #[error("{0}; nothing was imported")]
    Refused(Refusal),
    #[error(transparent)]
    Matching(#[from] crate::matching::record::MatchingError),
}

impl From<StoreError> for ImportError {
    fn from(e: StoreError) -> ImportError {
        match e {
            StoreError::Refused(refusal) => ImportError::Refused(refusal),
            StoreError::Storage(e) => ImportError::Storage(e),
            other => {
                ImportError::Storage(StorageError::Io(std::io::Error::other(other.to_string())))
            }
        }
    }
}

/// The over-merge guards an import obeys: their settings, and values to block (as an admin's
/// blocks) before its rows are added.
#[derive(Debug, Clone, Default)]
pub struct ImportGuards {
    pub limits: Limits,
    pub blocklist: Vec<(Kind, String)>,
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
    /// Values blocked from the blocklist given, and those the import's rows made generic.
    pub blocked: Vec<(Kind, String)>,
    pub generic: Vec<(Kind, String)>,
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
        let values = |list: &[(Kind, String)]| {
            let shown: Vec<String> = (list.iter().take(20))
                .map(|(kind, value)| format!("{} {value}", kind.field()))
                .collect();
            let more = list.len().saturating_sub(20);
            shown.join(", ")
                + &if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
        };
        if !self.blocked.is_empty() {
            writeln!(
                f,
                "blocked {} value(s) from the blocklist: {}",
                self.blocked.len(),
                values(&self.blocked)
            )?;
        }
        if !self.generic.is_empty() {
            writeln!(
                f,
                "blocked {} value(s) as generic (held by more contacts than the threshold): {}",
                self.generic.len(),
                values(&self.generic)
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

/// Imports `file` into the data directory of `storage` (which must not be in use), under the
/// default guards.
pub fn import(
    storage: StorageOptions,
    file: &Path,
    format: Option<Format>,
    skip_invalid: bool,
) -> Result<ImportReport, ImportError> {
    import_guarded(
        storage,
        file,
        format,
        skip_invalid,
        &ImportGuards::default(),
    )
}

/// Imports `file` under `guards`: the blocklist's values are blocked first; a value the rows
/// give more holders than the generic threshold is blocked as generic (and reported); a
/// cluster left over the cap refuses the whole import, naming its values.
pub fn import_guarded(
    storage: StorageOptions,
    file: &Path,
    format: Option<Format>,
    skip_invalid: bool,
    guards: &ImportGuards,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    // Rows get the keys of the modes the directory was built with.
    let canon = Canon::new(crate::matching::record::recorded(&storage.dir)?);
    let (store, _) = Store::open_with(storage, guards.limits)?;
    let (rows, errors) = read_file(file, format, &store, &canon)?;
    if !errors.is_empty() && !skip_invalid {
        return Err(ImportError::Invalid(errors));
    }
    let rows = Rows::new(rows, guards.blocklist.clone());
    let given = rows.given_links();
    let progress = Progress::new(rows.len() as u64, "applying");
    progress.tick(0);
    store.reserve(rows.len());
    let op = Op::Import(rows);
    let done = store.execute_offline(&op, &Origin::of(&op), Timestamp::now(), |_, done| {
        done.clone()
    });
    progress.finish();
    let done = done?;
    // close() writes and syncs everything logged, and fails if the log did.
    store.close()?;
    Ok(report(&given, errors, &done, started.elapsed()))
}

/// What an import did, from what the file said of each row and what applying it moved.
pub fn report(
    given: &[GivenLink],
    skipped: Vec<RowError>,
    done: &Done,
    elapsed: Duration,
) -> ImportReport {
    let mut primary_of: HashMap<ContactId, Option<ContactId>> = HashMap::new();
    for moved in &done.moved {
        primary_of.insert(moved.id, moved.primary);
    }
    let imported: HashSet<ContactId> = given.iter().map(|g| g.id).collect();
    let corrected = (given.iter())
        .filter(|g| !g.deleted)
        .filter(|g| {
            let primary = primary_of.get(&g.id).copied().flatten().unwrap_or(g.id);
            let linked = (primary != g.id).then_some(primary);
            let precedence = match linked {
                None => Precedence::Primary,
                Some(_) => Precedence::Secondary,
            };
            linked != g.linked_id || precedence != g.precedence
        })
        .count();
    let (blocked, generic) = match &done.outcome {
        Outcome::Imported { listed, generic } => (listed.clone(), generic.clone()),
        _ => Default::default(),
    };
    ImportReport {
        imported: given.len(),
        deleted: given.iter().filter(|g| g.deleted).count(),
        skipped,
        corrected,
        existing_relinked: primary_of
            .keys()
            .filter(|id| !imported.contains(*id))
            .count(),
        blocked,
        generic,
        elapsed,
    }
}

/// Reads and checks every row of `bytes` (CSV, or NDJSON when the first non-blank byte is `{`
/// or `format` says so), identifiers keyed by `canon`; `exists` tells which ids are taken.
/// Returns the good rows and the refused ones by line.
pub fn read_rows(
    bytes: &[u8],
    format: Option<Format>,
    exists: impl Fn(ContactId) -> bool,
    canon: &Canon,
) -> Result<CheckedRows, ImportError> {
    let format = format.unwrap_or_else(|| sniff(Path::new(""), bytes));
    let raw = match format {
        Format::Csv => read_csv(bytes)?,
        Format::Ndjson => read_ndjson(bytes).map_err(|source| ImportError::Read {
            path: PathBuf::from("the request body"),
            source,
        })?,
    };
    Ok(check_rows(raw, exists, canon))
}

/// Reads and checks every row of the file at `path` against the ids `store` holds.
fn read_file(
    path: &Path,
    format: Option<Format>,
    store: &Store,
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
    let exists = |id| store.peek(|e| e.contact(id).is_some());
    Ok(check_rows(raw, exists, canon))
}

fn invalid(line: u64, message: String) -> ImportError {
    ImportError::Invalid(vec![RowError { line, message }])
}

/// One row's fields as text, before checking; `None` for an empty or null field.
type RawRow = [Option<String>; 9];
/// Each line's fields, or why they could not be read.
type RawRows = Vec<(u64, Result<RawRow, String>)>;
/// Checked rows by line, and the refused ones.
pub(crate) type CheckedRows = (Vec<ImportRow>, Vec<RowError>);

/// Checks every row; returns the good rows and the errors, by line.
fn check_rows(raw: RawRows, exists: impl Fn(ContactId) -> bool, canon: &Canon) -> CheckedRows {
    let mut rows = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut first_line: HashMap<ContactId, u64> = HashMap::new();
    for (line, fields) in raw {
        let checked = fields
            .and_then(|f| check_row(line, f, canon))
            .and_then(|row| {
                let id = row.contact.id;
                if let Some(first) = first_line.insert(id, line) {
                    return Err(format!("id {id} appears again (first on line {first})"));
                }
                if exists(id) {
                    return Err(format!("id {id} already exists in the data directory"));
                }
                Ok(row)
            });
        match checked {
            Ok(row) => rows.push(row),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    (rows, errors)
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
    let index: [Option<usize>; 9] = COLUMNS.map(|c| names.iter().position(|n| *n == c));
    // `erasedAt` is optional: files written before erasure lack it.
    let required = &index[..8];
    let found = index.iter().flatten().count();
    if required.iter().any(Option::is_none) || names.len() != found {
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
                    r.get(i?)
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
    ndjson_lines(reader, ndjson_fields)
}

/// Each non-blank line of `reader` by its number, read into fields by `fields`.
pub(crate) fn ndjson_lines<F>(
    reader: impl BufRead,
    fields: impl Fn(&str) -> Result<F, String>,
) -> std::io::Result<Vec<(u64, Result<F, String>)>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push((i as u64 + 1, fields(&line)));
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

fn check_row(line: u64, f: RawRow, canon: &Canon) -> Result<ImportRow, String> {
    let [id, phone, email, linked, precedence, created, updated, deleted, erased] = f;
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
    // An erased row (from an export) keeps its id taken: it comes in as a deleted row with no
    // identifiers, deleted when it was erased unless it was deleted before.
    if erased.is_some() && (phone.is_some() || email.is_some()) {
        return Err("an erased contact holds no email or phoneNumber".into());
    }
    if phone.is_none() && email.is_none() && erased.is_none() {
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
        deleted_at: time(deleted, "deletedAt")?.or(time(erased, "erasedAt")?),
    };
    Ok(ImportRow {
        line,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    const HEADER: &str =
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n";

    fn rows(text: &str, exists: impl Fn(ContactId) -> bool) -> (Rows, Vec<RowError>) {
        let bytes = format!("{HEADER}{text}");
        let (rows, errors) = read_rows(bytes.as_bytes(), None, exists, &Canon::default()).unwrap();
        (Rows::new(rows, Vec::new()), errors)
    }

    #[test]
    fn the_report_counts_corrections_as_the_engine_ends_up() {
        let mut engine = Engine::new();
        engine.track_moves();
        // 3 is older than 2 and shares its phone, so 2 claims wrongly to be a primary; 4 names
        // 2 as its primary but 3 is; 5 is right.
        let text = "\
2,111,b@x.io,,primary,2023-01-02T00:00:00.000Z,2023-01-02T00:00:00.000Z,
3,111,c@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,
4,,c@x.io,2,secondary,2023-01-03T00:00:00.000Z,2023-01-03T00:00:00.000Z,
5,999,e@x.io,,primary,2023-01-04T00:00:00.000Z,2023-01-04T00:00:00.000Z,
";
        let (rows, _) = rows(text, |_| false);
        let given = rows.given_links();
        let plan = engine.plan(&Op::Import(rows), Timestamp::now()).unwrap();
        assert!(plan.facts.len() > 4);
        for fact in &plan.facts {
            engine.apply(fact).unwrap();
        }
        let done = Done {
            outcome: plan.outcome,
            facts: plan.facts,
            moved: engine.take_moves(),
        };
        let report = report(&given, Vec::new(), &done, Duration::ZERO);
        assert_eq!((report.imported, report.corrected), (4, 2));
        assert_eq!(engine.contact(2).unwrap().linked_id, Some(3));
        assert_eq!(engine.contact(4).unwrap().linked_id, Some(3));
        engine.check_invariants().unwrap();
    }

    #[test]
    fn ids_taken_since_the_check_refuse_the_import_naming_the_line() {
        let text = "7,1,a@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,\n\
                    9,2,b@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,\n";
        let (file, errors) = rows(text, |_| false);
        assert!(errors.is_empty());
        let mut engine = Engine::new();
        let taken = NewContact {
            id: 9,
            email: Some("x@x.io".into()),
            phone: None,
            linked_id: None,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
            deleted_at: None,
        };
        engine
            .apply(&crate::engine::Change::Created(taken))
            .unwrap();
        let refused = engine.plan(&Op::Import(file), Timestamp::now());
        assert_eq!(refused, Err(Refusal::IdTaken { line: 3, id: 9 }));
        let (refused, errors) = rows(text, |id| id == 7);
        assert_eq!(refused.len(), 1);
        assert_eq!(errors[0].line, 2);
    }
}
