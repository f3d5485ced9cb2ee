//! The Raft back-end's files, owned and versioned here like the write-ahead log's: the log's
//! entries, the vote, the log's state (what was purged, what is known committed) and the
//! current snapshot's metadata. The Raft code (`crate::raft`) converts openraft's types to and
//! from these, so an upgrade of openraft that changes its own serde layout changes nothing on
//! disk, and every format ever written has a golden directory that every build must read.
//!
//! Format 1 (written by this build): a log segment starts with [`RAFT_MAGIC`] and the format
//! version (u32, little-endian); each record is `[length u32][crc32 u32][bincode Entry]`. The
//! JSON files hold `"format": 1` and the fields below.
//!
//! Format 0 (written before the format had a number): segments had no header and their records
//! were openraft 0.9's own encoding of its entries, carrying the commands of that time; the
//! JSON files were openraft's types. Read, converted, never written.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::codec;
use crate::engine::{Cause, Limits, Op};

pub(crate) const RAFT_MAGIC: &[u8; 8] = b"IDENTRFT";
pub(crate) const RAFT_FORMAT: u32 = 1;
/// The segment header's length: the magic and the version.
pub(crate) const SEGMENT_HEADER: usize = 12;

/// One entry's place in the log: the term and node of the leader that wrote it, its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogId {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log_id: LogId,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// What a new leader writes first.
    Blank,
    /// Ops, in the order they apply.
    Commands(Vec<Command>),
    Membership(Membership),
}

/// An entry to write, borrowing its commands: encodes exactly as [`Entry`] does.
#[derive(Serialize)]
pub(crate) struct EntryRef<'a> {
    pub log_id: LogId,
    pub payload: PayloadRef<'a>,
}

/// [`Payload`], borrowed; the variants in the same order.
#[derive(Serialize)]
pub(crate) enum PayloadRef<'a> {
    Blank,
    Commands(&'a [Command]),
    Membership(Membership),
}

/// The voters (one set, or two while a change is joint) and every member's address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub configs: Vec<BTreeSet<u64>>,
    pub nodes: BTreeMap<u64, String>,
}

/// One op as the group's log carries it: with the time and guards of the member that proposed
/// it (every member plans with these, whatever its own options), what made it and who, and
/// whom to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub op: Op,
    pub cause: Cause,
    /// The name of the token that asked for it, if any.
    pub by: Option<String>,
    /// Milliseconds since the epoch; the engine never goes back from its own clock.
    pub at: i64,
    pub limits: Limits,
    /// The node that proposed it, and its number there.
    pub origin: u64,
    pub nonce: u64,
}

/// `vote.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub format: u32,
    pub term: u64,
    pub node: u64,
    pub committed: bool,
}

/// `log-state.json`: the last entry purged (covered by a snapshot) and the last known
/// committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    pub format: u32,
    pub purged: Option<LogId>,
    pub committed: Option<LogId>,
}

/// `snapshot.json`: which file under `snapshots/` is the current snapshot, the last entry it
/// covers, and the membership then (with the entry that made it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: u32,
    pub last_log_id: Option<LogId>,
    pub membership_log_id: Option<LogId>,
    pub membership: Membership,
    pub snapshot_id: String,
    pub file: String,
}

/// The header a segment of this format starts with.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER] {
    let mut header = [0; SEGMENT_HEADER];
    header[..8].copy_from_slice(RAFT_MAGIC);
    header[8..].copy_from_slice(&RAFT_FORMAT.to_le_bytes());
    header
}

/// The format of a segment from its first bytes, and where its records start; an unknown
/// version is an error naming it.
pub fn segment_format(bytes: &[u8]) -> Result<(u32, usize), String> {
    if !bytes.starts_with(RAFT_MAGIC) {
        return Ok((0, 0));
    }
    if bytes.len() < SEGMENT_HEADER {
        // A crash as the segment was made: it holds no record, and a new one replaces it.
        return Ok((0, bytes.len()));
    }
    let mut version = [0; 4];
    version.copy_from_slice(&bytes[8..SEGMENT_HEADER]);
    let version = u32::from_le_bytes(version);
    if version != RAFT_FORMAT {
        return Err(format!(
            "Raft log format {version}, which this build does not know (it reads 0 and 1)"
        ));
    }
    Ok((version, SEGMENT_HEADER))
}

pub(crate) fn encode_entry(entry: &EntryRef<'_>) -> Result<Vec<u8>, String> {
    codec::encode_message(entry).map_err(|e| e.to_string())
}

