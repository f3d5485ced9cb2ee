//! Editing a contact (docs/API.md, "Editing a contact"): a live row's identifiers replaced, its
//! id and `createdAt` kept, and the clusters regrouped as if the row had always held its new
//! values. One fact, [`Change::Edited`], holding the row's values after the edit; applying it
//! derives the regrouping, so the plan (its guards and its answer) and the apply read the same
//! computation, [`Engine::edit_regrouping`].
//!
//! The regrouping: the former cluster without the row falls apart by the evidence that remains
//! (exactly as after a deletion, joins naming a value no live row holds any more forgotten);
//! then the row joins every piece, and every other cluster, that its new values tie it to
//! (a shared value that is not blocked, a remembered join naming one of its values, an imported
//! link). Nothing else changes: the other clusters had no evidence towards the former one.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::change::Change;
use super::forest::Slot;
use super::guards::{Kind, Refusal};
use super::interner::Sym;
use super::op::{Outcome, Plan};
use super::regroup::Regrouped;
use super::types::{Contact, ContactId, Email, Identity, Phone, Timestamp};
use super::{held, Engine, EngineError, NONE};

/// One field of an edit: left as it is, removed, or replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Patch<T> {
    Keep,
    Remove,
    Set(T),
}

impl<T> Patch<T> {
    /// The field's value after the edit, given the value it holds now.
    fn after<'a>(
        &'a self,
        now: Option<&'a str>,
        text: impl Fn(&'a T) -> &'a str,
    ) -> Option<&'a str> {
        match self {
            Patch::Keep => now,
            Patch::Remove => None,
            Patch::Set(value) => Some(text(value)),
        }
    }
}

/// How an edit regroups: the clusters it touches and the clusters they become.
pub(super) struct EditRegrouping {
    /// The edited row's cluster before the edit.
    former: Vec<Slot>,
    /// The roots of the other clusters that merge with the edited row's group.
    absorbed: Vec<Slot>,
    /// The clusters after the edit, each oldest first: the edited row's first, then the other
    /// pieces of the former cluster by their primary's age.
    groups: Vec<Vec<Slot>>,
    /// How the former cluster without the edited row groups (with a holder of each value).
    pieces: Regrouped,
}

/// What a dry run of an edit shows: the row and the identities as the edit would leave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditPreview {
    pub contact: Contact,
    pub identities: Vec<Identity>,
}

impl Engine {
    /// What editing contact `id` at `now` implies (docs/API.md, "Editing a contact"): nothing if
    /// it already holds those values; else one fact, unless the contact is not live, would keep
    /// no identifier, a new value is blocked (or would turn generic by it), or the result would
    /// pass the cluster cap.
    pub(super) fn plan_edit(
        &self,
        id: ContactId,
        email: &Patch<Email>,
        phone: &Patch<Phone>,
        now: Timestamp,
    ) -> Result<Plan, Refusal> {
        let at = Timestamp(now.0.max(self.clock));
        let slot = self.live_slot(id).map_err(|e| match e {
            EngineError::AlreadyDeleted(id) => Refusal::DeletedContact(id),
            _ => Refusal::UnknownContact(id),
        })?;
        let row = self.rows[slot as usize];
        let current = [
            self.text(Kind::Email, row.email),
            self.text(Kind::Phone, row.phone),
        ];
        let wanted = [
            email.after(current[0], Email::as_str),
            phone.after(current[1], Phone::as_str),
        ];
        if wanted == [None, None] {
            return Err(Refusal::NoIdentifierLeft(id));
        }
        let mut syms = [row.email, row.phone];
        for kind in Kind::BOTH {
            let (now_held, value) = (current[kind as usize], wanted[kind as usize]);
            if value != now_held {
                syms[kind as usize] = match value {
                    Some(value) => self.admitted(kind, value)?,
                    None => NONE,
                };
            }
        }
        if wanted == current {
            let members = self.forest.members(slot).to_vec();
            return Ok(self.edit_plan(id, Vec::new(), &[members]));
        }
        let regrouping = self.edit_regrouping(slot, syms);
        self.within_cap(regrouping.groups[0].len())?;
        let fact = Change::Edited {
            id,
            email: wanted[0].map(str::to_owned),
            phone: wanted[1].map(str::to_owned),
            at,
        };
        Ok(self.edit_plan(id, vec![fact], &regrouping.groups))
    }

    fn edit_plan(&self, id: ContactId, facts: Vec<Change>, groups: &[Vec<Slot>]) -> Plan {
        let ids = |group: &Vec<Slot>| group.iter().map(|&s| self.rows[s as usize].id).collect();
        Plan {
            facts,
            outcome: Outcome::Edited {
                id,
                groups: groups.iter().map(ids).collect(),
            },
        }
    }

