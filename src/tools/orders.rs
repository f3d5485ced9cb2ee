//! Order history in: `import --format orders FILE`, a shop's orders as CSV or NDJSON rows of
//! `email`, `phoneNumber` and an optional `timestamp` (other columns, such as an order number or
//! a total, are ignored). Each row is run as a `POST /identify` request would be, through the
//! same plan and guards, in timestamp order, with its timestamp as the time of what it creates.
//!
//! Rows are checked first: any bad row stops the import before anything is written, unless
//! `skip_invalid`. Each row is then its own log group, as a request is, so a crash keeps the rows
//! before it (in timestamp order); importing the same file again creates nothing twice, as
//! repeating a request does not.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::{BlockReason, Cause, Change, Email, Op, Phone, Query, Timestamp};
use crate::matching::canon::Canon;
use crate::storage::StorageOptions;
use crate::store::{Origin, Store, StoreError};
use crate::tools::export::Format;
use crate::tools::import::{list, sniff, ImportError, Progress, RowError};

/// `import --format`: the Contact table's rows as CSV or NDJSON, or a shop's orders (CSV or
/// NDJSON, told apart by the extension and the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Csv,
    Ndjson,
    Orders,
}

impl ImportFormat {
    /// The file syntax, when given.
    pub fn syntax(self) -> Option<Format> {
        match self {
            ImportFormat::Csv => Some(Format::Csv),
            ImportFormat::Ndjson => Some(Format::Ndjson),
            ImportFormat::Orders => None,
        }
    }
}

/// What an order-history import did.
#[derive(Debug, Default)]
pub struct OrdersReport {
    pub rows: usize,
    pub skipped: Vec<RowError>,
    pub primaries: u64,
    pub secondaries: u64,
    pub merges: u64,
    /// Rows that only repeated what was known.
    pub unchanged: u64,
    /// Orders an over-merge guard refused (nothing changed).
    pub refused: u64,
    pub contacts: usize,
    pub clusters: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for OrdersReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "ran {} order(s) as /identify requests in {:.2} s, {:.0} rows/s",
            self.rows,
            secs,
            self.rows as f64 / secs
        )?;
        writeln!(
            f,
            "created {} primary and {} secondary contact(s); {} merge(s) of clusters; {} order(s) added nothing new",
            self.primaries, self.secondaries, self.merges, self.unchanged
        )?;
        writeln!(
            f,
            "the data directory now holds {} contact(s) in {} cluster(s)",
            self.contacts, self.clusters
        )?;
        if self.refused > 0 {
            writeln!(
                f,
                "{} order(s) refused by the over-merge guards (all identifiers blocked, or a cluster past the cap)",
                self.refused
            )?;
        }
        if !self.skipped.is_empty() {
            let n = self.skipped.len();
            writeln!(f, "skipped {n} invalid row(s):\n{}", list(&self.skipped))?;
        }
        Ok(())
    }
}

/// One checked order: its line, its identifiers, its time (`None`: the time of the import).
struct Order {
    line: u64,
    query: Query,
    at: Option<Timestamp>,
}

/// Imports the orders in `file` into the data directory of `storage` (no server may use it).
pub fn import_orders(
    storage: StorageOptions,
    file: &Path,
    syntax: Option<Format>,
    skip_invalid: bool,
    guards: &crate::tools::import::ImportGuards,
) -> Result<OrdersReport, ImportError> {
    let started = Instant::now();
    // Orders are matched by the keys of the modes the directory was built with.
    let canon = Canon::new(crate::matching::record::recorded(&storage.dir)?);
    let (orders, skipped) = read(file, syntax, &canon)?;
    if !skipped.is_empty() && !skip_invalid {
        return Err(ImportError::Invalid(skipped));
    }
    let (store, _) = Store::open_with(storage, guards.limits)?;
    let now = Timestamp::now();
    let import = Origin::tool(Cause::Import);
    for (kind, value) in &guards.blocklist {
        let op = Op::Block {
            kind: *kind,
            value: value.clone(),
            reason: BlockReason::Admin,
        };
        store.execute_offline(&op, &import, now, |_, _| ())?;
    }
    let mut report = OrdersReport {
        rows: orders.len(),
        skipped,
        ..OrdersReport::default()
    };
    let progress = Progress::new(orders.len() as u64, "orders");
    for (i, order) in orders.into_iter().enumerate() {
        // An order a guard refuses (every identifier blocked, or a cluster past the cap)
        // changes nothing, as the request would not.
        let op = Op::Identify(order.query);
        let at = order.at.unwrap_or(now);
        match store.execute_offline(&op, &import, at, |_, done| count(&mut report, &done.facts)) {
            Ok(()) => {}
            Err(StoreError::Refused(_)) => report.refused += 1,
            Err(other) => return Err(other.into()),
        }
        progress.tick(i as u64 + 1);
    }
    progress.finish();
    let stats = store.stats();
    // close() writes and syncs everything logged, and fails if the log did.
    store.close()?;
    (report.contacts, report.clusters) = (stats.contacts, stats.clusters);
    report.elapsed = started.elapsed();
    Ok(report)
}