/// Decodes one record of a segment of `format`.
pub fn decode_entry(format: u32, bytes: &[u8]) -> Result<Entry, String> {
    match format {
        0 => codec::decode_message::<v0::Entry>(bytes)
            .map(Entry::from)
            .map_err(|e| e.to_string()),
        _ => codec::decode_message(bytes).map_err(|e| e.to_string()),
    }
}

pub(crate) fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serializes to JSON")
}

/// Reads `vote.json` of either format.
pub fn decode_vote(bytes: &[u8]) -> Result<Vote, String> {
    decode_either(bytes, |v: v0::Vote| Vote {
        format: RAFT_FORMAT,
        term: v.leader_id.term,
        node: v.leader_id.node_id,
        committed: v.committed,
    })
}

/// Reads `log-state.json` of either format.
pub fn decode_log_state(bytes: &[u8]) -> Result<LogState, String> {
    decode_either(bytes, |v: v0::LogState| LogState {
        format: RAFT_FORMAT,
        purged: v.purged.map(LogId::from),
        committed: v.committed.map(LogId::from),
    })
}

/// Reads `snapshot.json` of either format.
pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<SnapshotMeta, String> {
    decode_either(bytes, |v: v0::Saved| SnapshotMeta {
        format: RAFT_FORMAT,
        last_log_id: v.meta.last_log_id.map(LogId::from),
        membership_log_id: v.meta.last_membership.log_id.map(LogId::from),
        membership: v.meta.last_membership.membership.into(),
        snapshot_id: v.meta.snapshot_id,
        file: v.file,
    })
}

/// A JSON file of format 1 (it says so), or of format 0 read by `old` and converted.
fn decode_either<T, Old>(bytes: &[u8], old: impl FnOnce(Old) -> T) -> Result<T, String>
where
    T: serde::de::DeserializeOwned,
    Old: serde::de::DeserializeOwned,
{
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match value.get("format").and_then(|f| f.as_u64()) {
        Some(1) => serde_json::from_value(value).map_err(|e| e.to_string()),
        Some(other) => Err(format!("format {other}, which this build does not know")),
        None => serde_json::from_value(value)
            .map(old)
            .map_err(|e| e.to_string()),
    }
}

/// Format 0: openraft 0.9's serde layout of its types, and the commands of that time.
mod v0 {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::Deserialize;

    use crate::engine::{
        BlockReason, Change, ContactId, ImportRow, Kind, Limits, NewContact, Op, Precedence, Query,
        Rows,
    };

    #[derive(Deserialize)]
    pub struct LeaderId {
        pub term: u64,
        pub node_id: u64,
    }

    #[derive(Deserialize)]
    pub struct LogId {
        pub leader_id: LeaderId,
        pub index: u64,
    }

