//! Random sequences of requests, deletions, blocks, unblocks and edits, run through the engine and through the brute-force
//! model of docs/API.md, which must agree after every step; and engines rebuilt from their facts,
//! which must be indistinguishable from the original.

use crate::model;

use std::collections::BTreeSet;

use identity_engine::engine::{
    BlockReason, Change, ContactId, Email, Engine, Identity, Kind, Limits, Op as EngineOp,
    Outcome as Outcome_, Patch, Phone, Query, Refusal, Target, Timestamp,
};
use model::{DeleteError, EditError, Erase, EraseError, Field, Model, ModelAnswer, Refused};
use proptest::prelude::*;

/// Small pools, so that requests keep colliding, merging and splitting clusters.
const EMAILS: [&str; 4] = [
    "doc@hillvalley.edu",
    "marty@hillvalley.edu",
    "george@hillvalley.edu",
    "biff@hillvalley.edu",
];
const PHONES: [&str; 4] = ["123456", "919191", "717171", "+1 (555) 010-0"];
const START: i64 = 1_680_307_200_000;

#[derive(Clone, Debug)]
enum Op {
    Identify {
        email: Option<usize>,
        phone: Option<usize>,
    },
    /// Deletes contact `pick % (highest id + 1) + 1`: mostly one that exists, now and then one
    /// already deleted or one no contact has yet.
    Delete {
        pick: u32,
    },
    /// An admin blocks a value of the pools (`email` picks the kind).
    Block {
        email: bool,
        value: usize,
    },
    Unblock {
        email: bool,
        value: usize,
    },
    /// Erases contact `pick % (highest id + 1) + 1` (as `Delete` picks).
    EraseContact {
        pick: u32,
    },
    /// Erases every holder of a value of the pools.
    EraseValue {
        email: bool,
        value: usize,
    },
    /// A purge: every pending erasure is done.
    Purge,
    /// Edits contact `pick` (picked as a deletion's): each field kept, removed or set to a
    /// value of the pools.
    Edit {
        pick: u32,
        email: Edit,
        phone: Edit,
    },
}

/// One field of a generated edit.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Keep,
    Remove,
    Set(usize),
}

/// One request: the wall clock moves by `tick` (maybe zero, maybe backwards), then `op` runs.
#[derive(Clone, Debug)]
struct Step {
    tick: i64,
    op: Op,
}

/// What a step answered, in terms both sides share.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Answer(Identity),
    Groups(Vec<ContactId>),
    Refused(DeleteError),
    Guard(Refused),
    NotBlocked,
    /// An edit: the identities it touched.
    Edited(Vec<Identity>),
    /// An edit that would leave no identifier.
    NoIdentifier,
    Erased(u64, Vec<ContactId>),
    NothingToErase,
    Purged(Vec<u64>),
}

/// Erasures and purges, rarer than requests so that clusters still grow between them.
fn erasure_op(emails: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u32>().prop_map(|pick| Op::EraseContact { pick }),
        2 => (any::<bool>(), 0..emails.min(PHONES.len())).prop_map(|(email, value)| Op::EraseValue { email, value }),
        1 => Just(Op::Purge),
    ]
}

fn tick() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0), 6 => 1..=5i64, 1 => -10..=-1i64]
}

fn op() -> impl Strategy<Value = Op> {
    let (email, phone) = (0..EMAILS.len(), 0..PHONES.len());
    prop_oneof![
        3 => (email.clone(), phone.clone()).prop_map(|(e, p)| Op::Identify { email: Some(e), phone: Some(p) }),
        1 => email.prop_map(|e| Op::Identify { email: Some(e), phone: None }),
        1 => phone.prop_map(|p| Op::Identify { email: None, phone: Some(p) }),
        2 => any::<u32>().prop_map(|pick| Op::Delete { pick }),
        2 => edit_op(EMAILS.len()),
        1 => erasure_op(EMAILS.len()),
    ]
}

/// An edit of a random contact, its fields drawn from the first `emails` emails and the phones.
fn edit_op(emails: usize) -> impl Strategy<Value = Op> {
    let field = |values: usize| {
        prop_oneof![
            2 => Just(Edit::Keep),
            1 => Just(Edit::Remove),
            4 => (0..values).prop_map(Edit::Set),
        ]
    };
    (any::<u32>(), field(emails), field(PHONES.len())).prop_map(|(pick, email, phone)| Op::Edit {
        pick,
        email,
        phone,
    })
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (tick(), op()).prop_map(|(tick, op)| Step { tick, op }),
        1..=max,
    )
}