    /// The symbol of `value` (NONE if it was never interned: it ties the row to nobody) if an
    /// edit may give it to its row: not blocked, not made generic by this one more holder (an
    /// edit is refused rather than block a value for everyone: see docs/API.md), and room to
    /// store it.
    fn admitted(&self, kind: Kind, value: &str) -> Result<Sym, Refusal> {
        let refused = |generic| Refusal::BlockedValue {
            kind,
            value: value.to_owned(),
            generic,
        };
        match self.index(kind).lookup(value) {
            Some(sym) if self.is_blocked(kind, sym) => Err(refused(false)),
            Some(sym) if self.past_threshold(kind, sym, 1) => Err(refused(true)),
            Some(sym) => Ok(sym),
            None if self.index(kind).has_room(value) => Ok(NONE),
            None => Err(Refusal::Capacity("identifier storage")),
        }
    }

    fn text(&self, kind: Kind, sym: Sym) -> Option<&str> {
        (sym != NONE).then(|| self.index(kind).resolve(sym))
    }

    /// How the clusters regroup when the live row `slot` holds `syms` (email, phone) instead
    /// of what it holds now. Reads only; the work is the size of the clusters touched.
    pub(super) fn edit_regrouping(&self, slot: Slot, syms: [Sym; 2]) -> EditRegrouping {
        let former = self.forest.members(slot).to_vec();
        let root = self.forest.find(slot);
        let pieces = self.regroup(&former, Some(slot));
        let piece_of: HashMap<Slot, usize> = (pieces.groups.iter().enumerate())
            .flat_map(|(i, group)| group.iter().map(move |&s| (s, i)))
            .collect();
        let mut joined = vec![false; pieces.groups.len()];
        let mut absorbed: Vec<Slot> = Vec::new();
        for holder in self.tied_to(slot, syms, &pieces) {
            match piece_of.get(&holder) {
                Some(&i) => joined[i] = true,
                None if holder == slot => {}
                None => {
                    let other = self.forest.find(holder);
                    if other != root && !absorbed.contains(&other) {
                        absorbed.push(other);
                    }
                }
            }
        }
        let mut edited = vec![slot];
        let mut groups = vec![Vec::new()];
        for (group, joined) in pieces.groups.iter().zip(joined) {
            if joined {
                edited.extend_from_slice(group);
            } else {
                groups.push(group.clone());
            }
        }
        for &other in &absorbed {
            edited.extend_from_slice(self.forest.members(other));
        }
        edited.sort_unstable_by_key(|&s| self.rows[s as usize].age());
        groups[0] = edited;
        EditRegrouping {
            former,
            absorbed,
            groups,
            pieces,
        }
    }

    /// A live row of each thing that ties row `slot` holding `syms` to others: a holder of each
    /// of its values, of each value a join pairs with one of them, and each row it is linked
    /// to. Blocked values tie nothing; a holder may be `slot` itself.
    fn tied_to(&self, slot: Slot, syms: [Sym; 2], pieces: &Regrouped) -> Vec<Slot> {
        let mut holders = Vec::new();
        for kind in Kind::BOTH {
            let sym = syms[kind as usize];
            if sym == NONE || self.is_blocked(kind, sym) {
                continue;
            }
            holders.extend(self.holder_besides(kind, sym, pieces));
            let other = other_kind(kind);
            let partners = match kind {
                Kind::Email => self.joins_by_email.get(&sym),
                Kind::Phone => self.joins_by_phone.get(&sym),
            };
            for &partner in partners.into_iter().flatten() {
                if !self.is_blocked(other, partner) {
                    holders.extend(self.holder_besides(other, partner, pieces));
                }
            }
        }
        holders.extend(self.links.get(&slot).into_iter().flatten());
        holders
    }

    /// A live holder of `sym` other than the edited row: one in the former cluster's pieces if
    /// any holds it, else the one the index names (which may be the edited row itself).
    fn holder_besides(&self, kind: Kind, sym: Sym, pieces: &Regrouped) -> Option<Slot> {
        let in_pieces = match kind {
            Kind::Email => pieces.email_holder.get(&sym),
            Kind::Phone => pieces.phone_holder.get(&sym),
        };
        in_pieces.copied().or_else(|| held(self.index(kind), sym))
    }

