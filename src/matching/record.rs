//! The matching modes a data directory was built with, in its `MATCHING` file: every key in its
//! rows was made by them, so a server or a tool with other modes would match new requests
//! against keys made differently. Starting with other modes is refused, naming `rekey`.
//!
//! The file is text, written to a temporary file, synced and renamed (then the directory
//! synced):
//!
//! ```text
//! identity-engine matching 1
//! phone-match e164
//! default-region US
//! email-match provider
//! ```
//!
//! A directory without one (made before the file existed, or new) holds as-given keys.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::matching::canon::{EmailMatch, Modes, PhoneMatch};

pub(crate) const FILE: &str = "MATCHING";
const HEADER: &str = "identity-engine matching 1";

/// Why a directory's modes could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum MatchingError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a matching file this version reads: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("{} was built with matching {recorded}, not {asked}: its keys were made by other rules. Re-key it (offline) first: identity-engine rekey --data-dir {} {}",
        dir.display(), dir.display(), asked.options())]
    Mismatch {
        dir: PathBuf,
        recorded: Modes,
        asked: Modes,
    },
}

/// The modes `dir` records (as-given when it records none).
pub fn recorded(dir: &Path) -> Result<Modes, MatchingError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).map_err(|why| MatchingError::Unreadable { path, why }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Modes::default()),
        Err(source) => Err(MatchingError::Io { path, source }),
    }
}

/// Whether the directory has a record of its modes.
pub(crate) fn is_recorded(dir: &Path) -> bool {
    dir.join(FILE).exists()
}

/// Checks that `dir` was built with `asked`; Ok(true) when the directory has no record yet
/// (then [`record`] it once the directory is locked and open). A new directory (no log, no
/// snapshot) takes any modes; one with data and no record holds as-given keys.
pub fn check(dir: &Path, asked: &Modes) -> Result<bool, MatchingError> {
    if !is_recorded(dir) && is_new(dir) {
        return Ok(true);
    }
    let recorded = recorded(dir)?;
    if &recorded != asked {
        return Err(MatchingError::Mismatch {
            dir: dir.to_owned(),
            recorded,
            asked: asked.clone(),
        });
    }
    Ok(!is_recorded(dir))
}

/// Whether `dir` holds no state yet (or does not exist).
fn is_new(dir: &Path) -> bool {
    crate::storage::recovery::list(dir).map_or(true, |files| {
        files.snapshots.is_empty() && files.segments.is_empty()
    })
}

/// Writes `modes` as the directory's record, atomically.
pub fn record(dir: &Path, modes: &Modes) -> Result<(), MatchingError> {
    let path = dir.join(FILE);
    let temp = dir.join(format!("{FILE}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MatchingError::Io { path, source }
    };
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(render(modes).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&temp))?;
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn render(modes: &Modes) -> String {
    let mut text = format!("{HEADER}\nphone-match {}\n", modes.phone.as_str());
    if let Some(region) = &modes.region {
        text.push_str(&format!("default-region {region}\n"));
    }
    text + &format!("email-match {}\n", modes.email.as_str())
}

fn parse(text: &str) -> Result<Modes, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("the first line is not {HEADER:?}"));
    }
    let (mut phone, mut email, mut region) = (None, None, None);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "phone-match" => phone = Some(PhoneMatch::from_str(value, false)?),
            "email-match" => email = Some(EmailMatch::from_str(value, false)?),
            "default-region" => region = Some(value.to_owned()),
            _ => return Err(format!("unknown line {line:?}")),
        }
    }
    let (Some(phone), Some(email)) = (phone, email) else {
        return Err("phone-match or email-match is missing".into());
    };
    Modes::new(phone, email, region.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), Modes::default());
        let modes = Modes::new(PhoneMatch::E164, EmailMatch::Provider, Some("gb")).unwrap();
        assert!(
            check(dir.path(), &modes).unwrap(),
            "a new directory takes any modes"
        );
        std::fs::write(dir.path().join("wal-00000000000000000001.log"), b"").unwrap();
        assert!(
            check(dir.path(), &modes).is_err(),
            "data without a record is as-given"
        );
        assert!(
            check(dir.path(), &Modes::default()).unwrap(),
            "no record yet"
        );
        record(dir.path(), &modes).unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), modes);
        assert!(!check(dir.path(), &modes).unwrap());
    }

    #[test]
    fn other_modes_are_refused_naming_rekey() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), &Modes::default()).unwrap();
        let asked = Modes::new(PhoneMatch::Digits, EmailMatch::AsGiven, None).unwrap();
        assert!(check(dir.path(), &asked).is_err());
        let message = check(dir.path(), &asked).unwrap_err().to_string();
        assert!(
            message.contains(&format!(
                "identity-engine rekey --data-dir {} --phone-match digits --email-match as-given",
                dir.path().display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_record_is_refused() {
        for text in [
            "nonsense\n",
            "identity-engine matching 1\nphone-match loose\nemail-match as-given\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
