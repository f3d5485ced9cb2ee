//! Edits on the engine alone: splits, merges, both at once, the guards, and the preview a dry run
//! shows, which must be what the edit then does.

use super::super::*;

const T0: i64 = 1_680_307_200_000;

fn email(text: &str) -> Patch<Email> {
    Patch::Set(Email::parse(text).unwrap().unwrap())
}

fn phone(text: &str) -> Patch<Phone> {
    Patch::Set(Phone::parse(text).unwrap().unwrap())
}

fn edit(id: ContactId, email: Patch<Email>, phone: Patch<Phone>) -> Op {
    Op::Edit { id, email, phone }
}

/// An engine under `limits` after the requests (email, phone), one millisecond apart.
fn engine_after(limits: Limits, requests: &[(Option<&str>, Option<&str>)]) -> Engine {
    let mut engine = Engine::with_limits(limits);
    engine.track_moves();
    for (i, &(e, p)) in requests.iter().enumerate() {
        let query = Query::new(
            e.map(|e| Email::parse(e).unwrap().unwrap()),
            p.map(|p| Phone::parse(p).unwrap().unwrap()),
        )
        .unwrap();
        let plan = engine
            .plan(&Op::Identify(query), Timestamp(T0 + i as i64))
            .unwrap();
        apply(&mut engine, &plan);
    }
    engine.take_moves();
    engine
}

fn apply(engine: &mut Engine, plan: &Plan) {
    for fact in &plan.facts {
        engine.apply(fact).unwrap();
    }
    engine.check_invariants().unwrap();
}

/// Plans `op` at `now`, checks that the preview of the plan is what applying it leaves, and
/// returns the groups of the outcome.
fn run(engine: &mut Engine, op: &Op, now: i64) -> Result<Vec<Vec<ContactId>>, Refusal> {
    let plan = engine.plan(op, Timestamp(now))?;
    let preview = engine.preview_edit(&plan).expect("an edit's plan");
    apply(engine, &plan);
    let Outcome::Edited { id, groups } = plan.outcome else {
        panic!("not an edit's outcome")
    };
    let identities: Vec<Identity> = groups
        .iter()
        .map(|g| engine.identity(g[0]).unwrap().to_owned())
        .collect();
    assert_eq!(preview.identities, identities, "the preview is the outcome");
    assert_eq!(
        Some(preview.contact),
        engine.contact(id),
        "the previewed row"
    );
    Ok(groups)
}

fn same_state(a: &Engine, b: &Engine) -> bool {
    a.contacts().collect::<Vec<_>>() == b.contacts().collect::<Vec<_>>()
        && a.stats() == b.stats()
        && a.blocklist() == b.blocklist()
}

#[test]
fn correcting_the_email_a_cluster_hung_on_splits_it() {
    // 1 a@x/111, 2 a@x/222: one cluster by a@x. Editing 2's email splits it.
    let mut engine = engine_after(
        Limits::OFF,
        &[(Some("a@x.io"), Some("111")), (Some("a@x.io"), Some("222"))],
    );
    let groups = run(&mut engine, &edit(2, email("b@x.io"), Patch::Keep), T0 + 10).unwrap();
    assert_eq!(groups, vec![vec![2], vec![1]]);
    let row = engine.contact(2).unwrap();
    assert_eq!(
        (row.email.as_deref(), row.linked_id),
        (Some("b@x.io"), None)
    );
    assert_eq!(row.updated_at, Timestamp(T0 + 10));
    assert_eq!(row.created_at, Timestamp(T0 + 1), "createdAt kept");
    assert_eq!(engine.stats().clusters, 2);
    let moved = engine.take_moves();
    assert_eq!(
        moved,
        vec![Moved {
            id: 2,
            primary: Some(2)
        }]
    );
}

#[test]
fn an_edit_to_a_value_another_cluster_holds_merges_the_two_oldest_primary_first() {
    // 1 a@x, 2 b@x/222, 3 c@x/222 (2 and 3 one cluster). Editing 2's email to a@x merges all.
    let mut engine = engine_after(
        Limits::OFF,
        &[
            (Some("a@x.io"), None),
            (Some("b@x.io"), Some("222")),
            (Some("c@x.io"), Some("222")),
        ],
    );
    let groups = run(&mut engine, &edit(2, email("a@x.io"), Patch::Keep), T0 + 10).unwrap();
    assert_eq!(groups, vec![vec![1, 2, 3]]);
    for id in [2, 3] {
        assert_eq!(engine.contact(id).unwrap().linked_id, Some(1));
        assert_eq!(engine.contact(id).unwrap().updated_at, Timestamp(T0 + 10));
    }
    assert_eq!(
        engine.contact(1).unwrap().updated_at,
        Timestamp(T0),
        "1's link did not change"
    );
    let moved = engine.take_moves();
    assert_eq!(
        moved,
        vec![
            Moved {
                id: 2,
                primary: Some(1)
            },
            Moved {
                id: 3,
                primary: Some(1)
            }
        ]
    );
}

