//! `--answer-key typo|both|correct`: every place an identity is rendered (/identify,
//! /contacts/{id}/identity, the identities of delete, block and unblock answers) spells the
//! primary's key the chosen way, and the OpenAPI document says which keys this server sends.

use identity_engine::http::AnswerKey;
use serde_json::{json, Value};

use crate::common::{spawn_app_in, spawn_app_with, TestApp};

const MODES: [(AnswerKey, &[&str]); 3] = [
    (AnswerKey::Typo, &["primaryContatctId"]),
    (AnswerKey::Both, &["primaryContactId", "primaryContatctId"]),
    (AnswerKey::Correct, &["primaryContactId"]),
];

/// The identity a client comparing whole objects expects: the primary under `keys`, then the rest.
fn identity(
    keys: &[&str],
    primary: u32,
    emails: &[&str],
    phones: &[&str],
    secondaries: &[u32],
) -> Value {
    let mut object = serde_json::Map::new();
    for key in keys {
        object.insert((*key).to_owned(), json!(primary));
    }
    object.insert("emails".into(), json!(emails));
    object.insert("phoneNumbers".into(), json!(phones));
    object.insert("secondaryContactIds".into(), json!(secondaries));
    Value::Object(object)
}

/// Contact 1 (a@x.test, 555) and its secondary 2 (b@x.test, 555).
fn primary_and_secondary(app: &TestApp) {
    for body in [
        r#"{"email":"a@x.test","phoneNumber":"555"}"#,
        r#"{"email":"b@x.test","phoneNumber":"555"}"#,
    ] {
        assert_eq!(app.identify(body).status, 200, "{body}");
    }
}

#[test]
fn identify_answers_exactly_the_object_of_each_mode() {
    for (key, keys) in MODES {
        let app = spawn_app_with(|c| c.answer_key = Some(key));
        primary_and_secondary(&app);

        let answer = app.identify(r#"{"email":"b@x.test"}"#);

        assert_eq!(answer.status, 200, "{key}: {}", answer.text);
        let expected = identity(keys, 1, &["a@x.test", "b@x.test"], &["555"], &[2]);
        assert_eq!(answer.json(), json!({ "contact": expected }), "{key}");
        // Written in the order of the declaration: the key or keys first, correct before typo.
        let order = keys
            .iter()
            .map(|k| format!("\"{k}\":1,"))
            .collect::<String>();
        assert!(
            answer
                .text
                .starts_with(&format!("{{\"contact\":{{{order}\"emails\"")),
            "{key}: {}",
            answer.text
        );
    }
}

#[test]
fn the_contact_identity_endpoint_uses_the_same_keys() {
    for (key, keys) in MODES {
        let app = spawn_app_with(|c| c.answer_key = Some(key));
        primary_and_secondary(&app);

        let answer = app.get("/contacts/2/identity");

        assert_eq!(answer.status, 200, "{key}: {}", answer.text);
        let expected = identity(keys, 1, &["a@x.test", "b@x.test"], &["555"], &[2]);
        assert_eq!(answer.json(), json!({ "contact": expected }), "{key}");
    }
}

#[test]
fn block_unblock_and_delete_answers_render_their_identities_with_the_same_keys() {
    for (key, keys) in MODES {
        let app = spawn_app_with(|c| c.answer_key = Some(key));
        primary_and_secondary(&app);

        let blocked = app.post("/blocklist", r#"{"phoneNumber":"555"}"#);
        assert_eq!(blocked.status, 200, "{key}: {}", blocked.text);
        let split = [
            identity(keys, 1, &["a@x.test"], &["555"], &[]),
            identity(keys, 2, &["b@x.test"], &["555"], &[]),
        ];
        assert_eq!(blocked.json()["identities"], json!(split), "{key}: block");

        let unblocked = app.delete("/blocklist?phoneNumber=555");
        assert_eq!(unblocked.status, 200, "{key}: {}", unblocked.text);
        let merged = identity(keys, 1, &["a@x.test", "b@x.test"], &["555"], &[2]);
        assert_eq!(
            unblocked.json()["identities"],
            json!([merged]),
            "{key}: unblock"
        );

        let deleted = app.delete("/contacts/2");
        assert_eq!(deleted.status, 200, "{key}: {}", deleted.text);
        let left = identity(keys, 1, &["a@x.test"], &["555"], &[]);
        assert_eq!(deleted.json()["identities"], json!([left]), "{key}: delete");
    }
}

#[test]
fn the_openapi_document_lists_the_keys_this_server_sends() {
    for (key, keys) in MODES {
        let app = spawn_app_with(|c| c.answer_key = Some(key));

        let doc = app.get("/openapi.json").json();

        let schema = &doc["components"]["schemas"]["Identity"];
        let properties: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|p| p.starts_with("primary"))
            .collect();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        assert_eq!(properties, sorted, "{key}: {schema}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        for name in keys {
            assert!(
                required.contains(name),
                "{key}: {name} is required: {schema}"
            );
        }
        assert!(
            required.contains(&"emails"),
            "{key}: the rest stays required: {schema}"
        );
    }
}

#[test]
fn the_old_flag_means_both_and_contradicting_it_refuses_to_start() {
    let app = spawn_app_with(|c| c.compat_key_typo = true);
    primary_and_secondary(&app);
    let both = identity(MODES[1].1, 1, &["a@x.test", "b@x.test"], &["555"], &[2]);
    assert_eq!(
        app.identify(r#"{"email":"a@x.test"}"#).json(),
        json!({ "contact": both })
    );

    let dir = tempfile::tempdir().unwrap();
    let refused = spawn_app_in(dir.path(), |c| {
        c.compat_key_typo = true;
        c.answer_key = Some(AnswerKey::Typo);
    });
    let error = refused
        .err()
        .expect("contradicting options refuse to start")
        .to_string();
    assert!(
        error.contains("--compat-key-typo") && error.contains("--answer-key typo"),
        "{error}"
    );
}
