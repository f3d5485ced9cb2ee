//! Erasure: a person forgotten (docs/API.md, "Erasure"). An erasure names a contact, or a value
//! whose every holder (live or deleted, by the directory's matching keys) is erased. Planning
//! resolves it to contact ids, so the fact (`Change::Erased`) holds no value and the log never
//! repeats one; applying it takes every such row's email and phone away for good (the row stays,
//! with its id and times, and `erasedAt`), lets a live one leave its cluster as a deletion does
//! (the cluster regroups, joins naming a value no live row holds are forgotten), and overwrites
//! in memory every string no other row holds (see `Interner::wipe`).
//!
//! The ledger keeps each erasure's id, contacts and times, never a value. An erasure is pending
//! until a purge has rewritten the files that held its values; `Change::Purged` records that.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::change::Change;
use super::forest::Slot;
use super::guards::{Kind, Refusal};
use super::interner::Sym;
use super::op::{Outcome, Plan};
use super::types::{ContactId, Timestamp};
use super::{held, Engine, EngineError, NONE};

/// What an erasure names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One contact, live or deleted.
    Contact(ContactId),
    /// Every contact, live or deleted, holding this value (a key, as the matching modes make it).
    Value { kind: Kind, value: String },
    /// Several contacts at once: a ledger re-applied to a restored backup. Ids the state does
    /// not hold or has already erased are passed over.
    Contacts(Vec<ContactId>),
}

/// One erasure of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// 1 for the first, then +1.
    pub id: u64,
    /// The contacts it erased, ascending.
    pub contacts: Vec<ContactId>,
    pub requested_at: Timestamp,
    /// By when no file kept may hold the erased values.
    pub purge_by: Timestamp,
    /// When a purge made that so; None while pending.
    pub purged_at: Option<Timestamp>,
}

impl Erasure {
    pub fn is_pending(&self) -> bool {
        self.purged_at.is_none()
    }
}

impl Engine {
    /// What erasing `target` at `now` implies, its purge due `within_ms` later: one fact naming
    /// the contacts, or none when the contact named is erased already (the answer is the
    /// erasure that did it).
    pub(super) fn plan_erase(
        &self,
        target: &Target,
        within_ms: u64,
        now: Timestamp,
    ) -> Result<Plan, Refusal> {
        let at = Timestamp(now.0.max(self.clock));
        let slots = match target {
            Target::Contact(id) => {
                let slot = (self.slot(*id))
                    .map_err(|_| Refusal::NothingToErase(format!("no contact has id {id}")))?;
                if let Some(erasure) = self.erasure_of(slot) {
                    let outcome = Outcome::Erased {
                        erasure,
                        groups: Vec::new(),
                    };
                    return Ok(Plan {
                        facts: Vec::new(),
                        outcome,
                    });
                }
                vec![slot]
            }
            Target::Value { kind, value } => self.holders_to_erase(*kind, value)?,
            Target::Contacts(ids) => {
                let mut slots: Vec<Slot> = (ids.iter())
                    .filter_map(|&id| self.slot(id).ok())
                    .filter(|s| !self.erased_at.contains_key(s))
                    .collect();
                slots.sort_unstable();
                slots.dedup();
                if slots.is_empty() {
                    let why = "every contact named is unknown or erased already";
                    return Err(Refusal::NothingToErase(why.into()));
                }
                slots
            }
        };
        let mut ids: Vec<ContactId> = slots.iter().map(|&s| self.rows[s as usize].id).collect();
        ids.sort_unstable();
        let erasure = self.erasures.len() as u64 + 1;
        let within = i64::try_from(within_ms).unwrap_or(i64::MAX);
        let purge_by = Timestamp(at.0.saturating_add(within));
        let groups = self.groups_without(&slots);
        Ok(Plan {
            facts: vec![Change::Erased {
                erasure,
                ids,
                at,
                purge_by,
            }],
            outcome: Outcome::Erased { erasure, groups },
        })
    }

    /// The rows holding `value`, live or deleted. A blocked value is refused: it is shared junk
    /// (a shop's own phone), and erasing everyone holding it is almost surely a mistake.
    fn holders_to_erase(&self, kind: Kind, value: &str) -> Result<Vec<Slot>, Refusal> {
        // The answer never repeats the value: it may be on its way to being forgotten.
        let unheld = || Refusal::NothingToErase(format!("no contact holds this {}", kind.field()));
        let sym = self.index(kind).lookup(value).ok_or_else(unheld)?;
        if self.is_blocked(kind, sym) {
            return Err(Refusal::ErasureOfBlocked { kind });
        }
        let holds = |s: &Slot| Engine::sym_of(&self.rows[*s as usize], kind) == sym;
        let live = held(self.index(kind), sym)
            .map(|h| self.forest.members(h).to_vec())
            .unwrap_or_default();
        let mut slots: Vec<Slot> = live.into_iter().filter(holds).collect();
        slots.extend(self.deleted_at.keys().copied().filter(holds));
        slots.sort_unstable();
        if slots.is_empty() {
            return Err(unheld());
        }
        Ok(slots)
    }

