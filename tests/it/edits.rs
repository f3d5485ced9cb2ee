//! `PATCH /contacts/{id}` over HTTP against the real server (docs/API.md, "Editing a contact"):
//! an edit that splits a cluster, one that merges two, one that does both, one refused by the
//! cap, every error of the contract, the dry run, and restarts after edits.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::{request, spawn_app_in, spawn_app_with, Response, TestApp};
use identity_engine::matching::canon::EmailMatch;
use identity_engine::storage::Faults;

fn patch(app: &TestApp, path: &str, body: &str) -> Response {
    request(app.addr, "PATCH", path, body.as_bytes(), &[])
}

/// Sends a request that must be acknowledged; its JSON.
fn ok(response: Response) -> Value {
    assert_eq!(response.status, 200, "{}", response.text);
    response.json()
}

fn identify(app: &TestApp, body: Value) -> Value {
    ok(app.identify(&body.to_string()))
}

/// The primary and the secondaries of each identity of an edit's answer.
fn shapes(answer: &Value) -> Vec<(u64, Vec<u64>)> {
    let identities = answer["identities"].as_array().expect("identities");
    identities
        .iter()
        .map(|i| {
            let secondaries = i["secondaryContactIds"].as_array().unwrap();
            (
                i["primaryContactId"].as_u64().unwrap(),
                secondaries.iter().map(|s| s.as_u64().unwrap()).collect(),
            )
        })
        .collect()
}

fn export(app: &TestApp) -> String {
    let response = app.get("/contacts/export?format=ndjson");
    assert_eq!(response.status, 200);
    response.text
}

fn error(response: &Response) -> (u16, String) {
    (response.status, response.error_code())
}

/// 1 doc@/111 and 2 marty@/111 are one identity by their phone; 3 george@/333 is another.
fn three_contacts(app: &TestApp) {
    identify(
        app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    identify(
        app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "111"}),
    );
    identify(
        app,
        json!({"email": "george@hillvalley.edu", "phoneNumber": "333"}),
    );
}

