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

use crate::engine::{
    BlockReason, Change, ContactId, Email, Engine, Kind, Limits, NewContact, Phone, Precedence,
    Timestamp,
};
use crate::matching::canon::Canon;
use crate::storage::{Storage, StorageError, StorageOptions};
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
    /// An over-merge guard or a capacity limit refused the import; nothing was imported.
    #[error("{0}; nothing was imported")]
    Refused(String),
    #[error(transparent)]
    Matching(#[from] crate::matching::record::MatchingError),
    /// A row's id taken (by a request) after the file was checked; nothing was imported.
    #[error("line {}: {}; nothing was imported", .0.line, .0.message)]
    Taken(RowError),
}

/// The over-merge guards an import obeys: their settings, and values to block (as an admin's
/// blocks) before its rows are added.
#[derive(Debug, Clone, Default)]
pub struct ImportGuards {
    pub limits: Limits,
    pub blocklist: Vec<(Kind, String)>,
}

impl ImportGuards {
    /// Blocks (as an admin's blocks) every value of the blocklist not blocked yet, in `engine`;
    /// returns the facts, for the caller to log.
    pub(crate) fn block_listed(
        &self,
        engine: &mut Engine,
        now: Timestamp,
    ) -> Result<Vec<Change>, ImportError> {
        let mut facts = Vec::new();
        for (kind, value) in &self.blocklist {
            let changes = engine
                .plan_block(*kind, value, BlockReason::Admin, now)
                .map_err(|refusal| ImportError::Refused(refusal.to_string()))?;
            for fact in changes {
                engine.apply(&fact).expect("a planned block applies");
                facts.push(fact);
            }
        }
        Ok(facts)
    }
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
    let (store, mut engine, _) = Storage::open(storage)?;
    engine.set_limits(guards.limits);
    let (rows, errors) = read_rows(file, format, &engine, &canon)?;
    if !errors.is_empty() && !skip_invalid {
        return Err(ImportError::Invalid(errors));
    }
    let mut file = CheckedFile::new(rows, errors);
    // Applied to memory before the log: nothing reads this engine, and if logging fails (or a
    // guard refuses) the process exits without it, so memory never shows what the log lacks.
    let mut facts = guards.block_listed(&mut engine, Timestamp::now())?;
    let blocked = facts
        .iter()
        .filter_map(|f| match f {
            Change::Blocked { kind, value, .. } => Some((*kind, value.clone())),
            _ => None,
        })
        .collect();
    let progress = Progress::new(file.len() as u64, "applying");
    let survey = file.survey(&engine);
    let applied = file.apply_with(
        &mut engine,
        &survey,
        |done| progress.tick(done),
        Timestamp::now(),
    )?;
    progress.finish();
    refuse_over_cap(&engine, &file.live_ids())?;
    facts.extend(applied.facts);
    store.append(&facts)?;
    // close() writes and syncs everything appended, and fails if the log did.
    store.close(&engine)?;
    let mut report = file.report(&applied.relinks, started.elapsed());
    (report.blocked, report.generic) = (blocked, applied.generic);
    Ok(report)
}

/// What applying an import's rows made: the facts to log (as one group), the relinks among them
/// (for the report) and the values blocked as generic.
pub struct Applied {
    pub facts: Vec<Change>,
    pub relinks: Vec<Change>,
    pub generic: Vec<(Kind, String)>,
}

/// What the links and the report need of a checked row once its contact is a fact.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Summary {
    line: u64,
    id: ContactId,
    linked_id: Option<ContactId>,
    precedence: Precedence,
    deleted: bool,
}

/// Rows read and checked, ready to apply: what an import of a file or of a request body holds
/// between checking and applying. Each row is already its `Created` fact, so that applying
/// (under the engine's lock, for an online import) copies nothing. A cluster's log carries it
/// whole, so that every member applies the same rows.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckedFile {
    rows: Vec<Summary>,
    created: Vec<Change>,
    pub errors: Vec<RowError>,
    /// Each distinct value the live rows hold, with those rows (indexes into `created`):
    /// found once, with no lock held, for the guards' survey.
    distinct: Vec<Distinct>,
}

/// A value of the file: its kind, the row it was first seen in, and every live row holding it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Distinct {
    kind: Kind,
    rows: Vec<usize>,
}

/// What the guards need to know before an import applies: an upper bound of the largest
/// cluster it can leave, and the values that may turn generic.
pub struct Survey {
    largest: Option<(usize, Vec<String>)>,
    generic: Vec<(Kind, usize)>,
}

