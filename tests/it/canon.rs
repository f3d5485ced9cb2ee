//! Canonical matching: in each mode, random requests over pools that spell the same values
//! several ways, through the engine (with the crate's keys) and through the reference model
//! (with keys of its own, written here from the documented rules), must agree; and over HTTP,
//! the modes a data directory records, `rekey` and its guards.

use identity_engine::engine::{Email, Engine, Identity, Limits, Phone, Query, Timestamp};
use identity_engine::matching::canon::{Canon, EmailMatch, Modes, PhoneMatch};
use identity_engine::storage::StorageOptions;
use identity_engine::tools::rekey::{rekey, rekey_engine};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::common::{spawn_app_in, TestApp};
use crate::model::{DeleteError, Model, ModelAnswer};

/// Spellings of a few values: several of each, and some that only look alike.
const EMAILS: [&str; 8] = [
    "John.Doe+shop@gmail.com",
    "johndoe@gmail.com",
    " J.O.H.N.D.O.E@GoogleMail.com ",
    "john.doe@example.com",
    "John.Doe+x@example.com",
    "Ann+news@Outlook.com",
    "ann@outlook.com",
    "a.nn@outlook.com",
];
const PHONES: [&str; 9] = [
    "(201) 555-0123",
    "201-555-0123",
    "+1 201 555 0123",
    "2015550123",
    "555-123-4567",
    "(555) 123-4567",
    "020 7946 0958",
    "+44 20 7946 0958",
    "123456",
];

/// The model's keys, from the rules as docs/matching.md documents them (not the crate's code).
fn model_phone(mode: PhoneMatch, phone: &str) -> String {
    let phone = phone.trim();
    let digits = || {
        let plus = if phone.starts_with('+') { "+" } else { "" };
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        format!("{plus}{digits}")
    };
    match mode {
        PhoneMatch::AsGiven => phone.to_owned(),
        PhoneMatch::Digits => digits(),
        // With --default-region US: what libphonenumber makes of the pool, worked out by hand.
        // 555-123-4567 is no valid US number (no area code 555), 020 is no US area code, and
        // 123456 is too short: those fall back to their digits.
        PhoneMatch::E164 => match digits().as_str() {
            "2015550123" | "+12015550123" => "+12015550123".into(),
            "+442079460958" => "+442079460958".into(),
            other => other.into(),
        },
    }
}

fn model_email(mode: EmailMatch, email: &str) -> String {
    let email = email.trim().to_lowercase();
    if mode == EmailMatch::AsGiven {
        return email;
    }
    let (local, domain) = email.rsplit_once('@').unwrap();
    let (gmail, plus_only) = (
        ["gmail.com", "googlemail.com"].contains(&domain),
        ["outlook.com", "hotmail.com", "live.com", "fastmail.com"].contains(&domain),
    );
    if !gmail && !plus_only {
        return email;
    }
    let mut kept: String = local.chars().take_while(|&c| c != '+').collect();
    if gmail {
        kept.retain(|c| c != '.');
    }
    if kept.is_empty() {
        kept = local.to_owned();
    }
    let domain = if gmail { "gmail.com" } else { domain };
    format!("{kept}@{domain}")
}

