//! The data lifecycle over the real server: Contact rows looked up, paged and deleted (with the
//! regrouping docs/API.md's "Deleting a contact" asks for), export then import (library and CLI),
//! import of bad or disagreeing files, and admin access by token or loopback.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{request, spawn_app, spawn_app_in, spawn_app_with, Response, TestApp};
use identity_engine::engine::{Contact, Timestamp};
use identity_engine::storage::{recovery, StorageOptions};
use identity_engine::tools::import::{import, ImportError, ImportReport, RowError};
use serde_json::{json, Value};

/// The columns of a file to import (files written before erasure have no `erasedAt`).
const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";
/// The columns an export writes.
const EXPORTED: &str =
    "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt,erasedAt";
const FIELDS: [&str; 9] = [
    "id",
    "phoneNumber",
    "email",
    "linkedId",
    "linkPrecedence",
    "createdAt",
    "updatedAt",
    "deletedAt",
    "erasedAt",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The body of a 200 answer as JSON (panics with the answer otherwise).
fn ok(response: Response) -> Value {
    assert_eq!(response.status, 200, "{}", response.text);
    response.json()
}

/// Asserts an error answer's status and docs/API.md's JSON error shape with `code`.
fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text);
    assert_eq!(response.error_code(), code, "{}", response.text);
    let message = &response.json()["error"]["message"];
    assert!(
        message.as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        response.text
    );
}

fn identify(app: &TestApp, body: Value) -> Value {
    ok(app.identify(&body.to_string()))
}

fn row(app: &TestApp, id: u64) -> Value {
    ok(app.get(&format!("/contacts/{id}")))
}

fn identity(app: &TestApp, id: u64) -> Value {
    ok(app.get(&format!("/contacts/{id}/identity")))
}

/// Every row the server holds, deleted ones too, by chaining pages of `limit`.
fn all_rows(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut path = format!("/contacts?limit={limit}");
    loop {
        let page = ok(app.get(&path));
        let contacts = page["contacts"].as_array().expect("contacts array");
        assert!(contacts.len() <= limit, "a page holds at most limit rows");
        rows.extend(contacts.iter().cloned());
        match &page["next"] {
            Value::Null => return rows,
            next => path = format!("/contacts?after={next}&limit={limit}"),
        }
    }
}

fn ids(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["id"].as_u64().expect("id")).collect()
}

fn live_ids(rows: &[Value]) -> Vec<u64> {
    let live: Vec<Value> = rows
        .iter()
        .filter(|r| r["deletedAt"].is_null())
        .cloned()
        .collect();
    ids(&live)
}

/// The ids `GET /contacts?{query}` answers, ascending.
fn lookup(app: &TestApp, query: &str) -> Vec<u64> {
    let answer = ok(app.get(&format!("/contacts?{query}")));
    let mut found = ids(answer["contacts"].as_array().expect("contacts array"));
    found.sort_unstable();
    found
}

fn millis(stamp: &Value) -> i64 {
    let text = stamp
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {stamp}"));
    Timestamp::parse_rfc3339(text)
        .unwrap_or_else(|| panic!("not RFC 3339: {text}"))
        .0
}

/// `2023-04-01T00:00:00.374Z`: RFC 3339, UTC, exactly milliseconds.
fn assert_rfc3339_ms(stamp: &Value) {
    let text = stamp
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {stamp}"));
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{text}");
    millis(stamp);
}

/// Waits (busily, never long) until the wall clock has passed `stamp`, so that a change made
/// now gets a visibly newer timestamp.
fn wait_for_clock_past(stamp: &Value) {
    let after = millis(stamp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Timestamp::now().0 <= after {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::hint::spin_loop();
    }
}

/// A CSV file with the Contact table's header and `rows`, in a fresh directory.
fn fixture(dir: &Path, name: &str, rows: &[&str]) -> PathBuf {
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

/// One CSV row of a contact created and updated at day `day` of April 2023 (deleted then too
/// when `deleted`).
fn april_row(
    id: u32,
    phone: &str,
    email: &str,
    linked: &str,
    precedence: &str,
    day: u32,
) -> String {
    let at = format!("2023-04-{day:02}T00:00:00.000Z");
    format!("{id},{phone},{email},{linked},{precedence},{at},{at},")
}

fn deleted(row: &str) -> String {
    let at = row.split(',').nth(5).expect("createdAt");
    format!("{row}{at}")
}

fn import_into(dir: &Path, file: &Path, skip_invalid: bool) -> Result<ImportReport, ImportError> {
    import(StorageOptions::new(dir), file, None, skip_invalid)
}

/// The rows a stopped data dir holds, read without changing it.
fn rows_in_dir(dir: &Path) -> Vec<Contact> {
    let (engine, _) = recovery::recover(dir, recovery::Mode::ReadOnly).expect("recovers");
    let (rows, next) = engine.contacts_page(0, 100_000);
    assert_eq!(next, None);
    rows
}

/// The row errors of a refused import (panics if it was not refused for its rows).
fn row_errors(result: Result<ImportReport, ImportError>) -> (Vec<RowError>, String) {
    match result {
        Err(error @ ImportError::Invalid(_)) => {
            let text = error.to_string();
            let ImportError::Invalid(rows) = error else {
                unreachable!()
            };
            (rows, text)
        }
        other => panic!("expected invalid rows, got {other:?}"),
    }
}

/// A data dir already holding `rows` (imported), and the temp dir that keeps it alive.
fn dir_with(rows: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = fixture(tmp.path(), "seed.csv", rows);
    import_into(&data, &file, false).expect("seed imports");
    (tmp, data)
}

fn hillvalley() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/hillvalley.csv")
}

// ---------------------------------------------------------------------------------------------
// GET /contacts/{id}
// ---------------------------------------------------------------------------------------------

#[test]
fn a_contact_row_has_every_field_of_the_contact_table_with_spec_spellings() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": " Doc@HillValley.edu ", "phoneNumber": 555}),
    );
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "666"}),
    );

    let primary = row(&app, 1);
    let keys: BTreeSet<&str> = primary
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(FIELDS),
        "exactly the table's fields: {primary}"
    );
    assert_eq!(primary["id"], json!(1));
    assert_eq!(primary["email"], json!("doc@hillvalley.edu"));
    assert_eq!(primary["phoneNumber"], json!("555"));
    assert_eq!(primary["linkedId"], Value::Null);
    assert_eq!(primary["linkPrecedence"], json!("primary"));
    assert_eq!(primary["deletedAt"], Value::Null);
    assert_rfc3339_ms(&primary["createdAt"]);
    assert_rfc3339_ms(&primary["updatedAt"]);
    assert_eq!(primary["createdAt"], primary["updatedAt"]);
    let age = Timestamp::now().0 - millis(&primary["createdAt"]);
    assert!(
        (0..600_000).contains(&age),
        "createdAt is now, not {age} ms away"
    );

    let secondary = row(&app, 2);
    assert_eq!(secondary["linkedId"], json!(1));
    assert_eq!(secondary["linkPrecedence"], json!("secondary"));
    assert_eq!(secondary["phoneNumber"], json!("666"));
    assert!(millis(&secondary["createdAt"]) >= millis(&primary["createdAt"]));
}