/// Requests over wider pools (so that values gather holders past a small generic threshold and
/// clusters grow past a small cap), deletions, blocks and unblocks.
fn guarded_op() -> impl Strategy<Value = Op> {
    let (email, phone) = (0..GUARDED_EMAILS, 0..PHONES.len());
    prop_oneof![
        5 => (email.clone(), phone.clone()).prop_map(|(e, p)| Op::Identify { email: Some(e), phone: Some(p) }),
        1 => email.clone().prop_map(|e| Op::Identify { email: Some(e), phone: None }),
        1 => phone.clone().prop_map(|p| Op::Identify { email: None, phone: Some(p) }),
        1 => any::<u32>().prop_map(|pick| Op::Delete { pick }),
        1 => (any::<bool>(), 0..PHONES.len()).prop_map(|(email, value)| Op::Block { email, value }),
        1 => (any::<bool>(), 0..PHONES.len()).prop_map(|(email, value)| Op::Unblock { email, value }),
        2 => edit_op(GUARDED_EMAILS),
        1 => erasure_op(GUARDED_EMAILS),
    ]
}

fn guarded_steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (tick(), guarded_op()).prop_map(|(tick, op)| Step { tick, op }),
        1..=max,
    )
}

/// Emails of the guarded runs: the first four of `EMAILS`, then generated ones.
const GUARDED_EMAILS: usize = 12;

fn email_text(i: usize) -> String {
    EMAILS
        .get(i)
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("customer{i}@shop.example"))
}

fn value_of(email: bool, value: usize) -> (Kind, String) {
    if email {
        (Kind::Email, email_text(value))
    } else {
        (Kind::Phone, PHONES[value].to_owned())
    }
}

/// The guards of the guarded runs: small, so that each fires often.
const SMALL_GUARDS: Limits = Limits {
    generic_threshold: 3,
    max_cluster_size: 6,
};

/// The wall clock before step `i`.
fn clock(steps: &[Step], i: usize) -> i64 {
    START + steps[..=i].iter().map(|s| s.tick).sum::<i64>()
}

fn query(email: Option<usize>, phone: Option<usize>) -> Query {
    let email = email.map(|i| Email::parse(&email_text(i)).unwrap().unwrap());
    let phone = phone.map(|i| Phone::parse(PHONES[i]).unwrap().unwrap());
    Query::new(email, phone).expect("every generated request names an identifier")
}

fn delete_target(op: &Op, max_id: ContactId) -> Option<ContactId> {
    match op {
        Op::Delete { pick } => Some(pick % (max_id + 1) + 1),
        _ => None,
    }
}

fn edit_target(pick: u32, max_id: ContactId) -> ContactId {
    pick % (max_id + 1) + 1
}

fn email_patch(field: Edit) -> Patch<Email> {
    match field {
        Edit::Keep => Patch::Keep,
        Edit::Remove => Patch::Remove,
        Edit::Set(i) => Patch::Set(Email::parse(&email_text(i)).unwrap().unwrap()),
    }
}

fn phone_patch(field: Edit) -> Patch<Phone> {
    match field {
        Edit::Keep => Patch::Keep,
        Edit::Remove => Patch::Remove,
        Edit::Set(i) => Patch::Set(Phone::parse(PHONES[i]).unwrap().unwrap()),
    }
}

fn model_field(field: Edit, text: &str) -> Field<'_> {
    match field {
        Edit::Keep => Field::Keep,
        Edit::Remove => Field::Remove,
        Edit::Set(_) => Field::Set(text),
    }
}

fn erase_target(op: &Op, max_id: ContactId) -> Option<Erase> {
    match *op {
        Op::EraseContact { pick } => Some(Erase::Contact(pick % (max_id + 1) + 1)),
        Op::EraseValue { email, value } => {
            let (kind, value) = value_of(email, value);
            Some(Erase::Value(kind, value))
        }
        _ => None,
    }
}

/// The op of the engine's one path that `op` asks for.
fn engine_op(op: &Op, max_id: ContactId) -> EngineOp {
    match *op {
        Op::Identify { email, phone } => EngineOp::Identify(query(email, phone)),
        Op::Delete { .. } => EngineOp::Delete(delete_target(op, max_id).expect("a delete")),
        Op::Block { email, value } => {
            let (kind, value) = value_of(email, value);
            EngineOp::Block {
                kind,
                value,
                reason: BlockReason::Admin,
            }
        }
        Op::Unblock { email, value } => {
            let (kind, value) = value_of(email, value);
            EngineOp::Unblock { kind, value }
        }
        Op::Edit { pick, email, phone } => EngineOp::Edit {
            id: edit_target(pick, max_id),
            email: email_patch(email),
            phone: phone_patch(phone),
        },
        Op::EraseContact { .. } | Op::EraseValue { .. } => EngineOp::Erase {
            target: match erase_target(op, max_id).expect("an erasure") {
                Erase::Contact(id) => Target::Contact(id),
                Erase::Value(kind, value) => Target::Value { kind, value },
            },
            purge_within_ms: 0,
        },
        Op::Purge => EngineOp::Purge {
            erasures: (1..=max_id as u64 + 64).collect(),
        },
    }
}