    /// The erasure that erased the row at `slot`, if one did.
    fn erasure_of(&self, slot: Slot) -> Option<u64> {
        self.erased_at.get(&slot)?;
        let id = self.rows[slot as usize].id;
        let erasure = self.erasures.iter().find(|e| e.contacts.contains(&id));
        Some(erasure.map_or(0, |e| e.id))
    }

    /// The clusters of the live rows of `slots`, each split by the evidence that remains
    /// without them: each group's primary, oldest first.
    fn groups_without(&self, slots: &[Slot]) -> Vec<ContactId> {
        let mut primaries: Vec<Slot> = Vec::new();
        for (root, gone) in self.clusters_of(slots) {
            let remaining: Vec<Slot> = (self.forest.members(root).iter().copied())
                .filter(|s| !gone.contains(s))
                .collect();
            let groups = self.regroup(&remaining, None).groups;
            primaries.extend(groups.iter().map(|g| g[0]));
        }
        primaries.sort_unstable_by_key(|&s| self.rows[s as usize].age());
        primaries
            .into_iter()
            .map(|s| self.rows[s as usize].id)
            .collect()
    }

    /// The live rows of `slots` by cluster root, the clusters in the order of their primaries'
    /// age (so that every member applies them in the same order).
    fn clusters_of(&self, slots: &[Slot]) -> Vec<(Slot, Vec<Slot>)> {
        let mut by_root: HashMap<Slot, Vec<Slot>> = HashMap::new();
        for &slot in slots.iter().filter(|&&s| self.is_live(s)) {
            by_root
                .entry(self.forest.find(slot))
                .or_default()
                .push(slot);
        }
        let mut clusters: Vec<(Slot, Vec<Slot>)> = by_root.into_iter().collect();
        clusters
            .sort_unstable_by_key(|(root, _)| self.rows[self.forest.primary(*root) as usize].age());
        clusters
    }