impl CheckedFile {
    /// Reads and checks `bytes` (CSV, or NDJSON when the first non-blank byte is `{` or
    /// `format` says so), identifiers keyed by `canon`; `exists` tells which ids are taken.
    pub fn read(
        bytes: &[u8],
        format: Option<Format>,
        exists: impl Fn(ContactId) -> bool,
        canon: &Canon,
    ) -> Result<CheckedFile, ImportError> {
        let format = format.unwrap_or_else(|| sniff(Path::new(""), bytes));
        let raw = match format {
            Format::Csv => read_csv(bytes)?,
            Format::Ndjson => read_ndjson(bytes).map_err(|source| ImportError::Read {
                path: PathBuf::from("the request body"),
                source,
            })?,
        };
        let (rows, errors) = check_rows(raw, exists, canon);
        Ok(CheckedFile::new(rows, errors))
    }

    fn new(rows: Vec<(u64, Row)>, errors: Vec<RowError>) -> CheckedFile {
        let mut summaries = Vec::with_capacity(rows.len());
        let mut created = Vec::with_capacity(rows.len());
        for (line, row) in rows {
            summaries.push(Summary {
                line,
                id: row.contact.id,
                linked_id: row.contact.linked_id,
                precedence: row.precedence,
                deleted: row.contact.deleted_at.is_some(),
            });
            created.push(Change::Created(row.contact));
        }
        let distinct = distinct_values(&created, &summaries);
        CheckedFile {
            rows: summaries,
            created,
            errors,
            distinct,
        }
    }