/// Plans `op` on the engine (`Engine::plan`, the store's one path), applies every fact it
/// implies, and says what it answered. An edit's preview (what a dry run shows) must be what
/// the edit then does.
fn run_on_engine(engine: &mut Engine, op: &Op, now: i64) -> Outcome {
    let plan = match engine.plan(&engine_op(op, engine.max_id()), Timestamp(now)) {
        Ok(plan) => plan,
        Err(Refusal::UnknownContact(_)) => return Outcome::Refused(DeleteError::Unknown),
        Err(Refusal::DeletedContact(_)) => return Outcome::Refused(DeleteError::AlreadyDeleted),
        Err(Refusal::NotBlocked { .. }) => return Outcome::NotBlocked,
        Err(Refusal::NoIdentifierLeft(_)) => return Outcome::NoIdentifier,
        Err(Refusal::NothingToErase(_)) => return Outcome::NothingToErase,
        Err(Refusal::ErasureOfBlocked { .. }) => return Outcome::Guard(Refused::Blocked),
        Err(refusal) => return Outcome::Guard(refused(refusal)),
    };
    let preview = engine.preview_edit(&plan);
    apply_all(engine, &plan.facts);
    match plan.outcome {
        Outcome_::Identity(id) => {
            let answer = engine
                .identity(id)
                .expect("the answer names a live contact");
            Outcome::Answer(answer.to_owned())
        }
        Outcome_::Deleted { groups, .. } => Outcome::Groups(groups),
        Outcome_::Blocked { kind, value } | Outcome_::Unblocked { kind, value } => {
            Outcome::Groups(engine.primaries_holding(kind, &value))
        }
        Outcome_::Edited { id, groups } => {
            let identities: Vec<Identity> = (groups.iter())
                .map(|g| engine.identity(g[0]).expect("a live group").to_owned())
                .collect();
            let preview = preview.expect("an edit's plan has a preview");
            assert_eq!(preview.identities, identities, "the dry run's identities");
            assert_eq!(
                Some(preview.contact),
                engine.contact(id),
                "the dry run's row"
            );
            Outcome::Edited(identities)
        }
        Outcome_::Erased { erasure, groups } => Outcome::Erased(erasure, groups),
        Outcome_::Purged { erasures } => Outcome::Purged(erasures),
        other => panic!("an outcome no step asks for: {other:?}"),
    }
}

fn refused(refusal: Refusal) -> Refused {
    match refusal {
        Refusal::ClusterLimit { .. } => Refused::ClusterLimit,
        Refusal::Blocked | Refusal::BlockedValue { .. } => Refused::Blocked,
        other => panic!("a refusal no step can cause: {other}"),
    }
}

fn apply_all(engine: &mut Engine, changes: &[Change]) {
    for change in changes {
        engine
            .apply(change)
            .unwrap_or_else(|e| panic!("a planned change failed to apply: {change:?}: {e}"));
    }
}

