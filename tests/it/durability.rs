//! Durability, in process: a restart of any kind (graceful, dropped, or a crash image of the live
//! files) restores exactly the acknowledged state, checked against the reference model of
//! docs/API.md; a log cut at any byte or followed by garbage starts up with every whole group before
//! the damage; a flipped byte before valid records stops start-up with a clear error until
//! `check --repair` cuts there; a failing disk is answered 503 and fails closed without losing or
//! half-keeping anything; tiny segments are snapshotted in the background and a graceful shutdown
//! leaves nothing to replay. (`kill -9` of the real binary is in `crash.rs`.)

use crate::common;
use crate::model;
use crate::storage_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{spawn_app_in, TestApp};
use identity_engine::engine::{Contact, ContactId, Email, Identity, Phone, Query, Refusal};
use identity_engine::storage::frame::FILE_HEADER;
use identity_engine::storage::wal::segment_name;
use identity_engine::storage::{Faults, FsyncPolicy, Storage, StorageOptions};
use identity_engine::store::{Store, StoreError};
use identity_engine::tools::check;
use model::{DeleteError, Model};
use proptest::prelude::*;
use serde_json::Value;
use storage_support::{
    a_longer_log, copy_live_dir, crash_image_of_a_log_with_merges, crash_image_with_its_zeros,
    delete, group_ends, identify, noise, offsets_in, open_segment, records, records_end, replayed,
    runtime, segments, shown, snapshots, Located, Shown,
};

/// Small pools, so that requests keep merging and deletions keep splitting clusters.
const EMAILS: [&str; 3] = [
    "doc@hillvalley.edu",
    "marty@hillvalley.edu",
    "biff@hillvalley.edu",
];
const PHONES: [&str; 3] = ["123456", "919191", "717171"];

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// `close` (sync, snapshot) and open again.
    Graceful,
    /// The store is dropped without `close`: no snapshot, the log is replayed.
    Dropped,
    /// The files are copied while the store is live, and the copy is opened: a `kill -9`.
    CrashImage,
}

#[derive(Clone, Debug)]
enum Step {
    Identify {
        email: Option<usize>,
        phone: Option<usize>,
    },
    /// Deletes contact `pick % (highest id + 1) + 1`: now and then one deleted or unknown.
    Delete {
        pick: u32,
    },
    Restart(Restart),
}

/// What a step answered, in terms both the store and the model speak.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Answer(Identity),
    Groups(Vec<ContactId>),
    Refused(DeleteError),
}

