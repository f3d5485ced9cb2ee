//! Erasure (docs/API.md, "Erasure"): erased contacts lose their values in every answer, row and
//! export at once, and in every file of the data directory by the purge; the ledger; bad input;
//! erasing twice; the purge's schedule surviving restarts; the offline `erase` tool.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::common::{spawn_app_with, TestApp};

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Which of `needles` some file under `dir` holds, with the first file found holding it.
pub fn found_in_files(dir: &Path, needles: &[&str]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let files: Vec<(PathBuf, Vec<u8>)> = files_under(dir)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    for needle in needles {
        let holder = files
            .iter()
            .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
        if let Some((path, _)) = holder {
            found.push((needle.to_string(), path.clone()));
        }
    }
    found
}

fn identify(app: &TestApp, email: &str, phone: &str) -> Value {
    let reply = app.identify(&json!({ "email": email, "phoneNumber": phone }).to_string());
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn erase(app: &TestApp, body: Value) -> crate::common::Response {
    app.post("/erasures", &body.to_string())
}

/// Three people: Lorraine (two contacts, linked by her phone), Biff (one), George (one).
fn people(app: &TestApp) {
    identify(app, "lorraine@hillvalley.edu", "555-0100");
    identify(app, "lorraine.baines@hillvalley.edu", "555-0100");
    identify(app, "biff@hillvalley.edu", "555-0199");
    identify(app, "george@hillvalley.edu", "555-0142");
}

#[test]
fn erasing_by_email_forgets_every_holder_at_once_and_keeps_the_rows() {
    let app = spawn_app_with(|_| {});
    people(&app);
    // A join makes Biff's and George's contacts one cluster.
    identify(&app, "biff@hillvalley.edu", "555-0142");
    let reply = erase(&app, json!({ "email": " Biff@HillValley.edu " }));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json();
    let erasure = &answer["erasure"];
    assert_eq!(erasure["id"], 1);
    assert_eq!(erasure["contacts"], json!([3]));
    assert_eq!(erasure["status"], "pending");
    assert!(erasure["requestedAt"].is_string() && erasure["purgeBy"].is_string());
    assert!(erasure.get("purgedAt").is_none());
    // George's contact stands alone again: the join named an erased value.
    assert_eq!(answer["identities"][0]["primaryContactId"], 4);
    assert_eq!(
        answer["identities"][0]["emails"],
        json!(["george@hillvalley.edu"])
    );
    let row = app.get("/contacts/3").json();
    assert_eq!(row["email"], Value::Null);
    assert_eq!(row["phoneNumber"], Value::Null);
    assert!(row["erasedAt"].is_string());
    assert_eq!(row["deletedAt"], Value::Null);
    assert_eq!(row["createdAt"].as_str().unwrap().len(), 24);
    assert_eq!(app.get("/contacts/3/identity").status, 404);
    assert!(!app
        .get("/contacts/export?format=ndjson")
        .text
        .contains("biff"));
    // The value is unknown now: asking for it makes a new contact.
    let again = identify(&app, "biff@hillvalley.edu", "555-0777");
    assert_eq!(again["contact"]["primaryContactId"], 5);
    assert_eq!(app.get("/contacts/1").json()["erasedAt"], Value::Null);
}

#[test]
fn erasing_a_live_contact_splits_its_cluster_as_a_deletion_would() {
    let app = spawn_app_with(|_| {});
    identify(&app, "a@x.io", "1");
    identify(&app, "b@x.io", "1");
    identify(&app, "b@x.io", "2");
    identify(&app, "c@x.io", "2");
    let answer = erase(&app, json!({ "contactId": 2 })).json();
    let primaries: Vec<&Value> = (answer["identities"].as_array().unwrap().iter())
        .map(|i| &i["primaryContactId"])
        .collect();
    assert_eq!(primaries, [&json!(1), &json!(3)]);
    assert_eq!(app.get("/contacts/3").json()["linkPrecedence"], "primary");
    let counts = &app.get("/stats").json()["contacts"];
    assert_eq!(*counts, json!({ "live": 3, "deleted": 0, "erased": 1 }));
    let deleted = app.delete("/contacts/2");
    assert_eq!(
        deleted.status, 404,
        "an erased contact is gone: {}",
        deleted.text
    );
}

#[test]
fn erasing_what_is_erased_already_answers_the_same_erasure_and_changes_nothing() {
    let app = spawn_app_with(|_| {});
    people(&app);
    let first = erase(&app, json!({ "contactId": 3 })).json();
    let rows = app.get("/contacts/export?format=ndjson").text;
    let second = erase(&app, json!({ "contactId": 3 }));
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json()["erasure"], first["erasure"]);
    assert_eq!(second.json()["identities"], json!([]));
    assert_eq!(app.get("/contacts/export?format=ndjson").text, rows);
    assert_eq!(
        app.get("/erasures").json()["erasures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // By value, the erased value is not known any more: nothing holds it.
    let by_value = erase(&app, json!({ "phoneNumber": "555-0199" }));
    assert_eq!(by_value.status, 404, "{}", by_value.text);
    assert_eq!(by_value.error_code(), "not_found");
}

#[test]
fn bad_erasures_are_refused_with_the_contracts_codes_and_change_nothing() {
    let app = spawn_app_with(|_| {});
    people(&app);
    let blocked = app.post("/blocklist", r#"{"phoneNumber": "555-0100"}"#);
    assert_eq!(blocked.status, 200, "{}", blocked.text);
    let cases: [(&str, u16, &str); 13] = [
        (r#"{"contactId": 99}"#, 404, "not_found"),
        (r#"{"email": "nobody@hillvalley.edu"}"#, 404, "not_found"),
        (r#"{"phoneNumber": "555-0000"}"#, 404, "not_found"),
        (r#"{"phoneNumber": "555-0100"}"#, 422, "blocked_identifier"),
        (
            r#"{"contactId": 1, "email": "biff@hillvalley.edu"}"#,
            400,
            "invalid_json",
        ),
        (
            r#"{"email": "biff@hillvalley.edu", "phoneNumber": "555-0199"}"#,
            400,
            "invalid_json",
        ),
        (r#"{}"#, 400, "invalid_json"),
        (r#"{"email": "   "}"#, 400, "invalid_json"),
        (r#"{"contactId": 0}"#, 400, "invalid_json"),
        (r#"{"contactId": "3"}"#, 400, "invalid_json"),
        (r#"{"email": "biff@", "x": 1}"#, 400, "invalid_email"),
        (r#"[{"contactId": 3}]"#, 400, "invalid_json"),
        (r#"{"contactId": 3, "contactId": 4}"#, 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let reply = app.post("/erasures", body);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (status, code),
            "{body}: {}",
            reply.text
        );
    }
    for body in ["not json", "", "{\"contactId\": 3"] {
        assert_eq!(app.post("/erasures", body).status, 400, "{body}");
    }
    let blocked = app.post("/erasures", r#"{"phoneNumber": "555-0100"}"#);
    assert!(blocked.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("contactId"));
    assert!(
        !blocked.text.contains("555-0100"),
        "the refusal does not echo the value"
    );
    assert_eq!(app.get("/erasures").json(), json!({ "erasures": [] }));
    assert!(app
        .get("/contacts/export?format=ndjson")
        .text
        .contains("biff@hillvalley.edu"));
}

#[test]
fn the_ledger_lists_ids_and_times_and_one_erasure_is_found_by_its_id() {
    let app = spawn_app_with(|_| {});
    people(&app);
    erase(&app, json!({ "phoneNumber": "555-0100" }));
    erase(&app, json!({ "contactId": 4 }));
    let ledger = app.get("/erasures").json();
    let entries = ledger["erasures"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["contacts"], json!([1, 2]));
    assert_eq!(entries[1]["contacts"], json!([4]));
    assert!(!ledger.to_string().contains("hillvalley") && !ledger.to_string().contains("555"));
    assert_eq!(app.get("/erasures/2").json()["erasure"], entries[1]);
    assert_eq!(app.get("/erasures/3").status, 404);
    assert_eq!(app.get("/erasures/x").status, 404);
}

/// The erased values of `people` after erasing Lorraine (by phone) and Biff (by id), and the
/// values of George, who stays.
const ERASED: [&str; 5] = [
    "lorraine@hillvalley.edu",
    "lorraine.baines@hillvalley.edu",
    "555-0100",
    "biff@hillvalley.edu",
    "555-0199",
];
const KEPT: [&str; 2] = ["george@hillvalley.edu", "555-0142"];

#[test]
fn with_a_purge_before_the_answer_no_file_holds_an_erased_value() {
    // Tiny segments, so that the values sit in sealed segments and snapshots too.
    let app = spawn_app_with(|c| {
        c.erasure_purge_within = std::time::Duration::ZERO;
        c.snapshot_every_bytes = 512;
        c.snapshot_log_percent = 0;
    });
    people(&app);
    for n in 0..40 {
        identify(&app, &format!("filler{n}@x.io"), &format!("9{n:04}"));
    }
    // Deleted first: an erasure takes deleted holders too.
    assert_eq!(app.delete("/contacts/2").status, 200);
    let reply = erase(&app, json!({ "phoneNumber": "555-0100" }));
    assert_eq!(reply.json()["erasure"]["status"], "done", "{}", reply.text);
    assert_eq!(reply.json()["erasure"]["contacts"], json!([1, 2]));
    assert!(reply.json()["erasure"]["purgedAt"].is_string());
    let reply = erase(&app, json!({ "contactId": 3 }));
    assert_eq!(reply.json()["erasure"]["status"], "done", "{}", reply.text);
    assert_eq!(found_in_files(&app.dir, &ERASED), vec![]);
    assert_eq!(
        found_in_files(&app.dir, &KEPT).len(),
        2,
        "the scan sees values"
    );
    // And after a restart (the shutdown snapshot is of the wiped memory).
    let app = app.restart(|_| {});
    assert_eq!(found_in_files(&app.dir, &ERASED), vec![]);
    assert_eq!(app.get("/erasures/2").json()["erasure"]["status"], "done");
}

/// Polls `done` until it holds or `within` passes; whether it held.
pub fn eventually(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_pending_purge_runs_at_its_time_even_across_a_restart() {
    let window = |c: &mut identity_engine::config::Config| {
        c.erasure_purge_within = std::time::Duration::from_secs(2);
    };
    let app = spawn_app_with(window);
    people(&app);
    let reply = erase(&app, json!({ "email": "biff@hillvalley.edu" }));
    assert_eq!(reply.json()["erasure"]["status"], "pending");
    // Stopped before it is due, started again: the purge is still to come, and comes.
    let app = app.restart(window);
    let status = || app.get("/erasures/1").json()["erasure"]["status"].clone();
    let done = eventually(std::time::Duration::from_secs(30), || status() == "done");
    assert!(done, "the purge ran: {}", app.get("/erasures/1").text);
    assert_eq!(
        found_in_files(&app.dir, &["biff@hillvalley.edu", "555-0199"]),
        vec![]
    );
    assert_eq!(found_in_files(&app.dir, &KEPT).len(), 2);
}

#[test]
fn in_a_three_member_group_no_member_keeps_an_erased_value_in_any_file() {
    use crate::cluster_support::{Cluster, Options};
    use std::time::Duration;
    let options = Options {
        extra: vec!["--erasure-purge-within".into(), "0".into()],
        ..Options::default()
    };
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let node = cluster.node(leader % 3 + 1);
    for (email, phone) in [
        ("lorraine@hillvalley.edu", "555-0100"),
        ("lorraine.baines@hillvalley.edu", "555-0100"),
        ("biff@hillvalley.edu", "555-0199"),
        ("george@hillvalley.edu", "555-0142"),
    ] {
        let body = json!({ "email": email, "phoneNumber": phone }).to_string();
        let reply = node.post("/identify", &body).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for body in [
        json!({ "phoneNumber": "555-0100" }),
        json!({ "contactId": 3 }),
    ] {
        let reply = node.post("/erasures", &body.to_string()).unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        let status = &reply.json()["erasure"]["status"];
        assert_eq!(status, "done", "{}\n{}", reply.text, cluster.log_tails());
    }
    cluster.converged_export(&[1, 2, 3], Duration::from_secs(20));
    for id in [1, 2, 3] {
        let dir = cluster.node(id).dir();
        assert_eq!(found_in_files(dir, &ERASED), vec![], "node {id}");
        assert_eq!(
            found_in_files(dir, &KEPT).len(),
            2,
            "node {id} holds George"
        );
        let ledger = cluster.node(id).get("/erasures?stale=true").unwrap().json();
        assert_eq!(ledger["erasures"][1]["status"], "done", "node {id}");
    }
}

#[test]
fn an_export_holds_erased_rows_without_values_and_importing_it_keeps_their_ids_taken() {
    let app = spawn_app_with(|_| {});
    people(&app);
    // The newest contact erased: an import that dropped it would hand its id out again.
    assert_eq!(erase(&app, json!({ "contactId": 4 })).status, 200);
    for format in ["csv", "ndjson"] {
        let export = app.get(&format!("/contacts/export?format={format}"));
        assert_eq!(export.status, 200);
        assert!(
            !export.text.contains("george") && !export.text.contains("555-0142"),
            "{format}"
        );
        let copy = spawn_app_with(|_| {});
        let imported = copy.post(&format!("/contacts/import?format={format}"), &export.text);
        assert_eq!(imported.status, 200, "{format}: {}", imported.text);
        let row = copy.get("/contacts/4").json();
        assert_eq!(
            (row["email"].clone(), row["phoneNumber"].clone()),
            (Value::Null, Value::Null)
        );
        assert!(row["deletedAt"].is_string(), "{format}: a tombstone: {row}");
        let next = identify(&copy, "marty@hillvalley.edu", "555-0185");
        assert_eq!(
            next["contact"]["primaryContactId"], 5,
            "{format}: ids are never reused"
        );
    }
    // A file claiming an erased row with values is refused.
    let copy = spawn_app_with(|_| {});
    let bad = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt,erasedAt\n\
        1,555,a@b.c,,primary,2026-01-01T00:00:00.000Z,2026-01-01T00:00:00.000Z,,2026-01-02T00:00:00.000Z\n";
    let refused = copy.post("/contacts/import?format=csv", bad);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("erased"), "{}", refused.text);
}

#[test]
fn a_backup_from_before_an_erasure_holds_it_and_restoring_it_with_the_ledger_erases_it_again() {
    use identity_engine::tools::{backup, erase};
    let app = spawn_app_with(|c| c.erasure_purge_within = std::time::Duration::ZERO);
    people(&app);
    let older = crate::backup::fetch_backup(app.addr);
    for body in [
        json!({ "phoneNumber": "555-0100" }),
        json!({ "contactId": 3 }),
    ] {
        assert_eq!(erase(&app, body).json()["erasure"]["status"], "done");
    }
    // Made after the backup, then erased: the backup never held contact 5.
    identify(&app, "marty@hillvalley.edu", "555-0185");
    assert_eq!(erase(&app, json!({ "contactId": 5 })).status, 200);
    let tmp = tempfile::tempdir().unwrap();
    let (file, saved) = (
        tmp.path().join("older.backup"),
        tmp.path().join("ledger.json"),
    );
    std::fs::write(&file, &older).unwrap();
    std::fs::write(&saved, app.get("/erasures").text).unwrap();

    // Without the ledger the restored directory holds the erased values again, as the backup did.
    let plain = tmp.path().join("plain");
    backup::restore_dir(&file, &plain).unwrap();
    assert_eq!(found_in_files(&plain, &ERASED).len(), ERASED.len());

    // With it, every erasure is applied again and the files purged before the tool returns.
    let again = tmp.path().join("again");
    let report = erase::restore_with_ledger(&file, &again, &saved).unwrap();
    assert!(
        report.contains("3 erasure(s) of the ledger: 2 applied again"),
        "{report}"
    );
    assert_eq!(found_in_files(&again, &ERASED), vec![]);
    assert_eq!(found_in_files(&again, &KEPT).len(), 2);
    let restored = crate::common::spawn_app_in(&again, |_| {}).unwrap();
    for id in [1, 2, 3] {
        let row = restored.get(&format!("/contacts/{id}")).json();
        assert!(
            row["erasedAt"].is_string() && row["email"].is_null(),
            "{row}"
        );
    }
    assert_eq!(
        restored.get("/contacts/4").json()["email"],
        "george@hillvalley.edu"
    );
    let ledger = restored.get("/erasures").json();
    let statuses: Vec<&Value> = (ledger["erasures"].as_array().unwrap().iter())
        .map(|e| &e["status"])
        .collect();
    assert_eq!(statuses, [&json!("done"), &json!("done")]);

    // A ledger that is not one is refused before anything is restored.
    std::fs::write(&saved, "{\"nothing\": 1}").unwrap();
    let refused = erase::restore_with_ledger(&file, &tmp.path().join("bad"), &saved);
    assert!(refused.is_err_and(|e| e.contains("not a ledger")));
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn the_erase_tool_erases_in_a_stopped_directory_and_purges_before_it_exits() {
    use identity_engine::storage::StorageOptions;
    use identity_engine::tools::erase::{erase as erase_dir, Named};
    let mut app = spawn_app_with(|c| c.snapshot_every_bytes = 512);
    people(&app);
    let dir = app.dir.clone();
    app.stop().unwrap();
    let report = erase_dir(
        StorageOptions::new(&dir),
        &Named::Phone(" 555-0100 ".into()),
    )
    .unwrap();
    assert!(
        report.contains("erasure 1: contact(s) [1, 2] erased"),
        "{report}"
    );
    let report = erase_dir(StorageOptions::new(&dir), &Named::Contact(3)).unwrap();
    assert!(report.contains("erasure 2"), "{report}");
    assert_eq!(found_in_files(&dir, &ERASED), vec![]);
    assert_eq!(found_in_files(&dir, &KEPT).len(), 2);
    let nothing = erase_dir(
        StorageOptions::new(&dir),
        &Named::Email("nobody@x.io".into()),
    );
    assert!(nothing.is_err_and(|e| e.contains("nothing erased")));
    let app = crate::common::spawn_app_in(&dir, |_| {}).unwrap();
    assert_eq!(app.get("/erasures/2").json()["erasure"]["status"], "done");
    assert_eq!(app.get("/contacts/3").json()["phoneNumber"], Value::Null);
    drop(app);
    std::fs::create_dir_all(dir.join("raft")).unwrap();
    let member = erase_dir(StorageOptions::new(&dir), &Named::Contact(4));
    assert!(member.is_err_and(|e| e.contains("cluster member")));
}

#[test]
fn a_purge_removes_the_staging_of_a_backup_in_progress() {
    let app = spawn_app_with(|c| c.erasure_purge_within = std::time::Duration::ZERO);
    people(&app);
    // What a backup in progress leaves in the data directory: hard links to the log's files.
    let staging = app.dir.join("backup-staging-1-0");
    std::fs::create_dir(&staging).unwrap();
    for file in crate::storage_support::segments(&app.dir) {
        std::fs::hard_link(&file, staging.join(file.file_name().unwrap())).unwrap();
    }
    assert_eq!(found_in_files(&staging, &["biff@hillvalley.edu"]).len(), 1);
    let reply = erase(&app, json!({ "email": "biff@hillvalley.edu" }));
    assert_eq!(reply.json()["erasure"]["status"], "done", "{}", reply.text);
    assert!(!staging.exists(), "the backup in progress is cut off");
    assert_eq!(
        found_in_files(&app.dir, &["biff@hillvalley.edu", "555-0199"]),
        vec![]
    );
}

#[test]
fn a_member_that_was_down_purges_when_it_is_back_and_only_then_is_the_erasure_done() {
    use crate::cluster_support::{Cluster, Options};
    use std::time::Duration;
    let options = Options {
        extra: vec!["--erasure-purge-within".into(), "1s".into()],
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let down = leader % 3 + 1;
    let up: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != down).collect();
    for (email, phone) in [
        ("biff@hillvalley.edu", "555-0199"),
        ("george@hillvalley.edu", "555-0142"),
    ] {
        let body = json!({ "email": email, "phoneNumber": phone }).to_string();
        assert_eq!(
            cluster
                .node(leader)
                .post("/identify", &body)
                .unwrap()
                .status,
            200
        );
    }
    cluster.converged_export(&[1, 2, 3], Duration::from_secs(20));
    cluster.kill(down);
    let reply = cluster
        .node(leader)
        .post("/erasures", r#"{"contactId": 1}"#)
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    let status = |cluster: &Cluster, node: u64| {
        let reply = cluster.node(node).get("/erasures/1?stale=true");
        reply
            .map(|r| r.json()["erasure"]["status"].clone())
            .unwrap_or_default()
    };
    // The members that are up purge; the erasure waits for the one that is down.
    let purged = |cluster: &Cluster, id: u64| {
        found_in_files(cluster.node(id).dir(), &["biff@hillvalley.edu"]).is_empty()
    };
    let up_purged = || up.iter().all(|&id| purged(&cluster, id));
    assert!(eventually(Duration::from_secs(20), up_purged));
    assert_eq!(status(&cluster, leader), "pending");
    assert!(
        !purged(&cluster, down),
        "the member that is down still holds it"
    );
    cluster.restart(down);
    let done = eventually(Duration::from_secs(40), || {
        status(&cluster, leader) == "done"
    });
    assert!(done, "{}", cluster.log_tails());
    for id in [1, 2, 3] {
        let dir = cluster.node(id).dir();
        assert_eq!(
            found_in_files(dir, &["biff@hillvalley.edu", "555-0199"]),
            vec![],
            "node {id}"
        );
        assert_eq!(found_in_files(dir, &KEPT).len(), 2, "node {id}");
    }
}

#[test]
fn purges_between_concurrent_writes_lose_no_acknowledged_change() {
    let app = spawn_app_with(|c| {
        c.erasure_purge_within = std::time::Duration::ZERO;
        c.snapshot_every_bytes = 4096;
    });
    people(&app);
    let written: Vec<Vec<u64>> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let app = &app;
                s.spawn(move || {
                    (0..40)
                        .map(|n| {
                            let answer =
                                identify(app, &format!("w{t}n{n}@x.io"), &format!("7{t}{n:03}"));
                            answer["contact"]["primaryContactId"].as_u64().unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        for body in [
            json!({ "contactId": 1 }),
            json!({ "email": "biff@hillvalley.edu" }),
            json!({ "phoneNumber": "555-0142" }),
        ] {
            let reply = erase(&app, body);
            assert_eq!(reply.json()["erasure"]["status"], "done", "{}", reply.text);
        }
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let app = app.restart(|_| {});
    for id in written.iter().flatten() {
        assert_eq!(
            app.get(&format!("/contacts/{id}")).status,
            200,
            "contact {id}"
        );
    }
    let needles = [
        "lorraine@hillvalley.edu",
        "biff@hillvalley.edu",
        "555-0199",
        "555-0142",
    ];
    assert_eq!(found_in_files(&app.dir, &needles), vec![]);
    assert_eq!(app.get("/stats").json()["contacts"]["erased"], 3);
}
