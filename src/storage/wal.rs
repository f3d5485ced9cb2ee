//! Log segments: file names, the record type, and how a batch of changes becomes bytes.
//!
//! A segment is `wal-<first seq, 20 digits>.log`: a file header, then one frame per record. A
//! request's changes form a group: every record but the last has `commit: false`, so recovery
//! applies a group whole or not at all and a torn write never leaves half a merge.

use serde::{Deserialize, Serialize};

use super::frame::push_encoded;
use crate::engine::Change;

pub const WAL_MAGIC: &[u8; 8] = b"IDENTWAL";

/// One logged change, as written.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    commit: bool,
    change: &'a Change,
}

/// One logged change, as read back.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// True on the last record of a request's group.
    pub commit: bool,
    pub change: Change,
}

/// Frames `changes` as one group with sequence numbers from `first_seq`; returns the last.
pub fn encode_group(out: &mut Vec<u8>, first_seq: u64, changes: &[Change]) -> u64 {
    let mut seq = first_seq;
    for (i, change) in changes.iter().enumerate() {
        let commit = i + 1 == changes.len();
        push_encoded(
            out,
            &RecordRef {
                seq,
                commit,
                change,
            },
        );
        seq += 1;
    }
    seq - 1
}

pub fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timestamp;
    use crate::storage::{codec, frame};

    #[test]
    fn a_group_marks_only_its_last_record_as_commit() {
        let changes = vec![
            Change::Joined {
                email: "a@b.c".into(),
                phone: "1".into(),
            },
            Change::Relinked {
                id: 2,
                primary: Some(1),
                at: Timestamp(5),
            },
        ];
        let mut buf = Vec::new();
        assert_eq!(encode_group(&mut buf, 10, &changes), 11);
        let mut offset = 0;
        let mut records = Vec::new();
        while let frame::Frame::Valid { payload, next } = frame::read_frame(&buf, offset) {
            records.push(codec::decode::<Record>(payload).unwrap());
            offset = next;
        }
        assert_eq!(
            records
                .iter()
                .map(|r| (r.seq, r.commit))
                .collect::<Vec<_>>(),
            vec![(10, false), (11, true)]
        );
        assert_eq!(records[1].change, changes[1]);
    }

    #[test]
    fn segment_names_sort_by_sequence_and_parse_back() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("snapshot-1.snap"), None);
    }
}
