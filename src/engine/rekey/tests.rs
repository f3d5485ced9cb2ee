//! Re-keying on the engine alone: merges, joins kept under the new key, and the guards.

use super::super::*;

fn ask(engine: &mut Engine, email: Option<&str>, phone: Option<&str>, ms: i64) -> ContactId {
    let email = email.and_then(|e| Email::parse(e).unwrap());
    let phone = phone.and_then(|p| Phone::parse(p).unwrap());
    let plan = engine
        .plan_identify(&Query::new(email, phone).unwrap(), Timestamp(ms))
        .unwrap();
    for change in &plan.changes {
        engine.apply(change).unwrap();
    }
    engine.check_invariants().unwrap();
    plan.answer
}

/// Plans and applies one re-key; returns the facts.
fn rekey(engine: &mut Engine, kind: Kind, from: &str, to: &str) -> Vec<Change> {
    let changes = engine.plan_rekey(kind, from, to, Timestamp(1_000)).unwrap();
    for change in &changes {
        engine.apply(change).unwrap();
    }
    engine.check_invariants().unwrap();
    changes
}

fn primary_of(engine: &Engine, id: ContactId) -> ContactId {
    engine.identity(id).unwrap().primary_contact_id
}

#[test]
fn spellings_of_one_phone_merge_under_the_oldest_primary() {
    let mut engine = Engine::new();
    ask(&mut engine, Some("a@x.io"), Some("555-123-4567"), 1);
    ask(&mut engine, Some("b@x.io"), Some("(555) 123-4567"), 2);
    ask(&mut engine, Some("c@x.io"), Some("555 000"), 3);
    assert_eq!(engine.stats().clusters, 3);
    rekey(&mut engine, Kind::Phone, "555-123-4567", "5551234567");
    assert_eq!(
        engine.stats().clusters,
        3,
        "one spelling alone merges nothing"
    );
    rekey(&mut engine, Kind::Phone, "(555) 123-4567", "5551234567");
    assert_eq!(engine.stats().clusters, 2);
    let identity = engine.identity(2).unwrap().to_owned();
    assert_eq!(identity.primary_contact_id, 1);
    assert_eq!(identity.phone_numbers, ["5551234567"]);
    assert_eq!(identity.secondary_contact_ids, [2]);
    let row = engine.contact(2).unwrap();
    assert_eq!(
        (row.linked_id, row.updated_at),
        (Some(1), Timestamp(1_000)),
        "the absorbed row is relinked at the re-key's time"
    );
    assert_eq!(primary_of(&engine, 3), 3, "nothing else changes");
}

#[test]
fn a_join_keeps_holding_under_the_new_key() {
    let mut engine = Engine::new();
    ask(&mut engine, Some("J.Doe@gmail.com"), Some("1"), 1);
    ask(&mut engine, Some("b@x.io"), Some("2"), 2);
    ask(&mut engine, Some("J.Doe@gmail.com"), Some("2"), 3); // joins the two clusters
    ask(&mut engine, Some("J.Doe@gmail.com"), Some("3"), 4); // contact 3 holds the email too
    assert_eq!(engine.stats().joins, 1);
    rekey(
        &mut engine,
        Kind::Email,
        "j.doe@gmail.com",
        "jdoe@gmail.com",
    );
    assert_eq!(engine.stats().joins, 1);
    // Deleting contact 1 leaves 3 (holding the key) joined to 2 by the remembered join.
    let plan = engine.plan_delete(1, Timestamp(2_000)).unwrap();
    for change in &plan.changes {
        engine.apply(change).unwrap();
    }
    engine.check_invariants().unwrap();
    assert_eq!(primary_of(&engine, 3), 2);
}

#[test]
fn a_key_past_the_generic_threshold_is_blocked_and_links_nobody() {
    let mut engine = Engine::with_limits(Limits {
        generic_threshold: 2,
        max_cluster_size: 0,
    });
    ask(&mut engine, Some("a@x.io"), Some("000-000"), 1);
    ask(&mut engine, Some("b@x.io"), Some("000-000"), 2);
    ask(&mut engine, Some("c@x.io"), Some("000 000"), 3);
    assert_eq!(engine.stats().clusters, 2);
    rekey(&mut engine, Kind::Phone, "000-000", "000000");
    assert_eq!(
        engine.stats().clusters,
        2,
        "two holders are within the threshold"
    );
    let changes = rekey(&mut engine, Kind::Phone, "000 000", "000000");
    assert!(matches!(
        changes.as_slice(),
        [
            Change::Blocked {
                reason: BlockReason::Generic,
                ..
            },
            Change::Rekeyed { .. }
        ]
    ));
    rekey(&mut engine, Kind::Phone, "000 000", "000000");
    assert_eq!(
        engine.stats().clusters,
        3,
        "the blocked key holds nobody together"
    );
    assert_eq!(engine.blocked(Kind::Phone, "000000").unwrap().holders, 3);
}

#[test]
fn a_blocked_spelling_blocks_its_key() {
    let mut engine = Engine::new();
    ask(&mut engine, Some("a@x.io"), Some("555-1"), 1);
    let block = engine
        .plan_block(Kind::Phone, "555-1", BlockReason::Admin, Timestamp(5))
        .unwrap();
    engine.apply(&block[0]).unwrap();
    ask(&mut engine, Some("b@x.io"), Some("5551"), 6);
    let changes = rekey(&mut engine, Kind::Phone, "555-1", "5551");
    assert!(matches!(
        changes[0],
        Change::Blocked {
            reason: BlockReason::Admin,
            ..
        }
    ));
    assert_eq!(engine.stats().clusters, 2);
    assert_eq!(engine.blocked(Kind::Phone, "5551").unwrap().holders, 2);
}

#[test]
fn a_merge_past_the_cap_is_refused() {
    let mut engine = Engine::with_limits(Limits {
        generic_threshold: 0,
        max_cluster_size: 2,
    });
    ask(&mut engine, Some("a@x.io"), Some("1-1"), 1);
    ask(&mut engine, Some("a@x.io"), Some("2"), 2);
    ask(&mut engine, Some("c@x.io"), Some("11"), 3);
    let refused = engine.plan_rekey(Kind::Phone, "1-1", "11", Timestamp(9));
    assert_eq!(refused, Err(Refusal::ClusterLimit { size: 3, cap: 2 }));
}

#[test]
fn replaying_the_facts_rebuilds_the_same_state() {
    let mut engine = Engine::new();
    let mut log = Vec::new();
    for (i, (email, phone)) in [
        ("A.B@gmail.com", "1-2"),
        ("ab@gmail.com", "3"),
        ("x@y.z", "12"),
    ]
    .into_iter()
    .enumerate()
    {
        let q = Query::new(Email::parse(email).unwrap(), Phone::parse(phone).unwrap()).unwrap();
        let plan = engine.plan_identify(&q, Timestamp(i as i64)).unwrap();
        for c in plan.changes {
            engine.apply(&c).unwrap();
            log.push(c);
        }
    }
    log.extend(rekey(
        &mut engine,
        Kind::Email,
        "a.b@gmail.com",
        "ab@gmail.com",
    ));
    log.extend(rekey(&mut engine, Kind::Phone, "1-2", "12"));
    assert_eq!(engine.stats().clusters, 1);
    let mut replayed = Engine::new();
    for c in &log {
        replayed.apply(c).unwrap();
    }
    replayed.check_invariants().unwrap();
    assert_eq!(
        replayed.contacts().collect::<Vec<_>>(),
        engine.contacts().collect::<Vec<_>>()
    );
    assert_eq!(replayed.stats(), engine.stats());
}
