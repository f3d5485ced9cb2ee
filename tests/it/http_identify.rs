//! `POST /identify` over HTTP against the real server: docs/API.md's worked examples, every error row
//! that applies to it, the input forms it accepts, the `--compat-key-typo` option, bursts of
//! concurrent requests, and garbage that must never cause a 500.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use common::{request, spawn_app, spawn_app_with, Response, TestApp};
use serde_json::Value;

/// docs/API.md's default body limit.
const BODY_LIMIT: usize = 16 * 1024;

/// The `contact` of a 200 answer, in docs/API.md's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    primary: u64,
    emails: Vec<String>,
    phones: Vec<String>,
    secondaries: Vec<u64>,
}

fn answer(primary: u64, emails: &[&str], phones: &[&str], secondaries: &[u64]) -> Answer {
    Answer {
        primary,
        emails: emails.iter().map(|s| s.to_string()).collect(),
        phones: phones.iter().map(|s| s.to_string()).collect(),
        secondaries: secondaries.to_vec(),
    }
}

/// Reads a 200 answer, requiring exactly docs/API.md's keys (no typo key unless asked for).
fn answer_of(response: &Response) -> Answer {
    assert_eq!(response.status, 200, "{}", response.text);
    let json = response.json();
    assert_eq!(keys(&json), ["contact"], "{json}");
    let contact = &json["contact"];
    let expected = [
        "emails",
        "phoneNumbers",
        "primaryContactId",
        "secondaryContactIds",
    ];
    assert_eq!(keys(contact), expected, "{json}");
    let strings = |key: &str| -> Vec<String> {
        let list = contact[key].as_array().unwrap_or_else(|| panic!("{json}"));
        list.iter()
            .map(|v| v.as_str().unwrap_or_else(|| panic!("{json}")).to_owned())
            .collect()
    };
    let secondaries = contact["secondaryContactIds"].as_array().expect("a list");
    Answer {
        primary: contact["primaryContactId"].as_u64().expect("an id"),
        emails: strings("emails"),
        phones: strings("phoneNumbers"),
        secondaries: secondaries
            .iter()
            .map(|v| v.as_u64().expect("an id"))
            .collect(),
    }
}

fn keys(object: &Value) -> Vec<&str> {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"));
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn identify(app: &TestApp, body: &str) -> Answer {
    answer_of(&app.identify(body))
}

/// Asserts docs/API.md's error answer: `status`, JSON `{"error":{"code":..,"message":..}}`, `code`.
fn assert_error(response: &Response, status: u16, code: &str, case: &str) {
    assert_eq!(response.status, status, "{case}: {}", response.text);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{case}: {content_type}"
    );
    let json = response.json();
    assert_eq!(keys(&json), ["error"], "{case}: {json}");
    assert_eq!(keys(&json["error"]), ["code", "message"], "{case}: {json}");
    assert_eq!(json["error"]["code"], code, "{case}: {json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{case}: {json}");
}

fn assert_refused(app: &TestApp, bodies: &[&str], code: &str) {
    for body in bodies {
        assert_error(&app.identify(body), 400, code, body);
    }
}

