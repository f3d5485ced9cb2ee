//! Golden data directories: small directories written in each on-disk format a build of
//! identity-engine has written, committed under `tests/golden/<name>/data` with the state they
//! hold in `tests/golden/<name>/expected.json` (every row, and the identity of every live
//! contact). Every later build must open them and answer identically, so a change of format
//! without a new version number fails here. A crafted copy of the format 2 snapshot shows that
//! format goes through the same complete check as the current one.
//!
//! The directories are frozen once committed. `write_missing_golden_directories` (ignored)
//! writes those that are missing, in the formats this build still writes:
//!
//! ```sh
//! cargo test --test it golden::write_missing_golden_directories -- --ignored
//! ```
//!
//! To add a directory for a new format, add it to `WRITERS` and `GOLDEN`, run that, and commit
//! what it wrote. The content is fixed (fixed timestamps, one fixed workload); the bytes of an
//! image are not (its hash seed is drawn at random), which is why a directory is never rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use identity_engine::engine::{
    BlockReason, Cause, Change, Email, Engine, ImportRow, Kind, Limits, NewContact, Op, Patch,
    Precedence, Rows, Target, Timestamp,
};
use identity_engine::storage::frame::{self, read_file_header, FILE_HEADER, FORMAT_VERSION};
use identity_engine::storage::snapshot::{self, snapshot_name, SNAPSHOT_MAGIC};
use identity_engine::storage::wal::{encode_group, segment_name, WAL_MAGIC};
use identity_engine::storage::{Storage, StorageOptions};
use serde_json::{json, Value};

use crate::storage_support::{query_of, segments, snapshots};