    /// The text of value `d` (from its first row's fact).
    fn text(&self, d: &Distinct) -> &str {
        let Change::Created(c) = &self.created[d.rows[0]] else {
            unreachable!("a file's facts are its rows")
        };
        let value = match d.kind {
            Kind::Email => &c.email,
            Kind::Phone => &c.phone,
        };
        value.as_deref().expect("a distinct value is held")
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The first row whose id `exists` now says is taken (ids taken since the check).
    pub fn taken_id(&self, exists: impl Fn(ContactId) -> bool) -> Option<RowError> {
        self.rows.iter().find(|r| exists(r.id)).map(|r| RowError {
            line: r.line,
            message: format!("id {} already exists", r.id),
        })
    }

    /// Applies the rows to `engine`; returns the facts to log as one group, the relinks among
    /// them for [`CheckedFile::report`], and the values blocked as generic. The ids must be
    /// free in `engine` (see [`CheckedFile::taken_id`]) and the cap checked first (see
    /// [`CheckedFile::within_cap`]): then nothing can fail.
    /// `at` stamps the blocks and relinks it makes (never before the engine's clock).
    pub fn apply(
        &mut self,
        engine: &mut Engine,
        survey: &Survey,
        at: Timestamp,
    ) -> Result<Applied, ImportError> {
        self.apply_with(engine, survey, |_| {}, at)
    }

    /// The ids of the live rows.
    fn live_ids(&self) -> Vec<ContactId> {
        self.rows
            .iter()
            .filter(|r| !r.deleted)
            .map(|r| r.id)
            .collect()
    }

    /// What the guards see before the rows are applied, one lookup per distinct value: the
    /// values whose holders will pass the generic threshold (blocked once the rows are in), and
    /// an upper bound of the largest cluster the import can leave (the rows, and the clusters
    /// they touch whole, united by every other value and link not blocked now).
    pub fn survey(&self, engine: &Engine) -> Survey {
        let threshold = engine.limits().generic_threshold;
        let mut sets = Dsu::default();
        for row in &self.rows {
            sets.add(usize::from(!row.deleted));
        }
        let mut cluster_node: HashMap<ContactId, usize> = HashMap::new();
        let mut generic = Vec::new();
        let mut cluster = |sets: &mut Dsu, (primary, size): (ContactId, usize)| {
            *cluster_node
                .entry(primary)
                .or_insert_with(|| sets.add(size))
        };
        for (i, d) in self.distinct.iter().enumerate() {
            let state = engine.value_state(d.kind, self.text(d));
            if state.is_some_and(|s| s.blocked) {
                continue;
            }
            let holders = state.map_or(0, |s| s.holders) as usize + d.rows.len();
            let may = state.is_none_or(|s| s.may_turn_generic);
            if threshold > 0 && may && holders > threshold as usize {
                // Blocked as generic once the rows are in: it will unite no one.
                generic.push((d.kind, i));
                continue;
            }
            for pair in d.rows.windows(2) {
                sets.union(pair[0], pair[1]);
            }
            if let Some(existing) = state.and_then(|s| s.cluster) {
                let node = cluster(&mut sets, existing);
                sets.union(d.rows[0], node);
            }
        }
        let index: HashMap<ContactId, usize> = (self.rows.iter().enumerate())
            .map(|(i, r)| (r.id, i))
            .collect();
        for (i, row) in self.rows.iter().enumerate().filter(|(_, r)| !r.deleted) {
            let Some(linked) = row.linked_id else {
                continue;
            };
            match index.get(&linked) {
                Some(&other) => sets.union(i, other),
                None => {
                    if let Some(existing) = engine.cluster_of(linked) {
                        let node = cluster(&mut sets, existing);
                        sets.union(i, node);
                    }
                }
            }
        }
        let largest = sets.largest().map(|(size, root)| {
            let values = (self.distinct.iter())
                .filter(|d| sets.find(d.rows[0]) == root)
                .take(20)
                .map(|d| self.text(d).to_owned())
                .collect();
            (size, values)
        });
        Survey { largest, generic }
    }

    /// Refuses the import if the survey's upper bound passes `engine`'s cap: what an online
    /// import checks before it applies, since it cannot undo.
    pub fn within_cap(&self, engine: &Engine, survey: &Survey) -> Result<(), ImportError> {
        let cap = engine.limits().max_cluster_size as usize;
        match &survey.largest {
            Some((size, values)) if cap > 0 && *size > cap => Err(ImportError::Refused(format!(
                "the import would leave an identity of up to {size} contacts, more than the cap of {cap}; its values include {}",
                values.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Applies each row, then each live secondary's `linkedId` as a link, then blocks the
    /// values the rows made generic, then the relinks that make every touched cluster point at
    /// its oldest member; `tick` counts rows applied.
    fn apply_with(
        &mut self,
        engine: &mut Engine,
        survey: &Survey,
        tick: impl Fn(u64),
        now: Timestamp,
    ) -> Result<Applied, ImportError> {
        for (i, (fact, row)) in self.created.iter().zip(&self.rows).enumerate() {
            engine
                .apply(fact)
                .map_err(|e| invalid(row.line, e.to_string()))?;
            tick(i as u64 + 1);
        }
        let mut facts = std::mem::take(&mut self.created);
        for row in self.rows.iter().filter(|r| !r.deleted) {
            let Some(primary) = row.linked_id else {
                continue;
            };
            let live = engine
                .contact(primary)
                .is_some_and(|c| c.deleted_at.is_none());
            if live && primary != row.id {
                let fact = Change::Linked {
                    a: row.id,
                    b: primary,
                };
                engine.apply(&fact).expect("both rows are live");
                facts.push(fact);
            }
        }
        let mut generic = Vec::new();
        for &(kind, i) in &survey.generic {
            let Change::Created(c) = &facts[self.distinct[i].rows[0]] else {
                unreachable!("the rows' facts come first")
            };
            let value = match kind {
                Kind::Email => c.email.clone(),
                Kind::Phone => c.phone.clone(),
            };
            let value = value.expect("a distinct value is held");
            if let Some(block) = engine.plan_generic_block(kind, &value, now) {
                engine.apply(&block).expect("a planned block applies");
                facts.push(block);
                generic.push((kind, value));
            }
        }
        let relinks = engine.relinks_for_clusters_of(&self.live_ids(), now);
        for fact in &relinks {
            engine.apply(fact).expect("relinking a live row applies");
        }
        facts.extend(relinks.iter().cloned());
        Ok(Applied {
            facts,
            relinks,
            generic,
        })
    }

    /// What the import did, from the rows and the relinks it made (no engine needed, so an
    /// online import writes it after the lock is released).
    pub fn report(self, relinks: &[Change], elapsed: Duration) -> ImportReport {
        let mut relinked: HashMap<ContactId, Option<ContactId>> = HashMap::new();
        for change in relinks {
            if let Change::Relinked { id, primary, .. } = change {
                relinked.insert(*id, *primary);
            }
        }
        let corrected = self
            .rows
            .iter()
            .filter(|r| !r.deleted)
            .filter(|r| {
                let linked = relinked.get(&r.id).copied().unwrap_or(r.linked_id);
                let precedence = match linked {
                    None => Precedence::Primary,
                    Some(_) => Precedence::Secondary,
                };
                linked != r.linked_id || precedence != r.precedence
            })
            .count();
        let imported: hashbrown::HashSet<ContactId> = self.rows.iter().map(|r| r.id).collect();
        ImportReport {
            imported: self.rows.len(),
            deleted: self.rows.iter().filter(|r| r.deleted).count(),
            skipped: self.errors,
            corrected,
            existing_relinked: relinked.keys().filter(|id| !imported.contains(*id)).count(),
            elapsed,
            ..ImportReport::default()
        }
    }
}

/// Refuses an import that left a cluster over the cap, naming that cluster's values.
fn refuse_over_cap(engine: &Engine, live_ids: &[ContactId]) -> Result<(), ImportError> {
    let Some((id, size)) = live_ids
        .iter()
        .find_map(|&id| engine.over_cap(id).map(|size| (id, size)))
    else {
        return Ok(());
    };
    let identity = engine.identity(id).expect("a live contact has an identity");
    let mut values: Vec<&str> = identity.emails.clone();
    values.extend(&identity.phone_numbers);
    values.truncate(20);
    Err(ImportError::Refused(format!(
        "the import would leave an identity of {size} contacts (primary {}), more than the cap of {}; its values include {}",
        identity.primary_contact_id,
        engine.limits().max_cluster_size,
        values.join(", ")
    )))
}

/// Each distinct value the live rows hold, with the rows holding it, first seen first.
fn distinct_values(created: &[Change], rows: &[Summary]) -> Vec<Distinct> {
    let mut seen: HashMap<(Kind, &str), usize> = HashMap::new();
    let mut distinct: Vec<Distinct> = Vec::new();
    for (i, (fact, row)) in created.iter().zip(rows).enumerate() {
        let Change::Created(c) = fact else { continue };
        if row.deleted {
            continue;
        }
        for (kind, value) in [(Kind::Email, &c.email), (Kind::Phone, &c.phone)] {
            let Some(value) = value.as_deref() else {
                continue;
            };
            let at = *seen.entry((kind, value)).or_insert_with(|| {
                distinct.push(Distinct {
                    kind,
                    rows: Vec::new(),
                });
                distinct.len() - 1
            });
            distinct[at].rows.push(i);
        }
    }
    distinct
}

/// A small union-find with a weight per node, union by size and path halving.
#[derive(Default)]
struct Dsu {
    parent: Vec<usize>,
    size: Vec<usize>,
    weight: Vec<usize>,
}

impl Dsu {
    fn add(&mut self, weight: usize) -> usize {
        self.parent.push(self.parent.len());
        self.size.push(1);
        self.weight.push(weight);
        self.parent.len() - 1
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
        self.weight[a] += self.weight[b];
    }

    /// The heaviest set's weight and root.
    fn largest(&self) -> Option<(usize, usize)> {
        (0..self.parent.len())
            .filter(|&x| self.parent[x] == x)
            .map(|x| (self.weight[x], x))
            .max()
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
    Ok(check_rows(raw, |id| engine.contact(id).is_some(), canon))
}

/// Checks every row; returns the good rows sorted by id and the errors by line.
fn check_rows(raw: RawRows, exists: impl Fn(ContactId) -> bool, canon: &Canon) -> CheckedRows {
    let mut rows = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut first_line: HashMap<ContactId, u64> = HashMap::new();
    for (line, fields) in raw {
        let checked = fields.and_then(|f| check_row(f, canon)).and_then(|row| {
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
            Ok(row) => rows.push((line, row)),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    rows.sort_by_key(|(_, r)| r.contact.id);
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n";

    fn file(rows: &str, exists: impl Fn(ContactId) -> bool) -> CheckedFile {
        CheckedFile::read(
            format!("{HEADER}{rows}").as_bytes(),
            None,
            exists,
            &Canon::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_report_counts_corrections_as_the_engine_ends_up() {
        let mut engine = Engine::new();
        // 3 is older than 2 and shares its phone, so 2 claims wrongly to be a primary; 4 names
        // 2 as its primary but 3 is; 5 is right.
        let rows = "\
2,111,b@x.io,,primary,2023-01-02T00:00:00.000Z,2023-01-02T00:00:00.000Z,
3,111,c@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,
4,,c@x.io,2,secondary,2023-01-03T00:00:00.000Z,2023-01-03T00:00:00.000Z,
5,999,e@x.io,,primary,2023-01-04T00:00:00.000Z,2023-01-04T00:00:00.000Z,
";
        let mut checked = file(rows, |_| false);
        let survey = checked.survey(&engine);
        let applied = checked
            .apply(&mut engine, &survey, Timestamp::now())
            .unwrap();
        assert!(applied.facts.len() > 4);
        let report = checked.report(&applied.relinks, Duration::ZERO);
        assert_eq!((report.imported, report.corrected), (4, 2));
        assert_eq!(engine.contact(2).unwrap().linked_id, Some(3));
        assert_eq!(engine.contact(4).unwrap().linked_id, Some(3));
        engine.check_invariants().unwrap();
    }

    #[test]
    fn ids_taken_since_the_check_are_found_by_line() {
        let rows = "7,1,a@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,\n\
                    9,2,b@x.io,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,\n";
        let checked = file(rows, |_| false);
        assert_eq!(checked.taken_id(|_| false), None);
        let taken = checked.taken_id(|id| id == 9).unwrap();
        assert_eq!(taken.line, 3);
        let refused = file(rows, |id| id == 7);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused.errors[0].line, 2);
    }
}
