//! The worked examples of docs/API.md and the deletion rules, on the engine alone.

use super::image::Parts;
use super::*;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn created(
    id: ContactId,
    phone: Option<&str>,
    email: Option<&str>,
    linked: Option<ContactId>,
    when: &str,
) -> Change {
    Change::Created(NewContact {
        id,
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
        linked_id: linked,
        created_at: at(when),
        updated_at: at(when),
        deleted_at: None,
    })
}

fn engine_with(changes: &[Change]) -> Engine {
    let mut engine = Engine::new();
    for c in changes {
        engine.apply(c).unwrap();
    }
    engine.check_invariants().unwrap();
    engine
}

fn query(email: Option<&str>, phone: Option<&str>) -> Query {
    let email = email.and_then(|e| Email::parse(e).unwrap());
    let phone = phone.and_then(|p| Phone::parse(p).unwrap());
    Query::new(email, phone).unwrap()
}

/// Plans and applies `q` at `now`, returning the answer and the facts it made.
fn identify(engine: &mut Engine, q: &Query, now: Timestamp) -> (Identity, Vec<Change>) {
    let plan = engine.plan_identify(q, now).unwrap();
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    engine.check_invariants().unwrap();
    (
        engine.identity(plan.answer).unwrap().to_owned(),
        plan.changes,
    )
}

fn lorraine_and_mcfly() -> Engine {
    engine_with(&[
        created(
            1,
            Some("123456"),
            Some("lorraine@hillvalley.edu"),
            None,
            "2023-04-01T00:00:00.374Z",
        ),
        created(
            23,
            Some("123456"),
            Some("mcfly@hillvalley.edu"),
            Some(1),
            "2023-04-20T05:30:00.110Z",
        ),
    ])
}

fn george_and_biff() -> Engine {
    engine_with(&[
        created(
            11,
            Some("919191"),
            Some("george@hillvalley.edu"),
            None,
            "2023-04-11T00:00:00.374Z",
        ),
        created(
            27,
            Some("717171"),
            Some("biffsucks@hillvalley.edu"),
            None,
            "2023-04-21T05:30:00.110Z",
        ),
    ])
}

const LATER: Timestamp = Timestamp(1_700_000_000_000);

#[test]
fn a_request_that_repeats_what_is_known_answers_the_cluster_and_adds_nothing() {
    let expected = Identity {
        primary_contact_id: 1,
        emails: vec![
            "lorraine@hillvalley.edu".into(),
            "mcfly@hillvalley.edu".into(),
        ],
        phone_numbers: vec!["123456".into()],
        secondary_contact_ids: vec![23],
    };
    for q in [
        query(Some("mcfly@hillvalley.edu"), Some("123456")),
        query(None, Some("123456")),
        query(Some("lorraine@hillvalley.edu"), None),
        query(Some("mcfly@hillvalley.edu"), None),
    ] {
        let mut engine = lorraine_and_mcfly();
        let (answer, changes) = identify(&mut engine, &q, LATER);
        assert_eq!(answer, expected, "{q:?}");
        assert_eq!(changes, vec![], "{q:?}");
        assert_eq!(engine.stats().contacts, 2);
    }
}

#[test]
fn unknown_identifiers_create_a_primary_with_the_next_id() {
    let mut engine = lorraine_and_mcfly();
    let (answer, _) = identify(
        &mut engine,
        &query(Some("newunknown@hillvalley.edu"), Some("789012")),
        LATER,
    );
    assert_eq!(
        answer,
        Identity {
            primary_contact_id: 24,
            emails: vec!["newunknown@hillvalley.edu".into()],
            phone_numbers: vec!["789012".into()],
            secondary_contact_ids: vec![],
        }
    );
    let row = engine.contact(24).unwrap();
    assert_eq!(
        (row.link_precedence, row.linked_id, row.created_at),
        (Precedence::Primary, None, LATER)
    );
}