fn restart() -> impl Strategy<Value = Restart> {
    prop_oneof![
        Just(Restart::Graceful),
        Just(Restart::Dropped),
        Just(Restart::CrashImage)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let (email, phone) = (0..EMAILS.len(), 0..PHONES.len());
    prop_oneof![
        4 => (email.clone(), phone.clone())
            .prop_map(|(e, p)| Step::Identify { email: Some(e), phone: Some(p) }),
        1 => email.prop_map(|e| Step::Identify { email: Some(e), phone: None }),
        1 => phone.prop_map(|p| Step::Identify { email: None, phone: Some(p) }),
        2 => any::<u32>().prop_map(|pick| Step::Delete { pick }),
        2 => restart().prop_map(Step::Restart),
    ]
}

/// A store on a temporary directory, restarted the ways a server stops, with a runtime to
/// drive its async methods.
struct Harness {
    runtime: tokio::runtime::Runtime,
    tmp: tempfile::TempDir,
    snapshot_every_bytes: u64,
    fsync: FsyncPolicy,
    store: Option<Store>,
}

impl Harness {
    fn new(snapshot_every_bytes: u64, fsync: FsyncPolicy) -> Harness {
        let mut harness = Harness {
            runtime: runtime(),
            tmp: tempfile::tempdir().expect("temp dir"),
            snapshot_every_bytes,
            fsync,
            store: None,
        };
        harness.open();
        harness
    }

    /// Opens the store on the current directory; returns how many records it replayed.
    fn open(&mut self) -> u64 {
        let mut options = StorageOptions::new(self.tmp.path());
        options.snapshot_every_bytes = self.snapshot_every_bytes;
        options.fsync = self.fsync;
        let (store, report) = Store::open(options)
            .unwrap_or_else(|e| panic!("start-up on {} failed: {e}", self.tmp.path().display()));
        self.store = Some(store);
        report.records_replayed
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    fn restart(&mut self, how: Restart) {
        let store = self.store.take().expect("the store is open");
        match how {
            Restart::Graceful => {
                store.close().expect("a clean close");
                drop(store);
            }
            Restart::Dropped => drop(store),
            Restart::CrashImage => {
                let image = tempfile::tempdir().expect("temp dir");
                copy_live_dir(self.tmp.path(), image.path());
                drop(store);
                self.tmp = image;
            }
        }
        let replayed = self.open();
        if let Restart::Graceful = how {
            assert_eq!(replayed, 0, "a graceful shutdown leaves no log to replay");
        }
    }

    fn run(&self, step: &Step, model: &Model) -> Outcome {
        let store = self.store();
        match *step {
            Step::Identify { email, phone } => {
                let query = query(email, phone);
                let answer = identify(store, &query);
                Outcome::Answer(self.runtime.block_on(answer).expect("identify"))
            }
            Step::Delete { pick } => {
                let max_id = model.rows().iter().map(|r| r.id).max().unwrap_or(0);
                let deleted = delete(store, pick % (max_id + 1) + 1);
                match self.runtime.block_on(deleted) {
                    Ok(groups) => Outcome::Groups(groups),
                    Err(StoreError::Refused(Refusal::UnknownContact(_))) => {
                        Outcome::Refused(DeleteError::Unknown)
                    }
                    Err(StoreError::Refused(Refusal::DeletedContact(_))) => {
                        Outcome::Refused(DeleteError::AlreadyDeleted)
                    }
                    Err(other) => panic!("delete failed: {other}"),
                }
            }
            Step::Restart(_) => unreachable!("restarts are not requests"),
        }
    }

    fn shown(&self) -> Shown {
        let read = self.store().read(|engine| {
            engine.check_invariants().expect("invariants hold");
            shown(engine)
        });
        self.runtime.block_on(read).expect("read")
    }
}

fn query(email: Option<usize>, phone: Option<usize>) -> Query {
    let email = email.map(|i| Email::parse(EMAILS[i]).unwrap().unwrap());
    let phone = phone.map(|i| Phone::parse(PHONES[i]).unwrap().unwrap());
    Query::new(email, phone).expect("every generated request names an identifier")
}

/// The same step on the model, at the time the store stamped (the latest stamp it shows, which
/// is the step's own if the step changed a row; the model never stamps earlier than that).
fn run_on_model(model: &mut Model, step: &Step, rows: &[Contact], pick_max: ContactId) -> Outcome {
    let now = rows
        .iter()
        .flat_map(|c| [Some(c.created_at), Some(c.updated_at), c.deleted_at])
        .flatten()
        .map(|t| t.0)
        .max()
        .unwrap_or(0);
    match *step {
        Step::Identify { email, phone } => {
            let answer = model.identify(email.map(|i| EMAILS[i]), phone.map(|i| PHONES[i]), now);
            Outcome::Answer(Identity {
                primary_contact_id: answer.primary_contact_id,
                emails: answer.emails,
                phone_numbers: answer.phone_numbers,
                secondary_contact_ids: answer.secondary_contact_ids,
            })
        }
        Step::Delete { pick } => match model.delete(pick % (pick_max + 1) + 1, now) {
            Ok(groups) => Outcome::Groups(groups),
            Err(refused) => Outcome::Refused(refused),
        },
        Step::Restart(_) => unreachable!("restarts are not requests"),
    }
}

fn model_rows(model: &Model) -> Vec<Contact> {
    model.rows().iter().map(model::to_contact).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_restart_of_any_kind_restores_exactly_what_was_answered(
        steps in prop::collection::vec(step(), 1..=60),
        last in restart(),
        snapshot_every_bytes in prop_oneof![Just(512u64), Just(64u64 << 20)],
        fsync in prop_oneof![Just(FsyncPolicy::Always), Just(FsyncPolicy::Interval), Just(FsyncPolicy::Never)],
    ) {
        // Every policy answers after the write, so a crash image (not a power loss) keeps it all.
        let mut harness = Harness::new(snapshot_every_bytes, fsync);
        let mut model = Model::new();
        for (i, step) in steps.iter().chain([&Step::Restart(last)]).enumerate() {
            if let Step::Restart(how) = *step {
                let before = harness.shown();
                harness.restart(how);
                let after = harness.shown();
                prop_assert_eq!(&after.0, &model_rows(&model), "rows after {:?} at step {}", how, i);
                prop_assert_eq!(after, before, "answers after {:?} at step {}", how, i);
                continue;
            }
            let pick_max = model.rows().iter().map(|r| r.id).max().unwrap_or(0);
            let from_store = harness.run(step, &model);
            let (rows, _) = harness.shown();
            let from_model = run_on_model(&mut model, step, &rows, pick_max);
            prop_assert_eq!(from_store, from_model, "step {}: {:?}", i, step);
            prop_assert_eq!(rows, model_rows(&model), "rows after step {}: {:?}", i, step);
        }
    }
}

/// The `contact` of an answer, which must be a 200.
fn contact_of(app: &TestApp, body: &str) -> Value {
    let response = app.identify(body);
    assert_eq!(response.status, 200, "{body}: {}", response.text);
    response.json()["contact"].clone()
}

fn assert_unavailable(app: &TestApp, body: &str) {
    let response = app.identify(body);
    assert_eq!(response.status, 503, "{body}: {}", response.text);
    assert_eq!(response.error_code(), "storage_unavailable", "{body}");
}

/// Three contacts, two of them merged, then `fault` turned on before a merge of all three.
fn a_failing_disk_refuses_everything_and_keeps_only_what_was_acknowledged(
    fault: fn(&Faults) -> &AtomicBool,
) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let faults = Arc::new(Faults::default());
    let mut app = spawn_app_in(tmp.path(), |c| c.faults = Some(faults.clone())).expect("start");
    let doc = contact_of(&app, r#"{"email":"doc@hillvalley.edu","phoneNumber":"1"}"#);
    contact_of(
        &app,
        r#"{"email":"marty@hillvalley.edu","phoneNumber":"2"}"#,
    );
    contact_of(
        &app,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"3"}"#,
    );
    let marty = contact_of(
        &app,
        r#"{"email":"marty@hillvalley.edu","phoneNumber":"3"}"#,
    );
    let rows_acknowledged = 3;

    fault(&faults).store(true, Ordering::SeqCst);
    // A merge of the two clusters: a group of three records, none of which may survive.
    assert_unavailable(&app, r#"{"email":"doc@hillvalley.edu","phoneNumber":"2"}"#);
    assert_unavailable(&app, r#"{"email":"doc@hillvalley.edu"}"#);
    assert_unavailable(&app, r#"{"email":"biff@hillvalley.edu","phoneNumber":"4"}"#);
    let _ = app.stop(); // the log failed, so the shutdown snapshot may fail too

    let app = spawn_app_in(tmp.path(), |_| {}).expect("a restart without faults");
    assert_eq!(contact_of(&app, r#"{"phoneNumber":"1"}"#), doc);
    assert_eq!(contact_of(&app, r#"{"phoneNumber":"2"}"#), marty);
    assert_eq!(
        contact_of(&app, r#"{"email":"george@hillvalley.edu"}"#),
        marty
    );
    drop(app);
    let (_storage, engine, _) = Storage::open(StorageOptions::new(tmp.path())).expect("open");
    assert_eq!(engine.stats().contacts, rows_acknowledged, "no refused row");
    assert_eq!(engine.stats().joins, 1, "only the acknowledged join");
}

#[test]
fn a_failed_sync_is_answered_503_and_fails_closed_and_a_restart_keeps_only_what_was_acknowledged() {
    a_failing_disk_refuses_everything_and_keeps_only_what_was_acknowledged(|f| &f.fail_syncs);
}

#[test]
fn a_failed_write_is_answered_503_and_fails_closed_and_a_restart_keeps_only_what_was_acknowledged()
{
    a_failing_disk_refuses_everything_and_keeps_only_what_was_acknowledged(|f| &f.fail_writes);
}

/// Polls `done` until it holds, or fails with `what` after a generous deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The answer for every email of `emails`, each of which is known (so nothing is created).
fn answers(app: &TestApp, emails: &[String]) -> Vec<Value> {
    emails
        .iter()
        .map(|e| contact_of(app, &format!(r#"{{"email":"{e}"}}"#)))
        .collect()
}

fn open_and_show(dir: &Path) -> (Shown, u64) {
    let (_storage, engine, report) = Storage::open(StorageOptions::new(dir))
        .unwrap_or_else(|e| panic!("start-up on {} failed: {e}", dir.display()));
    (shown(&engine), report.records_replayed)
}

#[test]
fn tiny_segments_are_snapshotted_in_the_background_and_every_restart_gives_the_same_state() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tiny = |c: &mut identity_engine::config::Config| c.snapshot_every_bytes = 4096;
    let mut app = spawn_app_in(tmp.path(), tiny).expect("start");
    let emails: Vec<String> = (0..120).map(|i| format!("user{i}@example.com")).collect();
    for i in 0..400 {
        let body = format!(
            r#"{{"email":"{}","phoneNumber":"{}"}}"#,
            emails[i % emails.len()],
            1000 + i % 89
        );
        contact_of(&app, &body);
    }
    let first_segment = tmp.path().join(segment_name(1));
    wait_until("a background snapshot removed the first segment", || {
        !snapshots(tmp.path()).is_empty() && !first_segment.exists()
    });
    let image = tempfile::tempdir().expect("temp dir");
    copy_live_dir(tmp.path(), image.path());
    let before = answers(&app, &emails);

    app.stop().expect("a clean stop");
    assert_eq!(
        snapshots(tmp.path()).len(),
        1,
        "one snapshot after shutdown"
    );
    assert_eq!(segments(tmp.path()), Vec::<PathBuf>::new());
    let report = check::check(tmp.path()).expect("check passes");
    assert!(report.ends_with("ok\n"), "{report}");
    check::check(image.path()).expect("check passes on the crash image");

    let mut app = spawn_app_in(tmp.path(), tiny).expect("restart");
    assert_eq!(answers(&app, &emails), before);
    app.stop().expect("a clean stop");
    let (after_shutdown, replayed) = open_and_show(tmp.path());
    assert_eq!(replayed, 0, "a graceful shutdown leaves no log to replay");
    let (after_crash, _) = open_and_show(image.path());
    assert_eq!(after_crash, after_shutdown);
}

#[test]
fn a_store_dropped_without_close_finishes_its_background_snapshot_before_letting_go_of_the_dir() {
    let mut harness = Harness::new(8 << 10, FsyncPolicy::Always);
    let dir = harness.tmp.path().to_owned();
    let mut i = 0;
    while segments(&dir).len() < 2 {
        let email = Email::parse(&format!("user{i}@example.com")).unwrap();
        let query = Query::new(email, None).unwrap();
        let answer = identify(harness.store(), &query);
        harness.runtime.block_on(answer).expect("identify");
        i += 1;
    }
    drop(harness.store.take());
    assert_eq!(
        snapshots(&dir).len(),
        1,
        "the snapshot of the sealed segment is in place"
    );
    assert_eq!(segments(&dir).len(), 1, "and the segment it covers is gone");
    harness.open();
    assert_eq!(harness.store().stats().contacts, i, "every contact is back");
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_records_keeps_every_whole_group_before_the_cut() {
    let (_image, segment, live) = crash_image_of_a_log_with_merges();
    let bytes = std::fs::read(&segment).expect("read the segment");
    let records = records(&bytes);
    let ends = group_ends(&records);
    assert_eq!(
        shown(&replayed(&records)),
        live,
        "the image holds every answer"
    );
    let last_few = &records[records.len() - 9..];
    assert!(
        last_few.iter().any(|l| !l.record.commit),
        "the last records include a group of several"
    );

    // Inside the file header too: a segment whose creation did not finish.
    for cut in (0..FILE_HEADER).chain(last_few[0].start..=bytes.len()) {
        let kept = ends.iter().copied().filter(|&end| end <= cut).max();
        let complete: Vec<Located> = records
            .iter()
            .filter(|l| kept.is_some_and(|kept| l.end <= kept))
            .cloned()
            .collect();
        let expected = shown(&replayed(&complete));
        let (dir, engine, last_seq, was_cut) = open_segment(&segment, &bytes[..cut]);
        assert_eq!(shown(&engine), expected, "cut at {cut}");
        assert_eq!(
            last_seq,
            complete.last().map_or(0, |l| l.record.seq),
            "cut at {cut}"
        );
        assert_eq!(
            was_cut,
            kept != Some(cut),
            "cut at {cut}: a tail to cut iff inside a group"
        );

        let (_storage, again, report) = Storage::open(StorageOptions::new(dir.path()))
            .unwrap_or_else(|e| panic!("cut at {cut}: the second start-up failed: {e}"));
        assert_eq!(shown(&again), expected, "cut at {cut}: the second start-up");
        assert_eq!(
            report.tail_cut, None,
            "cut at {cut}: the first start-up cut for good"
        );
    }
}

#[test]
fn garbage_after_the_last_record_is_cut_off_and_every_record_is_kept() {
    let (_image, segment, live) = crash_image_of_a_log_with_merges();
    let bytes = std::fs::read(&segment).expect("read the segment");
    let mut tails: Vec<Vec<u8>> = [1, 3, 8, 17, 100, 5000]
        .map(|n| noise(n, n as u64))
        .to_vec();
    // A frame header announcing more bytes than follow, then a plausible one that lies.
    tails.push(vec![0xFF, 0xFF, 0x0F, 0, 1, 2, 3, 4, 5]);
    tails.push(vec![3, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3]);
    // Zeros then garbage: not the writer's zeros.
    tails.push([vec![0; 64], noise(9, 9)].concat());

    for tail in tails {
        let damaged = [bytes.as_slice(), &tail].concat();
        let (dir, engine, _, was_cut) = open_segment(&segment, &damaged);
        assert_eq!(shown(&engine), live, "tail {tail:?}");
        assert!(was_cut, "the tail {tail:?} is reported as cut");
        let kept = std::fs::read(dir.path().join(segment.file_name().unwrap())).unwrap();
        assert_eq!(
            kept, bytes,
            "the tail {tail:?} is cut off at the last record"
        );
    }
}

#[test]
fn zeros_after_the_last_whole_group_are_the_end_of_the_log_and_trimmed_quietly() {
    // As the writer leaves a segment: zeros filled ahead of the records.
    let (image, segment, live) = crash_image_with_its_zeros();
    let with_zeros = std::fs::read(&segment).expect("read the segment");
    let end = records_end(&with_zeros);
    assert!(
        with_zeros.len() > end && with_zeros[end..].iter().all(|&b| b == 0),
        "the open segment is zero-filled ahead of its records"
    );
    check::check(image.path()).expect("check finds nothing wrong");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        with_zeros,
        "check changes nothing"
    );
    let (_storage, engine, report) =
        Storage::open(StorageOptions::new(image.path())).expect("open");
    assert_eq!(shown(&engine), live);
    assert_eq!(report.tail_cut, None, "zeros are not a torn tail");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        &with_zeros[..end],
        "and are trimmed"
    );

    // Any number of zeros, frame-aligned or not.
    let bytes = &with_zeros[..end];
    for n in [1, 4, 8, 9, 64, 4096] {
        let (dir, engine, _, was_cut) = open_segment(&segment, &[bytes, &vec![0; n]].concat());
        assert_eq!(shown(&engine), live, "{n} zeros");
        assert!(!was_cut, "{n} zeros are not reported as a torn tail");
        let kept = std::fs::read(dir.path().join(segment.file_name().unwrap())).unwrap();
        assert_eq!(kept, bytes, "{n} zeros are trimmed");
    }
}

#[test]
fn zeros_inside_a_group_are_a_torn_tail_cut_back_to_the_last_whole_group() {
    let (_image, segment, _) = crash_image_of_a_log_with_merges();
    let bytes = std::fs::read(&segment).expect("read the segment");
    let records = records(&bytes);
    // The two-record group (a generic block and the row after it): its first record written,
    // the rest of the batch still the writer's zeros (or a record half written, then zeros).
    let group = records
        .windows(2)
        .find(|w| !w[0].record.commit && w[1].record.commit)
        .expect("a group of two records");
    let group_start = group[0].start;
    // (Half of the last record, not all but its last byte: a new row's record ends in the zero
    // of "not deleted", which the zeros after it would restore.)
    let half_of_last = (group[1].start + group[1].end) / 2;
    for written in [group[0].end, group[0].end + 5, half_of_last] {
        let torn = [&bytes[..written], &vec![0; bytes.len() - written + 100]].concat();
        let (dir, engine, last_seq, was_cut) = open_segment(&segment, &torn);
        assert!(was_cut, "written to {written}: reported as a torn tail");
        assert_eq!(last_seq, group[0].record.seq - 1, "written to {written}");
        assert_eq!(
            engine.stats().contacts,
            6,
            "written to {written}: the group is dropped whole (six contacts came before it)"
        );
        let kept = std::fs::read(dir.path().join(segment.file_name().unwrap())).unwrap();
        assert_eq!(kept, &bytes[..group_start], "written to {written}");
    }
}

#[test]
fn a_flipped_byte_in_an_early_record_stops_start_up_until_repair_cuts_the_log_there() {
    let (pristine, segment) = a_longer_log();
    let bytes = std::fs::read(&segment).expect("read the segment");
    let records = records(&bytes);
    // The first record, and the fourth (the one after the merge).
    for damaged in [&records[0], &records[3]] {
        let (start, end) = (damaged.start, damaged.end);
        for at in [start, start + 1, start + 3, start + 5, start + 8, end - 1] {
            let case = format!("byte {at} of the record at {start}");
            let dir = tempfile::tempdir().expect("temp dir");
            copy_live_dir(pristine.path(), dir.path());
            let path = dir.path().join(segment.file_name().unwrap());
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            std::fs::write(&path, &flipped).unwrap();

            let assert_names_the_damage = |message: &str| {
                assert!(
                    message.contains(&path.display().to_string()),
                    "{case}: {message}"
                );
                assert!(offsets_in(message).contains(&start), "{case}: {message}");
                assert!(message.contains("corrupt"), "{case}: {message}");
            };
            let refused = Storage::open(StorageOptions::new(dir.path())).err();
            let refused = refused.expect("start-up refuses").to_string();
            assert_names_the_damage(&refused);
            assert!(
                refused.contains("--repair"),
                "{case}: names the next step: {refused}"
            );
            let refused = common::spawn_app_in(dir.path(), |_| {}).err();
            assert_names_the_damage(&refused.expect("the server refuses").to_string());
            assert_names_the_damage(&check::check(dir.path()).unwrap_err().to_string());
            assert_eq!(
                std::fs::read(&path).unwrap(),
                flipped,
                "{case}: refusing changes nothing"
            );

            let mut heard = String::new();
            let report = check::repair(dir.path(), &mut |loss| {
                heard.push_str(loss);
                true
            })
            .expect("repair");
            assert!(report.starts_with("repaired"), "{case}: {report}");
            assert_names_the_damage(&heard);
            assert!(
                heard.contains("readable record(s) after it"),
                "{case}: {heard}"
            );
            assert!(heard.contains("new contacts"), "{case}: {heard}");
            let before: Vec<Located> = records.iter().filter(|l| l.end <= start).cloned().collect();
            let expected = shown(&replayed(&before));
            let (_storage, engine, _) = Storage::open(StorageOptions::new(dir.path()))
                .unwrap_or_else(|e| panic!("{case}: start-up after repair: {e}"));
            assert_eq!(shown(&engine), expected, "{case}");
        }
    }
}

#[test]
fn a_damaged_snapshot_stops_start_up_naming_the_file_and_changes_nothing() {
    let (dir, _) = a_longer_log();
    let (storage, engine, _) = Storage::open(StorageOptions::new(dir.path())).expect("open");
    storage.close(&engine).expect("close writes a snapshot");
    drop(storage);
    let expected = shown(&engine);
    let snapshot = snapshots(dir.path()).pop().expect("a snapshot");
    let bytes = std::fs::read(&snapshot).expect("read the snapshot");
    let (reopened, engine, _) = Storage::open(StorageOptions::new(dir.path())).expect("reopen");
    assert_eq!(
        shown(&engine),
        expected,
        "the snapshot alone restores the state"
    );
    drop(reopened);

    let middle = bytes.len() / 2;
    let cases = [
        ("a flipped byte in the header", {
            let mut b = bytes.clone();
            b[3] ^= 0x01;
            b
        }),
        ("a flipped byte in the middle", {
            let mut b = bytes.clone();
            b[middle] ^= 0x40;
            b
        }),
        ("a flipped byte in the trailer", {
            let mut b = bytes.clone();
            *b.last_mut().unwrap() ^= 0x01;
            b
        }),
        ("cut short", bytes[..middle].to_vec()),
        ("bytes appended", [&bytes[..], b"more"].concat()),
    ];
    for (case, damaged) in cases {
        std::fs::write(&snapshot, &damaged).unwrap();
        let assert_names_the_damage = |message: &str| {
            assert!(
                message.contains(&snapshot.display().to_string()),
                "{case}: {message}"
            );
            assert!(message.contains("corrupt"), "{case}: {message}");
        };
        let refused = Storage::open(StorageOptions::new(dir.path())).err();
        assert_names_the_damage(&refused.expect("start-up refuses").to_string());
        assert_names_the_damage(&check::check(dir.path()).unwrap_err().to_string());
        assert_eq!(std::fs::read(&snapshot).unwrap(), damaged, "{case}");
    }
    std::fs::write(&snapshot, &bytes).unwrap();
    let (_storage, engine, _) = Storage::open(StorageOptions::new(dir.path())).expect("reopen");
    assert_eq!(shown(&engine), expected);
}