fn count(report: &mut OrdersReport, changes: &[Change]) {
    if changes.is_empty() {
        report.unchanged += 1;
    }
    for change in changes {
        match change {
            Change::Created(c) if c.linked_id.is_none() => report.primaries += 1,
            Change::Created(_) => report.secondaries += 1,
            _ => {}
        }
    }
    if changes.iter().any(|c| matches!(c, Change::Merged { .. })) {
        report.merges += 1;
    }
}

/// Reads and checks every row; returns the orders in the order they run (by time, then line;
/// rows without a time last) and the refused rows by line.
fn read(
    path: &Path,
    syntax: Option<Format>,
    canon: &Canon,
) -> Result<(Vec<Order>, Vec<RowError>), ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let syntax = match syntax {
        Some(s) => s,
        None => sniff(path, reader.fill_buf().map_err(read_err)?),
    };
    let raw = match syntax {
        Format::Csv => read_csv(reader)?,
        Format::Ndjson => read_ndjson(reader).map_err(read_err)?,
    };
    let (mut orders, mut skipped) = (Vec::with_capacity(raw.len()), Vec::new());
    for (line, fields) in raw {
        match fields.and_then(|f| check(line, f, canon)) {
            Ok(order) => orders.push(order),
            Err(message) => skipped.push(RowError { line, message }),
        }
    }
    orders.sort_by_key(|o| (o.at.is_none(), o.at.map(|t| t.0), o.line));
    Ok((orders, skipped))
}

/// A row's `email`, `phoneNumber` and `timestamp`, each `None` when empty or absent.
type Fields = [Option<String>; 3];
const NAMES: [&str; 3] = ["email", "phoneNumber", "timestamp"];

fn check(line: u64, [email, phone, at]: Fields, canon: &Canon) -> Result<Order, String> {
    let email = Email::parse(email.as_deref().unwrap_or(""))
        .map_err(|_| format!("email {:?} is not an email", email.unwrap_or_default()))?;
    let phone = Phone::parse(phone.as_deref().unwrap_or("")).map_err(|_| {
        format!(
            "phoneNumber {:?} is not a phone number",
            phone.unwrap_or_default()
        )
    })?;
    let query = Query::new(email, phone).ok_or("neither email nor phoneNumber")?;
    let query = canon.query(query);
    let at = match at {
        None => None,
        Some(text) => Some(parse_time(&text).ok_or_else(|| {
            format!("timestamp {text:?} is not a date (2023-04-01) or an RFC 3339 time")
        })?),
    };
    Ok(Order { line, query, at })
}

/// RFC 3339 (`2023-04-01T10:00:00Z`, with or without a fraction or an offset) or a bare date
/// (midnight UTC).
fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.len() == 10 {
        return Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"));
    }
    Timestamp::parse_rfc3339(text)
}

type RawRows = Vec<(u64, Result<Fields, String>)>;

fn read_csv(reader: impl std::io::Read) -> Result<RawRows, ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| bad_header(e.to_string()))?
        .clone();
    let index = NAMES.map(|name| headers.iter().position(|h| h.trim() == name));
    if index[0].is_none() && index[1].is_none() {
        let found: Vec<&str> = headers.iter().collect();
        return Err(bad_header(format!(
            "an orders file needs an email and/or a phoneNumber column (and may have timestamp); found {}",
            found.join(",")
        )));
    }
    let mut out = Vec::new();
    for record in csv.records() {
        let line = out.len() as u64 + 2;
        out.push(match record {
            Ok(r) => {
                let line = r.position().map_or(line, |p| p.line());
                let field = |i: Option<usize>| {
                    i.and_then(|i| r.get(i))
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                (line, Ok(index.map(field)))
            }
            Err(e) => (line, Err(format!("unreadable row: {e}"))),
        });
    }
    Ok(out)
}

fn bad_header(message: String) -> ImportError {
    ImportError::Invalid(vec![RowError { line: 1, message }])
}

fn read_ndjson(reader: impl BufRead) -> std::io::Result<RawRows> {
    crate::tools::import::ndjson_lines(reader, ndjson_fields)
}

fn ndjson_fields(line: &str) -> Result<Fields, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let field = |name: &str| match object.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
        }
        Some(serde_json::Value::Number(n)) if name == "phoneNumber" && n.is_u64() => {
            Ok(Some(n.to_string()))
        }
        Some(other) => Err(format!("{name} is {other}, not a string")),
    };
    Ok([field(NAMES[0])?, field(NAMES[1])?, field(NAMES[2])?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_dates_or_rfc3339() {
        let day = parse_time("2023-04-01").unwrap();
        assert_eq!(Some(day), parse_time("2023-04-01T00:00:00Z"));
        assert_eq!(
            parse_time("2023-04-01T02:00:00+02:00"),
            Some(day),
            "offsets count"
        );
        assert!(parse_time("April 1st").is_none());
    }
}