#[derive(Clone, Debug)]
enum Op {
    Identify {
        email: Option<usize>,
        phone: Option<usize>,
    },
    Delete {
        pick: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let (email, phone) = (0..EMAILS.len(), 0..PHONES.len());
    prop_oneof![
        4 => (email.clone(), phone.clone()).prop_map(|(e, p)| Op::Identify { email: Some(e), phone: Some(p) }),
        1 => email.prop_map(|e| Op::Identify { email: Some(e), phone: None }),
        1 => phone.prop_map(|p| Op::Identify { email: None, phone: Some(p) }),
        1 => any::<u32>().prop_map(|pick| Op::Delete { pick }),
    ]
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Answer(Identity),
    Groups(Vec<u32>),
    Refused(DeleteError),
}

fn on_engine(engine: &mut Engine, canon: &Canon, op: &Op, now: i64) -> Outcome {
    match *op {
        Op::Identify { email, phone } => {
            let email = email.and_then(|i| Email::parse(EMAILS[i]).unwrap());
            let phone = phone.and_then(|i| Phone::parse(PHONES[i]).unwrap());
            let query = canon.query(Query::new(email, phone).unwrap());
            let plan = engine.plan_identify(&query, Timestamp(now)).unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
            Outcome::Answer(engine.identity(plan.answer).unwrap().to_owned())
        }
        Op::Delete { pick } => {
            let id = pick % (engine.max_id() + 1) + 1;
            match engine.plan_delete(id, Timestamp(now)) {
                Ok(plan) => {
                    for change in &plan.changes {
                        engine.apply(change).unwrap();
                    }
                    Outcome::Groups(plan.groups)
                }
                Err(identity_engine::engine::EngineError::UnknownContact(_)) => {
                    Outcome::Refused(DeleteError::Unknown)
                }
                Err(_) => Outcome::Refused(DeleteError::AlreadyDeleted),
            }
        }
    }
}

fn on_model(model: &mut Model, modes: &Modes, op: &Op, max_id: u32, now: i64) -> Outcome {
    match *op {
        Op::Identify { email, phone } => {
            let email = email.map(|i| model_email(modes.email, EMAILS[i]));
            let phone = phone.map(|i| model_phone(modes.phone, PHONES[i]));
            let answer: ModelAnswer = model.identify(email.as_deref(), phone.as_deref(), now);
            Outcome::Answer(Identity {
                primary_contact_id: answer.primary_contact_id,
                emails: answer.emails,
                phone_numbers: answer.phone_numbers,
                secondary_contact_ids: answer.secondary_contact_ids,
            })
        }
        Op::Delete { pick } => match model.delete(pick % (max_id + 1) + 1, now) {
            Ok(groups) => Outcome::Groups(groups),
            Err(e) => Outcome::Refused(e),
        },
    }
}

fn agree_in(modes: Modes, ops: &[Op]) -> Result<(), TestCaseError> {
    let canon = Canon::new(modes.clone());
    let (mut engine, mut model) = (Engine::new(), Model::new());
    for (i, op) in ops.iter().enumerate() {
        let now = 1_680_307_200_000 + i as i64;
        let max_id = engine.max_id();
        let got = on_engine(&mut engine, &canon, op, now);
        let want = on_model(&mut model, &modes, op, max_id, now);
        prop_assert_eq!(got, want, "step {} ({:?}) in {}", i, op, modes);
    }
    engine.check_invariants().map_err(TestCaseError::fail)?;
    Ok(())
}

fn modes(phone: PhoneMatch, email: EmailMatch) -> Modes {
    Modes::new(phone, email, Some("US")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn as_given_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        agree_in(modes(PhoneMatch::AsGiven, EmailMatch::AsGiven), &ops)?;
    }

    #[test]
    fn digits_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        agree_in(modes(PhoneMatch::Digits, EmailMatch::AsGiven), &ops)?;
    }

    #[test]
    fn e164_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        agree_in(modes(PhoneMatch::E164, EmailMatch::AsGiven), &ops)?;
    }

    #[test]
    fn provider_emails_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        agree_in(modes(PhoneMatch::E164, EmailMatch::Provider), &ops)?;
    }
}

fn e164_provider(app_config: &mut identity_engine::config::Config) {
    app_config.matching.phone_match = PhoneMatch::E164;
    app_config.matching.email_match = EmailMatch::Provider;
    app_config.matching.default_region = Some("US".into());
}

fn identify(app: &TestApp, body: Value) -> Value {
    let response = app.identify(&body.to_string());
    assert_eq!(response.status, 200, "{}", response.text);
    response.json()["contact"].clone()
}