#[test]
fn an_unknown_or_non_numeric_contact_id_is_a_json_404() {
    let app = spawn_app();
    identify(&app, json!({"email": "doc@hillvalley.edu"}));
    for path in [
        "/contacts/2",
        "/contacts/0",
        "/contacts/99999999999",
        "/contacts/abc",
        "/contacts/-1",
        "/contacts/1.5",
        "/contacts/2/identity",
        "/contacts/abc/identity",
    ] {
        assert_error(&app.get(path), 404, "not_found");
    }
}

// ---------------------------------------------------------------------------------------------
// GET /contacts/{id}/identity
// ---------------------------------------------------------------------------------------------

#[test]
fn a_contacts_identity_is_the_identify_answer_of_its_cluster_and_changes_nothing() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "222"}),
    );
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    );
    identify(
        &app,
        json!({"email": "biff@hillvalley.edu", "phoneNumber": "222"}),
    );
    identify(&app, json!({"email": "lorraine@hillvalley.edu"}));
    let rows_before = all_rows(&app, 1000);

    let by_identify = identify(&app, json!({"phoneNumber": "111"}));
    for id in [1, 2, 3] {
        assert_eq!(identity(&app, id), by_identify, "contact {id}");
    }
    assert_eq!(by_identify["contact"]["primaryContactId"], json!(1));
    assert_eq!(by_identify["contact"]["secondaryContactIds"], json!([2, 3]));
    assert_eq!(
        identity(&app, 4),
        identify(&app, json!({"email": "lorraine@hillvalley.edu"}))
    );

    assert_eq!(all_rows(&app, 1000), rows_before, "reads changed rows");
    assert_error(&app.get("/contacts/5/identity"), 404, "not_found");
}

#[test]
fn a_deleted_contact_has_a_row_but_no_identity() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    );
    ok(app.delete("/contacts/2"));

    assert_error(&app.get("/contacts/2/identity"), 404, "not_found");
    assert!(!row(&app, 2)["deletedAt"].is_null());
    let survivor = identity(&app, 1);
    assert_eq!(survivor["contact"]["secondaryContactIds"], json!([]));
    assert_eq!(survivor["contact"]["phoneNumbers"], json!(["111"]));
}

// ---------------------------------------------------------------------------------------------
// GET /contacts?email=&phoneNumber=
// ---------------------------------------------------------------------------------------------

#[test]
fn looking_up_by_identifier_finds_the_live_rows_holding_either() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    ); // 1
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    ); // 2
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "333"}),
    ); // 3
    identify(
        &app,
        json!({"email": "einstein@hillvalley.edu", "phoneNumber": "222"}),
    ); // 4

    assert_eq!(lookup(&app, "email=doc@hillvalley.edu"), [1, 2]);
    assert_eq!(lookup(&app, "email=%20DOC@HillValley.EDU%20"), [1, 2]);
    assert_eq!(lookup(&app, "phoneNumber=222"), [2, 4]);
    assert_eq!(lookup(&app, "phoneNumber=%20%20222%20"), [2, 4]);
    assert_eq!(
        lookup(&app, "email=doc@hillvalley.edu&phoneNumber=333"),
        [1, 2, 3]
    );
    assert_eq!(
        lookup(&app, "email=nobody@hillvalley.edu"),
        Vec::<u64>::new()
    );
    let answer = ok(app.get("/contacts?phoneNumber=333"));
    assert_eq!(answer["contacts"][0], row(&app, 3), "full rows");

    ok(app.delete("/contacts/2"));
    assert_eq!(lookup(&app, "email=doc@hillvalley.edu"), [1]);
    assert_eq!(lookup(&app, "phoneNumber=222"), [4]);
    ok(app.delete("/contacts/1"));
    assert_eq!(lookup(&app, "email=doc@hillvalley.edu"), Vec::<u64>::new());
    assert_eq!(lookup(&app, "phoneNumber=222"), [4]);
}

#[test]
fn looking_up_after_deleting_the_first_holder_finds_the_next_one() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    ); // 1
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    ); // 2
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "111"}),
    ); // 3
    ok(app.delete("/contacts/1"));
    assert_eq!(lookup(&app, "email=doc@hillvalley.edu"), [2]);
    assert_eq!(lookup(&app, "phoneNumber=111"), [3]);
    assert_eq!(
        identity(&app, 2)["contact"]["secondaryContactIds"],
        json!([])
    );
    assert_eq!(identity(&app, 3)["contact"]["primaryContactId"], json!(3));
}