/// Creates a contact nobody has seen and returns its id: the next id the service hands out.
fn next_id(app: &TestApp) -> u64 {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = identify(app, &format!(r#"{{"email":"probe-{n}@next-id.test"}}"#));
    assert!(probe.secondaries.is_empty(), "{probe:?}");
    probe.primary
}

/// Sends every body at once: one thread each, released together by a barrier.
fn burst(app: &TestApp, bodies: Vec<String>) -> Vec<Response> {
    let start = Arc::new(Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (addr, start) = (app.addr, Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                request(addr, "POST", "/identify", body.as_bytes(), &[])
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

/// `{"email": .., "pad": "xxx.."}` padded to exactly `len` bytes.
fn padded_body(len: usize) -> String {
    let head = r#"{"email":"pad@limit.test","pad":""#;
    let tail = r#""}"#;
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

// docs/API.md's worked examples, built by real requests in order.

#[test]
fn repeating_known_information_answers_the_whole_cluster_and_creates_nothing() {
    let app = spawn_app();
    identify(
        &app,
        r#"{"email":"lorraine@hillvalley.edu","phoneNumber":"123456"}"#,
    );
    let created = identify(
        &app,
        r#"{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}"#,
    );
    let cluster = answer(
        1,
        &["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
        &["123456"],
        &[2],
    );
    assert_eq!(created, cluster);

    for body in [
        r#"{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}"#,
        r#"{"email":null,"phoneNumber":"123456"}"#,
        r#"{"email":"lorraine@hillvalley.edu","phoneNumber":null}"#,
        r#"{"email":"mcfly@hillvalley.edu"}"#,
    ] {
        assert_eq!(identify(&app, body), cluster, "{body}");
    }

    let new = identify(
        &app,
        r#"{"email":"newunknown@hillvalley.edu","phoneNumber":"789012"}"#,
    );
    assert_eq!(
        new,
        answer(3, &["newunknown@hillvalley.edu"], &["789012"], &[])
    );
}

#[test]
fn a_request_joining_two_primaries_demotes_the_younger_one_and_creates_nothing() {
    let app = spawn_app();
    identify(
        &app,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#,
    );
    let biff = identify(
        &app,
        r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#,
    );
    assert_eq!(
        biff,
        answer(2, &["biffsucks@hillvalley.edu"], &["717171"], &[])
    );

    let merged = identify(
        &app,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#,
    );

    let cluster = answer(
        1,
        &["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
        &["919191", "717171"],
        &[2],
    );
    assert_eq!(merged, cluster);
    assert_eq!(
        identify(&app, r#"{"email":"biffsucks@hillvalley.edu"}"#),
        cluster
    );
    assert_eq!(next_id(&app), 3);
}

#[test]
fn naming_the_younger_primarys_email_with_the_older_ones_phone_also_keeps_the_older_one() {
    let app = spawn_app();
    identify(
        &app,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#,
    );
    identify(
        &app,
        r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#,
    );

    let merged = identify(
        &app,
        r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"919191"}"#,
    );

    let emails = ["george@hillvalley.edu", "biffsucks@hillvalley.edu"];
    assert_eq!(merged, answer(1, &emails, &["919191", "717171"], &[2]));
    assert_eq!(next_id(&app), 3);
}

#[test]
fn merging_relinks_the_younger_primarys_secondaries_to_the_older_primary() {
    let app = spawn_app();
    identify(&app, r#"{"email":"a@x.test","phoneNumber":"111"}"#);
    identify(&app, r#"{"email":"b@x.test","phoneNumber":"222"}"#);
    identify(&app, r#"{"email":"c@x.test","phoneNumber":"222"}"#);

    let merged = identify(&app, r#"{"email":"a@x.test","phoneNumber":"222"}"#);

    let cluster = answer(
        1,
        &["a@x.test", "b@x.test", "c@x.test"],
        &["111", "222"],
        &[2, 3],
    );
    assert_eq!(merged, cluster);
    assert_eq!(identify(&app, r#"{"email":"c@x.test"}"#), cluster);
    assert_eq!(next_id(&app), 4);
}

#[test]
fn a_known_email_with_a_new_phone_creates_a_secondary_holding_both() {
    let app = spawn_app();
    identify(
        &app,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#,
    );

    let grown = identify(
        &app,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"777"}"#,
    );

    assert_eq!(
        grown,
        answer(1, &["doc@hillvalley.edu"], &["555", "777"], &[2])
    );
    let by_new_phone = identify(&app, r#"{"phoneNumber":"777"}"#);
    assert_eq!(by_new_phone, grown);
}

#[test]
fn a_primary_without_an_email_lists_its_secondaries_emails_in_age_order() {
    let app = spawn_app();
    identify(&app, r#"{"phoneNumber":"555"}"#);
    identify(&app, r#"{"email":"second@x.test","phoneNumber":"555"}"#);

    let third = identify(&app, r#"{"email":"third@x.test","phoneNumber":"555"}"#);

    assert_eq!(
        third,
        answer(1, &["second@x.test", "third@x.test"], &["555"], &[2, 3])
    );
}

// docs/API.md's error table, the rows that apply to /identify.

#[test]
fn a_body_that_is_not_json_is_refused() {
    let app = spawn_app();
    let bodies = [
        "",
        "nope",
        "{",
        r#"{"email":"a@b.test""#,
        r#"{"email":"a@b.test",}"#,
        r#"{'email':'a@b.test'}"#,
        r#"{"email":"a@b.test"} trailing"#,
        r#"{"email":"a@b.test"}{"email":"a@b.test"}"#,
    ];
    assert_refused(&app, &bodies, "invalid_json");
    let invalid_utf8 = request(
        app.addr,
        "POST",
        "/identify",
        b"{\"email\":\"\xff@b.test\"}",
        &[],
    );
    assert_error(&invalid_utf8, 400, "invalid_json", "invalid UTF-8");
}

#[test]
fn a_json_value_that_is_not_an_object_is_refused() {
    let app = spawn_app();
    let bodies = [
        "[]",
        r#"[{"email":"a@b.test"}]"#,
        r#"["a@b.test","123456"]"#,
        r#""a@b.test""#,
        "123456",
        "-1.5",
        "true",
        "null",
    ];
    assert_refused(&app, &bodies, "invalid_json");
}

#[test]
fn a_field_of_the_wrong_type_is_refused() {
    let app = spawn_app();
    let bodies = [
        r#"{"email":5}"#,
        r#"{"email":true}"#,
        r#"{"email":["a@b.test"]}"#,
        r#"{"email":{"address":"a@b.test"}}"#,
        r#"{"phoneNumber":true}"#,
        r#"{"phoneNumber":1.5}"#,
        r#"{"phoneNumber":123456.0}"#,
        r#"{"phoneNumber":-1}"#,
        r#"{"phoneNumber":-123456}"#,
        r#"{"phoneNumber":{"number":"123456"}}"#,
        r#"{"phoneNumber":["123456"]}"#,
        r#"{"email":"a@b.test","phoneNumber":false}"#,
    ];
    assert_refused(&app, &bodies, "invalid_json");
}

#[test]
fn a_field_given_twice_is_refused() {
    let app = spawn_app();
    let bodies = [
        r#"{"email":"a@b.test","email":"c@d.test"}"#,
        r#"{"email":"a@b.test","email":"a@b.test"}"#,
        r#"{"email":null,"email":"a@b.test"}"#,
        r#"{"phoneNumber":"123","phoneNumber":"456"}"#,
        r#"{"phoneNumber":"123","phoneNumber":123}"#,
        r#"{"email":"a@b.test","phoneNumber":"1","phoneNumber":null}"#,
        r#"{"email":"a@b.test","e\u006dail":"c@d.test"}"#,
    ];
    assert_refused(&app, &bodies, "invalid_json");
}

#[test]
fn a_request_without_an_identifier_is_refused() {
    let app = spawn_app();
    let bodies = [
        "{}",
        r#"{"email":null,"phoneNumber":null}"#,
        r#"{"email":"","phoneNumber":""}"#,
        r#"{"email":"   ","phoneNumber":" \t\n "}"#,
        r#"{"email":null,"phoneNumber":""}"#,
        r#"{"name":"Marty","Email":"a@b.test","phone":"123456"}"#,
    ];
    assert_refused(&app, &bodies, "missing_identifier");
}

#[test]
fn an_implausible_email_is_refused() {
    let app = spawn_app();
    let too_long = format!(
        r#"{{"email":"{}@b.test"}}"#,
        "a".repeat(255 - "@b.test".len())
    );
    let bodies = [
        r#"{"email":"doc.hillvalley.edu"}"#,
        r#"{"email":"doc@@hillvalley.edu"}"#,
        r#"{"email":"doc@hill@valley.edu"}"#,
        r#"{"email":"@hillvalley.edu"}"#,
        r#"{"email":"doc@"}"#,
        r#"{"email":"@"}"#,
        r#"{"email":"doc brown@hillvalley.edu"}"#,
        r#"{"email":"doc@hill valley.edu"}"#,
        r#"{"email":"doc\t@hillvalley.edu"}"#,
        r#"{"email":"doc\u0001@hillvalley.edu"}"#,
        r#"{"email":"doc@hillvalley.edu\u0000"}"#,
        r#"{"email":"doc.hillvalley.edu","phoneNumber":"123456"}"#,
        &too_long,
    ];
    assert_refused(&app, &bodies, "invalid_email");
}

#[test]
fn an_email_of_exactly_254_bytes_is_accepted() {
    let app = spawn_app();
    let email = format!("{}@b.test", "a".repeat(254 - "@b.test".len()));

    let accepted = identify(&app, &format!(r#"{{"email":"{email}"}}"#));

    assert_eq!(accepted, answer(1, &[&email], &[], &[]));
}

#[test]
fn an_implausible_phone_number_is_refused() {
    let app = spawn_app();
    let too_long = format!(r#"{{"phoneNumber":"{}"}}"#, "1".repeat(33));
    let bodies = [
        r#"{"phoneNumber":"+-()."}"#,
        r#"{"phoneNumber":"( )"}"#,
        r#"{"phoneNumber":"12345a"}"#,
        r#"{"phoneNumber":"one two three"}"#,
        r#"{"phoneNumber":"123/456"}"#,
        r#"{"phoneNumber":"123_456"}"#,
        r#"{"phoneNumber":"123\u0000456"}"#,
        r#"{"email":"a@b.test","phoneNumber":"12345a"}"#,
        &too_long,
    ];
    assert_refused(&app, &bodies, "invalid_phone_number");
}

#[test]
fn a_phone_number_of_32_bytes_with_every_allowed_character_is_accepted() {
    let app = spawn_app();
    let prefix = "+1 (555) 010-0.";
    let phone = format!("{prefix}{}", "9".repeat(32 - prefix.len()));
    assert_eq!(phone.len(), 32);

    let accepted = identify(&app, &format!(r#"{{"phoneNumber":"{phone}"}}"#));

    assert_eq!(accepted, answer(1, &[], &[&phone], &[]));
}

#[test]
fn a_body_over_16_kib_is_refused_with_413() {
    let app = spawn_app();

    let response = app.identify(&padded_body(BODY_LIMIT + 1));

    assert_error(&response, 413, "payload_too_large", "limit + 1 bytes");
    assert_eq!(next_id(&app), 1);
}

#[test]
fn a_chunked_body_over_16_kib_is_refused_with_413() {
    let app = spawn_app();
    let body = padded_body(BODY_LIMIT + 1);
    let head = format!(
        "POST /identify HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        app.addr,
        body.len()
    );
    let mut stream = TcpStream::connect(app.addr).expect("connect");

    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read answer");

    assert!(raw.starts_with("HTTP/1.1 413 "), "{raw}");
    assert!(
        raw.contains(r#"{"error":{"code":"payload_too_large","#),
        "{raw}"
    );
    assert_eq!(next_id(&app), 1);
}

#[test]
fn a_valid_body_padded_in_an_unknown_field_up_to_the_limit_is_accepted() {
    let app = spawn_app();

    for len in [BODY_LIMIT - 1, BODY_LIMIT] {
        let accepted = identify(&app, &padded_body(len));
        assert_eq!(
            accepted,
            answer(1, &["pad@limit.test"], &[], &[]),
            "{len} bytes"
        );
    }
}

#[test]
fn an_unknown_path_answers_404_as_json() {
    let app = spawn_app();
    let valid = br#"{"email":"a@b.test"}"#;
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/identify/extra"),
        ("POST", "/Identify"),
        ("POST", "/identity"),
    ] {
        let response = request(app.addr, method, path, valid, &[]);
        assert_error(&response, 404, "not_found", &format!("{method} {path}"));
    }
}

#[test]
fn a_wrong_method_on_identify_answers_405_as_json() {
    let app = spawn_app();
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let response = request(
            app.addr,
            method,
            "/identify",
            br#"{"email":"a@b.test"}"#,
            &[],
        );
        assert_error(&response, 405, "method_not_allowed", method);
        assert_eq!(response.header("allow"), Some("POST"), "{method}");
    }
    assert_eq!(next_id(&app), 1);
}

#[test]
fn a_refused_request_creates_no_contact() {
    let app = spawn_app();
    let bodies = [
        r#"{"email":"bad@@x.test","phoneNumber":"555"}"#,
        r#"{"email":"good@x.test","phoneNumber":"5a5"}"#,
        r#"{"email":"good@x.test","phoneNumber":5.5}"#,
        r#"{"email":"good@x.test","email":"good@x.test"}"#,
    ];

    for body in bodies {
        assert_eq!(app.identify(body).status, 400, "{body}");
    }

    assert_eq!(next_id(&app), 1);
    let good = identify(&app, r#"{"email":"good@x.test"}"#);
    assert_eq!(good, answer(2, &["good@x.test"], &[], &[]));
}

// The input forms docs/API.md accepts.

#[test]
fn a_numeric_phone_number_means_its_digits() {
    let app = spawn_app();
    let created = identify(
        &app,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":123456}"#,
    );
    assert_eq!(
        created,
        answer(1, &["doc@hillvalley.edu"], &["123456"], &[])
    );

    assert_eq!(identify(&app, r#"{"phoneNumber":"123456"}"#), created);
    assert_eq!(identify(&app, r#"{"phoneNumber":123456}"#), created);
    assert_eq!(
        identify(&app, r#"{"phoneNumber":0}"#),
        answer(2, &[], &["0"], &[])
    );
}

#[test]
fn a_numeric_phone_number_beyond_64_bits_still_means_its_digits() {
    let app = spawn_app();
    let digits = "12345678901234567890123";

    let response = app.identify(&format!(r#"{{"phoneNumber":{digits}}}"#));

    assert_eq!(answer_of(&response), answer(1, &[], &[digits], &[]));
}

#[test]
fn nulls_and_blank_strings_count_as_absent() {
    let app = spawn_app();
    let known = identify(
        &app,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#,
    );

    for body in [
        r#"{"email":null,"phoneNumber":"555"}"#,
        r#"{"email":"","phoneNumber":"555"}"#,
        r#"{"email":"  \t ","phoneNumber":"555"}"#,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":null}"#,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":""}"#,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"   "}"#,
        r#"{"phoneNumber":"555"}"#,
    ] {
        assert_eq!(identify(&app, body), known, "{body}");
    }
    assert_eq!(next_id(&app), 2);
}

#[test]
fn unknown_fields_are_ignored() {
    let app = spawn_app();
    let body = r#"{"name":"Marty","email":"marty@hillvalley.edu","phone":"999",
        "nested":{"list":[1,2.5,null,{"deep":true}]},"phoneNumber":"123"}"#;

    let created = identify(&app, body);

    assert_eq!(created, answer(1, &["marty@hillvalley.edu"], &["123"], &[]));
}

#[test]
fn surrounding_whitespace_is_trimmed_from_both_identifiers() {
    let app = spawn_app();
    let created = identify(
        &app,
        r#"{"email":"  doc@hillvalley.edu\t","phoneNumber":"\n 555 "}"#,
    );
    assert_eq!(created, answer(1, &["doc@hillvalley.edu"], &["555"], &[]));

    let again = identify(
        &app,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#,
    );

    assert_eq!(again, created);
    assert_eq!(next_id(&app), 2);
}

#[test]
fn emails_are_lowercased_and_matched_case_insensitively() {
    let app = spawn_app();
    let created = identify(&app, r#"{"email":"Doc.Brown@HillValley.EDU"}"#);
    assert_eq!(created, answer(1, &["doc.brown@hillvalley.edu"], &[], &[]));

    for body in [
        r#"{"email":"doc.brown@hillvalley.edu"}"#,
        r#"{"email":"DOC.BROWN@HILLVALLEY.EDU"}"#,
    ] {
        assert_eq!(identify(&app, body), created, "{body}");
    }
    let accented = identify(&app, r#"{"email":"ÉMILE@École.FR"}"#);
    assert_eq!(accented, answer(2, &["émile@école.fr"], &[], &[]));
    assert_eq!(identify(&app, r#"{"email":"émile@ÉCOLE.fr"}"#), accented);
    assert_eq!(next_id(&app), 3);
}

#[test]
fn phone_numbers_are_compared_as_trimmed_strings() {
    let app = spawn_app();
    let plain = identify(&app, r#"{"phoneNumber":"123456"}"#);
    assert_eq!(identify(&app, r#"{"phoneNumber":" 123456 "}"#), plain);

    let spaced = identify(&app, r#"{"phoneNumber":"123 456"}"#);
    let dashed = identify(&app, r#"{"phoneNumber":"123-456"}"#);

    assert_eq!(spaced, answer(2, &[], &["123 456"], &[]));
    assert_eq!(dashed, answer(3, &[], &["123-456"], &[]));
}

#[test]
fn the_body_is_read_as_json_whatever_the_content_type() {
    let app = spawn_app();
    let body = br#"{"email":"doc@hillvalley.edu"}"#;
    let created = answer(1, &["doc@hillvalley.edu"], &[], &[]);

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json"),
        Some("application/octet-stream"),
    ] {
        let headers: Vec<_> = content_type
            .map(|c| ("Content-Type", c))
            .into_iter()
            .collect();
        let response = request(app.addr, "POST", "/identify", body, &headers);
        assert_eq!(answer_of(&response), created, "{content_type:?}");
    }
}

// `--compat-key-typo`.

#[test]
fn the_compat_option_adds_the_misspelled_key_with_the_same_value() {
    let app = spawn_app_with(|c| c.compat_key_typo = true);
    create_a_primary_and_its_secondary(&app);

    let json = app.identify(r#"{"email":"b@x.test"}"#).json();

    let contact = &json["contact"];
    assert_eq!(contact["primaryContactId"], 1, "{json}");
    assert_eq!(contact["primaryContatctId"], 1, "{json}");
    assert_eq!(
        contact["secondaryContactIds"],
        serde_json::json!([2]),
        "{json}"
    );
}

#[test]
fn without_the_compat_option_only_the_correct_key_is_sent() {
    let app = spawn_app();
    create_a_primary_and_its_secondary(&app);

    let response = app.identify(r#"{"email":"b@x.test"}"#);

    assert_eq!(
        answer_of(&response),
        answer(1, &["a@x.test", "b@x.test"], &["1"], &[2])
    );
}

/// Contact 1 (a@x.test, 1) and its secondary 2 (b@x.test, 1).
fn create_a_primary_and_its_secondary(app: &TestApp) {
    for body in [
        r#"{"email":"a@x.test","phoneNumber":"1"}"#,
        r#"{"email":"b@x.test","phoneNumber":"1"}"#,
    ] {
        assert_eq!(app.identify(body).status, 200, "{body}");
    }
}

// Concurrency: every request sees one linear history.

#[test]
fn fifty_identical_new_requests_at_once_create_exactly_one_contact() {
    let app = spawn_app();
    let body = r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#;

    let responses = burst(&app, vec![body.to_owned(); 50]);

    let only = answer(1, &["doc@hillvalley.edu"], &["555"], &[]);
    for response in &responses {
        assert_eq!(answer_of(response), only);
    }
    assert_eq!(next_id(&app), 2);
}

#[test]
fn fifty_new_emails_sharing_one_new_phone_at_once_join_one_cluster() {
    let app = spawn_app();
    let bodies = (0..50)
        .map(|i| format!(r#"{{"email":"twin{i}@x.test","phoneNumber":"555"}}"#))
        .collect();

    let answers: Vec<Answer> = burst(&app, bodies).iter().map(answer_of).collect();

    let primary = answers[0].primary;
    for (i, seen) in answers.iter().enumerate() {
        assert_eq!(seen.primary, primary, "{seen:?}");
        assert!(seen.emails.contains(&format!("twin{i}@x.test")), "{seen:?}");
        assert_eq!(seen.phones, ["555"], "{seen:?}");
        assert_eq!(seen.secondaries.len() + 1, seen.emails.len(), "{seen:?}");
    }
    let last = identify(&app, r#"{"phoneNumber":"555"}"#);
    assert_eq!(last.primary, primary);
    assert_eq!(
        last.emails.iter().collect::<BTreeSet<_>>().len(),
        50,
        "{last:?}"
    );
    assert_eq!(last.secondaries.len(), 49, "{last:?}");
    let mut ids = last.secondaries.clone();
    ids.push(primary);
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), (1..=50).collect());
    assert_eq!(next_id(&app), 51);
}

#[test]
fn fifty_identical_joins_at_once_merge_once_and_create_nothing() {
    let app = spawn_app();
    identify(
        &app,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#,
    );
    identify(
        &app,
        r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#,
    );
    let join = r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"919191"}"#;

    let responses = burst(&app, vec![join.to_owned(); 50]);

    let emails = ["george@hillvalley.edu", "biffsucks@hillvalley.edu"];
    let merged = answer(1, &emails, &["919191", "717171"], &[2]);
    for response in &responses {
        assert_eq!(answer_of(response), merged);
    }
    assert_eq!(next_id(&app), 3);
}

// A client's input never causes a 500.

/// A deterministic xorshift64 stream, so a failure replays.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_garbage_bodies_never_cause_a_server_error() {
    let app = spawn_app();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let lengths = (0..300).map(|i| match i % 50 {
        0 => BODY_LIMIT + 1 + i,
        _ => i % 97,
    });

    for len in lengths {
        let body = rng.bytes(len);
        let response = request(app.addr, "POST", "/identify", &body, &[]);
        let expected = if len > BODY_LIMIT { 413 } else { 400 };
        assert_eq!(response.status, expected, "{body:?}: {}", response.text);
        assert_eq!(keys(&response.json()), ["error"], "{body:?}");
    }

    let after = identify(&app, r#"{"email":"still@alive.test"}"#);
    assert_eq!(after, answer(1, &["still@alive.test"], &[], &[]));
}

#[test]
fn strange_but_small_json_is_refused_without_a_server_error() {
    let app = spawn_app();
    let deep_unknown = format!(r#"{{"x":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let deep_email = format!(
        r#"{{"email":{}"a@b.test"{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let bodies = [
        deep_unknown.as_str(),
        deep_email.as_str(),
        r#"{"email":"\ud800@b.test"}"#,
        r#"{"phoneNumber":1e400}"#,
        r#"{"phoneNumber":0123}"#,
    ];

    for body in bodies {
        let response = app.identify(body);
        assert_eq!(response.status, 400, "{body:.60}: {}", response.text);
        assert_eq!(keys(&response.json()), ["error"], "{body:.60}");
    }

    assert_eq!(next_id(&app), 1);
}
