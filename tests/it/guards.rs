//! The over-merge guards over HTTP: a junk-value flood, the blocklist endpoints, the cap, and
//! the inputs that used to poison the log (ids past u32), each with the real server.

use std::path::Path;

use serde_json::Value;

use crate::common::{spawn_app_in, spawn_app_with, TestApp};
use identity_engine::storage::StorageOptions;
use identity_engine::tools::import::import;

fn identify(app: &TestApp, email: &str, phone: &str) -> crate::common::Response {
    app.identify(&format!(r#"{{"email":"{email}","phoneNumber":"{phone}"}}"#))
}

fn blocklist(app: &TestApp) -> Vec<Value> {
    let list = app.get("/blocklist");
    assert_eq!(list.status, 200, "{}", list.text);
    list.json()["values"].as_array().unwrap().clone()
}

#[test]
fn a_junk_phone_past_the_generic_threshold_is_blocked_and_answers_stay_small() {
    let tmp = tempfile::tempdir().unwrap();
    let threshold = |c: &mut identity_engine::config::Config| c.generic_threshold = 5;
    let app = spawn_app_in(tmp.path(), threshold).unwrap();
    let other = identify(&app, "someone@else.example", "5550001");
    assert_eq!(other.status, 200);
    let mut sizes = Vec::new();
    for n in 0..40 {
        let answer = identify(&app, &format!("shopper{n}@shop.example"), "0000000000");
        assert_eq!(answer.status, 200, "{}", answer.text);
        sizes.push(
            answer.json()["contact"]["secondaryContactIds"]
                .as_array()
                .unwrap()
                .len()
                + 1,
        );
    }
    // Five holders link; the sixth would be one too many: the value is blocked and every later
    // shopper is a primary of their own.
    assert_eq!(&sizes[..5], &[1, 2, 3, 4, 5]);
    assert!(sizes[5..].iter().all(|&s| s == 1), "{sizes:?}");
    let first = identify(&app, "shopper0@shop.example", "0000000000").json();
    assert_eq!(
        first["contact"]["secondaryContactIds"],
        serde_json::json!([])
    );
    assert_eq!(
        first["contact"]["phoneNumbers"],
        serde_json::json!(["0000000000"])
    );
    let listed = blocklist(&app);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "phoneNumber");
    assert_eq!(listed[0]["value"], "0000000000");
    assert_eq!(listed[0]["reason"], "generic");
    assert_eq!(listed[0]["holders"], 5);
    let unaffected = identify(&app, "someone@else.example", "5550001").json();
    assert_eq!(unaffected["contact"]["primaryContactId"], 1);
    let metrics = app.get("/metrics").text;
    assert!(
        metrics.contains(r#"identity_engine_blocked_values{reason="generic"} 1"#),
        "{metrics}"
    );
    let app = app.restart(threshold);
    assert_eq!(blocklist(&app), listed, "a restart keeps the block");
    let again = identify(&app, "shopper39@shop.example", "0000000000").json();
    assert_eq!(
        again["contact"]["secondaryContactIds"],
        serde_json::json!([])
    );
}

#[test]
fn blocking_splits_unblocking_merges_and_an_all_blocked_request_is_refused() {
    let app = spawn_app_with(|_| {});
    assert_eq!(identify(&app, "doc@hillvalley.edu", "555").status, 200);
    assert_eq!(identify(&app, "marty@hillvalley.edu", "555").status, 200);
    let blocked = app.post("/blocklist", r#"{"phoneNumber":" 555 "}"#);
    assert_eq!(blocked.status, 200, "{}", blocked.text);
    let body = blocked.json();
    assert_eq!(body["blocked"]["value"], "555");
    assert_eq!(body["blocked"]["reason"], "admin");
    assert_eq!(body["blocked"]["holders"], 2);
    let primaries: Vec<_> = body["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["primaryContactId"].as_u64().unwrap())
        .collect();
    assert_eq!(primaries, [1, 2], "two customers again");
    let holding = app.get("/contacts?phoneNumber=555").json();
    assert_eq!(
        holding["contacts"].as_array().unwrap().len(),
        2,
        "its holders are listed"
    );
    let again = app.post("/blocklist", r#"{"phoneNumber":"555"}"#);
    assert_eq!(again.status, 200, "blocking twice changes nothing");
    let refused = app.identify(r#"{"phoneNumber":"555"}"#);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (422, "blocked_identifier")
    );
    let kept = identify(&app, "biff@hillvalley.edu", "555");
    assert_eq!(kept.status, 200);
    assert_eq!(
        kept.json()["contact"]["phoneNumbers"],
        serde_json::json!([]),
        "not stored"
    );
    let unblocked = app.delete("/blocklist?phoneNumber=555");
    assert_eq!(unblocked.status, 200, "{}", unblocked.text);
    let identities = unblocked.json()["identities"].as_array().unwrap().clone();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["primaryContactId"], 1);
    assert_eq!(identities[0]["secondaryContactIds"], serde_json::json!([2]));
    let missing = app.delete("/blocklist?phoneNumber=555");
    assert_eq!(missing.status, 404);
    assert_eq!(app.post("/blocklist", "{}").status, 400);
    assert_eq!(
        app.post("/blocklist", r#"{"email":"a@b.c","phoneNumber":"1"}"#)
            .status,
        400
    );
    assert_eq!(
        app.post("/blocklist", r#"{"email":"not an email"}"#).status,
        400
    );
    assert_eq!(app.delete("/blocklist?fax=1").status, 400);
}

#[test]
fn the_cluster_cap_refuses_growth_and_an_unblock_that_would_pass_it() {
    let app = spawn_app_with(|c| c.max_cluster_size = 3);
    for n in 0..3 {
        assert_eq!(
            identify(&app, &format!("c{n}@x.example"), "777").status,
            200
        );
    }
    let over = identify(&app, "c3@x.example", "777");
    assert_eq!(
        (over.status, over.error_code().as_str()),
        (409, "cluster_limit")
    );
    let rows = app.get("/contacts?after=0&limit=100").json();
    assert_eq!(
        rows["contacts"].as_array().unwrap().len(),
        3,
        "nothing changed"
    );
    // Blocked, 777 splits the three; c0 then merges with two others by their phone 888.
    assert_eq!(
        app.post("/blocklist", r#"{"phoneNumber":"777"}"#).status,
        200
    );
    assert_eq!(identify(&app, "d0@x.example", "888").status, 200);
    assert_eq!(identify(&app, "d1@x.example", "888").status, 200);
    assert_eq!(identify(&app, "c0@x.example", "888").status, 200);
    // Unblocking would put c1 and c2 back with c0's cluster of three: five.
    let refused = app.delete("/blocklist?phoneNumber=777");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (409, "cluster_limit")
    );
    assert_eq!(blocklist(&app).len(), 1, "still blocked");
    let metrics = app.get("/metrics").text;
    assert!(
        metrics.contains(r#"identity_engine_refusals_total{reason="cluster_limit"} 2"#),
        "{metrics}"
    );
}

fn import_rows(dir: &Path, csv: &str) {
    let file = dir.join("rows.csv");
    std::fs::write(&file, csv).unwrap();
    import(StorageOptions::new(dir.join("data")), &file, None, false).expect("imports");
}

#[test]
fn the_last_contact_id_used_is_507_and_the_data_directory_still_starts_and_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    import_rows(
        tmp.path(),
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n\
         4294967295,1,last@id.example,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,\n",
    );
    let data = tmp.path().join("data");
    let app = spawn_app_in(&data, |_| {}).unwrap();
    let refused = identify(&app, "new@id.example", "2");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (507, "capacity_exhausted")
    );
    let known = identify(&app, "last@id.example", "1");
    assert_eq!(
        known.status, 200,
        "the server keeps answering: {}",
        known.text
    );
    drop(app);
    identity_engine::tools::check::check(&data).expect("check finds the directory clean");
    let app = spawn_app_in(&data, |_| {}).expect("starts again");
    assert_eq!(identify(&app, "last@id.example", "1").status, 200);
}

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

/// `n` primaries that share `phone`, one a minute from 2023-04-01.
fn rows_sharing(phone: &str, n: u32) -> String {
    let rows: Vec<String> = (1..=n)
        .map(|i| {
            let at = format!("2023-04-01T00:{:02}:00.000Z", i);
            format!("{i},{phone},c{i}@shop.example,,primary,{at},{at},")
        })
        .collect();
    format!("{HEADER}\n{}\n", rows.join("\n"))
}

fn import_guarded(
    dir: &Path,
    csv: &str,
    guards: &identity_engine::tools::import::ImportGuards,
) -> Result<identity_engine::tools::import::ImportReport, identity_engine::tools::import::ImportError>
{
    let file = dir.join("rows.csv");
    std::fs::write(&file, csv).unwrap();
    let storage = StorageOptions::new(dir.join("data"));
    identity_engine::tools::import::import_guarded(storage, &file, None, false, guards)
}

fn limits(
    generic_threshold: u32,
    max_cluster_size: u32,
) -> identity_engine::tools::import::ImportGuards {
    identity_engine::tools::import::ImportGuards {
        limits: identity_engine::engine::Limits {
            generic_threshold,
            max_cluster_size,
        },
        blocklist: Vec::new(),
    }
}

#[test]
fn an_import_blocks_as_generic_a_value_its_rows_share_past_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let report = import_guarded(tmp.path(), &rows_sharing("0000000000", 5), &limits(3, 0)).unwrap();
    let generic = vec![(
        identity_engine::engine::Kind::Phone,
        "0000000000".to_owned(),
    )];
    assert_eq!(report.generic, generic);
    assert!(
        report.to_string().contains("blocked 1 value(s) as generic"),
        "{report}"
    );
    let app = spawn_app_in(&tmp.path().join("data"), |_| {}).unwrap();
    let one = identify(&app, "c1@shop.example", "0000000000").json();
    assert_eq!(
        one["contact"]["secondaryContactIds"],
        serde_json::json!([]),
        "not linked"
    );
    assert_eq!(blocklist(&app)[0]["reason"], "generic");
}

#[test]
fn an_import_that_would_pass_the_cap_is_refused_whole_naming_the_values() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = import_guarded(tmp.path(), &rows_sharing("5550000", 3), &limits(0, 2));
    let message = refused.expect_err("refused").to_string();
    assert!(
        message.contains("more than the cap of 2") && message.contains("5550000"),
        "{message}"
    );
    let app = spawn_app_in(&tmp.path().join("data"), |_| {}).unwrap();
    let rows = app.get("/contacts?after=0&limit=10").json();
    assert_eq!(
        rows["contacts"],
        serde_json::json!([]),
        "nothing was imported"
    );
}

#[test]
fn an_import_with_a_blocklist_blocks_its_values_before_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut guards = limits(0, 0);
    let list = identity_engine::tools::blocklist::parse(
        "# junk\nphone: 5550000 \nemail:NOBODY@shop.example\n",
        &Default::default(),
    );
    guards.blocklist = list.unwrap();
    let report = import_guarded(tmp.path(), &rows_sharing("5550000", 3), &guards).unwrap();
    assert_eq!(report.blocked.len(), 2);
    assert_eq!(
        report.blocked[1].1, "nobody@shop.example",
        "normalized like a request"
    );
    let app = spawn_app_in(&tmp.path().join("data"), |_| {}).unwrap();
    let listed = blocklist(&app);
    assert_eq!(listed.len(), 2);
    let holders: Vec<_> = listed
        .iter()
        .map(|v| v["holders"].as_u64().unwrap())
        .collect();
    assert_eq!(
        holders,
        [0, 3],
        "the email no one holds, the phone three rows hold"
    );
    assert!(identity_engine::tools::blocklist::parse("fax:1", &Default::default()).is_err());
}

#[test]
fn a_blocklist_file_at_start_up_blocks_its_values_and_a_bad_one_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("blocklist.txt");
    std::fs::write(&file, "phone:0000000000\nemail:noemail@shop.example\n").unwrap();
    let data = tmp.path().join("data");
    let with_file = |c: &mut identity_engine::config::Config| c.blocklist = Some(file.clone());
    let app = spawn_app_in(&data, with_file).unwrap();
    assert_eq!(blocklist(&app).len(), 2);
    let refused = app.identify(r#"{"phoneNumber":"0000000000"}"#);
    assert_eq!(refused.status, 422);
    drop(app);
    std::fs::write(&file, "phone:not a phone\n").unwrap();
    let error = spawn_app_in(&data, with_file).err().expect("refused");
    assert!(error.to_string().contains("line 1"), "{error}");
}

#[test]
fn an_online_import_is_refused_whole_past_the_cap_and_blocks_what_it_makes_generic() {
    let app = spawn_app_with(|c| {
        c.max_cluster_size = 3;
        c.generic_threshold = 4;
    });
    let refused = app.post("/contacts/import", &rows_sharing("5550000", 4));
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (409, "cluster_limit"),
        "{}",
        refused.text
    );
    let rows = app.get("/contacts?after=0&limit=10").json();
    assert_eq!(
        rows["contacts"],
        serde_json::json!([]),
        "nothing was imported"
    );
    // Six rows sharing a phone: past the threshold of 4, the phone is blocked as generic, so no
    // cluster passes the cap and the import goes through.
    let imported = app.post("/contacts/import", &rows_sharing("0000000000", 6));
    assert_eq!(imported.status, 200, "{}", imported.text);
    let body = imported.json();
    assert_eq!(body["blockedAsGeneric"][0]["value"], "0000000000");
    assert_eq!(blocklist(&app)[0]["holders"], 6);
}