#[test]
fn looking_up_a_malformed_identifier_or_none_is_a_400() {
    let app = spawn_app();
    identify(&app, json!({"email": "doc@hillvalley.edu"}));
    assert_error(
        &app.get("/contacts?email=not-an-email"),
        400,
        "invalid_email",
    );
    assert_error(&app.get("/contacts?email=a@b@c"), 400, "invalid_email");
    assert_error(
        &app.get("/contacts?phoneNumber=abc"),
        400,
        "invalid_phone_number",
    );
    assert_eq!(app.get("/contacts?email=").status, 400);
    assert_error(&app.get("/contacts?color=blue"), 400, "invalid_query");
    assert_eq!(
        app.get("/contacts?email=doc@hillvalley.edu&limit=5").status,
        400
    );
}

// ---------------------------------------------------------------------------------------------
// GET /contacts?after=&limit=
// ---------------------------------------------------------------------------------------------

#[test]
fn pages_list_every_row_in_id_order_including_deleted_ones() {
    let app = spawn_app();
    for n in 1..=120 {
        let email = format!("customer{n}@hillvalley.edu");
        identify(
            &app,
            json!({"email": email, "phoneNumber": format!("{}", n % 40)}),
        );
    }
    ok(app.delete("/contacts/7"));
    ok(app.delete("/contacts/101"));

    let first = ok(app.get("/contacts"));
    let first_rows = first["contacts"].as_array().unwrap();
    assert_eq!(
        ids(first_rows),
        (1..=100).collect::<Vec<_>>(),
        "default limit is 100"
    );
    assert_eq!(first["next"], json!(100));
    assert!(
        !first_rows[6]["deletedAt"].is_null(),
        "deleted rows are listed"
    );
    assert_eq!(first_rows[6], row(&app, 7));

    let rest = ok(app.get("/contacts?after=100"));
    assert_eq!(
        ids(rest["contacts"].as_array().unwrap()),
        (101..=120).collect::<Vec<_>>()
    );
    assert_eq!(rest["next"], Value::Null);

    for limit in [1, 7, 40, 120, 1000] {
        let rows = all_rows(&app, limit);
        assert_eq!(ids(&rows), (1..=120).collect::<Vec<_>>(), "limit {limit}");
        assert_eq!(rows, all_rows(&app, 1000));
    }
    let last_full_page = ok(app.get("/contacts?after=80&limit=40"));
    assert_eq!(last_full_page["contacts"].as_array().unwrap().len(), 40);
    assert_eq!(last_full_page["next"], Value::Null, "nothing follows");
    let past_the_end = ok(app.get("/contacts?after=120"));
    assert_eq!(past_the_end, json!({"contacts": [], "next": null}));
}

#[test]
fn a_page_limit_outside_1_to_1000_or_an_unknown_parameter_is_a_400() {
    let app = spawn_app();
    identify(&app, json!({"email": "doc@hillvalley.edu"}));
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "after=x",
        "after=-3",
        "page=2",
        "after=0&limit=5&sort=desc",
    ] {
        assert_error(
            &app.get(&format!("/contacts?{query}")),
            400,
            "invalid_query",
        );
    }
    assert_eq!(
        ok(app.get("/contacts?limit=1000"))["contacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(app.get("/contacts?limit=1"))["next"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// DELETE /contacts/{id}
// ---------------------------------------------------------------------------------------------

/// 1 (doc, 111); 2 (doc, 333) secondary of 1; 3 (biff, 333) secondary of 1 through 2: contact 2
/// is the only evidence that 3 belongs with 1.
fn cluster_with_a_bridge() -> TestApp {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "333"}),
    );
    let whole = identify(
        &app,
        json!({"email": "biff@hillvalley.edu", "phoneNumber": "333"}),
    );
    assert_eq!(whole["contact"]["secondaryContactIds"], json!([2, 3]));
    app
}

#[test]
fn deleting_a_contact_keeps_its_row_with_deleted_at_and_its_last_link() {
    let app = cluster_with_a_bridge();
    let before = row(&app, 3);
    wait_for_clock_past(&before["updatedAt"]);

    let answer = ok(app.delete("/contacts/3"));

    let deleted = &answer["deleted"];
    assert_eq!(deleted, &row(&app, 3), "the answer holds the stored row");
    assert_rfc3339_ms(&deleted["deletedAt"]);
    assert!(millis(&deleted["deletedAt"]) > millis(&before["updatedAt"]));
    for kept in [
        "id",
        "email",
        "phoneNumber",
        "linkedId",
        "linkPrecedence",
        "createdAt",
    ] {
        assert_eq!(deleted[kept], before[kept], "{kept}");
    }
    assert_eq!(deleted["linkedId"], json!(1));
    assert_eq!(deleted["linkPrecedence"], json!("secondary"));
    assert_eq!(
        answer["identities"],
        json!([{
            "primaryContactId": 1,
            "emails": ["doc@hillvalley.edu"],
            "phoneNumbers": ["111", "333"],
            "secondaryContactIds": [2],
        }]),
        "deleting a leaf leaves the cluster whole"
    );
    assert_eq!(
        identify(&app, json!({"phoneNumber": "333"})),
        json!({"contact": answer["identities"][0]})
    );
    assert_eq!(lookup(&app, "email=biff@hillvalley.edu"), Vec::<u64>::new());
}

#[test]
fn deleting_the_bridge_contact_splits_the_cluster_and_the_oldest_of_each_group_is_primary() {
    let app = cluster_with_a_bridge();
    let (one, three) = (row(&app, 1), row(&app, 3));
    wait_for_clock_past(&three["updatedAt"]);

    let answer = ok(app.delete("/contacts/2"));

    let mut groups = answer["identities"].as_array().expect("identities").clone();
    groups.sort_by_key(|g| g["primaryContactId"].as_u64());
    assert_eq!(
        groups,
        [
            json!({"primaryContactId": 1, "emails": ["doc@hillvalley.edu"],
                   "phoneNumbers": ["111"], "secondaryContactIds": []}),
            json!({"primaryContactId": 3, "emails": ["biff@hillvalley.edu"],
                   "phoneNumbers": ["333"], "secondaryContactIds": []}),
        ]
    );
    assert_eq!(
        answer["deleted"]["linkedId"],
        json!(1),
        "the deleted row keeps its link"
    );
    let promoted = row(&app, 3);
    assert_eq!(promoted["linkedId"], Value::Null);
    assert_eq!(promoted["linkPrecedence"], json!("primary"));
    assert!(
        millis(&promoted["updatedAt"]) > millis(&three["updatedAt"]),
        "new updatedAt"
    );
    assert_eq!(row(&app, 1), one, "an unchanged link keeps its updatedAt");
    assert_eq!(identity(&app, 3), json!({"contact": groups[1]}));
    assert_eq!(
        identify(&app, json!({"phoneNumber": "333"})),
        json!({"contact": groups[1]})
    );
}