#[test]
fn merging_two_primaries_keeps_the_older_one_and_demotes_the_other() {
    let mut engine = george_and_biff();
    let (answer, changes) = identify(
        &mut engine,
        &query(Some("george@hillvalley.edu"), Some("717171")),
        LATER,
    );
    assert_eq!(
        answer,
        Identity {
            primary_contact_id: 11,
            emails: vec![
                "george@hillvalley.edu".into(),
                "biffsucks@hillvalley.edu".into()
            ],
            phone_numbers: vec!["919191".into(), "717171".into()],
            secondary_contact_ids: vec![27],
        }
    );
    assert!(
        changes.iter().all(|c| !matches!(c, Change::Created(_))),
        "a merge adds no row"
    );
    let biff = engine.contact(27).unwrap();
    assert_eq!(
        (biff.link_precedence, biff.linked_id, biff.updated_at),
        (Precedence::Secondary, Some(11), LATER)
    );
    let george = engine.contact(11).unwrap();
    assert_eq!(
        george.updated_at,
        at("2023-04-11T00:00:00.374Z"),
        "the primary's link did not change"
    );
}

#[test]
fn a_new_email_on_a_known_phone_becomes_a_secondary_of_the_primary() {
    let mut engine = lorraine_and_mcfly();
    let (answer, _) = identify(
        &mut engine,
        &query(Some("doc@hillvalley.edu"), Some("123456")),
        LATER,
    );
    assert_eq!(answer.secondary_contact_ids, vec![23, 24]);
    assert_eq!(answer.emails.last().unwrap(), "doc@hillvalley.edu");
    assert_eq!(engine.contact(24).unwrap().linked_id, Some(1));
}

#[test]
fn merging_relinks_the_demoted_primarys_secondaries_too() {
    let mut engine = george_and_biff();
    identify(
        &mut engine,
        &query(Some("biff2@hillvalley.edu"), Some("717171")),
        LATER,
    );
    let (answer, _) = identify(
        &mut engine,
        &query(Some("george@hillvalley.edu"), Some("717171")),
        Timestamp(LATER.0 + 5),
    );
    assert_eq!(answer.secondary_contact_ids, vec![27, 28]);
    assert_eq!(engine.contact(28).unwrap().linked_id, Some(11));
    assert_eq!(
        engine.contact(28).unwrap().updated_at,
        Timestamp(LATER.0 + 5)
    );
}

#[test]
fn new_contacts_are_never_older_than_what_exists_even_if_the_clock_goes_back() {
    let mut engine = lorraine_and_mcfly();
    let (answer, _) = identify(
        &mut engine,
        &query(Some("doc@hillvalley.edu"), Some("123456")),
        Timestamp(0),
    );
    assert_eq!(answer.primary_contact_id, 1);
    assert!(engine.contact(24).unwrap().created_at >= engine.contact(23).unwrap().created_at);
}

#[test]
fn deleting_the_bridge_splits_the_cluster_and_promotes_the_oldest_of_each_group() {
    // 1 (e1, p1) <- 2 (e2, p1) <- 3 (e2, p3): 2 is the only link between 1 and 3.
    let mut engine = Engine::new();
    identify(
        &mut engine,
        &query(Some("e1@x.io"), Some("1")),
        Timestamp(1),
    );
    identify(
        &mut engine,
        &query(Some("e2@x.io"), Some("1")),
        Timestamp(2),
    );
    identify(
        &mut engine,
        &query(Some("e2@x.io"), Some("3")),
        Timestamp(3),
    );
    let plan = engine.plan_delete(2, Timestamp(10)).unwrap();
    assert_eq!(plan.groups, vec![1, 3]);
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    engine.check_invariants().unwrap();
    let three = engine.contact(3).unwrap();
    assert_eq!(
        (three.link_precedence, three.updated_at),
        (Precedence::Primary, Timestamp(10))
    );
    assert_eq!(engine.contact(2).unwrap().deleted_at, Some(Timestamp(10)));
    assert_eq!(
        engine.contact(2).unwrap().linked_id,
        Some(1),
        "a deleted row keeps its last link"
    );
    assert_eq!(engine.stats().clusters, 2);
    assert_eq!(
        engine.plan_delete(2, Timestamp(11)),
        Err(EngineError::AlreadyDeleted(2))
    );
}

