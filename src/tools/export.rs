//! Rows out: CSV or NDJSON with exactly the Contact table's column names, the format `import`
//! reads back and that other implementations of this service keep in their databases.

use crate::engine::{Contact, ContactId, Engine};

/// The Contact table's columns, in order. An erased row has no email or phoneNumber and its
/// `erasedAt`; files written before erasure have the first eight (import reads both).
pub(crate) const COLUMNS: [&str; 9] = [
    "id",
    "phoneNumber",
    "email",
    "linkedId",
    "linkPrecedence",
    "createdAt",
    "updatedAt",
    "deletedAt",
    "erasedAt",
];

/// Rows rendered per page: each page takes the engine's lock once, briefly.
pub(crate) const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Ndjson,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// What a file starts with before any row.
    pub fn header(self) -> Vec<u8> {
        match self {
            Format::Csv => format!("{}\n", COLUMNS.join(",")).into_bytes(),
            Format::Ndjson => Vec::new(),
        }
    }

    /// Renders `rows` (no header).
    pub fn render(self, rows: &[Contact]) -> Vec<u8> {
        match self {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                for c in rows {
                    let opt = |v: Option<String>| v.unwrap_or_default();
                    w.write_record([
                        c.id.to_string(),
                        opt(c.phone_number.clone()),
                        opt(c.email.clone()),
                        opt(c.linked_id.map(|i| i.to_string())),
                        serde_json::to_value(c.link_precedence)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        c.created_at.to_string(),
                        c.updated_at.to_string(),
                        opt(c.deleted_at.map(|t| t.to_string())),
                        opt(c.erased_at.map(|t| t.to_string())),
                    ])
                    .expect("writing CSV to memory cannot fail");
                }
                w.into_inner().expect("flushing CSV to memory cannot fail")
            }
            Format::Ndjson => {
                let mut out = Vec::new();
                for c in rows {
                    serde_json::to_writer(&mut out, c)
                        .expect("serializing a row to memory cannot fail");
                    out.push(b'\n');
                }
                out
            }
        }
    }
}

/// Writes every row of `engine`, in id order, to `out`.
pub fn write_all(
    engine: &Engine,
    format: Format,
    out: &mut impl std::io::Write,
) -> std::io::Result<u64> {
    out.write_all(&format.header())?;
    let (mut after, mut written): (ContactId, u64) = (0, 0);
    loop {
        let (rows, next) = engine.contacts_page(after, PAGE);
        out.write_all(&format.render(&rows))?;
        written += rows.len() as u64;
        match next {
            Some(n) => after = n,
            None => return Ok(written),
        }
    }
}

/// `identity-engine export`: locks `dir` (refusing if a server holds it), loads its state
/// without changing any file, and writes every row to `output` or standard output.
pub fn export_dir(
    dir: &std::path::Path,
    format: Format,
    output: Option<&std::path::Path>,
) -> Result<String, crate::storage::StorageError> {
    use crate::storage::{lock_dir, recovery, StorageError};
    let _lock = lock_dir(dir)?;
    let (engine, _) = recovery::recover(dir, recovery::Mode::ReadOnly)?;
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => {
            Box::new(std::fs::File::create(path).map_err(|e| StorageError::file(path, e))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::new(&mut out);
    let written = write_all(&engine, format, &mut out)
        .and_then(|n| std::io::Write::flush(&mut out).map(|()| n))
        .map_err(StorageError::Io)?;
    Ok(if output.is_some() {
        format!("exported {written} row(s)\n")
    } else {
        String::new()
    })
}