fn run_on_model(model: &mut Model, op: &Op, now: i64) -> Outcome {
    let max_id = model.rows().iter().map(|r| r.id).max().unwrap_or(0);
    if let Some(id) = delete_target(op, max_id) {
        return match model.delete(id, now) {
            Ok(groups) => Outcome::Groups(groups),
            Err(refused) => Outcome::Refused(refused),
        };
    }
    if let Some(target) = erase_target(op, max_id) {
        return match model.erase(&target, now) {
            Ok((erasure, groups)) => Outcome::Erased(erasure, groups),
            Err(EraseError::NotFound) => Outcome::NothingToErase,
            Err(EraseError::Blocked) => Outcome::Guard(Refused::Blocked),
        };
    }
    match *op {
        Op::Identify { email, phone } => {
            let email = email.map(email_text);
            let phone = phone.map(|i| PHONES[i]);
            match model.identify_guarded(email.as_deref(), phone, now) {
                Ok(answer) => Outcome::Answer(identity(answer)),
                Err(refused) => Outcome::Guard(refused),
            }
        }
        Op::Block { email, value } => {
            let (kind, value) = value_of(email, value);
            Outcome::Groups(model.block(kind, &value, BlockReason::Admin, now))
        }
        Op::Unblock { email, value } => {
            let (kind, value) = value_of(email, value);
            match model.unblock(kind, &value, now) {
                Ok(Some(groups)) => Outcome::Groups(groups),
                Ok(None) => Outcome::NotBlocked,
                Err(refused) => Outcome::Guard(refused),
            }
        }
        Op::Edit { pick, email, phone } => {
            let email_value = match email {
                Edit::Set(i) => email_text(i),
                _ => String::new(),
            };
            let phone_value = match phone {
                Edit::Set(i) => PHONES[i],
                _ => "",
            };
            let email = model_field(email, &email_value);
            let phone = model_field(phone, phone_value);
            match model.edit(edit_target(pick, max_id), email, phone, now) {
                Ok(answers) => Outcome::Edited(answers.into_iter().map(identity).collect()),
                Err(EditError::Missing(missing)) => Outcome::Refused(missing),
                Err(EditError::NoIdentifier) => Outcome::NoIdentifier,
                Err(EditError::Guard(refused)) => Outcome::Guard(refused),
            }
        }
        Op::Purge => Outcome::Purged(model.purge()),
        Op::Delete { .. } | Op::EraseContact { .. } | Op::EraseValue { .. } => unreachable!(),
    }
}

fn identity(answer: ModelAnswer) -> Identity {
    Identity {
        primary_contact_id: answer.primary_contact_id,
        emails: answer.emails,
        phone_numbers: answer.phone_numbers,
        secondary_contact_ids: answer.secondary_contact_ids,
    }
}

fn remembered_joins(engine: &Engine) -> BTreeSet<(String, String)> {
    let joins = engine.facts().filter_map(|fact| match fact {
        Change::Joined { email, phone } | Change::JoinedAt { email, phone, .. } => {
            Some((email, phone))
        }
        _ => None,
    });
    joins.collect()
}

/// Everything the engine shows that the model also knows must be equal.
fn assert_same_state(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    engine.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(engine.contacts().collect::<Vec<_>>(), model.contacts());
    let joins: BTreeSet<_> = model.joins().iter().cloned().collect();
    prop_assert_eq!(remembered_joins(engine), joins);
    let stats = engine.stats();
    let erased = model
        .contacts()
        .iter()
        .filter(|c| c.erased_at.is_some())
        .count();
    prop_assert_eq!(
        (
            stats.contacts,
            stats.deleted,
            stats.clusters,
            stats.joins,
            stats.erased
        ),
        (
            model.rows().len(),
            model.gone(),
            model.cluster_count(),
            model.joins().len(),
            erased
        )
    );
    let ledger: Vec<(Vec<ContactId>, bool)> = (engine.erasures().iter())
        .map(|e| (e.contacts.clone(), !e.is_pending()))
        .collect();
    prop_assert_eq!(ledger.as_slice(), model.ledger());
    let blocklist: Vec<_> = engine
        .blocklist()
        .into_iter()
        .map(|b| (b.kind, b.value, b.reason, b.holders))
        .collect();
    let expected: Vec<_> = model
        .blocked()
        .into_iter()
        .map(|(kind, value, reason)| {
            let holders = model.live_holders(kind, &value);
            (kind, value, reason, holders)
        })
        .collect();
    prop_assert_eq!(blocklist, expected);
    prop_assert_eq!(engine.largest_cluster(), model.largest_cluster());
    Ok(())
}

/// The answer for every id, None for deleted or unknown ones.
fn every_identity(engine: &Engine) -> Vec<Option<Identity>> {
    (1..=engine.max_id() + 1)
        .map(|id| engine.identity(id).map(|i| i.to_owned()))
        .collect()
}

fn rebuilt(engine: &Engine) -> Engine {
    let mut copy = Engine::with_limits(engine.limits());
    apply_all(&mut copy, &engine.facts().collect::<Vec<_>>());
    copy
}

