//! One plan for both imports: the same file gets the same verdict (accepted with the same
//! report, or refused and why) and leaves the same rows whether it goes through
//! `identity-engine import` (the command line, on a stopped directory) or
//! `POST /contacts/import` (a running server), over random files under small guards.

use std::path::Path;

use identity_engine::engine::{Engine, Limits, Op, Refusal, Rows, Timestamp};
use identity_engine::matching::canon::Canon;
use identity_engine::storage::StorageOptions;
use identity_engine::tools::import::read_rows;
use identity_engine::tools::import::{import_guarded, ImportError, ImportGuards};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::common::{request, spawn_app_in};

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";
const EMAILS: [&str; 5] = ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"];
const PHONES: [&str; 5] = ["1", "2", "3", "4", "5"];
/// Small guards, so that generic values and the cap both come up.
const GUARDS: Limits = Limits {
    generic_threshold: 3,
    max_cluster_size: 5,
};

#[derive(Clone, Debug)]
struct Row {
    email: Option<usize>,
    phone: Option<usize>,
    /// Links to the row this many places before (0: none).
    link_back: usize,
    deleted: bool,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.8, 0..EMAILS.len()),
        prop::option::weighted(0.8, 0..PHONES.len()),
        prop_oneof![3 => Just(0usize), 1 => 1..4usize],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(email, phone, link_back, deleted)| Row {
            email,
            phone,
            link_back,
            deleted,
        })
}

/// A file of `rows` with ids from `first`. Times are far in the future, so that every stamp an
/// import makes (relinks, blocks) is its rows' latest time, whichever way it runs.
fn file(rows: &[Row], first: u32) -> String {
    let mut lines = vec![HEADER.to_owned()];
    for (i, row) in rows.iter().enumerate() {
        let id = first + i as u32;
        let at = format!("2100-01-01T00:{:02}:{:02}.000Z", i / 60, i % 60);
        let email = row.email.map_or("", |e| EMAILS[e]);
        let phone = row
            .phone
            .map_or(if email.is_empty() { "9" } else { "" }, |p| PHONES[p]);
        let linked = if row.link_back > 0 && row.link_back <= i {
            (id - row.link_back as u32).to_string()
        } else {
            String::new()
        };
        let precedence = if linked.is_empty() {
            "primary"
        } else {
            "secondary"
        };
        let deleted = if row.deleted { at.as_str() } else { "" };
        lines.push(format!(
            "{id},{phone},{email},{linked},{precedence},{at},{at},{deleted}"
        ));
    }
    lines.join("\n") + "\n"
}

/// The verdict of the command-line import, in the terms the server answers with.
fn cli_verdict(dir: &Path, csv: &str) -> Value {
    let path = dir.join("rows.csv");
    std::fs::write(&path, csv).unwrap();
    let guards = ImportGuards {
        limits: GUARDS,
        blocklist: Vec::new(),
    };
    match import_guarded(
        StorageOptions::new(dir.join("data")),
        &path,
        None,
        false,
        &guards,
    ) {
        Ok(report) => json!({
            "imported": report.imported,
            "deleted": report.deleted,
            "corrected": report.corrected,
            "existingRelinked": report.existing_relinked,
            "generic": report.generic.iter().map(|(k, v)| format!("{}:{v}", k.field())).collect::<Vec<_>>(),
        }),
        Err(ImportError::Refused(refusal)) => json!({ "refused": refusal.to_string() }),
        Err(other) => json!({ "error": other.to_string() }),
    }
}

fn server_verdict(answer: &crate::common::Response) -> Value {
    let body = answer.json();
    if answer.status == 200 {
        return json!({
            "imported": body["imported"],
            "deleted": body["deleted"],
            "corrected": body["corrected"],
            "existingRelinked": body["existingRelinked"],
            "generic": body["blockedAsGeneric"].as_array().unwrap().iter()
                .map(|g| format!("{}:{}", g["kind"].as_str().unwrap(), g["value"].as_str().unwrap()))
                .collect::<Vec<_>>(),
        });
    }
    let message = body["error"]["message"].as_str().unwrap();
    let refusal = message
        .strip_suffix("; nothing was imported")
        .unwrap_or(message);
    json!({ "refused": refusal, "status": answer.status })
}

