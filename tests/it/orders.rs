//! Order-history import: rows of email, phone and time run as /identify requests in time order
//! give the model's rows (times included), and the same rows sent one by one as requests give
//! the same rows and answers.

use identity_engine::storage::{FsyncPolicy, Storage, StorageOptions};
use identity_engine::tools::orders::import_orders;
use serde_json::Value;

use crate::common::spawn_app_in;
use crate::model::Model;

/// A seeded order history: identifiers from small pools (so clusters form and merge), some
/// rows with one identifier only, times in no particular order.
struct Order {
    email: Option<String>,
    phone: Option<String>,
    at_ms: i64,
}

fn history(n: usize, mut seed: u64) -> Vec<Order> {
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    (0..n)
        .map(|_| {
            let shape = next(10);
            let email = (shape != 0).then(|| format!("buyer{}@shop.test", next(60)));
            let phone = (shape != 1).then(|| format!("555{:04}", next(45)));
            // Minutes from 2023-04-01, so some rows share a time (the file's order breaks ties).
            let at_ms = 1_680_307_200_000 + next(5_000) as i64 * 60_000;
            Order {
                email,
                phone,
                at_ms,
            }
        })
        .collect()
}

fn rfc3339(ms: i64) -> String {
    let mut out = String::new();
    identity_engine::engine::time::write_rfc3339(&mut out, ms).unwrap();
    out
}

fn csv(orders: &[Order]) -> String {
    let mut out = String::from("order,email,phoneNumber,timestamp,total\n");
    for (i, o) in orders.iter().enumerate() {
        out.push_str(&format!(
            "A{i},{},{},{},{}.50\n",
            o.email.as_deref().unwrap_or(""),
            o.phone.as_deref().unwrap_or(""),
            rfc3339(o.at_ms),
            i % 90
        ));
    }
    out
}

fn ndjson(orders: &[Order]) -> String {
    orders
        .iter()
        .map(|o| {
            serde_json::json!({"email": o.email, "phoneNumber": o.phone, "timestamp": rfc3339(o.at_ms)})
                .to_string()
                + "\n"
        })
        .collect()
}

fn body(o: &Order) -> String {
    serde_json::json!({"email": o.email, "phoneNumber": o.phone}).to_string()
}

/// The rows without their times: what requests sent now and an import of old orders share.
fn untimed(rows: &str) -> Vec<Value> {
    rows.lines()
        .map(|l| {
            let mut row: Value = serde_json::from_str(l).unwrap();
            for key in ["createdAt", "updatedAt"] {
                row.as_object_mut().unwrap().remove(key);
            }
            row
        })
        .collect()
}

#[test]
fn imported_orders_give_the_models_rows_and_the_answers_of_the_same_requests() {
    let orders = history(150, 7);
    let mut by_time: Vec<(usize, &Order)> = orders.iter().enumerate().collect();
    by_time.sort_by_key(|(i, o)| (o.at_ms, *i));
    let mut model = Model::new();
    for (_, o) in &by_time {
        model.identify(o.email.as_deref(), o.phone.as_deref(), o.at_ms);
    }

    let work = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("orders.csv", csv(&orders)),
        ("orders.ndjson", ndjson(&orders)),
    ] {
        let file = work.path().join(name);
        std::fs::write(&file, text).unwrap();
        let dir = work.path().join(format!("{name}-data"));
        let report = import_orders(
            StorageOptions::new(&dir),
            &file,
            None,
            false,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows, orders.len(), "{name}");
        assert_eq!(report.contacts, model.rows().len(), "{name}: {report}");
        assert!(
            report.merges > 0 && report.unchanged > 0,
            "the history merges: {report}"
        );
        let (_storage, engine, _) = Storage::open(StorageOptions::new(&dir)).expect("open");
        for row in model.rows() {
            assert_eq!(
                engine.contact(row.id),
                Some(crate::model::to_contact(row)),
                "{name}: row {}",
                row.id
            );
        }
        assert_eq!(engine.max_id() as usize, model.rows().len(), "{name}");
    }

    // The same rows as requests, one by one in time order, on a server of their own.
    let requested_dir = work.path().join("requested");
    // fsync is not what this test is about.
    let fast = |c: &mut identity_engine::config::Config| c.fsync = FsyncPolicy::Never;
    let requested = spawn_app_in(&requested_dir, fast).expect("start");
    for (_, o) in &by_time {
        assert_eq!(requested.identify(&body(o)).status, 200);
    }
    let imported = spawn_app_in(&work.path().join("orders.csv-data"), fast).expect("start");
    let export = "/contacts/export?format=ndjson";
    assert_eq!(
        untimed(&imported.get(export).text),
        untimed(&requested.get(export).text),
        "the same rows but for their times"
    );
    for o in &orders {
        let (a, b) = (imported.identify(&body(o)), requested.identify(&body(o)));
        assert_eq!(a.text, b.text, "{}", body(o));
    }
}

#[test]
fn a_bad_order_stops_the_import_before_anything_is_written_unless_skipped() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("orders.csv");
    std::fs::write(
        &file,
        "email,phoneNumber,timestamp\n\
         a@shop.test,555,2023-04-02\n\
         not-an-email,556,2023-04-01\n\
         ,,2023-04-01\n\
         b@shop.test,555,yesterday\n\
         c@shop.test,557,\n",
    )
    .unwrap();
    let dir = work.path().join("data");
    let refused = import_orders(
        StorageOptions::new(&dir),
        &file,
        None,
        false,
        &Default::default(),
    )
    .unwrap_err();
    let message = refused.to_string();
    for line in ["line 3", "line 4", "line 5"] {
        assert!(message.contains(line), "{message}");
    }
    assert!(!dir.exists(), "nothing written: {message}");
    let report = import_orders(
        StorageOptions::new(&dir),
        &file,
        None,
        true,
        &Default::default(),
    )
    .expect("skip");
    assert_eq!((report.rows, report.skipped.len()), (2, 3), "{report}");
    assert_eq!((report.primaries, report.secondaries), (2, 0), "{report}");
    assert!(
        report.to_string().contains("skipped 3 invalid row(s)"),
        "{report}"
    );
}