#[test]
fn one_edit_can_split_its_cluster_and_merge_with_another() {
    // 1 a@x/111 and 2 a@x/222 are one cluster; 3 c@x/333 another. Editing 1 to c@x/111:
    // 2 is left alone, 1 joins 3 (1 older, so primary).
    let mut engine = engine_after(
        Limits::OFF,
        &[
            (Some("a@x.io"), Some("111")),
            (Some("a@x.io"), Some("222")),
            (Some("c@x.io"), Some("333")),
        ],
    );
    let groups = run(&mut engine, &edit(1, email("c@x.io"), Patch::Keep), T0 + 10).unwrap();
    assert_eq!(groups, vec![vec![1, 3], vec![2]]);
    assert_eq!(engine.contact(2).unwrap().linked_id, None);
    assert_eq!(engine.contact(3).unwrap().linked_id, Some(1));
    assert_eq!(engine.stats().clusters, 2);
}

#[test]
fn a_join_naming_a_value_no_one_holds_any_more_is_forgotten() {
    // 1 a@x, 2 /222, then a@x with 222 joins them. Editing 1's email away forgets the join.
    let mut engine = engine_after(
        Limits::OFF,
        &[
            (Some("a@x.io"), None),
            (None, Some("222")),
            (Some("a@x.io"), Some("222")),
        ],
    );
    assert_eq!(engine.stats().joins, 1);
    let groups = run(&mut engine, &edit(1, email("z@x.io"), Patch::Keep), T0 + 10).unwrap();
    assert_eq!(groups, vec![vec![1], vec![2]]);
    assert_eq!(engine.stats().joins, 0);
    // Editing it back makes no join: it was forgotten, and an edit is no request.
    let groups = run(&mut engine, &edit(1, email("a@x.io"), Patch::Keep), T0 + 11).unwrap();
    assert_eq!(groups, vec![vec![1]]);
}

#[test]
fn a_join_naming_a_value_the_edited_row_keeps_still_holds() {
    let mut engine = engine_after(
        Limits::OFF,
        &[
            (Some("a@x.io"), Some("111")),
            (None, Some("222")),
            (Some("a@x.io"), Some("222")),
        ],
    );
    let groups = run(&mut engine, &edit(1, Patch::Keep, phone("999")), T0 + 10).unwrap();
    assert_eq!(
        groups,
        vec![vec![1, 2]],
        "the join of a@x and 222 still ties them"
    );
}

#[test]
fn removing_a_field_keeps_the_other_and_removing_both_is_refused() {
    let mut engine = engine_after(Limits::OFF, &[(Some("a@x.io"), Some("111"))]);
    let before = engine.clone();
    let refused = engine.plan(&edit(1, Patch::Remove, Patch::Remove), Timestamp(T0 + 5));
    assert_eq!(refused, Err(Refusal::NoIdentifierLeft(1)));
    run(&mut engine, &edit(1, Patch::Remove, Patch::Keep), T0 + 5).unwrap();
    let row = engine.contact(1).unwrap();
    assert_eq!(
        (row.email, row.phone_number.as_deref()),
        (None, Some("111"))
    );
    assert!(!same_state(&engine, &before));
    let refused = engine.plan(&edit(1, Patch::Keep, Patch::Remove), Timestamp(T0 + 6));
    assert_eq!(refused, Err(Refusal::NoIdentifierLeft(1)));
}

#[test]
fn editing_to_the_values_it_holds_changes_nothing() {
    let engine = engine_after(
        Limits::OFF,
        &[(Some("a@x.io"), Some("111")), (Some("a@x.io"), Some("222"))],
    );
    let plan = engine
        .plan(&edit(2, email("a@x.io"), Patch::Keep), Timestamp(T0 + 9))
        .unwrap();
    assert!(plan.facts.is_empty());
    assert_eq!(
        plan.outcome,
        Outcome::Edited {
            id: 2,
            groups: vec![vec![1, 2]]
        }
    );
    let preview = engine.preview_edit(&plan).unwrap();
    assert_eq!(Some(preview.contact), engine.contact(2));
}