#[test]
fn a_server_with_modes_answers_with_keys_and_shows_its_modes() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path(), e164_provider).unwrap();
    let first = identify(
        &app,
        json!({"email": "John.Doe+shop@gmail.com", "phoneNumber": "(201) 555-0123"}),
    );
    assert_eq!(first["emails"], json!(["johndoe@gmail.com"]));
    assert_eq!(first["phoneNumbers"], json!(["+12015550123"]));
    let again = identify(&app, json!({"phoneNumber": "+1 201-555-0123"}));
    assert_eq!(again, first, "another spelling is the same contact");
    let ready = app.get("/readyz").json();
    assert_eq!(
        ready["matching"],
        json!({"phone": "e164", "email": "provider", "defaultRegion": "US"})
    );
    let lookup = app
        .get("/contacts?email=j.o.h.n.doe%40googlemail.com")
        .json();
    assert_eq!(lookup["contacts"].as_array().unwrap().len(), 1);
    identify(&app, json!({"phoneNumber": "555-123-4567"}));
    let metrics = app.get("/metrics").text;
    assert!(
        metrics.contains("identity_engine_phone_e164_fallbacks_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_directory_refuses_a_server_with_other_modes() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app_in(dir.path(), |_| {}).unwrap();
    app.stop().unwrap();
    let Err(refused) = spawn_app_in(dir.path(), e164_provider) else {
        panic!("a server with other modes started");
    };
    let message = refused.to_string();
    assert!(
        message.contains(&format!(
            "identity-engine rekey --data-dir {} --phone-match e164 --email-match provider --default-region US",
            dir.path().display()
        )),
        "{message}"
    );
}

/// Rows of the directory as `GET /contacts` pages them, by id.
fn rows(app: &TestApp) -> Vec<Value> {
    let page = app.get("/contacts?limit=1000").json();
    page["contacts"].as_array().unwrap().clone()
}

#[test]
fn rekey_merges_the_clusters_that_share_a_key_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app_in(dir.path(), |_| {}).unwrap();
    let bodies = [
        json!({"email": "John.Doe+shop@gmail.com", "phoneNumber": "1"}), // 1
        json!({"email": "johndoe@gmail.com", "phoneNumber": "2"}),       // 2: joins 1
        json!({"email": "x@y.io", "phoneNumber": "(201) 555-0123"}),     // 3
        json!({"email": "z@y.io", "phoneNumber": "201-555-0123"}),       // 4: joins 3
        json!({"email": "q@y.io", "phoneNumber": "7"}),                  // 5: alone
        json!({"email": "J.Doe@example.com", "phoneNumber": "8"}),       // 6: alone
        json!({"email": "jdoe@example.com", "phoneNumber": "9"}),        // 7: alone
    ];
    for body in &bodies {
        identify(&app, body.clone());
    }
    let before = rows(&app);
    app.stop().unwrap();

    let modes = Modes::new(PhoneMatch::E164, EmailMatch::Provider, Some("US")).unwrap();
    let report = rekey(StorageOptions::new(dir.path()), Limits::default(), modes).unwrap();
    assert_eq!(report.merges, 2, "{report}");
    assert_eq!((report.clusters_before, report.clusters_after), (7, 5));

    let app = spawn_app_in(dir.path(), e164_provider).unwrap();
    let after = rows(&app);
    let ids = |v: &Value| v["id"].as_u64().unwrap();
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(ids(old), ids(new));
        if [5, 6, 7].contains(&ids(old)) {
            assert_eq!(old, new, "a row no key touched is unchanged");
        }
    }
    assert_eq!(after[1]["linkedId"], json!(1));
    assert_eq!(after[3]["linkedId"], json!(3));
    assert_eq!(after[0]["email"], json!("johndoe@gmail.com"));
    assert_eq!(after[3]["phoneNumber"], json!("+12015550123"));
    let joined = identify(&app, json!({"email": "j.o.h.n.doe@gmail.com"}));
    assert_eq!(joined["primaryContactId"], json!(1));
    assert_eq!(joined["secondaryContactIds"], json!([2]));
    // Restarting keeps it all.
    let app = app.restart(e164_provider);
    assert_eq!(rows(&app), after);
}