#[test]
fn deleting_an_unrelated_contact_leaves_the_cluster_whole() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    ); // 1
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    ); // 2
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "111"}),
    ); // 3
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "444"}),
    ); // 4
    let rows_before = all_rows(&app, 1000);

    let answer = ok(app.delete("/contacts/4"));

    assert_eq!(answer["identities"].as_array().unwrap().len(), 1);
    assert_eq!(answer["identities"][0]["primaryContactId"], json!(1));
    assert_eq!(
        answer["identities"][0]["secondaryContactIds"],
        json!([2, 3])
    );
    let rows_after = all_rows(&app, 1000);
    assert_eq!(rows_after[..3], rows_before[..3], "no other row changed");
}

#[test]
fn a_join_made_by_a_request_that_added_no_row_survives_deleting_an_unrelated_member() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    ); // 1
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "222"}),
    ); // 2
    let joined = identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    );
    assert_eq!(
        joined["contact"]["secondaryContactIds"],
        json!([2]),
        "a join, no row"
    );
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "333"}),
    ); // 3
    assert_eq!(all_rows(&app, 1000).len(), 3);

    let answer = ok(app.delete("/contacts/3"));

    assert_eq!(
        answer["identities"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    assert_eq!(identity(&app, 2), identity(&app, 1));
    assert_eq!(
        identity(&app, 1)["contact"]["secondaryContactIds"],
        json!([2])
    );
    assert_eq!(row(&app, 2)["linkedId"], json!(1));
    let app = app.restart(|_| {});
    assert_eq!(identity(&app, 2)["contact"]["primaryContactId"], json!(1));
}

#[test]
fn deleting_a_row_that_held_a_joined_identifier_undoes_the_join() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    ); // 1
    identify(
        &app,
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "222"}),
    ); // 2
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
    ); // join
    identify(
        &app,
        json!({"email": "biff@hillvalley.edu", "phoneNumber": "111"}),
    ); // 3

    let answer = ok(app.delete("/contacts/1"));

    let mut primaries: Vec<u64> = answer["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["primaryContactId"].as_u64().unwrap())
        .collect();
    primaries.sort_unstable();
    assert_eq!(
        primaries,
        [2, 3],
        "no live row holds doc@ any more: {answer}"
    );
    assert_eq!(row(&app, 3)["linkPrecedence"], json!("primary"));
}

#[test]
fn deleting_twice_or_an_unknown_contact_is_a_404() {
    let app = spawn_app();
    identify(&app, json!({"email": "doc@hillvalley.edu"}));
    ok(app.delete("/contacts/1"));
    let deleted = row(&app, 1);
    assert_error(&app.delete("/contacts/1"), 404, "not_found");
    assert_eq!(row(&app, 1), deleted, "the second delete changed nothing");
    assert_error(&app.delete("/contacts/2"), 404, "not_found");
    assert_error(&app.delete("/contacts/abc"), 404, "not_found");
}

#[test]
fn a_deleted_contact_takes_no_part_in_matching_and_its_id_is_not_reused() {
    let app = spawn_app();
    identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    ok(app.delete("/contacts/1"));
    let fresh = identify(
        &app,
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
    );
    assert_eq!(fresh["contact"]["primaryContactId"], json!(2));
    assert_eq!(fresh["contact"]["secondaryContactIds"], json!([]));
}

#[test]
fn a_deletion_and_the_split_it_caused_survive_a_restart() {
    let app = cluster_with_a_bridge();
    ok(app.delete("/contacts/2"));
    let rows = all_rows(&app, 1000);
    let split = identity(&app, 3);

    let app = app.restart(|_| {});

    assert_eq!(all_rows(&app, 1000), rows);
    assert_error(&app.get("/contacts/2/identity"), 404, "not_found");
    assert_error(&app.delete("/contacts/2"), 404, "not_found");
    assert_eq!(identity(&app, 3), split);
    let next = identify(&app, json!({"email": "clara@hillvalley.edu"}));
    assert_eq!(next["contact"]["primaryContactId"], json!(4));
}

// ---------------------------------------------------------------------------------------------
// Export then import
// ---------------------------------------------------------------------------------------------

/// Merges, secondaries, a join, awkward CSV values and a delete that splits a cluster.
fn make_traffic(app: &TestApp) {
    let requests = [
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "111"}),
        json!({"email": "marty@hillvalley.edu", "phoneNumber": "222"}),
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "222"}),
        json!({"email": "doc@hillvalley.edu", "phoneNumber": "333"}),
        json!({"email": "biff@hillvalley.edu", "phoneNumber": "444"}),
        json!({"email": "biff@hillvalley.edu", "phoneNumber": "555"}),
        json!({"email": "george@hillvalley.edu", "phoneNumber": "555"}),
        json!({"email": "lorraine@hillvalley.edu"}),
        json!({"phoneNumber": 999}),
        json!({"email": "o'brien,jr@hillvalley.edu", "phoneNumber": "+1 (555) 010-9999"}),
        json!({"email": "say\"cheese\"@hillvalley.edu", "phoneNumber": "999"}),
        json!({"email": "  JENNIFER@HillValley.edu ", "phoneNumber": "  888  "}),
    ];
    for body in requests {
        identify(app, body);
    }
    ok(app.delete("/contacts/5"));
}

