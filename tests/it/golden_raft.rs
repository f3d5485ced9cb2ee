//! Golden Raft data directories: a one-member Raft group's files in each format of the Raft
//! back-end's files (`src/storage/raft_files.rs`), committed under
//! `tests/golden/raft-v<N>/data` with what the member serves from them in `expected.json`
//! (every row, the identity of every live contact, the blocklist). Each holds a snapshot, log
//! entries after it (deletes, a block and an unblock, an online import) and the vote and log
//! state. Every later build must read them and serve the same.
//!
//! Written by the release of their time with one workload (`raft-v0`: before the files had a
//! format number; `raft-v1`: the first numbered format), and frozen once committed.

use std::path::Path;
use std::time::Duration;

use identity_engine::storage::raft_files::{
    decode_entry, decode_log_state, decode_snapshot_meta, decode_vote, segment_format, Payload,
};
use serde_json::{json, Value};

use crate::cluster_support::Cluster;

const RAFT_GOLDEN: [(&str, u32); 2] = [("raft-v0", 0), ("raft-v1", 1)];

fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn every_raft_golden_directory_is_read_record_by_record_in_its_format() {
    for (name, format) in RAFT_GOLDEN {
        let raft = golden(name).join("data/raft");
        let read = |file: &str| std::fs::read(raft.join(file)).unwrap();
        let vote = decode_vote(&read("vote.json")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (vote.term, vote.node, vote.committed),
            (1, 1, true),
            "{name}"
        );
        let state = decode_log_state(&read("log-state.json")).unwrap();
        assert_eq!(state.purged.map(|l| l.index), Some(9), "{name}");
        let meta = decode_snapshot_meta(&read("snapshot.json")).unwrap();
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(11), "{name}");
        assert!(raft.join("snapshots").join(&meta.file).exists(), "{name}");
        let segment = read("log/00000000000000000000.seg");
        let (found, mut at) = segment_format(&segment).unwrap();
        assert_eq!(found, format, "{name}: segment format");
        let mut indexes = Vec::new();
        let mut imports = 0;
        while at < segment.len() {
            let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap());
            let body = &segment[at + 8..at + 8 + len];
            assert_eq!(crc32fast::hash(body), crc, "{name}: record at {at}");
            let entry = decode_entry(format, body).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Payload::Commands(commands) = &entry.payload {
                imports += (commands.iter())
                    .filter(|c| matches!(c.op, identity_engine::engine::Op::Import(_)))
                    .count();
            }
            indexes.push(entry.log_id.index);
            at += 8 + len;
        }
        assert_eq!(
            indexes,
            (0..=19).collect::<Vec<u64>>(),
            "{name}: every entry"
        );
        assert_eq!(imports, 1, "{name}: the online import's entry");
    }
}

#[test]
fn every_raft_golden_directory_serves_what_it_was_written_with() {
    for (name, _) in RAFT_GOLDEN {
        let data = golden(name).join("data");
        let group = Cluster::start_seeded(|dir| copy_tree(&data, dir));
        group.wait_for_leader(&[1], Duration::from_secs(20));
        let node = group.node(1);
        let get = |path: &str| -> Value {
            let response = node
                .get(path)
                .unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert_eq!(response.status, 200, "{name}: {path}: {}", response.text);
            response.json()
        };
        let rows = get("/contacts?after=0&limit=1000")["contacts"].clone();
        let mut identities = serde_json::Map::new();
        for row in rows.as_array().unwrap() {
            if row["deletedAt"].is_null() {
                let id = row["id"].as_u64().unwrap();
                let answer = get(&format!("/contacts/{id}/identity"));
                identities.insert(id.to_string(), answer["contact"].clone());
            }
        }
        let served = json!({
            "rows": crate::golden::without_null_erased_at(rows),
            "identities": identities,
            "blocklist": get("/blocklist")["values"],
        });
        let expected: Value =
            serde_json::from_slice(&std::fs::read(golden(name).join("expected.json")).unwrap())
                .unwrap();
        assert_eq!(served, expected, "{name}: what the member serves");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The change feed's files of format 1 (`src/storage/feed_files.rs`): ten events of every kind
/// a server made then (created, merged, deleted, split, blocked, unblocked, edited, imported;
/// causes and a token's name), read back as the events it served.
#[test]
fn the_change_feed_golden_directory_reads_as_the_events_it_served() {
    use identity_engine::engine::EventKind;
    use identity_engine::storage::feed_files::FeedFiles;
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&golden("changes-v1").join("data"), copy.path());
    let files = FeedFiles::open(copy.path(), 1 << 20).unwrap();
    let events = files.reader().read(0, 1000).unwrap();
    let read: Vec<Value> = (events.iter())
        .map(|e| {
            let mut event = json!({
                "seq": e.seq, "at": e.at, "type": e.kind.as_str(), "cause": e.cause.as_str(),
                "by": e.by,
            });
            if let EventKind::Merged { into, primaries } = &e.kind {
                event["into"] = json!(into);
                event["primaries"] = json!(primaries);
            }
            event["contacts"] = (e.contacts.iter())
                .map(|m| json!({ "id": m.id, "primary": m.primary }))
                .collect();
            event
        })
        .collect();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(golden("changes-v1").join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(Value::Array(read), expected);
}