#[test]
fn a_remembered_join_keeps_a_cluster_whole_after_an_unrelated_deletion() {
    let mut engine = george_and_biff();
    identify(
        &mut engine,
        &query(Some("george@hillvalley.edu"), Some("717171")),
        LATER,
    );
    identify(
        &mut engine,
        &query(Some("marty@hillvalley.edu"), Some("919191")),
        LATER,
    );
    let plan = engine.plan_delete(28, Timestamp(LATER.0 + 1)).unwrap();
    assert_eq!(plan.groups, vec![11]);
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    assert_eq!(engine.identity(11).unwrap().secondary_contact_ids, vec![27]);
}

#[test]
fn deleting_a_joined_contact_forgets_the_join() {
    let mut engine = george_and_biff();
    identify(
        &mut engine,
        &query(Some("george@hillvalley.edu"), Some("717171")),
        LATER,
    );
    let plan = engine.plan_delete(27, Timestamp(LATER.0 + 1)).unwrap();
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    assert_eq!(engine.stats().joins, 0);
    // 717171 is free again: a new contact holding it starts a cluster of its own.
    let (answer, _) = identify(
        &mut engine,
        &query(Some("new@x.io"), Some("717171")),
        Timestamp(LATER.0 + 2),
    );
    assert_eq!(answer.primary_contact_id, 28);
}

#[test]
fn replaying_the_facts_of_an_engine_rebuilds_the_same_answers() {
    let mut engine = george_and_biff();
    identify(
        &mut engine,
        &query(Some("george@hillvalley.edu"), Some("717171")),
        LATER,
    );
    identify(&mut engine, &query(Some("x@y.z"), Some("919191")), LATER);
    let copy = engine_with(&engine.facts().collect::<Vec<_>>());
    assert_eq!(
        copy.contacts().collect::<Vec<_>>(),
        engine.contacts().collect::<Vec<_>>()
    );
    assert_eq!(copy.identity(27), engine.identity(27));
    assert_eq!(copy.stats(), engine.stats());
}

#[test]
fn applying_a_bad_fact_fails_and_changes_nothing() {
    let mut engine = lorraine_and_mcfly();
    let dup = created(1, None, Some("a@b.c"), None, "2023-04-01T00:00:00Z");
    assert_eq!(engine.apply(&dup), Err(EngineError::DuplicateId(1)));
    let dangling = Change::Joined {
        email: "nobody@x.io".into(),
        phone: "123456".into(),
    };
    assert!(matches!(
        engine.apply(&dangling),
        Err(EngineError::DanglingJoin(_))
    ));
    assert_eq!(engine.stats().contacts, 2);
    engine.check_invariants().unwrap();
}

/// Rows applied out of age order (as an import may bring them): the answer still lists the
/// oldest first, and each identifier once, where its oldest holder stands.
#[test]
fn rows_applied_out_of_age_order_answer_in_age_order() {
    let mut engine = engine_with(&[
        created(
            1,
            Some("111"),
            Some("a@x.io"),
            Some(4),
            "2023-04-03T00:00:00Z",
        ),
        created(
            2,
            Some("111"),
            Some("b@x.io"),
            Some(4),
            "2023-04-01T00:00:00Z",
        ),
        created(
            3,
            Some("222"),
            Some("a@x.io"),
            Some(4),
            "2023-04-02T00:00:00Z",
        ),
        created(4, Some("333"), Some("c@x.io"), None, "2023-03-01T00:00:00Z"),
        created(
            5,
            Some("333"),
            Some("b@x.io"),
            Some(4),
            "2023-05-01T00:00:00Z",
        ),
    ]);
    let want = Identity {
        primary_contact_id: 4,
        emails: vec!["c@x.io".into(), "b@x.io".into(), "a@x.io".into()],
        phone_numbers: vec!["333".into(), "111".into(), "222".into()],
        secondary_contact_ids: vec![2, 3, 1, 5],
    };
    assert_eq!(engine.identity(1).unwrap().to_owned(), want);
    // Deleting the oldest holder of b (contact 2) hands b to the next oldest (5), whose phone
    // still ties it to 4, while 111 still ties 1 to nothing else: 1 and 3 go their own way.
    let plan = engine.plan_delete(2, at("2023-06-01T00:00:00Z")).unwrap();
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    engine.check_invariants().unwrap();
    let four = engine.identity(4).unwrap().to_owned();
    assert_eq!(four.emails, ["c@x.io", "b@x.io"]);
    assert_eq!(four.secondary_contact_ids, [5]);
    let three = engine.identity(1).unwrap().to_owned();
    assert_eq!(three.primary_contact_id, 3);
    assert_eq!(three.emails, ["a@x.io"]);
    assert_eq!(three.phone_numbers, ["222", "111"]);
    assert_eq!(three.secondary_contact_ids, [1]);
}