/// Every row and every live contact's identity.
fn state_of(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    let rows = all_rows(app, 1000);
    let identities = live_ids(&rows)
        .into_iter()
        .map(|id| identity(app, id))
        .collect();
    (rows, identities)
}

#[test]
fn exporting_then_importing_into_an_empty_dir_gives_the_same_rows_and_answers() {
    let mut app = spawn_app();
    make_traffic(&app);
    let original = state_of(&app);
    assert_eq!(original.0.len(), 11);
    assert!(original.0.iter().any(|r| !r["deletedAt"].is_null()));
    let csv = app.get("/contacts/export?format=csv");
    let ndjson = app.get("/contacts/export?format=ndjson");
    app.stop().expect("clean stop");

    assert_eq!(csv.status, 200, "{}", csv.text);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(csv.text.lines().next(), Some(EXPORTED));
    assert_eq!(csv.text.lines().count(), 12, "{}", csv.text);
    assert_eq!(ndjson.status, 200, "{}", ndjson.text);
    let parsed: Vec<Value> = ndjson
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, original.0, "NDJSON lines are the rows");

    let tmp = tempfile::tempdir().expect("temp dir");
    for (name, text) in [("export.csv", &csv.text), ("export.ndjson", &ndjson.text)] {
        let file = tmp.path().join(name);
        std::fs::write(&file, text).unwrap();
        let data = tmp.path().join(format!("data-{name}"));
        let report = import_into(&data, &file, false).expect("the export imports");
        assert_eq!(report.imported, 11, "{name}");
        assert_eq!(report.deleted, 1, "{name}");
        assert_eq!(report.corrected, 0, "{name}: {report}");
        assert!(report.skipped.is_empty());

        let imported = spawn_app_in(&data, |_| {}).expect("starts on the imported dir");
        assert_eq!(state_of(&imported), original, "{name}");
        let next = identify(&imported, json!({"email": "clara@hillvalley.edu"}));
        assert_eq!(next["contact"]["primaryContactId"], json!(12), "{name}");
    }
}

#[test]
fn the_cli_exports_a_stopped_dir_and_imports_it_into_another() {
    let mut app = spawn_app();
    make_traffic(&app);
    let original = state_of(&app);
    let over_http = app.get("/contacts/export?format=csv");
    app.stop().expect("clean stop");
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("contacts.csv");
    let copy = tmp.path().join("copy");
    let cli = env!("CARGO_BIN_EXE_identity-engine");

    let export = Command::new(cli)
        .args(["export", "--data-dir"])
        .arg(&app.dir)
        .args(["--format", "csv", "--output"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), over_http.text);

    let import = Command::new(cli)
        .args(["import", "--data-dir"])
        .arg(&copy)
        .arg(&file)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&import.stdout);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(stdout.contains("imported 11 row(s)"), "{stdout}");

    let imported = spawn_app_in(&copy, |_| {}).expect("starts on the imported dir");
    assert_eq!(state_of(&imported), original);
}

#[test]
fn the_cli_refuses_a_bad_file_with_the_line_and_a_failing_status() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = fixture(
        tmp.path(),
        "bad.csv",
        &[
            "1,111,doc@hillvalley.edu,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,",
            "2,222,not-an-email,,primary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,",
        ],
    );
    let data = tmp.path().join("data");
    let import = Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args(["import", "--data-dir"])
        .arg(&data)
        .arg(&file)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(!import.status.success());
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(rows_in_dir(&data).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The worked examples
// ---------------------------------------------------------------------------------------------

#[test]
fn hillvalley_csv_imports_and_answers_the_worked_examples_of_spec() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let report = import_into(&data, &hillvalley(), false).expect("hillvalley.csv imports");
    assert_eq!(
        (report.imported, report.deleted, report.corrected),
        (4, 0, 0)
    );
    let app = spawn_app_in(&data, |_| {}).expect("starts");
    let biff_before = row(&app, 27);

    let lorraine = json!({"contact": {
        "primaryContactId": 1,
        "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
        "phoneNumbers": ["123456"],
        "secondaryContactIds": [23],
    }});
    for body in [
        json!({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"email": null, "phoneNumber": "123456"}),
        json!({"email": "lorraine@hillvalley.edu", "phoneNumber": null}),
        json!({"email": "mcfly@hillvalley.edu"}),
    ] {
        assert_eq!(identify(&app, body.clone()), lorraine, "{body}");
    }

    let george = identify(
        &app,
        json!({"email": "george@hillvalley.edu", "phoneNumber": "717171"}),
    );
    assert_eq!(
        george,
        json!({"contact": {
            "primaryContactId": 11,
            "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
            "phoneNumbers": ["919191", "717171"],
            "secondaryContactIds": [27],
        }})
    );
    let biff = row(&app, 27);
    assert_eq!(
        (&biff["linkedId"], &biff["linkPrecedence"]),
        (&json!(11), &json!("secondary"))
    );
    assert!(millis(&biff["updatedAt"]) > millis(&biff_before["updatedAt"]));
    assert_eq!(biff["createdAt"], json!("2023-04-21T05:30:00.110Z"));
    assert_eq!(
        all_rows(&app, 1000).len(),
        4,
        "the examples created nothing"
    );

    let fresh = identify(
        &app,
        json!({"email": "newunknown@hillvalley.edu", "phoneNumber": "789012"}),
    );
    assert_eq!(
        fresh,
        json!({"contact": {
            "primaryContactId": 28,
            "emails": ["newunknown@hillvalley.edu"],
            "phoneNumbers": ["789012"],
            "secondaryContactIds": [],
        }})
    );
}

// ---------------------------------------------------------------------------------------------
// Import of invalid files
// ---------------------------------------------------------------------------------------------

const GOOD_1: &str =
    "1,111,doc@hillvalley.edu,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,";
const GOOD_2: &str =
    "2,222,marty@hillvalley.edu,,primary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,";
const GOOD_3: &str =
    "3,333,biff@hillvalley.edu,,primary,2023-04-03T00:00:00.000Z,2023-04-03T00:00:00.000Z,";

