//! Blocklist files: one value a line, `email:VALUE` or `phone:VALUE` (blank lines and lines
//! starting with `#` are skipped), normalized and validated like a request's identifiers.

use std::path::Path;

use crate::engine::{BlockReason, Email, Kind, Op, Phone};
use crate::matching::canon::Canon;
use crate::store::{Origin, Store, StoreError};

/// The values of a blocklist file as matching keys, or what is wrong with it (naming the line).
pub fn read(file: &Path, canon: &Canon) -> Result<Vec<(Kind, String)>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    parse(&text, canon).map_err(|e| format!("{}: {e}", file.display()))
}

/// The values of a blocklist's text, as matching keys (a value blocked in one spelling is
/// blocked in all of them).
pub fn parse(text: &str, canon: &Canon) -> Result<Vec<(Kind, String)>, String> {
    let mut values = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = match line.split_once(':') {
            Some(("email", v)) => {
                Email::parse(v).map(|e| e.map(|e| (Kind::Email, canon.email(e).to_string())))
            }
            Some(("phone" | "phoneNumber", v)) => {
                Phone::parse(v).map(|p| p.map(|p| (Kind::Phone, canon.phone(p).to_string())))
            }
            _ => {
                return Err(format!(
                    "line {}: expected `email:VALUE` or `phone:VALUE`",
                    n + 1
                ))
            }
        };
        match value {
            Ok(Some(v)) => values.push(v),
            Ok(None) => return Err(format!("line {}: the value is empty", n + 1)),
            Err(e) => return Err(format!("line {}: {e}", n + 1)),
        }
    }
    Ok(values)
}

/// Blocks every value not blocked yet, as an admin's block; returns how many were new.
pub async fn apply(store: &Store, values: &[(Kind, String)]) -> Result<usize, StoreError> {
    let mut added = 0;
    for (kind, value) in values {
        if store.peek(|e| e.blocked(*kind, value).is_some()) {
            continue;
        }
        let op = Op::Block {
            kind: *kind,
            value: value.clone(),
            reason: BlockReason::Admin,
        };
        let origin = Origin::of(&op);
        store.execute(op, origin, |_, _| ()).await?;
        added += 1;
    }
    Ok(added)
}