    impl From<LogId> for super::LogId {
        fn from(id: LogId) -> super::LogId {
            super::LogId {
                term: id.leader_id.term,
                node: id.leader_id.node_id,
                index: id.index,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Vote {
        pub leader_id: LeaderId,
        pub committed: bool,
    }

    #[derive(Deserialize)]
    pub struct LogState {
        pub purged: Option<LogId>,
        pub committed: Option<LogId>,
    }

    #[derive(Deserialize)]
    pub struct Node {
        pub addr: String,
    }

    #[derive(Deserialize)]
    pub struct Membership {
        pub configs: Vec<BTreeSet<u64>>,
        pub nodes: BTreeMap<u64, Node>,
    }

    impl From<Membership> for super::Membership {
        fn from(m: Membership) -> super::Membership {
            super::Membership {
                configs: m.configs,
                nodes: m.nodes.into_iter().map(|(id, n)| (id, n.addr)).collect(),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct StoredMembership {
        pub log_id: Option<LogId>,
        pub membership: Membership,
    }

    #[derive(Deserialize)]
    pub struct Meta {
        pub last_log_id: Option<LogId>,
        pub last_membership: StoredMembership,
        pub snapshot_id: String,
    }

    #[derive(Deserialize)]
    pub struct Saved {
        pub meta: Meta,
        pub file: String,
    }

    #[derive(Deserialize)]
    pub struct Entry {
        log_id: LogId,
        payload: Payload,
    }

    #[derive(Deserialize)]
    enum Payload {
        Blank,
        Normal(Vec<Command>),
        Membership(Membership),
    }

    #[derive(Deserialize)]
    struct Command {
        op: OldOp,
        at: i64,
        limits: Limits,
        origin: u64,
        nonce: u64,
    }

    #[derive(Deserialize)]
    enum OldOp {
        Identify(Query),
        Delete(ContactId),
        Block(Kind, String),
        Unblock(Kind, String),
        Import(CheckedFile),
    }

    /// An online import's checked file as that format carried it: each row's summary, and
    /// its `Created` fact at the same index.
    #[derive(Deserialize)]
    struct CheckedFile {
        rows: Vec<Summary>,
        created: Vec<Change>,
        #[allow(dead_code)]
        errors: Vec<RowError>,
        #[allow(dead_code)]
        distinct: Vec<Distinct>,
    }

    #[derive(Deserialize)]
    struct Summary {
        line: u64,
        #[allow(dead_code)]
        id: ContactId,
        #[allow(dead_code)]
        linked_id: Option<ContactId>,
        precedence: Precedence,
        #[allow(dead_code)]
        deleted: bool,
    }

    #[derive(Deserialize)]
    struct RowError {
        #[allow(dead_code)]
        line: u64,
        #[allow(dead_code)]
        message: String,
    }

    #[derive(Deserialize)]
    struct Distinct {
        #[allow(dead_code)]
        kind: Kind,
        #[allow(dead_code)]
        rows: Vec<usize>,
    }

    impl From<Entry> for super::Entry {
        fn from(e: Entry) -> super::Entry {
            let payload = match e.payload {
                Payload::Blank => super::Payload::Blank,
                Payload::Normal(commands) => {
                    super::Payload::Commands(commands.into_iter().map(convert).collect())
                }
                Payload::Membership(m) => super::Payload::Membership(m.into()),
            };
            super::Entry {
                log_id: e.log_id.into(),
                payload,
            }
        }
    }

    fn convert(c: Command) -> super::Command {
        let op = match c.op {
            OldOp::Identify(query) => Op::Identify(query),
            OldOp::Delete(id) => Op::Delete(id),
            OldOp::Block(kind, value) => Op::Block {
                kind,
                value,
                reason: BlockReason::Admin,
            },
            OldOp::Unblock(kind, value) => Op::Unblock { kind, value },
            OldOp::Import(file) => Op::Import(rows_of(file)),
        };
        super::Command {
            cause: op.cause(),
            op,
            by: None,
            at: c.at,
            limits: c.limits,
            origin: c.origin,
            nonce: c.nonce,
        }
    }

    fn rows_of(file: CheckedFile) -> Rows {
        let rows = (file.rows.into_iter().zip(file.created))
            .filter_map(|(summary, fact)| match fact {
                Change::Created(contact) => Some(row(summary, contact)),
                _ => None,
            })
            .collect();
        Rows::new(rows, Vec::new())
    }

    fn row(summary: Summary, contact: NewContact) -> ImportRow {
        ImportRow {
            line: summary.line,
            contact,
            precedence: summary.precedence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_header_says_its_format_and_a_headless_one_is_format_0() {
        assert_eq!(segment_format(&segment_header()), Ok((1, SEGMENT_HEADER)));
        assert_eq!(segment_format(&[0, 0, 0, 5]), Ok((0, 0)));
        let mut future = segment_header();
        future[8] = 9;
        assert!(segment_format(&future).unwrap_err().contains("format 9"));
    }

    #[test]
    fn an_entry_written_borrowed_reads_back_whole() {
        let command = Command {
            op: Op::Delete(7),
            cause: Cause::Delete,
            by: Some("support".into()),
            at: 1_700_000_000_000,
            limits: Limits::default(),
            origin: 2,
            nonce: 9,
        };
        let log_id = LogId {
            term: 3,
            node: 2,
            index: 40,
        };
        let commands = [command.clone()];
        let bytes = encode_entry(&EntryRef {
            log_id,
            payload: PayloadRef::Commands(&commands),
        })
        .unwrap();
        let entry = decode_entry(RAFT_FORMAT, &bytes).unwrap();
        assert_eq!(entry.log_id, log_id);
        assert_eq!(entry.payload, Payload::Commands(vec![command]));
    }

    #[test]
    fn json_files_of_format_0_are_read_as_format_1() {
        let vote = br#"{"leader_id":{"term":3,"node_id":2},"committed":true}"#;
        let read = decode_vote(vote).unwrap();
        assert_eq!((read.term, read.node, read.committed), (3, 2, true));
        let again = decode_vote(&encode_json(&read)).unwrap();
        assert_eq!(again, read);
        let state =
            br#"{"purged":null,"committed":{"leader_id":{"term":1,"node_id":1},"index":7}}"#;
        let read = decode_log_state(state).unwrap();
        assert_eq!(read.committed.map(|l| l.index), Some(7));
        assert!(decode_vote(br#"{"format":2}"#).is_err());
    }
}