/// Imports `rows` into a fresh dir and returns the refusal's row errors and message; asserts
/// that nothing was imported.
fn refused(rows: &[&str]) -> (Vec<RowError>, String) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = fixture(tmp.path(), "bad.csv", rows);
    let refusal = row_errors(import_into(&data, &file, false));
    assert!(rows_in_dir(&data).is_empty(), "something was imported");
    refusal
}

fn assert_refused_at(rows: &[&str], line: u64, words: &str) {
    let (errors, text) = refused(rows);
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0].line, line, "{text}");
    assert!(errors[0].message.contains(words), "{text}");
    assert!(text.contains(&format!("line {line}")), "{text}");
    assert!(text.contains("nothing was imported"), "{text}");
}

#[test]
fn a_file_with_the_wrong_columns_is_refused_at_line_1() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = tmp.path().join("wrong.csv");
    std::fs::write(
        &file,
        format!("id,phone,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n{GOOD_1}\n"),
    )
    .unwrap();
    let (errors, text) = row_errors(import_into(&data, &file, false));
    assert_eq!(errors[0].line, 1, "{text}");
    assert!(
        text.contains("phoneNumber"),
        "names the expected columns: {text}"
    );
    assert!(rows_in_dir(&data).is_empty());
}

#[test]
fn a_bad_email_is_refused_with_its_line_and_nothing_is_imported() {
    let bad =
        "2,222,marty at hillvalley,,primary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,";
    assert_refused_at(&[GOOD_1, bad, GOOD_3], 3, "email");
}

#[test]
fn a_duplicate_id_is_refused_with_its_line_and_nothing_is_imported() {
    let again =
        "1,444,clara@hillvalley.edu,,primary,2023-04-04T00:00:00.000Z,2023-04-04T00:00:00.000Z,";
    assert_refused_at(&[GOOD_1, GOOD_2, again], 4, "id 1");
}

#[test]
fn an_unknown_link_precedence_is_refused_with_its_line_and_nothing_is_imported() {
    let tertiary =
        "2,222,marty@hillvalley.edu,1,tertiary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,";
    assert_refused_at(&[GOOD_1, tertiary, GOOD_3], 3, "linkPrecedence");
}

#[test]
fn broken_csv_quoting_is_refused_with_its_line_and_nothing_is_imported() {
    let unterminated =
        "2,\"222,marty@hillvalley.edu,,primary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,";
    let (errors, text) = refused(&[GOOD_1, unterminated, GOOD_3]);
    assert_eq!(errors[0].line, 3, "{text}");
    assert!(text.contains("line 3"), "{text}");
}

#[test]
fn an_ndjson_row_with_a_bad_email_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = tmp.path().join("bad.ndjson");
    let good = r#"{"id":1,"phoneNumber":"111","email":"doc@hillvalley.edu","linkedId":null,"linkPrecedence":"primary","createdAt":"2023-04-01T00:00:00.000Z","updatedAt":"2023-04-01T00:00:00.000Z","deletedAt":null}"#;
    let bad = good
        .replace("\"id\":1", "\"id\":2")
        .replace("doc@", "doc@@");
    std::fs::write(&file, format!("{good}\n{bad}\n")).unwrap();
    let (errors, text) = row_errors(import_into(&data, &file, false));
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0].line, 2, "{text}");
    assert!(rows_in_dir(&data).is_empty());
}

#[test]
fn an_id_that_already_exists_in_the_data_dir_is_refused_and_the_dir_is_unchanged() {
    let (tmp, data) = dir_with(&[GOOD_1, GOOD_2]);
    let before = rows_in_dir(&data);
    let file = fixture(tmp.path(), "more.csv", &[GOOD_3, GOOD_2]);

    let (errors, text) = row_errors(import_into(&data, &file, false));

    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0].line, 3, "{text}");
    assert!(errors[0].message.contains("already exists"), "{text}");
    assert_eq!(rows_in_dir(&data), before);
}

#[test]
fn skipping_invalid_rows_imports_the_valid_ones_and_reports_the_bad_ones() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let bad_email =
        "4,444,clara at hillvalley,,primary,2023-04-04T00:00:00.000Z,2023-04-04T00:00:00.000Z,";
    let bad_precedence =
        "5,555,jennifer@hillvalley.edu,,boss,2023-04-05T00:00:00.000Z,2023-04-05T00:00:00.000Z,";
    let file = fixture(
        tmp.path(),
        "mixed.csv",
        &[GOOD_1, bad_email, GOOD_2, bad_precedence, GOOD_3],
    );

    let report = import_into(&data, &file, true).expect("imports the valid rows");

    assert_eq!(report.imported, 3);
    let lines: Vec<u64> = report.skipped.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 5]);
    assert!(report.to_string().contains("line 5"), "{report}");
    let ids: Vec<u32> = rows_in_dir(&data).iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// Import evidence
// ---------------------------------------------------------------------------------------------

#[test]
fn a_secondarys_linked_id_keeps_rows_without_a_shared_identifier_in_one_cluster() {
    let (_tmp, data) = dir_with(&[
        "1,,doc@hillvalley.edu,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,",
        "2,,emmett@hillvalley.edu,1,secondary,2023-04-02T00:00:00.000Z,2023-04-02T00:00:00.000Z,",
    ]);
    let app = spawn_app_in(&data, |_| {}).expect("starts");

    let expected = json!({"contact": {
        "primaryContactId": 1,
        "emails": ["doc@hillvalley.edu", "emmett@hillvalley.edu"],
        "phoneNumbers": [],
        "secondaryContactIds": [2],
    }});
    assert_eq!(identity(&app, 2), expected);
    assert_eq!(
        identify(&app, json!({"email": "emmett@hillvalley.edu"})),
        expected
    );
    assert_eq!(row(&app, 2)["updatedAt"], json!("2023-04-02T00:00:00.000Z"));
    let app = app.restart(|_| {});
    assert_eq!(identity(&app, 1), expected, "the link survives a restart");
}