#[test]
fn unknown_and_deleted_contacts_are_refused() {
    let mut engine = engine_after(
        Limits::OFF,
        &[(Some("a@x.io"), None), (Some("b@x.io"), None)],
    );
    let plan = engine.plan(&Op::Delete(2), Timestamp(T0 + 5)).unwrap();
    apply(&mut engine, &plan);
    let op = |id| edit(id, email("c@x.io"), Patch::Keep);
    assert_eq!(
        engine.plan(&op(9), Timestamp(T0 + 6)),
        Err(Refusal::UnknownContact(9))
    );
    assert_eq!(
        engine.plan(&op(2), Timestamp(T0 + 6)),
        Err(Refusal::DeletedContact(2))
    );
}

#[test]
fn a_blocked_new_value_is_refused_and_a_kept_one_is_not() {
    let mut engine = engine_after(
        Limits::OFF,
        &[(Some("a@x.io"), Some("000")), (Some("b@x.io"), None)],
    );
    let block = engine
        .plan(
            &Op::Block {
                kind: Kind::Phone,
                value: "000".into(),
                reason: BlockReason::Admin,
            },
            Timestamp(T0 + 5),
        )
        .unwrap();
    apply(&mut engine, &block);
    let refused = engine.plan(&edit(2, Patch::Keep, phone("000")), Timestamp(T0 + 6));
    assert!(matches!(
        refused,
        Err(Refusal::BlockedValue {
            kind: Kind::Phone,
            generic: false,
            ..
        })
    ));
    // Contact 1 keeps its blocked phone while its email changes.
    run(&mut engine, &edit(1, email("c@x.io"), Patch::Keep), T0 + 7).unwrap();
    assert_eq!(engine.blocked(Kind::Phone, "000").unwrap().holders, 1);
}

#[test]
fn an_edit_that_would_make_a_value_generic_is_refused_and_blocks_nothing() {
    let limits = Limits {
        generic_threshold: 2,
        max_cluster_size: 0,
    };
    let engine = engine_after(
        limits,
        &[
            (Some("a@x.io"), Some("000")),
            (Some("b@x.io"), Some("000")),
            (Some("c@x.io"), None),
        ],
    );
    let refused = engine.plan(&edit(3, Patch::Keep, phone("000")), Timestamp(T0 + 6));
    assert!(matches!(
        refused,
        Err(Refusal::BlockedValue {
            kind: Kind::Phone,
            generic: true,
            ..
        })
    ));
    assert!(engine.blocklist().is_empty());
}

#[test]
fn an_edit_over_the_cap_is_refused() {
    let limits = Limits {
        generic_threshold: 0,
        max_cluster_size: 2,
    };
    let engine = engine_after(
        limits,
        &[
            (Some("a@x.io"), Some("111")),
            (Some("a@x.io"), Some("222")),
            (Some("c@x.io"), None),
        ],
    );
    let refused = engine.plan(&edit(3, email("a@x.io"), Patch::Keep), Timestamp(T0 + 6));
    assert_eq!(refused, Err(Refusal::ClusterLimit { size: 3, cap: 2 }));
}

#[test]
fn an_imported_link_holds_through_an_edit() {
    let mut engine = Engine::new();
    for (id, e, linked) in [(1, "a@x.io", None), (2, "b@x.io", Some(1))] {
        engine
            .apply(&Change::Created(NewContact {
                id,
                email: Some(e.into()),
                phone: None,
                linked_id: linked,
                created_at: Timestamp(T0 + i64::from(id)),
                updated_at: Timestamp(T0 + i64::from(id)),
                deleted_at: None,
            }))
            .unwrap();
    }
    engine.apply(&Change::Linked { a: 1, b: 2 }).unwrap();
    let groups = run(&mut engine, &edit(2, email("z@x.io"), Patch::Keep), T0 + 10).unwrap();
    assert_eq!(groups, vec![vec![1, 2]]);
}

#[test]
fn an_edited_engine_rebuilt_from_its_facts_or_its_image_is_the_same() {
    let mut engine = engine_after(
        Limits::OFF,
        &[
            (Some("a@x.io"), Some("111")),
            (Some("a@x.io"), Some("222")),
            (Some("c@x.io"), Some("333")),
        ],
    );
    run(
        &mut engine,
        &edit(1, email("c@x.io"), phone("222")),
        T0 + 10,
    )
    .unwrap();
    let mut copy = Engine::new();
    for fact in engine.facts().collect::<Vec<_>>() {
        copy.apply(&fact).unwrap();
    }
    copy.check_invariants().unwrap();
    assert!(same_state(&copy, &engine));
    let image = Engine::from_parts(engine.parts().into_owned()).unwrap();
    assert!(same_state(&image, &engine));
}