/// Both engines show the same rows, answers and counts.
fn assert_same_engine(copy: &Engine, original: &Engine) -> Result<(), TestCaseError> {
    copy.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(
        copy.contacts().collect::<Vec<_>>(),
        original.contacts().collect::<Vec<_>>()
    );
    prop_assert_eq!(every_identity(copy), every_identity(original));
    prop_assert_eq!(remembered_joins(copy), remembered_joins(original));
    prop_assert_eq!(copy.stats(), original.stats());
    prop_assert_eq!(copy.max_id(), original.max_id());
    prop_assert_eq!(copy.blocklist(), original.blocklist());
    prop_assert_eq!(copy.erasures(), original.erasures());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_engine_answers_and_stores_what_the_model_of_the_spec_does(steps in steps(60)) {
        let (mut engine, mut model) = (Engine::new(), Model::new());
        for (i, step) in steps.iter().enumerate() {
            let now = clock(&steps, i);
            let from_engine = run_on_engine(&mut engine, &step.op, now);
            let from_model = run_on_model(&mut model, &step.op, now);
            prop_assert_eq!(from_engine, from_model, "step {}: {:?}", i, step);
            assert_same_state(&engine, &model)?;
        }
    }

    #[test]
    fn an_engine_rebuilt_from_its_facts_has_the_same_rows_and_answers(steps in steps(60)) {
        let mut engine = Engine::new();
        for (i, step) in steps.iter().enumerate() {
            run_on_engine(&mut engine, &step.op, clock(&steps, i));
        }
        assert_same_engine(&rebuilt(&engine), &engine)?;
    }

    #[test]
    fn an_engine_rebuilt_from_its_facts_goes_on_like_the_original(
        steps in steps(60),
        rebuild_at in any::<prop::sample::Index>(),
    ) {
        let rebuild_at = rebuild_at.index(steps.len());
        let mut engine = Engine::new();
        for (i, step) in steps[..rebuild_at].iter().enumerate() {
            run_on_engine(&mut engine, &step.op, clock(&steps, i));
        }
        let mut copy = rebuilt(&engine);
        for (i, step) in steps.iter().enumerate().skip(rebuild_at) {
            let now = clock(&steps, i);
            let from_copy = run_on_engine(&mut copy, &step.op, now);
            let from_original = run_on_engine(&mut engine, &step.op, now);
            prop_assert_eq!(from_copy, from_original, "step {}: {:?}", i, step);
            assert_same_engine(&copy, &engine)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn under_small_guards_the_engine_answers_refuses_and_stores_what_the_model_does(
        steps in guarded_steps(80),
    ) {
        let mut engine = Engine::with_limits(SMALL_GUARDS);
        let mut model = Model::with_guards(3, 6);
        for (i, step) in steps.iter().enumerate() {
            let now = clock(&steps, i);
            let from_engine = run_on_engine(&mut engine, &step.op, now);
            let from_model = run_on_model(&mut model, &step.op, now);
            prop_assert_eq!(from_engine, from_model, "step {}: {:?}", i, step);
            assert_same_state(&engine, &model)?;
            // What a snapshot would hold must load and be the same engine.
            let image = Engine::from_parts(engine.parts().into_owned());
            let copy = image.map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
            assert_same_engine(&copy, &engine)?;
        }
    }

    #[test]
    fn under_small_guards_an_engine_rebuilt_from_its_facts_goes_on_like_the_original(
        steps in guarded_steps(80),
        rebuild_at in any::<prop::sample::Index>(),
    ) {
        let rebuild_at = rebuild_at.index(steps.len());
        let mut engine = Engine::with_limits(SMALL_GUARDS);
        for (i, step) in steps[..rebuild_at].iter().enumerate() {
            run_on_engine(&mut engine, &step.op, clock(&steps, i));
        }
        let mut copy = rebuilt(&engine);
        assert_same_engine(&copy, &engine)?;
        for (i, step) in steps.iter().enumerate().skip(rebuild_at) {
            let now = clock(&steps, i);
            let from_copy = run_on_engine(&mut copy, &step.op, now);
            let from_original = run_on_engine(&mut engine, &step.op, now);
            prop_assert_eq!(from_copy, from_original, "step {}: {:?}", i, step);
            assert_same_engine(&copy, &engine)?;
        }
    }
}

/// The smallest case of the property above: the clock of an engine rebuilt from its facts must
/// include the last deletion, or the next contact is stamped before it.
#[test]
fn a_rebuilt_engine_stamps_new_contacts_no_earlier_than_the_last_deletion() {
    let mut engine = Engine::new();
    let create = Op::Identify {
        email: Some(0),
        phone: None,
    };
    run_on_engine(&mut engine, &create, START);
    run_on_engine(&mut engine, &Op::Delete { pick: 0 }, START + 10);
    let mut copy = rebuilt(&engine);
    let another = Op::Identify {
        email: Some(1),
        phone: None,
    };
    run_on_engine(&mut engine, &another, START);
    run_on_engine(&mut copy, &another, START);
    assert_eq!(engine.contact(2).unwrap().created_at, Timestamp(START + 10));
    assert_eq!(copy.contact(2).unwrap().created_at, Timestamp(START + 10));
}