#[test]
fn a_younger_row_marked_primary_is_corrected_to_a_secondary_of_the_oldest() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = fixture(
        tmp.path(),
        "disagreeing.csv",
        &[
            "1,555,doc@hillvalley.edu,,primary,2023-04-10T00:00:00.000Z,2023-04-10T00:00:00.000Z,",
            "2,555,marty@hillvalley.edu,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,",
            "3,777,biff@hillvalley.edu,,primary,2023-04-05T00:00:00.000Z,2023-04-05T00:00:00.000Z,",
        ],
    );

    let report = import_into(&data, &file, false).expect("imports");

    assert_eq!(report.corrected, 1, "{report}");
    assert!(
        report.to_string().contains("1 row(s) had a linkedId"),
        "{report}"
    );
    let app = spawn_app_in(&data, |_| {}).expect("starts");
    let younger = row(&app, 1);
    assert_eq!(younger["linkedId"], json!(2));
    assert_eq!(younger["linkPrecedence"], json!("secondary"));
    assert!(millis(&younger["updatedAt"]) > millis(&json!("2023-04-10T00:00:00.000Z")));
    assert_eq!(row(&app, 2)["linkPrecedence"], json!("primary"));
    assert_eq!(row(&app, 2)["updatedAt"], json!("2023-04-01T00:00:00.000Z"));
    assert_eq!(identity(&app, 1)["contact"]["primaryContactId"], json!(2));
    assert_eq!(
        identity(&app, 3)["contact"]["secondaryContactIds"],
        json!([])
    );
}

#[test]
fn a_secondary_pointing_at_a_younger_primary_is_corrected_both_ways() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = fixture(
        tmp.path(),
        "inverted.csv",
        &[
            "1,555,doc@hillvalley.edu,,primary,2023-04-10T00:00:00.000Z,2023-04-10T00:00:00.000Z,",
            "2,555,marty@hillvalley.edu,1,secondary,2023-04-01T00:00:00.000Z,2023-04-10T00:00:00.000Z,",
        ],
    );

    let report = import_into(&data, &file, false).expect("imports");

    assert_eq!(report.corrected, 2, "{report}");
    let app = spawn_app_in(&data, |_| {}).expect("starts");
    assert_eq!(row(&app, 2)["linkPrecedence"], json!("primary"));
    assert_eq!(row(&app, 2)["linkedId"], Value::Null);
    assert_eq!(row(&app, 1)["linkedId"], json!(2));
}

// ---------------------------------------------------------------------------------------------
// Admin access
// ---------------------------------------------------------------------------------------------

