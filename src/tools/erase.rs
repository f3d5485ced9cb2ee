//! `identity-engine erase` (a stopped directory) and `restore --erasures` (a ledger re-applied to
//! a restored backup), through the same store and ops as the server: each erasure is an
//! `Op::Erase`, and the files are purged (`erasure::purge_offline`) before the tool exits, so the
//! directory it leaves holds none of the erased values.

use std::path::Path;

use crate::engine::{Cause, Email, Kind, Op, Outcome, Phone, Refusal, Target, Timestamp};
use crate::matching::canon::Canon;
use crate::storage::StorageOptions;
use crate::store::{Origin, Store, StoreError};

/// What `erase` was told to erase, as given on the command line.
#[derive(Debug, Clone)]
pub enum Named {
    Contact(u32),
    Email(String),
    Phone(String),
}

/// Erases what `named` names in the stopped directory `storage.dir`, then purges its files.
pub fn erase(storage: StorageOptions, named: &Named) -> Result<String, String> {
    let dir = storage.dir.clone();
    refuse_member(&dir)?;
    let modes = crate::matching::record::recorded(&dir).map_err(|e| e.to_string())?;
    let target = target(named, &Canon::new(modes))?;
    let (store, _) = Store::open(storage).map_err(|e| e.to_string())?;
    let erased = erase_one(&store, target).map_err(|e| match e {
        StoreError::Refused(Refusal::NothingToErase(why)) => format!("nothing erased: {why}"),
        other => other.to_string(),
    })?;
    let report = finish(&store)?;
    let (id, contacts) = erased;
    Ok(format!(
        "erasure {id}: contact(s) {contacts:?} erased\n{report}"
    ))
}

/// `restore --erasures LEDGER`: the backup `file` restored into `dir`, then every erasure of the
/// ledger (saved from `GET /erasures`) erased again by its contact ids, and the files purged, all
/// before anything can serve the directory. A contact the backup does not hold (made after it)
/// or holds erased already is passed over. On failure the directory is left empty.
pub fn restore_with_ledger(file: &Path, dir: &Path, ledger: &Path) -> Result<String, String> {
    let entries = read_ledger(ledger)?;
    let restored = crate::tools::backup::restore_dir(file, dir).map_err(|e| e.to_string())?;
    let reapplied = reapply(dir, &entries).inspect_err(|_| crate::tools::backup::clear(dir))?;
    Ok(format!("{restored}{reapplied}"))
}

fn reapply(dir: &Path, entries: &[Vec<u32>]) -> Result<String, String> {
    let (store, _) = Store::open(StorageOptions::new(dir)).map_err(|e| e.to_string())?;
    let (mut applied, mut contacts) = (0, 0);
    for ids in entries {
        match erase_one(&store, Target::Contacts(ids.clone())) {
            Ok((_, erased)) => {
                applied += 1;
                contacts += erased.len();
            }
            Err(StoreError::Refused(Refusal::NothingToErase(_))) => {}
            Err(other) => return Err(other.to_string()),
        }
    }
    let report = finish(&store)?;
    Ok(format!(
        "{} erasure(s) of the ledger: {applied} applied again ({contacts} contact(s)), the others held nothing to erase\n{report}",
        entries.len()
    ))
}

/// The contacts of each erasure of a ledger saved from `GET /erasures` (that answer whole, or
/// its list of erasures).
fn read_ledger(path: &Path) -> Result<Vec<Vec<u32>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| format!("{}: not a ledger from GET /erasures: {why}", path.display());
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(&e.to_string()))?;
    let list = value.get("erasures").unwrap_or(&value);
    let list = list.as_array().ok_or_else(|| bad("no list of erasures"))?;
    list.iter()
        .map(|entry| {
            let ids = entry["contacts"]
                .as_array()
                .ok_or_else(|| bad("an erasure without contacts"))?;
            ids.iter()
                .map(|id| {
                    (id.as_u64())
                        .and_then(|id| u32::try_from(id).ok())
                        .filter(|&id| id > 0)
                        .ok_or_else(|| bad("a contact id that is not a positive integer"))
                })
                .collect()
        })
        .collect()
}

/// Erases `target` now, its purge due at once; the erasure's id and the contacts it erased.
fn erase_one(store: &Store, target: Target) -> Result<(u64, Vec<u32>), StoreError> {
    let op = Op::Erase {
        target,
        purge_within_ms: 0,
    };
    let origin = Origin::tool(Cause::Erasure);
    store.execute_offline(&op, &origin, Timestamp::now(), |engine, done| {
        let Outcome::Erased { erasure, .. } = &done.outcome else {
            return (0, Vec::new());
        };
        let contacts = engine.erasure(*erasure).map(|e| e.contacts.clone());
        (*erasure, contacts.unwrap_or_default())
    })
}

/// Purges the files, records it, and closes the store.
fn finish(store: &Store) -> Result<String, String> {
    let (report, done) = crate::erasure::purge_offline(store).map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    Ok(format!(
        "purged: {} erasure(s) done; a snapshot of {} bytes written in {} ms, {} older file(s) removed\n",
        done.len(),
        report.bytes,
        report.elapsed.as_millis(),
        report.removed
    ))
}

fn target(named: &Named, canon: &Canon) -> Result<Target, String> {
    let value = |kind: Kind, key: String| Ok(Target::Value { kind, value: key });
    match named {
        Named::Contact(0) => Err("--contact-id must be a positive integer".into()),
        Named::Contact(id) => Ok(Target::Contact(*id)),
        Named::Email(text) => match Email::parse(text).map_err(|e| e.to_string())? {
            Some(email) => value(Kind::Email, canon.email(email).as_str().to_owned()),
            None => Err("--email is blank".into()),
        },
        Named::Phone(text) => match Phone::parse(text).map_err(|e| e.to_string())? {
            Some(phone) => value(Kind::Phone, canon.phone(phone).as_str().to_owned()),
            None => Err("--phone is blank".into()),
        },
    }
}

/// A cluster member's directory holds the group's files, which only the running group changes.
fn refuse_member(dir: &Path) -> Result<(), String> {
    if dir.join("raft").exists() {
        return Err(format!(
            "{} is a cluster member's: erase with POST /erasures on the running group, which purges every member",
            dir.display()
        ));
    }
    Ok(())
}
