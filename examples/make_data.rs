//! Builds a data directory of N contacts through the real plan/apply/log path, for recovery and
//! snapshot measurements: `cargo run --release --example make_data -- DIR N [snapshot]`.
//! Emails are ~24 bytes, phones 10 digits; one contact in five shares the previous one's phone,
//! so clusters form. Without `snapshot` the state is left in the log alone (as after `kill -9`).

use std::time::Instant;

use identity_engine::engine::{Email, Engine, Phone, Query, Timestamp};
use identity_engine::storage::{FsyncPolicy, Storage, StorageOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: make_data DIR N [snapshot]");
    let n: u64 = args.next().and_then(|s| s.parse().ok()).expect("N");
    let snapshot = args.next().as_deref() == Some("snapshot");
    let mut options = StorageOptions::new(&dir);
    options.fsync = FsyncPolicy::Never;
    options.snapshot_every_bytes = u64::MAX;
    let (storage, mut engine, _) = Storage::open(options).expect("open");
    let started = Instant::now();
    let base = engine.max_id() as u64;
    for i in base..base + n {
        let email = Email::parse(&format!("user{i:09}@example.com")).unwrap();
        let phone_of = if i % 5 == 4 { i - 1 } else { i };
        let phone = Phone::parse(&format!("{:010}", 5_000_000_000 + phone_of)).unwrap();
        let query = Query::new(email, phone).unwrap();
        apply(
            &storage,
            &mut engine,
            &query,
            Timestamp(1_700_000_000_000 + i as i64),
        );
    }
    eprintln!(
        "{n} contacts planned, logged and applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if snapshot {
        storage.close(&engine).expect("close with a snapshot");
        eprintln!("snapshot written");
    }
    let stats = engine.stats();
    eprintln!("{} contacts, {} clusters", stats.contacts, stats.clusters);
}

fn apply(storage: &Storage, engine: &mut Engine, query: &Query, now: Timestamp) {
    let plan = engine
        .plan_identify(query, now)
        .expect("the guards let it through");
    if plan.changes.is_empty() {
        return;
    }
    storage.append(&plan.changes).expect("append");
    for change in &plan.changes {
        engine.apply(change).expect("apply");
    }
}