    /// Applies `Change::Erased`: checks it whole, then erases every row it names.
    pub(super) fn apply_erased(
        &mut self,
        erasure: u64,
        ids: &[ContactId],
        at: Timestamp,
        purge_by: Timestamp,
    ) -> Result<(), EngineError> {
        let bad = |why: String| Err(EngineError::Erasure(why));
        if erasure != self.erasures.len() as u64 + 1 {
            return bad(format!("erasure {erasure} out of turn"));
        }
        if ids.is_empty() || ids.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!("erasure {erasure} names its contacts out of order"));
        }
        let mut slots = Vec::with_capacity(ids.len());
        for &id in ids {
            let slot = self.slot(id)?;
            if self.erased_at.contains_key(&slot) {
                return bad(format!("contact {id} is erased already"));
            }
            slots.push(slot);
        }
        for (root, gone) in self.clusters_of(&slots) {
            self.leave_cluster(root, &gone, at);
        }
        let mut values: Vec<(Kind, Sym)> = Vec::with_capacity(2 * slots.len());
        for &slot in &slots {
            let row = &mut self.rows[slot as usize];
            values.extend([(Kind::Email, row.email), (Kind::Phone, row.phone)]);
            (row.email, row.phone) = (NONE, NONE);
            let id = row.id;
            self.erased_at.insert(slot, at.0);
            self.stats.erased += 1;
            self.moves.record(id, None);
        }
        for (kind, sym) in self.unheld(values) {
            self.guards_mut(kind).exempt.remove(&sym);
            self.index_mut(kind).wipe(sym);
        }
        self.tick(at);
        self.erasures.push(Erasure {
            id: erasure,
            contacts: ids.to_vec(),
            requested_at: at,
            purge_by,
            purged_at: None,
        });
        Ok(())
    }

    /// The live rows `gone` of the cluster at `root` leave it, as by deletions: it regroups by
    /// the evidence that remains, and their values and links are released.
    fn leave_cluster(&mut self, root: Slot, gone: &[Slot], at: Timestamp) {
        let former: Vec<Slot> = self.forest.members(root).to_vec();
        let remaining: Vec<Slot> = (former.iter().copied())
            .filter(|s| !gone.contains(s))
            .collect();
        let regrouped = self.regroup(&remaining, None);
        self.reform(&former, &regrouped.groups, at);
        for &slot in gone {
            self.forest.remove(slot);
            let row = &self.rows[slot as usize];
            let (email, phone) = (row.email, row.phone);
            self.release(Kind::Email, email, slot, &regrouped);
            self.release(Kind::Phone, phone, slot, &regrouped);
            self.unlink(slot);
            self.stats.deleted += 1;
        }
    }

    /// Those of `values` that no row holds any more (no live one, no deleted one) and no block
    /// names: nothing needs their strings. One pass over the deleted rows, whatever their number.
    fn unheld(&self, values: Vec<(Kind, Sym)>) -> Vec<(Kind, Sym)> {
        // NONE: no live holder and no block (a blocked value's index says BLOCKED).
        let mut unheld: hashbrown::HashSet<(Kind, Sym)> = (values.into_iter())
            .filter(|&(kind, sym)| sym != NONE && self.index(kind).value(sym) == NONE)
            .collect();
        if !unheld.is_empty() {
            for &slot in self.deleted_at.keys() {
                let row = &self.rows[slot as usize];
                unheld.remove(&(Kind::Email, row.email));
                unheld.remove(&(Kind::Phone, row.phone));
            }
        }
        // In one order on every member, so that their tables are laid out alike.
        let mut unheld: Vec<(Kind, Sym)> = unheld.into_iter().collect();
        unheld.sort_unstable();
        unheld
    }

    /// What a purge that rewrote every file up to now implies: the erasures of `ids` still
    /// pending are done at `now`.
    pub(super) fn plan_purge(&self, ids: &[u64], now: Timestamp) -> Plan {
        let mut done: Vec<u64> = (ids.iter().copied())
            .filter(|&id| self.erasure(id).is_some_and(Erasure::is_pending))
            .collect();
        done.sort_unstable();
        done.dedup();
        let facts = if done.is_empty() {
            Vec::new()
        } else {
            let at = Timestamp(now.0.max(self.clock));
            vec![Change::Purged {
                erasures: done.clone(),
                at,
            }]
        };
        Plan {
            facts,
            outcome: Outcome::Purged { erasures: done },
        }
    }

    pub(super) fn apply_purged(&mut self, ids: &[u64], at: Timestamp) -> Result<(), EngineError> {
        for &id in ids {
            if !self.erasure(id).is_some_and(Erasure::is_pending) {
                return Err(EngineError::Erasure(format!("erasure {id} is not pending")));
            }
        }
        for &id in ids {
            self.erasures[id as usize - 1].purged_at = Some(at);
        }
        Ok(())
    }

    /// Every erasure, oldest first.
    pub fn erasures(&self) -> &[Erasure] {
        &self.erasures
    }

    pub fn erasure(&self, id: u64) -> Option<&Erasure> {
        let at = usize::try_from(id).ok()?.checked_sub(1)?;
        self.erasures.get(at)
    }

    /// The erasures whose purge has not been done, oldest first.
    pub fn pending_erasures(&self) -> impl Iterator<Item = &Erasure> + '_ {
        self.erasures.iter().filter(|e| e.is_pending())
    }

    /// How many rows are deleted (erased ones among them, if deleted before).
    pub fn deleted_rows(&self) -> usize {
        self.deleted_at.len()
    }

    /// When the row at `slot` was erased, if it was.
    pub(super) fn erased_at(&self, slot: Slot) -> Option<Timestamp> {
        self.erased_at.get(&slot).map(|&t| Timestamp(t))
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::Parts;
    use super::super::tests::{assert_same, engine_with_every_kind_of_state};
    use super::super::{Email, Op, Phone, Query};
    use super::*;

    const NOW: Timestamp = Timestamp(1_900_000_000_000);

    fn run(engine: &mut Engine, op: &Op) -> Outcome {
        let plan = engine.plan(op, NOW).unwrap();
        for fact in &plan.facts {
            engine.apply(fact).unwrap();
        }
        plan.outcome
    }

    fn erase(engine: &mut Engine, target: Target) -> Outcome {
        let op = Op::Erase {
            target,
            purge_within_ms: 60_000,
        };
        run(engine, &op)
    }

    /// Every kind of state, then three erasures: a value with a deleted holder, a live contact
    /// by id, a deleted one by id; the first of them purged.
    fn erased() -> Engine {
        let mut engine = engine_with_every_kind_of_state();
        for (email, phone) in [("lou@x.io", "4242"), ("lou2@x.io", "4242")] {
            let query = Query::new(Email::parse(email).unwrap(), Phone::parse(phone).unwrap());
            run(&mut engine, &Op::Identify(query.unwrap()));
        }
        let gone = engine
            .contacts()
            .find(|c| c.email.as_deref() == Some("lou2@x.io"));
        run(&mut engine, &Op::Delete(gone.unwrap().id));
        let phone = Target::Value {
            kind: Kind::Phone,
            value: "4242".into(),
        };
        assert!(matches!(
            erase(&mut engine, phone),
            Outcome::Erased { erasure: 1, .. }
        ));
        erase(&mut engine, Target::Contact(100));
        erase(&mut engine, Target::Contact(90));
        run(&mut engine, &Op::Purge { erasures: vec![1] });
        engine.advance_events(42);
        engine.check_invariants().unwrap();
        engine
    }

    #[test]
    fn no_image_taken_after_an_erasure_holds_its_values() {
        let engine = erased();
        let parts = engine.parts();
        let arenas = [parts.emails.arena.as_bytes(), parts.phones.arena.as_bytes()].concat();
        let holds = |text: &str| arenas.windows(text.len()).any(|w| w == text.as_bytes());
        for gone in ["lou@x.io", "lou2@x.io", "4242", "888", "doc@x.io"] {
            assert!(!holds(gone), "{gone} is still in the image");
        }
        assert!(holds("george@hillvalley.edu") && holds("919191"));
        let ledger: Vec<_> = engine.erasures().iter().map(|e| e.is_pending()).collect();
        assert_eq!(ledger, [false, true, true]);
    }

    #[test]
    fn an_image_with_erasures_loads_as_the_same_engine_with_its_ledger_and_count() {
        let engine = erased();
        let copy = Engine::from_parts(engine.parts().into_owned()).unwrap();
        assert_same(&copy, &engine);
        assert_eq!(copy.erasures(), engine.erasures());
        assert_eq!((copy.events(), copy.stats().erased), (42, 4));
        assert_eq!(copy.parts(), engine.parts());
        let mut rebuilt = Engine::new();
        for fact in engine.facts() {
            rebuilt.apply(&fact).unwrap();
        }
        assert_same(&rebuilt, &engine);
        assert_eq!(rebuilt.erasures(), engine.erasures());
    }

    #[test]
    fn a_crafted_ledger_or_erased_row_is_refused() {
        let image = erased().parts().into_owned();
        type Craft = (&'static str, fn(&mut Parts<'static>));
        let crafts: [Craft; 7] = [
            ("out of turn", |p| p.erasures[1].id = 7),
            ("out of order", |p| p.erasures[0].contacts.reverse()),
            ("not erased then", |p| p.erasures[2].contacts = vec![1]),
            ("not erased then", |p| {
                p.erasures[2].contacts = p.erasures[1].contacts.clone()
            }),
            ("the ledger names", |p| {
                p.erasures.pop();
            }),
            ("no erased row", |p| {
                let (slot, _) = p.erased_at[0];
                p.rows.to_mut()[slot as usize].email = 0;
            }),
            ("no erased row", |p| p.erased_at.push((0, 0))),
        ];
        for (says, craft) in crafts {
            let mut damaged = image.clone();
            craft(&mut damaged);
            let message = Engine::from_parts(damaged).err().map(|e| e.to_string());
            assert!(
                message.as_deref().is_some_and(|m| m.contains(says)),
                "{says}: {message:?}"
            );
        }
    }

    #[test]
    fn a_fact_that_erases_out_of_turn_or_twice_changes_nothing() {
        let mut engine = erased();
        let before = engine.parts().into_owned();
        let facts = [
            Change::Erased {
                erasure: 9,
                ids: vec![1],
                at: NOW,
                purge_by: NOW,
            },
            Change::Erased {
                erasure: 4,
                ids: vec![100],
                at: NOW,
                purge_by: NOW,
            },
            Change::Erased {
                erasure: 4,
                ids: vec![2, 1],
                at: NOW,
                purge_by: NOW,
            },
            Change::Purged {
                erasures: vec![1],
                at: NOW,
            },
            Change::Purged {
                erasures: vec![8],
                at: NOW,
            },
        ];
        for fact in facts {
            assert!(engine.apply(&fact).is_err(), "{fact:?}");
            assert_eq!(engine.parts(), before, "{fact:?} changed something");
        }
    }
}