#[test]
fn correcting_the_phone_a_cluster_hung_on_splits_it_and_keeps_id_and_created_at() {
    let app = spawn_app_with(|_| {});
    three_contacts(&app);
    let before = ok(app.get("/contacts/2"));
    let answer = ok(patch(&app, "/contacts/2", r#"{"phoneNumber": " 222 "}"#));
    assert_eq!(shapes(&answer), [(2, vec![]), (1, vec![])]);
    let row = &answer["contact"];
    assert_eq!(row["id"], 2);
    assert_eq!(row["phoneNumber"], "222", "normalized like a request");
    assert_eq!(
        row["email"], "marty@hillvalley.edu",
        "a field left out stays"
    );
    assert_eq!(
        (row["linkedId"].clone(), row["linkPrecedence"].clone()),
        (Value::Null, json!("primary"))
    );
    assert_eq!(row["createdAt"], before["createdAt"]);
    assert_ne!(row["updatedAt"], before["updatedAt"]);
    assert_eq!(&ok(app.get("/contacts/2")), row);
    let doc = ok(app.get("/contacts/1/identity"));
    assert_eq!(doc["contact"]["secondaryContactIds"], json!([]));
}

#[test]
fn correcting_a_typo_to_the_email_another_identity_holds_merges_them_oldest_primary_first() {
    let app = spawn_app_with(|_| {});
    identify(&app, json!({"email": "jon@gmail.com"}));
    identify(
        &app,
        json!({"email": "jon@gmial.com", "phoneNumber": "555"}),
    );
    identify(&app, json!({"email": "other@x.io", "phoneNumber": "555"}));
    let answer = ok(patch(&app, "/contacts/2", r#"{"email": " JON@gmail.com"}"#));
    assert_eq!(shapes(&answer), [(1, vec![2, 3])]);
    let identity = &answer["identities"][0];
    assert_eq!(identity["emails"], json!(["jon@gmail.com", "other@x.io"]));
    assert_eq!(identity["phoneNumbers"], json!(["555"]));
    for id in [2, 3] {
        let row = ok(app.get(&format!("/contacts/{id}")));
        assert_eq!(
            (row["linkedId"].clone(), row["linkPrecedence"].clone()),
            (json!(1), json!("secondary"))
        );
    }
    // The typo is held by no one now: it finds nobody.
    let found = ok(app.get("/contacts?email=jon@gmial.com"));
    assert_eq!(found["contacts"], json!([]));
}

#[test]
fn an_edits_values_are_keyed_by_the_matching_modes_like_a_requests() {
    let app = spawn_app_with(|c| c.matching.email_match = EmailMatch::Provider);
    identify(&app, json!({"email": "jon@gmail.com"}));
    identify(&app, json!({"email": "jon@gmial.com"}));
    let answer = ok(patch(
        &app,
        "/contacts/2",
        r#"{"email": "J.O.N+shop@googlemail.com"}"#,
    ));
    assert_eq!(shapes(&answer), [(1, vec![2])]);
    assert_eq!(
        answer["contact"]["email"], "jon@gmail.com",
        "the key is what is stored"
    );
}

#[test]
fn one_edit_splits_its_cluster_and_merges_with_another() {
    let app = spawn_app_with(|_| {});
    three_contacts(&app);
    // 1 takes 3's phone: 2 is left alone, 1 and 3 are one identity (1 older, so primary).
    let answer = ok(patch(&app, "/contacts/1", r#"{"phoneNumber": "333"}"#));
    assert_eq!(shapes(&answer), [(1, vec![3]), (2, vec![])]);
    assert_eq!(ok(app.get("/contacts/3"))["linkedId"], 1);
    assert_eq!(ok(app.get("/contacts/2"))["linkPrecedence"], "primary");
}

#[test]
fn an_edit_over_the_cap_is_refused_and_changes_nothing() {
    let app = spawn_app_with(|c| c.max_cluster_size = 2);
    three_contacts(&app);
    let before = export(&app);
    let refused = patch(&app, "/contacts/3", r#"{"phoneNumber": "111"}"#);
    assert_eq!(
        error(&refused),
        (409, "cluster_limit".to_owned()),
        "{}",
        refused.text
    );
    let dry = patch(&app, "/contacts/3?dryRun=true", r#"{"phoneNumber": "111"}"#);
    assert_eq!(
        error(&dry),
        (409, "cluster_limit".to_owned()),
        "a dry run is refused alike"
    );
    assert_eq!(export(&app), before);
}

#[test]
fn editing_to_the_values_it_holds_answers_200_and_changes_nothing() {
    let app = spawn_app_with(|_| {});
    three_contacts(&app);
    let before = export(&app);
    let body = r#"{"email": "Marty@HillValley.edu", "phoneNumber": "111"}"#;
    let answer = ok(patch(&app, "/contacts/2", body));
    assert_eq!(shapes(&answer), [(1, vec![2])]);
    assert_eq!(
        ok(patch(&app, "/contacts/2", "{}"))["contact"],
        answer["contact"]
    );
    assert_eq!(export(&app), before);
}

#[test]
fn a_dry_run_answers_what_the_edit_would_leave_and_changes_nothing() {
    let app = spawn_app_with(|_| {});
    three_contacts(&app);
    let before = export(&app);
    let body = r#"{"phoneNumber": "333"}"#;
    let preview = ok(patch(&app, "/contacts/1?dryRun=true", body));
    assert_eq!(preview["dryRun"], true);
    assert_eq!(export(&app), before, "a dry run changes nothing");
    assert_eq!(
        ok(patch(&app, "/contacts/1?dryRun=false", "{}"))["contact"]["phoneNumber"],
        "111"
    );
    let answer = ok(patch(&app, "/contacts/1", body));
    assert_eq!(preview["identities"], answer["identities"]);
    let strip = |row: &Value| {
        let mut row = row.clone();
        row.as_object_mut().unwrap().remove("updatedAt");
        row
    };
    assert_eq!(strip(&preview["contact"]), strip(&answer["contact"]));
    assert!(answer.get("dryRun").is_none());
}

#[test]
fn every_error_of_the_contract() {
    let app = spawn_app_with(|c| c.generic_threshold = 2);
    three_contacts(&app);
    identify(&app, json!({"email": "biff@hillvalley.edu"}));
    ok(app.delete("/contacts/3"));
    let before = export(&app);
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/contacts/1", "[]", 400, "invalid_json"),
        ("/contacts/1", "nope", 400, "invalid_json"),
        ("/contacts/1", r#"{"email": 5}"#, 400, "invalid_json"),
        (
            "/contacts/1",
            r#"{"email": "a@b.io", "email": null}"#,
            400,
            "invalid_json",
        ),
        (
            "/contacts/1",
            r#"{"email": "not an email"}"#,
            400,
            "invalid_email",
        ),
        (
            "/contacts/1",
            r#"{"phoneNumber": "call me"}"#,
            400,
            "invalid_phone_number",
        ),
        (
            "/contacts/1",
            r#"{"email": null, "phoneNumber": ""}"#,
            400,
            "missing_identifier",
        ),
        (
            "/contacts/4",
            r#"{"email": null}"#,
            400,
            "missing_identifier",
        ),
        ("/contacts/1?dryRun=maybe", "{}", 400, "invalid_query"),
        ("/contacts/1?stale=true", "{}", 400, "invalid_query"),
        ("/contacts/abc", r#"{"email": "a@b.io"}"#, 404, "not_found"),
        ("/contacts/99", r#"{"email": "a@b.io"}"#, 404, "not_found"),
        ("/contacts/3", r#"{"email": "a@b.io"}"#, 404, "not_found"),
        // 111 has two holders, the generic threshold: a third would make it generic.
        (
            "/contacts/4",
            r#"{"phoneNumber": "111"}"#,
            422,
            "blocked_identifier",
        ),
    ];
    for &(path, body, status, code) in cases {
        let response = patch(&app, path, body);
        assert_eq!(
            error(&response),
            (status, code.to_owned()),
            "{path} {body}: {}",
            response.text
        );
    }
    let generic = patch(&app, "/contacts/4", r#"{"phoneNumber": "111"}"#);
    assert!(generic.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("generic"));
    ok(app.post("/blocklist", r#"{"email": "junk@x.io"}"#));
    let blocked = patch(&app, "/contacts/4", r#"{"email": "junk@x.io"}"#);
    assert_eq!(error(&blocked), (422, "blocked_identifier".to_owned()));
    let big = format!(r#"{{"email": "a@b.io", "pad": "{}"}}"#, "x".repeat(20_000));
    assert_eq!(
        error(&patch(&app, "/contacts/1", &big)),
        (413, "payload_too_large".to_owned())
    );
    assert!(
        app.get("/blocklist").json()["values"]
            .as_array()
            .unwrap()
            .len()
            == 1,
        "no generic block"
    );
    assert_eq!(export(&app), before, "no refused edit changed anything");
}

#[test]
fn an_edit_needs_the_admin_token_when_one_is_configured() {
    let app = spawn_app_with(|c| c.admin_token = Some("sesame".into()));
    ok(app.identify(r#"{"email": "a@b.io"}"#));
    let refused = patch(&app, "/contacts/1", r#"{"email": "c@d.io"}"#);
    assert_eq!(error(&refused), (401, "unauthorized".to_owned()));
    let auth = [("Authorization", "Bearer sesame")];
    let done = request(
        app.addr,
        "PATCH",
        "/contacts/1",
        br#"{"email": "c@d.io"}"#,
        &auth,
    );
    assert_eq!(done.status, 200, "{}", done.text);
}

#[test]
fn an_edit_that_cannot_be_made_durable_is_503_and_lost_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let app = spawn_app_in(tmp.path(), |c| c.faults = Some(faults.clone())).unwrap();
    three_contacts(&app);
    faults.fail_syncs.store(true, Ordering::SeqCst);
    let refused = patch(&app, "/contacts/2", r#"{"phoneNumber": "222"}"#);
    assert_eq!(error(&refused), (503, "storage_unavailable".to_owned()));
    drop(app);
    let app = spawn_app_in(tmp.path(), |_| {}).unwrap();
    assert_eq!(ok(app.get("/contacts/2"))["phoneNumber"], "111");
}

/// What the server shows of every contact: its row and its identity.
fn everything(app: &TestApp) -> Vec<(Value, Value)> {
    (1..=6)
        .map(|id| {
            let row = app.get(&format!("/contacts/{id}"));
            let identity = app.get(&format!("/contacts/{id}/identity"));
            (
                json!([row.status, row.text]),
                json!([identity.status, identity.text]),
            )
        })
        .collect()
}

#[test]
fn a_restart_after_edits_answers_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    // Tiny log segments, so that snapshots are taken between the edits too.
    let tweak = |c: &mut identity_engine::config::Config| c.snapshot_every_bytes = 256;
    let app = spawn_app_in(tmp.path(), tweak).unwrap();
    three_contacts(&app);
    identify(
        &app,
        json!({"email": "george@hillvalley.edu", "phoneNumber": "444"}),
    );
    ok(patch(&app, "/contacts/1", r#"{"phoneNumber": "333"}"#));
    ok(patch(&app, "/contacts/4", r#"{"email": null}"#));
    ok(patch(
        &app,
        "/contacts/2",
        r#"{"email": "doc@hillvalley.edu", "phoneNumber": null}"#,
    ));
    let seen = everything(&app);
    let app = app.restart(tweak);
    assert_eq!(everything(&app), seen);
    let again = ok(patch(
        &app,
        "/contacts/2",
        r#"{"email": "marty@hillvalley.edu"}"#,
    ));
    assert_eq!(shapes(&again), [(2, vec![]), (1, vec![3])]);
}

#[test]
fn an_import_of_an_existing_id_is_still_refused_and_is_no_way_to_edit() {
    let app = spawn_app_with(|_| {});
    three_contacts(&app);
    ok(patch(&app, "/contacts/2", r#"{"phoneNumber": "222"}"#));
    let before = export(&app);
    let file = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n\
        2,999,new@x.io,,primary,2023-04-01T00:00:00.374Z,2023-04-01T00:00:00.374Z,\n";
    let refused = app.post("/contacts/import", file);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("already exists"), "{}", refused.text);
    assert_eq!(export(&app), before);
}