/// Each golden directory and the snapshot format its snapshot file is in (None: log only).
const GOLDEN: [(&str, Option<u32>); 8] = [
    ("log-v1", None),
    ("log-v2", None),
    ("log-v3", None),
    ("log-v4", None),
    ("snapshot-v1", Some(1)),
    ("snapshot-v2", Some(2)),
    ("snapshot-v3", Some(3)),
    ("snapshot-v4", Some(4)),
];

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn every_golden_directory_opens_with_the_rows_and_identities_it_was_written_with() {
    for (name, format) in GOLDEN {
        let golden = golden_root().join(name);
        let copy = tempfile::tempdir().unwrap();
        for file in std::fs::read_dir(golden.join("data")).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), copy.path().join(file.file_name())).unwrap();
        }
        assert_eq!(
            snapshot_format(copy.path()),
            format,
            "{name}: snapshot format"
        );
        let (storage, engine, report) = Storage::open(StorageOptions::new(copy.path()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        drop(storage);
        let expected: Value =
            serde_json::from_slice(&std::fs::read(golden.join("expected.json")).unwrap()).unwrap();
        let mut state = state_of(&engine, report.last_seq);
        if expected.get("events").is_none() {
            // Written before the change feed: the count replay makes was not recorded.
            state.as_object_mut().unwrap().remove("events");
        }
        assert_eq!(
            state, expected,
            "{name}: the state read differs from expected.json"
        );
        engine
            .check_invariants()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A format 2 image's last fields are `max_id u32`, `clock i64` and the four counters (u64
/// each), just before the 12-byte trailer: a crafted copy of the golden one, its checksum made
/// good again, goes through the same check as format 3 and is refused.
#[test]
fn a_crafted_format_2_image_is_refused_by_the_same_check() {
    let golden = golden_root().join("snapshot-v2/data");
    let name = snapshot_name(28);
    let bytes = std::fs::read(golden.join(&name)).unwrap();
    let image_end = bytes.len() - 12;
    type Craft = (&'static str, usize, fn(&mut [u8]));
    let crafts: [Craft; 2] = [
        ("counters", image_end - 16, |clusters| clusters[0] += 1),
        ("max_id", image_end - 44, |max_id| max_id[0] -= 1),
    ];
    for (says, at, craft) in crafts {
        let dir = tempfile::tempdir().unwrap();
        let mut crafted = bytes.clone();
        craft(&mut crafted[at..]);
        let crc = crc32fast::hash(&crafted[..image_end]);
        crafted[image_end + 8..].copy_from_slice(&crc.to_le_bytes());
        let path = dir.path().join(&name);
        std::fs::write(&path, &crafted).unwrap();
        let message = snapshot::load(&path).expect_err("refused").to_string();
        assert!(
            message.contains("corrupt") && message.contains(says),
            "{message}"
        );
    }
}

/// The version in the header of the one snapshot in `dir`, if there is one.
fn snapshot_format(dir: &Path) -> Option<u32> {
    let found = snapshots(dir);
    assert!(found.len() <= 1, "one snapshot at most: {found:?}");
    let bytes = std::fs::read(found.first()?).unwrap();
    let (version, _) = read_file_header(&bytes[..FILE_HEADER], SNAPSHOT_MAGIC, &[1, 2, 3, 4])
        .expect("a snapshot header");
    Some(version)
}

/// What a golden directory must answer: every row (deleted ones too) in id order, the identity
/// of every live contact, and the sequence number of the last record.
fn state_of(engine: &Engine, last_seq: u64) -> Value {
    let mut contacts: Vec<_> = engine.contacts().collect();
    contacts.sort_by_key(|c| c.id);
    let identities: Vec<Value> = contacts
        .iter()
        .filter_map(|c| {
            let identity = engine.identity(c.id)?;
            Some(json!({
                "contactId": c.id,
                "primaryContactId": identity.primary_contact_id,
                "emails": identity.emails,
                "phoneNumbers": identity.phone_numbers,
                "secondaryContactIds": identity.secondary_contact_ids,
            }))
        })
        .collect();
    let mut state = json!({
        "lastSeq": last_seq,
        "contacts": without_null_erased_at(json!(contacts)),
        "identities": identities,
    });
    // Only in the directories written since there were erasures and a change feed.
    let erasures: Vec<Value> = (engine.erasures().iter())
        .map(|e| {
            json!({ "id": e.id, "contacts": e.contacts, "requestedAt": e.requested_at,
                "purgeBy": e.purge_by, "purgedAt": e.purged_at })
        })
        .collect();
    if !erasures.is_empty() {
        state["erasures"] = json!(erasures);
    }
    if engine.events() > 0 {
        state["events"] = json!(engine.events());
    }
    state
}

/// Rows as the directories written before erasure recorded them: a row that is not erased
/// answers `"erasedAt": null`, a field those builds did not have.
pub fn without_null_erased_at(mut rows: Value) -> Value {
    for row in rows.as_array_mut().into_iter().flatten() {
        if let Some(fields) = row.as_object_mut() {
            if fields.get("erasedAt").is_some_and(Value::is_null) {
                fields.remove("erasedAt");
            }
        }
    }
    rows
}

/// One request's facts, logged as one group.
type Group = Vec<Change>;

/// Milliseconds from a fixed start: every timestamp in the golden files is one of these.
fn at(step: i64) -> Timestamp {
    Timestamp(1_767_225_600_000 + step * 60_000)
}

/// The golden workload, in two parts (the first is what a snapshot holds, the second the log
/// tail after it): an import that brings a secondary linked by `linkedId` alone (`Linked`), a
/// deleted row and ids out of order (displaced slots); then requests that create, add
/// secondaries, join within a cluster, merge two clusters and delete a contact whose cluster
/// regroups; then, in the tail, the over-merge guards: a value blocked as generic (threshold 3),
/// an admin's block that splits a cluster, and an unblock that merges it again. (The directories
/// written before the guards, `log-v1`, `snapshot-v1` and `snapshot-v2`, hold the workload as
/// that build planned it: `Joined` and a `Relinked` per row for a merge.)
fn workload() -> (Vec<Group>, Vec<Group>) {
    let mut engine = Engine::with_limits(Limits {
        generic_threshold: 3,
        max_cluster_size: 0,
    });
    let row = |id, email: Option<&str>, phone: Option<&str>, linked, step, deleted: Option<i64>| {
        Change::Created(NewContact {
            id,
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
            linked_id: linked,
            created_at: at(step),
            updated_at: at(step),
            deleted_at: deleted.map(at),
        })
    };
    let import = vec![
        row(
            1,
            Some("doc@hillvalley.edu"),
            Some("555-0101"),
            None,
            0,
            None,
        ),
        row(2, Some("emmett@hillvalley.edu"), None, Some(1), 1, None),
        row(
            3,
            Some("gone@hillvalley.edu"),
            Some("555-0199"),
            None,
            2,
            Some(3),
        ),
        row(6, None, Some("555-0606"), None, 4, None),
        row(
            4,
            Some("biff@hillvalley.edu"),
            Some("555-0404"),
            None,
            5,
            None,
        ),
        Change::Linked { a: 1, b: 2 },
    ];
    let mut first = vec![import];
    let mut second = Vec::new();
    for change in &first[0] {
        engine.apply(change).unwrap();
    }
    let identify = |engine: &mut Engine, email: Option<&str>, phone: Option<&str>, step| {
        let plan = engine
            .plan_identify(&query_of(email, phone), at(step))
            .expect("the guards let the workload through");
        for change in &plan.changes {
            engine.apply(change).unwrap();
        }
        plan.changes
    };
    let delete = |engine: &mut Engine, id, step| {
        let plan = engine.plan_delete(id, at(step)).unwrap();
        for change in &plan.changes {
            engine.apply(change).unwrap();
        }
        plan.changes
    };
    let requests: [(Option<&str>, Option<&str>); 14] = [
        (Some("lorraine@hillvalley.edu"), Some("123456")),
        (Some("mcfly@hillvalley.edu"), Some("123456")),
        (Some("george@hillvalley.edu"), Some("919191")),
        (Some("biffsucks@hillvalley.edu"), Some("717171")),
        // Two merges: george absorbs biffsucks, then lorraine absorbs both.
        (Some("george@hillvalley.edu"), Some("717171")),
        (Some("lorraine@hillvalley.edu"), Some("919191")),
        (Some("doc@hillvalley.edu"), Some("555-0606")),
        // A read: nothing logged.
        (None, Some("555-0101")),
        (Some("marty@hillvalley.edu"), None),
        (Some("marty@hillvalley.edu"), Some("555-0404")),
        (Some("jennifer@hillvalley.edu"), Some("555-0808")),
        (Some("jennifer@hillvalley.edu"), Some("555-0909")),
        (Some("einstein@hillvalley.edu"), Some("555-0909")),
        // A join within one cluster: no row holds both.
        (Some("emmett@hillvalley.edu"), Some("555-0101")),
    ];
    for (step, (email, phone)) in requests.into_iter().enumerate() {
        first.push(identify(&mut engine, email, phone, 10 + step as i64));
    }
    // Lorraine held the email that joined george's cluster: it splits from mcfly's row.
    first.push(delete(&mut engine, 7, 30));
    first.retain(|group| !group.is_empty());
    let tail: [(Option<&str>, Option<&str>); 8] = [
        (Some("clara@hillvalley.edu"), Some("555-1885")),
        (Some("clara@hillvalley.edu"), Some("555-1955")),
        (Some("needles@hillvalley.edu"), Some("555-1955")),
        (Some("needles@hillvalley.edu"), Some("555-0808")),
        (Some("strickland@hillvalley.edu"), None),
        (Some("strickland@hillvalley.edu"), Some("555-1885")),
        (Some("lorraine@hillvalley.edu"), Some("555-0404")),
        (Some("tannen@hillvalley.edu"), Some("555-0404")),
    ];
    for (step, (email, phone)) in tail.into_iter().enumerate() {
        second.push(identify(&mut engine, email, phone, 40 + step as i64));
    }
    // Jennifer's phone joined the needles cluster: it splits off again. Emmett's row was
    // linked to doc's by `linkedId` alone.
    second.push(delete(&mut engine, 12, 60));
    second.push(delete(&mut engine, 2, 61));
    // "555-0404" has three holders (biff, lorraine, tannen's rows): a fourth is one too many.
    second.push(identify(
        &mut engine,
        Some("shopper@hillvalley.edu"),
        Some("555-0404"),
        70,
    ));
    let block = |engine: &mut Engine, kind, value: &str, step| {
        let changes = engine
            .plan_block(kind, value, BlockReason::Admin, at(step))
            .unwrap();
        for change in &changes {
            engine.apply(change).unwrap();
        }
        changes
    };
    second.push(block(&mut engine, Kind::Phone, "555-1955", 71));
    second.push(block(&mut engine, Kind::Email, "never@hillvalley.edu", 72));
    let unblock = engine
        .plan_unblock(Kind::Phone, "555-1955", at(73))
        .unwrap()
        .expect("blocked");
    engine.apply(&unblock).unwrap();
    second.push(vec![unblock]);
    // A re-key (`rekey` to digits-only phones): "555-0909" moves to "5550909". (The
    // directories before `log-v4` re-keyed "555-0808", which only a deleted row held: nothing.)
    let rekey = engine
        .plan_rekey(Kind::Phone, "555-0909", "5550909", at(74))
        .unwrap();
    for change in &rekey {
        engine.apply(change).unwrap();
    }
    second.push(rekey);
    // The ops of the one change path, planned as the store plans them: an import (`Settled`),
    // an edit by a named token (`Origin`, `Edited`), an erasure by value and its purge.
    let plan = |engine: &mut Engine, op: Op, step, by: Option<&str>| {
        let mut facts = engine
            .plan(&op, at(step))
            .expect("the workload's ops apply")
            .facts;
        if by.is_some() || op.cause() != Cause::inferred(&facts) {
            let origin = Change::Origin {
                cause: op.cause(),
                by: by.map(str::to_owned),
            };
            facts.insert(0, origin);
        }
        for change in &facts {
            engine.apply(change).unwrap();
        }
        facts
    };
    let imported = |id, email: &str, linked: Option<u32>, step| ImportRow {
        line: u64::from(id),
        contact: NewContact {
            id,
            email: Some(email.to_owned()),
            phone: None,
            linked_id: linked,
            created_at: at(step),
            updated_at: at(step),
            deleted_at: None,
        },
        precedence: match linked {
            None => Precedence::Primary,
            Some(_) => Precedence::Secondary,
        },
    };
    let rows = vec![
        imported(100, "jules@hillvalley.edu", None, 75),
        imported(101, "verne@hillvalley.edu", Some(100), 76),
    ];
    second.push(plan(
        &mut engine,
        Op::Import(Rows::new(rows, Vec::new())),
        77,
        None,
    ));
    let email = |text: &str| Patch::Set(Email::parse(text).unwrap().unwrap());
    let edit = Op::Edit {
        id: 4,
        email: email("biff.tannen@hillvalley.edu"),
        phone: Patch::Keep,
    };
    second.push(plan(&mut engine, edit, 78, Some("support")));
    let erase = Op::Erase {
        target: Target::Value {
            kind: Kind::Email,
            value: "clara@hillvalley.edu".into(),
        },
        purge_within_ms: 3_600_000,
    };
    second.push(plan(&mut engine, erase, 79, None));
    second.push(plan(&mut engine, Op::Purge { erasures: vec![1] }, 80, None));
    second.retain(|group| !group.is_empty());
    (first, second)
}

fn kind(change: &Change) -> &'static str {
    match change {
        Change::Created(_) => "Created",
        Change::Relinked { .. } => "Relinked",
        Change::Joined { .. } => "Joined",
        Change::Deleted { .. } => "Deleted",
        Change::Linked { .. } => "Linked",
        Change::Merged { .. } => "Merged",
        Change::JoinedAt { .. } => "JoinedAt",
        Change::Blocked { .. } => "Blocked",
        Change::Unblocked { .. } => "Unblocked",
        Change::Rekeyed { .. } => "Rekeyed",
        Change::Settled { .. } => "Settled",
        Change::Origin { .. } => "Origin",
        Change::Edited { .. } => "Edited",
        Change::Erased { .. } => "Erased",
        Change::Purged { .. } => "Purged",
    }
}

/// Writes one log segment holding `groups`, its first record numbered `first_seq`.
fn write_segment(dir: &Path, first_seq: u64, groups: &[Group]) {
    let mut bytes = Vec::new();
    frame::write_file_header(&mut bytes, WAL_MAGIC, FORMAT_VERSION, first_seq).unwrap();
    let mut seq = first_seq;
    for group in groups {
        seq = encode_group(&mut bytes, seq, group) + 1;
    }
    std::fs::write(dir.join(segment_name(first_seq)), bytes).unwrap();
}

/// A format 1 snapshot: one frame per fact, then a frame counting them with the CRC of their
/// payloads, as builds before format 2 wrote it.
fn write_facts_snapshot(dir: &Path, engine: &Engine, seq: u64) {
    #[derive(serde::Serialize)]
    enum Entry {
        Fact(Change),
        End { facts: u64, crc: u32 },
    }
    let mut out = Vec::new();
    frame::write_file_header(&mut out, SNAPSHOT_MAGIC, FORMAT_VERSION, seq).unwrap();
    let (mut crc, mut facts) = (crc32fast::Hasher::new(), 0u64);
    let mut facts_sorted: Vec<Change> = engine.facts().collect();
    // Rows first as they come, then joins and links in a fixed order (they come out of hash maps).
    let rows = facts_sorted
        .iter()
        .take_while(|f| matches!(f, Change::Created(_)))
        .count();
    facts_sorted[rows..].sort_by_key(|f| format!("{f:?}"));
    for fact in facts_sorted {
        let start = out.len();
        frame::push_encoded(&mut out, &Entry::Fact(fact));
        crc.update(&out[start + frame::FRAME_HEADER..]);
        facts += 1;
    }
    let crc = crc.finalize();
    frame::push_encoded(&mut out, &Entry::End { facts, crc });
    let mut file = std::fs::File::create(dir.join(snapshot_name(seq))).unwrap();
    file.write_all(&out).unwrap();
}

/// How this build writes each golden directory it still can write. (`snapshot-v2` was written
/// by the build before format 3, whose `snapshot::write` wrote format 2.)
type Writer = fn(&Path, &[Group], &[Group]);

const WRITERS: [(&str, Writer); 7] = [
    ("log-v1", |dir, first, second| {
        write_segment(dir, 1, &[first, second].concat());
    }),
    ("log-v2", |dir, first, second| {
        write_segment(dir, 1, &[first, second].concat());
    }),
    ("log-v3", |dir, first, second| {
        write_segment(dir, 1, &[first, second].concat());
    }),
    ("snapshot-v1", |dir, first, second| {
        let (engine, seq) = replay(first);
        write_facts_snapshot(dir, &engine, seq);
        write_segment(dir, seq + 1, second);
    }),
    ("snapshot-v3", |dir, first, second| {
        let (engine, seq) = replay(first);
        snapshot::write(dir, &engine, seq).unwrap();
        write_segment(dir, seq + 1, second);
    }),
    ("log-v4", |dir, first, second| {
        write_segment(dir, 1, &[first, second].concat());
    }),
    // The snapshot holds the erasure and the purge too (format 4's section), and a count of
    // events; the tail is the last two groups.
    ("snapshot-v4", |dir, first, second| {
        let all = [first, second].concat();
        let (head, tail) = all.split_at(all.len() - 2);
        let (mut engine, seq) = replay(head);
        for group in head {
            let applied: Vec<_> = group.iter().map(|fact| (fact, Vec::new())).collect();
            engine.events_of(&applied, Cause::inferred(group), None);
        }
        snapshot::write(dir, &engine, seq).unwrap();
        write_segment(dir, seq + 1, tail);
    }),
];

/// The engine `groups` build, and the number of records they hold.
fn replay(groups: &[Group]) -> (Engine, u64) {
    let mut engine = Engine::new();
    for change in groups.iter().flatten() {
        engine.apply(change).unwrap();
    }
    (engine, groups.iter().map(|g| g.len() as u64).sum())
}

#[test]
#[ignore = "writes the golden directories that are missing; run by hand, then commit them"]
fn write_missing_golden_directories() {
    let (first, second) = workload();
    let kinds = |groups: &[Group]| {
        let mut kinds: Vec<_> = groups.iter().flatten().map(kind).collect();
        kinds.dedup();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    // Every kind of fact this build writes (`Joined` and `Relinked` only earlier builds wrote:
    // `log-v1` and the snapshots before format 3 hold them).
    let every = [
        "Blocked",
        "Created",
        "Deleted",
        "Edited",
        "Erased",
        "JoinedAt",
        "Linked",
        "Merged",
        "Origin",
        "Purged",
        "Rekeyed",
        "Settled",
        "Unblocked",
    ];
    assert_eq!(
        kinds(&[first.clone(), second.clone()].concat()),
        every,
        "the workload holds every kind of fact"
    );
    for (name, write) in WRITERS {
        let golden = golden_root().join(name);
        if golden.exists() {
            println!("{name}: exists, left as it is");
            continue;
        }
        let data = golden.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write(&data, &first, &second);
        let copy = tempfile::tempdir().unwrap();
        for path in segments(&data).into_iter().chain(snapshots(&data)) {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
        let (storage, engine, report) = Storage::open(StorageOptions::new(copy.path())).unwrap();
        drop(storage);
        let state = state_of(&engine, report.last_seq);
        let text = serde_json::to_string_pretty(&state).unwrap() + "\n";
        std::fs::write(golden.join("expected.json"), text).unwrap();
        println!("{name}: written");
    }
}