    /// Applies [`Change::Edited`]: the row holds `email` and `phone`, and the clusters regroup.
    pub(super) fn apply_edited(
        &mut self,
        id: ContactId,
        values: [Option<&str>; 2],
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let slot = self.live_slot(id)?;
        for kind in Kind::BOTH {
            let index = self.index(kind);
            if let Some(value) = values[kind as usize] {
                if index.lookup(value).is_none() && !index.has_room(value) {
                    return Err(EngineError::Capacity("identifier storage"));
                }
            }
        }
        // Checked: nothing below fails. A new value is interned held by no one, so it ties
        // the row to nobody until the row holds it.
        let syms = Kind::BOTH.map(|kind| match values[kind as usize] {
            Some(value) => self.index_mut(kind).intern(value, NONE),
            None => NONE,
        });
        let regrouping = self.edit_regrouping(slot, syms);
        self.reform_edited(&regrouping);
        let row = self.rows[slot as usize];
        for kind in Kind::BOTH {
            let (old, new) = (Engine::sym_of(&row, kind), syms[kind as usize]);
            if old != new {
                self.release(kind, old, slot, &regrouping.pieces);
                match kind {
                    Kind::Email => self.rows[slot as usize].email = new,
                    Kind::Phone => self.rows[slot as usize].phone = new,
                }
                self.hold(kind, new, slot);
            }
        }
        let linked = self.rows[slot as usize].linked;
        self.relink(&regrouping.groups, at);
        let row = &mut self.rows[slot as usize];
        row.updated = at.0;
        if row.linked == linked {
            // Its identifiers changed even where its link did not: the feed sees it.
            self.moves.record(id, Some(row.linked_id().unwrap_or(id)));
        }
        self.tick(at);
        Ok(())
    }

    /// Makes the clusters an edit touches (whole: the former one and those absorbed) the
    /// groups of `regrouping`, counting the clusters gained and lost.
    fn reform_edited(&mut self, regrouping: &EditRegrouping) {
        let mut touched = regrouping.former.clone();
        for &root in &regrouping.absorbed {
            touched.extend_from_slice(self.forest.members(root));
        }
        self.forest.isolate(&touched);
        for group in &regrouping.groups {
            for pair in group.windows(2) {
                let rows = &self.rows;
                self.forest
                    .union(pair[0], pair[1], |x, y| super::older(rows, x, y));
            }
        }
        self.stats.clusters =
            self.stats.clusters + regrouping.groups.len() - 1 - regrouping.absorbed.len();
    }

    /// What an edit's plan would leave, read before it is applied (a dry run): the row with its
    /// new values and the identity of each group of the outcome. None for another op's plan.
    pub fn preview_edit(&self, plan: &Plan) -> Option<EditPreview> {
        let Outcome::Edited { id, groups } = &plan.outcome else {
            return None;
        };
        let mut contact = self.contact(*id)?;
        if let Some(Change::Edited {
            email, phone, at, ..
        }) = plan.facts.first()
        {
            contact.email = email.clone();
            contact.phone_number = phone.clone();
            contact.updated_at = *at;
        }
        let identities = groups
            .iter()
            .map(|group| self.preview_identity(group, &contact))
            .collect::<Option<Vec<_>>>()?;
        // The edited row's link as its group will have it.
        let primary = groups.first()?.first().copied()?;
        contact.linked_id = (primary != *id).then_some(primary);
        contact.link_precedence = if primary == *id {
            super::Precedence::Primary
        } else {
            super::Precedence::Secondary
        };
        Some(EditPreview {
            contact,
            identities,
        })
    }

    /// The identity of `group` (oldest first) with the row of `edited` as given: each value
    /// listed once, at its first holder, as answers list them.
    fn preview_identity(&self, group: &[ContactId], edited: &Contact) -> Option<Identity> {
        let mut seen = hashbrown::HashSet::new();
        let (mut emails, mut phones) = (Vec::new(), Vec::new());
        for &member in group {
            let values = if member == edited.id {
                [edited.email.as_deref(), edited.phone_number.as_deref()]
            } else {
                let row = self.rows[self.slot(member).ok()? as usize];
                [
                    self.text(Kind::Email, row.email),
                    self.text(Kind::Phone, row.phone),
                ]
            };
            for (kind, list) in [(Kind::Email, &mut emails), (Kind::Phone, &mut phones)] {
                if let Some(value) = values[kind as usize] {
                    if seen.insert((kind, value)) {
                        list.push(value.to_owned());
                    }
                }
            }
        }
        Some(Identity {
            primary_contact_id: *group.first()?,
            emails,
            phone_numbers: phones,
            secondary_contact_ids: group[1..].to_vec(),
        })
    }
}

fn other_kind(kind: Kind) -> Kind {
    match kind {
        Kind::Email => Kind::Phone,
        Kind::Phone => Kind::Email,
    }
}

#[cfg(test)]
mod tests;