#[test]
fn with_an_admin_token_admin_endpoints_need_it_and_identify_does_not() {
    let app = spawn_app_with(|c| c.admin_token = Some("s3cret".into()));
    identify(&app, json!({"email": "doc@hillvalley.edu"}));
    let get = |auth: &[(&str, &str)]| request(app.addr, "GET", "/contacts/1", b"", auth);

    let missing = get(&[]);
    assert_error(&missing, 401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_error(
        &get(&[("Authorization", "Bearer wrong")]),
        401,
        "unauthorized",
    );
    assert_error(
        &get(&[("Authorization", "Bearer s3cret2")]),
        401,
        "unauthorized",
    );
    assert_error(&get(&[("Authorization", "s3cret")]), 401, "unauthorized");
    assert_error(
        &get(&[("Authorization", "Basic s3cret")]),
        401,
        "unauthorized",
    );

    let right = get(&[("Authorization", "Bearer s3cret")]);
    assert_eq!(ok(right)["id"], json!(1));
    for (method, path) in [
        ("GET", "/contacts"),
        ("GET", "/contacts?email=doc@hillvalley.edu"),
        ("GET", "/contacts/1/identity"),
        ("GET", "/contacts/export"),
        ("DELETE", "/contacts/1"),
    ] {
        let refused = request(app.addr, method, path, b"", &[]);
        assert_error(&refused, 401, "unauthorized");
    }
    let delete = request(
        app.addr,
        "DELETE",
        "/contacts/1",
        b"",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(delete.status, 200, "{}", delete.text);
}

async fn call(
    router: axum::Router,
    method: &str,
    path: &str,
    peer: Option<&str>,
    auth: Option<&str>,
) -> (u16, Value) {
    use tower::ServiceExt;
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    let mut request = builder
        .body(axum::body::Body::from(if method == "POST" {
            r#"{"email":"doc@hillvalley.edu"}"#
        } else {
            ""
        }))
        .unwrap();
    if let Some(peer) = peer {
        let addr: SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn in_process_router(dir: &Path, token: Option<&str>) -> axum::Router {
    use identity_engine::http::{router, AppState};
    let (store, _) = identity_engine::store::Store::open(StorageOptions::new(dir)).expect("opens");
    let mut state = AppState::new(store);
    state.auth = std::sync::Arc::new(
        identity_engine::http::auth::Auth::new(token, None, false).expect("a valid token"),
    );
    router(state)
}

#[tokio::test]
async fn without_a_token_admin_endpoints_serve_loopback_clients_only() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let app = in_process_router(tmp.path(), None);
    let outsider = Some("203.0.113.7:4242");

    let (status, _) = call(app.clone(), "POST", "/identify", outsider, None).await;
    assert_eq!(status, 200, "/identify is for everyone");
    for (method, path) in [
        ("GET", "/contacts/1"),
        ("GET", "/contacts/1/identity"),
        ("GET", "/contacts"),
        ("GET", "/contacts/export"),
        ("DELETE", "/contacts/1"),
    ] {
        let (status, body) = call(app.clone(), method, path, outsider, None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], json!("forbidden"));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("--admin-token"), "explains: {message}");
    }
    let (status, _) = call(
        app.clone(),
        "GET",
        "/contacts/1",
        Some("[2001:db8::1]:80"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(app.clone(), "GET", "/contacts/1", None, None).await;
    assert_eq!(status, 403, "an unknown peer is not loopback");

    for local in ["127.0.0.1:5000", "[::1]:5000"] {
        let (status, body) = call(app.clone(), "GET", "/contacts/1", Some(local), None).await;
        assert_eq!(status, 200, "{local}: {body}");
        assert_eq!(body["email"], json!("doc@hillvalley.edu"));
    }
    let (status, _) = call(app, "DELETE", "/contacts/1", Some("127.0.0.1:5000"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_a_token_a_remote_client_holding_it_is_served() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let app = in_process_router(tmp.path(), Some("s3cret"));
    let outsider = Some("203.0.113.7:4242");
    call(app.clone(), "POST", "/identify", outsider, None).await;

    let (status, body) = call(app.clone(), "GET", "/contacts/1", outsider, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, _) = call(app.clone(), "GET", "/contacts/1", Some("127.0.0.1:1"), None).await;
    assert_eq!(status, 401, "a token is needed from loopback too");
    let (status, body) = call(app, "GET", "/contacts/1", outsider, Some("Bearer s3cret")).await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Ids, pages and exports of imported tables
// ---------------------------------------------------------------------------------------------

#[test]
fn pages_over_sparse_imported_ids_skip_the_gaps_and_new_ids_follow_the_highest() {
    let rows: Vec<String> = [1u32, 2, 5000, 70000, 70001]
        .iter()
        .zip(1..)
        .map(|(id, day)| {
            april_row(
                *id,
                &format!("{day}00"),
                &format!("c{id}@x.com"),
                "",
                "primary",
                day,
            )
        })
        .collect();
    let (_tmp, data) = dir_with(&rows.iter().map(String::as_str).collect::<Vec<_>>());
    let app = spawn_app_in(&data, |_| {}).expect("starts");

    for limit in [1, 2, 3, 100] {
        assert_eq!(
            ids(&all_rows(&app, limit)),
            [1, 2, 5000, 70000, 70001],
            "limit {limit}"
        );
    }
    let page = ok(app.get("/contacts?after=2&limit=2"));
    assert_eq!(ids(page["contacts"].as_array().unwrap()), [5000, 70000]);
    assert_eq!(page["next"], json!(70000));
    let next = identify(&app, json!({"email": "new@x.com"}));
    assert_eq!(next["contact"]["primaryContactId"], json!(70002));
}

#[test]
fn a_new_contact_after_an_import_follows_the_highest_id_even_a_deleted_one() {
    let (_tmp, data) = dir_with(&[
        &april_row(1, "111", "a@x.com", "", "primary", 1),
        &deleted(&april_row(27, "111", "z@x.com", "1", "secondary", 2)),
    ]);
    let app = spawn_app_in(&data, |_| {}).expect("starts");

    assert_eq!(
        lookup(&app, "email=z@x.com"),
        Vec::<u64>::new(),
        "deleted rows do not match"
    );
    assert_eq!(
        identity(&app, 1)["contact"]["secondaryContactIds"],
        json!([])
    );
    assert_error(&app.get("/contacts/27/identity"), 404, "not_found");
    let next = identify(&app, json!({"email": "n@x.com"}));
    assert_eq!(next["contact"]["primaryContactId"], json!(28));
}

#[test]
fn an_older_imported_row_sharing_an_identifier_becomes_primary_over_existing_rows() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    {
        let app = spawn_app_in(&data, |_| {}).expect("starts");
        identify(
            &app,
            json!({"email": "doc@hillvalley.edu", "phoneNumber": "555"}),
        );
    }
    let older = "40,555,old@x.com,,primary,2020-01-01T00:00:00.000Z,2020-01-01T00:00:00.000Z,";
    let file = fixture(tmp.path(), "older.csv", &[older]);

    let report = import_into(&data, &file, false).expect("imports");

    assert_eq!(
        (report.imported, report.corrected, report.existing_relinked),
        (1, 0, 1),
        "{report}"
    );
    let app = spawn_app_in(&data, |_| {}).expect("starts");
    let existing = row(&app, 1);
    assert_eq!(
        (&existing["linkedId"], &existing["linkPrecedence"]),
        (&json!(40), &json!("secondary"))
    );
    assert_ne!(
        existing["updatedAt"], existing["createdAt"],
        "its link changed"
    );
    assert_eq!(identity(&app, 1)["contact"]["primaryContactId"], json!(40));
    let next = identify(&app, json!({"email": "q@x.com"}));
    assert_eq!(next["contact"]["primaryContactId"], json!(41));
}

#[test]
fn the_export_stream_holds_every_row_across_many_pages() {
    let rows: Vec<String> = (1..=2500u32)
        .map(|id| {
            let row = april_row(
                id,
                &format!("{}", id % 700),
                &format!("c{id}@x.com"),
                "",
                "primary",
                1 + id % 28,
            );
            if id % 10 == 0 {
                deleted(&row)
            } else {
                row
            }
        })
        .collect();
    let (_tmp, data) = dir_with(&rows.iter().map(String::as_str).collect::<Vec<_>>());
    let app = spawn_app_in(&data, |_| {}).expect("starts");
    let every_row = all_rows(&app, 1000);

    let ndjson = app.get("/contacts/export?format=ndjson");
    let parsed: Vec<Value> = ndjson
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, every_row);
    let csv = app.get("/contacts/export");
    assert!(
        csv.header("content-type").unwrap().starts_with("text/csv"),
        "CSV by default"
    );
    assert_eq!(csv.text.lines().count(), 2501);
    assert_error(
        &app.get("/contacts/export?format=xml"),
        400,
        "invalid_query",
    );
}

#[test]
fn a_csv_with_a_byte_order_mark_and_crlf_lines_imports() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = tmp.path().join("excel.csv");
    std::fs::write(
        &file,
        format!("\u{feff}{HEADER}\r\n{GOOD_1}\r\n{GOOD_2}\r\n"),
    )
    .unwrap();
    let report = import_into(&data, &file, false).expect("imports");
    assert_eq!(report.imported, 2);
    assert_eq!(
        rows_in_dir(&data)[1].email.as_deref(),
        Some("marty@hillvalley.edu")
    );
}