#[test]
fn rekey_holds_to_the_guards() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app_in(dir.path(), |_| {}).unwrap();
    // Three clusters of two whose phones are one number spelled three ways, and a value
    // spelled four ways by four contacts.
    for (i, phone) in ["555-0100", "555 0100", "5550100"].iter().enumerate() {
        identify(
            &app,
            json!({"email": format!("a{i}@x.io"), "phoneNumber": phone}),
        );
        identify(
            &app,
            json!({"email": format!("a{i}@x.io"), "phoneNumber": format!("9{i}")}),
        );
    }
    for (i, phone) in ["0-0", "0 0", "(0)0", "00"].iter().enumerate() {
        identify(
            &app,
            json!({"email": format!("g{i}@x.io"), "phoneNumber": phone}),
        );
    }
    app.stop().unwrap();
    let limits = Limits {
        generic_threshold: 3,
        max_cluster_size: 4,
    };
    let modes = Modes::new(PhoneMatch::Digits, EmailMatch::AsGiven, None).unwrap();
    let report = rekey(StorageOptions::new(dir.path()), limits, modes).unwrap();
    // 555-0100 and 555 0100 merge into 5550100's cluster one at a time: the first merge
    // makes four, the second would make six.
    assert_eq!(report.merges, 1, "{report}");
    assert_eq!(report.refused.len(), 1, "{report}");
    assert!(
        report.to_string().contains("more than the cap of 4"),
        "{report}"
    );
    // 00 gains holders past three: blocked as generic, so it links nobody.
    assert_eq!(report.blocked, 1, "{report}");
    let app = spawn_app_in(dir.path(), |c| {
        c.matching.phone_match = PhoneMatch::Digits;
        c.generic_threshold = 3;
        c.max_cluster_size = 4;
    })
    .unwrap();
    let blocked = app.get("/blocklist").json();
    assert_eq!(blocked["values"][0]["value"], json!("00"), "{blocked}");
    let largest = rows(&app)
        .iter()
        .filter(|r| r["linkedId"].is_number())
        .count();
    assert_eq!(
        largest, 4,
        "one merged cluster of four, one of two; the rest alone"
    );
}

#[test]
fn a_backup_carries_the_directorys_modes() {
    let (dir, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let app = spawn_app_in(dir.path(), e164_provider).unwrap();
    identify(&app, json!({"phoneNumber": "(201) 555-0123"}));
    let file = work.path().join("modes.backup");
    std::fs::write(&file, crate::backup::fetch_backup(app.addr)).unwrap();
    let restored = work.path().join("restored");
    identity_engine::tools::backup::restore_dir(&file, &restored).unwrap();
    let recorded = identity_engine::matching::record::recorded(&restored).unwrap();
    assert_eq!(
        recorded,
        Modes::new(PhoneMatch::E164, EmailMatch::Provider, Some("US")).unwrap()
    );
    let app = spawn_app_in(&restored, e164_provider).unwrap();
    let again = identify(&app, json!({"phoneNumber": "201.555.0123"}));
    assert_eq!(again["primaryContactId"], json!(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A history matched as given, re-keyed, then more requests and deletions matched by key:
    /// the rows after the re-key and every answer after it are the model's.
    #[test]
    fn rekey_gives_the_models_rows_and_answers(
        before in prop::collection::vec(op(), 1..30),
        after in prop::collection::vec(op(), 0..20),
        phone in prop::sample::select(vec![PhoneMatch::AsGiven, PhoneMatch::Digits, PhoneMatch::E164]),
        email in prop::sample::select(vec![EmailMatch::AsGiven, EmailMatch::Provider]),
    ) {
        let as_given = Modes::default();
        let (mut engine, mut model) = (Engine::with_limits(Limits::OFF), Model::new());
        let mut now = 1_680_307_200_000;
        for op in &before {
            let max_id = engine.max_id();
            let got = on_engine(&mut engine, &Canon::default(), op, now);
            prop_assert_eq!(got, on_model(&mut model, &as_given, op, max_id, now));
            now += 1;
        }
        let modes = modes(phone, email);
        rekey_engine(&mut engine, &modes, Timestamp(now)).unwrap();
        model.rekey(|e| model_email(modes.email, e), |p| model_phone(modes.phone, p), now);
        engine.check_invariants().map_err(TestCaseError::fail)?;
        let rows: Vec<_> = model.rows().iter().map(crate::model::to_contact).collect();
        prop_assert_eq!(engine.contacts().collect::<Vec<_>>(), rows, "{}", modes);
        let canon = Canon::new(modes.clone());
        for op in &after {
            now += 1;
            let max_id = engine.max_id();
            let got = on_engine(&mut engine, &canon, op, now);
            prop_assert_eq!(got, on_model(&mut model, &modes, op, max_id, now), "{:?} in {}", op, modes);
        }
    }
}