/// An engine with every kind of state an image must carry: clusters merged by identify, a join,
/// a link, ids away from their natural slot, a deleted contact and one imported deleted.
pub(super) fn engine_with_every_kind_of_state() -> Engine {
    let mut engine = george_and_biff();
    for (email, phone) in [
        ("marty@x.io", Some("919191")),
        ("george@hillvalley.edu", Some("717171")),
        ("biffsucks@hillvalley.edu", None),
    ] {
        identify(&mut engine, &query(Some(email), phone), LATER);
    }
    let mut imported = created(
        90,
        Some("555"),
        Some("doc@x.io"),
        None,
        "2023-01-01T00:00:00Z",
    );
    if let Change::Created(c) = &mut imported {
        c.deleted_at = Some(at("2023-02-01T00:00:00Z"));
    }
    engine.apply(&imported).unwrap();
    engine
        .apply(&created(
            100,
            Some("888"),
            None,
            None,
            "2023-03-01T00:00:00Z",
        ))
        .unwrap();
    identify(&mut engine, &query(Some("einstein@x.io"), None), LATER);
    engine.apply(&Change::Linked { a: 100, b: 101 }).unwrap();
    let settled = Change::Settled {
        ids: vec![100],
        at: LATER,
    };
    engine.apply(&settled).unwrap();
    let plan = engine.plan_delete(28, Timestamp(LATER.0 + 1)).unwrap();
    for c in &plan.changes {
        engine.apply(c).unwrap();
    }
    engine.check_invariants().unwrap();
    engine
}

fn image_of(engine: &Engine) -> Parts<'static> {
    engine.parts().into_owned()
}

fn from_image(image: Parts<'_>) -> Result<Engine, String> {
    Engine::from_parts(image).map_err(|e| e.to_string())
}

pub(super) fn assert_same(copy: &Engine, engine: &Engine) {
    assert_eq!(copy.sorted_facts(), engine.sorted_facts());
    assert_eq!(
        copy.contacts().collect::<Vec<_>>(),
        engine.contacts().collect::<Vec<_>>()
    );
    for id in 0..=engine.max_id() + 1 {
        assert_eq!(copy.identity(id), engine.identity(id), "contact {id}");
    }
    assert_eq!(copy.stats(), engine.stats());
}

#[test]
fn an_engine_read_back_from_its_image_answers_and_goes_on_exactly_as_the_original() {
    let mut engine = engine_with_every_kind_of_state();
    let mut copy = from_image(image_of(&engine)).unwrap();
    copy.check_invariants().unwrap();
    assert_same(&copy, &engine);
    // Known identifiers are found (not interned again), new ones added, in both alike.
    for q in [
        query(Some("marty@x.io"), Some("888")),
        query(Some("new@x.io"), Some("919191")),
        query(Some("george@hillvalley.edu"), Some("717171")),
    ] {
        let (a, facts_a) = identify(&mut engine, &q, Timestamp(LATER.0 + 5));
        let (b, facts_b) = identify(&mut copy, &q, Timestamp(LATER.0 + 5));
        assert_eq!((a, facts_a), (b, facts_b));
    }
    assert_same(&copy, &engine);
}

#[test]
fn an_image_from_another_hash_function_has_its_tables_rebuilt() {
    let engine = engine_with_every_kind_of_state();
    let mut image = image_of(&engine);
    // As if written by a build whose hash differs: the probe no longer matches, and a table
    // trusted as it is would find nothing.
    image.emails.seed ^= 0x5555;
    image.phones.seed ^= 0x5555;
    let copy = from_image(image).unwrap();
    assert_same(&copy, &engine);
    let q = query(Some("george@hillvalley.edu"), Some("717171"));
    assert_eq!(
        copy.plan_identify(&q, LATER),
        engine.plan_identify(&q, LATER)
    );
}