fn rows_of(app: &crate::common::TestApp) -> String {
    app.get("/contacts/export?format=ndjson").text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_same_file_gets_the_same_verdict_and_rows_from_the_command_line_and_the_server(
        base in prop::collection::vec(row(), 1..8),
        more in prop::collection::vec(row(), 1..10),
    ) {
        let (cli, online) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for csv in [file(&base, 1), file(&more, 100)] {
            let by_cli = cli_verdict(cli.path(), &csv);
            let app = spawn_app_in(&online.path().join("data"), |c| {
                c.generic_threshold = GUARDS.generic_threshold;
                c.max_cluster_size = GUARDS.max_cluster_size;
            })
            .unwrap();
            let answer = request(app.addr, "POST", "/contacts/import?format=csv", csv.as_bytes(), &[]);
            let by_server = server_verdict(&answer);
            let served = rows_of(&app);
            drop(app);
            let mut by_cli_status = by_cli.clone();
            if let Some(refused) = by_cli.get("refused") {
                by_cli_status = json!({ "refused": refused, "status": 409 });
            }
            prop_assert_eq!(&by_cli_status, &by_server, "{}", csv);
            let app = spawn_app_in(&cli.path().join("data"), |_| {}).unwrap();
            prop_assert_eq!(rows_of(&app), served, "the rows after {}", csv);
            drop(app);
        }
    }
}

/// The rows of `csv`, checked against `engine`.
fn rows_for(engine: &Engine, csv: &str) -> Rows {
    let exists = |id| engine.contact(id).is_some();
    let (rows, errors) = read_rows(csv.as_bytes(), None, exists, &Canon::default()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    Rows::new(rows, Vec::new())
}

fn import_into(engine: &mut Engine, rows: &Rows) -> Result<(), Refusal> {
    let plan = engine.plan(&Op::Import(rows.clone()), Timestamp(0))?;
    for fact in &plan.facts {
        engine.apply(fact).expect("a planned import applies");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The cap is checked exactly: an import is refused exactly when importing it without a cap
    /// leaves one of its rows in a cluster over the cap (a value it makes generic splits the
    /// clusters it held together, which an upper bound would count whole).
    #[test]
    fn an_import_is_refused_exactly_when_it_would_leave_a_cluster_over_the_cap(
        base in prop::collection::vec(row(), 1..10),
        more in prop::collection::vec(row(), 1..10),
        cap in 2u32..8,
    ) {
        let mut engine = Engine::with_limits(Limits { generic_threshold: 3, max_cluster_size: 0 });
        let first = rows_for(&engine, &file(&base, 1));
        import_into(&mut engine, &first).unwrap();
        let rows = rows_for(&engine, &file(&more, 100));
        let mut uncapped = engine.clone();
        import_into(&mut uncapped, &rows).unwrap();
        let largest = (rows.rows().iter())
            .filter_map(|r| uncapped.identity(r.contact.id))
            .map(|i| i.secondary_contact_ids.len() + 1)
            .max()
            .unwrap_or(0);
        engine.set_limits(Limits { generic_threshold: 3, max_cluster_size: cap });
        let verdict = engine.plan(&Op::Import(rows.clone()), Timestamp(0));
        match verdict {
            Ok(_) => prop_assert!(largest <= cap as usize, "accepted, yet {largest} > {cap}"),
            Err(Refusal::ImportOverCap { size, .. }) => {
                prop_assert!(largest > cap as usize, "refused, yet {largest} <= {cap}");
                prop_assert_eq!(size, largest);
            }
            Err(other) => prop_assert!(false, "refused for {}", other),
        }
    }
}
